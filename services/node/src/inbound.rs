//! Handlers of `cii.node.v1.NodeInbound`, called by the gateway only (the TLS
//! layer admits no other certificate).

use std::sync::Arc;

use cii_kit::clock::Clock;
use cii_kit::grpc::error;
use cii_kit::metrics::Metrics;
use cii_proto::audit::audit_client::AuditClient;
use cii_proto::node::{self as pb, node_inbound_server::NodeInbound};
use cii_pseudonym::node::NodeKeys;
use cii_types::InstitutionId;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::api::{DATA_RESPONSE, store_failed};
use crate::store::Store;
use crate::witness::LogWitness;

/// The gateway-facing rpc handlers.
#[derive(Debug)]
pub struct NodeInboundService {
    institution: InstitutionId,
    keys: Arc<NodeKeys>,
    store: Arc<Store>,
    witness: Arc<LogWitness>,
    audit: AuditClient<Channel>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

impl NodeInboundService {
    pub fn new(
        institution: InstitutionId,
        keys: Arc<NodeKeys>,
        store: Arc<Store>,
        witness: Arc<LogWitness>,
        gateway: Channel,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> NodeInboundService {
        NodeInboundService {
            institution,
            keys,
            store,
            witness,
            audit: AuditClient::new(gateway),
            clock,
            metrics,
        }
    }

    fn refused(&self, code: Code, reason: &str, message: impl Into<String>, field: &str) -> Status {
        self.metrics.refused(error(code, reason, message, Some(field)))
    }

    /// The person's local record id, if enrolled here, and the pseudonym in hex.
    async fn recognise(
        &self,
        person: Option<&cii_proto::common::EncryptedPseudonym>,
    ) -> Result<(String, String), Status> {
        // Anonymised statistics name no person.
        let Some(person) = person else {
            return Ok((String::new(), String::new()));
        };
        let ciphertext = cii_pseudonym::wire::pseudonym(&person.ciphertext)
            .map_err(|e| self.refused(Code::InvalidArgument, e.code(), e.to_string(), "person.ciphertext"))?;
        let pseudonym = self.keys.decrypt(&ciphertext);
        let record = self
            .store
            .by_pseudonym(&pseudonym)
            .await
            .map_err(|e| store_failed(&e))?
            .unwrap_or_default();
        Ok((record, pseudonym.0.iter().map(|b| format!("{b:02x}")).collect()))
    }
}

#[tonic::async_trait]
impl NodeInbound for NodeInboundService {
    async fn ping(&self, _: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {
            institution_id: self.institution.to_string(),
        }))
    }

