//! Handlers of `cii.node.v1.Node`, the API for the institution's IT systems.

use std::sync::Arc;
use std::time::Instant;

use cii_kit::auth::caller;
use cii_kit::clock::Clock;
use cii_kit::jwt::AUTHORIZATION;
use cii_proto::audit::audit_client::AuditClient;
use cii_proto::consent as registry;
use cii_proto::gateway::{self as gw, consents_client::ConsentsClient, gateway_client::GatewayClient};
use cii_proto::node::{self as pb, node_server::Node};
use cii_pseudonym::node::NodeKeys;
use cii_types::{AvsNumber, InstitutionId, TransferId};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::store::{Recorded, Store};
use crate::witness::LogWitness;

/// The IT-facing rpc handlers.
#[derive(Debug)]
pub struct NodeApi {
    institution: InstitutionId,
    gateway: GatewayClient<Channel>,
    consents: ConsentsClient<Channel>,
    audit: AuditClient<Channel>,
    keys: Arc<NodeKeys>,
    store: Arc<Store>,
    witness: Arc<LogWitness>,
    clock: Arc<dyn Clock>,
}

/// Longest local record id accepted.
pub const MAX_RECORD_ID: usize = 64;
/// Most persons a list exchange names (the gateway's limit too).
const MAX_LIST_RECORDS: usize = 100;

/// A list exchange names as many persons as its `RecipientList` has entries (the gateway,
/// which cannot read the list, relies on the sender's node and the recipient's for this).
fn check_list(payload: Option<&prost_types::Any>, persons: usize) -> Result<(), NodeError> {
    let is_list = payload.is_some_and(|p| p.type_url == RECIPIENT_LIST);
    if !is_list {
        return Ok(());
    }
    let entries = payload
        .and_then(|p| cii_proto::exchange::RecipientList::decode(p.value.as_slice()).ok())
        .map_or(0, |l| l.entries.len());
    if entries != persons {
        return Err(NodeError::FieldNotAllowed {
            field: "list_record_ids",
            what: "a list names as many persons as it has entries, in the same order",
        });
    }
    Ok(())
}

/// Checks a local record id: 1–64 characters of `A–Z a–z 0–9 . _ : / -`, and
/// not an AVS number (the record id travels in logs and answers; the AVS
/// number must not).
pub fn check_record_id(id: &str) -> Result<(), NodeError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".:_/-".contains(c);
    if id.is_empty() || id.len() > MAX_RECORD_ID || !id.chars().all(allowed) {
        return Err(NodeError::RecordIdInvalid(MAX_RECORD_ID));
    }
    if cii_types::avs::looks_like_avs(id) {
        return Err(NodeError::RecordIdIsAvs);
    }
    Ok(())
}

impl NodeApi {
    pub fn new(
        institution: InstitutionId,
        gateway: Channel,
        keys: Arc<NodeKeys>,
        store: Arc<Store>,
        witness: Arc<LogWitness>,
        clock: Arc<dyn Clock>,
    ) -> NodeApi {
        NodeApi {
            institution,
            gateway: GatewayClient::new(gateway.clone()),
            consents: ConsentsClient::new(gateway.clone()),
            audit: AuditClient::new(gateway),
            keys,
            store,
            witness,
            clock,
        }
    }

    /// The enrolled person under `record`, as this node's pseudonym encrypted
    /// under the global key (what the gateway transcrypts).
    async fn person(&self, record: &str) -> Result<cii_proto::common::EncryptedPseudonym, NodeError> {
        check_record_id(record)?;
        let (pseudonym, _) = self.store.by_record(record).await?.ok_or(NodeError::NotEnrolled)?;
        let ciphertext = self.keys.encrypt_own(&pseudonym).map_err(|e| {
            tracing::error!(error = %e, "stored pseudonym unusable");
            NodeError::StoreCorrupt("the node's database holds an unusable pseudonym")
        })?;
        Ok(cii_proto::common::EncryptedPseudonym {
            ciphertext: cii_pseudonym::wire::to_bytes(&ciphertext),
        })
    }

