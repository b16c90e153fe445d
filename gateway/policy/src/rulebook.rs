//! Loading and checking a rulebook: TOML files in a directory, merged.
//!
//! The files are given as text (this crate does no I/O). Every problem is a
//! [`Diagnostic`] naming the file, the element and what is wrong; a rulebook
//! with an error cannot be built, warnings do not stop it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use cii_types::{InstitutionId, InstitutionType};
use serde::Deserialize;
use time::Date;

use crate::parse_date;
use crate::vocab::{Attester, Builtin, Lang, Owner, Regime, Sensitivity, Status, Trigger};

/// A rulebook file: its name (for messages and the hash) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// File name, e.g. `30-lai.toml`.
    pub name: String,
    /// TOML text.
    pub text: String,
}

/// The federal rulebook shipped inside the binary.
pub fn federal_sources() -> Vec<Source> {
    const FILES: &[(&str, &str)] = &[
        ("federal/00-core.toml", include_str!("../rulebook/federal/00-core.toml")),
        (
            "federal/01-vocabulary.toml",
            include_str!("../rulebook/federal/01-vocabulary.toml"),
        ),
        ("federal/10-lpga.toml", include_str!("../rulebook/federal/10-lpga.toml")),
        ("federal/20-laci.toml", include_str!("../rulebook/federal/20-laci.toml")),
        ("federal/30-lai.toml", include_str!("../rulebook/federal/30-lai.toml")),
        (
            "federal/40-lavs-lpc-laa.toml",
            include_str!("../rulebook/federal/40-lavs-lpc-laa.toml"),
        ),
        ("federal/50-lei.toml", include_str!("../rulebook/federal/50-lei.toml")),
    ];
    FILES
        .iter()
        .map(|(name, text)| Source {
            name: (*name).to_owned(),
            text: (*text).to_owned(),
        })
        .collect()
}

// ---- the files as written --------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    rulebook: Option<RawHeader>,
    #[serde(default)]
    institution_type: Vec<RawType>,
    #[serde(default)]
    category: Vec<RawCategory>,
    #[serde(default)]
    purpose: Vec<RawPurpose>,
    /// Kept as values so that a broken basis is reported under its own id.
    #[serde(default)]
    basis: Vec<toml::Value>,
    #[serde(default)]
    institution: Vec<RawInstitution>,
    #[serde(default)]
    fact: Vec<RawFact>,
    #[serde(default)]
    condition: Vec<RawCondition>,
    #[serde(default)]
    obligation: Vec<RawObligationKind>,
    #[serde(default)]
    federal_duty: Vec<RawDuty>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDuty {
    id: String,
    citation: RawCitation,
    from: Vec<String>,
    to: Vec<String>,
    #[serde(default)]
    triggers: Vec<String>,
    /// Facts the duty presupposes (e.g. `ai_claim_filed` for LAI 6a al. 2).
    #[serde(default)]
    facts: Vec<String>,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFact {
    id: String,
    label_fr: String,
    label_de: String,
    label_en: String,
    attested_by: String,
    /// For a `network` fact: the reference directory says the recipient serves the person in
    /// this capacity (`*`: in any capacity).
    #[serde(default)]
    directory_capacity: Option<String>,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    id: String,
    label_fr: String,
    label_de: String,
    label_en: String,
    #[serde(default)]
    fact: Option<String>,
    #[serde(default)]
    builtin: Option<String>,
    #[serde(default)]
    all_of: Option<Vec<String>>,
    #[serde(default)]
    any_of: Option<Vec<String>>,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObligationKind {
    id: String,
    label_fr: String,
    label_de: String,
    label_en: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    version: String,
    #[serde(default)]
    title: String,
    /// `federal`: this file set extends the built-in federal rulebook.
    #[serde(default)]
    extends: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawType {
    id: String,
    label_fr: String,
    label_de: String,
    label_en: String,
    regime: String,
    /// The secrecy rule its staff are bound by (LPGA 33, a cantonal act): cited by every denial.
    #[serde(default)]
    secrecy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    id: String,
    label_fr: String,
    label_de: String,
    label_en: String,
    sensitivity: String,
    #[serde(default)]
    medical: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    id: String,
    label_fr: String,
    label_de: String,
    label_en: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCitation {
    #[serde(default)]
    fr: String,
    #[serde(default)]
    de: String,
    #[serde(default)]
    it: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObligation {
    kind: String,
    owner: String,
    #[serde(default)]
    due_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasis {
    id: String,
    #[serde(default)]
    citation: Option<RawCitation>,
    status: String,
    #[serde(default)]
    active: Option<bool>,
    effective_from: String,
    #[serde(default)]
    effective_to: Option<String>,
    from: Vec<String>,
    to: Vec<String>,
    #[serde(default)]
    mutual: bool,
    triggers: Vec<String>,
    purposes: Vec<String>,
    categories: Vec<String>,
    #[serde(default)]
    conditions: Vec<String>,
    #[serde(default)]
    obligations: Vec<RawObligation>,
    /// Only when the discloser is in one of these cantons (a canton's own law).
    #[serde(default)]
    cantons: Vec<String>,
    /// Whether a holder may answer a pull without a caseworker's review.
    #[serde(default)]
    automatic_answer: bool,
    /// Why an `inference` basis is active anyway (legal-review reference).
    #[serde(default)]
    active_because: String,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstitution {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    regime: Option<String>,
    #[serde(default)]
    regime_citation: Option<String>,
    #[serde(default)]
    canton: Option<String>,
    #[serde(default)]
    reciprocity: Vec<RawReciprocity>,
    #[serde(default)]
    cantonal_release: Vec<RawRelease>,
    /// Facts the network attests about this institution (e.g. `youth_instance`), each with its instrument.
    #[serde(default)]
    status: Vec<RawStatus>,
    /// For a private body with a delegated public task: the act that delegates it.
    #[serde(default)]
    delegating_act: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    fact: String,
    citation: String,
    since: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReciprocity {
    grants_to: Vec<String>,
    citation: String,
    since: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    citation: String,
    since: String,
}

// ---- the checked rulebook --------------------------------------------------------------------

/// Labels of an entry in the three languages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// French.
    pub fr: String,
    /// German.
    pub de: String,
    /// English.
    pub en: String,
}

impl Labels {
    /// The label in `lang`.
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Fr => &self.fr,
            Lang::De => &self.de,
            Lang::En => &self.en,
        }
    }
}

/// A legal citation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    /// French.
    pub fr: String,
    /// German.
    pub de: String,
    /// Italian (may be empty).
    pub it: String,
}

impl Citation {
    /// The citation in `lang` (English readers get the French text, as Fedlex publishes none in English).
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::De => &self.de,
            Lang::Fr | Lang::En => &self.fr,
        }
    }
}

/// An institution type's legal facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// Labels.
    pub labels: Labels,
    /// Default data-protection regime.
    pub regime: Regime,
    /// The secrecy rule its staff are bound by, cited by denials (empty if not declared).
    pub secrecy: String,
}

/// A fact: something true or false about a transfer that a party attests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactDecl {
    /// Id, e.g. `foreign_national`.
    pub id: String,
    /// Labels.
    pub labels: Labels,
    /// Who may attest it.
    pub attested_by: Attester,
    /// For a `network` fact answered by the reference directory: the recipient's
    /// relationship capacity it stands for (`*`: any capacity).
    pub directory_capacity: Option<String>,
    /// A note for jurists (what the attester vouches for).
    pub note: String,
}

