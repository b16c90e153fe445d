//! Every situation a decision can depend on, enumerated exhaustively: what `cii policy prove`
//! checks invariants over and `cii policy diff` compares two rulebooks over.
//!
//! # How the space is bounded
//! A decision reads nothing but the transfer (see [`mod@crate::decide`]), so the situations are
//! the transfers, made finite by what the engine can tell apart:
//! - the discloser and the recipient: every institution type of the rulebooks (known by type
//!   only, the discloser in each canton a basis is limited to and in none) and every
//!   institution the rulebooks describe (their attestations, regime and canton; as discloser
//!   in each canton a basis is limited to and in one no basis names, since the engine reads
//!   the canton the registry gives);
//! - every trigger, every purpose;
//! - the day: today, and each later day on which a basis enters into force or lapses or an
//!   attestation starts (decisions are constant between two such days);
//! - the facts *relevant* to that discloser, recipient, trigger, purpose and day — those read
//!   by the conditions of the bases the engine goes on to evaluate (active, in force, in the
//!   discloser's canton, covering trigger and purpose), the stand-ins of the attestations they
//!   need and the facts of the federal duties — in every combination; a fact no such basis
//!   reads is never looked at, so its value cannot change the decision; a fact the rulebooks
//!   attest of the discloser (`[[institution.status]]`) holds whatever is given, so it is
//!   taken as holding;
//! - no consent, an oral one, a written one (each covering the categories and the purpose),
//!   when such a basis rests on consent; an individual case (one person, a case reference) or
//!   not, when such a basis needs `case_by_case`; a pull its holder has reviewed or not;
//! - each category: one evaluation asks for every category at once and reads, from the trace,
//!   which bases release which category. The engine decides categories independently (a
//!   basis releases a category asked for if it holds and keeps it through its filters), so
//!   this is what asking for that category alone would release; the tests check it, and the
//!   reduction above, against brute force.

use std::collections::{BTreeMap, BTreeSet};

use cii_types::InstitutionType;
use time::Date;

use crate::decide::{BasisOutcome, ConsentFound, Facts, Party, Transfer, discloser_canton, evaluate_traced, status};
use crate::rulebook::{Basis, Rule, Rulebook};
use crate::vocab::{Builtin, Trigger};

/// The consent the registry would find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Consent {
    /// None.
    None,
    /// An oral (or unspecified) consent covering the categories and the purpose.
    Oral,
    /// A written consent covering the categories and the purpose.
    Written,
}

/// One situation: a transfer without its categories (every category is asked at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation {
    /// The discloser.
    pub from: Party,
    /// The recipient.
    pub to: Party,
    /// The trigger.
    pub trigger: Trigger,
    /// The purpose (id).
    pub purpose: String,
    /// The relevant facts, each with its value (by id); the others are absent, hence false.
    pub facts: BTreeMap<String, bool>,
    /// The consent found.
    pub consent: Consent,
    /// One person and a case reference (`case_by_case` holds), or several persons.
    pub individual_case: bool,
    /// A pull its holder has not reviewed.
    pub pull: bool,
    /// The day.
    pub date: Date,
}

/// What a situation releases: each category released, with the bases that release it.
pub type Releases = BTreeMap<String, Vec<String>>;

impl Situation {
    /// The transfer asking for `categories` in this situation, for `rb` (facts by its indices;
    /// facts it does not declare are left out). `None` if `rb` does not know the purpose.
    pub fn transfer(&self, rb: &Rulebook, categories: &[String]) -> Option<Transfer> {
        rb.purpose_index(&self.purpose)?;
        let mut facts = Facts::default();
        for (id, value) in &self.facts {
            if let Some(i) = rb.fact_index(id) {
                facts.set(i, *value);
            }
        }
        let consents = match self.consent {
            Consent::None => Vec::new(),
            Consent::Oral | Consent::Written => vec![ConsentFound {
                reference: "situation".to_owned(),
                categories: categories.to_vec(),
                purposes: vec![self.purpose.clone()],
                written: self.consent == Consent::Written,
            }],
        };
        Some(Transfer {
            from: self.from.clone(),
            to: self.to.clone(),
            trigger: Some(self.trigger),
            purpose: self.purpose.clone(),
            categories: categories.to_vec(),
            persons: if self.individual_case { 1 } else { 2 },
            case_reference: Some("situation".to_owned()),
            unreviewed_pull: self.pull,
            facts,
            consents,
            date: self.date,
        })
    }

