//! Handlers of `cii.consent.v1.ConsentRegistry`. Only the gateway reaches
//! them (mutual TLS); it names the acting institution and user in `Actor`
//! from what it authenticated, and sends persons already transcrypted into
//! the registry's domain.

use std::sync::Arc;

use cii_kit::clock::Clock;
use cii_kit::registry::Live;
use cii_proto::consent::{self as pb, consent_registry_server::ConsentRegistry};
use cii_pseudonym::node::NodeKeys;
use cii_types::time::{micros as micros_of, micros_of_timestamp as micros, timestamp_of_micros as timestamp};
use tonic::{Request, Response, Status};

use crate::error::ConsentError;

use crate::model::{self, Answer, Consent, Invalid, Micros, Question, Recurrence, Revocation, Status as State};
use crate::store::{Person, Store, StoreError};

/// Most changes per page of the feed.
const MAX_CHANGES: u32 = 1_000;
/// Most held changes listed at once (each carries an entry draft).
const MAX_HELD: u32 = 100;

/// The registry's rpc handlers.
#[derive(Debug)]
pub struct ConsentService {
    store: Store,
    keys: Arc<NodeKeys>,
    vocabulary: Arc<Vocabulary>,
    clock: Arc<dyn Clock>,
}

/// The registry's institutions and the rulebook's categories and purposes.
#[derive(Debug)]
pub struct Vocabulary {
    /// The network's members.
    pub registry: Live,
    /// The rulebook.
    pub rulebook: Arc<cii_policy::Rulebook>,
}

impl model::Vocabulary for Vocabulary {
    fn knows_institution(&self, id: &str) -> bool {
        self.registry.current().institutions().any(|i| i.id.as_str() == id)
    }
    fn knows_category(&self, id: &str) -> bool {
        self.rulebook.category_index(id).is_some()
    }
    fn knows_purpose(&self, id: &str) -> bool {
        self.rulebook.purpose_index(id).is_some()
    }
}

impl ConsentService {
    pub fn new(
        store: Store,
        keys: Arc<NodeKeys>,
        vocabulary: Arc<Vocabulary>,
        clock: Arc<dyn Clock>,
    ) -> ConsentService {
        ConsentService {
            store,
            keys,
            vocabulary,
            clock,
        }
    }

    fn now(&self) -> Micros {
        micros_of(self.clock.now())
    }

    fn refuse(&self, invalid: Invalid) -> Status {
        invalid.into()
    }

    /// The acting institution and user; the institution must be a registry member.
    fn actor(&self, actor: Option<&pb::Actor>) -> Result<(String, String), Status> {
        let actor = actor.filter(|a| !a.user.is_empty()).ok_or_else(|| {
            self.refuse(model::invalid(
                "ACTOR_REQUIRED",
                "actor",
                "the acting institution and user are required",
            ))
        })?;
        if !model::Vocabulary::knows_institution(&*self.vocabulary, &actor.institution) {
            return Err(self.refuse(model::invalid(
                "UNKNOWN_INSTITUTION",
                "actor.institution",
                format!("{} is not in the registry", actor.institution),
            )));
        }
        Ok((actor.institution.clone(), actor.user.clone()))
    }

    /// The person in the registry's domain, decrypted with the registry's key.
    fn person(&self, field: &str, person: Option<&cii_proto::common::EncryptedPseudonym>) -> Result<Person, Status> {
        let person = person
            .ok_or_else(|| self.refuse(model::invalid("FIELD_REQUIRED", field, format!("{field} is required"))))?;
        let ciphertext = cii_pseudonym::wire::pseudonym(&person.ciphertext)
            .map_err(|e| self.refuse(model::invalid(e.code(), format!("{field}.ciphertext"), e.to_string())))?;
        Ok(self.keys.decrypt(&ciphertext).0)
    }

    fn store_error(&self, e: StoreError) -> Status {
        e.into()
    }

