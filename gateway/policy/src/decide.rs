//! The decision engine. Deny by default: a transfer happens only if a basis
//! in force, active, covering the pair, the trigger and the purpose, holds
//! with all its conditions, and permits at least one category asked for.
//!
//! Fixed rules (scenarios and the gateway rely on them):
//! - `from` is always the institution that discloses the data;
//! - the trigger only selects the candidate bases; a condition holds only
//!   through its fact, a rulebook attestation or a consent: a fact not given is false;
//! - a basis limited to cantons applies only when the discloser is in one of them;
//! - `persons > 1`, or no case reference, fails `case_by_case`;
//! - a category is released if a basis that holds permits it (and, for a basis
//!   resting on consent, the consent covers it); every other category asked for
//!   is withheld with its reason; nothing released means Deny;
//! - obligations are the union over the bases that released something, each
//!   with its owner and `due_days` (default 30).

use std::sync::Arc;

use cii_types::{InstitutionId, InstitutionType};
use time::Date;

use crate::rulebook::{Basis, Rule, Rulebook};
use crate::vocab::{Builtin, Owner, Regime, Trigger};

/// A party of a transfer: its type, and its registry id and canton when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Institution type.
    pub kind: InstitutionType,
    /// Registry id (needed for reciprocity and cantonal-release attestations).
    pub id: Option<InstitutionId>,
    /// Canton (two letters), for bases limited to cantons; else the rulebook's, if it names the institution.
    pub canton: Option<String>,
}

impl Party {
    /// A party known only by type.
    pub fn of_type(kind: InstitutionType) -> Party {
        Party {
            kind,
            id: None,
            canton: None,
        }
    }

    /// A registry member.
    pub fn member(kind: InstitutionType, id: InstitutionId, canton: Option<String>) -> Party {
        Party {
            kind,
            id: Some(id),
            canton,
        }
    }
}

/// The facts given with a transfer, by index into the rulebook's facts (absent means false).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts(u64);

impl Facts {
    /// Sets fact `i` (an index into `Rulebook::facts`).
    pub fn set(&mut self, i: usize, value: bool) {
        let bit = 1u64.checked_shl(i as u32).unwrap_or(0);
        if value {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }

    /// Whether fact `i` holds.
    pub fn get(self, i: usize) -> bool {
        self.0 & 1u64.checked_shl(i as u32).unwrap_or(0) != 0
    }

    /// The facts named, each declared by `rulebook`; the first unknown name is the error.
    pub fn named<'a>(rulebook: &Rulebook, names: impl IntoIterator<Item = &'a str>) -> Result<Facts, String> {
        let mut facts = Facts::default();
        for name in names {
            facts.set(rulebook.fact_index(name).ok_or_else(|| name.to_owned())?, true);
        }
        Ok(facts)
    }

    /// The indices of the facts given.
    pub fn indices(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.get(*i))
    }
}

/// A consent the registry found for this sender, recipient and person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentFound {
    /// `consent-id@version`, for the audit entry.
    pub reference: String,
    /// Categories it covers.
    pub categories: Vec<String>,
    /// Purposes it covers.
    pub purposes: Vec<String>,
    /// Given in writing.
    pub written: bool,
}

/// One transfer to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The institution that discloses.
    pub from: Party,
    /// The institution that receives.
    pub to: Party,
    /// How it was triggered; `None` considers every trigger (explain only).
    pub trigger: Option<Trigger>,
    /// Purpose id.
    pub purpose: String,
    /// Categories asked for.
    pub categories: Vec<String>,
    /// Number of persons concerned.
    pub persons: u32,
    /// The case or request reference of the individual case, if given.
    pub case_reference: Option<String>,
    /// A pull its holder has not reviewed: only bases with `automatic_answer` may carry it
    /// (the others wait for the holder's caseworker, who weighs and attests).
    pub unreviewed_pull: bool,
    /// Facts and attestations.
    pub facts: Facts,
    /// Consents found.
    pub consents: Vec<ConsentFound>,
    /// The day of the transfer.
    pub date: Date,
}

