//! `cii bench policy`: decisions per second of the engine on the federal rulebook, one core,
//! cycling through representative transfers.

use std::time::Duration;

use cii_policy::Trigger;
use cii_policy::decide::{ConsentFound, Facts, Party, Transfer};
use cii_types::InstitutionType;

use super::rate;

/// Decisions per second on one core, cycling through representative transfers.
pub(super) fn policy(phase: Duration) -> anyhow::Result<serde_json::Value> {
    let today = time::OffsetDateTime::now_utc().date();
    let rulebook = cii_policy::fit::load(None, today)?;
    let informed = Facts::named(
        &rulebook,
        ["person_informed_before", "incapacity_for_work_or_threatened"],
    )
    .map_err(|f| anyhow::anyhow!("the federal rulebook lacks fact `{f}`"))?;
    let transfer = |to, trigger, purpose: &str, categories: &[&str], facts, consents| Transfer {
        from: Party::of_type(InstitutionType::AcOrp),
        to: Party::of_type(to),
        trigger: Some(trigger),
        purpose: purpose.to_owned(),
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        persons: 1,
        case_reference: Some("bench".to_owned()),
        unreviewed_pull: false,
        facts,
        consents,
        date: today,
    };
    let consent = vec![ConsentFound {
        reference: "c@1".into(),
        categories: vec!["identity".into(), "job_search".into()],
        purposes: vec!["integration".into()],
        written: true,
    }];
    let transfers = [
        transfer(
            InstitutionType::Ai,
            Trigger::SpontaneousReport,
            "early_detection",
            &["identity", "health_limitations"],
            informed,
            vec![],
        ),
        transfer(
            InstitutionType::As,
            Trigger::CaseAccess,
            "integration",
            &["identity", "job_search"],
            Facts::default(),
            consent,
        ),
        transfer(
            InstitutionType::Suva,
            Trigger::CaseAccess,
            "integration",
            &["identity"],
            Facts::default(),
            vec![],
        ),
    ];
    let mut n = 0usize;
    let per_s = rate(phase, 1, || {
        let t = &transfers[n % transfers.len()];
        n += 1;
        std::hint::black_box(cii_policy::decide(&rulebook, t).ok());
    });
    Ok(serde_json::json!({ "decisions_per_s": per_s }))
}