    /// After the log was seen rewritten, nothing more is sent to the gateway.
    fn refuse_in_alarm(&self) -> Result<(), NodeError> {
        if self.witness.in_alarm() {
            return Err(NodeError::AuditLogAlarm);
        }
        Ok(())
    }

    /// Checks a receipt from the gateway as a witness of its log. Nothing is
    /// recorded unless it passes.
    /// The gateway's answer's receipt is about this transfer (see `crate::binding`).
    fn check_bound(
        &self,
        answer: &gw::TransferResponse,
        (transfer_id, sender, recipient): (&str, &str, &str),
        written_request: &str,
    ) -> Result<(), NodeError> {
        // Data in the answer (either form of a pull's answer) needs a logged permit behind it.
        let has_data = answer.provided_sealed.is_some() || answer.provided_parts.is_some();
        let Some(receipt) = &answer.receipt else {
            if has_data {
                return Err(NodeError::ReceiptMismatch("data came without a receipt"));
            }
            return Ok(());
        };
        if answer.entry_withheld {
            // The entry would tell whether the recipient serves the person (the gateway's
            // `undisclosed`): only a push's answer without data, not a permit told, may go
            // without it. The leaf hash and proof, witnessed, still show an entry.
            use gw::transfer_response::State;
            let told = answer.state == State::Undisclosed as i32 || answer.state == State::Denied as i32;
            if !told || has_data || !receipt.entry.is_empty() {
                return Err(NodeError::ReceiptMismatch(
                    "an entry is withheld only from an undisclosed or denied answer without data",
                ));
            }
            return Ok(());
        }
        let released = answer
            .decision
            .as_ref()
            .map(|d| d.released_categories.as_slice())
            .unwrap_or_default();
        let expected = crate::binding::Expected {
            transfer_id,
            sender,
            recipient,
            released,
            sealed: None,
            permitted: has_data,
        };
        let entry = crate::binding::check(receipt, &expected)?;
        // The written request the gateway logged is the one this node sealed (the gateway
        // cannot read it, but could swap it for one of its own).
        let declared = if written_request.is_empty() {
            Vec::new()
        } else {
            ring::digest::digest(&ring::digest::SHA256, written_request.as_bytes())
                .as_ref()
                .to_vec()
        };
        if entry.written_request_sha256 != declared {
            return Err(NodeError::ReceiptMismatch("the entry logged another written request"));
        }
        Ok(())
    }

    async fn witness(&self, receipt: Option<&mut cii_proto::common::Receipt>) -> Result<(), NodeError> {
        Ok(self.witness.check_receipt(&self.audit, receipt).await?)
    }

    /// A request to the gateway carrying the caller's own token: the gateway
    /// verifies the acting user again, against the same institution's keys.
    fn onward<T, U>(incoming: &Request<T>, message: U) -> Request<U> {
        let mut request = Request::new(message);
        if let Some(token) = incoming.metadata().get(AUTHORIZATION) {
            request.metadata_mut().insert(AUTHORIZATION, token.clone());
        }
        request
    }
}

/// The type a node publishes and provides for pulls.
pub const DATA_RESPONSE: &str = "type.googleapis.com/cii.exchange.v1.DataResponse";
/// The list exchange's message.
const RECIPIENT_LIST: &str = "type.googleapis.com/cii.exchange.v1.RecipientList";

impl NodeApi {
    /// The enrolled person under `record`, or NOT_ENROLLED.
    async fn enrolled(&self, record: &str) -> Result<(cii_pseudonym::node::LocalPseudonym, AvsNumber), NodeError> {
        check_record_id(record)?;
        self.store.by_record(record).await?.ok_or(NodeError::NotEnrolled)
    }

