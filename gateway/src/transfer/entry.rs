//! Stage 5's input: the audit entry of a decided transfer, built in this one
//! place — metadata only: who, what, under which bases, what was released and
//! withheld, the consents relied on, the person encrypted for the DPO context,
//! hashes of the sealed payload and of the written request.

use cii_kit::auth::Caller;
use cii_proto::common as common_pb;

use super::{Decided, Sealed};

/// The exchange type a pull's entry names: the holder answers with this message.
const PULL_ANSWER_TYPE: &str = "cii.exchange.v1.DataResponse";

/// The entry of a decided transfer (permitted or denied).
pub(super) fn transfer_entry(caller: &Caller, decided: &Decided<'_>, sealed: &Sealed) -> cii_audit::Entry {
    let checked = decided.checked();
    let permit = decided.decision.is_permit();
    let wire = &decided.wire;
    cii_audit::Entry {
        kind: if permit {
            cii_audit::EntryKind::TransferPermitted
        } else {
            cii_audit::EntryKind::TransferDenied
        } as i32,
        time_micros: cii_types::time::micros(decided.consulted.now),
        transfer_id: checked.id.to_string(),
        sender: decided.consulted.from.id.to_string(),
        recipient: decided.consulted.to.id.to_string(),
        acting_user: caller.acting_user(),
        exchange_type: exchange_type(checked),
        purpose: checked.purpose.clone(),
        trigger: checked.trigger.to_string(),
        bases: wire.bases.iter().map(|b| b.id.clone()).collect(),
        released: wire.released_categories.clone(),
        withheld: wire
            .withheld
            .iter()
            .map(|w| format!("{}:{}", w.category, w.code))
            .collect(),
        reasons: wire.reasons.iter().map(reason).collect(),
        consents: if permit {
            decided.consents.iter().map(|c| c.reference.clone()).collect()
        } else {
            Vec::new()
        },
        attestations: checked.attested.clone(),
        obligations: wire.obligations.iter().map(obligation).collect(),
        audit_pseudonym: decided
            .consulted
            .audit_person
            .as_ref()
            .map(cii_pseudonym::wire::to_bytes)
            .unwrap_or_default(),
        sealed_sha256: sealed.sealed_sha256.clone(),
        written_request_sha256: checked.written_request_sha256.clone(),
        rulebook_hash: decided.decision.rulebook_hash().to_owned(),
        ..replay_part(decided)
    }
}

/// What a replay of the decision under another rulebook needs, and who reviewed a pull.
fn replay_part(decided: &Decided<'_>) -> cii_audit::Entry {
    let checked = decided.checked();
    let review = checked.review.as_ref();
    cii_audit::Entry {
        reviewer: review.map(|r| r.reviewer.clone()).unwrap_or_default(),
        reviewer_attestations: review.map(|r| r.facts().to_vec()).unwrap_or_default(),
        case_reference: checked.case_reference.clone().unwrap_or_default(),
        network_facts: decided.network_facts.clone(),
        consents_found: decided.consents_found.clone(),
        replay_format: 1,
        list_audit_pseudonyms: decided
            .consulted
            .audit_list
            .iter()
            .map(cii_pseudonym::wire::to_bytes)
            .collect(),
        detail: review
            .and_then(|r| match &r.verdict {
                super::review::Verdict::Refused(reason) => Some(format!("review=refused reason={reason}")),
                super::review::Verdict::TimedOut => Some("review=timed-out".to_owned()),
                super::review::Verdict::Approved(_) => None,
            })
            .unwrap_or_default(),
        ..cii_audit::Entry::default()
    }
}

/// The part of a transfer's entry that the request gives, checked as the log will check it
/// before anything is consulted or used up: a one-off consent marked used for a transfer whose
/// entry the log then refused would be spent for nothing.
pub(super) fn request_part(caller: &Caller, checked: &super::Checked<'_>) -> cii_audit::Entry {
    cii_audit::Entry {
        kind: cii_audit::EntryKind::TransferPermitted as i32,
        transfer_id: checked.id.to_string(),
        sender: caller.institution.id.to_string(),
        recipient: checked.counterparty.id.to_string(),
        acting_user: caller.acting_user(),
        exchange_type: exchange_type(checked),
        purpose: checked.purpose.clone(),
        trigger: checked.trigger.to_string(),
        attestations: checked.attested.clone(),
        case_reference: checked.case_reference.clone().unwrap_or_default(),
        ..cii_audit::Entry::default()
    }
}

/// The message type sent (push) or answered (pull): a DPO selects entries by it.
fn exchange_type(checked: &super::Checked<'_>) -> String {
    match &checked.direction {
        super::check::Direction::Push { .. } => {
            let type_url = checked.sealed.as_ref().map_or("", |s| s.type_url.as_str());
            type_url.rsplit('/').next().unwrap_or(type_url).to_owned()
        }
        super::check::Direction::Pull => PULL_ANSWER_TYPE.to_owned(),
    }
}

fn reason(r: &common_pb::Reason) -> String {
    match &r.basis {
        Some(b) => format!("{}:{}", r.code, b.id),
        None => r.code.clone(),
    }
}

fn obligation(o: &common_pb::Obligation) -> String {
    let due = o.due.map(|d| d.seconds).unwrap_or_default();
    format!("{}:{}:{due}", o.kind, o.owner)
}
