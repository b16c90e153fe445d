//! Decision speed on the default federal rulebook (target: ≤ 2 µs per
//! decision). Run: `cargo bench -p cii-policy --bench decide`.

use std::hint::black_box;

use cii_policy::decide::{ConsentFound, Facts, Party, Transfer};
use cii_policy::{Rulebook, Trigger, decide, federal_sources, load};
use cii_types::InstitutionType;
use criterion::{Criterion, criterion_group, criterion_main};

fn transfers(rb: &Rulebook) -> Vec<(&'static str, Transfer)> {
    let date = time::macros::date!(2026 - 06 - 01);
    let informed =
        Facts::named(rb, ["person_informed_before", "incapacity_for_work_or_threatened"]).expect("declared facts");
    let exchange = Facts::named(rb, ["cost_bearer_unclear", "no_overriding_private_interest"]).expect("declared facts");
    let t = |from, to, trigger, purpose: &str, cats: &[&str], facts, consents| Transfer {
        unreviewed_pull: false,
        from: Party::of_type(from),
        to: Party::of_type(to),
        trigger: Some(trigger),
        purpose: purpose.to_owned(),
        categories: cats.iter().map(|c| (*c).to_owned()).collect(),
        persons: 1,
        case_reference: Some("bench".to_owned()),
        facts,
        consents,
        date,
    };
    let consent = vec![ConsentFound {
        reference: "c@1".into(),
        categories: vec!["identity".into(), "job_search".into()],
        purposes: vec!["integration".into()],
        written: true,
    }];
    vec![
        (
            "early_detection_permit",
            t(
                InstitutionType::AcOrp,
                InstitutionType::Ai,
                Trigger::SpontaneousReport,
                "early_detection",
                &["identity", "health_limitations"],
                informed,
                vec![],
            ),
        ),
        (
            "bilateral_with_withheld",
            t(
                InstitutionType::AcOrp,
                InstitutionType::Ai,
                Trigger::BilateralExchange,
                "integration",
                &["identity", "job_search", "medical_reports"],
                exchange,
                vec![],
            ),
        ),
        (
            "consent_based",
            t(
                InstitutionType::AcOrp,
                InstitutionType::As,
                Trigger::CaseAccess,
                "integration",
                &["identity", "job_search", "unemployment_benefits"],
                Facts::default(),
                consent,
            ),
        ),
        (
            "deny_no_basis",
            t(
                InstitutionType::Fp,
                InstitutionType::Suva,
                Trigger::CaseAccess,
                "integration",
                &["identity"],
                Facts::default(),
                vec![],
            ),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let rulebook = load(&federal_sources(), time::macros::date!(2026 - 06 - 01)).unwrap_or_else(|e| panic!("{e:?}"));
    let mut group = c.benchmark_group("decide");
    for (name, transfer) in transfers(&rulebook) {
        group.bench_function(name, |b| b.iter(|| decide(black_box(&rulebook), black_box(&transfer))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