/// The transfer description is unusable (not a refusal: nothing was decided).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A category the rulebook does not declare.
    #[error("unknown category `{0}`")]
    UnknownCategory(String),
    /// A purpose the rulebook does not declare.
    #[error("unknown purpose `{0}`")]
    UnknownPurpose(String),
    /// No category asked for.
    #[error("no category asked for")]
    NoCategories,
    /// Zero persons.
    #[error("persons must be at least 1")]
    NoPersons,
}

impl InputError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            InputError::UnknownCategory(_) => "UNKNOWN_CATEGORY",
            InputError::UnknownPurpose(_) => "UNKNOWN_PURPOSE",
            InputError::NoCategories => "NO_CATEGORIES",
            InputError::NoPersons => "NO_PERSONS",
        }
    }
}

/// Why a basis did not carry, or a category was withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReasonCode {
    /// No basis covers this sender type, recipient type (and trigger).
    NoMatchingBasis,
    /// The basis covers the pair but not this trigger.
    TriggerNotCovered,
    /// The basis does not permit this purpose.
    PurposeNotPermitted,
    /// A condition of the basis does not hold.
    ConditionNotMet,
    /// No basis that holds permits this category.
    CategoryNotPermitted,
    /// The consent the basis rests on does not cover this category.
    ConsentDoesNotCover,
    /// The basis never releases medical data.
    MedicalDataExcluded,
    /// The basis never releases sensitive data.
    SensitiveDataExcluded,
    /// The transfer is denied: no basis holds.
    NoBasisHolds,
    /// A pull under a basis that needs the holder's review, not yet reviewed.
    ReviewRequired,
    /// The holder's caseworker refused the pull.
    ReviewRefused,
    /// The holder did not answer the review in time.
    ReviewTimeout,
}

impl ReasonCode {
    /// Stable machine code.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::NoMatchingBasis => "NO_MATCHING_BASIS",
            ReasonCode::TriggerNotCovered => "TRIGGER_NOT_COVERED",
            ReasonCode::PurposeNotPermitted => "PURPOSE_NOT_PERMITTED",
            ReasonCode::ConditionNotMet => "CONDITION_NOT_MET",
            ReasonCode::CategoryNotPermitted => "CATEGORY_NOT_PERMITTED",
            ReasonCode::ConsentDoesNotCover => "CONSENT_DOES_NOT_COVER",
            ReasonCode::MedicalDataExcluded => "MEDICAL_DATA_EXCLUDED",
            ReasonCode::SensitiveDataExcluded => "SENSITIVE_DATA_EXCLUDED",
            ReasonCode::NoBasisHolds => "NO_BASIS_HOLDS",
            ReasonCode::ReviewRequired => "REVIEW_REQUIRED",
            ReasonCode::ReviewRefused => "REVIEW_REFUSED",
            ReasonCode::ReviewTimeout => "REVIEW_TIMEOUT",
        }
    }
}

/// A reason, with what it refers to (indices into the rulebook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// What.
    pub code: ReasonCode,
    /// The basis concerned.
    pub basis: Option<usize>,
    /// The condition concerned (index into `Rulebook::conditions`).
    pub condition: Option<usize>,
}

/// A category asked for and not released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// Category index.
    pub category: usize,
    /// Why.
    pub reason: ReasonCode,
}

/// An obligation created by a permit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obligation {
    /// What must be done (index into `Rulebook::obligation_kinds`).
    pub kind: usize,
    /// Who must do it (role).
    pub owner: Owner,
    /// Who must do it (the party).
    pub party: Party,
    /// Within how many days of the transfer.
    pub due_days: u32,
    /// The basis that imposes it.
    pub basis: usize,
}

