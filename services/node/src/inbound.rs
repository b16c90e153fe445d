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
        // The entry commits to the sealed bytes as delivered: the parts, or (queued by an
        // earlier release) the gateway's sealed payload.
        let sealed = match (&delivery.parts, &delivery.payload) {
            (Some(parts), _) => parts.encode_to_vec(),
            (None, Some(payload)) => payload.encode_to_vec(),
            (None, None) => Vec::new(),
        };
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

    fn open(&self, delivery: &pb::Delivery, entry: &cii_audit::Entry) -> Result<pb::DeliveryContent, NodeError> {
        if let Some(parts) = &delivery.parts {
            let released = delivery
                .decision
                .as_ref()
                .map(|d| d.released_categories.as_slice())
                .unwrap_or_default();
            let expect = crate::sealed::Incoming {
                origin: &delivery.sender,
                transfer_id: &delivery.transfer_id,
                released,
                written_request_sha256: &entry.written_request_sha256,
            };
            let content = crate::sealed::open_parts(&self.keys, parts, &expect)?;
            check_list(content.payload.as_ref(), delivery.list_persons.len())?;
            return Ok(content);
        }
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

    /// A delivery checked and opened, ready to store: its receipt against the checkpoints
    /// this node witnessed (a rewritten log stops the node here), its entry bound to it, its
    /// content opened, its person recognised. A notice of the gateway's own (a consent change,
    /// a dead letter) is checked against its entry the same way.
    async fn accept(&self, mut delivery: pb::Delivery) -> Result<crate::store::Received, Status> {
        if delivery.transfer_id.is_empty() || delivery.sender.is_empty() {
            return Err(NodeError::FieldRequired {
                field: "transfer_id",
                what: "transfer_id and sender are required",
            }
            .into());
        }
        self.witness
            .check_receipt(&self.audit, delivery.receipt.as_mut())
            .await
            .map_err(NodeError::from)?;
        if delivery.notice.is_some() || delivery.failure.is_some() {
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
            return Ok(crate::store::Received {
                sender: "gateway".to_owned(),
                transfer_id: delivery.transfer_id,
                item: item.encode_to_vec(),
                identity: None,
            });
        }
        // The AVS number only where the decision released it (the receipt's entry is then
        // checked to release exactly the decision's categories).
        let released = delivery.decision.as_ref().map(|d| d.released_categories.as_slice());
        if delivery.identity.is_some() && !released.unwrap_or_default().iter().any(|c| c == "identity.avs") {
            return Err(NodeError::FieldNotAllowed {
                field: "identity",
                what: "an identity the decision did not release",
            }
            .into());
        }
        let entry = self.bound_entry(&delivery)?;
        let content = self.open(&delivery, &entry)?;
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
        Ok(crate::store::Received {
            sender: delivery.sender,
            transfer_id: delivery.transfer_id,
            item: item.encode_to_vec(),
            identity: delivery.identity.map(|i| i.ciphertext),
        })
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
        let delivery = request.into_inner();
        let transfer_id = delivery.transfer_id.clone();
        let received = self.accept(delivery).await?;
        let now = cii_types::time::micros(self.clock.now());
        self.store
            .receive(std::slice::from_ref(&received), now)
            .await
            .map_err(NodeError::from)?;
        received.log();
        Ok(Response::new(pb::DeliveryAck { transfer_id }))
    }

    /// Each item checked as `deliver` checks it, the accepted ones stored in one
    /// transaction, an answer per item. A sender's items after its first refused one are
    /// held back, not tried: stored, they would overtake the refused one.
    async fn deliver_batch(
        &self,
        request: Request<pb::DeliveryBatch>,
    ) -> Result<Response<pb::DeliveryBatchAck>, Status> {
        let deliveries = request.into_inner().deliveries;
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut accepted = Vec::with_capacity(deliveries.len());
        let mut refused_senders = std::collections::HashSet::new();
        for delivery in deliveries {
            let mut outcome = pb::DeliveryOutcome {
                transfer_id: delivery.transfer_id.clone(),
                sender: delivery.sender.clone(),
                ..pb::DeliveryOutcome::default()
            };
            if refused_senders.contains(&delivery.sender) {
                outcome.held_back = true;
            } else {
                match self.accept(delivery).await {
                    Ok(received) => accepted.push((outcomes.len(), received)),
                    Err(status) => {
                        refused_senders.insert(outcome.sender.clone());
                        refuse(&mut outcome, &status);
                    }
                }
            }
            outcomes.push(outcome);
        }
        let now = cii_types::time::micros(self.clock.now());
        let items: Vec<_> = accepted.iter().map(|(_, r)| r.clone()).collect();
        if let Err(e) = self.store.receive(&items, now).await {
            // Nothing of the batch was stored: every accepted item is refused with the store's error.
            let status = Status::from(NodeError::from(e));
            for (index, _) in &accepted {
                if let Some(outcome) = outcomes.get_mut(*index) {
                    refuse(outcome, &status);
                }
            }
        } else {
            items.iter().for_each(crate::store::Received::log);
        }
        Ok(Response::new(pb::DeliveryBatchAck { outcomes }))
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
        // The written request, sealed by the requester for this institution: opened and
        // checked against the hash the requester declared, kept for the reviewer.
        let mut offer = offer;
        if let Some(sealed) = offer.sealed_written_request.take() {
            let expect = crate::sealed::Incoming {
                origin: &offer.requester,
                transfer_id: &offer.transfer_id,
                released: &[],
                written_request_sha256: &offer.written_request_sha256,
            };
            offer.written_request = crate::sealed::open_parts(&self.keys, &sealed, &expect)?.written_request;
        } else if !offer.written_request_sha256.is_empty() {
            return Err(NodeError::WrittenRequestMismatch.into());
        }
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
        let entry = crate::binding::check(receipt, &expected)?;
        // The written request the permit logged must be the one the requester sealed here:
        // the gateway cannot read it, so the discloser checks it before disclosing.
        match &ask.sealed_written_request {
            Some(sealed) => {
                let expect = crate::sealed::Incoming {
                    origin: &ask.requester,
                    transfer_id: &ask.transfer_id,
                    released: &[],
                    written_request_sha256: &entry.written_request_sha256,
                };
                crate::sealed::open_parts(&self.keys, sealed, &expect)?;
            }
            None if entry.written_request_sha256.is_empty() => {}
            None => return Err(NodeError::WrittenRequestMismatch.into()),
        }
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
        // Sealed here for the requester, only the categories the permit released.
        let outgoing = crate::sealed::Outgoing {
            origin: &own,
            transfer_id: &ask.transfer_id,
            payload: Some(&payload),
            only: Some(&ask.categories),
            written_request: "",
        };
        let (sealed, _) = crate::sealed::seal(&self.keys, &outgoing)?;
        tracing::info!(requester = %ask.requester, transfer_id = %ask.transfer_id, "data provided");
        Ok(Response::new(pb::ProvideResponse {
            payload: None,
            sealed: Some(sealed),
        }))
    }
}

/// A list received names as many persons as it has entries (the gateway cannot count them).
fn check_list(payload: Option<&prost_types::Any>, persons: usize) -> Result<(), NodeError> {
    let entries = payload
        .filter(|p| p.type_url.ends_with("/cii.exchange.v1.RecipientList"))
        .map(|p| {
            cii_proto::exchange::RecipientList::decode(p.value.as_slice()).map_or(usize::MAX, |l| l.entries.len())
        });
    match entries {
        Some(n) if n != persons => Err(NodeError::SealedPartsInvalid(
            "a list names as many persons as it has entries",
        )),
        _ => Ok(()),
    }
}

/// A batch item's refusal, as `Deliver` would have answered it.
fn refuse(outcome: &mut pb::DeliveryOutcome, status: &Status) {
    outcome.error_code = cii_kit::status::error_code(status).unwrap_or_default();
    outcome.status_code = status.code() as i32;
    outcome.message = status.message().to_owned();
}