    /// Checks the receipt (a rewritten log stops the node here), opens the
    /// sealed content, recognises the person, and stores the item once.
    async fn deliver(&self, request: Request<pb::Delivery>) -> Result<Response<pb::DeliveryAck>, Status> {
        let delivery = request.into_inner();
        if delivery.transfer_id.is_empty() || delivery.sender.is_empty() {
            return Err(self.refused(
                Code::InvalidArgument,
                "FIELD_REQUIRED",
                "transfer_id and sender are required",
                "transfer_id",
            ));
        }
        let now = i64::try_from(self.clock.now().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
        let ack = Response::new(pb::DeliveryAck {
            transfer_id: delivery.transfer_id.clone(),
        });
        if let Some(notice) = delivery.notice {
            let item = pb::InboxItem {
                transfer_id: delivery.transfer_id.clone(),
                sender: "gateway".to_owned(),
                delivered_at: Some(timestamp(self.clock.now())),
                notice: Some(notice),
                ..pb::InboxItem::default()
            };
            self.store
                .receive("gateway", &delivery.transfer_id, &item.encode_to_vec(), None, now)
                .await
                .map_err(|e| store_failed(&e))?;
            tracing::info!(notice = %delivery.transfer_id, "consent notice received");
            return Ok(ack);
        }
        self.witness
            .check_receipt(&self.audit, delivery.receipt.as_ref())
            .await
            .map_err(|s| self.metrics.refused(s))?;
        let sealed = delivery.payload.ok_or_else(|| {
            self.refused(
                Code::InvalidArgument,
                "FIELD_REQUIRED",
                "payload is required",
                "payload",
            )
        })?;
        let key = cii_pseudonym::wire::attribute(&sealed.key)
            .map_err(|e| self.refused(Code::InvalidArgument, e.code(), e.to_string(), "payload.key"))?;
        let nonce: [u8; 12] = sealed.nonce.as_slice().try_into().map_err(|_| {
            self.refused(
                Code::InvalidArgument,
                "NONCE_INVALID",
                "the nonce must be 12 bytes",
                "payload.nonce",
            )
        })?;
        let aad = format!("{}/{}", delivery.sender, delivery.transfer_id);
        let plain = self
            .keys
            .open(
                &cii_pseudonym::seal::Sealed {
                    key,
                    nonce,
                    ciphertext: sealed.ciphertext,
                },
                aad.as_bytes(),
            )
            .map_err(|e| self.refused(Code::InvalidArgument, e.code(), e.to_string(), "payload"))?;
        let content = pb::DeliveryContent::decode(plain.as_slice()).map_err(|_| {
            self.refused(
                Code::InvalidArgument,
                "PAYLOAD_INVALID",
                "the sealed content does not decode",
                "payload",
            )
        })?;
        let (local_record_id, pseudonym) = self.recognise(delivery.person.as_ref()).await?;
        let item = pb::InboxItem {
            id: String::new(),
            transfer_id: delivery.transfer_id.clone(),
            sender: delivery.sender.clone(),
            local_record_id,
            payload: content.payload,
            delivered_at: Some(timestamp(self.clock.now())),
            decision: delivery.decision,
            written_request: content.written_request,
            pseudonym,
            avs_number: String::new(),
            receipt: delivery.receipt,
            notice: None,
        };
        let identity = delivery.identity.map(|i| i.ciphertext);
        self.store
            .receive(
                &delivery.sender,
                &delivery.transfer_id,
                &item.encode_to_vec(),
                identity.as_deref(),
                now,
            )
            .await
            .map_err(|e| store_failed(&e))?;
        tracing::info!(sender = %delivery.sender, transfer_id = %delivery.transfer_id, "delivery received");
        Ok(ack)
    }

    /// Answers a permitted pull from what this institution published; the
    /// gateway filters the answer to the released categories.
    async fn provide(&self, request: Request<pb::ProvideRequest>) -> Result<Response<pb::ProvideResponse>, Status> {
        let ask = request.into_inner();
        if ask.person.is_none() {
            return Err(self.refused(Code::InvalidArgument, "FIELD_REQUIRED", "person is required", "person"));
        }
        self.witness
            .check_receipt(&self.audit, ask.receipt.as_ref())
            .await
            .map_err(|s| self.metrics.refused(s))?;
        let (record, _) = self.recognise(ask.person.as_ref()).await?;
        if record.is_empty() {
            return Err(self.refused(
                Code::NotFound,
                "NOT_ENROLLED",
                "this institution has no record of the person",
                "person",
            ));
        }
        let data = self
            .store
            .published(&record)
            .await
            .map_err(|e| store_failed(&e))?
            .ok_or_else(|| {
                self.refused(
                    Code::NotFound,
                    "NO_DATA_PUBLISHED",
                    "this institution published no data about the person",
                    "person",
                )
            })?;
        let payload = prost_types::Any::decode(data.as_slice())
            .ok()
            .filter(|a| a.type_url == DATA_RESPONSE)
            .ok_or_else(|| error(Code::Internal, "NODE_STORE", "published data does not decode", None))?;
        tracing::info!(requester = %ask.requester, transfer_id = %ask.transfer_id, "data provided");
        Ok(Response::new(pb::ProvideResponse { payload: Some(payload) }))
    }
}

fn timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}
