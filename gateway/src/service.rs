//! Handlers of `cii.gateway.v1.Gateway`.

use std::sync::Arc;
use std::time::Instant;

use cii_audit::Log;
use cii_kit::auth::caller;
use cii_kit::clock::Clock;
use cii_kit::grpc::error;
use cii_kit::metrics::Metrics;
use cii_kit::registry::Registry;
use cii_proto::gateway::{self as pb, gateway_server::Gateway};
use cii_pseudonym::names::Party;
use tonic::{Code, Request, Response, Status};

use crate::rate_limit::RateLimit;

/// The gateway's rpc handlers.
#[derive(Debug)]
pub struct GatewayService {
    #[expect(dead_code, reason = "the transfer pipeline (exchanges issue) reads it")]
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    pseudonyms: Arc<cii_pseudonym::gateway::Gateway>,
    audit: Log,
    enrolment_limit: RateLimit,
    metrics: Metrics,
}

impl GatewayService {
    pub fn new(
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        pseudonyms: Arc<cii_pseudonym::gateway::Gateway>,
        audit: Log,
        enrolment_limit: RateLimit,
        metrics: Metrics,
    ) -> GatewayService {
        GatewayService {
            registry,
            clock,
            pseudonyms,
            audit,
            enrolment_limit,
            metrics,
        }
    }
}

fn timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
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
            gateway_time: Some(timestamp(self.clock.now())),
        }))
    }

    /// Origin domain → the caller's domain (from its certificate), plus the
    /// audit context; the audit entry is durable before the answer leaves.
    async fn enrol(&self, request: Request<pb::EnrolRequest>) -> Result<Response<pb::EnrolResponse>, Status> {
        let caller = caller(&request)?;
        let institution = caller.institution.id.clone();
        let user = caller.user.subject.clone();
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

    async fn submit_transfer(&self, _: Request<pb::TransferRequest>) -> Result<Response<pb::TransferResponse>, Status> {
        Err(cii_kit::grpc::not_available())
    }

    async fn get_transfer(&self, _: Request<pb::GetTransferRequest>) -> Result<Response<pb::TransferResponse>, Status> {
        Err(cii_kit::grpc::not_available())
    }
}
