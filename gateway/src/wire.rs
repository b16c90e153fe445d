//! Domain → wire conversion of decisions (the one place it happens).

use cii_policy::decide::{Decision, Reason};
use cii_policy::explain::condition_label;
use cii_policy::{Lang, Rulebook};
use cii_proto::common as pb;

fn basis_ref(rb: &Rulebook, i: usize) -> Option<pb::BasisRef> {
    rb.bases.get(i).map(|b| pb::BasisRef {
        id: b.id.clone(),
        citation: Some(pb::Citation {
            fr: b.citation.fr.clone(),
            de: b.citation.de.clone(),
            it: b.citation.it.clone(),
        }),
    })
}

fn category_id(rb: &Rulebook, i: usize) -> String {
    rb.categories.get(i).map(|c| c.id.clone()).unwrap_or_default()
}

fn reason(rb: &Rulebook, r: &Reason) -> pb::Reason {
    let text = |lang| match r.condition {
        Some(c) => format!("{}: {}", r.code.as_str(), condition_label(rb, c, lang)),
        None => r.code.as_str().to_owned(),
    };
    pb::Reason {
        code: r.code.as_str().to_owned(),
        basis: r.basis.and_then(|i| basis_ref(rb, i)),
        category: String::new(),
        text_fr: text(Lang::Fr),
        text_de: text(Lang::De),
        text_en: text(Lang::En),
    }
}

/// The wire form of a decision.
pub fn decision(rb: &Rulebook, d: &Decision) -> pb::Decision {
    let withheld = d
        .withheld()
        .iter()
        .map(|w| pb::Reason {
            code: w.reason.as_str().to_owned(),
            basis: None,
            category: category_id(rb, w.category),
            text_fr: String::new(),
            text_de: String::new(),
            text_en: String::new(),
        })
        .collect();
    pb::Decision {
        outcome: if d.is_permit() {
            pb::decision::Outcome::Permit
        } else {
            pb::decision::Outcome::Deny
        } as i32,
        bases: d.bases().iter().filter_map(|i| basis_ref(rb, *i)).collect(),
        released_categories: d.released().iter().map(|i| category_id(rb, *i)).collect(),
        withheld,
        reasons: d.reasons().iter().map(|r| reason(rb, r)).collect(),
        // Obligations get their ids and due dates when the gateway tracks them (exchanges issue).
        obligations: d
            .obligations()
            .iter()
            .map(|o| pb::Obligation {
                id: String::new(),
                kind: rb
                    .obligation_kinds
                    .get(o.kind)
                    .map(|k| k.id.clone())
                    .unwrap_or_default(),
                owner: o
                    .party
                    .id
                    .as_ref()
                    .map_or_else(|| o.party.kind.to_string(), |id| id.to_string()),
                due: None,
                basis: basis_ref(rb, o.basis),
            })
            .collect(),
        rulebook_hash: d.rulebook_hash().to_owned(),
    }
}

/// A receipt in its wire form.
pub(crate) fn receipt_to_wire(r: &cii_audit::Receipt) -> pb::Receipt {
    pb::Receipt {
        leaf_index: r.index,
        leaf_hash: r.leaf_hash.to_vec(),
        checkpoint: r.checkpoint.clone(),
        inclusion_proof: r.inclusion_proof.iter().map(|h| h.to_vec()).collect(),
        entry: r.entry.clone(),
    }
}