/// How a condition is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Holds when the fact (index into `Rulebook::facts`) is given.
    Fact(usize),
    /// Evaluated by the engine.
    Builtin(Builtin),
    /// Holds when every listed condition holds (indices into `Rulebook::conditions`).
    AllOf(Vec<usize>),
    /// Holds when at least one listed condition holds (none of them filters categories).
    AnyOf(Vec<usize>),
}

/// A condition a basis may require.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionDecl {
    /// Id, e.g. `case_by_case`.
    pub id: String,
    /// What it means, in words.
    pub labels: Labels,
    /// How it is evaluated.
    pub rule: Rule,
    /// A note for jurists.
    pub note: String,
}

/// A kind of obligation a permit may create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObligationKindDecl {
    /// Id, e.g. `inform_person_after`.
    pub id: String,
    /// What must be done, in words.
    pub labels: Labels,
}

/// A data category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// Id, e.g. `health_limitations`.
    pub id: String,
    /// Labels.
    pub labels: Labels,
    /// nLPD sensitivity.
    pub sensitivity: Sensitivity,
    /// Part of the medical file (never released under `no_medical_data`).
    pub medical: bool,
}

/// A purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    /// Id, e.g. `early_detection`.
    pub id: String,
    /// Labels.
    pub labels: Labels,
}

/// An obligation a basis attaches to its permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObligationSpec {
    /// What must be done (index into `Rulebook::obligation_kinds`).
    pub kind: usize,
    /// Who must do it.
    pub owner: Owner,
    /// Within how many days.
    pub due_days: u32,
}

/// A legal basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basis {
    /// Id, `LAW-ARTICLE-PARAGRAPH[-letter…]`.
    pub id: String,
    /// Citation.
    pub citation: Citation,
    /// Research status.
    pub status: Status,
    /// Whether the engine uses it.
    pub active: bool,
    /// First day in force.
    pub effective_from: Date,
    /// Last day in force, if repealed.
    pub effective_to: Option<Date>,
    /// Sender types.
    pub from: Vec<InstitutionType>,
    /// Recipient types.
    pub to: Vec<InstitutionType>,
    /// Also applies from a `to` type to a `from` type.
    pub mutual: bool,
    /// Triggers that select it.
    pub triggers: Vec<Trigger>,
    /// Purposes it permits (indices into the rulebook's purposes).
    pub purposes: Vec<usize>,
    /// Categories it permits (indices into the rulebook's categories).
    pub categories: Vec<usize>,
    /// Conditions, all of which must hold (indices into `Rulebook::conditions`).
    pub conditions: Vec<usize>,
    /// Obligations of its permits.
    pub obligations: Vec<ObligationSpec>,
    /// The discloser's cantons it is limited to (empty: everywhere).
    pub cantons: Vec<String>,
    /// A holder may answer a pull under it without a caseworker's review.
    pub automatic_answer: bool,
    /// Why an `inference` basis is active anyway.
    pub active_because: String,
    /// A note for jurists.
    pub note: String,
    pub(crate) purpose_mask: u64,
    pub(crate) category_mask: u64,
}

impl Basis {
    /// Whether it covers a transfer from `from` to `to`.
    pub fn covers_pair(&self, from: InstitutionType, to: InstitutionType) -> bool {
        (self.from.contains(&from) && self.to.contains(&to))
            || (self.mutual && self.from.contains(&to) && self.to.contains(&from))
    }

    /// Whether it is in force on `date`.
    pub fn in_force(&self, date: Date) -> bool {
        self.effective_from <= date && self.effective_to.is_none_or(|to| date <= to)
    }
}

/// An attestation that an institution grants reciprocity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reciprocity {
    /// To which sender types.
    pub grants_to: Vec<InstitutionType>,
    /// The instrument (convention, decision) and article.
    pub citation: String,
    /// Since when.
    pub since: Date,
}

/// A cantonal formal-law release from secrecy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CantonalRelease {
    /// The cantonal law and article.
    pub citation: String,
    /// Since when.
    pub since: Date,
}

/// A fact the network attests about an institution (e.g. `youth_instance`), with its instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstitutionStatus {
    /// The fact (index into `Rulebook::facts`); it holds when this institution discloses.
    pub fact: usize,
    /// The instrument (convention, decision) and article.
    pub citation: String,
    /// Since when.
    pub since: Date,
}

/// A duty to disclose that a federal act imposes, enumerated pair by pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederalDuty {
    /// Id, e.g. `LAI-6a-2`.
    pub id: String,
    /// The act and article that impose it.
    pub citation: Citation,
    /// Who must disclose.
    pub from: Vec<InstitutionType>,
    /// To whom.
    pub to: Vec<InstitutionType>,
    /// The triggers it covers (empty: any).
    pub triggers: Vec<Trigger>,
    /// Facts it presupposes (indices into `Rulebook::facts`), all of which must be given.
    pub facts: Vec<usize>,
    /// A note for jurists.
    pub note: String,
}

/// Legal facts about a registry institution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstitutionFacts {
    /// Registry id.
    pub id: InstitutionId,
    /// Type (must agree with the registry).
    pub kind: InstitutionType,
    /// Data-protection regime.
    pub regime: Regime,
    /// The law that sets the regime, if given.
    pub regime_citation: Option<String>,
    /// Its canton (two letters), if cantonal.
    pub canton: Option<String>,
    /// Reciprocity attestations.
    pub reciprocity: Vec<Reciprocity>,
    /// Cantonal formal-law releases.
    pub cantonal_release: Vec<CantonalRelease>,
    /// Facts the network attests about it.
    pub status: Vec<InstitutionStatus>,
    /// For a private body with a delegated public task: the delegating act.
    pub delegating_act: Option<String>,
}