    /// The consent's versions, if `institution` may see it; otherwise "not found"
    /// (an institution does not learn that consents it is not part of exist).
    async fn visible_history(&self, id: &str, institution: &str) -> Result<(Person, Vec<Consent>), Status> {
        match self.store.history(id).await.map_err(|e| self.store_error(e))? {
            Some((person, versions)) if versions.iter().any(|c| c.concerns(institution)) => Ok((person, versions)),
            _ => Err(self.store_error(StoreError::NotFound)),
        }
    }
}

impl ConsentService {
    /// Declares (`declare`) or ends the actor's institution's relationship with the person.
    async fn relationship(
        &self,
        request: pb::RelationshipRequest,
        declare: bool,
    ) -> Result<Response<pb::RelationshipResponse>, Status> {
        let (institution, user) = self.actor(request.actor.as_ref())?;
        let person = self.person("person", request.person.as_ref())?;
        model::check_capacity(&request.capacity).map_err(|e| self.refuse(e))?;
        let at = request.at.as_ref().map_or_else(|| self.now(), micros);
        let capacity = &request.capacity;
        if declare {
            let new = self
                .store
                .declare(&person, &institution, capacity, at, &user)
                .await
                .map_err(|e| self.store_error(e))?;
            tracing::info!(%institution, %capacity, new, "relationship declared");
        } else {
            let ended = self
                .store
                .end(&person, &institution, capacity, at, &user)
                .await
                .map_err(|e| self.store_error(e))?;
            if !ended {
                return Err(ConsentError::RelationshipNotFound {
                    institution: institution.clone(),
                    capacity: capacity.to_owned(),
                }
                .into());
            }
            tracing::info!(%institution, %capacity, "relationship ended");
        }
        Ok(Response::new(pb::RelationshipResponse { active: declare }))
    }
}

/// The wire form of a consent, with its state at `now`.
fn to_wire(c: &Consent, now: Micros) -> pb::ConsentRecord {
    pb::ConsentRecord {
        consent_id: c.id.clone(),
        version: c.version,
        recorded_by: c.recorded_by.clone(),
        recorded_by_user: c.recorded_by_user.clone(),
        institutions: c.institutions.iter().cloned().collect(),
        categories: c.categories.iter().cloned().collect(),
        purposes: c.purposes.iter().cloned().collect(),
        valid_from: Some(timestamp(c.valid_from)),
        valid_until: Some(timestamp(c.valid_until)),
        written: c.written,
        evidence_sha256: c.evidence_sha256.clone(),
        evidence_reference: c.evidence_reference.clone(),
        status: match c.status(now) {
            State::Active => pb::ConsentStatus::ConsentActive,
            State::Revoked => pb::ConsentStatus::ConsentRevoked,
            State::Expired => pb::ConsentStatus::ConsentExpired,
            State::NotYetValid => pb::ConsentStatus::ConsentNotYetValid,
        } as i32,
        directions: c
            .directions
            .iter()
            .map(|(from, to)| pb::Direction {
                from: from.clone(),
                to: to.clone(),
            })
            .collect(),
        recurrence: match c.recurrence {
            Recurrence::OneOff => pb::Recurrence::OneOff,
            Recurrence::Recurring => pb::Recurrence::Recurring,
        } as i32,
        onward_transfer_allowed: c.onward_transfer_allowed,
        information_given: c.information_given.clone(),
        representative: c.representative.clone(),
        language: c.language.clone(),
        revocation: c.revocation.as_ref().map(|r| pb::Revocation {
            at: Some(timestamp(r.at)),
            institution: r.institution.clone(),
            user: r.user.clone(),
            channel: r.channel.clone(),
        }),
        recorded_at: Some(timestamp(c.recorded_at)),
    }
}