    /// Sends a transfer: the stored bytes if this call repeats an earlier one
    /// exactly, else the request `build` makes (kept before it is sent).
    async fn transfer<T>(
        &self,
        incoming: &Request<T>,
        transfer_id: &str,
        call: &[u8],
        build: impl std::future::Future<Output = Result<gw::TransferRequest, NodeError>>,
    ) -> Result<Response<gw::TransferResponse>, Status> {
        // The gateway's own rule, before anything is stored: an id it would refuse is never kept here.
        let transfer_id = TransferId::parse(transfer_id).map_err(NodeError::from)?;
        let transfer_id = transfer_id.as_str();
        self.refuse_in_alarm()?;
        let call_sha256 = ring::digest::digest(&ring::digest::SHA256, call).as_ref().to_vec();
        let stored = self.store.outgoing(transfer_id).await.map_err(NodeError::from)?;
        let request = match stored {
            Some((sha, bytes)) if sha == call_sha256 => gw::TransferRequest::decode(bytes.as_slice())
                .map_err(|_| NodeError::StoreCorrupt("a stored request does not decode"))?,
            // Another call under a used id: sent as is, so the gateway refuses it by its bytes.
            Some(_) => build.await?,
            None => {
                let request = build.await?;
                self.store
                    .save_outgoing(transfer_id, &call_sha256, &request.encode_to_vec())
                    .await
                    .map_err(NodeError::from)?;
                request
            }
        };
        let mut answer = self
            .gateway
            .clone()
            .submit_transfer(Self::onward(incoming, request))
            .await
            .inspect_err(|status| tracing::info!(code = ?status.code(), transfer_id, "gateway refused the transfer"))?
            .into_inner();
        // A pull held for its holder's review is not decided yet: no entry, no receipt.
        if answer.state != gw::transfer_response::State::PendingReview as i32 {
            self.witness(answer.receipt.as_mut()).await?;
        }
        Ok(Response::new(answer))
    }

    /// A list exchange's persons, each as `person` would be (enrolled here, or NOT_ENROLLED naming
    /// the field); the gateway checks the count against the list's entries.
    async fn list_persons(&self, records: &[String]) -> Result<Vec<cii_proto::common::EncryptedPseudonym>, NodeError> {
        let mut persons = Vec::with_capacity(records.len());
        for record in records.iter().take(MAX_LIST_RECORDS) {
            persons.push(self.person(record).await?);
        }
        if records.len() > MAX_LIST_RECORDS {
            return Err(NodeError::FieldRequired {
                field: "list_record_ids",
                what: "a list names at most 100 persons",
            });
        }
        Ok(persons)
    }

    async fn relationship(&self, request: &pb::RelationshipRequest) -> Result<gw::RelationshipRequest, NodeError> {
        Ok(gw::RelationshipRequest {
            person: Some(self.person(&request.local_record_id).await?),
            capacity: request.capacity.clone(),
            at: request.at,
        })
    }
}

#[tonic::async_trait]
impl Node for NodeApi {
    type QueryAuditStream = tonic::Streaming<cii_proto::audit::Entry>;

    /// The person for the DPO: this node's pseudonym, translated (and logged) by the gateway.
    async fn lookup_person_for_dpo(
        &self,
        request: Request<pb::DpoLookupRequest>,
    ) -> Result<Response<cii_proto::audit::LookupPersonResponse>, Status> {
        caller(&request)?;
        let person = self.person(&request.get_ref().local_record_id).await?;
        let forward = cii_proto::audit::LookupPersonRequest { person: Some(person) };
        self.audit.clone().lookup_person(Self::onward(&request, forward)).await
    }

    /// Forwards the operator's retention run with their token; the gateway checks the role and logs it.
    async fn shred_audit_period(
        &self,
        request: Request<cii_proto::audit::ShredPeriodRequest>,
    ) -> Result<Response<cii_proto::audit::ShredPeriodResponse>, Status> {
        caller(&request)?;
        let forward = request.get_ref().clone();
        self.audit.clone().shred_period(Self::onward(&request, forward)).await
    }