/// A checked rulebook, ready for decisions.
#[derive(Debug, Clone)]
pub struct Rulebook {
    /// Version(s), as the files declare them.
    pub version: String,
    /// Title.
    pub title: String,
    /// Hex SHA-256 of the sources.
    pub hash: String,
    /// Institution types.
    pub types: BTreeMap<InstitutionType, TypeInfo>,
    /// Categories, in declaration order.
    pub categories: Vec<Category>,
    /// Purposes, in declaration order.
    pub purposes: Vec<Purpose>,
    /// Bases, in declaration order.
    pub bases: Vec<Basis>,
    /// Legal facts about registry institutions.
    pub institutions: BTreeMap<InstitutionId, InstitutionFacts>,
    /// Facts, in declaration order (at most 64).
    pub facts: Vec<FactDecl>,
    /// Conditions, in declaration order; a fact used as a condition gets one of its own.
    pub conditions: Vec<ConditionDecl>,
    /// Kinds of obligation, in declaration order.
    pub obligation_kinds: Vec<ObligationKindDecl>,
    /// Duties to disclose imposed by federal acts.
    pub federal_duties: Vec<FederalDuty>,
    /// The facts that stand in for rulebook attestations in scenarios and `explain`.
    pub(crate) standins: Standins,
    /// Candidate bases per (sender type, recipient type), by index.
    pub(crate) by_pair: BTreeMap<(InstitutionType, InstitutionType), Vec<usize>>,
}

/// Facts the built-ins read when no attestation answers (scenarios, `explain`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Standins {
    /// `recipient_grants_reciprocity`.
    pub(crate) reciprocity: Option<usize>,
    /// `cantonal_release`.
    pub(crate) release: Option<usize>,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The rulebook cannot be used (`cii policy check` exits 1).
    Error,
    /// Worth a look; does not change the exit code.
    Warning,
}

/// One problem found in a rulebook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable code, e.g. `UNKNOWN_CATEGORY`.
    pub code: &'static str,
    /// The file.
    pub file: String,
    /// The element, e.g. `basis LACI-85f-3`.
    pub element: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{level}[{}]: {}: {}: {}",
            self.code, self.file, self.element, self.message
        )
    }
}

/// The outcome of checking a rulebook.
#[derive(Debug)]
pub struct CheckReport {
    /// The rulebook, if it has no error.
    pub rulebook: Option<Rulebook>,
    /// Every problem found, errors first.
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckReport {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }
}

/// Collects diagnostics while building.
struct Checker {
    diagnostics: Vec<Diagnostic>,
}

impl Checker {
    fn error(&mut self, code: &'static str, file: &str, element: impl Into<String>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            code,
            file: file.to_owned(),
            element: element.into(),
            message: message.into(),
        });
    }
    fn warning(&mut self, code: &'static str, file: &str, element: impl Into<String>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code,
            file: file.to_owned(),
            element: element.into(),
            message: message.into(),
        });
    }
}

/// Checks `sources` (the whole rulebook) as of `today` and builds it if it has no error.
pub fn check(sources: &[Source], today: Date) -> CheckReport {
    let mut c = Checker {
        diagnostics: Vec::new(),
    };
    let mut files = Vec::new();
    for source in sources {
        match toml::from_str::<RawFile>(&source.text) {
            Ok(raw) => files.push((source.name.as_str(), raw)),
            Err(e) => c.error("TOML", &source.name, "file", e.to_string().trim_end().to_owned()),
        }
    }
    let rulebook = build(&mut c, files, sources, today);
    let mut diagnostics = c.diagnostics;
    diagnostics.sort_by_key(|d| d.severity);
    let errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    CheckReport {
        rulebook: if errors { None } else { rulebook },
        diagnostics,
    }
}

/// Builds a rulebook, failing on the first error (for processes that only load).
pub fn load(sources: &[Source], today: Date) -> Result<Rulebook, Vec<Diagnostic>> {
    let report = check(sources, today);
    match report.rulebook {
        Some(rb) => Ok(rb),
        None => Err(report
            .diagnostics
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect()),
    }
}

fn hash_sources(sources: &[Source]) -> String {
    let mut sorted: Vec<&Source> = sources.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for s in sorted {
        // Length-prefixed so that moving text between files changes the hash.
        ctx.update(&(s.name.len() as u64).to_be_bytes());
        ctx.update(s.name.as_bytes());
        ctx.update(&(s.text.len() as u64).to_be_bytes());
        ctx.update(s.text.as_bytes());
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_basis_id(id: &str) -> bool {
    // LAW-ARTICLE-PARAGRAPH[-suffix…]: LAW upper case; article and paragraph start with a digit.
    let parts: Vec<&str> = id.split('-').collect();
    let law_ok = parts
        .first()
        .is_some_and(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_uppercase()));
    let numbered = |p: Option<&&str>| {
        p.is_some_and(|p| {
            p.chars().next().is_some_and(|c| c.is_ascii_digit()) && p.chars().all(|c| c.is_ascii_alphanumeric())
        })
    };
    let rest_ok = parts
        .iter()
        .skip(3)
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
    // An article without paragraphs has letters directly (LAVS-153g-a).
    let letter = |p: Option<&&str>| p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()));
    law_ok && numbered(parts.get(1)) && (parts.len() == 2 || numbered(parts.get(2)) || letter(parts.get(2))) && rest_ok
}

