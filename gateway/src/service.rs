//! Handlers of `cii.gateway.v1.Gateway`.

use std::sync::Arc;
use std::time::Instant;

use cii_audit::Log;
use cii_kit::auth::caller;
use cii_kit::clock::Clock;
use cii_kit::grpc::error;
use cii_kit::metrics::Metrics;
use cii_proto::gateway::{self as pb, gateway_server::Gateway};
use cii_pseudonym::names::Party;
use tonic::{Code, Request, Response, Status};

use crate::rate_limit::RateLimit;
use crate::transfer::{Transfers, check_transfer_id, store_unavailable};

/// The gateway's rpc handlers.
#[derive(Debug)]
pub struct GatewayService {
    transfers: Arc<Transfers>,
    clock: Arc<dyn Clock>,
    pseudonyms: Arc<cii_pseudonym::gateway::Gateway>,
    audit: Log,
    enrolment_limit: RateLimit,
    metrics: Metrics,
}

impl GatewayService {
    pub fn new(
        transfers: Arc<Transfers>,
        clock: Arc<dyn Clock>,
        pseudonyms: Arc<cii_pseudonym::gateway::Gateway>,
        audit: Log,
        enrolment_limit: RateLimit,
        metrics: Metrics,
    ) -> GatewayService {
        GatewayService {
            transfers,
            clock,
            pseudonyms,
            audit,
            enrolment_limit,
            metrics,
        }
    }
}

/// A ciphertext field of a request, parsed; errors name the field.
pub(crate) fn ciphertext(
    field: &str,
    value: Option<&cii_proto::common::EncryptedPseudonym>,
) -> Result<cii_pseudonym::EncryptedPseudonym, Status> {
    let value = value.ok_or_else(|| {
        error(
            Code::InvalidArgument,
            "FIELD_REQUIRED",
            format!("{field} is required"),
            Some(field),
        )
    })?;
    let field = format!("{field}.ciphertext");
    cii_pseudonym::wire::pseudonym(&value.ciphertext)
        .map_err(|e| error(Code::InvalidArgument, e.code(), e.to_string(), Some(&field)))
}

pub(crate) fn receipt_to_wire(r: &cii_audit::Receipt) -> cii_proto::common::Receipt {
    cii_proto::common::Receipt {
        leaf_index: r.index,
        leaf_hash: r.leaf_hash.to_vec(),
        checkpoint: r.checkpoint.clone(),
        inclusion_proof: r.inclusion_proof.iter().map(|h| h.to_vec()).collect(),
    }
}

