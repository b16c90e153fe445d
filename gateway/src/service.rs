//! Handlers of `cii.gateway.v1.Gateway`.

use std::sync::Arc;
use std::time::Instant;

use cii_audit::Log;
use cii_kit::auth::caller;
use cii_kit::clock::Clock;
use cii_proto::gateway::{self as pb, gateway_server::Gateway};
use cii_pseudonym::names::Party;
use cii_types::TransferId;
use tonic::{Request, Response, Status};

use crate::GatewayError;
use crate::store::Store;
use crate::transfer::{Transfers, ciphertext, receipt_to_wire};
use cii_kit::rate_limit::RateLimit;

/// The gateway's rpc handlers.
#[derive(Debug)]
pub struct GatewayService {
    transfers: Arc<Transfers>,
    store: Store,
    clock: Arc<dyn Clock>,
    pseudonyms: crate::pseudonyms::Pseudonyms,
    audit: Log,
    enrolment_limit: RateLimit,
}

impl GatewayService {
    pub fn new(
        transfers: Arc<Transfers>,
        store: Store,
        clock: Arc<dyn Clock>,
        pseudonyms: crate::pseudonyms::Pseudonyms,
        audit: Log,
        enrolment_limit: RateLimit,
    ) -> GatewayService {
        GatewayService {
            transfers,
            store,
            clock,
            pseudonyms,
            audit,
            enrolment_limit,
        }
    }
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
            gateway_time: Some(cii_types::time::timestamp(self.clock.now())),
        }))
    }

    /// Origin domain → the caller's domain (from its certificate), plus the
    /// audit context; the audit entry is durable before the answer leaves.
    async fn enrol(&self, request: Request<pb::EnrolRequest>) -> Result<Response<pb::EnrolResponse>, Status> {
        let caller = caller(&request)?;
        let institution = caller.institution.id.clone();
        let user = caller.acting_user();
        let origin = ciphertext("origin", request.get_ref().origin.as_ref()).map_err(GatewayError::from)?;
        if let Err(wait) = self.enrolment_limit.take(&institution, Instant::now()) {
            tracing::warn!(%institution, "enrolment rate limit reached");
            return Err(GatewayError::EnrolmentRateLimited {
                institution,
                wait_ms: wait.as_millis().max(1),
            }
            .into());
        }
        let caller_party = Party::Institution(institution.clone());
        let from = cii_pseudonym::shares::Source::node(None);
        let mut both = self
            .pseudonyms
            .pseudonyms(
                vec![(origin, from.clone(), caller_party), (origin, from, Party::Audit)],
                &crate::pseudonyms::of("enrolment", institution.as_str(), ""),
            )
            .await
            .map_err(GatewayError::from)?;
        let (Some(audit_pseudonym), Some(pseudonym)) = (both.pop(), both.pop()) else {
            return Err(GatewayError::from(crate::pseudonyms::PseudonymsError::Invalid(
                "too few results".to_owned(),
            ))
            .into());
        };
        let entry = cii_audit::Entry {
            kind: cii_audit::EntryKind::Enrolment as i32,
            time_micros: cii_types::time::micros(self.clock.now()),
            sender: institution.to_string(),
            acting_user: user,
            audit_pseudonym: cii_pseudonym::wire::to_bytes(&audit_pseudonym),
            key_epoch: self.pseudonyms.epoch(),
            ..cii_audit::Entry::default()
        };
        let receipt = self.audit.append(entry).await.map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "enrolment not logged");
            GatewayError::Audit(e)
        })?;
        tracing::debug!(%institution, audit_index = receipt.index, "enrolled");
        Ok(Response::new(pb::EnrolResponse {
            pseudonym: Some(cii_proto::common::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&pseudonym),
            }),
            receipt: Some(receipt_to_wire(&receipt)),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        caller(&request)?;
        Ok(Response::new(
            crate::dead_letters::list(&self.store, request.get_ref()).await?,
        ))
    }

    async fn resolve_dead_letter(
        &self,
        request: Request<pb::ResolveDeadLetterRequest>,
    ) -> Result<Response<pb::ResolveDeadLetterResponse>, Status> {
        let caller = caller(&request)?;
        let now = cii_types::time::micros(self.clock.now());
        let answer = crate::dead_letters::resolve(&self.store, &self.audit, caller, now, request.get_ref()).await?;
        Ok(Response::new(answer))
    }

    async fn submit_transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::TransferResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.transfers.submit(caller, request.get_ref()).await?))
    }

    async fn answer_review(
        &self,
        request: Request<pb::AnswerReviewRequest>,
    ) -> Result<Response<pb::AnswerReviewResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.transfers.answer_review(caller, request.get_ref()).await?,
        ))
    }

    async fn get_transfer(
        &self,
        request: Request<pb::GetTransferRequest>,
    ) -> Result<Response<pb::TransferResponse>, Status> {
        let caller = caller(&request)?;
        let id = TransferId::parse(&request.get_ref().transfer_id).map_err(crate::TransferError::from)?;
        let row = self
            .store
            .transfer(caller.institution.id.as_str(), id.as_str())
            .await
            .map_err(GatewayError::from)?
            .ok_or(GatewayError::TransferNotFound)?;
        Ok(Response::new(crate::transfer::recorded(row)?))
    }

    async fn release_pull_answer(
        &self,
        request: Request<pb::ReleasePullAnswerRequest>,
    ) -> Result<Response<pb::ReleasePullAnswerResponse>, Status> {
        let caller = caller(&request)?;
        let id = TransferId::parse(&request.get_ref().transfer_id).map_err(crate::TransferError::from)?;
        let sender = caller.institution.id.as_str();
        let row = self
            .store
            .transfer(sender, id.as_str())
            .await
            .map_err(GatewayError::from)?
            .ok_or(GatewayError::TransferNotFound)?;
        // The answer belongs to the user who sent the pull (rows of earlier releases name nobody).
        if !row.acting_user.is_empty() && row.acting_user != caller.acting_user() {
            return Err(crate::TransferError::IdReused.into());
        }
        let released = self
            .store
            .forget_answer(sender, id.as_str())
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(pb::ReleasePullAnswerResponse { released }))
    }

    async fn acknowledge_deliveries(
        &self,
        request: Request<pb::AcknowledgeDeliveriesRequest>,
    ) -> Result<Response<pb::AcknowledgeDeliveriesResponse>, Status> {
        let caller = caller(&request)?;
        let mut acknowledged = 0;
        for d in &request.get_ref().deliveries {
            let id = TransferId::parse(&d.transfer_id).map_err(crate::TransferError::from)?;
            if self
                .store
                .acknowledge(caller.institution.id.as_str(), &d.sender, id.as_str())
                .await
                .map_err(GatewayError::from)?
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
        let now = cii_types::time::micros(self.clock.now());
        let rows = self
            .store
            .obligations(caller.institution.id.as_str(), request.get_ref().include_fulfilled)
            .await
            .map_err(GatewayError::from)?;
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
        check_note(note)?;
        let owner = caller.institution.id.as_str();
        let row = self
            .store
            .obligation(owner, obligation_id)
            .await
            .map_err(GatewayError::from)?
            .ok_or(GatewayError::ObligationNotFound)?;
        let wire = <cii_proto::common::Obligation as prost::Message>::decode(row.wire.as_slice())
            .map_err(|_| GatewayError::StoreCorrupt("a recorded obligation does not decode"))?;
        if row.fulfilled_micros.is_some() {
            return Err(GatewayError::ObligationAlreadyFulfilled.into());
        }
        let now = self.clock.now();
        let entry = cii_audit::Entry {
            kind: cii_audit::EntryKind::ObligationFulfilled as i32,
            time_micros: cii_types::time::micros(now),
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
            GatewayError::Audit(e)
        })?;
        self.store
            .fulfil(owner, obligation_id, cii_types::time::micros(now))
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(wire))
    }
}

/// An obligation's note is logged: a reference into the institution's own systems, not free
/// text, and never an AVS number.
fn check_note(note: &str) -> Result<(), GatewayError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:/-".contains(c);
    if note.len() > 64 || !note.chars().all(allowed) || cii_types::avs::looks_like_avs(note) {
        return Err(GatewayError::NoteInvalid);
    }
    Ok(())
}

fn obligation_state(row: crate::store::ObligationRow, now_micros: i64) -> pb::ObligationState {
    let obligation = <cii_proto::common::Obligation as prost::Message>::decode(row.wire.as_slice()).ok();
    pb::ObligationState {
        obligation,
        transfer_id: row.transfer_id,
        sender: row.sender,
        recipient: row.recipient,
        fulfilled_at: row.fulfilled_micros.map(cii_types::time::timestamp_of_micros),
        overdue: row.fulfilled_micros.is_none() && row.due_micros < now_micros,
    }
}