fn build(c: &mut Checker, files: Vec<(&str, RawFile)>, sources: &[Source], today: Date) -> Option<Rulebook> {
    let mut versions = Vec::new();
    let mut title = String::new();
    let mut types = BTreeMap::new();
    let mut categories: Vec<Category> = Vec::new();
    let mut purposes: Vec<Purpose> = Vec::new();
    let mut raw_bases = Vec::new();
    let mut raw_institutions = Vec::new();
    let mut facts: Vec<FactDecl> = Vec::new();
    let mut raw_conditions = Vec::new();
    let mut obligation_kinds: Vec<ObligationKindDecl> = Vec::new();
    let mut raw_duties = Vec::new();
    for (file, raw) in files {
        if let Some(h) = raw.rulebook {
            if h.version.trim().is_empty() {
                c.error("MISSING_VERSION", file, "rulebook", "version must not be empty");
            }
            if let Some(ext) = &h.extends
                && ext != "federal"
            {
                c.error(
                    "UNKNOWN_EXTENDS",
                    file,
                    "rulebook",
                    format!("extends `{ext}`: only `federal` exists"),
                );
            }
            versions.push(h.version);
            if title.is_empty() {
                title = h.title;
            }
        }
        for t in raw.institution_type {
            let element = format!("institution_type {}", t.id);
            let kind = match InstitutionType::parse("institution_type", &t.id) {
                Ok(kind) => kind,
                Err(e) => {
                    c.error("INVALID_ID", file, element, e.to_string());
                    continue;
                }
            };
            let regime = match Regime::parse("regime", &t.regime) {
                Ok(r) => r,
                Err(e) => {
                    c.error("UNKNOWN_VALUE", file, element, e.to_string());
                    continue;
                }
            };
            let info = TypeInfo {
                labels: Labels {
                    fr: t.label_fr,
                    de: t.label_de,
                    en: t.label_en,
                },
                regime,
                secrecy: t.secrecy.unwrap_or_default(),
            };
            if types.insert(kind, info).is_some() {
                c.error("DUPLICATE_ID", file, element, "declared twice");
            }
        }
        for f in raw.fact {
            let element = format!("fact {}", f.id);
            if !valid_word(&f.id) {
                c.error(
                    "INVALID_ID",
                    file,
                    element,
                    "fact ids are lower-case words joined by `_`",
                );
                continue;
            }
            if facts.iter().any(|x: &FactDecl| x.id == f.id) {
                c.error("DUPLICATE_ID", file, element, "declared twice");
                continue;
            }
            if facts.len() >= 64 {
                c.error("TOO_MANY", file, element, "a rulebook has at most 64 facts");
                continue;
            }
            let attested_by = match Attester::parse("attested_by", &f.attested_by) {
                Ok(a) => a,
                Err(e) => {
                    c.error("UNKNOWN_VALUE", file, element, e.to_string());
                    continue;
                }
            };
            if f.directory_capacity.is_some() && attested_by != Attester::Network {
                c.error(
                    "INVALID_VALUE",
                    file,
                    element,
                    "`directory_capacity` is for facts the network attests (`attested_by = \"network\"`)",
                );
                continue;
            }
            facts.push(FactDecl {
                id: f.id,
                labels: Labels {
                    fr: f.label_fr,
                    de: f.label_de,
                    en: f.label_en,
                },
                attested_by,
                directory_capacity: f.directory_capacity,
                note: f.note,
            });
        }
        raw_conditions.extend(raw.condition.into_iter().map(|x| (file, x)));
        raw_duties.extend(raw.federal_duty.into_iter().map(|x| (file, x)));
        for o in raw.obligation {
            let element = format!("obligation {}", o.id);
            if !valid_word(&o.id) {
                c.error(
                    "INVALID_ID",
                    file,
                    element,
                    "obligation ids are lower-case words joined by `_`",
                );
                continue;
            }
            if obligation_kinds.iter().any(|x: &ObligationKindDecl| x.id == o.id) {
                c.error("DUPLICATE_ID", file, element, "declared twice");
                continue;
            }
            obligation_kinds.push(ObligationKindDecl {
                id: o.id,
                labels: Labels {
                    fr: o.label_fr,
                    de: o.label_de,
                    en: o.label_en,
                },
            });
        }
        for cat in raw.category {
            let element = format!("category {}", cat.id);
            if categories.iter().any(|x| x.id == cat.id) {
                c.error("DUPLICATE_ID", file, element, "declared twice");
                continue;
            }
            let sensitivity = match Sensitivity::parse("sensitivity", &cat.sensitivity) {
                Ok(s) => s,
                Err(e) => {
                    c.error("UNKNOWN_VALUE", file, element, e.to_string());
                    continue;
                }
            };
            if categories.len() >= 64 {
                c.error("TOO_MANY", file, element, "a rulebook has at most 64 categories");
                continue;
            }
            categories.push(Category {
                id: cat.id,
                labels: Labels {
                    fr: cat.label_fr,
                    de: cat.label_de,
                    en: cat.label_en,
                },
                sensitivity,
                medical: cat.medical,
            });
        }
        for p in raw.purpose {
            if purposes.iter().any(|x| x.id == p.id) {
                c.error("DUPLICATE_ID", file, format!("purpose {}", p.id), "declared twice");
                continue;
            }
            if purposes.len() >= 64 {
                c.error(
                    "TOO_MANY",
                    file,
                    format!("purpose {}", p.id),
                    "a rulebook has at most 64 purposes",
                );
                continue;
            }
            purposes.push(Purpose {
                id: p.id,
                labels: Labels {
                    fr: p.label_fr,
                    de: p.label_de,
                    en: p.label_en,
                },
            });
        }
        for (i, value) in raw.basis.into_iter().enumerate() {
            let id = value
                .get("id")
                .and_then(|v| v.as_str())
                .map_or_else(|| format!("#{}", i + 1), str::to_owned);
            match RawBasis::deserialize(value) {
                Ok(b) => raw_bases.push((file, b)),
                Err(e) => c.error("TOML", file, format!("basis {id}"), e.to_string().trim_end().to_owned()),
            }
        }
        raw_institutions.extend(raw.institution.into_iter().map(|i| (file, i)));
    }
    if versions.is_empty() {
        c.error(
            "MISSING_VERSION",
            "(rulebook)",
            "rulebook",
            "no file has a [rulebook] section with a version",
        );
    }
    let mut conditions = Vec::new();
    for (file, raw) in raw_conditions {
        if let Some(decl) = build_condition(c, file, raw, &facts, &mut conditions) {
            conditions.push(decl);
        }
    }
    let mut federal_duties: Vec<FederalDuty> = Vec::new();
    for (file, d) in raw_duties {
        if let Some(duty) = build_duty(c, file, d, &types, &facts) {
            if federal_duties.iter().any(|x| x.id == duty.id) {
                c.error(
                    "DUPLICATE_ID",
                    file,
                    format!("federal_duty {}", duty.id),
                    "declared twice",
                );
                continue;
            }
            federal_duties.push(duty);
        }
    }
    let vocabulary = Vocabulary {
        types: &types,
        categories: &categories,
        purposes: &purposes,
        facts: &facts,
        obligation_kinds: &obligation_kinds,
    };

    let mut bases: Vec<Basis> = Vec::new();
    for (file, b) in raw_bases {
        if let Some(basis) = build_basis(c, file, b, &vocabulary, &mut conditions) {
            if bases.iter().any(|x| x.id == basis.id) {
                c.error("DUPLICATE_ID", file, format!("basis {}", basis.id), "declared twice");
                continue;
            }
            bases.push(basis);
        }
    }

    let mut institutions = BTreeMap::new();
    for (file, i) in raw_institutions {
        let element = format!("institution {}", i.id);
        let id = match InstitutionId::parse("id", &i.id) {
            Ok(id) => id,
            Err(e) => {
                c.error("INVALID_ID", file, element, e.to_string());
                continue;
            }
        };
        let Some(kind) = declared_type(&types, &i.kind) else {
            c.error(
                "UNKNOWN_TYPE",
                file,
                element,
                format!("type `{}` is not a declared institution type", i.kind),
            );
            continue;
        };
        if let Some(canton) = &i.canton
            && !valid_canton(canton)
        {
            c.error(
                "INVALID_VALUE",
                file,
                &element,
                format!("canton `{canton}` is not two upper-case letters"),
            );
            continue;
        }
        let regime = match i.regime.as_deref().map(|r| Regime::parse("regime", r)) {
            None => types.get(&kind).map_or(Regime::Cantonal, |t: &TypeInfo| t.regime),
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                c.error("UNKNOWN_VALUE", file, element, e.to_string());
                continue;
            }
        };
        let mut reciprocity = Vec::new();
        for r in i.reciprocity {
            if r.citation.trim().is_empty() {
                c.error(
                    "MISSING_CITATION",
                    file,
                    &element,
                    "a reciprocity attestation needs its citation",
                );
            }
            let mut grants_to = Vec::new();
            for t in &r.grants_to {
                match declared_type(&types, t) {
                    Some(t) => grants_to.push(t),
                    None => c.error(
                        "UNKNOWN_TYPE",
                        file,
                        &element,
                        format!("reciprocity grants_to `{t}` is not an institution type"),
                    ),
                }
            }
            match parse_date(&r.since) {
                Ok(since) => reciprocity.push(Reciprocity {
                    grants_to,
                    citation: r.citation,
                    since,
                }),
                Err(e) => c.error("INVALID_DATE", file, &element, format!("reciprocity since: {e}")),
            }
        }
        let mut cantonal_release = Vec::new();
        for r in i.cantonal_release {
            if r.citation.trim().is_empty() {
                c.error(
                    "MISSING_CITATION",
                    file,
                    &element,
                    "a cantonal release needs its citation",
                );
            }
            match parse_date(&r.since) {
                Ok(since) => cantonal_release.push(CantonalRelease {
                    citation: r.citation,
                    since,
                }),
                Err(e) => c.error("INVALID_DATE", file, &element, format!("cantonal_release since: {e}")),
            }
        }
        let mut status = Vec::new();
        for st in i.status {
            let Some(fact) = facts
                .iter()
                .position(|f| f.id == st.fact && f.attested_by == Attester::Network)
            else {
                c.error(
                    "UNKNOWN_FACT",
                    file,
                    &element,
                    format!("status `{}` is not a declared fact the network attests", st.fact),
                );
                continue;
            };
            if st.citation.trim().is_empty() {
                c.error("MISSING_CITATION", file, &element, "a status needs its citation");
            }
            match parse_date(&st.since) {
                Ok(since) => status.push(InstitutionStatus {
                    fact,
                    citation: st.citation,
                    since,
                }),
                Err(e) => c.error("INVALID_DATE", file, &element, format!("status since: {e}")),
            }
        }
        if kind.as_str() == "PRIVATE_DELEGATED" && i.delegating_act.as_deref().is_none_or(|a| a.trim().is_empty()) {
            c.error(
                "MISSING_CITATION",
                file,
                &element,
                "a private body with a delegated public task names the act that delegates it (`delegating_act`)",
            );
        }
        let facts_of = InstitutionFacts {
            id: id.clone(),
            kind,
            regime,
            regime_citation: i.regime_citation,
            canton: i.canton,
            reciprocity,
            cantonal_release,
            status,
            delegating_act: i.delegating_act,
        };
        if institutions.insert(id, facts_of).is_some() {
            c.error("DUPLICATE_ID", file, element, "declared twice");
        }
    }

    lint(c, &bases, &vocabulary, &conditions, today);

    let mut rulebook = Rulebook {
        version: versions.join(" + "),
        title,
        hash: hash_sources(sources),
        types,
        categories,
        purposes,
        bases,
        institutions,
        standins: Standins {
            reciprocity: facts.iter().position(|f| f.id == "recipient_grants_reciprocity"),
            release: facts.iter().position(|f| f.id == "cantonal_release"),
        },
        facts,
        conditions,
        obligation_kinds,
        federal_duties,
        by_pair: BTreeMap::new(),
    };
    rulebook.reindex();
    Some(rulebook)
}

