//! What changed between two rulebooks: the bases themselves, and every
//! release that comes out differently.
//!
//! Releases are compared over every situation either rulebook can tell apart (the union of
//! their spaces, see [`crate::space`]): every discloser, recipient, trigger, purpose, day and
//! category, every combination of the facts the bases involved read, each consent state, an
//! individual case or not, a reviewed pull or not. A change that opens a transfer only when
//! a fact is false is seen, as is one that lets a basis carry without the consent it needed.

use time::Date;

use crate::rulebook::{Basis, Rulebook};
use crate::space::{self, Consent, Situation, TooManyFacts, party_name};

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A basis only in the new rulebook.
    Added(String),
    /// A basis only in the old rulebook.
    Removed(String),
    /// A basis in both, with these fields changed.
    Modified(String, Vec<&'static str>),
    /// An institution's legal facts (attestations, regime, canton) added, removed or changed.
    Institution(String, &'static str),
    /// A basis whose obligations the new rulebook drops or delays: `kind/owner` each.
    ObligationsLoosened(String, Vec<String>),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(id) => write!(f, "+ basis {id}"),
            Change::Removed(id) => write!(f, "- basis {id}"),
            Change::Modified(id, fields) => write!(f, "~ basis {id}: {}", fields.join(", ")),
            Change::Institution(id, what) => write!(f, "~ institution {id}: {what}"),
            Change::ObligationsLoosened(id, lost) => {
                write!(f, "~ basis {id}: obligations dropped or delayed: {}", lost.join(", "))
            }
        }
    }
}

fn names(rb: &Rulebook, idx: &[usize], of_categories: bool) -> Vec<String> {
    idx.iter()
        .filter_map(|i| {
            if of_categories {
                rb.categories.get(*i).map(|c| c.id.clone())
            } else {
                rb.purposes.get(*i).map(|p| p.id.clone())
            }
        })
        .collect()
}

fn changed_fields(old_rb: &Rulebook, a: &Basis, new_rb: &Rulebook, b: &Basis) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    if a.citation != b.citation {
        fields.push("citation");
    }
    if a.status != b.status {
        fields.push("status");
    }
    if a.active != b.active {
        fields.push("active");
    }
    if a.effective_from != b.effective_from || a.effective_to != b.effective_to {
        fields.push("effective dates");
    }
    if a.from != b.from || a.to != b.to || a.mutual != b.mutual {
        fields.push("institution types");
    }
    if a.triggers != b.triggers {
        fields.push("triggers");
    }
    if sorted(names(old_rb, &a.purposes, false)) != sorted(names(new_rb, &b.purposes, false)) {
        fields.push("purposes");
    }
    if sorted(names(old_rb, &a.categories, true)) != sorted(names(new_rb, &b.categories, true)) {
        fields.push("categories");
    }
    let condition_ids = |rb: &Rulebook, v: &[usize]| -> Vec<String> {
        v.iter()
            .filter_map(|i| rb.conditions.get(*i))
            .map(|c| c.id.clone())
            .collect()
    };
    if condition_ids(old_rb, &a.conditions) != condition_ids(new_rb, &b.conditions) {
        fields.push("conditions");
    }
    let obligations = |rb: &Rulebook, v: &[crate::rulebook::ObligationSpec]| -> Vec<String> {
        v.iter()
            .map(|o| {
                let kind = rb.obligation_kinds.get(o.kind).map_or("?", |k| k.id.as_str());
                format!("{kind}/{}/{}", o.owner, o.due_days)
            })
            .collect()
    };
    if obligations(old_rb, &a.obligations) != obligations(new_rb, &b.obligations) {
        fields.push("obligations");
    }
    if a.cantons != b.cantons {
        fields.push("cantons");
    }
    fields
}

/// The obligations of `a` (old) that `b` (new) drops or gives more days: `kind/owner`.
fn loosened(old_rb: &Rulebook, a: &Basis, new_rb: &Rulebook, b: &Basis) -> Vec<String> {
    let kind = |rb: &Rulebook, k: usize| rb.obligation_kinds.get(k).map_or("?", |o| o.id.as_str()).to_owned();
    a.obligations
        .iter()
        .filter(|o| {
            !b.obligations
                .iter()
                .any(|n| kind(new_rb, n.kind) == kind(old_rb, o.kind) && n.owner == o.owner && n.due_days <= o.due_days)
        })
        .map(|o| format!("{}/{}", kind(old_rb, o.kind), o.owner))
        .collect()
}

/// A category whose release changes in one situation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionChange {
    /// The situation.
    pub situation: Situation,
    /// The category asked for.
    pub category: String,
    /// The bases that release it under the old rulebook (empty: withheld).
    pub old: Vec<String>,
    /// The bases that release it under the new rulebook (empty: withheld).
    pub new: Vec<String>,
}