    /// What `rb` releases in this situation, category by category, asking for every category
    /// it declares (a rulebook that does not know the purpose releases nothing).
    pub fn releases(&self, rb: &Rulebook) -> Releases {
        let categories: Vec<String> = rb.categories.iter().map(|c| c.id.clone()).collect();
        let mut out = Releases::new();
        let Some(transfer) = self.transfer(rb, &categories) else {
            return out;
        };
        let Ok(evaluation) = evaluate_traced(rb, &transfer) else {
            return out;
        };
        for basis in &evaluation.trace {
            let BasisOutcome::Releases(released) = &basis.outcome else {
                continue;
            };
            let Some(id) = rb.bases.get(basis.basis).map(|b| b.id.clone()) else {
                continue;
            };
            for category in released.iter().filter_map(|c| rb.categories.get(*c)) {
                out.entry(category.id.clone()).or_default().push(id.clone());
            }
        }
        out
    }
}

/// The parties of the rulebooks: each type and each institution described. A discloser is
/// also taken in each canton a basis is limited to and in none: the engine reads the canton
/// the transfer gives (the registry's), which for an institution may differ from the one the
/// rulebook records.
fn parties(rbs: &[&Rulebook], as_discloser: bool) -> Vec<Party> {
    let mut cantons: BTreeSet<Option<String>> = BTreeSet::from([None]);
    if as_discloser {
        for rb in rbs {
            for b in &rb.bases {
                cantons.extend(b.cantons.iter().cloned().map(Some));
            }
        }
    }
    let types: BTreeSet<InstitutionType> = rbs.iter().flat_map(|rb| rb.types.keys().copied()).collect();
    let mut out = Vec::new();
    for kind in types {
        for canton in &cantons {
            out.push(Party {
                kind,
                id: None,
                canton: canton.clone(),
            });
        }
    }
    // An institution without a canton given is in the rulebook's: its variants are the cantons
    // bases name and one they do not.
    let mut theirs: BTreeSet<Option<String>> = cantons.iter().flatten().cloned().map(Some).collect();
    theirs.insert(Some(other_canton(rbs)));
    let mut seen = BTreeSet::new();
    for rb in rbs {
        for (id, facts) in &rb.institutions {
            if !seen.insert(id.clone()) {
                continue;
            }
            if as_discloser {
                for canton in &theirs {
                    out.push(Party::member(facts.kind, id.clone(), canton.clone()));
                }
            } else {
                out.push(Party::member(facts.kind, id.clone(), facts.canton.clone()));
            }
        }
    }
    out
}

/// A canton no basis of `rbs` is limited to: it stands for all of them.
pub fn other_canton(rbs: &[&Rulebook]) -> String {
    const CANTONS: [&str; 26] = [
        "ZH", "BE", "LU", "UR", "SZ", "OW", "NW", "GL", "ZG", "FR", "SO", "BS", "BL", "SH", "AR", "AI", "SG", "GR",
        "AG", "TG", "TI", "VD", "VS", "NE", "GE", "JU",
    ];
    let named = |c: &str| {
        rbs.iter()
            .any(|rb| rb.bases.iter().any(|b| b.cantons.iter().any(|x| x == c)))
    };
    CANTONS
        .iter()
        .find(|c| !named(c))
        .map_or_else(|| "XX".to_owned(), |c| (*c).to_owned())
}

/// Today, and each later day on which some basis or attestation changes.
pub fn days(rbs: &[&Rulebook], today: Date) -> Vec<Date> {
    let mut days = BTreeSet::from([today]);
    for rb in rbs {
        for b in &rb.bases {
            days.insert(b.effective_from);
            if let Some(next) = b.effective_to.and_then(Date::next_day) {
                days.insert(next);
            }
        }
        for f in rb.institutions.values() {
            days.extend(f.reciprocity.iter().map(|r| r.since));
            days.extend(f.cantonal_release.iter().map(|r| r.since));
            days.extend(f.status.iter().map(|s| s.since));
        }
    }
    days.into_iter().filter(|d| *d >= today).collect()
}

/// What the bases the engine evaluates in a situation read.
#[derive(Debug, Default)]
struct Reads {
    facts: BTreeSet<String>,
    consent: bool,
    case: bool,
    any_basis: bool,
}