fn build_duty(
    c: &mut Checker,
    file: &str,
    d: RawDuty,
    types: &BTreeMap<InstitutionType, TypeInfo>,
    facts: &[FactDecl],
) -> Option<FederalDuty> {
    let element = format!("federal_duty {}", d.id);
    let errors_before = c.diagnostics.len();
    if !valid_basis_id(&d.id) {
        c.error(
            "INVALID_ID",
            file,
            &element,
            "duty ids are LAW-ARTICLE-PARAGRAPH (e.g. LAI-6a-2)",
        );
    }
    if d.citation.fr.trim().is_empty() || d.citation.de.trim().is_empty() {
        c.error(
            "MISSING_CITATION",
            file,
            &element,
            "a duty needs a citation in French and German",
        );
    }
    let mut list = |names: &[String], key: &str| -> Vec<InstitutionType> {
        let out: Vec<InstitutionType> = names.iter().filter_map(|t| declared_type(types, t)).collect();
        if out.len() != names.len() || out.is_empty() {
            c.error(
                "UNKNOWN_TYPE",
                file,
                &element,
                format!("`{key}` names an undeclared type or none"),
            );
        }
        out
    };
    let (from, to) = (list(&d.from, "from"), list(&d.to, "to"));
    let mut triggers = Vec::new();
    for t in &d.triggers {
        match Trigger::parse("trigger", t) {
            Ok(t) => triggers.push(t),
            Err(e) => c.error("UNKNOWN_TRIGGER", file, &element, e.to_string()),
        }
    }
    let mut presupposed = Vec::new();
    for f in &d.facts {
        match facts.iter().position(|x| x.id == *f) {
            Some(i) => presupposed.push(i),
            None => c.error("UNKNOWN_FACT", file, &element, format!("fact `{f}` is not declared")),
        }
    }
    (c.diagnostics.len() == errors_before).then_some(FederalDuty {
        id: d.id,
        citation: Citation {
            fr: d.citation.fr,
            de: d.citation.de,
            it: d.citation.it,
        },
        from,
        to,
        triggers,
        facts: presupposed,
        note: d.note,
    })
}

/// The declared type named `name`, if any.
fn declared_type(types: &BTreeMap<InstitutionType, TypeInfo>, name: &str) -> Option<InstitutionType> {
    types.keys().copied().find(|t| t.as_str() == name)
}

/// Lower-case words joined by `_` (fact, condition and obligation ids).
fn valid_word(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_canton(canton: &str) -> bool {
    canton.len() == 2 && canton.chars().all(|c| c.is_ascii_uppercase())
}

/// What a basis may name, as declared so far.
struct Vocabulary<'a> {
    types: &'a BTreeMap<InstitutionType, TypeInfo>,
    categories: &'a [Category],
    purposes: &'a [Purpose],
    facts: &'a [FactDecl],
    obligation_kinds: &'a [ObligationKindDecl],
}

