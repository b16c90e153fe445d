//! `cii policy …` as jurists run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cii(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cii"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run cii")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_passes_on_the_default_and_the_valais_rulebooks() {
    for args in [
        vec!["policy", "check"],
        vec!["policy", "check", "--rulebook", "deploy/rulebook/vs"],
    ] {
        let out = cii(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout(&out).contains("0 error(s)"));
    }
}

#[test]
fn check_fails_on_a_broken_rulebook_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("broken.toml"),
        "[rulebook]\nversion = \"broken-1\"\nextends = \"federal\"\n\n[[basis]]\nid = \"LACI-85f-9\"\nstatus = \"verified\"\n\
         effective_from = \"2020-01-01\"\nfrom = [\"AC_ORP\"]\nto = [\"AI\"]\ntriggers = [\"case_access\"]\n\
         purposes = [\"integration\"]\ncategories = [\"horoscope\"]\n",
    )
    .expect("write");
    let out = cii(&["policy", "check", "--rulebook", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("[UNKNOWN_CATEGORY]") && text.contains("basis LACI-85f-9") && text.contains("`horoscope`"),
        "{text}"
    );
    assert!(text.contains("[MISSING_CITATION]"), "{text}");
}

#[test]
fn the_scenario_suite_passes_and_a_wrong_expectation_fails() {
    let out = cii(&["policy", "test", "--scenarios", "gateway/policy/scenarios/federal.toml"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let last = text.lines().last().expect("summary");
    assert!(last.ends_with("passed, 0 failed"), "{last}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wrong.toml");
    std::fs::write(
        &file,
        "[[scenario]]\nname = \"LPGA 32 without a written request\"\nfrom = \"AS\"\nto = \"AI\"\ntrigger = \"written_request\"\n\
         purpose = \"benefit_determination\"\ncategories = [\"identity\"]\nexpect = \"permit\"\n",
    )
    .expect("write");
    let out = cii(&["policy", "test", "--scenarios", &file.to_string_lossy()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("FAILED LPGA 32 without a written request") && text.contains("expected permit, got deny"),
        "{text}"
    );
    assert!(
        text.contains("written_request"),
        "the reason names the failed condition: {text}"
    );
    assert_eq!(text.lines().last(), Some("0 passed, 1 failed"));
}

#[test]
fn explain_ends_with_the_decision_in_the_asked_language() {
    let base = [
        "policy",
        "explain",
        "--from",
        "AC_ORP",
        "--to",
        "AI",
        "--trigger",
        "spontaneous_report",
        "--purpose",
        "early_detection",
        "--categories",
        "identity,health_limitations",
    ];
    let facts = [
        "--fact",
        "person_informed_before=true",
        "--fact",
        "incapacity_for_work_or_threatened=true",
    ];
    let out = cii(&[&base[..], &facts[..], &["--lang", "de"]].concat());
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.trim_end().ends_with("Entscheid: PERMIT"), "{text}");
    assert!(text.contains("IVG Art. 3abis Abs. 2, Art. 3b"), "{text}");
    let out = cii(&[&base[..], &["--lang", "fr"]].concat());
    assert!(stdout(&out).trim_end().ends_with("Décision : DENY"));
    // An unknown fact is an error naming it, not a silent false.
    let out = cii(&[&base[..], &["--fact", "person_informed=true"]].concat());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("person_informed"));
}

#[test]
fn the_matrix_is_printed_as_markdown_and_html() {
    let md = stdout(&cii(&["policy", "matrix", "--format", "md"]));
    assert!(
        md.contains("| De → À |")
            && md.contains("LACI-85f-3 (LACI art. 85f al. 3 et 4 ; LSE art. 35a al. 1bis et 1ter)"),
        "{md}"
    );
    let html = stdout(&cii(&["policy", "matrix", "--format", "html", "--lang", "de"]));
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<table>") && html.contains("AVIG Art. 85f"),
        "{html}"
    );
}