pub(crate) fn audit_unavailable(e: &cii_audit::LogError) -> Status {
    // Retryable: the caller may try again; nothing was handed out.
    error(
        Code::Unavailable,
        e.code(),
        "the audit log could not record the call; nothing was done, retry later",
        None,
    )
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = caller(&request)?;
        tracing::debug!(institution = %caller.institution.id, "who-am-i");
        Ok(Response::new(pb::WhoAmIResponse {
            institution_id: caller.institution.id.to_string(),
            institution_type: caller.institution.kind.to_string(),
            user: caller.user.subject.clone(),
            roles: caller.user.roles.iter().map(|r| r.to_string()).collect(),
            gateway_time: Some(crate::timestamp(self.clock.now())),
        }))
    }

    /// Origin domain → the caller's domain (from its certificate), plus the
    /// audit context; the audit entry is durable before the answer leaves.
    async fn enrol(&self, request: Request<pb::EnrolRequest>) -> Result<Response<pb::EnrolResponse>, Status> {
        let caller = caller(&request)?;
        let institution = caller.institution.id.clone();
        let user = caller.acting_user();
        let origin = ciphertext("origin", request.get_ref().origin.as_ref()).map_err(|s| self.metrics.refused(s))?;
        if let Err(wait) = self.enrolment_limit.take(&institution, Instant::now()) {
            tracing::warn!(%institution, "enrolment rate limit reached");
            return Err(self.metrics.refused(error(
                Code::ResourceExhausted,
                "ENROLMENT_RATE_LIMITED",
                format!(
                    "enrolment rate limit of {institution} reached; retry in {} ms",
                    wait.as_millis().max(1)
                ),
                None,
            )));
        }
        let caller_party = Party::Institution(institution.clone());
        let pseudonym = self.pseudonyms.enrol(&origin, &caller_party);
        let audit_pseudonym = self.pseudonyms.enrol(&origin, &Party::Audit);
        let entry = cii_audit::Entry {
            kind: cii_audit::EntryKind::Enrolment as i32,
            time_micros: crate::micros(self.clock.now()),
            sender: institution.to_string(),
            acting_user: user,
            audit_pseudonym: cii_pseudonym::wire::to_bytes(&audit_pseudonym),
            ..cii_audit::Entry::default()
        };
        let receipt = self.audit.append(entry).await.map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "enrolment not logged");
            self.metrics.refused(audit_unavailable(&e))
        })?;
        tracing::debug!(%institution, audit_index = receipt.index, "enrolled");
        Ok(Response::new(pb::EnrolResponse {
            pseudonym: Some(cii_proto::common::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&pseudonym),
            }),
            receipt: Some(receipt_to_wire(&receipt)),
        }))
    }

    async fn submit_transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::TransferResponse>, Status> {
        let caller = caller(&request)?;
        let response = self.transfers.submit(caller, request.get_ref()).await?;
        Ok(Response::new(response))
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::TransferResponse>, Status> {
        let caller = caller(&request)?;
        let id = &request.get_ref().transfer_id;
        check_transfer_id(id).map_err(|s| self.metrics.refused(s))?;
        let row = self
            .transfers
            .store
            .transfer(caller.institution.id.as_str(), id)
            .await
            .map_err(|e| store_unavailable(&e))?
            .ok_or_else(|| {
                self.metrics.refused(error(
                    Code::NotFound,
                    "TRANSFER_NOT_FOUND",
                    "no transfer of your institution has this id",
                    Some("transfer_id"),
                ))
            })?;
        let response = crate::transfer::recorded(row)?;
        Ok(Response::new(response))
    }

    async fn acknowledge_deliveries(
        &self,
        request: Request<pb::AcknowledgeDeliveriesRequest>,
    ) -> Result<Response<pb::AcknowledgeDeliveriesResponse>, Status> {
        let caller = caller(&request)?;
        let mut acknowledged = 0;
        for d in &request.get_ref().deliveries {
            check_transfer_id(&d.transfer_id).map_err(|s| self.metrics.refused(s))?;
            if self
                .transfers
                .store
                .acknowledge(
                    caller.institution.id.as_str(),
                    &d.sender,
                    &d.transfer_id,
                    pb::transfer_response::State::Acknowledged as i32,
                )
                .await
                .map_err(|e| store_unavailable(&e))?
            {
                acknowledged += 1;
            }
        }
        Ok(Response::new(pb::AcknowledgeDeliveriesResponse { acknowledged }))
    }

    async fn list_obligations(
        &self,
        request: Request<pb::ListObligationsRequest>,
    ) -> Result<Response<pb::ListObligationsResponse>, Status> {
        let caller = caller(&request)?;
        let now = crate::micros(self.clock.now());
        let rows = self
            .transfers
            .store
            .obligations(caller.institution.id.as_str(), request.get_ref().include_fulfilled)
            .await
            .map_err(|e| store_unavailable(&e))?;
        let obligations = rows.into_iter().map(|row| obligation_state(row, now)).collect();
        Ok(Response::new(pb::ListObligationsResponse { obligations }))
    }

    /// Marks an obligation of the caller's institution fulfilled; the audit
    /// entry is durable before the answer.
    async fn fulfil_obligation(
        &self,
        request: Request<pb::FulfilObligationRequest>,
    ) -> Result<Response<cii_proto::common::Obligation>, Status> {
        let caller = caller(&request)?;
        let pb::FulfilObligationRequest { obligation_id, note } = request.get_ref();
        // The note is logged: a reference into the institution's own systems, not free text.
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._:/-".contains(c);
        let digits: String = note.chars().filter(char::is_ascii_digit).collect();
        if note.len() > 64 || !note.chars().all(allowed) || (digits.len() == 13 && digits.starts_with("756")) {
            return Err(self.metrics.refused(error(
                Code::InvalidArgument,
                "NOTE_INVALID",
                "note is a reference in your own systems (e.g. a letter number): at most 64 characters of A–Z, a–z, 0–9, '.', '_', ':', '/', '-', and no AVS number",
                Some("note"),
            )));
        }
        let owner = caller.institution.id.as_str();
        let store = &self.transfers.store;
        let row = store
            .obligation(owner, obligation_id)
            .await
            .map_err(|e| store_unavailable(&e))?
            .ok_or_else(|| {
                self.metrics.refused(error(
                    Code::NotFound,
                    "OBLIGATION_NOT_FOUND",
                    "your institution has no obligation with this id",
                    Some("obligation_id"),
                ))
            })?;
        let wire = <cii_proto::common::Obligation as prost::Message>::decode(row.wire.as_slice()).map_err(|_| {
            error(
                Code::Internal,
                "GATEWAY_STORE",
                "a recorded obligation does not decode",
                None,
            )
        })?;
        if row.fulfilled_micros.is_some() {
            return Err(self.metrics.refused(error(
                Code::FailedPrecondition,
                "OBLIGATION_ALREADY_FULFILLED",
                "this obligation was already marked fulfilled",
                Some("obligation_id"),
            )));
        }
        let now = self.clock.now();
        let entry = cii_audit::Entry {
            kind: cii_audit::EntryKind::ObligationFulfilled as i32,
            time_micros: crate::micros(now),
            transfer_id: row.transfer_id.clone(),
            sender: row.sender.clone(),
            recipient: row.recipient.clone(),
            acting_user: caller.acting_user(),
            obligations: vec![format!("{}:{}", wire.kind, wire.id)],
            detail: note.clone(),
            ..cii_audit::Entry::default()
        };
        self.audit.append(entry).await.map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "obligation fulfilment not logged");
            self.metrics.refused(audit_unavailable(&e))
        })?;
        store
            .fulfil(owner, obligation_id, crate::micros(now))
            .await
            .map_err(|e| store_unavailable(&e))?;
        Ok(Response::new(wire))
    }
}

fn obligation_state(row: crate::store::ObligationRow, now_micros: i64) -> pb::ObligationState {
    let obligation = <cii_proto::common::Obligation as prost::Message>::decode(row.wire.as_slice()).ok();
    pb::ObligationState {
        obligation,
        transfer_id: row.transfer_id,
        sender: row.sender,
        recipient: row.recipient,
        fulfilled_at: row.fulfilled_micros.map(|m| prost_types::Timestamp {
            seconds: m.div_euclid(1_000_000),
            nanos: i32::try_from(m.rem_euclid(1_000_000) * 1000).unwrap_or(0),
        }),
        overdue: row.fulfilled_micros.is_none() && row.due_micros < now_micros,
    }
}
