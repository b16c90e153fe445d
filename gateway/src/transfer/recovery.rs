//! The same transfer id again, and transfers held by a crash.
//!
//! Idempotency: (sender, transfer id) → SHA-256 of the request bytes, the user
//! who sent it and the recorded response; the same bytes from the same user
//! answer the recorded outcome (a permitted pull: the first answer's sealed
//! bytes while kept), anything else `TRANSFER_ID_REUSED`. A transfer
//! recorded held but not known to be logged is completed — its entry found in
//! the log from the size it had before, or appended now — exactly one entry
//! either way.

use std::collections::BTreeSet;

use cii_kit::auth::Caller;
use cii_proto::common as common_pb;
use cii_proto::gateway as pb;
use cii_proto::node as node_pb;
use prost::Message;

use super::log::receipt_to_wire;
use super::{Checked, TransferError, Transfers};
use crate::store::{Held, TransferRow};
use cii_types::{TransferId, TransferState};

impl Transfers {
    /// The same id again: the recorded outcome (and for a permitted pull, the
    /// data again); other bytes under the same id are refused.
    pub(super) async fn replay(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
    ) -> Result<Option<pb::TransferResponse>, TransferError> {
        let caller_id = caller.institution.id.to_string();
        let Some(row) = self.store.transfer(&caller_id, checked.id.as_str()).await? else {
            return Ok(None);
        };
        if row.request_sha256 != checked.request_sha256 {
            return Err(TransferError::IdReused);
        }
        // An id belongs to the user who first sent it: another user's replay would put
        // the wrong user on record (rows of earlier releases name nobody).
        if !row.acting_user.is_empty() && row.acting_user != caller.acting_user() {
            return Err(TransferError::IdReused);
        }
        let (answer, answer_until, created, answered) = (
            row.answer.clone(),
            row.answer_until_micros,
            row.created_micros,
            row.state == TransferState::Delivered,
        );
        let response = if row.held {
            // Decided but its entry not known to be logged (the append failed or the
            // gateway stopped): complete it now, exactly one entry either way.
            let held = self
                .store
                .held()
                .await?
                .into_iter()
                .find(|h| h.caller == caller_id && h.transfer_id == checked.id.as_str())
                .ok_or(TransferError::InProgress)?;
            let response = self.complete(held).await?;
            self.nodes.wake.notify_one();
            response
        } else {
            let mut response = recorded(row)?;
            if let Some(receipt) = response.receipt.as_mut().filter(|_| !response.entry_withheld) {
                // Recorded by an earlier release, whose receipts did not carry their entry.
                crate::delivery::fill_entry(&self.audit_store, receipt).await;
            }
            response
        };
        let permitted = response
            .decision
            .as_ref()
            .is_some_and(|d| d.outcome == common_pb::decision::Outcome::Permit as i32);
        if checked.is_pull() && permitted {
            let kept = Kept {
                answer,
                answer_until,
                created,
                answered,
            };
            return self.replay_pull(caller, checked, kept, response).await.map(Some);
        }
        Ok(Some(response))
    }

    /// A permitted pull again.
    ///
    /// INVARIANT (a-replay-adds-nothing): the first answer's sealed bytes while they are
    /// kept; the holder is asked again only if it never answered, and only within the same
    /// time; after that, new data needs a new transfer and a new decision.
    async fn replay_pull(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
        kept: Kept,
        mut response: pb::TransferResponse,
    ) -> Result<pb::TransferResponse, TransferError> {
        let now = cii_types::time::micros(self.clock.now());
        if let Some(answer) = kept.answer.filter(|_| kept.answer_until > now) {
            return pb::TransferResponse::decode(answer.as_slice())
                .map_err(|_| TransferError::StoreCorrupt("a kept pull answer does not decode"));
        }
        let keep = i64::try_from(self.pull_answer_keep.as_micros()).unwrap_or(i64::MAX);
        if kept.answered || now.saturating_sub(kept.created) >= keep {
            return Err(TransferError::PullAnswerGone);
        }
        let released: BTreeSet<String> = response
            .decision
            .as_ref()
            .map(|d| d.released_categories.iter().cloned().collect())
            .unwrap_or_default();
        self.provide(caller, checked, &released, &mut response).await?;
        Ok(response)
    }

