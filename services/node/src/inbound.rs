//! Handlers of `cii.node.v1.NodeInbound`, called by the gateway only (the TLS
//! layer admits no other certificate).

use std::sync::Arc;

use cii_kit::clock::Clock;
use cii_proto::audit::audit_client::AuditClient;
use cii_proto::node::{self as pb, node_inbound_server::NodeInbound};
use cii_pseudonym::node::NodeKeys;
use cii_types::InstitutionId;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::api::DATA_RESPONSE;
use crate::error::NodeError;
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
}

impl NodeInboundService {
    pub fn new(
        institution: InstitutionId,
        keys: Arc<NodeKeys>,
        store: Arc<Store>,
        witness: Arc<LogWitness>,
        gateway: Channel,
        clock: Arc<dyn Clock>,
    ) -> NodeInboundService {
        NodeInboundService {
            institution,
            keys,
            store,
            witness,
            audit: AuditClient::new(gateway),
            clock,
        }
    }

    /// Opens a delivery's sealed content with this node's key; it opens only as the
    /// delivery it was sealed for (sender and transfer id are its associated data).
    /// The receipt's entry, checked to be about this delivery (see `crate::binding`).
    fn bound_entry(&self, delivery: &pb::Delivery) -> Result<cii_audit::Entry, NodeError> {
        let receipt = delivery
            .receipt
            .as_ref()
            .ok_or(NodeError::ReceiptMismatch("no receipt"))?;
        let released = delivery
            .decision
            .as_ref()
            .map(|d| d.released_categories.as_slice())
            .unwrap_or_default();
        let sealed = delivery
            .payload
            .as_ref()
            .map(prost::Message::encode_to_vec)
            .unwrap_or_default();
        let own = self.institution.to_string();
        let expected = crate::binding::Expected {
            transfer_id: &delivery.transfer_id,
            sender: &delivery.sender,
            recipient: &own,
            released,
            sealed: Some(&sealed),
            permitted: true,
        };
        crate::binding::check(receipt, &expected)
    }

    fn open(&self, delivery: &pb::Delivery) -> Result<pb::DeliveryContent, NodeError> {
        let sealed = delivery.payload.as_ref().ok_or(NodeError::FieldRequired {
            field: "payload",
            what: "payload is required",
        })?;
        let aad = cii_types::transfer::seal_associated_data(&delivery.sender, &delivery.transfer_id);
        crate::sealed::open(
            &self.keys,
            "payload",
            (&sealed.key, &sealed.nonce, &sealed.ciphertext),
            &aad,
        )
    }