    async fn apply_audit_retention(
        &self,
        request: Request<cii_proto::audit::ApplyRetentionRequest>,
    ) -> Result<Response<cii_proto::audit::ApplyRetentionResponse>, Status> {
        caller(&request)?;
        let forward = *request.get_ref();
        self.audit
            .clone()
            .apply_retention(Self::onward(&request, forward))
            .await
    }

    /// Forwards the operator's listing; the gateway checks the role.
    async fn list_dead_letters(
        &self,
        request: Request<cii_proto::gateway::ListDeadLettersRequest>,
    ) -> Result<Response<cii_proto::gateway::ListDeadLettersResponse>, Status> {
        caller(&request)?;
        let forward = *request.get_ref();
        self.gateway
            .clone()
            .list_dead_letters(Self::onward(&request, forward))
            .await
    }

    /// Forwards the operator's retry or drop; the gateway checks the role and logs it.
    async fn resolve_dead_letter(
        &self,
        request: Request<cii_proto::gateway::ResolveDeadLetterRequest>,
    ) -> Result<Response<cii_proto::gateway::ResolveDeadLetterResponse>, Status> {
        caller(&request)?;
        let forward = request.get_ref().clone();
        self.gateway
            .clone()
            .resolve_dead_letter(Self::onward(&request, forward))
            .await
    }

    /// Forwards the DPO's query with their token; the gateway checks the role and logs it.
    async fn query_audit(
        &self,
        request: Request<cii_proto::audit::QueryRequest>,
    ) -> Result<Response<Self::QueryAuditStream>, Status> {
        caller(&request)?;
        let forward = request.get_ref().clone();
        self.audit.clone().query(Self::onward(&request, forward)).await
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        caller(&request)?;
        let started = Instant::now();
        let answer = self
            .gateway
            .clone()
            .who_am_i(Self::onward(&request, gw::WhoAmIRequest {}))
            .await
            .inspect_err(|status| {
                tracing::warn!(code = ?status.code(), "gateway refused or unreachable");
            })?;
        let rtt = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(Response::new(pb::StatusResponse {
            institution_id: self.institution.to_string(),
            gateway: Some(answer.into_inner()),
            gateway_rtt_micros: rtt,
            audit_checkpoint_size: self.witness.newest_size().await,
            audit_alarm: self.witness.in_alarm(),
        }))
    }