/// The decision on a transfer: a value, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The transfer may happen with the released categories.
    Permit {
        /// Bases that carried it (each released something).
        bases: Vec<usize>,
        /// Released category indices, in rulebook order.
        released: Vec<usize>,
        /// Categories asked for and withheld.
        withheld: Vec<Withheld>,
        /// Obligations created.
        obligations: Vec<Obligation>,
        /// The rulebook that decided.
        rulebook_hash: Arc<str>,
    },
    /// The transfer may not happen.
    Deny {
        /// Why, per basis examined (or `NO_MATCHING_BASIS`).
        reasons: Vec<Reason>,
        /// Every category asked for.
        withheld: Vec<Withheld>,
        /// The rulebook that decided.
        rulebook_hash: Arc<str>,
    },
}

impl Decision {
    /// A denial that is not the rulebook's: the holder's reviewer refused, or did not
    /// answer in time (`code`), every category asked for withheld with that reason.
    pub fn by_review(rulebook: &Rulebook, categories: &[String], code: ReasonCode) -> Result<Decision, InputError> {
        let asked = mask_of(rulebook, categories)?;
        Ok(Decision::Deny {
            reasons: vec![Reason {
                code,
                basis: None,
                condition: None,
            }],
            withheld: indices(asked)
                .into_iter()
                .map(|category| Withheld { category, reason: code })
                .collect(),
            rulebook_hash: Arc::from(rulebook.hash.as_str()),
        })
    }

    /// Whether a pull denied only because it was not reviewed would be decided by its holder's
    /// reviewer: some basis covering it waits for the review.
    pub fn awaits_review(&self) -> bool {
        matches!(self, Decision::Deny { reasons, .. } if reasons.iter().any(|r| r.code == ReasonCode::ReviewRequired))
    }

    /// Whether it permits.
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit { .. })
    }

    /// Released categories (empty for a denial).
    pub fn released(&self) -> &[usize] {
        match self {
            Decision::Permit { released, .. } => released,
            Decision::Deny { .. } => &[],
        }
    }

    /// Withheld categories.
    pub fn withheld(&self) -> &[Withheld] {
        match self {
            Decision::Permit { withheld, .. } | Decision::Deny { withheld, .. } => withheld,
        }
    }

    /// The bases that carried a permit.
    pub fn bases(&self) -> &[usize] {
        match self {
            Decision::Permit { bases, .. } => bases,
            Decision::Deny { .. } => &[],
        }
    }

    /// The obligations of a permit.
    pub fn obligations(&self) -> &[Obligation] {
        match self {
            Decision::Permit { obligations, .. } => obligations,
            Decision::Deny { .. } => &[],
        }
    }

    /// The reasons of a denial.
    pub fn reasons(&self) -> &[Reason] {
        match self {
            Decision::Deny { reasons, .. } => reasons,
            Decision::Permit { .. } => &[],
        }
    }

    /// The rulebook hash.
    pub fn rulebook_hash(&self) -> &str {
        match self {
            Decision::Permit { rulebook_hash, .. } | Decision::Deny { rulebook_hash, .. } => rulebook_hash,
        }
    }
}

/// What happened to one basis (for `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BasisOutcome {
    /// Marked inactive (e.g. status open).
    Inactive,
    /// Not in force on the date.
    NotInForce,
    /// Limited to cantons the discloser is not in.
    OtherCanton,
    /// Does not cover the trigger.
    TriggerNotCovered,
    /// Does not permit the purpose.
    PurposeNotPermitted,
    /// A pull the holder has not reviewed, and the basis has no automatic answer.
    ReviewRequired,
    /// A condition failed.
    ConditionsFailed,
    /// Holds but permits none of the categories asked for.
    NothingToRelease,
    /// Holds and releases these categories.
    Releases(Vec<usize>),
}

/// How one condition was evaluated (for `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionTrace {
    /// The condition (index into `Rulebook::conditions`).
    pub condition: usize,
    /// Whether it held.
    pub held: bool,
    /// Where the answer came from.
    pub source: Source,
}

