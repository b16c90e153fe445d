//! The recorded transfer decisions of the audit log, as `cii_policy::replay` reads them: for
//! `Policy/Replay` (a jurist's own institution's decisions) and `cii policy replay` (a copy of
//! the log). The decision logic is the policy crate's; this reads and maps the entries.

use cii_audit::EntryKind;
use cii_audit::store::Body;
use cii_policy::replay::Recorded;

/// The answer a pull's entry names (the holder answered with it).
const PULL_ANSWER_TYPE: &str = "cii.exchange.v1.DataResponse";
/// Entries read at a time.
const PAGE: u32 = 10_000;

/// The transfer entries of `store` that retention left readable and `keep` accepts, in order.
pub async fn transfer_entries(
    store: &cii_audit::Store,
    keep: impl Fn(&cii_audit::Entry) -> bool,
) -> Result<Vec<(u64, cii_audit::Entry)>, ReadError> {
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let page = store.entries(from, PAGE).await?;
        let Some(last) = page.last().map(|e| e.index) else {
            break;
        };
        for stored in &page {
            if matches!(stored.body, Body::Expired { .. }) {
                continue;
            }
            let Some(body) = stored.readable() else { continue };
            let entry = cii_audit::entry::decode(body).map_err(|_| ReadError::Undecodable(stored.index))?;
            let transfer = [EntryKind::TransferPermitted as i32, EntryKind::TransferDenied as i32];
            if transfer.contains(&entry.kind) && keep(&entry) {
                out.push((stored.index, entry));
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
        from = last + 1;
    }
    Ok(out)
}

/// The log could not be read for a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store failed.
    #[error("the audit log could not be read: {0}")]
    Store(#[from] cii_audit::store::StoreError),
    /// An entry does not decode.
    #[error("entry #{0} does not decode")]
    Undecodable(u64),
}

/// What a transfer entry recorded, for a replay.
pub fn recorded(index: u64, e: &cii_audit::Entry) -> Recorded {
    Recorded {
        index,
        transfer_id: e.transfer_id.clone(),
        permitted: e.kind == EntryKind::TransferPermitted as i32,
        bases: e.bases.clone(),
        released: e.released.clone(),
        withheld: e.withheld.clone(),
        sender: e.sender.clone(),
        recipient: e.recipient.clone(),
        trigger: e.trigger.clone(),
        purpose: e.purpose.clone(),
        pull: e.exchange_type == PULL_ANSWER_TYPE,
        attestations: e.attestations.clone(),
        reviewer: e.reviewer.clone(),
        reviewer_attestations: e.reviewer_attestations.clone(),
        case_reference: e.case_reference.clone(),
        network_facts: e.network_facts.clone(),
        consents_found: e.consents_found.clone(),
        written_request: !e.written_request_sha256.is_empty(),
        date: cii_types::time::from_micros(e.time_micros).map(time::OffsetDateTime::date),
        replay_format: e.replay_format,
    }
}