#[test]
fn diff_reports_a_changed_basis_and_the_decisions_it_changes() {
    // A complete copy of the federal rulebook in which LAI-3b-2-i no longer covers health data.
    let dir = federal_copy("30-lai.toml", |text| {
        in_basis(
            &text,
            "LAI-3b-2-i",
            ", \"health_limitations\", \"incapacity_certificate\"",
            "",
        )
    });
    let out = cii(&[
        "policy",
        "diff",
        "federal",
        &dir.path().to_string_lossy(),
        "--limit",
        "0",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("~ basis LAI-3b-2-i: categories"), "{text}");
    assert!(
        text.contains("≠ AC_ORP → AI, spontaneous_report, early_detection"),
        "{text}"
    );
}

#[test]
fn check_fails_when_the_rulebook_names_a_category_no_payload_field_carries() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("extra.toml"),
        "[rulebook]\nversion = \"extra-1\"\nextends = \"federal\"\n\n[[category]]\nid = \"tax_records\"\n\
         label_fr = \"Données fiscales\"\nlabel_de = \"Steuerdaten\"\nlabel_en = \"Tax records\"\nsensitivity = \"ordinary\"\n",
    )
    .expect("write");
    let out = cii(&["policy", "check", "--rulebook", &dir.path().to_string_lossy()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error[CATEGORY_WITHOUT_FIELD]: contract:") && text.contains("tax_records"),
        "{text}"
    );
    assert!(text.contains("1 error(s)"), "{text}");
}

/// A complete copy of the federal rulebook (files and invariants) in a temporary folder, with
/// `edit` applied to the text of the file named `edited`.
fn federal_copy(edited: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let federal = root().join("gateway/policy/rulebook/federal");
    for (from, to) in [
        (federal.clone(), dir.path().to_owned()),
        (federal.join("invariants"), dir.path().join("invariants")),
    ] {
        std::fs::create_dir_all(&to).expect("dir");
        for file in std::fs::read_dir(&from)
            .expect("dir")
            .flatten()
            .filter(|f| f.path().is_file())
        {
            let name = file.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(file.path()).expect("read");
            let text = if name == edited { edit(text) } else { text };
            std::fs::write(to.join(&name), text).expect("write");
        }
    }
    dir
}

/// `text` with the first `old` after basis `id`'s declaration replaced by `new`.
fn in_basis(text: &str, id: &str, old: &str, new: &str) -> String {
    let start = text.find(&format!("id = \"{id}\"")).expect("basis");
    let at = start + text[start..].find(old).expect("in the basis");
    format!("{}{new}{}", &text[..at], &text[at + old.len()..])
}

/// The treating-doctor basis (AI → treating doctor, medical reports) also naming private bodies.
fn medical_reports_to_private_bodies(text: String) -> String {
    in_basis(
        &text,
        "LAI-66a-1-cbis",
        "to = [\"HEALTH_PROVIDER\"]",
        "to = [\"HEALTH_PROVIDER\", \"PRIVATE\"]",
    )
}

#[test]
fn prove_holds_on_the_shipped_rulebooks() {
    for args in [
        vec!["policy", "prove"],
        vec!["policy", "prove", "--rulebook", "deploy/rulebook/vs"],
    ] {
        let out = cii(&args);
        let text = stdout(&out);
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(text.contains(" 0 violated; ") && !text.contains("VIOLATED"), "{text}");
        assert!(
            text.contains("holds     no-medical-data-outside-the-insurers-and-the-treating-doctor"),
            "{text}"
        );
    }
}

