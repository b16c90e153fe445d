//! The transfer pipeline, in the order the charter fixes: (mTLS and JWT, done
//! by the interceptor) → parse and validate → transcryption into the audit
//! context and the registry's domain → consent and directory lookup → decision
//! → field filtering → transcryption into the recipient's domain → durable
//! audit entry → delivery → receipt. Denials are audited as well.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use cii_kit::auth::Caller;
use cii_kit::clock::Clock;
use cii_kit::grpc::error;
use cii_kit::metrics::Metrics;
use cii_kit::registry::{Institution, Registry};
use cii_policy::Rulebook;
use cii_policy::decide::{self, ConsentFound, Facts, Party as PolicyParty};
use cii_policy::vocab::{Condition, Fact, Trigger};
use cii_proto::common as common_pb;
use cii_proto::consent::{self as registry_pb, consent_registry_client::ConsentRegistryClient};
use cii_proto::gateway::{self as pb, transfer_request::Direction, transfer_response::State};
use cii_proto::node as node_pb;
use cii_pseudonym::names::Party;
use cii_types::InstitutionId;
use cii_types::exchange::Catalogue;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::delivery::Nodes;
use crate::service::{audit_unavailable, ciphertext, receipt_to_wire};
use crate::store::{Decided, Store};

/// Longest transfer id.
const MAX_TRANSFER_ID: usize = 64;
/// Longest written request, in characters.
const MAX_WRITTEN_REQUEST: usize = 20_000;
/// The category of the identity attribute.
const IDENTITY_AVS: &str = "identity.avs";
/// The one category that concerns no person: a transfer of it alone carries none.
const ANONYMISED: &str = "anonymised_statistics";

/// Facts a sender may attest. The others come from the directory
/// (`recipient_serves_person`), the rulebook (reciprocity, cantonal release)
/// or the request itself (`written_request`).
const ASSERTABLE: &[Fact] = &[
    Fact::CostBearerUnclear,
    Fact::NoOverridingPrivateInterest,
    Fact::PersonInformedBefore,
    Fact::RefugeeOrProvisionallyAdmitted,
    Fact::EmployabilityEstablished,
    Fact::ReceivesSocialAid,
    Fact::ReceivesPc,
];

/// Everything the pipeline needs.
pub struct Transfers {
    pub registry: Arc<Registry>,
    pub rulebook: Arc<Rulebook>,
    pub catalogue: Arc<Catalogue>,
    pub pseudonyms: Arc<cii_pseudonym::gateway::Gateway>,
    pub audit: cii_audit::Log,
    pub consent: ConsentRegistryClient<Channel>,
    pub store: Store,
    audit_store: cii_audit::Store,
    pub nodes: Nodes,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// (caller, transfer id) being decided now: a concurrent duplicate waits its turn.
    in_flight: Mutex<HashSet<(String, String)>>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transfers(..)")
    }
}

fn invalid(code: &str, message: impl Into<String>, field: &str) -> Status {
    error(Code::InvalidArgument, code, message, Some(field))
}

/// A request that passed validation.
#[derive(Debug)]
pub struct Checked<'a> {
    pull: bool,
    counterparty: &'a Institution,
    trigger: Trigger,
    categories: Vec<String>,
    /// Absent only for anonymised statistics (no person concerned).
    person: Option<cii_pseudonym::EncryptedPseudonym>,
    identity: Option<cii_pseudonym::EncryptedAttribute>,
    facts: Facts,
    attested: Vec<String>,
    /// Push: the payload's type URL and bytes.
    payload: Option<(String, Vec<u8>)>,
}