    /// AVS number → origin ciphertext → gateway (logged there) → this
    /// node's pseudonym, indexed to the local record. Re-enrolling the same
    /// pair answers the stored pseudonym without asking the gateway again.
    async fn enrol(&self, request: Request<pb::EnrolRequest>) -> Result<Response<pb::EnrolResponse>, Status> {
        caller(&request)?;
        let pb::EnrolRequest {
            avs_number,
            local_record_id,
        } = request.get_ref();
        let avs = AvsNumber::parse(avs_number).map_err(NodeError::from)?;
        check_record_id(local_record_id)?;
        let answer = |pseudonym: &cii_pseudonym::node::LocalPseudonym| {
            Response::new(pb::EnrolResponse {
                local_record_id: local_record_id.clone(),
                pseudonym: pseudonym.0.iter().map(|b| format!("{b:02x}")).collect(),
            })
        };
        if let Some((pseudonym, known)) = self.store.by_record(local_record_id).await.map_err(NodeError::from)? {
            if known.expose_digits() == avs.expose_digits() {
                return Ok(answer(&pseudonym));
            }
            return Err(NodeError::RecordTaken.into());
        }
        self.refuse_in_alarm()?;
        let origin = self.keys.enrolment_ciphertext(&avs);
        let mut enrolled = self
            .gateway
            .clone()
            .enrol(Self::onward(
                &request,
                gw::EnrolRequest {
                    origin: Some(cii_proto::common::EncryptedPseudonym {
                        ciphertext: cii_pseudonym::wire::to_bytes(&origin),
                    }),
                },
            ))
            .await
            .inspect_err(|status| tracing::warn!(code = ?status.code(), "gateway refused the enrolment"))?
            .into_inner();
        let ciphertext = enrolled
            .pseudonym
            .as_ref()
            .map(|p| cii_pseudonym::wire::pseudonym(&p.ciphertext))
            .ok_or_else(|| NodeError::GatewayAnswerInvalid("the gateway answered without a pseudonym".to_owned()))?
            .map_err(|e| NodeError::GatewayAnswerInvalid(e.to_string()))?;
        self.witness(enrolled.receipt.as_mut()).await?;
        let pseudonym = self.keys.decrypt(&ciphertext);
        let now = cii_types::time::micros(self.clock.now());
        match self
            .store
            .record(local_record_id, &pseudonym, &avs, now)
            .await
            .map_err(NodeError::from)?
        {
            Recorded::New | Recorded::Existing => {
                tracing::info!(
                    local_record_id,
                    audit_index = enrolled.receipt.map(|r| r.leaf_index),
                    "enrolled"
                );
                Ok(answer(&pseudonym))
            }
            Recorded::RecordHoldsAnotherPerson => Err(NodeError::RecordTaken.into()),
            Recorded::PersonUnderOtherRecord(other) => Err(NodeError::PersonAlreadyEnrolled(other).into()),
        }
    }

    /// Builds the transfer request once and keeps its exact bytes; a retry with
    /// the same fields resends them.
    async fn send(&self, request: Request<pb::SendRequest>) -> Result<Response<gw::TransferResponse>, Status> {
        caller(&request)?;
        let send = request.get_ref();
        let build = async {
            let identity = if send.include_identity {
                let (_, avs) = self.enrolled(&send.local_record_id).await?;
                let ciphertext = self
                    .keys
                    .encrypt_identity(&avs)
                    .map_err(NodeError::IdentityNotEncrypted)?;
                Some(cii_proto::common::EncryptedIdentity {
                    ciphertext: cii_pseudonym::wire::to_bytes(&ciphertext),
                })
            } else {
                None
            };
            let list_persons = self.list_persons(&send.list_record_ids).await?;
            check_list(send.payload.as_ref(), list_persons.len())?;
            // Sealed here for the recipient: the gateway forwards it unread.
            let outgoing = crate::sealed::Outgoing {
                origin: self.institution.as_str(),
                transfer_id: &send.transfer_id,
                payload: Some(send.payload.as_ref().ok_or(NodeError::FieldRequired {
                    field: "payload",
                    what: "a push carries a payload",
                })?),
                only: None,
                written_request: &send.written_request,
            };
            let (sealed, written_request_sha256) = crate::sealed::seal(&self.keys, &outgoing)?;
            Ok(gw::TransferRequest {
                transfer_id: send.transfer_id.clone(),
                counterparty: send.recipient.clone(),
                direction: gw::transfer_request::Direction::Push as i32,
                trigger: send.trigger,
                purpose: send.purpose.clone(),
                categories: Vec::new(),
                // Only anonymised statistics name no person (the gateway checks).
                person: if send.local_record_id.is_empty() {
                    None
                } else {
                    Some(self.person(&send.local_record_id).await?)
                },
                identity,
                payload: None,
                written_request: String::new(),
                attested_facts: send.attested_facts.clone(),
                case_reference: send.case_reference.clone(),
                list_persons,
                sealed: Some(sealed),
                written_request_sha256,
            })
        };
        let answer = self
            .transfer(&request, &send.transfer_id, &send.encode_to_vec(), build)
            .await?;
        // The receipt's entry is this push's: this institution discloses to the recipient.
        self.check_bound(
            answer.get_ref(),
            (&send.transfer_id, self.institution.as_str(), &send.recipient),
            &send.written_request,
        )?;
        Ok(answer)
    }

