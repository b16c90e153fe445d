//! Condition coverage (issue 21): the scenario suites notice every element of every active
//! basis. Each mutant is the compiled rulebook with one element removed — one condition of a
//! basis, one sender or recipient type, one category — or, for a canton, one attestation of
//! one institution; a mutant no scenario fails on means the suite would not notice a jurist
//! (or a bug) dropping that element. Mutants that cannot change any decision are listed in
//! [`EQUIVALENT`] with the reason.

use cii_policy::scenario::{Scenario, load_file, passes};
use cii_policy::{Rulebook, Source, federal_sources, load};
use time::macros::date;

const TODAY: time::Date = date!(2026 - 11 - 23);
const FEDERAL_SUITE: &str = include_str!("../scenarios/federal.toml");
const ELEMENTS_SUITE: &str = include_str!("../scenarios/federal-elements.toml");

/// Mutants that change no decision any transfer could get, each with why.
const EQUIVALENT: &[(&str, &str, &str)] = &[
    // A restriction on a basis that lists no medical category guards a later edit; it states the
    // law (LAI 3c al. 5) or the policy (the medical file never goes towards AC, AS, FP, MIG).
    (
        "LACI-85f-3-ai",
        "condition no_medical_data",
        "lists no medical category",
    ),
    ("LAI-3c-5", "condition no_medical_data", "lists no medical category"),
    ("LAI-68bis-3", "condition no_medical_data", "lists no medical category"),
    // The ORP's identity and employment status reach the AI under LSE 34a al. 1 let. a and LAI 6a
    // al. 2 alike, in the same situations (both rest on the LAI's duty after a filed claim).
    (
        "LSE-34a-1-a",
        "category identity",
        "LAI-6a-2 releases it in the same situations",
    ),
    (
        "LSE-34a-1-a",
        "category employment_status",
        "LAI-6a-2 releases it in the same situations",
    ),
    // Suva's answer to the AI's written request is carried by LAI-6a-2-med and LPGA-32-2 as well,
    // with the same categories and the same obligation; only the bases cited would change.
    (
        "LAI-6a-2",
        "from SUVA",
        "LAI-6a-2-med and LPGA-32-2 release the same, with the same obligation",
    ),
];

/// A type a duty-based basis lists but no `[[federal_duty]]` row pairs with its other side: the
/// basis cannot carry a transfer to or from it today, so dropping it changes no decision.
fn unreachable_by_duty(rb: &Rulebook, basis: &cii_policy::rulebook::Basis, what: &str) -> bool {
    if !rb.basis_uses(basis, cii_policy::Builtin::FederalDuty) {
        return false;
    }
    let covered = |from: &cii_types::InstitutionType, to: &cii_types::InstitutionType| {
        rb.federal_duties
            .iter()
            .any(|d| d.from.contains(from) && d.to.contains(to))
    };
    match what.split_once(' ') {
        Some(("to", t)) => !basis
            .from
            .iter()
            .any(|f| basis.to.iter().any(|to| to.as_str() == t && covered(f, to))),
        Some(("from", t)) => !basis
            .to
            .iter()
            .any(|to| basis.from.iter().any(|f| f.as_str() == t && covered(f, to))),
        _ => false,
    }
}

fn survivors(rb: &Rulebook, scenarios: &[Scenario], prefix: &str) -> Vec<String> {
    let killed = |mutant: &Rulebook| scenarios.iter().any(|s| !passes(mutant, s));
    let equivalent = |basis: &str, what: &str| EQUIVALENT.iter().any(|(b, w, _)| *b == basis && *w == what);
    let mut alive = Vec::new();
    for (i, basis) in rb
        .bases
        .iter()
        .enumerate()
        .filter(|(_, b)| b.active && b.id.starts_with(prefix))
    {
        let mut mutants: Vec<(String, Rulebook)> = Vec::new();
        for j in 0..basis.conditions.len() {
            let mut m = rb.clone();
            let removed = m.bases[i].conditions.remove(j);
            mutants.push((format!("condition {}", rb.conditions[removed].id), m));
        }
        for j in 0..basis.from.len() {
            let mut m = rb.clone();
            let removed = m.bases[i].from.remove(j);
            mutants.push((format!("from {removed}"), m));
        }
        for j in 0..basis.to.len() {
            let mut m = rb.clone();
            let removed = m.bases[i].to.remove(j);
            mutants.push((format!("to {removed}"), m));
        }
        for j in 0..basis.categories.len() {
            let mut m = rb.clone();
            let removed = m.bases[i].categories.remove(j);
            mutants.push((format!("category {}", rb.categories[removed].id), m));
        }
        for (what, mut mutant) in mutants {
            mutant.reindex();
            if !killed(&mutant) && !equivalent(&basis.id, &what) && !unreachable_by_duty(rb, basis, &what) {
                alive.push(format!("{}: {what}", basis.id));
            }
        }
    }
    alive
}