/// The bases `rb` goes on to evaluate (past the filters that read no fact).
fn evaluated<'a>(
    rb: &'a Rulebook,
    from: &Party,
    to: &Party,
    trigger: Trigger,
    purpose: usize,
    date: Date,
) -> Vec<&'a Basis> {
    let canton = discloser_canton(rb, from);
    rb.by_pair
        .get(&(from.kind, to.kind))
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|i| rb.bases.get(*i))
        .filter(|b| {
            b.active
                && b.in_force(date)
                && (b.cantons.is_empty() || canton.is_some_and(|c| b.cantons.iter().any(|x| x == c)))
                && b.triggers.contains(&trigger)
                && b.purpose_mask & (1u64 << purpose) != 0
        })
        .collect()
}

fn reads_of_condition(rb: &Rulebook, i: usize, reads: &mut Reads) {
    let fact = |reads: &mut Reads, f: Option<usize>| {
        if let Some(decl) = f.and_then(|f| rb.facts.get(f)) {
            reads.facts.insert(decl.id.clone());
        }
    };
    match rb.conditions.get(i).map(|c| &c.rule) {
        Some(Rule::Fact(f)) => fact(reads, Some(*f)),
        Some(Rule::AllOf(list) | Rule::AnyOf(list)) => {
            for j in list {
                reads_of_condition(rb, *j, reads);
            }
        }
        Some(Rule::Builtin(b)) => match b {
            Builtin::CaseByCase => reads.case = true,
            Builtin::Consent | Builtin::WrittenConsent => reads.consent = true,
            Builtin::Reciprocity => fact(reads, rb.standins.reciprocity),
            Builtin::CantonalRelease | Builtin::RecipientFormalRelease => fact(reads, rb.standins.release),
            Builtin::FederalDuty => {
                for f in rb.federal_duties.iter().flat_map(|d| &d.facts) {
                    fact(reads, Some(*f));
                }
            }
            Builtin::NoMedicalData | Builtin::NoSensitiveData => {}
        },
        None => {}
    }
}

/// How many facts one situation may turn on before the space is refused as too large to go
/// through (2^20 combinations of them, times consents, cases and pulls).
pub const MAX_RELEVANT_FACTS: usize = 20;

/// The space is too large to go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{from} → {to}, {trigger}, {purpose}: the bases evaluated read {facts} facts (at most {MAX_RELEVANT_FACTS} are enumerated)"
)]
pub struct TooManyFacts {
    /// The discloser (type or id).
    pub from: String,
    /// The recipient (type or id).
    pub to: String,
    /// The trigger.
    pub trigger: Trigger,
    /// The purpose.
    pub purpose: String,
    /// How many facts.
    pub facts: usize,
}

/// A party as scenarios name it: its registry id, else its type.
pub fn party_name(party: &Party) -> String {
    party
        .id
        .as_ref()
        .map_or_else(|| party.kind.to_string(), ToString::to_string)
}

/// Calls `visit` with every situation of the space of `rbs` (see the module's documentation),
/// from `today` on. One rulebook for `prove`, two for `diff` (the union of both spaces).
pub fn for_each(rbs: &[&Rulebook], today: Date, visit: impl FnMut(&Situation)) -> Result<(), TooManyFacts> {
    for_each_with(rbs, today, &|_| Extra::default(), visit)
}

/// What a statement about the situations names, to be enumerated even where no basis reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// Facts.
    pub facts: Vec<String>,
    /// Whether the consent states are.
    pub consent: bool,
}

/// [`for_each`], also enumerating, wherever a basis is evaluated, what `extra` says a
/// statement about that discloser, recipient, trigger, purpose and day names — facts no basis
/// may read, the consent states (elsewhere nothing is released, whatever they are).
pub fn for_each_with(
    rbs: &[&Rulebook],
    today: Date,
    extra: &dyn Fn(&Situation) -> Extra,
    mut visit: impl FnMut(&Situation),
) -> Result<(), TooManyFacts> {
    walk(rbs, today, extra, |situation, reads| match reads {
        None => visit(situation),
        Some(reads) => combinations(reads, situation, &mut visit),
    })
}

