//! Handlers of `cii.gateway.v1.Consents`: institutions manage consents and
//! their relationships in the consent registry through the gateway. The person
//! is transcrypted from the caller's domain (its certificate) into the
//! registry's and the audit context; the actor is the caller's institution and
//! user, never a claim in the request. Every change is an audit entry, written
//! once the registry has committed it (so the entry names the version).

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
use crate::transfer::ciphertext;

/// The consent rpc handlers.
#[derive(Debug)]
pub struct ConsentsService {
    registry: ConsentRegistryClient<Channel>,
    pseudonyms: Arc<cii_pseudonym::gateway::Gateway>,
    audit: Log,
    clock: Arc<dyn Clock>,
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
        registry: ConsentRegistryClient<Channel>,
        pseudonyms: Arc<cii_pseudonym::gateway::Gateway>,
        audit: Log,
        clock: Arc<dyn Clock>,
    ) -> ConsentsService {
        ConsentsService {
            registry,
            pseudonyms,
            audit,
            clock,
        }
    }

    fn person(
        &self,
        caller: &Caller,
        person: Option<&cii_proto::common::EncryptedPseudonym>,
    ) -> Result<Person, Status> {
        let from = Party::Institution(caller.institution.id.clone());
        let ciphertext = ciphertext("person", person).map_err(GatewayError::from)?;
        let to_registry = self.pseudonyms.translate(&ciphertext, &from, &Party::Registry);
        let to_audit = self.pseudonyms.translate(&ciphertext, &from, &Party::Audit);
        Ok(Person {
            registry: cii_proto::common::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&to_registry),
            },
            audit: cii_pseudonym::wire::to_bytes(&to_audit),
        })
    }

    /// Appends the entry of a change the registry committed.
    async fn log(
        &self,
        caller: &Caller,
        kind: cii_audit::EntryKind,
        person: Vec<u8>,
        consents: Vec<String>,
        detail: String,
    ) -> Result<(), Status> {
        let entry = cii_audit::Entry {
            kind: kind as i32,
            time_micros: cii_types::time::micros(self.clock.now()),
            sender: caller.institution.id.to_string(),
            acting_user: caller.acting_user(),
            consents,
            audit_pseudonym: person,
            detail,
            ..cii_audit::Entry::default()
        };
        match self.audit.append(entry).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The registry has committed the change; say so, loudly, so it can be reconciled.
                tracing::error!(code = e.code(), error = %e, kind = ?kind, "consent change committed but not logged");
                Err(GatewayError::Audit(e).into())
            }
        }
    }
}

fn version_of(record: &registry::ConsentRecord) -> String {
    format!("{}@{}", record.consent_id, record.version)
}

#[tonic::async_trait]
impl Consents for ConsentsService {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<registry::ConsentRecord>, Status> {
        let caller = caller(&request)?;
        let request = request.get_ref();
        let person = self.person(caller, request.person.as_ref())?;
        let recorded = self
            .registry
            .clone()
            .record_consent(registry::RecordConsentRequest {
                actor: actor(caller),
                person: Some(person.registry),
                consent: request.consent.clone(),
            })
            .await
            .map_err(registry_error)?
            .into_inner();
        let detail = format!("institutions={}", recorded.institutions.join(","));
        self.log(
            caller,
            cii_audit::EntryKind::ConsentRecorded,
            person.audit,
            vec![version_of(&recorded)],
            detail,
        )
        .await?;
        Ok(Response::new(recorded))
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<registry::ConsentRecord>, Status> {
        let caller = caller(&request)?;
        let request = request.get_ref();
        let person = self.person(caller, request.person.as_ref())?;
        let revoked = self
            .registry
            .clone()
            .revoke_consent(registry::RevokeConsentRequest {
                actor: actor(caller),
                consent_id: request.consent_id.clone(),
                channel: request.channel.clone(),
                person: Some(person.registry),
            })
            .await
            .map_err(registry_error)?
            .into_inner();
        self.log(
            caller,
            cii_audit::EntryKind::ConsentRevoked,
            person.audit,
            vec![version_of(&revoked)],
            format!("channel={}", request.channel),
        )
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
        let person = self.person(caller, request.get_ref().person.as_ref())?;
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
        let person = self.person(caller, request.person.as_ref())?;
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
        self.log(
            caller,
            kind,
            person.audit,
            Vec::new(),
            format!("capacity={}", request.capacity),
        )
        .await?;
        Ok(answer)
    }
}