#[test]
fn every_element_of_every_active_federal_basis_is_noticed_by_a_scenario() {
    let rb = load(&federal_sources(), TODAY).expect("rulebook");
    let mut scenarios = load_file(&rb, FEDERAL_SUITE, TODAY).expect("suite");
    scenarios.extend(load_file(&rb, ELEMENTS_SUITE, TODAY).expect("elements suite"));
    assert!(scenarios.iter().all(|s| passes(&rb, s)), "the suites pass unmutated");
    let alive = survivors(&rb, &scenarios, "");
    assert!(
        alive.is_empty(),
        "{} mutant(s) no scenario notices (add a scenario, or list the mutant as equivalent with its reason):\n{}",
        alive.len(),
        alive.join("\n")
    );
}

/// The Valais rulebook adds no basis of its own; what it adds — reciprocity, formal releases,
/// statuses of its institutions — must each be noticed by the Valais suite.
#[test]
fn every_attestation_of_the_valais_rulebook_is_noticed_by_its_scenarios() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rulebook");
    let mut sources = federal_sources();
    for entry in std::fs::read_dir(root.join("vs"))
        .expect("vs rulebook")
        .flatten()
        .filter(|e| e.path().is_file())
    {
        sources.push(Source {
            name: format!("vs/{}", entry.file_name().to_string_lossy()),
            text: std::fs::read_to_string(entry.path()).expect("read"),
        });
    }
    let rb = load(&sources, TODAY).expect("Valais rulebook");
    let text = std::fs::read_to_string(root.join("vs-scenarios.toml")).expect("vs scenarios");
    let scenarios = load_file(&rb, &text, TODAY).expect("Valais suite");
    assert!(
        scenarios.iter().all(|s| passes(&rb, s)),
        "the Valais suite passes unmutated"
    );
    let killed = |mutant: &Rulebook| scenarios.iter().any(|s| !passes(mutant, s));
    let mut alive = Vec::new();
    for (id, facts) in &rb.institutions {
        for j in 0..facts.reciprocity.len() {
            let mut m = rb.clone();
            m.institutions.get_mut(id).expect("institution").reciprocity.remove(j);
            if !killed(&m) {
                alive.push(format!("{id}: reciprocity #{}", j + 1));
            }
        }
        for j in 0..facts.cantonal_release.len() {
            let mut m = rb.clone();
            m.institutions
                .get_mut(id)
                .expect("institution")
                .cantonal_release
                .remove(j);
            if !killed(&m) {
                alive.push(format!("{id}: formal release #{}", j + 1));
            }
        }
        for j in 0..facts.status.len() {
            let mut m = rb.clone();
            m.institutions.get_mut(id).expect("institution").status.remove(j);
            if !killed(&m) {
                alive.push(format!("{id}: status #{}", j + 1));
            }
        }
    }
    assert!(
        alive.is_empty(),
        "attestations no Valais scenario notices:\n{}",
        alive.join("\n")
    );
}

/// The check can fail: with no scenario, every element of every active basis survives.
#[test]
fn without_scenarios_every_mutant_survives() {
    let rb = load(&federal_sources(), TODAY).expect("rulebook");
    let alive = survivors(&rb, &[], "LACI-85f-3");
    assert!(
        alive.iter().any(|m| m == "LACI-85f-3: condition cost_bearer_unclear"),
        "{alive:?}"
    );
    assert!(alive.iter().any(|m| m == "LACI-85f-3: to AI"), "{alive:?}");
}
