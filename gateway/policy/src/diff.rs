//! What changed between two rulebooks: the bases themselves, and every
//! decision that comes out differently.
//!
//! Decisions are compared over the whole grid of sender type × recipient
//! type × trigger × purpose, asking for every category both rulebooks know,
//! with every fact true and a written consent covering everything — the most
//! permissive situation, so that any basis that could carry is seen.

use time::Date;

use cii_types::InstitutionType;

use crate::decide::{ConsentFound, Decision, Facts, Party, Transfer, decide};
use crate::rulebook::{Basis, Rulebook};
use crate::vocab::Trigger;

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A basis only in the new rulebook.
    Added(String),
    /// A basis only in the old rulebook.
    Removed(String),
    /// A basis in both, with these fields changed.
    Modified(String, Vec<&'static str>),
    /// A decision that differs: the situation, then old and new summaries.
    Decision(String, String, String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(id) => write!(f, "+ basis {id}"),
            Change::Removed(id) => write!(f, "- basis {id}"),
            Change::Modified(id, fields) => write!(f, "~ basis {id}: {}", fields.join(", ")),
            Change::Decision(what, old, new) => write!(f, "≠ {what}: {old} → {new}"),
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

fn summary(rb: &Rulebook, d: &Decision) -> String {
    match d {
        Decision::Permit { bases, released, .. } => {
            let bases: Vec<&str> = bases
                .iter()
                .filter_map(|i| rb.bases.get(*i))
                .map(|b| b.id.as_str())
                .collect();
            format!(
                "PERMIT [{}] ({})",
                names(rb, released, true).join(", "),
                bases.join(", ")
            )
        }
        Decision::Deny { .. } => "DENY".to_owned(),
    }
}

/// Every difference between `old` and `new`, as of `date`.
pub fn diff(old: &Rulebook, new: &Rulebook, date: Date) -> Vec<Change> {
    let mut changes = Vec::new();
    for b in &new.bases {
        match old.basis(&b.id) {
            None => changes.push(Change::Added(b.id.clone())),
            Some(a) => {
                let fields = changed_fields(old, a, new, b);
                if !fields.is_empty() {
                    changes.push(Change::Modified(b.id.clone(), fields));
                }
            }
        }
    }
    for a in &old.bases {
        if new.basis(&a.id).is_none() {
            changes.push(Change::Removed(a.id.clone()));
        }
    }
    let categories: Vec<String> = old
        .categories
        .iter()
        .filter(|c| new.category_index(&c.id).is_some())
        .map(|c| c.id.clone())
        .collect();
    let mut purposes: Vec<String> = old.purposes.iter().chain(&new.purposes).map(|p| p.id.clone()).collect();
    purposes.sort();
    purposes.dedup();
    // Every fact of each rulebook given (facts are declared per rulebook, so each has its own set).
    let all_facts = |rb: &Rulebook| {
        let mut facts = Facts::default();
        (0..rb.facts.len()).for_each(|i| facts.set(i, true));
        facts
    };
    let (old_facts, new_facts) = (all_facts(old), all_facts(new));
    let types: std::collections::BTreeSet<InstitutionType> =
        old.types.keys().chain(new.types.keys()).copied().collect();
    for &from in &types {
        for &to in &types {
            for trigger in Trigger::ALL {
                for purpose in &purposes {
                    let mut transfer = Transfer {
                        unreviewed_pull: false,
                        from: Party::of_type(from),
                        to: Party::of_type(to),
                        trigger: Some(*trigger),
                        purpose: purpose.clone(),
                        categories: categories.clone(),
                        persons: 1,
                        case_reference: Some("diff".to_owned()),
                        facts: old_facts,
                        consents: vec![ConsentFound {
                            reference: "diff".to_owned(),
                            categories: categories.clone(),
                            purposes: vec![purpose.clone()],
                            written: true,
                        }],
                        date,
                    };
                    let mut summarize = |rb: &Rulebook, facts: Facts| {
                        transfer.facts = facts;
                        match decide(rb, &transfer) {
                            Ok(d) => summary(rb, &d),
                            Err(e) => format!("not decidable ({e})"),
                        }
                    };
                    let (a, b) = (summarize(old, old_facts), summarize(new, new_facts));
                    if a != b {
                        changes.push(Change::Decision(format!("{from} → {to}, {trigger}, {purpose}"), a, b));
                    }
                }
            }
        }
    }
    changes
}