/// A `[[condition]]` entry: exactly one of `fact`, `builtin`, `all_of`, `any_of`; the
/// conditions it combines are declared before it (so no condition refers to itself).
fn build_condition(
    c: &mut Checker,
    file: &str,
    raw: RawCondition,
    facts: &[FactDecl],
    earlier: &mut Vec<ConditionDecl>,
) -> Option<ConditionDecl> {
    let element = format!("condition {}", raw.id);
    if !valid_word(&raw.id) {
        c.error(
            "INVALID_ID",
            file,
            element,
            "condition ids are lower-case words joined by `_`",
        );
        return None;
    }
    if earlier.iter().any(|x| x.id == raw.id) {
        c.error("DUPLICATE_ID", file, element, "declared twice");
        return None;
    }
    let given = [
        raw.fact.is_some(),
        raw.builtin.is_some(),
        raw.all_of.is_some(),
        raw.any_of.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        c.error(
            "INVALID_CONDITION",
            file,
            element,
            "a condition has exactly one of `fact`, `builtin`, `all_of`, `any_of`",
        );
        return None;
    }
    let resolve =
        |c: &mut Checker, earlier: &mut Vec<ConditionDecl>, names: &[String], any: bool| -> Option<Vec<usize>> {
            let mut out = Vec::new();
            for name in names {
                match condition_named(earlier, facts, name) {
                    Some(i) if any && earlier.get(i).is_some_and(|d| filters(earlier, d)) => {
                        c.error(
                            "INVALID_CONDITION",
                            file,
                            &element,
                            format!(
                                "`{name}` narrows the released categories and cannot be one alternative of `any_of`"
                            ),
                        );
                        return None;
                    }
                    Some(i) => out.push(i),
                    None => {
                        c.error(
                            "UNKNOWN_CONDITION",
                            file,
                            &element,
                            format!("`{name}` is neither a fact nor a condition declared before this one"),
                        );
                        return None;
                    }
                }
            }
            if out.is_empty() {
                c.error("EMPTY", file, &element, "names no condition");
                return None;
            }
            Some(out)
        };
    let rule = if let Some(fact) = &raw.fact {
        match facts.iter().position(|f| f.id == *fact) {
            Some(i) => Rule::Fact(i),
            None => {
                c.error("UNKNOWN_FACT", file, element, format!("fact `{fact}` is not declared"));
                return None;
            }
        }
    } else if let Some(builtin) = &raw.builtin {
        match Builtin::parse("builtin", builtin) {
            Ok(b) => Rule::Builtin(b),
            Err(e) => {
                c.error("UNKNOWN_BUILTIN", file, element, e.to_string());
                return None;
            }
        }
    } else if let Some(all) = &raw.all_of {
        Rule::AllOf(resolve(c, earlier, all, false)?)
    } else {
        Rule::AnyOf(resolve(c, earlier, raw.any_of.as_deref().unwrap_or_default(), true)?)
    };
    Some(ConditionDecl {
        id: raw.id,
        labels: Labels {
            fr: raw.label_fr,
            de: raw.label_de,
            en: raw.label_en,
        },
        rule,
        note: raw.note,
    })
}

/// Whether a condition narrows the released categories (a filtering built-in, alone or combined).
fn filters(all: &[ConditionDecl], d: &ConditionDecl) -> bool {
    match &d.rule {
        Rule::Fact(_) => false,
        Rule::Builtin(b) => b.filters(),
        Rule::AllOf(list) | Rule::AnyOf(list) => list.iter().filter_map(|i| all.get(*i)).any(|x| filters(all, x)),
    }
}

fn build_basis(
    c: &mut Checker,
    file: &str,
    b: RawBasis,
    vocabulary: &Vocabulary<'_>,
    conditions: &mut Vec<ConditionDecl>,
) -> Option<Basis> {
    let (categories, purposes) = (vocabulary.categories, vocabulary.purposes);
    let element = format!("basis {}", b.id);
    let errors_before = c.diagnostics.len();
    if !valid_basis_id(&b.id) {
        c.error(
            "INVALID_ID",
            file,
            &element,
            "basis ids are LAW-ARTICLE-PARAGRAPH (e.g. LACI-85f-2, LACI-97a-1-f)",
        );
    }
    let citation = match b.citation {
        Some(cit) if !cit.fr.trim().is_empty() && !cit.de.trim().is_empty() => Citation {
            fr: cit.fr,
            de: cit.de,
            it: cit.it,
        },
        _ => {
            c.error(
                "MISSING_CITATION",
                file,
                &element,
                "every basis needs a citation in French and German",
            );
            Citation {
                fr: String::new(),
                de: String::new(),
                it: String::new(),
            }
        }
    };
    let status = Status::parse("status", &b.status)
        .map_err(|e| c.error("UNKNOWN_VALUE", file, &element, e.to_string()))
        .ok();
    let effective_from = parse_date(&b.effective_from)
        .map_err(|e| c.error("INVALID_DATE", file, &element, format!("effective_from: {e}")))
        .ok();
    let effective_to = match b.effective_to.as_deref().map(parse_date) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            c.error("INVALID_DATE", file, &element, format!("effective_to: {e}"));
            None
        }
    };
    let mut types = |list: &[String], key: &str| -> Vec<InstitutionType> {
        let mut out = Vec::new();
        for t in list {
            match declared_type(vocabulary.types, t) {
                Some(t) => out.push(t),
                None => c.error(
                    "UNKNOWN_TYPE",
                    file,
                    &element,
                    format!("{key}: `{t}` is not a declared institution type"),
                ),
            }
        }
        out
    };
    let from = types(&b.from, "from");
    let to = types(&b.to, "to");
    let mut triggers = Vec::new();
    for t in &b.triggers {
        match Trigger::parse("trigger", t) {
            Ok(t) => triggers.push(t),
            Err(e) => c.error("UNKNOWN_TRIGGER", file, &element, e.to_string()),
        }
    }
    let mut purpose_idx = Vec::new();
    for p in &b.purposes {
        match purposes.iter().position(|x| x.id == *p) {
            Some(i) => purpose_idx.push(i),
            None => c.error(
                "UNKNOWN_PURPOSE",
                file,
                &element,
                format!("purpose `{p}` is not declared"),
            ),
        }
    }
    let mut category_idx = Vec::new();
    for cat in &b.categories {
        match categories.iter().position(|x| x.id == *cat) {
            Some(i) => category_idx.push(i),
            None => c.error(
                "UNKNOWN_CATEGORY",
                file,
                &element,
                format!("category `{cat}` is not declared"),
            ),
        }
    }
    let mut condition_idx = Vec::new();
    for name in &b.conditions {
        match condition_named(conditions, vocabulary.facts, name) {
            Some(i) => condition_idx.push(i),
            None => c.error(
                "UNKNOWN_CONDITION",
                file,
                &element,
                format!("`{name}` is neither a declared condition nor a declared fact"),
            ),
        }
    }
    let mut obligations = Vec::new();
    for o in &b.obligations {
        let kind = vocabulary.obligation_kinds.iter().position(|k| k.id == o.kind);
        if kind.is_none() {
            c.error(
                "UNKNOWN_OBLIGATION",
                file,
                &element,
                format!("obligation `{}` is not declared", o.kind),
            );
        }
        let owner =
            Owner::parse("owner", &o.owner).map_err(|e| c.error("UNKNOWN_VALUE", file, &element, e.to_string()));
        if let (Some(kind), Ok(owner)) = (kind, owner) {
            obligations.push(ObligationSpec {
                kind,
                owner,
                due_days: o.due_days.unwrap_or(30),
            });
        }
    }
    for canton in &b.cantons {
        if !valid_canton(canton) {
            c.error(
                "INVALID_VALUE",
                file,
                &element,
                format!("canton `{canton}` is not two upper-case letters"),
            );
        }
    }
    for (key, empty) in [
        ("from", from.is_empty()),
        ("to", to.is_empty()),
        ("triggers", triggers.is_empty()),
        ("purposes", purpose_idx.is_empty()),
        ("categories", category_idx.is_empty()),
    ] {
        if empty && c.diagnostics.len() == errors_before {
            c.error("EMPTY", file, &element, format!("`{key}` must name at least one entry"));
        }
    }
    if c.diagnostics.len() > errors_before {
        return None;
    }
    let status = status?;
    let active = b.active.unwrap_or(status == Status::Verified);
    if status == Status::Inference && b.active.is_none() {
        c.warning(
            "INFERENCE_INACTIVE",
            file,
            &element,
            "rests on an inference and is inactive until jurists confirm the reading \
             (`active = true` with `active_because`)",
        );
    }
    if status == Status::Inference && active && b.active_because.trim().is_empty() {
        c.error(
            "INFERENCE_NOT_JUSTIFIED",
            file,
            &element,
            "a basis resting on an inference is active only with `active = true` and `active_because` \
             naming the reading jurists confirmed (docs/legal-review.md)",
        );
    }
    if status == Status::Open && active {
        c.error(
            "OPEN_BASIS_ACTIVE",
            file,
            &element,
            "a basis with status `open` must be `active = false` until jurists confirm it",
        );
    }
    let purpose_mask = purpose_idx.iter().fold(0u64, |m, i| m | (1 << i));
    let category_mask = category_idx.iter().fold(0u64, |m, i| m | (1 << i));
    Some(Basis {
        id: b.id,
        citation,
        status,
        active,
        effective_from: effective_from?,
        effective_to,
        from,
        to,
        mutual: b.mutual,
        triggers,
        purposes: purpose_idx,
        categories: category_idx,
        conditions: condition_idx,
        obligations,
        cantons: b.cantons,
        automatic_answer: b.automatic_answer,
        active_because: b.active_because,
        note: b.note,
        purpose_mask,
        category_mask,
    })
}