/// Where a condition's answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The number of persons and whether a case reference was given.
    Persons(u32, bool),
    /// A fact as given (or absent), by index into `Rulebook::facts`.
    Fact(usize),
    /// The conditions it combines, each with whether it held.
    Combined(Vec<(usize, bool)>),
    /// A federal duty to disclose (index into `Rulebook::federal_duties`), or none found.
    Duty(Option<usize>),
    /// A rulebook attestation, with its citation.
    Attestation(InstitutionId, String),
    /// A consent, by reference.
    Consent(Option<String>),
    /// The basis's own restriction.
    Restriction,
    /// No cantonal party, nothing to release.
    NotApplicable,
}

/// One basis examined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasisTrace {
    /// Basis index.
    pub basis: usize,
    /// Its conditions, as evaluated.
    pub conditions: Vec<ConditionTrace>,
    /// What came of it.
    pub outcome: BasisOutcome,
}

/// A decision with the reasoning behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// Every basis examined, in rulebook order.
    pub trace: Vec<BasisTrace>,
}

/// Decides `transfer` against `rulebook`.
pub fn decide(rulebook: &Rulebook, transfer: &Transfer) -> Result<Decision, InputError> {
    evaluate(rulebook, transfer, None)
}

/// How many hidden facts [`disclosure`] enumerates; beyond, it answers `Undisclosed`.
pub const MAX_HIDDEN_FACTS: usize = 12;

/// What the caller may be told of a decision that facts it may not learn could change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disclosure {
    /// The decision is the same whatever the hidden facts: it can be told as decided.
    Decided,
    /// Denied whatever the hidden facts, for reasons that would hold even if every hidden
    /// fact held: this denial (never naming a hidden fact as failed) can be told.
    DeniedAnyway(Decision),
    /// Permitted for some values of the hidden facts and denied for others (or more than
    /// [`MAX_HIDDEN_FACTS`] of them): the outcome itself would tell them.
    Undisclosed,
}

/// What the decision on `transfer` would tell a caller who may not learn the facts
/// `hidden` (indices into `Rulebook::facts`): the engine decides every combination of
/// their values, whatever they are in `transfer`. The gateway asks it about the facts
/// only the reference directory knows (whether the recipient serves the person) before
/// it answers a sender: a decision that turns on them would tell the sender a
/// relationship it may not learn.
pub fn disclosure(rulebook: &Rulebook, transfer: &Transfer, hidden: &[usize]) -> Result<Disclosure, InputError> {
    if hidden.is_empty() {
        return Ok(Disclosure::Decided);
    }
    if hidden.len() > MAX_HIDDEN_FACTS {
        return Ok(Disclosure::Undisclosed);
    }
    let (mut same, mut permits) = (true, false);
    let mut last = None;
    let mut probe = transfer.clone();
    // The last combination sets every hidden fact: its denial names none of them as failed.
    for combination in 0u32..(1 << hidden.len()) {
        for (bit, fact) in hidden.iter().enumerate() {
            probe.facts.set(*fact, combination & (1 << bit) != 0);
        }
        let decision = decide(rulebook, &probe)?;
        permits |= decision.is_permit();
        same &= last.as_ref().is_none_or(|l| *l == decision);
        last = Some(decision);
    }
    Ok(match (same, permits, last) {
        (true, _, _) => Disclosure::Decided,
        (false, false, Some(denied)) => Disclosure::DeniedAnyway(denied),
        _ => Disclosure::Undisclosed,
    })
}

/// Decides and records the reasoning.
pub fn evaluate_traced(rulebook: &Rulebook, transfer: &Transfer) -> Result<Evaluation, InputError> {
    let mut trace = Vec::new();
    let decision = evaluate(rulebook, transfer, Some(&mut trace))?;
    Ok(Evaluation { decision, trace })
}

fn mask_of(rulebook: &Rulebook, ids: &[String]) -> Result<u64, InputError> {
    ids.iter().try_fold(0u64, |m, id| {
        rulebook
            .category_index(id)
            .map(|i| m | (1 << i))
            .ok_or_else(|| InputError::UnknownCategory(id.clone()))
    })
}

