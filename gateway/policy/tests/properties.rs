//! Properties of the engine on the default rulebook and on random transfers.

use cii_policy::decide::{ConsentFound, Facts, Party, Transfer};
use cii_policy::{Fact, Rulebook, Trigger, decide, federal_sources, load};
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
            .filter(|s| s.name.ends_with("00-core.toml"))
            .collect();
        load(&core, time::macros::date!(2026 - 11 - 23)).expect("core")
    })
}

fn transfer() -> impl Strategy<Value = Transfer> {
    let rb = federal();
    let categories: Vec<String> = rb.categories.iter().map(|c| c.id.clone()).collect();
    let purposes: Vec<String> = rb.purposes.iter().map(|p| p.id.clone()).collect();
    (
        (
            0..InstitutionType::ALL.len(),
            0..InstitutionType::ALL.len(),
            0..Trigger::ALL.len(),
        ),
        proptest::sample::select(purposes.clone()),
        proptest::sample::subsequence(categories.clone(), 1..6),
        any::<u16>(),
        prop_oneof![Just(1u32), 1u32..4],
        proptest::option::of((
            proptest::sample::subsequence(categories, 0..6),
            proptest::sample::subsequence(purposes, 0..3),
            any::<bool>(),
        )),
        (2000i32..2030, 1u8..13),
    )
        .prop_map(
            |((f, t, tr), purpose, categories, fact_bits, persons, consent, (year, month))| {
                let mut facts = Facts::default();
                for (i, fact) in Fact::ALL.iter().enumerate() {
                    facts.set(*fact, fact_bits & (1 << i) != 0);
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
                    from: Party::of_type(InstitutionType::ALL[f]),
                    to: Party::of_type(InstitutionType::ALL[t]),
                    trigger: Some(Trigger::ALL[tr]),
                    purpose,
                    categories,
                    persons,
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
        if d.is_permit() && d.bases().iter().all(|b| rb.bases[*b].conditions.iter().any(|c| matches!(c, cii_policy::Condition::Consent | cii_policy::Condition::WrittenConsent))) {
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
            prop_assert!(!rb.bases[*b].conditions.contains(&cii_policy::Condition::CaseByCase));
        }
    }
}