/// A declaration from the wire, recorded by `actor`; the registry's fields are left for the store.
fn from_wire(r: &pb::ConsentRecord, institution: &str, user: &str) -> Result<Consent, Invalid> {
    let valid_from = r
        .valid_from
        .as_ref()
        .ok_or_else(|| model::invalid("VALIDITY_REQUIRED", "consent.valid_from", "valid_from is required"))?;
    let valid_until = r
        .valid_until
        .as_ref()
        .ok_or_else(|| model::invalid("VALIDITY_REQUIRED", "consent.valid_until", "valid_until is required"))?;
    let recurrence = match pb::Recurrence::try_from(r.recurrence) {
        Ok(pb::Recurrence::OneOff) => Recurrence::OneOff,
        Ok(pb::Recurrence::Recurring) => Recurrence::Recurring,
        _ => {
            return Err(model::invalid(
                "RECURRENCE_REQUIRED",
                "consent.recurrence",
                "ONE_OFF or RECURRING",
            ));
        }
    };
    Ok(Consent {
        id: r.consent_id.clone(),
        version: 0,
        recorded_by: institution.to_owned(),
        recorded_by_user: user.to_owned(),
        recorded_at: 0,
        institutions: r.institutions.iter().cloned().collect(),
        directions: r.directions.iter().map(|d| (d.from.clone(), d.to.clone())).collect(),
        categories: r.categories.iter().cloned().collect(),
        purposes: r.purposes.iter().cloned().collect(),
        valid_from: micros(valid_from),
        valid_until: micros(valid_until),
        written: r.written,
        evidence_sha256: r.evidence_sha256.clone(),
        evidence_reference: r.evidence_reference.clone(),
        recurrence,
        onward_transfer_allowed: r.onward_transfer_allowed,
        information_given: r.information_given.clone(),
        representative: r.representative.clone(),
        language: r.language.clone(),
        revocation: None,
    })
}

