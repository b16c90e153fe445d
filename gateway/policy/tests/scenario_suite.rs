//! The project's scenario suite passes, covers every active basis with a
//! permit and a deny case, and a wrong expectation fails naming the scenario.

use cii_policy::scenario::{basis_matches, run_file};
use cii_policy::{decide, federal_sources, load};
use time::macros::date;

const SUITE: &str = include_str!("../scenarios/federal.toml");
const TODAY: time::Date = date!(2026 - 11 - 23);

#[test]
fn the_federal_suite_passes() {
    let rb = load(&federal_sources(), TODAY).expect("rulebook");
    let outcomes = run_file(&rb, "federal.toml", SUITE, TODAY);
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| format!("{}: {}", o.name, o.failures.join("; ")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(outcomes.len() >= 70);
}

/// The generated suite (one scenario per element of every active basis, docs/tools/element_scenarios.py)
/// passes too; it is the one the condition-coverage test leans on.
#[test]
fn the_element_suite_passes() {
    let rb = load(&federal_sources(), TODAY).expect("rulebook");
    let outcomes = run_file(
        &rb,
        "federal-elements.toml",
        include_str!("../scenarios/federal-elements.toml"),
        TODAY,
    );
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| format!("{}: {}", o.name, o.failures.join("; ")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(outcomes.len() >= 200);
}

#[test]
fn every_active_basis_has_a_permit_and_a_deny_case() {
    let rb = load(&federal_sources(), TODAY).expect("rulebook");
    let value: toml::Value = toml::from_str(SUITE).expect("suite");
    let scenarios = value.get("scenario").and_then(|s| s.as_array()).expect("scenarios");
    for basis in rb.bases.iter().filter(|b| b.active) {
        let permit = scenarios.iter().any(|s| {
            s.get("expect").and_then(|e| e.as_str()) == Some("permit")
                && s.get("expect_basis")
                    .and_then(|e| e.as_str())
                    .is_some_and(|e| basis_matches(&basis.id, e))
        });
        assert!(permit, "no permit scenario names basis {}", basis.id);
        // A deny case for a basis: a denied transfer the basis was examined for
        // (its pair and trigger), so that the basis's own limits were tested.
        let deny = scenarios.iter().any(|s| {
            let text = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            if text("expect") != "deny" {
                return false;
            }
            let from = cii_policy::scenario::party(&rb, &text("from"));
            let to = cii_policy::scenario::party(&rb, &text("to"));
            let trigger = cii_policy::Trigger::parse("trigger", &text("trigger"));
            match (from, to, trigger) {
                (Ok(f), Ok(t), Ok(tr)) => basis.covers_pair(f.kind, t.kind) && basis.triggers.contains(&tr),
                _ => false,
            }
        });
        assert!(deny, "no deny scenario examines basis {}", basis.id);
    }
}

#[test]
fn a_wrong_expectation_fails_and_says_which_and_why() {
    let rb = load(&federal_sources(), TODAY).expect("rulebook");
    let wrong = r#"
[[scenario]]
name = "deliberately wrong: early detection without informing the person"
from = "AC_ORP"
to = "AI"
trigger = "spontaneous_report"
purpose = "early_detection"
categories = ["identity", "health_limitations"]
expect = "permit"

[[scenario]]
name = "cannot be loaded"
from = "ORP"
to = "AI"
purpose = "early_detection"
categories = ["identity"]
expect = "permit"

[[scenario]]
name = "right"
from = "AC_ORP"
to = "AI"
trigger = "spontaneous_report"
purpose = "early_detection"
categories = ["identity"]
facts = { person_informed_before = true, incapacity_for_work_or_threatened = true }
expect = "permit"
expect_basis = "LPGA-32-2"
"#;
    let outcomes = run_file(&rb, "wrong.toml", wrong, TODAY);
    assert_eq!(outcomes.len(), 3);
    assert!(!outcomes[0].passed());
    assert!(
        outcomes[0].failures[0].contains("expected permit, got deny"),
        "{:?}",
        outcomes[0].failures
    );
    assert!(
        outcomes[0].failures[0].contains("person_informed_before"),
        "{:?}",
        outcomes[0].failures
    );
    assert_eq!(outcomes[1].name, "cannot be loaded");
    assert!(
        outcomes[1].failures[0].contains("cannot load") && outcomes[1].failures[0].contains("`ORP`"),
        "{:?}",
        outcomes[1].failures
    );
    // LPGA-32-2 must not match LAI-3b-2-i, and the prefix rule is exact.
    assert!(
        outcomes[2].failures[0].contains("expected basis LPGA-32-2"),
        "{:?}",
        outcomes[2].failures
    );
    assert!(basis_matches("LAI-3b-2-i", "LAI-3b-2"));
    assert!(!basis_matches("LPGA-32-2bis", "LPGA-32-2"));
    assert!(basis_matches("LPGA-32-2", "LPGA-32-2"));
    let _ = decide;
}