/// The condition a basis names: a declared condition, or a declared fact (which then
/// becomes a condition of its own, labelled as the fact).
fn condition_named(conditions: &mut Vec<ConditionDecl>, facts: &[FactDecl], name: &str) -> Option<usize> {
    if let Some(i) = conditions.iter().position(|x| x.id == name) {
        return Some(i);
    }
    let fact = facts.iter().position(|f| f.id == name)?;
    let labels = facts.get(fact)?.labels.clone();
    conditions.push(ConditionDecl {
        id: name.to_owned(),
        labels,
        rule: Rule::Fact(fact),
        note: String::new(),
    });
    Some(conditions.len() - 1)
}

/// Rules about the rulebook as a whole.
fn lint(c: &mut Checker, bases: &[Basis], v: &Vocabulary<'_>, conditions: &[ConditionDecl], today: Date) {
    let (categories, purposes) = (v.categories, v.purposes);
    let file = "(rulebook)";
    let uses = |b: &Basis, builtin: Builtin| b.conditions.iter().any(|i| uses_builtin(conditions, *i, builtin));
    for b in bases {
        let element = format!("basis {}", b.id);
        if b.active && b.effective_to.is_some_and(|to| to < today) {
            c.error(
                "EXPIRED_ACTIVE",
                file,
                &element,
                "expired but still active: set `active = false` or remove it",
            );
        }
        if b.effective_to.is_some_and(|to| to < b.effective_from) {
            c.error("INVALID_DATE", file, &element, "effective_to is before effective_from");
        }
        if uses(b, Builtin::NoMedicalData)
            && b.categories
                .iter()
                .all(|i| categories.get(*i).is_some_and(|c| c.medical))
        {
            c.error(
                "UNREACHABLE",
                file,
                &element,
                "releases nothing: all its categories are medical and it has `no_medical_data`",
            );
        }
        if uses(b, Builtin::Consent) && uses(b, Builtin::WrittenConsent) {
            c.warning(
                "REDUNDANT",
                file,
                &element,
                "`written_consent` already implies `consent`",
            );
        }
        if b.automatic_answer {
            let weighed = b
                .conditions
                .iter()
                .filter_map(|i| discloser_fact(conditions, v.facts, *i))
                .next();
            if let Some(fact) = weighed {
                c.error(
                    "AUTOMATIC_ANSWER_WEIGHED",
                    file,
                    &element,
                    format!(
                        "`automatic_answer` on a basis whose condition `{fact}` the discloser weighs: a holder's caseworker must review"
                    ),
                );
            }
        }
    }
    // Overlaps: an active basis identical in reach to another is a copy that makes
    // decisions cite two bases for one rule.
    for (i, a) in bases.iter().enumerate() {
        for b in bases.iter().skip(i + 1) {
            if !(a.active && b.active) {
                continue;
            }
            let set = |v: &[InstitutionType]| v.iter().copied().collect::<BTreeSet<_>>();
            let same = set(&a.from) == set(&b.from)
                && set(&a.to) == set(&b.to)
                && a.mutual == b.mutual
                && a.triggers.iter().collect::<BTreeSet<_>>() == b.triggers.iter().collect::<BTreeSet<_>>()
                && a.purpose_mask == b.purpose_mask
                && a.category_mask == b.category_mask
                && a.conditions.iter().collect::<BTreeSet<_>>() == b.conditions.iter().collect::<BTreeSet<_>>()
                && a.cantons == b.cantons;
            if same {
                c.error(
                    "OVERLAP",
                    file,
                    format!("basis {}", b.id),
                    format!("identical in reach and conditions to basis {}", a.id),
                );
            }
        }
    }
    let used_categories = bases.iter().filter(|b| b.active).fold(0u64, |m, b| m | b.category_mask);
    for (i, cat) in categories.iter().enumerate() {
        if used_categories & (1 << i) == 0 {
            c.warning(
                "UNUSED_CATEGORY",
                file,
                format!("category {}", cat.id),
                "no active basis permits it",
            );
        }
    }
    let used_purposes = bases.iter().filter(|b| b.active).fold(0u64, |m, b| m | b.purpose_mask);
    for (i, p) in purposes.iter().enumerate() {
        if used_purposes & (1 << i) == 0 {
            c.warning(
                "UNUSED_PURPOSE",
                file,
                format!("purpose {}", p.id),
                "no active basis permits it",
            );
        }
    }
}

