//! Why a consent-registry rpc refused or failed, beyond a declaration refused
//! by the model ([`crate::model::Invalid`], which carries its own code). Each
//! variant carries its stable code; `crate::status` turns them into gRPC
//! statuses.

use crate::model::Invalid;
use crate::store::StoreError;

/// Why a registry rpc refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The request or declaration is refused (its own code and field).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Marking used: not the newest version of an active one-off consent.
    #[error("only the newest version of an active one-off consent can be marked used")]
    NotUsable,
    /// Marking used: another transfer used it.
    #[error("this one-off consent was used by another transfer")]
    AlreadyUsed,
    /// No open relationship to end.
    #[error("{institution} has no open relationship in capacity {capacity} with this person")]
    RelationshipNotFound {
        /// The institution (a registry id).
        institution: String,
        /// The capacity (a vocabulary id).
        capacity: String,
    },
}

impl ConsentError {
    /// The stable code (`ErrorInfo.reason`).
    pub fn code(&self) -> &'static str {
        match self {
            ConsentError::Invalid(invalid) => invalid.code,
            ConsentError::Store(StoreError::NotFound) => "CONSENT_NOT_FOUND",
            ConsentError::Store(StoreError::PersonMismatch) => "CONSENT_PERSON_MISMATCH",
            ConsentError::Store(StoreError::NotActive) => "CONSENT_NOT_ACTIVE",
            ConsentError::Store(StoreError::Conflict) => "CONSENT_CONFLICT",
            ConsentError::Store(_) => "CONSENT_STORE_UNAVAILABLE",
            ConsentError::NotUsable => "CONSENT_NOT_USABLE",
            ConsentError::AlreadyUsed => "CONSENT_ALREADY_USED",
            ConsentError::RelationshipNotFound { .. } => "RELATIONSHIP_NOT_FOUND",
        }
    }

    /// The request's field at fault, if the request is at fault.
    pub fn field(&self) -> Option<&str> {
        Some(match self {
            ConsentError::Invalid(invalid) => &invalid.field,
            ConsentError::Store(StoreError::NotFound | StoreError::NotActive) => "consent_id",
            ConsentError::Store(StoreError::PersonMismatch) => "person",
            ConsentError::NotUsable | ConsentError::AlreadyUsed => "consent_id",
            ConsentError::RelationshipNotFound { .. } => "capacity",
            ConsentError::Store(_) => return None,
        })
    }
}