fn indices(mask: u64) -> Vec<usize> {
    (0..64).filter(|i| mask & (1u64 << i) != 0).collect()
}

/// Categories a consent-based basis may release: union over the consents
/// that cover the purpose (and are written, if required).
fn consent_mask(rulebook: &Rulebook, t: &Transfer, written: bool) -> (u64, Option<String>) {
    let mut mask = 0;
    let mut reference = None;
    for c in &t.consents {
        if (written && !c.written) || !c.purposes.contains(&t.purpose) {
            continue;
        }
        // Unknown category ids in a consent cover nothing (they are not in the rulebook).
        let m = c
            .categories
            .iter()
            .filter_map(|id| rulebook.category_index(id))
            .fold(0u64, |m, i| m | (1 << i));
        if m != 0 && reference.is_none() {
            reference = Some(c.reference.clone());
        }
        mask |= m;
    }
    (mask, reference)
}

/// Whether the stand-in fact `i` (scenarios, `explain`) is given.
fn standin(t: &Transfer, i: Option<usize>) -> bool {
    i.is_some_and(|i| t.facts.get(i))
}

fn standin_source(i: Option<usize>) -> Source {
    i.map_or(Source::NotApplicable, Source::Fact)
}

fn reciprocity(rulebook: &Rulebook, t: &Transfer) -> (bool, Source) {
    if let Some(facts) = t.to.id.as_ref().and_then(|id| rulebook.institutions.get(id))
        && let Some(att) = facts
            .reciprocity
            .iter()
            .find(|r| r.grants_to.contains(&t.from.kind) && r.since <= t.date)
    {
        return (true, Source::Attestation(facts.id.clone(), att.citation.clone()));
    }
    let i = rulebook.standins.reciprocity;
    (standin(t, i), standin_source(i))
}

/// A party's formal-law release from secrecy in force on the transfer's date.
fn release(rulebook: &Rulebook, t: &Transfer, party: &Party) -> (bool, Source) {
    let facts = party.id.as_ref().and_then(|id| rulebook.institutions.get(id));
    match facts.and_then(|f| f.cantonal_release.iter().find(|r| r.since <= t.date).map(|r| (f, r))) {
        Some((f, r)) => (true, Source::Attestation(f.id.clone(), r.citation.clone())),
        None => {
            let i = rulebook.standins.release;
            (standin(t, i), standin_source(i))
        }
    }
}

/// Every party under cantonal data-protection law must have a cantonal formal-law release.
fn cantonal_release(rulebook: &Rulebook, t: &Transfer) -> (bool, Source) {
    let mut source = Source::NotApplicable;
    for party in [&t.from, &t.to] {
        let regime = party
            .id
            .as_ref()
            .and_then(|id| rulebook.institutions.get(id))
            .map(|f| f.regime)
            .or_else(|| rulebook.types.get(&party.kind).map(|i| i.regime));
        if regime != Some(Regime::Cantonal) {
            continue;
        }
        let (held, from) = release(rulebook, t, party);
        if !held {
            return (false, from);
        }
        source = from;
    }
    (true, source)
}

/// A fact the rulebook attests about the discloser (`[[institution.status]]`), in force on the date.
pub(crate) fn status(rulebook: &Rulebook, from: &Party, fact: usize, date: Date) -> Option<Source> {
    let facts = from.id.as_ref().and_then(|id| rulebook.institutions.get(id))?;
    let st = facts.status.iter().find(|s| s.fact == fact && s.since <= date)?;
    Some(Source::Attestation(facts.id.clone(), st.citation.clone()))
}

/// The transfer as the holder's review would weigh it: answered, with every fact the
/// discloser attests granted (built once per unreviewed pull, not once per basis).
fn as_reviewed(rulebook: &Rulebook, t: &Transfer) -> Transfer {
    let mut reviewed = t.clone();
    reviewed.unreviewed_pull = false;
    for (f, fact) in rulebook.facts.iter().enumerate() {
        if fact.attested_by == crate::vocab::Attester::Discloser {
            reviewed.facts.set(f, true);
        }
    }
    reviewed
}