/// Whether condition `i` uses `builtin`, itself or through what it combines.
pub(crate) fn uses_builtin(conditions: &[ConditionDecl], i: usize, builtin: Builtin) -> bool {
    match conditions.get(i).map(|d| &d.rule) {
        Some(Rule::Builtin(b)) => *b == builtin,
        Some(Rule::AllOf(list) | Rule::AnyOf(list)) => list.iter().any(|j| uses_builtin(conditions, *j, builtin)),
        Some(Rule::Fact(_)) | None => false,
    }
}

/// The first fact condition `i` needs that the discloser attests, if any.
fn discloser_fact<'a>(conditions: &[ConditionDecl], facts: &'a [FactDecl], i: usize) -> Option<&'a str> {
    match conditions.get(i).map(|d| &d.rule) {
        Some(Rule::Fact(f)) => facts
            .get(*f)
            .filter(|f| f.attested_by == Attester::Discloser)
            .map(|f| f.id.as_str()),
        Some(Rule::AllOf(list) | Rule::AnyOf(list)) => list.iter().find_map(|j| discloser_fact(conditions, facts, *j)),
        Some(Rule::Builtin(_)) | None => None,
    }
}

impl Rulebook {
    /// Recomputes what the engine derives from the bases' public fields (their purpose and
    /// category masks, the candidate bases per pair of types), after a change to them: the
    /// condition-coverage test mutates a compiled rulebook in memory this way.
    pub fn reindex(&mut self) {
        for b in &mut self.bases {
            b.purpose_mask = b.purposes.iter().fold(0u64, |m, i| m | (1 << i));
            b.category_mask = b.categories.iter().fold(0u64, |m, i| m | (1 << i));
        }
        let mut by_pair = BTreeMap::new();
        for &from in self.types.keys() {
            for &to in self.types.keys() {
                let list: Vec<usize> = self
                    .bases
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.covers_pair(from, to))
                    .map(|(i, _)| i)
                    .collect();
                by_pair.insert((from, to), list);
            }
        }
        self.by_pair = by_pair;
    }

    /// The facts only the reference directory establishes (a `directory_capacity`): the
    /// recipient's relationships with the person, which a sender may not learn.
    pub fn directory_facts(&self) -> Vec<usize> {
        self.facts
            .iter()
            .enumerate()
            .filter(|(_, f)| f.directory_capacity.is_some())
            .map(|(i, _)| i)
            .collect()
    }

    /// The index of a fact id.
    pub fn fact_index(&self, id: &str) -> Option<usize> {
        self.facts.iter().position(|f| f.id == id)
    }

    /// The index of a condition id.
    pub fn condition_index(&self, id: &str) -> Option<usize> {
        self.conditions.iter().position(|c| c.id == id)
    }

    /// Whether basis `b` has a condition that uses `builtin`.
    pub fn basis_uses(&self, b: &Basis, builtin: Builtin) -> bool {
        b.conditions.iter().any(|i| uses_builtin(&self.conditions, *i, builtin))
    }

    /// The facts condition `i` reads, itself or through what it combines.
    pub fn facts_of_condition(&self, i: usize) -> Vec<usize> {
        match self.conditions.get(i).map(|d| &d.rule) {
            Some(Rule::Fact(f)) => vec![*f],
            Some(Rule::AllOf(list) | Rule::AnyOf(list)) => {
                list.iter().flat_map(|j| self.facts_of_condition(*j)).collect()
            }
            Some(Rule::Builtin(_)) | None => Vec::new(),
        }
    }

    /// The secrecy rule binding a discloser, which a denial cites: its type's, if declared.
    pub fn secrecy_of(&self, kind: InstitutionType) -> Option<&str> {
        self.types
            .get(&kind)
            .map(|t| t.secrecy.as_str())
            .filter(|s| !s.is_empty())
    }

    /// The index of a category id.
    pub fn category_index(&self, id: &str) -> Option<usize> {
        self.categories.iter().position(|c| c.id == id)
    }

    /// The index of a purpose id.
    pub fn purpose_index(&self, id: &str) -> Option<usize> {
        self.purposes.iter().position(|p| p.id == id)
    }

    /// A basis by id.
    pub fn basis(&self, id: &str) -> Option<&Basis> {
        self.bases.iter().find(|b| b.id == id)
    }

    /// The label of an institution type in `lang`.
    pub fn type_label(&self, t: InstitutionType, lang: Lang) -> &str {
        self.types.get(&t).map_or(t.as_str(), |i| i.labels.get(lang))
    }
}

/// The full source set of a rulebook directory: its files, preceded by the
/// built-in federal rulebook when one of them declares `extends = "federal"`.
///
/// A file set that extends nothing and declares no fact, condition or obligation was written
/// before the vocabulary was data (release 2026.11 and earlier): it gets the built-in federal
/// vocabulary (`federal/01-vocabulary.toml`), so it loads and decides as it did.
pub fn with_base(files: Vec<Source>) -> Vec<Source> {
    let parsed: Vec<Option<toml::Value>> = files
        .iter()
        .map(|s| toml::from_str::<toml::Value>(&s.text).ok())
        .collect();
    let extends = parsed.iter().flatten().any(|v| {
        v.get("rulebook")
            .and_then(|r| r.get("extends"))
            .and_then(toml::Value::as_str)
            .is_some_and(|e| e == "federal")
    });
    let declares_vocabulary = parsed
        .iter()
        .flatten()
        .any(|v| ["fact", "condition", "obligation"].iter().any(|k| v.get(k).is_some()));
    if extends {
        let mut all = federal_sources();
        all.extend(files);
        all
    } else if declares_vocabulary {
        files
    } else {
        let mut all: Vec<Source> = federal_sources()
            .into_iter()
            .filter(|s| s.name == "federal/01-vocabulary.toml")
            .collect();
        all.extend(files);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_ids_follow_the_convention() {
        for ok in [
            "LACI-85f-2",
            "LPGA-32-2bis",
            "LACI-97a-1-f",
            "LAVS-50a-1-e-1",
            "LAVS-153g",
            "LAI-68bis-3-cantonal",
            "LAVS-153g-a",
        ] {
            assert!(valid_basis_id(ok), "{ok}");
        }
        for bad in [
            "laci-85f-2",
            "LACI",
            "LACI-f-2",
            "LACI-85f-",
            "LACI 85f 2",
            "LACI--2",
            "LAVS-153g-A",
        ] {
            assert!(!valid_basis_id(bad), "{bad}");
        }
    }
}
