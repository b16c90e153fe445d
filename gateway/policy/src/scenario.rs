//! Scenario files: jurists' own test cases, with expected outcomes.
//!
//! ```toml
//! [[scenario]]
//! name = "ORP reports a person at risk of invalidity to the AI office"
//! from = "AC_ORP"            # institution type or registry id (of the rulebook's institutions)
//! to = "AI"
//! trigger = "spontaneous_report"
//! purpose = "early_detection"
//! categories = ["identity", "health_limitations"]
//! persons = 1                # optional, default 1
//! consent = false            # or { categories = [...], purposes = [...], written = true }
//! facts = { person_informed_before = true }
//! expect = "permit"          # or "deny", or "any" (only the other expectations are checked)
//! expect_basis = "LAI-3b-2"  # optional: matches an id exactly or as a prefix ending at '-'
//! expect_obligation = "inform_person_after"   # optional
//! expect_withheld = ["medical_reports"]       # optional: at least these withheld
//! expect_released = ["identity"]              # optional: at least these released
//! expect_not_basis = "LAI-3b-2-i"             # optional: this basis does not carry the decision
//! date = "2026-01-15"        # optional, default today
//! case_reference = "AI-2026-0042"             # optional, default a reference; "" for none
//! from_canton = "VS"         # optional: the discloser's canton (else the rulebook's, for an id)
//! article = "LAI 3b al. 2"   # optional: the article the scenario tests, for readers
//! pull = true                # optional: a pull its holder has not reviewed (only bases with
//!                            # `automatic_answer` may carry it; the others wait for review)
//! ```
//! A consent table's `categories` default to the scenario's, `purposes` to its
//! purpose, `written` to false. A scenario that cannot be loaded fails with
//! its reason; the others still run.

use std::collections::BTreeMap;

use cii_types::{InstitutionId, InstitutionType};
use serde::Deserialize;
use time::Date;

use crate::decide::{ConsentFound, Decision, Facts, Party, Transfer, decide};
use crate::parse_date;
use crate::rulebook::Rulebook;
use crate::vocab::Trigger;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    scenario: Vec<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    from: String,
    to: String,
    #[serde(default)]
    trigger: Option<String>,
    purpose: String,
    categories: Vec<String>,
    #[serde(default)]
    persons: Option<u32>,
    #[serde(default)]
    consent: Option<toml::Value>,
    #[serde(default)]
    facts: BTreeMap<String, bool>,
    expect: String,
    #[serde(default)]
    expect_basis: Option<String>,
    #[serde(default)]
    expect_obligation: Option<String>,
    #[serde(default)]
    expect_withheld: Vec<String>,
    #[serde(default)]
    expect_released: Vec<String>,
    #[serde(default)]
    expect_not_basis: Option<String>,
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    case_reference: Option<String>,
    #[serde(default)]
    from_canton: Option<String>,
    #[serde(default)]
    article: Option<String>,
    #[serde(default)]
    pull: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    #[serde(default)]
    categories: Option<Vec<String>>,
    #[serde(default)]
    purposes: Option<Vec<String>>,
    #[serde(default)]
    written: bool,
}

/// A loaded scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// The transfer it describes.
    pub transfer: Transfer,
    /// `Some(true)` for permit, `Some(false)` for deny, `None` for either.
    pub expect_permit: Option<bool>,
    /// Expected basis (exact id or prefix ending at `-`).
    pub expect_basis: Option<String>,
    /// Expected obligation (index into `Rulebook::obligation_kinds`).
    pub expect_obligation: Option<usize>,
    /// Categories expected to be withheld.
    pub expect_withheld: Vec<String>,
    /// Categories expected to be released.
    pub expect_released: Vec<String>,
    /// A basis expected not to carry the decision (exact id or prefix ending at `-`).
    pub expect_not_basis: Option<String>,
    /// The article it tests, if named.
    pub article: Option<String>,
}

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// File it came from.
    pub file: String,
    /// Scenario name (or its position if it has none).
    pub name: String,
    /// Why it failed; empty if it passed.
    pub failures: Vec<String>,
}