/// How many situations [`for_each_with`] would visit (counted, not decided: a rulebook whose
/// space is too large to go through is refused before the work starts).
pub fn count(rbs: &[&Rulebook], today: Date, extra: &dyn Fn(&Situation) -> Extra) -> Result<u64, TooManyFacts> {
    let mut total = 0u64;
    walk(rbs, today, extra, |_, reads| {
        let n = reads.map_or(1, |r| {
            (1u64 << r.facts.len()) * if r.consent { 3 } else { 1 } * if r.case { 2 } else { 1 } * 2
        });
        total = total.saturating_add(n);
    })?;
    Ok(total)
}

/// Whether every rulebook attests fact `id` of the discloser on `date` (`[[institution.status]]`):
/// the engine then takes it as holding whatever the transfer says.
fn attested(rbs: &[&Rulebook], from: &Party, id: &str, date: Date) -> bool {
    rbs.iter()
        .all(|rb| rb.fact_index(id).is_some_and(|f| status(rb, from, f, date).is_some()))
}

/// Goes through every (discloser, recipient, trigger, purpose, day) with what the bases the
/// engine evaluates there read (`None`: no basis is evaluated, nothing else is read). The
/// situation passed carries the facts the discloser is attested fixed to true.
fn walk(
    rbs: &[&Rulebook],
    today: Date,
    extra: &dyn Fn(&Situation) -> Extra,
    mut each: impl FnMut(&mut Situation, Option<&Reads>),
) -> Result<(), TooManyFacts> {
    let (senders, recipients) = (parties(rbs, true), parties(rbs, false));
    let purposes: BTreeSet<String> = rbs
        .iter()
        .flat_map(|rb| rb.purposes.iter().map(|p| p.id.clone()))
        .collect();
    for date in days(rbs, today) {
        for from in &senders {
            for to in &recipients {
                for &trigger in Trigger::ALL {
                    for purpose in &purposes {
                        let mut reads = Reads::default();
                        for rb in rbs {
                            let Some(p) = rb.purpose_index(purpose) else { continue };
                            for b in evaluated(rb, from, to, trigger, p, date) {
                                reads.any_basis = true;
                                for c in &b.conditions {
                                    reads_of_condition(rb, *c, &mut reads);
                                }
                            }
                        }
                        let mut situation = Situation {
                            from: from.clone(),
                            to: to.clone(),
                            trigger,
                            purpose: purpose.clone(),
                            facts: BTreeMap::new(),
                            consent: Consent::None,
                            individual_case: true,
                            pull: false,
                            date,
                        };
                        if !reads.any_basis {
                            each(&mut situation, None);
                            continue;
                        }
                        let named = extra(&situation);
                        reads.facts.extend(named.facts);
                        reads.consent |= named.consent;
                        // A fact the rulebooks attest of this discloser holds whatever is given.
                        let fixed: Vec<String> = reads
                            .facts
                            .iter()
                            .filter(|f| from.id.is_some() && attested(rbs, from, f, date))
                            .cloned()
                            .collect();
                        for f in fixed {
                            reads.facts.remove(&f);
                            situation.facts.insert(f, true);
                        }
                        if reads.facts.len() > MAX_RELEVANT_FACTS {
                            return Err(TooManyFacts {
                                from: party_name(from),
                                to: party_name(to),
                                trigger,
                                purpose: purpose.clone(),
                                facts: reads.facts.len(),
                            });
                        }
                        each(&mut situation, Some(&reads));
                    }
                }
            }
        }
    }
    Ok(())
}

fn combinations(reads: &Reads, situation: &mut Situation, visit: &mut impl FnMut(&Situation)) {
    let facts: Vec<&String> = reads.facts.iter().collect();
    let consents: &[Consent] = if reads.consent {
        &[Consent::None, Consent::Oral, Consent::Written]
    } else {
        &[Consent::None]
    };
    let cases: &[bool] = if reads.case { &[true, false] } else { &[true] };
    for bits in 0u64..(1u64 << facts.len()) {
        for (i, f) in facts.iter().enumerate() {
            situation.facts.insert((*f).clone(), bits & (1 << i) != 0);
        }
        for &consent in consents {
            for &individual_case in cases {
                for pull in [false, true] {
                    situation.consent = consent;
                    situation.individual_case = individual_case;
                    situation.pull = pull;
                    visit(situation);
                }
            }
        }
    }
}
