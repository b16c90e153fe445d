//! The situation space of `cii policy prove` and `cii policy diff` against brute force: on a
//! small rulebook, every transfer the vocabulary allows — every fact, consent, number of
//! persons, case reference, pull, day and single category — decided on its own gives what
//! the space's situation standing for it says, so no relevant combination is skipped. Then
//! invariants over that rulebook: what each statement means, days after today, facts a
//! statement names, and the errors of a file that names what the rulebook does not declare.

use std::collections::{BTreeSet, HashMap};

use cii_policy::decide::{ConsentFound, Facts, Party, Transfer};
use cii_policy::prove::{self, Statement};
use cii_policy::space::{self, Consent, Releases, Situation};
use cii_policy::{Rulebook, Source, Trigger, decide, load};
use time::macros::date;

fn small() -> Rulebook {
    let text = include_str!("fixtures/small/small.toml").to_owned();
    load(
        &[Source {
            name: "small.toml".into(),
            text,
        }],
        date!(2026 - 12 - 01),
    )
    .expect("small rulebook")
}

/// A situation's key without its facts, consent, case and pull.
type Tuple = (String, Option<String>, String, Trigger, String, time::Date);

fn tuple(s: &Situation) -> Tuple {
    (
        space::party_name(&s.from),
        s.from.canton.clone(),
        space::party_name(&s.to),
        s.trigger,
        s.purpose.clone(),
        s.date,
    )
}