#[test]
fn prove_finds_a_planted_defect_and_its_scenario_fails_on_it_and_passes_on_the_real_rulebook() {
    let defective = federal_copy("30-lai.toml", medical_reports_to_private_bodies);
    let dir = defective.path().to_string_lossy().into_owned();
    let out = cii(&["policy", "prove", "--rulebook", &dir, "--limit", "1"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("VIOLATED  no-medical-data-outside-the-insurers-and-the-treating-doctor"),
        "{text}"
    );
    assert!(
        text.contains("holds     avs-number-only-where-a-provision-names-it"),
        "{text}"
    );
    // The counterexample of that invariant, pasted as it is into a suite.
    let at = text
        .find("VIOLATED  no-medical-data-outside-the-insurers-and-the-treating-doctor")
        .expect("verdict");
    let block = &text[at..];
    let start = block.find("[[scenario]]").expect("scenario");
    let end = block[start..].find("\n\n").map_or(block.len(), |e| start + e);
    let scenario = &block[start..end];
    assert!(
        scenario.contains("to = \"PRIVATE\"") && scenario.contains("expect_withheld = [\"medical_reports\"]"),
        "{scenario}"
    );
    let suite = tempfile::NamedTempFile::new().expect("suite");
    std::fs::write(suite.path(), scenario).expect("write");
    let suite = suite.path().to_string_lossy().into_owned();
    let on_defective = cii(&["policy", "test", "--rulebook", &dir, "--scenarios", &suite]);
    assert_eq!(on_defective.status.code(), Some(1), "{}", stdout(&on_defective));
    assert!(stdout(&on_defective).contains("0 passed, 1 failed"));
    let on_real = cii(&["policy", "test", "--scenarios", &suite]);
    assert!(on_real.status.success(), "{}", stdout(&on_real));
    assert!(stdout(&on_real).contains("1 passed, 0 failed"));
}

#[test]
fn prove_refuses_an_invariant_naming_what_the_rulebook_does_not_declare() {
    let dir = federal_copy("federal.toml", |text| {
        text.replace(
            "categories = [\"social_aid_receipt\", \"pc_receipt\"]",
            "categories = [\"social_aid_receipt\", \"tax_records\"]",
        )
    });
    let out = cii(&["policy", "prove", "--rulebook", &dir.path().to_string_lossy()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("invariant `migration-hears-of-benefits-only-about-foreign-nationals`: categories: unknown category `tax_records`"),
        "{err}"
    );
}

/// LAI-3b-2-i with "the person was informed beforehand" (LAI 3b al. 3) made an alternative of
/// "no overriding private interest": with every fact true — all the former diff looked at —
/// nothing changes; with the person not informed, the report now goes.
fn informed_or_no_interest(text: String) -> String {
    let old = "conditions = [\"case_by_case\", \"early_detection_target_group\", \"person_informed_before\"]\nnote = \"Written early-detection report by the AC";
    assert!(text.contains(old));
    text.replace(
        old,
        "conditions = [\"case_by_case\", \"early_detection_target_group\", \"informed_or_no_interest\"]\nnote = \"Written early-detection report by the AC",
    ) + "\n[[condition]]\nid = \"informed_or_no_interest\"\nany_of = [\"person_informed_before\", \"no_overriding_private_interest\"]\n\
         label_fr = \"informée ou aucun intérêt\"\nlabel_de = \"informiert oder kein Interesse\"\nlabel_en = \"informed or no interest\"\n"
}

#[test]
fn diff_only_narrows_fails_on_a_widening_of_one_fact_combination_and_passes_on_a_narrowing() {
    let widened = federal_copy("30-lai.toml", informed_or_no_interest);
    let out = cii(&[
        "policy",
        "diff",
        "federal",
        &widened.path().to_string_lossy(),
        "--only-narrows",
        "--limit",
        "0",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("~ basis LAI-3b-2-i: conditions"), "{text}");
    assert!(
        text.contains("≠ AC_ORP → AI, spontaneous_report, early_detection, health_limitations [")
            && text.contains("!person_informed_before")
            && text.contains("withheld → released (LAI-3b-2-i)"),
        "{text}"
    );
    assert!(text.contains("--only-narrows: the new rulebook widens"), "{text}");

    let narrowed = federal_copy("30-lai.toml", |text| {
        in_basis(
            &text,
            "LAI-3b-2-i",
            ", \"health_limitations\", \"incapacity_certificate\"",
            "",
        )
    });
    let out = cii(&[
        "policy",
        "diff",
        "federal",
        &narrowed.path().to_string_lossy(),
        "--only-narrows",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(", 0 widening)") && text.contains("→ withheld"), "{text}");
}

#[test]
fn diff_only_narrows_fails_when_an_obligation_is_dropped_and_reports_institution_changes() {
    let loosened = federal_copy("20-laci.toml", |text| {
        in_basis(
            &text,
            "LACI-85f-3",
            "obligations = [{ kind = \"inform_person_after\", owner = \"sender\" }]\n",
            "",
        )
    });
    let out = cii(&[
        "policy",
        "diff",
        "federal",
        &loosened.path().to_string_lossy(),
        "--only-narrows",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("~ basis LACI-85f-3: obligations dropped or delayed: inform_person_after/sender"),
        "{text}"
    );
    // The Valais extension against the federal rulebook: its institutions are reported.
    let out = cii(&["policy", "diff", "federal", "deploy/rulebook/vs", "--limit", "1"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("~ institution ORP-VS: added"), "{text}");
}

#[test]
fn prove_refuses_a_space_larger_than_its_limit_before_deciding_anything() {
    let out = cii(&["policy", "prove", "--max-situations", "1000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("situations, more than --max-situations 1000") && stdout(&out).is_empty(),
        "{err}"
    );
}