    /// The person's local record id, if enrolled here, and the pseudonym in hex.
    async fn recognise(
        &self,
        person: Option<&cii_proto::common::EncryptedPseudonym>,
    ) -> Result<(String, String), NodeError> {
        // Anonymised statistics name no person.
        let Some(person) = person else {
            return Ok((String::new(), String::new()));
        };
        let ciphertext = cii_pseudonym::wire::pseudonym(&person.ciphertext).map_err(|source| NodeError::Crypto {
            field: "person.ciphertext",
            source,
        })?;
        let pseudonym = self.keys.decrypt(&ciphertext);
        let record = self.store.by_pseudonym(&pseudonym).await?.unwrap_or_default();
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
        let mut delivery = request.into_inner();
        if delivery.transfer_id.is_empty() || delivery.sender.is_empty() {
            return Err(NodeError::FieldRequired {
                field: "transfer_id",
                what: "transfer_id and sender are required",
            }
            .into());
        }
        let now = cii_types::time::micros(self.clock.now());
        let ack = Response::new(pb::DeliveryAck {
            transfer_id: delivery.transfer_id.clone(),
        });
        if delivery.notice.is_some() || delivery.failure.is_some() {
            // The gateway's own notices: a consent change, or a dead-lettered delivery; each
            // logged before it was sent, and checked against its entry here.
            self.witness
                .check_receipt(&self.audit, delivery.receipt.as_mut())
                .await
                .map_err(NodeError::from)?;
            let receipt = delivery
                .receipt
                .as_ref()
                .ok_or(NodeError::ReceiptMismatch("no receipt"))?;
            crate::binding::check_notice(receipt, self.institution.as_str(), &delivery)?;
            let item = pb::InboxItem {
                transfer_id: delivery.transfer_id.clone(),
                sender: "gateway".to_owned(),
                delivered_at: Some(cii_types::time::timestamp(self.clock.now())),
                notice: delivery.notice,
                failure: delivery.failure,
                ..pb::InboxItem::default()
            };
            self.store
                .receive("gateway", &delivery.transfer_id, &item.encode_to_vec(), None, now)
                .await
                .map_err(NodeError::from)?;
            tracing::info!(notice = %delivery.transfer_id, "notice received");
            return Ok(ack);
        }
        self.witness
            .check_receipt(&self.audit, delivery.receipt.as_mut())
            .await
            .map_err(NodeError::from)?;
        let entry = self.bound_entry(&delivery)?;
        let content = self.open(&delivery)?;
        crate::binding::check_content(&entry, content.payload.as_ref())?;
        let (local_record_id, pseudonym) = self.recognise(delivery.person.as_ref()).await?;
        // A list is matched pseudonymously: each person to this institution's record, or ''.
        let mut list_record_ids = Vec::with_capacity(delivery.list_persons.len());
        for person in &delivery.list_persons {
            list_record_ids.push(self.recognise(Some(person)).await?.0);
        }
        let item = pb::InboxItem {
            id: String::new(),
            transfer_id: delivery.transfer_id.clone(),
            sender: delivery.sender.clone(),
            local_record_id,
            payload: content.payload,
            delivered_at: Some(cii_types::time::timestamp(self.clock.now())),
            decision: delivery.decision,
            written_request: content.written_request,
            pseudonym,
            avs_number: String::new(),
            receipt: delivery.receipt,
            notice: None,
            failure: None,
            list_record_ids,
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
            .map_err(NodeError::from)?;
        tracing::info!(sender = %delivery.sender, transfer_id = %delivery.transfer_id, "delivery received");
        Ok(ack)
    }

    /// Answers a permitted pull from what this institution published; the
    /// gateway filters the answer to the released categories.
    /// A pull for this institution's caseworkers to review. Bounded by what the gateway
    /// offers (its certificate only reaches here); kept sealed at rest.
    async fn offer_review(
        &self,
        request: Request<pb::OfferReviewRequest>,
    ) -> Result<Response<pb::OfferReviewResponse>, Status> {
        let offer = request.into_inner();
        let requester = InstitutionId::parse("requester", &offer.requester).map_err(|_| NodeError::FieldRequired {
            field: "requester",
            what: "requester is a registry id",
        })?;
        cii_types::TransferId::parse(&offer.transfer_id).map_err(|_| NodeError::FieldRequired {
            field: "transfer_id",
            what: "transfer_id is a transfer id",
        })?;
        let (record, _) = self.recognise(offer.person.as_ref()).await?;
        let deadline = offer.deadline.as_ref().map_or(0, cii_types::time::micros_of_timestamp);
        let review = crate::store::OfferedReview {
            requester: requester.to_string(),
            transfer_id: offer.transfer_id.clone(),
            offer: offer.encode_to_vec(),
            local_record_id: record,
            offered_micros: cii_types::time::micros(self.clock.now()),
            deadline_micros: deadline,
        };
        self.store.offer_review(&review).await.map_err(NodeError::from)?;
        tracing::info!(requester = %review.requester, transfer_id = %review.transfer_id, "pull offered for review");
        Ok(Response::new(pb::OfferReviewResponse {}))
    }

    async fn provide(&self, request: Request<pb::ProvideRequest>) -> Result<Response<pb::ProvideResponse>, Status> {
        let mut ask = request.into_inner();
        if ask.person.is_none() {
            return Err(NodeError::FieldRequired {
                field: "person",
                what: "person is required",
            }
            .into());
        }
        self.witness
            .check_receipt(&self.audit, ask.receipt.as_mut())
            .await
            .map_err(NodeError::from)?;
        // The receipt's entry is the permit of this pull: this institution discloses these
        // categories to the requester. Any other logged entry opens nothing here.
        let receipt = ask.receipt.as_ref().ok_or(NodeError::ReceiptMismatch("no receipt"))?;
        let own = self.institution.to_string();
        let expected = crate::binding::Expected {
            transfer_id: &ask.transfer_id,
            sender: &own,
            recipient: &ask.requester,
            released: &ask.categories,
            sealed: None,
            permitted: true,
        };
        crate::binding::check(receipt, &expected)?;
        let (record, _) = self.recognise(ask.person.as_ref()).await?;
        // Unknown here and known without published data are one answer: the requester
        // must not learn from a refusal whether this institution serves the person.
        if record.is_empty() {
            return Err(NodeError::NoDataPublished.into());
        }
        let data = self
            .store
            .published(&record)
            .await
            .map_err(NodeError::from)?
            .ok_or(NodeError::NoDataPublished)?;
        let payload = prost_types::Any::decode(data.as_slice())
            .ok()
            .filter(|a| a.type_url == DATA_RESPONSE)
            .ok_or(NodeError::StoreCorrupt("published data does not decode"))?;
        tracing::info!(requester = %ask.requester, transfer_id = %ask.transfer_id, "data provided");
        Ok(Response::new(pb::ProvideResponse { payload: Some(payload) }))
    }
}