/// The discloser's canton: as the transfer gives it, else as the rulebook records it.
pub(crate) fn discloser_canton<'a>(rulebook: &'a Rulebook, from: &'a Party) -> Option<&'a str> {
    from.canton.as_deref().or_else(|| {
        from.id
            .as_ref()
            .and_then(|id| rulebook.institutions.get(id))
            .and_then(|f| f.canton.as_deref())
    })
}

struct BasisResult {
    held: bool,
    allowed: u64,
    consent_cut: u64,
    medical_cut: u64,
    sensitive_cut: u64,
}

/// Evaluates the conditions of one basis, narrowing the categories it may release.
struct ConditionEval<'a> {
    rulebook: &'a Rulebook,
    t: &'a Transfer,
    allowed: u64,
    consent_cut: u64,
    medical_cut: u64,
    sensitive_cut: u64,
}

impl ConditionEval<'_> {
    fn category_mask(&self, pick: impl Fn(&crate::rulebook::Category) -> bool) -> u64 {
        self.rulebook
            .categories
            .iter()
            .enumerate()
            .filter(|(_, c)| pick(c))
            .fold(0u64, |m, (i, _)| m | (1 << i))
    }

    fn condition(&mut self, i: usize) -> (bool, Source) {
        let Some(decl) = self.rulebook.conditions.get(i) else {
            return (false, Source::NotApplicable);
        };
        match &decl.rule {
            Rule::Fact(f) => match status(self.rulebook, &self.t.from, *f, self.t.date) {
                Some(source) => (true, source),
                None => (self.t.facts.get(*f), Source::Fact(*f)),
            },
            Rule::Builtin(b) => self.builtin(*b),
            Rule::AllOf(list) => {
                let results: Vec<(usize, bool)> = list.iter().map(|j| (*j, self.condition(*j).0)).collect();
                (results.iter().all(|(_, held)| *held), Source::Combined(results))
            }
            Rule::AnyOf(list) => {
                let results: Vec<(usize, bool)> = list.iter().map(|j| (*j, self.condition(*j).0)).collect();
                (results.iter().any(|(_, held)| *held), Source::Combined(results))
            }
        }
    }

    fn builtin(&mut self, b: Builtin) -> (bool, Source) {
        let t = self.t;
        match b {
            Builtin::CaseByCase => {
                let referenced = t.case_reference.as_deref().is_some_and(|r| !r.trim().is_empty());
                (t.persons == 1 && referenced, Source::Persons(t.persons, referenced))
            }
            Builtin::Consent | Builtin::WrittenConsent => {
                let (mask, reference) = consent_mask(self.rulebook, t, b == Builtin::WrittenConsent);
                self.consent_cut |= self.allowed & !mask;
                self.allowed &= mask;
                (self.allowed != 0, Source::Consent(reference))
            }
            Builtin::Reciprocity => reciprocity(self.rulebook, t),
            Builtin::CantonalRelease => cantonal_release(self.rulebook, t),
            Builtin::RecipientFormalRelease => release(self.rulebook, t, &t.to),
            Builtin::FederalDuty => {
                let duty = self.rulebook.federal_duties.iter().position(|d| {
                    d.from.contains(&t.from.kind)
                        && d.to.contains(&t.to.kind)
                        && (d.triggers.is_empty() || t.trigger.is_none_or(|tr| d.triggers.contains(&tr)))
                        && d.facts.iter().all(|f| t.facts.get(*f))
                });
                (duty.is_some(), Source::Duty(duty))
            }
            Builtin::NoMedicalData => {
                let medical = self.category_mask(|c| c.medical);
                self.medical_cut |= self.allowed & medical;
                self.allowed &= !medical;
                (true, Source::Restriction)
            }
            Builtin::NoSensitiveData => {
                let sensitive = self.category_mask(|c| c.sensitivity == crate::vocab::Sensitivity::Sensitive);
                self.sensitive_cut |= self.allowed & sensitive;
                self.allowed &= !sensitive;
                (true, Source::Restriction)
            }
        }
    }
}