impl Outcome {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Resolves `from`/`to`: an institution type, or a registry id the rulebook knows.
pub fn party(rb: &Rulebook, s: &str) -> Result<Party, String> {
    // An institution the rulebook describes is more specific than a type of the same name
    // (the registry id `SUVA` is an institution of type `SUVA`).
    if let Some((id, facts)) = rb.institutions.iter().find(|(id, _)| id.as_str() == s) {
        return Ok(Party::member(facts.kind, id.clone(), facts.canton.clone()));
    }
    if let Some(kind) = rb.types.keys().copied().find(|t: &InstitutionType| t.as_str() == s) {
        return Ok(Party::of_type(kind));
    }
    let id =
        InstitutionId::parse("id", s).map_err(|_| format!("`{s}` is neither an institution type nor a registry id"))?;
    match rb.institutions.get(&id) {
        Some(facts) => Ok(Party::member(facts.kind, id, facts.canton.clone())),
        None => Err(format!(
            "institution `{s}` is not in the rulebook's institutions (give its type instead)"
        )),
    }
}

/// Whether basis `id` matches the expectation `expected` (exactly, or as a prefix ending at `-`).
pub fn basis_matches(id: &str, expected: &str) -> bool {
    id == expected || id.strip_prefix(expected).is_some_and(|rest| rest.starts_with('-'))
}

fn load_one(rb: &Rulebook, value: toml::Value, today: Date) -> Result<Scenario, (Option<String>, String)> {
    let name_hint = value.get("name").and_then(|n| n.as_str()).map(str::to_owned);
    let raw = RawScenario::deserialize(value).map_err(|e| (name_hint.clone(), e.to_string().trim_end().to_owned()))?;
    let fail = |msg: String| (Some(raw.name.clone()), msg);
    let mut from = party(rb, &raw.from).map_err(|e| fail(format!("from: {e}")))?;
    if raw.from_canton.is_some() {
        from.canton = raw.from_canton.clone();
    }
    let to = party(rb, &raw.to).map_err(|e| fail(format!("to: {e}")))?;
    let trigger = raw
        .trigger
        .as_deref()
        .map(|t| Trigger::parse("trigger", t))
        .transpose()
        .map_err(|e| fail(e.to_string()))?;
    if rb.purpose_index(&raw.purpose).is_none() {
        return Err(fail(format!("unknown purpose `{}`", raw.purpose)));
    }
    for c in raw
        .categories
        .iter()
        .chain(&raw.expect_withheld)
        .chain(&raw.expect_released)
    {
        if rb.category_index(c).is_none() {
            return Err(fail(format!("unknown category `{c}`")));
        }
    }
    let mut facts = Facts::default();
    for (key, value) in &raw.facts {
        let fact = rb
            .fact_index(key)
            .ok_or_else(|| fail(format!("unknown fact `{key}` (not declared by the rulebook)")))?;
        facts.set(fact, *value);
    }
    let consents = match raw.consent {
        None | Some(toml::Value::Boolean(false)) => Vec::new(),
        Some(toml::Value::Boolean(true)) => {
            return Err(fail(
                "consent = true is ambiguous: give a table { categories, purposes, written }".to_owned(),
            ));
        }
        Some(value) => {
            let c =
                RawConsent::deserialize(value).map_err(|e| fail(format!("consent: {}", e.to_string().trim_end())))?;
            let categories = c.categories.unwrap_or_else(|| raw.categories.clone());
            for cat in &categories {
                if rb.category_index(cat).is_none() {
                    return Err(fail(format!("consent: unknown category `{cat}`")));
                }
            }
            vec![ConsentFound {
                reference: "scenario".to_owned(),
                categories,
                purposes: c.purposes.unwrap_or_else(|| vec![raw.purpose.clone()]),
                written: c.written,
            }]
        }
    };
    let expect_permit = match raw.expect.as_str() {
        "permit" => Some(true),
        "deny" => Some(false),
        // Only the other expectations are checked (e.g. `expect_not_basis`).
        "any" => None,
        other => return Err(fail(format!("expect `{other}`: use \"permit\", \"deny\" or \"any\""))),
    };
    let expect_obligation = match raw.expect_obligation.as_deref() {
        None => None,
        Some(o) => Some(
            rb.obligation_kinds
                .iter()
                .position(|k| k.id == o)
                .ok_or_else(|| fail(format!("unknown obligation `{o}`")))?,
        ),
    };
    let date = match raw.date.as_deref() {
        Some(d) => parse_date(d).map_err(|e| fail(e.to_string()))?,
        None => today,
    };
    let persons = raw.persons.unwrap_or(1);
    let transfer = Transfer {
        unreviewed_pull: raw.pull,
        from,
        to,
        trigger,
        purpose: raw.purpose,
        categories: raw.categories,
        persons,
        // A scenario is an individual case unless it says it has no reference.
        case_reference: match raw.case_reference {
            None => Some("scenario".to_owned()),
            Some(r) if r.trim().is_empty() => None,
            Some(r) => Some(r),
        },
        facts,
        consents,
        date,
    };
    Ok(Scenario {
        name: raw.name,
        transfer,
        expect_permit,
        expect_basis: raw.expect_basis,
        expect_obligation,
        expect_withheld: raw.expect_withheld,
        expect_released: raw.expect_released,
        expect_not_basis: raw.expect_not_basis,
        article: raw.article,
    })
}

/// Checks a decision against a scenario's expectations.
pub fn verify(rb: &Rulebook, s: &Scenario, decision: &Decision) -> Vec<String> {
    let mut failures = Vec::new();
    let verdict = |permit: bool| if permit { "permit" } else { "deny" };
    if let Some(expect_permit) = s.expect_permit
        && decision.is_permit() != expect_permit
    {
        let why: Vec<String> = decision
            .reasons()
            .iter()
            .map(|r| {
                let basis = r
                    .basis
                    .and_then(|i| rb.bases.get(i))
                    .map_or(String::new(), |b| format!(" {}", b.id));
                let cond = r
                    .condition
                    .and_then(|c| rb.conditions.get(c))
                    .map_or(String::new(), |c| format!(" ({})", c.id));
                format!("{}{basis}{cond}", r.code.as_str())
            })
            .collect();
        let detail = if why.is_empty() {
            String::new()
        } else {
            format!(": {}", why.join(", "))
        };
        failures.push(format!(
            "expected {}, got {}{detail}",
            verdict(expect_permit),
            verdict(decision.is_permit())
        ));
    }
    if let Some(expected) = &s.expect_basis {
        let ids: Vec<&str> = decision
            .bases()
            .iter()
            .filter_map(|i| rb.bases.get(*i))
            .map(|b| b.id.as_str())
            .collect();
        if !ids.iter().any(|id| basis_matches(id, expected)) {
            failures.push(format!(
                "expected basis {expected}, permit bases are [{}]",
                ids.join(", ")
            ));
        }
    }
    if let Some(expected) = s.expect_obligation
        && !decision.obligations().iter().any(|o| o.kind == expected)
    {
        let id = rb.obligation_kinds.get(expected).map_or("?", |k| k.id.as_str());
        failures.push(format!("expected obligation {id}, none created"));
    }
    if let Some(unexpected) = &s.expect_not_basis
        && let Some(b) = decision
            .bases()
            .iter()
            .filter_map(|i| rb.bases.get(*i))
            .find(|b| basis_matches(&b.id, unexpected))
    {
        failures.push(format!(
            "expected basis {unexpected} not to carry the decision, {} did",
            b.id
        ));
    }
    for cat in &s.expect_released {
        let released = decision
            .released()
            .iter()
            .any(|i| rb.categories.get(*i).is_some_and(|c| c.id == *cat));
        if !released {
            failures.push(format!("expected {cat} to be released, it was withheld"));
        }
    }
    for cat in &s.expect_withheld {
        let withheld = decision
            .withheld()
            .iter()
            .any(|w| rb.categories.get(w.category).is_some_and(|c| c.id == *cat));
        if !withheld {
            failures.push(format!("expected {cat} to be withheld, it was released"));
        }
    }
    failures
}

/// Loads every scenario of one file, or says which one cannot be loaded (for tools that decide
/// the same scenarios many times, such as the condition-coverage test).
pub fn load_file(rb: &Rulebook, text: &str, today: Date) -> Result<Vec<Scenario>, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
    raw.scenario
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            load_one(rb, value, today).map_err(|(name, reason)| {
                format!("{}: {reason}", name.unwrap_or_else(|| format!("scenario #{}", i + 1)))
            })
        })
        .collect()
}