    async fn request(&self, request: Request<pb::RequestRequest>) -> Result<Response<gw::TransferResponse>, Status> {
        caller(&request)?;
        let ask = request.get_ref();
        let build = async {
            let trigger = if ask.trigger == gw::Trigger::Unspecified as i32 {
                gw::Trigger::WrittenRequest as i32
            } else {
                ask.trigger
            };
            // The written request, sealed here for the holder.
            let (sealed, written_request_sha256) = if ask.written_request.is_empty() {
                (None, Vec::new())
            } else {
                let outgoing = crate::sealed::Outgoing {
                    origin: self.institution.as_str(),
                    transfer_id: &ask.transfer_id,
                    payload: None,
                    only: None,
                    written_request: &ask.written_request,
                };
                let (sealed, sha256) = crate::sealed::seal(&self.keys, &outgoing)?;
                (Some(sealed), sha256)
            };
            Ok(gw::TransferRequest {
                transfer_id: ask.transfer_id.clone(),
                counterparty: ask.holder.clone(),
                direction: gw::transfer_request::Direction::Pull as i32,
                trigger,
                purpose: ask.purpose.clone(),
                categories: ask.categories.clone(),
                person: Some(self.person(&ask.local_record_id).await?),
                identity: None,
                payload: None,
                written_request: String::new(),
                attested_facts: ask.attested_facts.clone(),
                case_reference: ask.case_reference.clone(),
                list_persons: Vec::new(),
                sealed,
                written_request_sha256,
            })
        };
        let mut answer = self
            .transfer(&request, &ask.transfer_id, &ask.encode_to_vec(), build)
            .await?;
        let response = answer.get_mut();
        // Held for the holder's review: nothing decided or logged yet, so no receipt to check.
        if response.state == gw::transfer_response::State::PendingReview as i32 {
            return Ok(answer);
        }
        // The receipt's entry is this pull's: the holder discloses to this institution.
        self.check_bound(
            response,
            (&ask.transfer_id, &ask.holder, self.institution.as_str()),
            &ask.written_request,
        )?;
        // The holder's answer comes sealed by the holder to this institution: opened here, for the IT.
        if let Some(sealed) = response.provided_parts.take() {
            let released = response
                .decision
                .as_ref()
                .map(|d| d.released_categories.clone())
                .unwrap_or_default();
            let expect = crate::sealed::Incoming {
                origin: &ask.holder,
                transfer_id: &ask.transfer_id,
                released: &released,
                written_request_sha256: &[],
            };
            response.provided = crate::sealed::open_parts(&self.keys, &sealed, &expect)?.payload;
        }
        // Kept by the gateway of an earlier release, sealed by it.
        if let Some(sealed) = response.provided_sealed.take() {
            let aad = cii_types::transfer::seal_associated_data(&ask.holder, &ask.transfer_id);
            let parts = (
                sealed.key.as_slice(),
                sealed.nonce.as_slice(),
                sealed.ciphertext.as_slice(),
            );
            let content = crate::sealed::open(&self.keys, "provided_sealed", parts, &aad)?;
            response.provided = content.payload;
        }
        Ok(answer)
    }

