//! Handlers of `cii.gateway.v1.Consents`: institutions manage consents and
//! their relationships in the consent registry through the gateway. The person
//! is transcrypted from the caller's domain (its certificate) into the
//! registry's and the audit context; the actor is the caller's institution and
//! user, never a claim in the request. Every change is an audit entry.
//!
//! Consent changes follow the held pattern: the registry records the change
//! *held* (a held new consent covers nothing, a held revocation is in force at
//! once) together with the entry's draft and the log's size; the gateway then
//! appends the entry, naming the version the registry assigned, and activates
//! the change. A change left held by a crash or a failed append is completed by
//! [`complete_held`] — its entry found in the log from that size, or appended —
//! exactly one entry either way.

use std::sync::Arc;

use cii_audit::Log;
use cii_kit::auth::{Caller, caller};
use cii_kit::clock::Clock;
use cii_kit::status::error_code;
use cii_proto::consent::{self as registry, consent_registry_client::ConsentRegistryClient};
use cii_proto::gateway::{self as pb, consents_server::Consents};
use cii_pseudonym::names::Party;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::GatewayError;
use crate::failpoints::Point;
use crate::transfer::ciphertext;

/// The consent rpc handlers.
#[derive(Debug)]
pub struct ConsentsService {
    registry: ConsentRegistryClient<Channel>,
    pseudonyms: crate::pseudonyms::Pseudonyms,
    audit: Log,
    clock: Arc<dyn Clock>,
    completion: Completion,
}

/// What completes held consent changes: the registry, the log, and the lock that keeps the
/// completion of held changes apart from handlers between the registry's commit and activation.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The consent registry.
    pub registry: ConsentRegistryClient<Channel>,
    /// The audit log.
    pub audit: Log,
    /// Its store, to find an entry already appended.
    pub audit_store: cii_audit::Store,
    /// Handlers hold it shared from the registry call to the activation; [`complete_held`]
    /// holds it alone, so a change it completes is no handler's any more.
    pub in_flight: Arc<tokio::sync::RwLock<()>>,
}

/// A person as the registry and the audit log receive them.
struct Person {
    registry: cii_proto::common::EncryptedPseudonym,
    audit: Vec<u8>,
}

fn actor(caller: &Caller) -> Option<registry::Actor> {
    Some(registry::Actor {
        institution: caller.institution.id.to_string(),
        user: caller.user.subject.clone(),
    })
}

/// The registry's refusals pass through with their code; a registry out of reach is retryable.
fn registry_error(status: Status) -> Status {
    if error_code(&status).is_some() {
        status
    } else {
        tracing::warn!(code = ?status.code(), "consent registry unreachable");
        GatewayError::ConsentRegistryUnavailable.into()
    }
}

impl ConsentsService {
    pub fn new(
        pseudonyms: crate::pseudonyms::Pseudonyms,
        clock: Arc<dyn Clock>,
        completion: Completion,
    ) -> ConsentsService {
        ConsentsService {
            registry: completion.registry.clone(),
            pseudonyms,
            audit: completion.audit.clone(),
            clock,
            completion,
        }
    }

    /// The entry of a consent change, before the registry names its version.
    fn draft(&self, caller: &Caller, kind: cii_audit::EntryKind, person: Vec<u8>, detail: String) -> cii_audit::Entry {
        cii_audit::Entry {
            kind: kind as i32,
            time_micros: cii_types::time::micros(self.clock.now()),
            sender: caller.institution.id.to_string(),
            acting_user: caller.acting_user(),
            audit_pseudonym: person,
            key_epoch: self.pseudonyms.epoch(),
            detail,
            ..cii_audit::Entry::default()
        }
    }