/// The checks of a transfer request that need nothing but the request, the
/// registry and the catalogue: ids, direction, trigger, facts, ciphertexts'
/// encoding, the payload against the contract (unknown fields refused) and the
/// categories it carries. Every refusal names a stable code and the field.
/// Pure, so the fuzz target `transfer_check` runs exactly this.
pub fn check_request<'a>(
    registry: &'a Registry,
    catalogue: &Catalogue,
    caller: &InstitutionId,
    r: &pb::TransferRequest,
) -> Result<Checked<'a>, Status> {
    check_transfer_id(&r.transfer_id)?;
    let counterparty_id = InstitutionId::parse("counterparty", &r.counterparty)
        .map_err(|e| invalid("COUNTERPARTY_INVALID", e.to_string(), "counterparty"))?;
    if counterparty_id == *caller {
        return Err(invalid(
            "COUNTERPARTY_IS_CALLER",
            "an institution cannot exchange with itself through the gateway",
            "counterparty",
        ));
    }
    let counterparty = registry.get(&counterparty_id).ok_or_else(|| {
        invalid(
            "COUNTERPARTY_UNKNOWN",
            format!("{counterparty_id} is not a member of the network"),
            "counterparty",
        )
    })?;
    let pull = match Direction::try_from(r.direction) {
        Ok(Direction::Push) => false,
        Ok(Direction::Pull) => true,
        _ => {
            return Err(invalid(
                "DIRECTION_REQUIRED",
                "direction must be PUSH or PULL",
                "direction",
            ));
        }
    };
    let trigger = match pb::Trigger::try_from(r.trigger) {
        Ok(pb::Trigger::WrittenRequest) => Trigger::WrittenRequest,
        Ok(pb::Trigger::SpontaneousReport) => Trigger::SpontaneousReport,
        Ok(pb::Trigger::MandatoryReport) => Trigger::MandatoryReport,
        Ok(pb::Trigger::CaseAccess) => Trigger::CaseAccess,
        Ok(pb::Trigger::BilateralExchange) => Trigger::BilateralExchange,
        _ => return Err(invalid("TRIGGER_REQUIRED", "trigger must be set", "trigger")),
    };
    if r.purpose.is_empty() {
        return Err(invalid("FIELD_REQUIRED", "purpose is required", "purpose"));
    }
    if r.written_request.chars().count() > MAX_WRITTEN_REQUEST {
        return Err(invalid(
            "WRITTEN_REQUEST_TOO_LONG",
            format!("written_request is limited to {MAX_WRITTEN_REQUEST} characters"),
            "written_request",
        ));
    }
    let person = match &r.person {
        None if !pull && r.payload.is_some() => None,
        _ => Some(ciphertext("person", r.person.as_ref())?),
    };
    let identity = match &r.identity {
        Some(_) if pull => {
            return Err(invalid("FIELD_NOT_ALLOWED", "a pull carries no identity", "identity"));
        }
        Some(i) => Some(
            cii_pseudonym::wire::attribute(&i.ciphertext)
                .map_err(|e| invalid(e.code(), e.to_string(), "identity.ciphertext"))?,
        ),
        None => None,
    };
    let mut facts = Facts::default();
    let mut attested = Vec::new();
    for id in &r.attested_facts {
        let fact = Fact::parse("attested_facts", id)
            .map_err(|_| invalid("FACT_UNKNOWN", format!("unknown fact `{id}`"), "attested_facts"))?;
        if !ASSERTABLE.contains(&fact) {
            return Err(invalid(
                "FACT_NOT_ASSERTABLE",
                format!(
                    "`{id}` is established by the network (directory, rulebook or the written request), not attested by the sender"
                ),
                "attested_facts",
            ));
        }
        facts.set(fact, true);
        attested.push(fact.to_string());
    }
    if !r.written_request.trim().is_empty() {
        facts.set(Fact::WrittenRequest, true);
    }
    let (categories, payload) = if pull {
        if r.payload.is_some() {
            return Err(invalid("FIELD_NOT_ALLOWED", "a pull carries no payload", "payload"));
        }
        if r.categories.is_empty() {
            return Err(invalid(
                "FIELD_REQUIRED",
                "a pull names the categories asked for",
                "categories",
            ));
        }
        let unique: BTreeSet<String> = r.categories.iter().cloned().collect();
        (unique.into_iter().collect(), None)
    } else {
        if !r.categories.is_empty() {
            return Err(invalid(
                "FIELD_NOT_ALLOWED",
                "a push's categories are read from its payload; leave categories empty",
                "categories",
            ));
        }
        let any = r
            .payload
            .as_ref()
            .ok_or_else(|| invalid("FIELD_REQUIRED", "a push carries a payload", "payload"))?;
        // Everything present, to learn the categories sent (and refuse unknown fields).
        let present = catalogue
            .filter(&any.type_url, &any.value, |_| true)
            .map_err(|e| invalid(e.code(), e.to_string(), "payload"))?;
        let mut categories: Vec<String> = present.released.into_iter().collect();
        if identity.is_some() {
            categories.push(IDENTITY_AVS.to_owned());
        }
        if categories.is_empty() {
            return Err(invalid("PAYLOAD_EMPTY", "the payload carries no field", "payload"));
        }
        let anonymous = categories.iter().all(|c| c == ANONYMISED);
        if person.is_none() && !anonymous {
            return Err(invalid(
                "FIELD_REQUIRED",
                "person is required (only anonymised statistics concern no person)",
                "person",
            ));
        }
        if person.is_some() && anonymous {
            return Err(invalid(
                "FIELD_NOT_ALLOWED",
                "anonymised statistics name no person",
                "person",
            ));
        }
        (categories, Some((any.type_url.clone(), any.value.clone())))
    };
    Ok(Checked {
        pull,
        counterparty,
        trigger,
        categories,
        person,
        identity,
        facts,
        attested,
        payload,
    })
}

