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
        (
            GOOD_BASIS.replace("status = \"verified\"", "status = \"inference\"\nactive = true"),
            "INFERENCE_NOT_JUSTIFIED",
            "active_because",
        ),
        (
            GOOD_BASIS.replace(
                "conditions = [\"case_by_case\", \"written_request\"]",
                "conditions = [\"case_by_case\", \"no_overriding_private_interest\"]\nautomatic_answer = true",
            ),
            "AUTOMATIC_ANSWER_WEIGHED",
            "no_overriding_private_interest",
        ),
        (
            format!(
                "{GOOD_BASIS}\n[[condition]]\nid = \"either\"\nany_of = [\"consent\", \"written_request\"]\nlabel_fr = \"x\"\nlabel_de = \"x\"\nlabel_en = \"x\"\n"
            ),
            "INVALID_CONDITION",
            "cannot be one alternative",
        ),
        (
            format!(
                "{GOOD_BASIS}\n[[condition]]\nid = \"loop\"\nall_of = [\"later\"]\nlabel_fr = \"x\"\nlabel_de = \"x\"\nlabel_en = \"x\"\n"
            ),
            "UNKNOWN_CONDITION",
            "`later`",
        ),
        (
            format!(
                "{GOOD_BASIS}\n[[fact]]\nid = \"gossip\"\nattested_by = \"neighbour\"\nlabel_fr = \"x\"\nlabel_de = \"x\"\nlabel_en = \"x\"\n"
            ),
            "UNKNOWN_VALUE",
            "neighbour",
        ),
        (
            format!("{GOOD_BASIS}\n[[institution]]\nid = \"FONDATION-X\"\ntype = \"PRIVATE_DELEGATED\"\n"),
            "MISSING_CITATION",
            "delegating_act",
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

/// A canton's own rulebook file adds a fact, an institution type and a condition built from the
/// built-ins — with no Rust change — and `decide` and `explain` use them (issue 21).
#[test]
fn a_cantons_file_adds_a_fact_a_type_and_a_condition_that_decide_and_explain_use() {
    let geneva = r#"
[rulebook]
version = "GE-test"
extends = "federal"

[[institution_type]]
id = "INSERTION_GE"
label_fr = "Service de réinsertion professionnelle (GE)"
label_de = "Dienst für berufliche Wiedereingliederung (GE)"
label_en = "Vocational reintegration service (GE)"
regime = "cantonal"
secrecy = "LIASI (GE) art. 8 ; CP art. 320"

[[fact]]
id = "registered_for_reintegration"
label_fr = "la personne est inscrite à une mesure de réinsertion"
label_de = "die Person ist für eine Wiedereingliederungsmassnahme angemeldet"
label_en = "the person is registered for a reintegration measure"
attested_by = "recipient"

[[condition]]
id = "ge_reintegration_case"
all_of = ["cantonal_release", "registered_for_reintegration", "written_consent"]
label_fr = "cas de réinsertion libéré par la LIASI, avec consentement écrit"
label_de = "Wiedereingliederungsfall, durch das LIASI entbunden, mit schriftlicher Einwilligung"
label_en = "reintegration case released by the LIASI, with written consent"

[[basis]]
id = "LIASI-8-2"
citation = { fr = "LIASI (GE) art. 8 al. 2", de = "LIASI (GE) Art. 8 Abs. 2" }
status = "verified"
effective_from = "2012-01-01"
cantons = ["GE"]
from = ["AS"]
to = ["INSERTION_GE"]
triggers = ["written_request"]
purposes = ["integration"]
categories = ["identity", "social_aid_benefits"]
conditions = ["case_by_case", "ge_reintegration_case"]

[[institution]]
id = "HG-GE"
type = "AS"
canton = "GE"
regime = "cantonal"

[[institution.cantonal_release]]
citation = "LIASI (GE) art. 8 al. 2"
since = "2012-01-01"

[[institution]]
id = "REINSERTION-GE"
type = "INSERTION_GE"
canton = "GE"

[[institution.cantonal_release]]
citation = "LIASI (GE) art. 8 al. 2"
since = "2012-01-01"
"#;
    let sources = cii_policy::rulebook::with_base(vec![Source {
        name: "ge/00-ge.toml".to_owned(),
        text: geneva.to_owned(),
    }]);
    let rb = cii_policy::load(&sources, TODAY).expect("the canton's rulebook loads");
    let party = |s: &str| cii_policy::scenario::party(&rb, s).expect("party");
    let consent = cii_policy::ConsentFound {
        reference: "c-1@1".into(),
        categories: vec!["identity".into(), "social_aid_benefits".into()],
        purposes: vec!["integration".into()],
        written: true,
    };
    let transfer = |from: &str, facts: &[&str]| cii_policy::Transfer {
        from: party(from),
        to: party("REINSERTION-GE"),
        trigger: Some(cii_policy::Trigger::WrittenRequest),
        purpose: "integration".into(),
        categories: vec!["identity".into(), "social_aid_benefits".into()],
        persons: 1,
        case_reference: Some("HG-2026-17".into()),
        unreviewed_pull: false,
        facts: cii_policy::decide::Facts::named(&rb, facts.iter().copied()).expect("declared facts"),
        consents: vec![consent.clone()],
        date: TODAY,
    };
    let permitted = cii_policy::decide(&rb, &transfer("HG-GE", &["registered_for_reintegration"])).expect("decide");
    assert!(permitted.is_permit(), "{permitted:?}");
    assert_eq!(rb.bases[permitted.bases()[0]].id, "LIASI-8-2");
    // Without the canton's own fact, its condition fails.
    let without = cii_policy::decide(&rb, &transfer("HG-GE", &[])).expect("decide");
    assert!(!without.is_permit());
    // The same social service type in another canton: the basis is Geneva's only.
    let mut elsewhere = transfer("HG-GE", &["registered_for_reintegration"]);
    elsewhere.from = cii_policy::Party {
        canton: Some("VS".into()),
        ..party("HG-GE")
    };
    assert!(!cii_policy::decide(&rb, &elsewhere).expect("decide").is_permit());
    // explain names the canton's condition, its parts and its fact, in the reader's language.
    let text = cii_policy::explain(&rb, &transfer("HG-GE", &[]), cii_policy::Lang::Fr).expect("explain");
    assert!(
        text.contains("cas de réinsertion libéré par la LIASI, avec consentement écrit"),
        "{text}"
    );
    assert!(
        text.contains("✗ la personne est inscrite à une mesure de réinsertion"),
        "{text}"
    );
    // A denial cites the secrecy rule that binds the discloser (H-04).
    assert!(
        text.contains("Secret applicable : secret de fonction cantonal"),
        "{text}"
    );
    let explained = cii_policy::explain(&rb, &elsewhere, cii_policy::Lang::En).expect("explain");
    assert!(explained.contains("limited to the cantons GE"), "{explained}");
}

/// An entry written before entries kept what a replay needs is reported, never guessed; one
/// that kept it is decided again and compared.
#[test]
fn replay_reports_old_entries_and_decides_new_ones_again() {
    use cii_policy::replay::{Recorded, Replayed, replay};
    let rb = cii_policy::load(&federal_sources(), TODAY).expect("rulebook");
    let party = |id: &str| {
        let kind = match id {
            "ORP-VS" => cii_types::InstitutionType::AcOrp,
            "AI-VS" => cii_types::InstitutionType::Ai,
            _ => return None,
        };
        Some(cii_policy::Party::member(
            kind,
            cii_types::InstitutionId::parse("id", id).ok()?,
            None,
        ))
    };
    let recorded = Recorded {
        index: 7,
        transfer_id: "ed-1".into(),
        permitted: true,
        bases: vec!["LAI-3b-2-i".into()],
        released: vec!["identity".into(), "health_limitations".into()],
        withheld: vec!["medical_reports:CATEGORY_NOT_PERMITTED".into()],
        sender: "ORP-VS".into(),
        recipient: "AI-VS".into(),
        trigger: "spontaneous_report".into(),
        purpose: "early_detection".into(),
        attestations: vec![
            "person_informed_before".into(),
            "incapacity_for_work_or_threatened".into(),
        ],
        case_reference: "case-1".into(),
        date: Some(TODAY),
        replay_format: 1,
        ..Recorded::default()
    };
    assert_eq!(replay(&rb, &recorded, party), Replayed::Same);
    let older = Recorded {
        replay_format: 0,
        ..recorded.clone()
    };
    assert!(matches!(replay(&rb, &older, party), Replayed::CannotReplay(why) if why.contains("written before")));
    // Without the target-group attestation the same report would now be refused.
    let before_the_review = Recorded {
        attestations: vec!["person_informed_before".into()],
        ..recorded.clone()
    };
    match replay(&rb, &before_the_review, party) {
        Replayed::Changed { recorded, replayed } => {
            assert!(recorded.permitted && !replayed.permitted);
            assert_eq!(replayed.to_string(), "DENY");
        }
        other => panic!("{other:?}"),
    }
    let gone = Recorded {
        recipient: "AI-XX".into(),
        ..recorded
    };
    assert!(matches!(replay(&rb, &gone, party), Replayed::CannotReplay(why) if why.contains("registry")));
}

/// A rulebook written by the release before the vocabulary was data (the federal rulebook
/// `federal-2026.11`, checked in as it was) still loads and decides as it did: it gets the
/// built-in vocabulary, and its inference rows stay inactive with a warning until justified.
#[test]
fn a_rulebook_written_by_the_previous_release_still_loads_and_decides() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rulebook-federal-2026.11");
    let mut files: Vec<Source> = std::fs::read_dir(&dir)
        .expect("fixture")
        .flatten()
        .map(|e| Source {
            name: format!("old/{}", e.file_name().to_string_lossy()),
            text: std::fs::read_to_string(e.path()).expect("read"),
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let report = check(&cii_policy::rulebook::with_base(files), TODAY);
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    assert!(
        report
            .diagnostics
            .iter()
            .any(|d| d.code == "INFERENCE_INACTIVE" && d.element == "basis LAVS-153g"),
        "{:#?}",
        report.diagnostics
    );
    let rb = report.rulebook.expect("rulebook");
    assert_eq!(rb.version, "federal-2026.11");
    let early_detection = cii_policy::Transfer {
        from: cii_policy::Party::of_type(cii_types::InstitutionType::AcOrp),
        to: cii_policy::Party::of_type(cii_types::InstitutionType::Ai),
        trigger: Some(cii_policy::Trigger::SpontaneousReport),
        purpose: "early_detection".into(),
        categories: vec!["identity".into(), "health_limitations".into(), "medical_reports".into()],
        persons: 1,
        case_reference: Some("case-1".into()),
        unreviewed_pull: false,
        facts: cii_policy::decide::Facts::named(&rb, ["person_informed_before"]).expect("fact"),
        consents: Vec::new(),
        date: TODAY,
    };
    let decision = cii_policy::decide(&rb, &early_detection).expect("decide");
    assert!(decision.is_permit());
    // As that release decided: the medical reports went with the report (the defect F-01 the
    // current federal rulebook fixes).
    let released: Vec<&str> = decision
        .released()
        .iter()
        .map(|i| rb.categories[*i].id.as_str())
        .collect();
    assert_eq!(released, ["identity", "health_limitations", "medical_reports"]);
}