    /// Runs a held change (registry, log, activation) to its end in a task of its own, holding
    /// the in-flight lock: a caller that gives up (deadline, disconnect) does not release the
    /// lock while its entry is still queued for the log, where `complete_held` would not find it.
    async fn held_change<T: Send + 'static>(
        &self,
        change: impl std::future::Future<Output = Result<T, Status>> + Send + 'static,
    ) -> Result<T, Status> {
        let in_flight = self.completion.in_flight.clone().read_owned().await;
        tokio::spawn(async move {
            let _in_flight = in_flight;
            change.await
        })
        .await
        // Only a panic ends the task early: the change stays held and is completed later.
        .unwrap_or_else(|_| Err(GatewayError::Audit(cii_audit::LogError::Closed).into()))
    }

    /// What the registry keeps with a held change: the log's size now and the entry's draft.
    fn held(&self, draft: &cii_audit::Entry) -> Result<registry::HeldChange, Status> {
        // The draft must be an entry the log accepts: refused here, nothing is held.
        cii_audit::entry::check(&cii_audit::Entry {
            consents: vec![format!("{}@1", "x".repeat(32))],
            ..draft.clone()
        })
        .map_err(|e| GatewayError::Audit(cii_audit::LogError::Refused(e)))?;
        Ok(registry::HeldChange {
            log_size: self.audit.checkpoint().0,
            entry_draft: cii_audit::entry::encode(draft),
        })
    }

    async fn person(
        &self,
        caller: &Caller,
        person: Option<&cii_proto::common::EncryptedPseudonym>,
        purpose: &str,
    ) -> Result<Person, Status> {
        let from = cii_pseudonym::shares::Source::node(Some(Party::Institution(caller.institution.id.clone())));
        let ciphertext = ciphertext("person", person).map_err(GatewayError::from)?;
        let mut both = self
            .pseudonyms
            .pseudonyms(
                vec![
                    (ciphertext, from.clone(), Party::Registry),
                    (ciphertext, from, Party::Audit),
                ],
                &crate::pseudonyms::of(purpose, caller.institution.id.as_str(), ""),
            )
            .await
            .map_err(GatewayError::from)?;
        let (Some(to_audit), Some(to_registry)) = (both.pop(), both.pop()) else {
            return Err(GatewayError::from(crate::pseudonyms::PseudonymsError::Invalid(
                "too few results".to_owned(),
            ))
            .into());
        };
        Ok(Person {
            registry: cii_proto::common::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&to_registry),
            },
            audit: cii_pseudonym::wire::to_bytes(&to_audit),
        })
    }

    /// Appends the entry of a relationship change the registry committed.
    async fn log(
        &self,
        caller: &Caller,
        kind: cii_audit::EntryKind,
        person: Vec<u8>,
        detail: String,
    ) -> Result<(), Status> {
        match self.audit.append(self.draft(caller, kind, person, detail)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The registry has committed the change; say so, loudly, so it can be reconciled.
                tracing::error!(code = e.code(), error = %e, kind = ?kind, "relationship change committed but not logged");
                Err(GatewayError::Audit(e).into())
            }
        }
    }
}

