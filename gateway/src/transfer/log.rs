//! Stage 5, logged: log before deliver. The decided transfer is recorded
//! *held* (with its encoded entry and the log's size) before the entry is
//! appended, and released with the receipt after; the outbox never sends a
//! held row. A crash in between leaves a held transfer that the next start (or
//! the sender's retry) completes with exactly one entry (`recovery`).

pub(crate) use crate::wire::receipt_to_wire;
use cii_kit::auth::Caller;
use cii_kit::metrics::Metrics;
use cii_proto::common as common_pb;
use cii_proto::gateway as pb;
use cii_proto::node as node_pb;
use cii_types::TransferState;
use prost::Message;

use super::{Decided, Sealed, TransferError, Transfers};
use crate::store::TransferRecord;

/// Stage 5: the transfer's entry is durable and its record released.
#[derive(Debug)]
pub struct Logged {
    /// The answer, with its receipt.
    pub(super) response: pb::TransferResponse,
    pub(super) permit: bool,
}

impl Transfers {
    /// Stage 5: held record → durable entry → released record.
    pub(super) async fn log(
        &self,
        caller: &Caller,
        decided: &Decided<'_>,
        sealed: Sealed,
        entry: cii_audit::Entry,
    ) -> Result<Logged, TransferError> {
        let permit = decided.decision.is_permit();
        let checked = decided.checked();
        let state = if permit {
            TransferState::Queued
        } else {
            TransferState::Denied
        };
        // The sender is told what it may learn (`undisclosed`); the record keeps that answer.
        let told = self.told(decided);
        let response = pb::TransferResponse {
            transfer_id: checked.id.to_string(),
            decision: Some(told.decision),
            state: told.state,
            entry_withheld: told.entry_withheld,
            ..pb::TransferResponse::default()
        };
        let consents = consents_relied_on(decided);
        let caller_id = caller.institution.id.to_string();
        // An entry the log would refuse is refused before anything is recorded: a held row
        // whose entry can never be appended would block its pair's deliveries for good.
        cii_audit::entry::check(&entry).map_err(cii_audit::LogError::from)?;
        self.store
            .record(&TransferRecord {
                caller: &caller_id,
                transfer_id: checked.id.as_str(),
                acting_user: &caller.acting_user(),
                request_sha256: &checked.request_sha256,
                counterparty: checked.counterparty.id.as_str(),
                pull: checked.is_pull(),
                response: &response.encode_to_vec(),
                state,
                delivery: sealed.delivery.as_ref().map(Message::encode_to_vec).as_deref(),
                obligations: &decided.obligations,
                consents: &consents,
                now_micros: cii_types::time::micros(decided.consulted.now),
                entry: &cii_audit::entry::encode(&entry),
                log_size_before: self.audit.checkpoint().0,
            })
            .await
            .map_err(not_recorded)?;
        let receipt = self.audit.append(entry).await.inspect_err(|e| {
            tracing::error!(code = e.code(), error = %e, "transfer not logged");
        })?;
        let receipt = receipt_to_wire(&receipt);
        let response = self
            .release(&caller_id, checked.id.as_str(), response, sealed.delivery, receipt)
            .await?;
        self.count(decided);
        let (from, to) = (&decided.consulted.from.id, &decided.consulted.to.id);
        tracing::info!(transfer_id = %checked.id, sender = %from, recipient = %to, permit, "transfer decided");
        Ok(Logged { response, permit })
    }

    /// Counts the decision, and a permit under each of its bases between its two institutions
    /// (the volume of individual cases the DPOs watch).
    fn count(&self, decided: &Decided<'_>) {
        let permit = decided.decision.is_permit();
        Metrics::count(&self.metrics.decisions, if permit { "PERMIT" } else { "DENY" });
        let (from, to) = (&decided.consulted.from.id, &decided.consulted.to.id);
        for basis in &decided.wire.bases {
            let labels = cii_kit::metrics::BasisLabels {
                basis: basis.id.clone(),
                sender: from.to_string(),
                recipient: to.to_string(),
            };
            self.metrics.permits_by_basis.get_or_create(&labels).inc();
        }
    }

    /// Adds the receipt to the response and the delivery, and releases the
    /// transfer for delivery.
    pub(super) async fn release(
        &self,
        caller: &str,
        transfer_id: &str,
        mut response: pb::TransferResponse,
        mut delivery: Option<node_pb::Delivery>,
        receipt: common_pb::Receipt,
    ) -> Result<pb::TransferResponse, TransferError> {
        let mut told = receipt.clone();
        if response.entry_withheld {
            // The leaf hash and the proof still show an entry at that index.
            told.entry.clear();
        }
        response.receipt = Some(told);
        if let Some(d) = delivery.as_mut() {
            d.receipt = Some(receipt);
        }
        let delivery = delivery.map(|d| d.encode_to_vec());
        self.store
            .release(caller, transfer_id, &response.encode_to_vec(), delivery.as_deref())
            .await?;
        Ok(response)
    }
}

/// The consents a permitted push relied on: their recipients are told when they change.
fn consents_relied_on(decided: &Decided<'_>) -> Vec<String> {
    if !decided.decision.is_permit() || decided.checked().is_pull() {
        return Vec::new();
    }
    let lookup = &decided.consulted.lookup;
    lookup
        .consents
        .iter()
        .filter_map(|c| c.consent.as_ref().map(|r| r.consent_id.clone()))
        .collect()
}

/// Why a decided transfer was not recorded. A duplicate was decided by another call meanwhile
/// (on another replica: this one's in-flight claim cannot see it); nothing was logged here,
/// and the sender's retry gets the recorded outcome.
fn not_recorded(e: crate::store::StoreError) -> TransferError {
    match e {
        crate::store::StoreError::Duplicate => TransferError::InProgress,
        e => e.into(),
    }
}