#[tonic::async_trait]
impl ConsentRegistry for ConsentService {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::ConsentRecord>, Status> {
        let request = request.into_inner();
        let (institution, user) = self.actor(request.actor.as_ref())?;
        let person = self.person("person", request.person.as_ref())?;
        let record = request
            .consent
            .as_ref()
            .ok_or_else(|| self.refuse(model::invalid("FIELD_REQUIRED", "consent", "consent is required")))?;
        let consent = from_wire(record, &institution, &user).map_err(|e| self.refuse(e))?;
        model::check(&consent, &*self.vocabulary).map_err(|e| self.refuse(e))?;
        let now = self.now();
        if consent.valid_until < now {
            return Err(self.refuse(model::invalid(
                "VALIDITY_PAST",
                "consent.valid_until",
                "the period has already ended",
            )));
        }
        if !consent.id.is_empty() {
            self.visible_history(&consent.id, &institution).await?;
        }
        let held = held_of(request.held.as_ref());
        let stored = self
            .store
            .record(&person, consent, now, held.as_ref())
            .await
            .map_err(|e| self.store_error(e))?;
        tracing::info!(consent = %stored.id, version = stored.version, %institution, "consent recorded");
        Ok(Response::new(to_wire(&stored, now)))
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<pb::ConsentRecord>, Status> {
        let request = request.into_inner();
        let (institution, user) = self.actor(request.actor.as_ref())?;
        model::check_channel(&request.channel).map_err(|e| self.refuse(e))?;
        let (owner, _) = self.visible_history(&request.consent_id, &institution).await?;
        if request.person.is_some() && self.person("person", request.person.as_ref())? != owner {
            return Err(self.store_error(StoreError::PersonMismatch));
        }
        let now = self.now();
        let revoked = self
            .store
            .revoke(
                &request.consent_id,
                Revocation {
                    at: now,
                    institution: institution.clone(),
                    user,
                    channel: request.channel,
                },
                held_of(request.held.as_ref()).as_ref(),
            )
            .await
            .map_err(|e| self.store_error(e))?;
        // Committed: every lookup that starts from here on reads it.
        tracing::info!(consent = %revoked.id, version = revoked.version, %institution, "consent revoked");
        Ok(Response::new(to_wire(&revoked, now)))
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::ConsentHistory>, Status> {
        let request = request.into_inner();
        let (institution, _) = self.actor(request.actor.as_ref())?;
        let (_, versions) = self.visible_history(&request.consent_id, &institution).await?;
        let now = self.now();
        Ok(Response::new(pb::ConsentHistory {
            versions: versions.iter().map(|c| to_wire(c, now)).collect(),
        }))
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        let request = request.into_inner();
        let (institution, _) = self.actor(request.actor.as_ref())?;
        let person = self.person("person", request.person.as_ref())?;
        let now = self.now();
        let consents = self.store.for_person(&person).await.map_err(|e| self.store_error(e))?;
        Ok(Response::new(pb::ListConsentsResponse {
            consents: consents
                .iter()
                .filter(|c| c.concerns(&institution))
                .map(|c| to_wire(c, now))
                .collect(),
        }))
    }

    async fn list_expiring(
        &self,
        request: Request<pb::ListExpiringRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        let request = request.into_inner();
        let (institution, _) = self.actor(request.actor.as_ref())?;
        if !(1..=366).contains(&request.within_days) {
            return Err(self.refuse(model::invalid("DAYS_OUT_OF_RANGE", "within_days", "between 1 and 366")));
        }
        let now = self.now();
        let until = now.saturating_add(i64::from(request.within_days) * 24 * 3600 * 1_000_000);
        let consents = self.store.expiring(now, until).await.map_err(|e| self.store_error(e))?;
        Ok(Response::new(pb::ListConsentsResponse {
            consents: consents
                .iter()
                .filter(|c| c.concerns(&institution))
                .map(|c| to_wire(c, now))
                .collect(),
        }))
    }

    async fn lookup(&self, request: Request<pb::LookupRequest>) -> Result<Response<pb::LookupResponse>, Status> {
        let request = request.into_inner();
        let person = self.person("person", request.person.as_ref())?;
        for (field, id) in [("sender", &request.sender), ("recipient", &request.recipient)] {
            if !model::Vocabulary::knows_institution(&*self.vocabulary, id) {
                return Err(self.refuse(model::invalid(
                    "UNKNOWN_INSTITUTION",
                    field,
                    format!("{id} is not in the registry"),
                )));
            }
        }
        if request.categories.is_empty() {
            return Err(self.refuse(model::invalid(
                "SCOPE_EMPTY",
                "categories",
                "name the categories in question",
            )));
        }
        if request.purpose.is_empty() {
            return Err(self.refuse(model::invalid("FIELD_REQUIRED", "purpose", "purpose is required")));
        }
        let now = self.now();
        let at = request.at.as_ref().map_or(now, micros);
        let question = Question {
            sender: &request.sender,
            recipient: &request.recipient,
            categories: &request.categories,
            purpose: &request.purpose,
            at,
        };
        let consents = self.store.for_person(&person).await.map_err(|e| self.store_error(e))?;
        let one_off: Vec<String> = consents
            .iter()
            .filter(|c| c.recurrence == Recurrence::OneOff)
            .map(|c| c.id.clone())
            .collect();
        let used = self.store.used(&one_off).await.map_err(|e| self.store_error(e))?;
        let mut answer = pb::LookupResponse::default();
        for consent in &consents {
            let verdict = match model::answer(consent, &question) {
                // Used by this same transfer shortly before (the gateway's retry), it still covers it.
                Answer::Covers { .. }
                    if used
                        .get(&consent.id)
                        .is_some_and(|(owner, at)| !crate::store::is_retry_of(owner, *at, &request.transfer, now)) =>
                {
                    Answer::DoesNotCover(vec!["USED"])
                }
                other => other,
            };
            match verdict {
                Answer::Covers { covered, uncovered } => answer.consents.push(pb::Coverage {
                    consent: Some(to_wire(consent, now)),
                    covered_categories: covered,
                    uncovered_categories: uncovered,
                }),
                Answer::DoesNotCover(reasons) => answer.not_covering.push(pb::NotCovering {
                    consent_id: consent.id.clone(),
                    version: consent.version,
                    reasons: reasons.into_iter().map(str::to_owned).collect(),
                }),
            }
        }
        answer.sender_serves_person = self
            .store
            .serves(&person, &request.sender, at)
            .await
            .map_err(|e| self.store_error(e))?;
        answer.recipient_capacities = self
            .store
            .capacities(&person, &request.recipient, at)
            .await
            .map_err(|e| self.store_error(e))?;
        answer.recipient_serves_person = !answer.recipient_capacities.is_empty();
        tracing::debug!(
            sender = %request.sender,
            recipient = %request.recipient,
            covering = answer.consents.len(),
            "lookup"
        );
        Ok(Response::new(answer))
    }

    async fn declare_relationship(
        &self,
        request: Request<pb::RelationshipRequest>,
    ) -> Result<Response<pb::RelationshipResponse>, Status> {
        self.relationship(request.into_inner(), true).await
    }

    async fn end_relationship(
        &self,
        request: Request<pb::RelationshipRequest>,
    ) -> Result<Response<pb::RelationshipResponse>, Status> {
        self.relationship(request.into_inner(), false).await
    }

    async fn mark_used(&self, request: Request<pb::MarkUsedRequest>) -> Result<Response<pb::MarkUsedResponse>, Status> {
        let request = request.into_inner();
        if request.transfer.is_empty() {
            return Err(self.refuse(model::invalid("FIELD_REQUIRED", "transfer", "transfer is required")));
        }
        let now = self.now();
        let marked = self
            .store
            .mark_used(&request.consent_id, request.version, &request.transfer, now)
            .await
            .map_err(|e| match e {
                StoreError::NotActive => ConsentError::NotUsable,
                other => ConsentError::Store(other),
            })?;
        if !marked {
            return Err(ConsentError::AlreadyUsed.into());
        }
        tracing::info!(consent_id = %request.consent_id, version = request.version, "one-off consent used");
        Ok(Response::new(pb::MarkUsedResponse {}))
    }

    async fn activate_change(
        &self,
        request: Request<pb::ActivateChangeRequest>,
    ) -> Result<Response<pb::ActivateChangeResponse>, Status> {
        let request = request.into_inner();
        let was_held = self
            .store
            .activate(&request.consent_id, request.version)
            .await
            .map_err(|e| self.store_error(e))?;
        if was_held {
            tracing::info!(consent_id = %request.consent_id, version = request.version, "held change activated");
        }
        Ok(Response::new(pb::ActivateChangeResponse { was_held }))
    }

    async fn list_held_changes(
        &self,
        request: Request<pb::ListHeldChangesRequest>,
    ) -> Result<Response<pb::ListHeldChangesResponse>, Status> {
        let limit = match request.get_ref().limit {
            0 => MAX_HELD,
            n => n.min(MAX_HELD),
        };
        let held = self.store.held(limit).await.map_err(|e| self.store_error(e))?;
        Ok(Response::new(pb::ListHeldChangesResponse {
            changes: held
                .into_iter()
                .map(|c| pb::HeldChangeRecord {
                    consent_id: c.consent_id,
                    version: c.version,
                    held: Some(pb::HeldChange {
                        log_size: c.held.log_size,
                        entry_draft: c.held.entry_draft,
                    }),
                    held_at: Some(timestamp(c.at)),
                })
                .collect(),
        }))
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => MAX_CHANGES,
            n => n.min(MAX_CHANGES),
        };
        let changes = self
            .store
            .changes(request.after, limit)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(Response::new(pb::ListChangesResponse {
            changes: changes
                .into_iter()
                .map(|c| pb::Change {
                    sequence: c.sequence,
                    consent_id: c.consent_id,
                    version: c.version,
                    kind: if c.kind == "revoked" {
                        pb::ChangeKind::ChangeRevoked
                    } else {
                        pb::ChangeKind::ChangeExpired
                    } as i32,
                    at: Some(timestamp(c.at)),
                    institutions: c.institutions,
                })
                .collect(),
        }))
    }
}

/// The gateway's note for a change it holds until logged.
fn held_of(held: Option<&pb::HeldChange>) -> Option<crate::store::Held> {
    held.map(|h| crate::store::Held {
        log_size: h.log_size,
        entry_draft: h.entry_draft.clone(),
    })
}