/// Whether scenario `s` passes on `rb`.
pub fn passes(rb: &Rulebook, s: &Scenario) -> bool {
    decide(rb, &s.transfer).is_ok_and(|d| verify(rb, s, &d).is_empty())
}

/// Runs every scenario of one file.
pub fn run_file(rb: &Rulebook, file: &str, text: &str, today: Date) -> Vec<Outcome> {
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            return vec![Outcome {
                file: file.to_owned(),
                name: "(file)".to_owned(),
                failures: vec![format!("cannot load: {}", e.to_string().trim_end())],
            }];
        }
    };
    if raw.scenario.is_empty() {
        return vec![Outcome {
            file: file.to_owned(),
            name: "(file)".to_owned(),
            failures: vec!["no [[scenario]] in the file".to_owned()],
        }];
    }
    raw.scenario
        .into_iter()
        .enumerate()
        .map(|(i, value)| match load_one(rb, value, today) {
            Ok(s) => {
                let failures = match decide(rb, &s.transfer) {
                    Ok(decision) => verify(rb, &s, &decision),
                    Err(e) => vec![format!("cannot decide: {e}")],
                };
                Outcome {
                    file: file.to_owned(),
                    name: s.name,
                    failures,
                }
            }
            Err((name, reason)) => Outcome {
                file: file.to_owned(),
                name: name.unwrap_or_else(|| format!("scenario #{}", i + 1)),
                failures: vec![format!("cannot load: {reason}")],
            },
        })
        .collect()
}
