//! The default federal rulebook loads, and `check` names the problem in broken ones.

use cii_policy::rulebook::Severity;
use cii_policy::{Source, check, federal_sources};
use time::macros::date;

const TODAY: time::Date = date!(2026 - 11 - 23);

#[test]
fn the_federal_rulebook_has_no_error() {
    let report = check(&federal_sources(), TODAY);
    let errors: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let rb = report.rulebook.expect("rulebook");
    assert!(rb.bases.len() >= 30, "{} bases", rb.bases.len());
    assert_eq!(rb.hash.len(), 64);
    // Every [U] row is encoded but inactive; an [I] row is active only with its justification.
    use cii_policy::vocab::Status;
    for b in &rb.bases {
        match b.status {
            Status::Open => assert!(!b.active, "{}", b.id),
            Status::Inference => assert!(!b.active || !b.active_because.is_empty(), "{}", b.id),
            Status::Verified => {}
        }
    }
    // Medical reports never towards AC, AS, FP or MIG (a policy choice, docs/legal-review.md).
    use cii_types::InstitutionType;
    let medical = rb.category_index("medical_reports").expect("medical_reports");
    for b in rb.bases.iter().filter(|b| b.active && b.categories.contains(&medical)) {
        let mut recipients = b.to.clone();
        if b.mutual {
            recipients.extend(b.from.iter().copied());
        }
        let excluded = [
            InstitutionType::AcOrp,
            InstitutionType::AcFund,
            InstitutionType::As,
            InstitutionType::Fp,
            InstitutionType::Mig,
        ];
        assert!(
            !recipients.iter().any(|t| excluded.contains(t)),
            "{} releases medical reports towards {recipients:?}",
            b.id
        );
    }
}

fn minimal(extra: &str) -> Vec<Source> {
    let mut sources: Vec<Source> = federal_sources()
        .into_iter()
        .filter(|s| s.name.ends_with("00-core.toml") || s.name.ends_with("01-vocabulary.toml"))
        .collect();
    sources.push(Source {
        name: "broken.toml".to_owned(),
        text: extra.to_owned(),
    });
    sources
}

const GOOD_BASIS: &str = r#"
[[basis]]
id = "LPGA-32-1"
citation = { fr = "LPGA art. 32 al. 1", de = "ATSG Art. 32 Abs. 1" }
status = "verified"
effective_from = "2003-01-01"
from = ["AS"]
to = ["AI"]
triggers = ["written_request"]
purposes = ["benefit_determination"]
categories = ["identity"]
conditions = ["case_by_case", "written_request"]
"#;

fn errors_of(extra: &str) -> Vec<String> {
    check(&minimal(extra), TODAY)
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn a_minimal_rulebook_passes_with_warnings_only() {
    let report = check(&minimal(GOOD_BASIS), TODAY);
    assert!(!report.has_errors(), "{:?}", report.diagnostics);
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.code == "UNUSED_CATEGORY" && d.element == "category contact")
    );
    assert!(report.diagnostics.iter().any(|d| d.code == "UNUSED_PURPOSE"));
}

#[test]
fn broken_rulebooks_fail_naming_the_problem() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            GOOD_BASIS.replace("[\"identity\"]", "[\"identity\", \"dna\"]"),
            "UNKNOWN_CATEGORY",
            "category `dna`",
        ),
        (
            GOOD_BASIS.replace("[\"benefit_determination\"]", "[\"curiosity\"]"),
            "UNKNOWN_PURPOSE",
            "purpose `curiosity`",
        ),
        (
            GOOD_BASIS.replace(
                "citation = { fr = \"LPGA art. 32 al. 1\", de = \"ATSG Art. 32 Abs. 1\" }\n",
                "",
            ),
            "MISSING_CITATION",
            "basis LPGA-32-1",
        ),
        (
            GOOD_BASIS.replace("de = \"ATSG Art. 32 Abs. 1\"", "de = \"\""),
            "MISSING_CITATION",
            "French and German",
        ),
        (
            GOOD_BASIS.replace("[\"AS\"]", "[\"SOCIAL\"]"),
            "UNKNOWN_TYPE",
            "`SOCIAL`",
        ),
        (
            GOOD_BASIS.replace("\"written_request\"]\npurposes", "\"letter\"]\npurposes"),
            "UNKNOWN_TRIGGER",
            "letter",
        ),
        (
            GOOD_BASIS.replace("\"case_by_case\",", "\"benevolence\","),
            "UNKNOWN_CONDITION",
            "benevolence",
        ),
        (
            format!("{GOOD_BASIS}{}", GOOD_BASIS.replace("LPGA-32-1", "LPGA-32-1-x")),
            "OVERLAP",
            "identical in reach",
        ),
        (format!("{GOOD_BASIS}{GOOD_BASIS}"), "DUPLICATE_ID", "declared twice"),
        (
            GOOD_BASIS.replace(
                "effective_from = \"2003-01-01\"",
                "effective_from = \"2003-01-01\"\neffective_to = \"2020-12-31\"",
            ),
            "EXPIRED_ACTIVE",
            "expired but still active",
        ),
        (
            GOOD_BASIS.replace("status = \"verified\"", "status = \"open\"\nactive = true"),
            "OPEN_BASIS_ACTIVE",
            "active = false",
        ),
        (
            GOOD_BASIS.replace("id = \"LPGA-32-1\"", "id = \"lpga 32\""),
            "INVALID_ID",
            "LAW-ARTICLE-PARAGRAPH",
        ),
        (
            GOOD_BASIS.replace("effective_from = \"2003-01-01\"", "effective_from = \"1.1.2003\""),
            "INVALID_DATE",
            "YYYY-MM-DD",
        ),
        (
            GOOD_BASIS.replace("status = \"verified\"", "status = \"verified\"\ncolour = \"red\""),
            "TOML",
            "unknown field `colour`",
        ),
    ];
    for (text, code, needle) in cases {
        let errors = errors_of(&text);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("[{code}]")) && e.contains(needle)),
            "expected {code} mentioning {needle:?}, got {errors:#?}"
        );
        let report = check(&minimal(&text), TODAY);
        assert!(
            report.rulebook.is_none(),
            "{code}: a rulebook with errors must not be built"
        );
    }
}

#[test]
fn the_hash_changes_with_any_byte_and_is_stable() {
    let a = check(&federal_sources(), TODAY).rulebook.expect("rb");
    let b = check(&federal_sources(), TODAY).rulebook.expect("rb");
    assert_eq!(a.hash, b.hash);
    let mut changed = federal_sources();
    changed[1].text.push(' ');
    let c = check(&changed, TODAY).rulebook.expect("rb");
    assert_ne!(a.hash, c.hash);
}
