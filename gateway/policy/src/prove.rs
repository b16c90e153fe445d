//! Jurists' invariants — statements that must hold in every situation — and the exhaustive
//! check of a rulebook against them (`cii policy prove`).
//!
//! ```toml
//! [[invariant]]
//! id = "health-data-never-to-private-bodies"
//! citation = "LPD art. 5 let. c ch. 2 ; LPGA art. 33"
//! reason = "Health data are sensitive; no basis lets them go to a private body."
//! statement = "never_release"        # or "only_under", "consent_or" (then `bases`)
//! categories = ["medical_reports"]   # what it speaks of (absent: every category)
//! to = ["PRIVATE"]                   # types or registry ids (absent: any); also `from`
//! # trigger = [...], purpose = [...], facts = { foreign_national = false },
//! # consent = ["none", "oral", "written"]: the situations it speaks of (absent: all)
//! ```
//! - `never_release`: no category it speaks of is ever released;
//! - `only_under` with `bases = [...]`: every basis that releases one of them is listed;
//! - `consent_or` with `bases = [...]`: released without any consent, only under a listed basis.
//!
//! A basis is listed by its exact id, or by a prefix ending in `-*` (`LAI-3b-*` lists
//! `LAI-3b-2-i`): exact by default, because a prefix also lists any basis a canton's
//! extension adds under a similar id.
//! Each situation of [`crate::space`] is decided once by the engine itself and every
//! invariant read against what it released; a violation comes back as a scenario that fails
//! on the rulebook that breaks the invariant.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use time::Date;

use crate::decide::Party;
use crate::rulebook::Rulebook;
use crate::scenario::party;
use crate::space::{self, Consent, Extra, Releases, Situation, TooManyFacts, party_name};
use crate::vocab::Trigger;

/// What an invariant says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// None of its categories is ever released.
    NeverRelease,
    /// Its categories are released only under these bases.
    OnlyUnder(Vec<String>),
    /// Without consent, its categories are released only under these bases.
    ConsentOr(Vec<String>),
}

/// One invariant, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invariant {
    /// Its id.
    pub id: String,
    /// The law it rests on.
    pub citation: String,
    /// Why, in one line.
    pub reason: String,
    /// What must hold.
    pub statement: Statement,
    from: Vec<String>,
    to: Vec<String>,
    triggers: Vec<Trigger>,
    purposes: Vec<String>,
    categories: Vec<String>,
    facts: BTreeMap<String, bool>,
    consent: Vec<Consent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    invariant: Vec<RawInvariant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInvariant {
    id: String,
    citation: String,
    reason: String,
    statement: String,
    #[serde(default)]
    bases: Vec<String>,
    #[serde(default)]
    from: Vec<String>,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    trigger: Vec<String>,
    #[serde(default)]
    purpose: Vec<String>,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    facts: BTreeMap<String, bool>,
    #[serde(default)]
    consent: Vec<String>,
}

/// An invariant file cannot be used: the file, the invariant and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: invariant `{invariant}`: {message}")]
pub struct InvariantError {
    /// The file.
    pub file: String,
    /// The invariant's id (empty when the file itself cannot be read).
    pub invariant: String,
    /// What is wrong, naming the field.
    pub message: String,
}