/// How often held consent changes are looked for (and once at start).
const COMPLETION_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Completes held consent changes at start and every [`COMPLETION_EVERY`], until `stop` flips.
pub async fn run_completion(completion: Completion, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let outcome = tokio::select! {
            outcome = complete_held(&completion) => outcome,
            _ = stop.wait_for(|s| *s) => return,
        };
        match outcome {
            Ok(0) => {}
            Ok(n) => tracing::info!(completed = n, "held consent changes completed"),
            Err(status) => tracing::warn!(code = ?status.code(), "held consent changes not completed yet"),
        }
        tokio::select! {
            () = tokio::time::sleep(COMPLETION_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

impl Completion {
    /// The completion of held changes through `registry` into `audit`.
    pub fn new(registry: &ConsentRegistryClient<Channel>, audit: &Log, audit_store: &cii_audit::Store) -> Completion {
        Completion {
            registry: registry.clone(),
            audit: audit.clone(),
            audit_store: audit_store.clone(),
            in_flight: Arc::new(tokio::sync::RwLock::new(())),
        }
    }

    /// Logs a held change (unless `search_from` finds its entry already in the log) and
    /// activates it.
    async fn complete(
        &self,
        mut entry: cii_audit::Entry,
        consent_id: &str,
        version: u32,
        search_from: Option<u64>,
    ) -> Result<(), Status> {
        entry.consents = vec![format!("{consent_id}@{version}")];
        let logged = match search_from {
            Some(from) => crate::transfer::find_logged(&self.audit_store, &entry, from)
                .await
                .map_err(|e| GatewayError::Audit(cii_audit::LogError::Store(e)))?,
            None => None,
        };
        let acting_user = entry.acting_user.clone();
        if logged.is_none() {
            self.audit.append(entry).await.map_err(|e| {
                // Held in the registry: completed later by `complete_held`.
                tracing::error!(code = e.code(), error = %e, consent_id, version, "consent change held, not logged yet");
                GatewayError::Audit(e)
            })?;
        }
        crate::failpoints::check(Point::ConsentAfterLog, &acting_user)?;
        self.registry
            .clone()
            .activate_change(registry::ActivateChangeRequest {
                consent_id: consent_id.to_owned(),
                version,
            })
            .await
            .map_err(registry_error)?;
        Ok(())
    }
}

/// Completes every consent change the registry still holds (left by a crash between its commit
/// and the log, or an append or activation that failed): each logged exactly once, then
/// activated. Returns how many were completed.
pub async fn complete_held(completion: &Completion) -> Result<usize, Status> {
    let list = || async {
        Ok::<_, Status>(
            completion
                .registry
                .clone()
                .list_held_changes(registry::ListHeldChangesRequest { limit: 0 })
                .await
                .map_err(registry_error)?
                .into_inner()
                .changes,
        )
    };
    // Asked first without the lock (the registry may be slow to answer, and handlers would wait);
    // then again alone, once the handlers in flight have finished with their changes.
    if list().await?.is_empty() {
        return Ok(0);
    }
    let _alone = completion.in_flight.write().await;
    let (mut completed, mut first_error) = (0, None);
    // Page after page (oldest first), while a page completes something: what fails stays held.
    loop {
        let page = list().await?;
        if page.is_empty() {
            break;
        }
        let (done, error) = complete_page(completion, page).await;
        completed += done;
        first_error = first_error.or(error);
        if done == 0 {
            break;
        }
    }
    match first_error {
        Some(status) if completed == 0 => Err(status),
        _ => Ok(completed),
    }
}

/// Completes a page of held changes; how many, and the first failure.
async fn complete_page(completion: &Completion, page: Vec<registry::HeldChangeRecord>) -> (usize, Option<Status>) {
    let (mut completed, mut first_error) = (0, None);
    for change in page {
        let Some(note) = change.held else { continue };
        let Ok(draft) = cii_audit::entry::decode(&note.entry_draft) else {
            tracing::error!(consent_id = %change.consent_id, version = change.version, "a held change's draft does not decode");
            continue;
        };
        // One change that cannot be completed now does not hold back the others.
        match completion
            .complete(draft, &change.consent_id, change.version, Some(note.log_size))
            .await
        {
            Ok(()) => {
                tracing::info!(consent_id = %change.consent_id, version = change.version, "held consent change completed");
                completed += 1;
            }
            Err(status) => {
                tracing::warn!(consent_id = %change.consent_id, version = change.version, code = ?status.code(), "held consent change not completed yet");
                first_error.get_or_insert(status);
            }
        }
    }
    (completed, first_error)
}

#[tonic::async_trait]
impl Consents for ConsentsService {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<registry::ConsentRecord>, Status> {
        let caller = caller(&request)?;
        let request = request.get_ref();
        let person = self.person(caller, request.person.as_ref(), "consent").await?;
        let institutions: std::collections::BTreeSet<&str> = request
            .consent
            .iter()
            .flat_map(|c| c.institutions.iter().map(String::as_str))
            .collect();
        let detail = format!(
            "institutions={}",
            institutions.into_iter().collect::<Vec<_>>().join(",")
        );
        let draft = self.draft(caller, cii_audit::EntryKind::ConsentRecorded, person.audit, detail);
        let forward = registry::RecordConsentRequest {
            actor: actor(caller),
            person: Some(person.registry),
            consent: request.consent.clone(),
            held: Some(self.held(&draft)?),
        };
        let (mut client, completion, user) = (self.registry.clone(), self.completion.clone(), caller.acting_user());
        let recorded = self
            .held_change(async move {
                let recorded = client
                    .record_consent(forward)
                    .await
                    .map_err(registry_error)?
                    .into_inner();
                crate::failpoints::check(Point::ConsentAfterRegistry, &user)?;
                completion
                    .complete(draft, &recorded.consent_id, recorded.version, None)
                    .await?;
                Ok(recorded)
            })
            .await?;
        Ok(Response::new(recorded))
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<registry::ConsentRecord>, Status> {
        let caller = caller(&request)?;
        let request = request.get_ref();
        let person = self.person(caller, request.person.as_ref(), "consent").await?;
        let detail = format!("channel={}", request.channel);
        let draft = self.draft(caller, cii_audit::EntryKind::ConsentRevoked, person.audit, detail);
        let forward = registry::RevokeConsentRequest {
            actor: actor(caller),
            consent_id: request.consent_id.clone(),
            channel: request.channel.clone(),
            person: Some(person.registry),
            held: Some(self.held(&draft)?),
        };
        let (mut client, completion, user) = (self.registry.clone(), self.completion.clone(), caller.acting_user());
        let revoked = self
            .held_change(async move {
                let revoked = client
                    .revoke_consent(forward)
                    .await
                    .map_err(registry_error)?
                    .into_inner();
                crate::failpoints::check(Point::ConsentAfterRegistry, &user)?;
                completion
                    .complete(draft, &revoked.consent_id, revoked.version, None)
                    .await?;
                Ok(revoked)
            })
            .await?;
        Ok(Response::new(revoked))
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<registry::ConsentHistory>, Status> {
        let caller = caller(&request)?;
        let history = self
            .registry
            .clone()
            .get_consent(registry::GetConsentRequest {
                actor: actor(caller),
                consent_id: request.get_ref().consent_id.clone(),
            })
            .await
            .map_err(registry_error)?;
        Ok(history)
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<registry::ListConsentsResponse>, Status> {
        let caller = caller(&request)?;
        // A read: the log keeps changes, not reads (the second transcryptor logs it as one).
        let person = self
            .person(caller, request.get_ref().person.as_ref(), "consent_read")
            .await?;
        self.registry
            .clone()
            .list_consents(registry::ListConsentsRequest {
                actor: actor(caller),
                person: Some(person.registry),
            })
            .await
            .map_err(registry_error)
    }

    async fn list_expiring_consents(
        &self,
        request: Request<pb::ListExpiringConsentsRequest>,
    ) -> Result<Response<registry::ListConsentsResponse>, Status> {
        let caller = caller(&request)?;
        self.registry
            .clone()
            .list_expiring(registry::ListExpiringRequest {
                actor: actor(caller),
                within_days: request.get_ref().within_days,
            })
            .await
            .map_err(registry_error)
    }

    async fn declare_relationship(
        &self,
        request: Request<pb::RelationshipRequest>,
    ) -> Result<Response<registry::RelationshipResponse>, Status> {
        self.relationship(request, true).await
    }

    async fn end_relationship(
        &self,
        request: Request<pb::RelationshipRequest>,
    ) -> Result<Response<registry::RelationshipResponse>, Status> {
        self.relationship(request, false).await
    }
}

impl ConsentsService {
    async fn relationship(
        &self,
        request: Request<pb::RelationshipRequest>,
        declare: bool,
    ) -> Result<Response<registry::RelationshipResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.get_ref();
        let person = self.person(caller, request.person.as_ref(), "consent").await?;
        let forward = registry::RelationshipRequest {
            person: Some(person.registry),
            actor: actor(caller),
            capacity: request.capacity.clone(),
            at: request.at,
        };
        let mut client = self.registry.clone();
        let (answer, kind) = if declare {
            (
                client.declare_relationship(forward).await,
                cii_audit::EntryKind::RelationshipDeclared,
            )
        } else {
            (
                client.end_relationship(forward).await,
                cii_audit::EntryKind::RelationshipEnded,
            )
        };
        let answer = answer.map_err(registry_error)?;
        self.log(caller, kind, person.audit, format!("capacity={}", request.capacity))
            .await?;
        Ok(answer)
    }
}
