//! `explain` output, checked as snapshots in French and German (and English)
//! for three representative cases. Regenerate after an intended change with
//! `UPDATE_SNAPSHOTS=1 cargo test -p cii-policy --test explain`, then review the diff.

use cii_policy::decide::{ConsentFound, Facts, Party, Transfer};
use cii_policy::{Lang, Rulebook, Trigger, explain, federal_sources, load};
use cii_types::InstitutionType;

#[expect(
    clippy::too_many_arguments,
    reason = "one line per field of the transfer, read as a table"
)]
fn transfer(
    rb: &Rulebook,
    from: InstitutionType,
    to: InstitutionType,
    trigger: Trigger,
    purpose: &str,
    categories: &[&str],
    facts: &[&str],
    consents: Vec<ConsentFound>,
) -> Transfer {
    let f = Facts::named(rb, facts.iter().copied()).expect("declared facts");
    Transfer {
        unreviewed_pull: false,
        from: Party::of_type(from),
        to: Party::of_type(to),
        trigger: Some(trigger),
        purpose: purpose.to_owned(),
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        persons: 1,
        case_reference: Some("case-1".to_owned()),
        facts: f,
        consents,
        date: time::macros::date!(2026 - 01 - 15),
    }
}

fn cases(rb: &Rulebook) -> Vec<(&'static str, Transfer)> {
    use InstitutionType as T;
    vec![
        (
            "early_detection",
            transfer(
                rb,
                T::AcOrp,
                T::Ai,
                Trigger::SpontaneousReport,
                "early_detection",
                &["identity", "health_limitations", "identity.avs"],
                &["person_informed_before", "incapacity_for_work_or_threatened"],
                vec![],
            ),
        ),
        (
            "cost_bearer_exchange_medical_withheld",
            transfer(
                rb,
                T::Ai,
                T::AcOrp,
                Trigger::BilateralExchange,
                "integration",
                &["identity", "health_limitations", "medical_reports"],
                &["cost_bearer_unclear", "no_overriding_private_interest"],
                vec![],
            ),
        ),
        (
            "case_access_without_reciprocity",
            transfer(
                rb,
                T::AcOrp,
                T::As,
                Trigger::CaseAccess,
                "integration",
                &["identity", "job_search"],
                &["recipient_serves_person"],
                vec![ConsentFound {
                    reference: "consent-7@2".into(),
                    categories: vec!["identity".into(), "job_search".into()],
                    purposes: vec!["integration".into()],
                    written: false,
                }],
            ),
        ),
    ]
}

#[test]
fn explanations_match_their_snapshots() {
    let rb = load(&federal_sources(), time::macros::date!(2026 - 11 - 23)).expect("rulebook");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut mismatches = Vec::new();
    for (name, t) in cases(&rb) {
        for lang in [Lang::Fr, Lang::De, Lang::En] {
            // The hash and version change with every rulebook edit; the reasoning is what is pinned.
            let text = explain(&rb, &t, lang)
                .expect("explain")
                .replace(&rb.hash[..16], "<hash>")
                .replace(&rb.version, "<version>");
            let file = dir.join(format!("{name}.{lang}.txt"));
            if update {
                std::fs::write(&file, &text).expect("write snapshot");
                continue;
            }
            let expected = std::fs::read_to_string(&file).unwrap_or_default();
            if expected != text {
                mismatches.push(format!(
                    "{}:\n--- expected\n{expected}\n--- actual\n{text}",
                    file.display()
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}