fn evaluate_basis(
    rulebook: &Rulebook,
    b: &Basis,
    t: &Transfer,
    asked: u64,
    trace: Option<&mut Vec<ConditionTrace>>,
) -> (BasisResult, Vec<usize>) {
    let mut eval = ConditionEval {
        rulebook,
        t,
        allowed: b.category_mask & asked,
        consent_cut: 0,
        medical_cut: 0,
        sensitive_cut: 0,
    };
    let mut failed = Vec::new();
    let mut traces = Vec::new();
    for &condition in &b.conditions {
        let (held, source) = eval.condition(condition);
        if !held {
            failed.push(condition);
        }
        if trace.is_some() {
            traces.push(ConditionTrace {
                condition,
                held,
                source,
            });
        }
    }
    if let Some(out) = trace {
        *out = traces;
    }
    (
        BasisResult {
            held: failed.is_empty(),
            allowed: eval.allowed,
            consent_cut: eval.consent_cut,
            medical_cut: eval.medical_cut,
            sensitive_cut: eval.sensitive_cut,
        },
        failed,
    )
}

fn evaluate(
    rulebook: &Rulebook,
    t: &Transfer,
    mut trace: Option<&mut Vec<BasisTrace>>,
) -> Result<Decision, InputError> {
    if t.categories.is_empty() {
        return Err(InputError::NoCategories);
    }
    if t.persons == 0 {
        return Err(InputError::NoPersons);
    }
    let asked = mask_of(rulebook, &t.categories)?;
    let purpose = rulebook
        .purpose_index(&t.purpose)
        .ok_or_else(|| InputError::UnknownPurpose(t.purpose.clone()))?;
    let hash: Arc<str> = Arc::from(rulebook.hash.as_str());
    let candidates = rulebook
        .by_pair
        .get(&(t.from.kind, t.to.kind))
        .map_or(&[][..], Vec::as_slice);

    let (mut released, mut consent_cut, mut medical_cut, mut sensitive_cut) = (0u64, 0u64, 0u64, 0u64);
    let canton = discloser_canton(rulebook, &t.from);
    let mut holding = Vec::new();
    let mut reasons = Vec::new();
    let mut trigger_misses = Vec::new();
    let want_trace = trace.is_some();
    let reviewed = t.unreviewed_pull.then(|| as_reviewed(rulebook, t));
    for &i in candidates {
        let Some(b) = rulebook.bases.get(i) else { continue };
        let mut record = |outcome: BasisOutcome, conditions: Vec<ConditionTrace>| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push(BasisTrace {
                    basis: i,
                    conditions,
                    outcome,
                });
            }
        };
        if !b.active {
            record(BasisOutcome::Inactive, Vec::new());
            continue;
        }
        if !b.in_force(t.date) {
            record(BasisOutcome::NotInForce, Vec::new());
            continue;
        }
        if !b.cantons.is_empty() && !canton.is_some_and(|c| b.cantons.iter().any(|x| x == c)) {
            record(BasisOutcome::OtherCanton, Vec::new());
            continue;
        }
        if t.trigger.is_some_and(|tr| !b.triggers.contains(&tr)) {
            trigger_misses.push(i);
            record(BasisOutcome::TriggerNotCovered, Vec::new());
            continue;
        }
        if b.purpose_mask & (1 << purpose) == 0 {
            reasons.push(Reason {
                code: ReasonCode::PurposeNotPermitted,
                basis: Some(i),
                condition: None,
            });
            record(BasisOutcome::PurposeNotPermitted, Vec::new());
            continue;
        }
        if let Some(reviewed) = &reviewed
            && !b.automatic_answer
        {
            // The holder weighs only what its review could permit: the basis must hold with
            // every fact the discloser attests granted, and release something asked for.
            // Anything else is denied now, with the conditions no review can meet.
            let mut conditions = Vec::new();
            let (result, failed) = evaluate_basis(rulebook, b, reviewed, asked, want_trace.then_some(&mut conditions));
            if result.held && result.allowed != 0 {
                reasons.push(Reason {
                    code: ReasonCode::ReviewRequired,
                    basis: Some(i),
                    condition: None,
                });
                record(BasisOutcome::ReviewRequired, Vec::new());
            } else if result.held {
                reasons.push(Reason {
                    code: ReasonCode::CategoryNotPermitted,
                    basis: Some(i),
                    condition: None,
                });
                record(BasisOutcome::NothingToRelease, conditions);
            } else {
                reasons.extend(failed.into_iter().map(|c| Reason {
                    code: ReasonCode::ConditionNotMet,
                    basis: Some(i),
                    condition: Some(c),
                }));
                record(BasisOutcome::ConditionsFailed, conditions);
            }
            continue;
        }
        let mut conditions = Vec::new();
        let (result, failed) = evaluate_basis(rulebook, b, t, asked, want_trace.then_some(&mut conditions));
        if !result.held {
            reasons.extend(failed.into_iter().map(|c| Reason {
                code: ReasonCode::ConditionNotMet,
                basis: Some(i),
                condition: Some(c),
            }));
            record(BasisOutcome::ConditionsFailed, conditions);
            continue;
        }
        consent_cut |= result.consent_cut;
        medical_cut |= result.medical_cut;
        sensitive_cut |= result.sensitive_cut;
        if result.allowed == 0 {
            reasons.push(Reason {
                code: ReasonCode::CategoryNotPermitted,
                basis: Some(i),
                condition: None,
            });
            record(BasisOutcome::NothingToRelease, conditions);
            continue;
        }
        released |= result.allowed;
        holding.push(i);
        record(BasisOutcome::Releases(indices(result.allowed)), conditions);
    }

    let withheld: Vec<Withheld> = indices(asked & !released)
        .into_iter()
        .map(|category| {
            let bit = 1u64 << category;
            let reason = if medical_cut & bit != 0 {
                ReasonCode::MedicalDataExcluded
            } else if sensitive_cut & bit != 0 {
                ReasonCode::SensitiveDataExcluded
            } else if consent_cut & bit != 0 {
                ReasonCode::ConsentDoesNotCover
            } else if released == 0 {
                ReasonCode::NoBasisHolds
            } else {
                ReasonCode::CategoryNotPermitted
            };
            Withheld { category, reason }
        })
        .collect();

    if released == 0 {
        if reasons.is_empty() {
            reasons = if trigger_misses.is_empty() {
                vec![Reason {
                    code: ReasonCode::NoMatchingBasis,
                    basis: None,
                    condition: None,
                }]
            } else {
                trigger_misses
                    .into_iter()
                    .map(|i| Reason {
                        code: ReasonCode::TriggerNotCovered,
                        basis: Some(i),
                        condition: None,
                    })
                    .collect()
            };
        }
        return Ok(Decision::Deny {
            reasons,
            withheld,
            rulebook_hash: hash,
        });
    }

    let mut obligations: Vec<Obligation> = Vec::new();
    for &i in &holding {
        let Some(b) = rulebook.bases.get(i) else { continue };
        for spec in &b.obligations {
            if obligations.iter().any(|o| o.kind == spec.kind && o.owner == spec.owner) {
                continue;
            }
            let party = match spec.owner {
                Owner::Sender => t.from.clone(),
                Owner::Recipient => t.to.clone(),
            };
            obligations.push(Obligation {
                kind: spec.kind,
                owner: spec.owner,
                party,
                due_days: spec.due_days,
                basis: i,
            });
        }
    }
    Ok(Decision::Permit {
        bases: holding,
        released: indices(released),
        withheld,
        obligations,
        rulebook_hash: hash,
    })
}