/// The exchange type a pull's entry names: the holder answers with this message.
const PULL_ANSWER_TYPE: &str = "cii.exchange.v1.DataResponse";

/// Frees the in-flight slot when the call ends, however it ends.
struct Slot<'a> {
    set: &'a Mutex<HashSet<(String, String)>>,
    key: (String, String),
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

impl Transfers {
    #[expect(
        clippy::too_many_arguments,
        reason = "the pipeline's collaborators, wired once at start"
    )]
    pub fn new(
        registry: Arc<Registry>,
        rulebook: Arc<Rulebook>,
        catalogue: Arc<Catalogue>,
        pseudonyms: Arc<cii_pseudonym::gateway::Gateway>,
        audit: cii_audit::Log,
        consent: ConsentRegistryClient<Channel>,
        store: Store,
        audit_store: cii_audit::Store,
        nodes: Nodes,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Transfers {
        Transfers {
            registry,
            rulebook,
            catalogue,
            pseudonyms,
            audit,
            consent,
            store,
            audit_store,
            nodes,
            clock,
            metrics,
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Submits a transfer; the whole pipeline.
    pub async fn submit(&self, caller: &Caller, request: &pb::TransferRequest) -> Result<pb::TransferResponse, Status> {
        let checked = check_request(&self.registry, &self.catalogue, &caller.institution.id, request)
            .map_err(|s| self.metrics.refused(s))?;
        let request_sha256 = sha256(&request.encode_to_vec());
        let caller_id = caller.institution.id.to_string();
        let _slot = self.claim(&caller_id, &request.transfer_id)?;
        if let Some(done) = self.replay(caller, request, &request_sha256, &checked).await? {
            return Ok(done);
        }
        let now = self.clock.now();
        let caller_party = Party::Institution(caller.institution.id.clone());
        let audit_person = checked
            .person
            .as_ref()
            .map(|p| self.pseudonyms.translate(p, &caller_party, &Party::Audit));
        let registry_person = checked
            .person
            .as_ref()
            .map(|p| self.pseudonyms.translate(p, &caller_party, &Party::Registry));

        // Who discloses and who receives: a pull discloses from the holder to the caller.
        let (from, to) = if checked.pull {
            (checked.counterparty, &caller.institution)
        } else {
            (&caller.institution, checked.counterparty)
        };
        let lookup = match registry_person {
            // No person, no consent and no relationship to look up.
            None => registry_pb::LookupResponse::default(),
            Some(person) => self
                .consent
                .clone()
                .lookup(registry_pb::LookupRequest {
                    person: Some(common_pb::EncryptedPseudonym {
                        ciphertext: cii_pseudonym::wire::to_bytes(&person),
                    }),
                    sender: from.id.to_string(),
                    recipient: to.id.to_string(),
                    categories: checked.categories.clone(),
                    purpose: request.purpose.clone(),
                    at: Some(crate::timestamp(now)),
                })
                .await
                .map_err(|status| {
                    tracing::warn!(code = ?status.code(), "consent registry lookup failed");
                    self.metrics.refused(error(
                        Code::Unavailable,
                        "CONSENT_REGISTRY_UNAVAILABLE",
                        "the consent registry could not be asked; nothing was decided, retry later",
                        None,
                    ))
                })?
                .into_inner(),
        };
        let mut facts = checked.facts;
        // Only the directory says whether the recipient serves the person.
        facts.set(Fact::RecipientServesPerson, lookup.recipient_serves_person);
        let consents: Vec<ConsentFound> = lookup
            .consents
            .iter()
            .filter_map(|c| {
                let record = c.consent.as_ref()?;
                Some(ConsentFound {
                    reference: format!("{}@{}", record.consent_id, record.version),
                    categories: c.covered_categories.clone(),
                    purposes: record.purposes.clone(),
                    written: record.written,
                })
            })
            .collect();
        let party = |i: &Institution| PolicyParty {
            kind: i.kind,
            id: Some(i.id.clone()),
        };
        let mut transfer = decide::Transfer {
            from: party(from),
            to: party(to),
            trigger: Some(checked.trigger),
            purpose: request.purpose.clone(),
            categories: checked.categories.clone(),
            persons: 1,
            facts,
            consents,
            date: now.date(),
        };
        let decision = self
            .decide_consuming(&mut transfer, &lookup, &format!("{caller_id}/{}", request.transfer_id))
            .await?;
        let consents = transfer.consents;
        let released: BTreeSet<String> = decision
            .released()
            .iter()
            .filter_map(|i| self.rulebook.categories.get(*i).map(|c| c.id.clone()))
            .collect();
        let mut wire = crate::wire::decision(&self.rulebook, &decision);
        let obligations = self.obligations(&mut wire, &request.transfer_id, from, to, now, &caller_id);

        // Filtering and sealing happen before the entry, so the entry names what is delivered.
        let mut delivery = None;
        let mut payload_sha256 = Vec::new();
        if decision.is_permit()
            && let Some((type_url, bytes)) = &checked.payload
        {
            let filtered = self
                .catalogue
                .filter(type_url, bytes, |c| released.contains(c))
                .map_err(|e| invalid(e.code(), e.to_string(), "payload"))?;
            payload_sha256 = sha256(&filtered.bytes);
            let recipient = Party::Institution(to.id.clone());
            let content = node_pb::DeliveryContent {
                payload: Some(prost_types::Any {
                    type_url: type_url.clone(),
                    value: filtered.bytes,
                }),
                written_request: request.written_request.clone(),
            };
            let aad = format!("{caller_id}/{}", request.transfer_id);
            let sealed = self
                .pseudonyms
                .seal(&recipient, aad.as_bytes(), &content.encode_to_vec())
                .map_err(|e| error(Code::Internal, e.code(), e.to_string(), None))?;
            let person = checked
                .person
                .as_ref()
                .map(|p| self.pseudonyms.translate(p, &caller_party, &recipient));
            let identity = checked.identity.filter(|_| released.contains(IDENTITY_AVS)).map(|i| {
                self.pseudonyms
                    .rekey_identity(&cii_pseudonym::gateway::Identity(i), &recipient)
                    .0
            });
            delivery = Some(node_pb::Delivery {
                transfer_id: request.transfer_id.clone(),
                sender: caller_id.clone(),
                person: person.map(|p| common_pb::EncryptedPseudonym {
                    ciphertext: cii_pseudonym::wire::to_bytes(&p),
                }),
                identity: identity.map(|i| common_pb::EncryptedIdentity {
                    ciphertext: cii_pseudonym::wire::to_bytes(&i),
                }),
                payload: Some(node_pb::SealedPayload {
                    key: cii_pseudonym::wire::to_bytes(&sealed.key),
                    nonce: sealed.nonce.to_vec(),
                    ciphertext: sealed.ciphertext,
                }),
                decision: Some(wire.clone()),
                receipt: None,
                notice: None,
            });
        }

        let entry = cii_audit::Entry {
            kind: if decision.is_permit() {
                cii_audit::EntryKind::TransferPermitted
            } else {
                cii_audit::EntryKind::TransferDenied
            } as i32,
            time_micros: crate::micros(now),
            transfer_id: request.transfer_id.clone(),
            sender: from.id.to_string(),
            recipient: to.id.to_string(),
            acting_user: caller.acting_user(),
            // A pull is answered with the catalogue's DataResponse: a DPO selects it by that type.
            exchange_type: match &checked.payload {
                Some((t, _)) => t.rsplit('/').next().unwrap_or(t).to_owned(),
                None if checked.pull => PULL_ANSWER_TYPE.to_owned(),
                None => String::new(),
            },
            purpose: request.purpose.clone(),
            trigger: checked.trigger.to_string(),
            bases: wire.bases.iter().map(|b| b.id.clone()).collect(),
            released: wire.released_categories.clone(),
            withheld: wire
                .withheld
                .iter()
                .map(|w| format!("{}:{}", w.category, w.code))
                .collect(),
            reasons: wire
                .reasons
                .iter()
                .map(|r| match &r.basis {
                    Some(b) => format!("{}:{}", r.code, b.id),
                    None => r.code.clone(),
                })
                .collect(),
            consents: if decision.is_permit() {
                consents.iter().map(|c| c.reference.clone()).collect()
            } else {
                Vec::new()
            },
            attestations: checked.attested.clone(),
            obligations: wire
                .obligations
                .iter()
                .map(|o| {
                    let due = o.due.map(|d| d.seconds).unwrap_or_default();
                    format!("{}:{}:{due}", o.kind, o.owner)
                })
                .collect(),
            audit_pseudonym: audit_person
                .map(|p| cii_pseudonym::wire::to_bytes(&p))
                .unwrap_or_default(),
            payload_sha256,
            written_request_sha256: if request.written_request.is_empty() {
                Vec::new()
            } else {
                sha256(request.written_request.as_bytes())
            },
            rulebook_hash: decision.rulebook_hash().to_owned(),
            ..cii_audit::Entry::default()
        };
        let state = if decision.is_permit() {
            State::Queued
        } else {
            State::Denied
        };
        let response = pb::TransferResponse {
            transfer_id: request.transfer_id.clone(),
            decision: Some(wire),
            state: state as i32,
            ..pb::TransferResponse::default()
        };
        let consent_ids: Vec<String> = if decision.is_permit() && !checked.pull {
            lookup
                .consents
                .iter()
                .filter_map(|c| c.consent.as_ref().map(|r| r.consent_id.clone()))
                .collect()
        } else {
            Vec::new()
        };
        // Recorded, held, before the entry is appended: a crash in between leaves a
        // held transfer that the next start (or the sender's retry) completes with
        // exactly one entry; nothing held is ever delivered.
        let entry_bytes = cii_audit::entry::encode(&entry);
        let delivery_bytes = delivery.as_ref().map(Message::encode_to_vec);
        self.store
            .record(&Decided {
                caller: &caller_id,
                transfer_id: &request.transfer_id,
                request_sha256: &request_sha256,
                counterparty: checked.counterparty.id.as_str(),
                pull: checked.pull,
                response: &response.encode_to_vec(),
                state: state as i32,
                delivery: delivery_bytes.as_deref(),
                obligations,
                consents: consent_ids,
                now_micros: crate::micros(now),
                entry: &entry_bytes,
                log_size_before: self.audit.checkpoint().0,
            })
            .await
            .map_err(|e| store_unavailable(&e))?;
        let receipt = self.audit.append(entry).await.map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "transfer not logged");
            self.metrics.refused(audit_unavailable(&e))
        })?;
        let mut response = self
            .release(
                &caller_id,
                &request.transfer_id,
                response,
                delivery,
                receipt_to_wire(&receipt),
            )
            .await?;
        Metrics::count(
            &self.metrics.decisions,
            if decision.is_permit() { "PERMIT" } else { "DENY" },
        );
        tracing::info!(
            transfer_id = %request.transfer_id,
            sender = %from.id,
            recipient = %to.id,
            permit = decision.is_permit(),
            "transfer decided"
        );
        if decision.is_permit() {
            if checked.pull {
                self.provide(caller, request, &checked, &released, &mut response)
                    .await?;
            } else if self
                .nodes
                .deliver_now(&self.store, &caller_id, &request.transfer_id)
                .await
            {
                response.state = State::Delivered as i32;
            }
        }
        Ok(response)
    }

    /// Adds the receipt to the response and the delivery, and releases the
    /// transfer for delivery.
    async fn release(
        &self,
        caller: &str,
        transfer_id: &str,
        mut response: pb::TransferResponse,
        mut delivery: Option<node_pb::Delivery>,
        receipt: common_pb::Receipt,
    ) -> Result<pb::TransferResponse, Status> {
        response.receipt = Some(receipt.clone());
        if let Some(d) = delivery.as_mut() {
            d.receipt = Some(receipt);
        }
        self.store
            .release(
                caller,
                transfer_id,
                &response.encode_to_vec(),
                delivery.map(|d| d.encode_to_vec()).as_deref(),
            )
            .await
            .map_err(|e| store_unavailable(&e))?;
        Ok(response)
    }

    /// Completes a held transfer: finds its entry in the log (appended before a
    /// crash) or appends it now, then releases it. Exactly one entry either way.
    pub async fn complete(&self, held: crate::store::Held) -> Result<pb::TransferResponse, Status> {
        let corrupt = || error(Code::Internal, "GATEWAY_STORE", "a held transfer does not decode", None);
        let entry = cii_audit::entry::decode(&held.entry).map_err(|_| corrupt())?;
        let response = pb::TransferResponse::decode(held.response.as_slice()).map_err(|_| corrupt())?;
        let delivery = match &held.delivery {
            Some(bytes) => Some(node_pb::Delivery::decode(bytes.as_slice()).map_err(|_| corrupt())?),
            None => None,
        };
        let receipt = match self.find_logged(&entry, held.log_size_before).await? {
            Some(index) => {
                let (size, note) = self.audit.checkpoint();
                let (_, leaf, proof) = self
                    .audit
                    .inclusion_proof(index, size)
                    .map_err(|e| error(Code::Internal, "AUDIT_INCONSISTENT", e.to_string(), None))?;
                common_pb::Receipt {
                    leaf_index: index,
                    leaf_hash: leaf.to_vec(),
                    checkpoint: note,
                    inclusion_proof: proof.iter().map(|h| h.to_vec()).collect(),
                }
            }
            None => receipt_to_wire(&self.audit.append(entry).await.map_err(|e| audit_unavailable(&e))?),
        };
        tracing::info!(transfer_id = %held.transfer_id, audit_index = receipt.leaf_index, "held transfer completed");
        self.release(&held.caller, &held.transfer_id, response, delivery, receipt)
            .await
    }

    /// The index of `entry` in the log at or after `from`, if it was appended.
    async fn find_logged(&self, entry: &cii_audit::Entry, from: u64) -> Result<Option<u64>, Status> {
        let mut next = from;
        loop {
            let batch = self.audit_store.entries(next, 1000).await.map_err(|e| {
                tracing::error!(error = %e, "audit store not readable");
                error(
                    Code::Unavailable,
                    "AUDIT_UNAVAILABLE",
                    "the audit log could not be read; retry later",
                    None,
                )
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

    /// Completes every held transfer (at start, after a crash).
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
            if let Err(status) = self.complete(transfer).await {
                tracing::error!(transfer_id = %id, code = ?status.code(), "held transfer not completed");
            }
        }
        self.nodes.wake.notify_one();
    }

    /// Decides; a permit relying on one-off consents marks them used at the
    /// registry first. A one-off consent another transfer used in between is
    /// dropped and the transfer decided again without it.
    async fn decide_consuming(
        &self,
        transfer: &mut decide::Transfer,
        lookup: &registry_pb::LookupResponse,
        reference: &str,
    ) -> Result<decide::Decision, Status> {
        loop {
            let decision = decide::decide(&self.rulebook, transfer).map_err(|e| {
                let field = match e {
                    decide::InputError::UnknownPurpose(_) => "purpose",
                    _ => "categories",
                };
                self.metrics.refused(invalid(e.code(), e.to_string(), field))
            })?;
            // Only a permit that rests on consent uses it up.
            let rests_on_consent = decision.bases().iter().any(|i| {
                self.rulebook.bases.get(*i).is_some_and(|b| {
                    b.conditions
                        .iter()
                        .any(|c| matches!(c, Condition::Consent | Condition::WrittenConsent))
                })
            });
            if !decision.is_permit() || !rests_on_consent {
                return Ok(decision);
            }
            let one_off: Vec<&registry_pb::ConsentRecord> = lookup
                .consents
                .iter()
                .filter_map(|c| c.consent.as_ref())
                .filter(|r| r.recurrence == registry_pb::Recurrence::OneOff as i32)
                .filter(|r| {
                    let reference = format!("{}@{}", r.consent_id, r.version);
                    transfer.consents.iter().any(|c| c.reference == reference)
                })
                .collect();
            let mut dropped = false;
            for record in one_off {
                let marked = self
                    .consent
                    .clone()
                    .mark_used(registry_pb::MarkUsedRequest {
                        consent_id: record.consent_id.clone(),
                        version: record.version,
                        transfer: reference.to_owned(),
                    })
                    .await;
                match marked {
                    Ok(_) => {}
                    Err(status) if status.code() == Code::FailedPrecondition => {
                        let reference = format!("{}@{}", record.consent_id, record.version);
                        transfer.consents.retain(|c| c.reference != reference);
                        dropped = true;
                    }
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), "one-off consent not marked used");
                        return Err(self.metrics.refused(error(
                            Code::Unavailable,
                            "CONSENT_REGISTRY_UNAVAILABLE",
                            "the consent registry could not mark a one-off consent used; retry later",
                            None,
                        )));
                    }
                }
            }
            if !dropped {
                return Ok(decision);
            }
        }
    }

    fn claim(&self, caller: &str, transfer_id: &str) -> Result<Slot<'_>, Status> {
        let key = (caller.to_owned(), transfer_id.to_owned());
        let mut set = self
            .in_flight
            .lock()
            .map_err(|_| error(Code::Internal, "INTERNAL", "in-flight set poisoned", None))?;
        if !set.insert(key.clone()) {
            return Err(self.metrics.refused(error(
                Code::Aborted,
                "TRANSFER_IN_PROGRESS",
                "the same transfer id is being processed; retry shortly",
                Some("transfer_id"),
            )));
        }
        Ok(Slot {
            set: &self.in_flight,
            key,
        })
    }

    /// The same id again: the recorded outcome (and for a permitted pull, the
    /// data again); other bytes under the same id are refused.
    async fn replay(
        &self,
        caller: &Caller,
        request: &pb::TransferRequest,
        request_sha256: &[u8],
        checked: &Checked<'_>,
    ) -> Result<Option<pb::TransferResponse>, Status> {
        let caller_id = caller.institution.id.to_string();
        let Some(row) = self
            .store
            .transfer(&caller_id, &request.transfer_id)
            .await
            .map_err(|e| store_unavailable(&e))?
        else {
            return Ok(None);
        };
        if row.request_sha256 != request_sha256 {
            return Err(self.metrics.refused(error(
                Code::AlreadyExists,
                "TRANSFER_ID_REUSED",
                "this transfer id was already used for a different request; choose a new id",
                Some("transfer_id"),
            )));
        }
        let pull = row.pull;
        let mut response = if row.held {
            // Decided but its entry not known to be logged (the append failed or the
            // gateway stopped): complete it now, exactly one entry either way.
            let held = self
                .store
                .held()
                .await
                .map_err(|e| store_unavailable(&e))?
                .into_iter()
                .find(|h| h.caller == caller_id && h.transfer_id == request.transfer_id)
                .ok_or_else(|| {
                    error(
                        Code::Aborted,
                        "TRANSFER_IN_PROGRESS",
                        "retry shortly",
                        Some("transfer_id"),
                    )
                })?;
            let response = self.complete(held).await?;
            self.nodes.wake.notify_one();
            response
        } else {
            recorded(row)?
        };
        let permitted = response
            .decision
            .as_ref()
            .is_some_and(|d| d.outcome == common_pb::decision::Outcome::Permit as i32);
        if pull && permitted {
            let released: BTreeSet<String> = response
                .decision
                .as_ref()
                .map(|d| d.released_categories.iter().cloned().collect())
                .unwrap_or_default();
            self.provide(caller, request, checked, &released, &mut response).await?;
        }
        Ok(Some(response))
    }

    /// A permitted pull: the holder answers from its store; the gateway filters
    /// its answer to the released categories and returns it with the person in
    /// the caller's domain. The permit is in the log already.
    async fn provide(
        &self,
        caller: &Caller,
        request: &pb::TransferRequest,
        checked: &Checked<'_>,
        released: &BTreeSet<String>,
        response: &mut pb::TransferResponse,
    ) -> Result<(), Status> {
        let caller_party = Party::Institution(caller.institution.id.clone());
        let holder = Party::Institution(checked.counterparty.id.clone());
        // `check` requires a person for every pull.
        let asked = checked
            .person
            .as_ref()
            .ok_or_else(|| invalid("FIELD_REQUIRED", "person is required", "person"))?;
        let person = self.pseudonyms.translate(asked, &caller_party, &holder);
        let ask = node_pb::ProvideRequest {
            transfer_id: request.transfer_id.clone(),
            requester: caller.institution.id.to_string(),
            person: Some(common_pb::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&person),
            }),
            categories: released.iter().cloned().collect(),
            written_request: request.written_request.clone(),
            decision: response.decision.clone(),
            receipt: response.receipt.clone(),
        };
        let answer = self
            .nodes
            .provide(&checked.counterparty.id, ask)
            .await
            .map_err(|status| {
                tracing::warn!(holder = %checked.counterparty.id, code = ?status.code(), "holder did not provide");
                if status.code() == Code::NotFound {
                    return error(
                        Code::NotFound,
                        "HOLDER_HAS_NO_DATA",
                        format!(
                            "{} holds no data about the person ({})",
                            checked.counterparty.id,
                            cii_kit::grpc::error_code(&status).unwrap_or_default()
                        ),
                        None,
                    );
                }
                error(
                    Code::Unavailable,
                    "HOLDER_UNAVAILABLE",
                    format!(
                        "{} did not provide the data ({}); retry with the same transfer id",
                        checked.counterparty.id,
                        cii_kit::grpc::error_code(&status).unwrap_or_else(|| format!("{:?}", status.code()))
                    ),
                    None,
                )
            })?;
        let payload = answer.payload.ok_or_else(|| {
            error(
                Code::Unavailable,
                "HOLDER_ANSWER_EMPTY",
                "the holder answered without data",
                None,
            )
        })?;
        let filtered = self
            .catalogue
            .filter(&payload.type_url, &payload.value, |c| released.contains(c))
            .map_err(|e| {
                tracing::warn!(code = e.code(), "holder answered with an invalid payload");
                error(Code::Unavailable, "HOLDER_ANSWER_INVALID", e.to_string(), None)
            })?;
        let back = self.pseudonyms.translate(&person, &holder, &caller_party);
        response.provided = Some(prost_types::Any {
            type_url: payload.type_url,
            value: filtered.bytes,
        });
        response.provided_person = Some(common_pb::EncryptedPseudonym {
            ciphertext: cii_pseudonym::wire::to_bytes(&back),
        });
        response.state = State::Delivered as i32;
        let caller_id = caller.institution.id.to_string();
        if let Err(e) = self.store.provided(&caller_id, &request.transfer_id).await {
            tracing::warn!(error = %e, "pull state not updated");
        }
        Ok(())
    }

    /// Gives each obligation of the decision its id, owner and due date; the
    /// rows to store with the transfer.
    fn obligations(
        &self,
        wire: &mut common_pb::Decision,
        transfer_id: &str,
        from: &Institution,
        to: &Institution,
        now: time::OffsetDateTime,
        caller: &str,
    ) -> Vec<(String, String, i64, Vec<u8>)> {
        let mut rows = Vec::new();
        for (n, o) in wire.obligations.iter_mut().enumerate() {
            // The decision names the owner by role; the transfer names the institution.
            let owner = if o.owner == from.kind.to_string() || o.owner == from.id.to_string() {
                from
            } else {
                to
            };
            let due_days = self
                .rulebook
                .bases
                .iter()
                .find(|b| Some(&b.id) == o.basis.as_ref().map(|r| &r.id))
                .and_then(|b| b.obligations.iter().find(|s| s.kind.to_string() == o.kind))
                .map_or(30, |s| s.due_days);
            let due = now + time::Duration::days(i64::from(due_days));
            o.id = format!("{caller}:{transfer_id}:{n}");
            o.owner = owner.id.to_string();
            o.due = Some(crate::timestamp(due));
            rows.push((o.id.clone(), o.owner.clone(), crate::micros(due), o.encode_to_vec()));
        }
        rows
    }
}

