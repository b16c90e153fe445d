//! Properties of the engine on the default rulebook and on random transfers.

use cii_policy::decide::{ConsentFound, Facts, Party, Transfer};
use cii_policy::{Builtin, Rulebook, Trigger, decide, federal_sources, load};
use cii_types::InstitutionType;
use proptest::prelude::*;
use std::sync::OnceLock;

fn federal() -> &'static Rulebook {
    static RB: OnceLock<Rulebook> = OnceLock::new();
    RB.get_or_init(|| load(&federal_sources(), time::macros::date!(2026 - 11 - 23)).expect("rulebook"))
}

/// A rulebook with the vocabulary only: no basis at all.
fn empty() -> &'static Rulebook {
    static RB: OnceLock<Rulebook> = OnceLock::new();
    RB.get_or_init(|| {
        let core: Vec<_> = federal_sources()
            .into_iter()
            .filter(|s| s.name.ends_with("00-core.toml") || s.name.ends_with("01-vocabulary.toml"))
            .collect();
        load(&core, time::macros::date!(2026 - 11 - 23)).expect("core")
    })
}

fn transfer() -> impl Strategy<Value = Transfer> {
    let rb = federal();
    let categories: Vec<String> = rb.categories.iter().map(|c| c.id.clone()).collect();
    let purposes: Vec<String> = rb.purposes.iter().map(|p| p.id.clone()).collect();
    let types: Vec<InstitutionType> = rb.types.keys().copied().collect();
    let fact_count = rb.facts.len();
    (
        (
            proptest::sample::select(types.clone()),
            proptest::sample::select(types),
            0..Trigger::ALL.len(),
        ),
        proptest::sample::select(purposes.clone()),
        proptest::sample::subsequence(categories.clone(), 1..6),
        any::<u64>(),
        (prop_oneof![Just(1u32), 1u32..4], any::<bool>()),
        proptest::option::of((
            proptest::sample::subsequence(categories, 0..6),
            proptest::sample::subsequence(purposes, 0..3),
            any::<bool>(),
        )),
        (2000i32..2030, 1u8..13),
    )
        .prop_map(
            move |((f, t, tr), purpose, categories, fact_bits, (persons, referenced), consent, (year, month))| {
                let mut facts = Facts::default();
                for i in 0..fact_count {
                    facts.set(i, fact_bits & (1 << i) != 0);
                }
                let consents = consent
                    .map(|(categories, purposes, written)| {
                        vec![ConsentFound {
                            reference: "c@1".into(),
                            categories,
                            purposes,
                            written,
                        }]
                    })
                    .unwrap_or_default();
                Transfer {
                    unreviewed_pull: false,
                    from: Party::of_type(f),
                    to: Party::of_type(t),
                    trigger: Some(Trigger::ALL[tr]),
                    purpose,
                    categories,
                    persons,
                    case_reference: referenced.then(|| "case-1".to_owned()),
                    facts,
                    consents,
                    date: time::Date::from_calendar_date(year, time::Month::try_from(month).expect("month"), 1)
                        .expect("date"),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn without_a_basis_everything_is_denied(t in transfer()) {
        let d = decide(empty(), &t).expect("decidable");
        prop_assert!(!d.is_permit());
        prop_assert_eq!(d.withheld().len(), t.categories.len());
    }

    #[test]
    fn no_covering_basis_means_deny(t in transfer()) {
        let rb = federal();
        let covered = rb.bases.iter().any(|b| b.active && b.in_force(t.date) && b.covers_pair(t.from.kind, t.to.kind)
            && t.trigger.is_none_or(|tr| b.triggers.contains(&tr)));
        let d = decide(rb, &t).expect("decidable");
        if !covered {
            prop_assert!(!d.is_permit(), "permitted without a covering basis: {:?}", d);
        }
    }

    #[test]
    fn released_is_within_asked_and_within_the_citing_bases(t in transfer()) {
        let rb = federal();
        let d = decide(rb, &t).expect("decidable");
        let asked: Vec<usize> = t.categories.iter().map(|c| rb.category_index(c).expect("known")).collect();
        for r in d.released() {
            prop_assert!(asked.contains(r), "released a category not asked for");
            let permitted = d.bases().iter().any(|b| rb.bases[*b].categories.contains(r));
            prop_assert!(permitted, "released a category no cited basis permits");
        }
        // Every category asked for is either released or withheld, never both.
        for a in &asked {
            let released = d.released().contains(a);
            let withheld = d.withheld().iter().any(|w| w.category == *a);
            prop_assert!(released != withheld);
        }
        // A consent-based permit never releases beyond the consent.
        if d.is_permit() && d.bases().iter().all(|b| rb.basis_uses(&rb.bases[*b], Builtin::Consent) || rb.basis_uses(&rb.bases[*b], Builtin::WrittenConsent)) {
            let covered: Vec<usize> = t.consents.iter().flat_map(|c| c.categories.iter().filter_map(|id| rb.category_index(id))).collect();
            for r in d.released() {
                prop_assert!(covered.contains(r));
            }
        }
    }

    #[test]
    fn decisions_are_deterministic(t in transfer()) {
        let rb = federal();
        let a = decide(rb, &t).expect("decidable");
        let b = decide(rb, &t).expect("decidable");
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.rulebook_hash(), rb.hash.as_str());
    }

    #[test]
    fn bulk_never_passes_a_case_by_case_basis(t in transfer()) {
        let rb = federal();
        let mut bulk = t.clone();
        bulk.persons = 7;
        let d = decide(rb, &bulk).expect("decidable");
        for b in d.bases() {
            prop_assert!(!rb.basis_uses(&rb.bases[*b], Builtin::CaseByCase));
        }
        // Nor does a transfer with no case reference.
        let mut unreferenced = t.clone();
        unreferenced.case_reference = None;
        let d = decide(rb, &unreferenced).expect("decidable");
        for b in d.bases() {
            prop_assert!(!rb.basis_uses(&rb.bases[*b], Builtin::CaseByCase));
        }
    }

    #[test]
    fn under_the_federal_rulebook_no_list_transfer_is_permitted(t in transfer()) {
        // No federal basis permits several persons in one transfer (issue 21: a canton may add one
        // where its law provides it); only anonymised statistics concern no person at all.
        let rb = federal();
        let mut list = t.clone();
        list.persons = 2 + (t.persons % 50);
        let d = decide(rb, &list).expect("decidable");
        let anonymised = rb.category_index("anonymised_statistics").expect("category");
        prop_assert!(d.released().iter().all(|c| *c == anonymised), "{:?}", d);
    }
}

/// The decision copy of LAI 68bis al. 5 goes only to a recipient that serves the person:
/// whether it is permitted depends on the directory, and the gateway must not tell the sender.
/// Denied whatever the directory says, it is told with the reasons that hold anyway.
#[test]
fn a_decision_that_turns_on_the_directory_is_not_disclosed() {
    use decide::Disclosure;
    let rb = federal();
    let hidden = rb.directory_facts();
    assert_eq!(hidden.len(), 4, "the federal directory facts: {hidden:?}");
    let copy = Transfer {
        unreviewed_pull: false,
        from: Party::of_type(InstitutionType::Ai),
        to: Party::of_type(InstitutionType::As),
        trigger: Some(Trigger::MandatoryReport),
        purpose: "benefit_coordination".into(),
        categories: vec!["identity".into(), "benefit_decision".into()],
        persons: 1,
        case_reference: Some("case-1".into()),
        facts: Facts::named(rb, ["decision_affects_recipient_benefits"]).expect("facts"),
        consents: Vec::new(),
        date: time::macros::date!(2026 - 12 - 07),
    };
    assert_eq!(decide::disclosure(rb, &copy, &hidden), Ok(Disclosure::Undisclosed));
    // Whatever the directory says in the transfer itself.
    let serves = rb.fact_index("recipient_serves_person").expect("fact");
    let mut served = copy.clone();
    served.facts.set(serves, true);
    assert!(decide::decide(rb, &served).expect("decides").is_permit());
    assert_eq!(decide::disclosure(rb, &served, &hidden), Ok(Disclosure::Undisclosed));
    // Without the decision touching the recipient's benefits it is denied anyway, and the
    // denial told names no directory fact.
    let untouched = Transfer {
        facts: Facts::default(),
        ..copy
    };
    let Ok(Disclosure::DeniedAnyway(denied)) = decide::disclosure(rb, &untouched, &hidden) else {
        panic!("denied whatever the directory says");
    };
    assert!(!denied.is_permit());
    let serves_condition = rb.condition_index("recipient_serves_person").expect("condition");
    let names = |d: &decide::Decision| d.reasons().iter().any(|r| r.condition == Some(serves_condition));
    assert!(
        names(&decide::decide(rb, &untouched).expect("decides")),
        "the real denial names it"
    );
    assert!(!names(&denied), "{denied:?}");
    // No hidden fact: nothing to hide.
    assert_eq!(decide::disclosure(rb, &served, &[]), Ok(Disclosure::Decided));
}

proptest! {
    /// `disclosure` agrees with deciding every combination of the directory facts by hand.
    #[test]
    fn disclosure_agrees_with_brute_force(t in transfer()) {
        use decide::Disclosure;
        let rb = federal();
        let hidden = rb.directory_facts();
        let mut seen = std::collections::BTreeSet::new();
        let mut permits = false;
        for bits in 0u32..16 {
            let mut probe = t.clone();
            for (b, f) in hidden.iter().enumerate() {
                probe.facts.set(*f, bits & (1 << b) != 0);
            }
            let decision = decide::decide(rb, &probe).expect("decides");
            permits |= decision.is_permit();
            seen.insert(format!("{decision:?}"));
        }
        let expected = match (seen.len(), permits) {
            (1, _) => "decided",
            (_, false) => "denied anyway",
            _ => "undisclosed",
        };
        let got = match decide::disclosure(rb, &t, &hidden).expect("decides") {
            Disclosure::Decided => "decided",
            Disclosure::DeniedAnyway(_) => "denied anyway",
            Disclosure::Undisclosed => "undisclosed",
        };
        prop_assert_eq!(got, expected);
    }
}