#[test]
fn every_single_transfer_decides_as_the_situation_standing_for_it() {
    let rb = small();
    let today = date!(2026 - 12 - 01);
    let epochs = space::days(&[&rb], today);
    assert!(
        epochs.len() >= 4,
        "the fixture changes on several later days: {epochs:?}"
    );
    // The space, with what each of its situations releases.
    let mut space_of: HashMap<Tuple, Vec<(Situation, Releases)>> = HashMap::new();
    space::for_each(&[&rb], today, |s| {
        space_of.entry(tuple(s)).or_default().push((s.clone(), s.releases(&rb)));
    })
    .expect("space");

    // Brute force: every party (types in every canton and none, the institution), trigger,
    // purpose, category, fact combination, consent, persons and reference, pull, and days
    // around every change.
    let mut parties: Vec<Party> = Vec::new();
    for kind in rb.types.keys() {
        for canton in [None, Some("VS"), Some("GE")] {
            parties.push(Party {
                kind: *kind,
                id: None,
                canton: canton.map(str::to_owned),
            });
        }
    }
    for (id, f) in &rb.institutions {
        // Its canton in the rulebook, and others the registry could give.
        for canton in [f.canton.as_deref(), None, Some("GE")] {
            parties.push(Party::member(f.kind, id.clone(), canton.map(str::to_owned)));
        }
    }
    let mut days: BTreeSet<time::Date> = BTreeSet::new();
    for d in &epochs {
        days.insert(*d);
        days.extend(d.previous_day().filter(|p| *p >= today));
        days.extend(d.next_day());
    }
    let categories: Vec<String> = rb.categories.iter().map(|c| c.id.clone()).collect();
    let named: BTreeSet<String> = rb.bases.iter().flat_map(|b| b.cantons.iter().cloned()).collect();
    let (mut decided, mut permits) = (0u64, 0u64);
    for from in &parties {
        for to in &parties {
            if to.canton.is_some() {
                continue; // the recipient's canton is never read; its type and id are
            }
            for &trigger in Trigger::ALL {
                for purpose in rb.purposes.iter().map(|p| p.id.clone()) {
                    for &day in &days {
                        let epoch = *epochs.iter().rfind(|e| **e <= day).expect("epoch");
                        // A canton no basis names is, for a type, the space's "no canton"; for an
                        // institution (none given: its own) the space's other canton.
                        let canton = match from.id.as_ref().and_then(|id| rb.institutions.get(id)) {
                            None => from.canton.clone().filter(|c| named.contains(c)),
                            Some(f) => Some(
                                from.canton
                                    .clone()
                                    .or_else(|| f.canton.clone())
                                    .filter(|c| named.contains(c))
                                    .unwrap_or_else(|| space::other_canton(&[&rb])),
                            ),
                        };
                        let key = (
                            space::party_name(from),
                            canton,
                            space::party_name(to),
                            trigger,
                            purpose.clone(),
                            epoch,
                        );
                        let situations = space_of.get(&key).unwrap_or_else(|| panic!("no situation for {key:?}"));
                        for category in &categories {
                            for facts in 0u64..(1 << rb.facts.len()) {
                                for consent in 0..5 {
                                    for (persons, reference) in [(1, true), (2, true), (1, false)] {
                                        for pull in [false, true] {
                                            let t = transfer(
                                                &rb, from, to, trigger, &purpose, category, facts, consent, persons,
                                                reference, pull, day,
                                            );
                                            let d = decide(&rb, &t).expect("decidable");
                                            decided += 1;
                                            permits += u64::from(d.is_permit());
                                            let bases: Vec<String> = d
                                                .bases()
                                                .iter()
                                                .filter_map(|i| rb.bases.get(*i))
                                                .map(|b| b.id.clone())
                                                .collect();
                                            let standing = standing_for(situations, &rb, &t);
                                            let expected = standing.get(category).cloned().unwrap_or_default();
                                            assert_eq!(
                                                bases,
                                                expected,
                                                "{t:?}\nreleases {:?} but its situation says {:?}",
                                                d.released(),
                                                standing
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(permits > 1000 && permits < decided, "{permits} permits of {decided}");
}

/// The releases of the space's situation that stands for transfer `t`: the one whose facts,
/// consent, case and pull agree with `t` wherever the space enumerates them.
fn standing_for<'a>(situations: &'a [(Situation, Releases)], rb: &Rulebook, t: &Transfer) -> &'a Releases {
    let consent_of = |t: &Transfer| {
        let covering: Vec<&ConsentFound> = t
            .consents
            .iter()
            .filter(|c| c.purposes.contains(&t.purpose) && t.categories.iter().all(|x| c.categories.contains(x)))
            .collect();
        if covering.iter().any(|c| c.written) {
            Consent::Written
        } else if covering.is_empty() {
            Consent::None
        } else {
            Consent::Oral
        }
    };
    let individual = t.persons == 1 && t.case_reference.is_some();
    // What the space enumerates here (a dimension it does not is not read).
    let consent = consent_of(t);
    let consent_read = situations.iter().any(|(o, _)| o.consent != Consent::None);
    let case_read = situations.iter().any(|(o, _)| !o.individual_case);
    let matching: Vec<_> = situations
        .iter()
        .filter(|(s, _)| s.pull == t.unreviewed_pull)
        .filter(|(s, _)| (!consent_read || s.consent == consent) && (!case_read || s.individual_case == individual))
        .filter(|(s, _)| {
            s.facts.iter().all(|(f, v)| {
                // A fact the rulebook attests of the discloser holds whatever the transfer says.
                let attested = t
                    .from
                    .id
                    .as_ref()
                    .and_then(|id| rb.institutions.get(id))
                    .is_some_and(|i| {
                        i.status
                            .iter()
                            .any(|st| Some(st.fact) == rb.fact_index(f) && st.since <= t.date)
                    });
                rb.fact_index(f).is_some_and(|i| t.facts.get(i) || attested) == *v
            })
        })
        .collect();
    assert!(
        matching.len() == 1 || situations.len() == 1,
        "{} situations stand for {t:?}",
        matching.len()
    );
    &matching
        .first()
        .copied()
        .unwrap_or_else(|| situations.first().expect("one"))
        .1
}

#[expect(clippy::too_many_arguments, reason = "one value per dimension of the brute force")]
fn transfer(
    rb: &Rulebook,
    from: &Party,
    to: &Party,
    trigger: Trigger,
    purpose: &str,
    category: &str,
    facts: u64,
    consent: u8,
    persons: u32,
    reference: bool,
    pull: bool,
    date: time::Date,
) -> Transfer {
    let mut given = Facts::default();
    for i in 0..rb.facts.len() {
        given.set(i, facts & (1 << i) != 0);
    }
    let one = |categories: &[&str], purpose: &str, written: bool| ConsentFound {
        reference: "c".into(),
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        purposes: vec![purpose.to_owned()],
        written,
    };
    let other = rb
        .categories
        .iter()
        .map(|c| c.id.as_str())
        .find(|c| *c != category)
        .expect("another");
    let consents = match consent {
        0 => vec![],
        1 => vec![one(&[category], purpose, false)],
        2 => vec![one(&[category], purpose, true)],
        3 => vec![one(&[other], purpose, true)],
        _ => vec![one(&[category], "some_other_purpose", true)],
    };
    Transfer {
        from: from.clone(),
        to: to.clone(),
        trigger: Some(trigger),
        purpose: purpose.to_owned(),
        categories: vec![category.to_owned()],
        persons,
        case_reference: reference.then(|| "ref".to_owned()),
        unreviewed_pull: pull,
        facts: given,
        consents,
        date,
    }
}

fn invariant(id: &str, body: &str) -> String {
    format!("[[invariant]]\nid = \"{id}\"\ncitation = \"Art. 1\"\nreason = \"Because.\"\n{body}\n")
}

/// The ids of the violated invariants, and each one's first counterexample's basis and day.
fn violated(rb: &Rulebook, text: &str) -> Vec<(String, String, String)> {
    let invariants = prove::load(rb, &[("test.toml".into(), text.to_owned())]).expect("invariants");
    let report = prove::prove(rb, &invariants, date!(2026 - 12 - 01), 1).expect("prove");
    assert!(
        report.verdicts.iter().all(|v| v.checked > 0),
        "every invariant speaks of some situation"
    );
    report
        .verdicts
        .iter()
        .filter(|v| v.violations > 0)
        .map(|v| {
            let e = v.examples.first().expect("example");
            (
                v.invariant.id.clone(),
                e.basis.clone(),
                cii_policy::date_text(e.situation.date),
            )
        })
        .collect()
}

#[test]
fn each_statement_is_checked_over_every_day_fact_and_consent() {
    let rb = small();
    let text = [
        // LX-5 releases medical reports to the AI from 2031: a later day is a situation too.
        invariant(
            "no-medical-to-ai",
            "statement = \"never_release\"\ncategories = [\"medical_reports\"]\nto = [\"AI\"]",
        ),
        // LX-5 needs the claim filed: where it is not, nothing medical goes.
        invariant(
            "no-medical-without-claim",
            "statement = \"never_release\"\ncategories = [\"medical_reports\"]\nfacts = { claim_filed = false }",
        ),
        // LX-3 (to private bodies) rests on written consent: without consent, only LX-4 could.
        invariant(
            "private-needs-consent",
            "statement = \"consent_or\"\nto = [\"PRIVATE\"]\nbases = [\"LX-4\"]",
        ),
        // ... and an oral consent is not enough.
        invariant(
            "private-not-on-oral-consent",
            "statement = \"never_release\"\nto = [\"PRIVATE\"]\nconsent = [\"none\", \"oral\"]",
        ),
        // Only LX-3 and LX-4 carry anything from the AI.
        invariant(
            "ai-only-under",
            "statement = \"only_under\"\nfrom = [\"AI\"]\nbases = [\"LX-3\", \"LX-4\"]",
        ),
        // LX-1-a is the only basis the AC reports under: LX-6 (and LX-3) break this one.
        invariant(
            "ac-reports-only-under-lx-1",
            "statement = \"only_under\"\nfrom = [\"AC_ORP\"]\ntrigger = [\"spontaneous_report\"]\nbases = [\"LX-1-*\"]",
        ),
    ]
    .concat();
    assert_eq!(
        violated(&rb, &text),
        vec![
            (
                "no-medical-to-ai".to_owned(),
                "LX-5".to_owned(),
                "2031-01-01".to_owned()
            ),
            (
                "ac-reports-only-under-lx-1".to_owned(),
                "LX-6".to_owned(),
                "2026-12-01".to_owned()
            ),
        ]
    );
}

#[test]
fn a_file_naming_what_the_rulebook_does_not_declare_is_refused_with_every_error() {
    let rb = small();
    let text = [
        invariant("a", "statement = \"never_release\"\ncategories = [\"tax_records\"]"),
        invariant("b", "statement = \"only_under\""),
        invariant("c", "statement = \"only_under\"\nbases = [\"LPGA-32\"]"),
        invariant("d", "statement = \"always\""),
        invariant("e", "statement = \"never_release\"\nfacts = { rich = true }"),
        invariant("f", "statement = \"never_release\"\nto = [\"NOBODY-XX\"]"),
        invariant("g", "statement = \"never_release\"\nconsent = [\"implied\"]"),
        invariant("h", "statement = \"only_under\"\nbases = [\"LX*\"]"),
        invariant("a", "statement = \"never_release\""),
    ]
    .concat();
    let errors = prove::load(&rb, &[("inv.toml".into(), text)]).expect_err("refused");
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for expected in [
        "inv.toml: invariant `a`: categories: unknown category `tax_records`",
        "inv.toml: invariant `b`: bases: only_under needs the bases it allows",
        "inv.toml: invariant `c`: bases: `LPGA-32` names no basis of the rulebook",
        "inv.toml: invariant `d`: statement `always`: use never_release, only_under or consent_or",
        "inv.toml: invariant `e`: facts: unknown fact `rich`",
        "inv.toml: invariant `f`: to: institution `NOBODY-XX` is not in the rulebook's institutions",
        "inv.toml: invariant `g`: consent `implied`: use none, oral or written",
        "inv.toml: invariant `h`: bases: `LX*`: a prefix ends in `-*` (e.g. LACI-97a-*)",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "{expected}\nin {messages:#?}"
        );
    }
    // The second `a` is refused as a duplicate only once the first one was valid: here it was not.
    assert_eq!(errors.len(), 8, "{messages:#?}");
    let ok = invariant("x", "statement = \"never_release\"") + &invariant("x", "statement = \"never_release\"");
    let dup = prove::load(&rb, &[("inv.toml".into(), ok)]).expect_err("duplicate");
    assert_eq!(dup.first().map(|e| e.message.as_str()), Some("id: declared twice"));
    let one = prove::load(
        &rb,
        &[(
            "inv.toml".into(),
            invariant("y", "statement = \"only_under\"\nbases = [\"LX-1-*\"]"),
        )],
    )
    .expect("loads");
    assert_eq!(
        one.first().map(|i| &i.statement),
        Some(&Statement::OnlyUnder(vec!["LX-1-*".into()]))
    );
}