/// The invariants of `files` (name, text), checked against `rb`: every id they name must be
/// one it declares. All errors are returned, not only the first.
pub fn load(rb: &Rulebook, files: &[(String, String)]) -> Result<Vec<Invariant>, Vec<InvariantError>> {
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    for (file, text) in files {
        let raw: RawFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                errors.push(InvariantError {
                    file: file.clone(),
                    invariant: String::new(),
                    message: e.to_string().trim_end().to_owned(),
                });
                continue;
            }
        };
        for r in raw.invariant {
            match checked(rb, r) {
                Ok(inv) if out.iter().any(|o: &Invariant| o.id == inv.id) => errors.push(InvariantError {
                    file: file.clone(),
                    invariant: inv.id,
                    message: "id: declared twice".to_owned(),
                }),
                Ok(inv) => out.push(inv),
                Err((invariant, message)) => errors.push(InvariantError {
                    file: file.clone(),
                    invariant,
                    message,
                }),
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn checked(rb: &Rulebook, r: RawInvariant) -> Result<Invariant, (String, String)> {
    let fail = |message: String| (r.id.clone(), message);
    for (field, value) in [("citation", &r.citation), ("reason", &r.reason)] {
        if value.trim().is_empty() {
            return Err(fail(format!("{field}: must not be empty")));
        }
    }
    let statement = match (r.statement.as_str(), r.bases.is_empty()) {
        ("never_release", true) => Statement::NeverRelease,
        ("never_release", false) => return Err(fail("bases: a never_release statement names no bases".to_owned())),
        ("only_under" | "consent_or", true) => {
            return Err(fail(format!("bases: {} needs the bases it allows", r.statement)));
        }
        ("only_under", false) => Statement::OnlyUnder(r.bases.clone()),
        ("consent_or", false) => Statement::ConsentOr(r.bases.clone()),
        (other, _) => {
            return Err(fail(format!(
                "statement `{other}`: use never_release, only_under or consent_or"
            )));
        }
    };
    for b in &r.bases {
        if b.ends_with('*') && !b.ends_with("-*") {
            return Err(fail(format!("bases: `{b}`: a prefix ends in `-*` (e.g. LACI-97a-*)")));
        }
        if !rb.bases.iter().any(|basis| listed(&basis.id, b)) {
            return Err(fail(format!("bases: `{b}` names no basis of the rulebook")));
        }
    }
    for (field, parties) in [("from", &r.from), ("to", &r.to)] {
        for p in parties {
            party(rb, p).map_err(|e| fail(format!("{field}: {e}")))?;
        }
    }
    let triggers = r
        .trigger
        .iter()
        .map(|t| Trigger::parse("trigger", t).map_err(|e| fail(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(p) = r.purpose.iter().find(|p| rb.purpose_index(p).is_none()) {
        return Err(fail(format!("purpose: unknown purpose `{p}`")));
    }
    if let Some(c) = r.categories.iter().find(|c| rb.category_index(c).is_none()) {
        return Err(fail(format!("categories: unknown category `{c}`")));
    }
    if let Some(f) = r.facts.keys().find(|f| rb.fact_index(f).is_none()) {
        return Err(fail(format!("facts: unknown fact `{f}`")));
    }
    let consent = r
        .consent
        .iter()
        .map(|c| match c.as_str() {
            "none" => Ok(Consent::None),
            "oral" => Ok(Consent::Oral),
            "written" => Ok(Consent::Written),
            other => Err(fail(format!("consent `{other}`: use none, oral or written"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Invariant {
        id: r.id,
        citation: r.citation,
        reason: r.reason,
        statement,
        from: r.from,
        to: r.to,
        triggers,
        purposes: r.purpose,
        categories: r.categories,
        facts: r.facts,
        consent,
    })
}

/// Whether basis `id` is listed by `entry`: its exact id, or a prefix ending in `-*`.
fn listed(id: &str, entry: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => id == entry,
    }
}

/// Whether `name` (a type or a registry id, as in scenarios) designates `p`.
fn designates(name: &str, p: &Party) -> bool {
    p.id.as_ref().is_some_and(|id| id.as_str() == name) || p.kind.as_str() == name
}

impl Invariant {
    /// Whether the invariant may speak of situation `s`, by its parties, trigger and purpose.
    fn may_speak_of(&self, s: &Situation) -> bool {
        (self.from.is_empty() || self.from.iter().any(|n| designates(n, &s.from)))
            && (self.to.is_empty() || self.to.iter().any(|n| designates(n, &s.to)))
            && (self.triggers.is_empty() || self.triggers.contains(&s.trigger))
            && (self.purposes.is_empty() || self.purposes.contains(&s.purpose))
    }

    /// Whether the invariant speaks of situation `s`.
    fn speaks_of(&self, s: &Situation) -> bool {
        self.may_speak_of(s)
            && (self.consent.is_empty() || self.consent.contains(&s.consent))
            && self
                .facts
                .iter()
                .all(|(f, v)| s.facts.get(f).copied().unwrap_or(false) == *v)
    }

    /// The first way `released` (what situation `s` releases) breaks it for `category`:
    /// `Some(basis)` names the basis at fault.
    fn broken_by(&self, s: &Situation, category: &str, released: &Releases) -> Option<String> {
        let bases = released.get(category)?;
        let unlisted = |allowed: &[String]| bases.iter().find(|b| !allowed.iter().any(|a| listed(b, a))).cloned();
        match &self.statement {
            Statement::NeverRelease => bases.first().cloned(),
            Statement::OnlyUnder(allowed) => unlisted(allowed),
            Statement::ConsentOr(allowed) if s.consent == Consent::None => unlisted(allowed),
            Statement::ConsentOr(_) => None,
        }
    }
}

/// A situation that breaks an invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counterexample {
    /// The situation.
    pub situation: Situation,
    /// The category released against the invariant.
    pub category: String,
    /// The basis that released it.
    pub basis: String,
}

/// What the check found for one invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The invariant.
    pub invariant: Invariant,
    /// Situations × categories it spoke of.
    pub checked: u64,
    /// How many of them break it.
    pub violations: u64,
    /// The first of them (at most the limit asked for).
    pub examples: Vec<Counterexample>,
}

/// The outcome of `prove`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One verdict per invariant, in order.
    pub verdicts: Vec<Verdict>,
    /// Situations decided.
    pub situations: u64,
}

/// How many situations [`prove`] would decide.
pub fn size(rb: &Rulebook, invariants: &[Invariant], today: Date) -> Result<u64, TooManyFacts> {
    space::count(&[rb], today, &|s| extra(invariants, s))
}

/// Checks every invariant over every situation of `rb`'s space from `today` on (see
/// [`crate::space`]), keeping at most `limit` counterexamples per invariant.
pub fn prove(rb: &Rulebook, invariants: &[Invariant], today: Date, limit: usize) -> Result<Report, TooManyFacts> {
    let mut verdicts: Vec<Verdict> = invariants
        .iter()
        .map(|i| Verdict {
            invariant: i.clone(),
            checked: 0,
            violations: 0,
            examples: Vec::new(),
        })
        .collect();
    let all: Vec<String> = rb.categories.iter().map(|c| c.id.clone()).collect();
    let mut situations = 0u64;
    space::for_each_with(&[rb], today, &|s| extra(invariants, s), |s| {
        situations += 1;
        let speaking: Vec<usize> = (0..verdicts.len())
            .filter(|i| verdicts.get(*i).is_some_and(|v| v.invariant.speaks_of(s)))
            .collect();
        if speaking.is_empty() {
            return;
        }
        let released = s.releases(rb);
        for i in speaking {
            let Some(v) = verdicts.get_mut(i) else { continue };
            let categories = if v.invariant.categories.is_empty() {
                &all
            } else {
                &v.invariant.categories
            };
            for category in categories {
                v.checked += 1;
                if let Some(basis) = v.invariant.broken_by(s, category, &released) {
                    v.violations += 1;
                    if v.examples.len() < limit {
                        v.examples.push(Counterexample {
                            situation: s.clone(),
                            category: category.clone(),
                            basis,
                        });
                    }
                }
            }
        }
    })?;
    Ok(Report { verdicts, situations })
}

/// What the invariants that may speak of situation `s` (by its parties, trigger and purpose)
/// name, which the space must enumerate even where no basis reads it: their facts, consent.
fn extra(invariants: &[Invariant], s: &Situation) -> Extra {
    let mut out = Extra::default();
    for i in invariants.iter().filter(|i| i.may_speak_of(s)) {
        out.facts.extend(i.facts.keys().cloned());
        out.consent |= !i.consent.is_empty() || matches!(i.statement, Statement::ConsentOr(_));
    }
    out.facts.sort();
    out.facts.dedup();
    out
}

/// `s` as a TOML basic string (a citation may hold quotes, backslashes or line breaks).
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Counterexample {
    /// The counterexample as a scenario, ready to paste into a suite: it fails on a rulebook
    /// that breaks `invariant` this way and passes on one that keeps it here.
    pub fn scenario(&self, invariant: &Invariant) -> String {
        let s = &self.situation;
        let mut out = String::from("[[scenario]]\n");
        let _ = writeln!(
            out,
            "name = {}",
            quoted(&format!(
                "invariant {}: {} from {} to {} ({}, {})",
                invariant.id,
                self.category,
                party_name(&s.from),
                party_name(&s.to),
                s.trigger,
                s.purpose
            ))
        );
        let _ = writeln!(out, "article = {}", quoted(&invariant.citation));
        let _ = writeln!(out, "from = {}", quoted(&party_name(&s.from)));
        if let Some(canton) = &s.from.canton {
            let _ = writeln!(out, "from_canton = {}", quoted(canton));
        }
        let _ = writeln!(out, "to = {}", quoted(&party_name(&s.to)));
        let _ = writeln!(out, "trigger = {}", quoted(s.trigger.as_str()));
        let _ = writeln!(out, "purpose = {}", quoted(&s.purpose));
        let _ = writeln!(out, "categories = [{}]", quoted(&self.category));
        if !s.individual_case {
            out.push_str("persons = 2\n");
        }
        match s.consent {
            Consent::None => out.push_str("consent = false\n"),
            Consent::Oral => out.push_str("consent = { written = false }\n"),
            Consent::Written => out.push_str("consent = { written = true }\n"),
        }
        let facts: Vec<String> = s.facts.iter().map(|(f, v)| format!("{f} = {v}")).collect();
        let _ = writeln!(out, "facts = {{ {} }}", facts.join(", "));
        if s.pull {
            out.push_str("pull = true\n");
        }
        let _ = writeln!(out, "date = \"{}\"", crate::date_text(s.date));
        out.push_str("expect = \"any\"\n");
        match invariant.statement {
            Statement::NeverRelease => {
                let _ = writeln!(out, "expect_withheld = [{}]", quoted(&self.category));
            }
            Statement::OnlyUnder(_) | Statement::ConsentOr(_) => {
                let _ = writeln!(out, "expect_not_basis = {}", quoted(&self.basis));
            }
        }
        out
    }
}

/// The invariants of the built-in federal rulebook, as (file name, text).
pub fn federal_invariants() -> Vec<(String, String)> {
    vec![(
        "federal/invariants/federal.toml".to_owned(),
        include_str!("../rulebook/federal/invariants/federal.toml").to_owned(),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counterexample_is_a_scenario_file_whatever_its_citation_holds() {
        let rb = crate::load(&crate::federal_sources(), time::macros::date!(2026 - 12 - 01)).expect("federal");
        let text = "[[invariant]]\nid = \"odd\"\nstatement = \"never_release\"\ncategories = [\"identity\"]\n\
                    citation = \"Art. \\\"1\\\" \\\\ al.\\n2\\t\\u0001\"\nreason = \"r\"\n";
        let invariants = load(&rb, &[("odd.toml".into(), text.into())]).expect("loads");
        let report = prove(&rb, &invariants, time::macros::date!(2026 - 12 - 01), 1).expect("prove");
        let verdict = report.verdicts.first().expect("verdict");
        let example = verdict.examples.first().expect("identity is released somewhere");
        let scenario = example.scenario(&verdict.invariant);
        let outcomes = crate::scenario::run_file(&rb, "pasted.toml", &scenario, time::macros::date!(2026 - 12 - 01));
        assert_eq!(outcomes.len(), 1, "{scenario}");
        let outcome = outcomes.first().expect("one");
        // It loads, and fails on the rulebook that breaks the invariant, for that reason only.
        assert!(
            outcome.name.starts_with("invariant odd: identity"),
            "{scenario}\n{outcome:?}"
        );
        assert!(
            outcome.failures.len() == 1 && outcome.failures.iter().all(|f| f.contains("identity")),
            "{scenario}\n{:?}",
            outcome.failures
        );
        assert!(
            scenario.contains("article = \"Art. \\\"1\\\" \\\\ al.\\n2\\t\\u0001\""),
            "{scenario}"
        );
    }
}