    /// Completes every held transfer nobody is deciding now: at start (after a crash), then
    /// periodically ([`sweep_held`]: an append that failed, or a transfer a gateway that lost its
    /// lease recorded, is completed without waiting for its sender's retry, and no longer holds
    /// back its pair's deliveries). A transfer being decided holds its in-flight slot and is
    /// skipped, so no entry is appended twice.
    pub async fn complete_all_held(&self) {
        let held = match self.store.held().await {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "held transfers not readable");
                return;
            }
        };
        for transfer in held {
            let id = transfer.transfer_id.clone();
            let Ok(transfer_id) = TransferId::parse(&id) else {
                tracing::error!("a held transfer's id does not parse");
                continue;
            };
            let Ok(_slot) = self.claim_key(transfer.caller.clone(), transfer_id) else {
                continue;
            };
            if let Err(e) = self.complete(transfer).await {
                tracing::error!(transfer_id = %id, code = e.code(), "held transfer not completed");
            }
        }
        self.nodes.wake.notify_one();
    }

    /// Completes a held transfer: finds its entry in the log (appended before a
    /// crash) or appends it now, then releases it. Exactly one entry either way.
    async fn complete(&self, held: Held) -> Result<pb::TransferResponse, TransferError> {
        let corrupt = || TransferError::StoreCorrupt("a held transfer does not decode");
        let entry = cii_audit::entry::decode(&held.entry).map_err(|_| corrupt())?;
        let response = pb::TransferResponse::decode(held.response.as_slice()).map_err(|_| corrupt())?;
        let delivery = match &held.delivery {
            Some(bytes) => Some(node_pb::Delivery::decode(bytes.as_slice()).map_err(|_| corrupt())?),
            None => None,
        };
        let receipt = match self.find_logged(&entry, held.log_size_before).await? {
            Some(index) => self.receipt_of(index, &entry).await?,
            None => receipt_to_wire(&self.audit.append(entry).await?),
        };
        tracing::info!(transfer_id = %held.transfer_id, audit_index = receipt.leaf_index, "held transfer completed");
        self.release(&held.caller, &held.transfer_id, response, delivery, receipt)
            .await
    }

    /// The receipt of `entry`, found at `index`, against the newest checkpoint (on a replica
    /// whose view of a shared log lags, once that view covers the entry).
    async fn receipt_of(&self, index: u64, entry: &cii_audit::Entry) -> Result<common_pb::Receipt, TransferError> {
        let mut sizes = self.audit.subscribe();
        let covered = tokio::time::timeout(COVERED_WAIT, async {
            sizes.wait_for(|size| *size > index).await.is_ok()
        })
        .await;
        if covered != Ok(true) {
            return Err(cii_audit::LogError::Closed.into());
        }
        let (size, note) = self.audit.checkpoint();
        let (_, leaf, proof) = self
            .audit
            .inclusion_proof(index, size)
            .await
            .map_err(|e| TransferError::AuditInconsistent(e.to_string()))?;
        Ok(common_pb::Receipt {
            leaf_index: index,
            leaf_hash: leaf.to_vec(),
            checkpoint: note,
            inclusion_proof: proof.iter().map(|h| h.to_vec()).collect(),
            entry: cii_audit::entry::encode(&cii_audit::Entry { index, ..entry.clone() }),
        })
    }

    /// The index of `entry` in the log at or after `from`, if it was appended.
    async fn find_logged(&self, entry: &cii_audit::Entry, from: u64) -> Result<Option<u64>, TransferError> {
        Ok(find_logged(&self.audit_store, entry, from).await?)
    }
}

/// How long a replica waits for its view of a shared log to cover an entry found in the store.
const COVERED_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The index of `entry` (whatever its index) in the log at or after `from`, if it was appended.
pub(crate) async fn find_logged(
    audit_store: &cii_audit::Store,
    entry: &cii_audit::Entry,
    from: u64,
) -> Result<Option<u64>, cii_audit::store::StoreError> {
    let mut next = from;
    loop {
        let batch = audit_store.entries(next, 1000).await.inspect_err(|e| {
            tracing::error!(error = %e, "audit store not readable");
        })?;
        let Some(last) = batch.last().map(|e| e.index) else {
            return Ok(None);
        };
        for stored in &batch {
            if let Some(Ok(mut logged)) = stored.readable().map(cii_audit::entry::decode) {
                logged.index = entry.index;
                if logged == *entry {
                    return Ok(Some(stored.index));
                }
            }
        }
        next = last + 1;
    }
}

/// The answer recorded for a transfer, with its current delivery state.
pub(crate) fn recorded(row: TransferRow) -> Result<pb::TransferResponse, TransferError> {
    let mut response = pb::TransferResponse::decode(row.response.as_slice())
        .map_err(|_| TransferError::StoreCorrupt("a recorded transfer does not decode"))?;
    super::undisclosed::as_told(&mut response, row.state.code(), row.attempts, row.last_error);
    Ok(response)
}

/// What the store keeps of a pull's answer.
struct Kept {
    /// The sealed answer, while kept.
    answer: Option<Vec<u8>>,
    answer_until: i64,
    /// When the pull was decided.
    created: i64,
    /// Whether the holder answered once.
    answered: bool,
}

/// Completes held transfers nobody is deciding every `interval`, until `stop` (a task of its own),
/// while this gateway sequences the log (`sequencing`); a replica that begins to sequence
/// completes them at once (those of the replica it took over from).
pub fn sweep_held(
    transfers: &std::sync::Arc<Transfers>,
    interval: std::time::Duration,
    (stop, sequencing): (&tokio::sync::watch::Receiver<bool>, &tokio::sync::watch::Receiver<bool>),
) {
    let (transfers, gate, sequencing) = (transfers.clone(), stop.clone(), sequencing.clone());
    let mut stop = stop.clone();
    let at_once = !*sequencing.borrow();
    let sweeping = async move {
        if at_once {
            transfers.complete_all_held().await;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            transfers.complete_all_held().await;
        }
    };
    drop(crate::lease::when_sequencing(sequencing, gate, sweeping));
}