    async fn list_inbox(
        &self,
        request: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        caller(&request)?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n => n.min(100),
        };
        let rows = self.store.inbox(limit).await.map_err(NodeError::from)?;
        let mut items = Vec::with_capacity(rows.len());
        for (id, item, identity) in rows {
            let mut item = pb::InboxItem::decode(item.as_slice())
                .map_err(|_| NodeError::StoreCorrupt("an inbox item does not decode"))?;
            item.id = id.to_string();
            if let Some(identity) = identity {
                let avs = cii_pseudonym::wire::attribute(&identity)
                    .map_err(|e| e.code())
                    .and_then(|c| self.keys.decrypt_identity(&c).map_err(|e| e.code()));
                match avs {
                    Ok(avs) => item.avs_number = avs.expose_digits(),
                    Err(code) => tracing::warn!(inbox_id = id, code, "released identity unreadable"),
                }
            }
            items.push(item);
        }
        Ok(Response::new(pb::ListInboxResponse { items }))
    }

    /// Marks items processed here, then tells the gateway so the senders see ACKNOWLEDGED.
    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        caller(&request)?;
        let mut deliveries = Vec::new();
        for id in &request.get_ref().ids {
            let id: i64 = id.parse().map_err(|_| NodeError::InboxIdInvalid)?;
            if let Some((sender, transfer_id)) = self.store.acknowledge(id).await.map_err(NodeError::from)? {
                deliveries.push(gw::DeliveryRef { sender, transfer_id });
            }
        }
        let acknowledged = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
        deliveries.retain(|d| d.sender != "gateway");
        if !deliveries.is_empty() {
            // Best effort: the items are processed here whatever the gateway answers.
            if let Err(status) = self
                .gateway
                .clone()
                .acknowledge_deliveries(Self::onward(&request, gw::AcknowledgeDeliveriesRequest { deliveries }))
                .await
            {
                tracing::warn!(code = ?status.code(), "gateway not told of the acknowledgement");
            }
        }
        Ok(Response::new(pb::AcknowledgeResponse { acknowledged }))
    }

    async fn get_transfer(
        &self,
        request: Request<gw::GetTransferRequest>,
    ) -> Result<Response<gw::TransferResponse>, Status> {
        caller(&request)?;
        let forward = request.get_ref().clone();
        self.gateway.clone().get_transfer(Self::onward(&request, forward)).await
    }

    async fn release_pull_answer(
        &self,
        request: Request<gw::ReleasePullAnswerRequest>,
    ) -> Result<Response<gw::ReleasePullAnswerResponse>, Status> {
        caller(&request)?;
        let forward = request.get_ref().clone();
        self.gateway
            .clone()
            .release_pull_answer(Self::onward(&request, forward))
            .await
    }

    async fn list_reviews(
        &self,
        request: Request<pb::ListReviewsRequest>,
    ) -> Result<Response<pb::ListReviewsResponse>, Status> {
        caller(&request)?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n => n.min(100),
        };
        let now = cii_types::time::micros(self.clock.now());
        let stored = self.store.reviews(now, limit).await.map_err(NodeError::from)?;
        let reviews = stored
            .into_iter()
            .map(|r| {
                let pull = pb::OfferReviewRequest::decode(r.offer.as_slice())
                    .map_err(|_| NodeError::StoreCorrupt("a stored review does not decode"))?;
                Ok(pb::Review {
                    pull: Some(pb::OfferReviewRequest { person: None, ..pull }),
                    local_record_id: r.local_record_id,
                    offered_at: Some(cii_types::time::timestamp_of_micros(r.offered_micros)),
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        Ok(Response::new(pb::ListReviewsResponse { reviews }))
    }

    async fn answer_review(
        &self,
        request: Request<gw::AnswerReviewRequest>,
    ) -> Result<Response<gw::AnswerReviewResponse>, Status> {
        caller(&request)?;
        let answer = request.get_ref().clone();
        let (requester, transfer_id) = (answer.requester.clone(), answer.transfer_id.clone());
        let mut decided = self.gateway.clone().answer_review(Self::onward(&request, answer)).await;
        if let Ok(answer) = decided.as_mut() {
            // The review's decision is logged: its receipt is witnessed like every other.
            self.witness(answer.get_mut().receipt.as_mut()).await?;
        }
        // Answered, or ended at the gateway (expired, unknown): either way no longer waiting here.
        let ended = match &decided {
            Ok(_) => true,
            Err(status) => matches!(cii_kit::status::error_code(status).as_deref(), Some("REVIEW_NOT_FOUND")),
        };
        if ended {
            self.store
                .review_answered(&requester, &transfer_id)
                .await
                .map_err(NodeError::from)?;
        }
        decided
    }

    async fn publish(&self, request: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        caller(&request)?;
        let publish = request.get_ref();
        self.enrolled(&publish.local_record_id).await?;
        let data = publish.data.as_ref().ok_or(NodeError::FieldRequired {
            field: "data",
            what: "data is required",
        })?;
        if data.type_url != DATA_RESPONSE {
            return Err(NodeError::NotDataResponse(DATA_RESPONSE).into());
        }
        self.store
            .publish(&publish.local_record_id, &data.encode_to_vec())
            .await
            .map_err(NodeError::from)?;
        Ok(Response::new(pb::PublishResponse {}))
    }

    async fn list_obligations(
        &self,
        request: Request<gw::ListObligationsRequest>,
    ) -> Result<Response<gw::ListObligationsResponse>, Status> {
        caller(&request)?;
        let forward = *request.get_ref();
        self.gateway
            .clone()
            .list_obligations(Self::onward(&request, forward))
            .await
    }

    async fn fulfil_obligation(
        &self,
        request: Request<gw::FulfilObligationRequest>,
    ) -> Result<Response<cii_proto::common::Obligation>, Status> {
        caller(&request)?;
        let forward = request.get_ref().clone();
        self.gateway
            .clone()
            .fulfil_obligation(Self::onward(&request, forward))
            .await
    }

    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<registry::ConsentRecord>, Status> {
        caller(&request)?;
        let person = self.person(&request.get_ref().local_record_id).await?;
        let forward = gw::RecordConsentRequest {
            person: Some(person),
            consent: request.get_ref().consent.clone(),
        };
        self.consents
            .clone()
            .record_consent(Self::onward(&request, forward))
            .await
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<registry::ConsentRecord>, Status> {
        caller(&request)?;
        let person = self.person(&request.get_ref().local_record_id).await?;
        let forward = gw::RevokeConsentRequest {
            consent_id: request.get_ref().consent_id.clone(),
            person: Some(person),
            channel: request.get_ref().channel.clone(),
        };
        self.consents
            .clone()
            .revoke_consent(Self::onward(&request, forward))
            .await
    }

    async fn get_consent(
        &self,
        request: Request<gw::GetConsentRequest>,
    ) -> Result<Response<registry::ConsentHistory>, Status> {
        caller(&request)?;
        let forward = request.get_ref().clone();
        self.consents.clone().get_consent(Self::onward(&request, forward)).await
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<registry::ListConsentsResponse>, Status> {
        caller(&request)?;
        let person = self.person(&request.get_ref().local_record_id).await?;
        let forward = gw::ListConsentsRequest { person: Some(person) };
        self.consents
            .clone()
            .list_consents(Self::onward(&request, forward))
            .await
    }

    async fn list_expiring_consents(
        &self,
        request: Request<gw::ListExpiringConsentsRequest>,
    ) -> Result<Response<registry::ListConsentsResponse>, Status> {
        caller(&request)?;
        let forward = *request.get_ref();
        self.consents
            .clone()
            .list_expiring_consents(Self::onward(&request, forward))
            .await
    }

    async fn declare_relationship(
        &self,
        request: Request<pb::RelationshipRequest>,
    ) -> Result<Response<registry::RelationshipResponse>, Status> {
        caller(&request)?;
        let forward = self.relationship(request.get_ref()).await?;
        self.consents
            .clone()
            .declare_relationship(Self::onward(&request, forward))
            .await
    }

    async fn end_relationship(
        &self,
        request: Request<pb::RelationshipRequest>,
    ) -> Result<Response<registry::RelationshipResponse>, Status> {
        caller(&request)?;
        let forward = self.relationship(request.get_ref()).await?;
        self.consents
            .clone()
            .end_relationship(Self::onward(&request, forward))
            .await
    }
}