/// The answer recorded for a transfer, with its current delivery state.
pub(crate) fn recorded(row: crate::store::TransferRow) -> Result<pb::TransferResponse, Status> {
    let mut response = pb::TransferResponse::decode(row.response.as_slice()).map_err(|_| {
        error(
            Code::Internal,
            "GATEWAY_STORE",
            "a recorded transfer does not decode",
            None,
        )
    })?;
    response.state = row.state;
    response.delivery_attempts = row.attempts;
    response.last_delivery_error = row.last_error;
    Ok(response)
}

/// Checks a transfer id: 1–64 characters of `A–Z a–z 0–9 . _ : -`.
pub fn check_transfer_id(id: &str) -> Result<(), Status> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
    if id.is_empty() || id.len() > MAX_TRANSFER_ID || !id.chars().all(allowed) {
        return Err(invalid(
            "TRANSFER_ID_INVALID",
            format!("transfer_id must be 1–{MAX_TRANSFER_ID} characters of A–Z, a–z, 0–9, '.', '_', ':', '-'"),
            "transfer_id",
        ));
    }
    // The id is logged and stored at the gateway: it must not carry an AVS number.
    let digits: String = id.chars().filter(char::is_ascii_digit).collect();
    if digits.len() == 13 && digits.starts_with("756") {
        return Err(invalid(
            "TRANSFER_ID_IS_AVS",
            "transfer_id looks like an AVS number; use a UUID",
            "transfer_id",
        ));
    }
    Ok(())
}

pub(crate) fn store_unavailable(e: &crate::store::StoreError) -> Status {
    tracing::error!(error = %e, "gateway store failed");
    error(
        Code::Unavailable,
        "GATEWAY_STORE_UNAVAILABLE",
        "the gateway's store failed; nothing was done, retry later",
        None,
    )
}