impl DecisionChange {
    /// Whether the new rulebook releases what the old one withheld.
    pub fn widens(&self) -> bool {
        self.old.is_empty() && !self.new.is_empty()
    }

    /// The bases it is grouped under: those that release under the new rulebook, else the old.
    pub fn group(&self) -> String {
        if self.new.is_empty() { &self.old } else { &self.new }.join(" + ")
    }
}

impl std::fmt::Display for DecisionChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.situation;
        let side = |bases: &[String]| {
            if bases.is_empty() {
                "withheld".to_owned()
            } else {
                format!("released ({})", bases.join(", "))
            }
        };
        let mut given: Vec<String> = s
            .facts
            .iter()
            .map(|(f, v)| if *v { f.clone() } else { format!("!{f}") })
            .collect();
        given.push(
            match s.consent {
                Consent::None => "no consent",
                Consent::Oral => "oral consent",
                Consent::Written => "written consent",
            }
            .to_owned(),
        );
        if !s.individual_case {
            given.push("several persons".to_owned());
        }
        if s.pull {
            given.push("unreviewed pull".to_owned());
        }
        let canton = s.from.canton.as_ref().map_or_else(String::new, |c| format!(" ({c})"));
        write!(
            f,
            "≠ {}{canton} → {}, {}, {}, {} [{}; {}]: {} → {}",
            party_name(&s.from),
            party_name(&s.to),
            s.trigger,
            s.purpose,
            self.category,
            given.join(", "),
            crate::date_text(s.date),
            side(&self.old),
            side(&self.new)
        )
    }
}

/// What changed between two rulebooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The bases and institutions added, removed or modified.
    pub bases: Vec<Change>,
    /// Every situation and category whose release (or the bases releasing it) changes.
    pub decisions: Vec<DecisionChange>,
    /// Situations decided (by each rulebook).
    pub situations: u64,
}

impl Diff {
    /// The changes that widen: a category released where it was withheld, an obligation
    /// dropped or delayed.
    pub fn widenings(&self) -> usize {
        self.decisions.iter().filter(|c| c.widens()).count()
            + self
                .bases
                .iter()
                .filter(|c| matches!(c, Change::ObligationsLoosened(..)))
                .count()
    }

    /// The decision changes grouped by the bases that release.
    pub fn by_basis(&self) -> std::collections::BTreeMap<String, Vec<&DecisionChange>> {
        let mut groups: std::collections::BTreeMap<String, Vec<&DecisionChange>> = Default::default();
        for c in &self.decisions {
            groups.entry(c.group()).or_default().push(c);
        }
        groups
    }
}

/// Every difference between `old` and `new`, from `today` on: the bases, then every
/// situation of the union of both rulebooks' spaces (see [`crate::space`]) in which a
/// category is released differently.
pub fn diff(old: &Rulebook, new: &Rulebook, today: Date) -> Result<Diff, TooManyFacts> {
    let mut bases = Vec::new();
    for b in &new.bases {
        match old.basis(&b.id) {
            None => bases.push(Change::Added(b.id.clone())),
            Some(a) => {
                let fields = changed_fields(old, a, new, b);
                if !fields.is_empty() {
                    bases.push(Change::Modified(b.id.clone(), fields));
                }
            }
        }
    }
    for a in &old.bases {
        match new.basis(&a.id) {
            None => bases.push(Change::Removed(a.id.clone())),
            Some(b) => {
                let lost = loosened(old, a, new, b);
                if !lost.is_empty() {
                    bases.push(Change::ObligationsLoosened(a.id.clone(), lost));
                }
            }
        }
    }
    for (id, facts) in &old.institutions {
        let what = match new.institutions.get(id) {
            None => "removed",
            Some(f) if f != facts => "attestations, regime or canton changed",
            Some(_) => continue,
        };
        bases.push(Change::Institution(id.to_string(), what));
    }
    for id in new.institutions.keys().filter(|id| !old.institutions.contains_key(*id)) {
        bases.push(Change::Institution(id.to_string(), "added"));
    }
    let (mut decisions, mut situations) = (Vec::new(), 0u64);
    space::for_each(&[old, new], today, |s| {
        situations += 1;
        let (before, after) = (s.releases(old), s.releases(new));
        if before == after {
            return;
        }
        let categories: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for category in categories {
            let (o, n) = (before.get(category), after.get(category));
            if o != n {
                decisions.push(DecisionChange {
                    situation: s.clone(),
                    category: category.clone(),
                    old: o.cloned().unwrap_or_default(),
                    new: n.cloned().unwrap_or_default(),
                });
            }
        }
    })?;
    Ok(Diff {
        bases,
        decisions,
        situations,
    })
}
