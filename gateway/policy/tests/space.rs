//! The situation space of `cii policy prove` and `cii policy diff` against brute force: on a
//! small rulebook, every transfer the vocabulary allows — every fact, consent, number of
//! persons, case reference, pull, day and single category — decided on its own gives what
//! the space's situation standing for it says, so no relevant combination is skipped.

use std::collections::{BTreeSet, HashMap};

use cii_policy::decide::{ConsentFound, Facts, Party, Transfer};
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
        parties.push(Party::member(f.kind, id.clone(), f.canton.clone()));
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
                        // A canton no basis names is the space's "no canton".
                        let canton = from.canton.clone().filter(|c| from.id.is_some() || named.contains(c));
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
    let matching: Vec<_> = situations
        .iter()
        .filter(|(s, _)| {
            s.facts
                .iter()
                .all(|(f, v)| rb.fact_index(f).is_some_and(|i| t.facts.get(i) == *v))
                && (s.consent == consent_of(t) || situations.iter().all(|(o, _)| o.consent == Consent::None))
                && (s.individual_case == individual || situations.iter().all(|(o, _)| o.individual_case))
                && s.pull == t.unreviewed_pull
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
