//! Why a transfer was not decided or not answered. Each variant carries its
//! stable code ([`TransferError::code`]) and, for a request at fault, the field;
//! `crate::status` turns them into gRPC statuses.

use cii_types::InstitutionId;

/// Why a transfer was not decided or not answered.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The transfer id is not one (`TRANSFER_ID_INVALID`, `TRANSFER_ID_IS_AVS`).
    #[error(transparent)]
    TransferId(#[from] cii_types::transfer::TransferIdError),
    /// The counterparty is not an institution id.
    #[error("{0}")]
    Counterparty(cii_types::ParseError),
    /// The counterparty is the caller.
    #[error("an institution cannot exchange with itself through the gateway")]
    CounterpartyIsCaller,
    /// The counterparty is not a member.
    #[error("{0} is not a member of the network")]
    CounterpartyUnknown(InstitutionId),
    /// Neither push nor pull.
    #[error("direction must be PUSH or PULL")]
    DirectionRequired,
    /// No trigger.
    #[error("trigger must be set")]
    TriggerRequired,
    /// A field the request needs is missing.
    #[error("{what}")]
    FieldRequired {
        /// The field.
        field: &'static str,
        /// What is required, for the caller.
        what: String,
    },
    /// A field this kind of request must not carry.
    #[error("{what}")]
    FieldNotAllowed {
        /// The field.
        field: &'static str,
        /// Why not, for the caller.
        what: &'static str,
    },
    /// The written request is too long.
    #[error("written_request is limited to {0} characters")]
    WrittenRequestTooLong(usize),
    /// A ciphertext does not decode.
    #[error("{source}")]
    Ciphertext {
        /// The field, e.g. `person.ciphertext`.
        field: String,
        /// Why.
        source: cii_pseudonym::PseudonymError,
    },
    /// An attested fact the rulebook does not declare.
    #[error("unknown fact `{0}` (not declared by the rulebook)")]
    FactUnknown(String),
    /// A fact the caller may not attest in this transfer.
    #[error("`{fact}` is attested by the {attester}, not by the caller of this transfer: {why}")]
    FactNotAssertable {
        /// The fact id.
        fact: String,
        /// Who attests it (`network`, `discloser`, …).
        attester: &'static str,
        /// What the caller can do instead.
        why: &'static str,
    },
    /// No pull of this requester and id waits for the caller's review.
    #[error("no pull `{0}` waits for this institution's review")]
    ReviewNotFound(String),
    /// Too many of the caller's pulls wait for reviews or their collection.
    #[error("{0} of this institution's pulls already wait for their holders' review; collect their answers first")]
    ReviewQueueFull(u64),
    /// A refusal without one of the reason codes.
    #[error("refusal_reason must be one of: {0}")]
    RefusalReasonInvalid(&'static str),
    /// The payload does not fit the contract.
    #[error("{0}")]
    Payload(cii_types::exchange::ExchangeError),
    /// The sealed parts are malformed (the gateway checks their form, not their content).
    #[error("{0}")]
    SealedPartsInvalid(&'static str),
    /// The payload carries no field.
    #[error("the payload carries no field")]
    PayloadEmpty,
    /// The payload is larger than its exchange type's cap.
    #[error("the payload is larger than {max} bytes, the cap of its exchange type on this network")]
    PayloadTooLarge {
        /// The cap, in bytes.
        max: u32,
    },
    /// The rulebook cannot evaluate the request (unknown purpose or category).
    #[error("{0}")]
    Undecidable(cii_policy::decide::InputError),
    /// The same (caller, transfer id) is being processed.
    #[error("the same transfer id is being processed; retry shortly")]
    InProgress,
    /// A permitted pull's answer is no longer kept (or was never given in time).
    #[error("the answer of this pull is no longer kept; new data needs a new request with a new transfer id")]
    PullAnswerGone,
    /// The transfer id was used for a different request.
    #[error("this transfer id was already used for a different request; choose a new id")]
    IdReused,
    /// The consent registry did not answer.
    #[error("{0}")]
    ConsentRegistryUnavailable(&'static str),
    /// The operational store failed.
    #[error("the gateway's store failed; nothing was done, retry later")]
    Store(#[from] crate::store::StoreError),
    /// A stored record does not decode.
    #[error("{0}")]
    StoreCorrupt(&'static str),
    /// The audit log could not record the entry.
    #[error("the audit log could not record the call; nothing was done, retry later")]
    Audit(#[from] cii_audit::LogError),
    /// The audit log could not be read (completing a held transfer).
    #[error("the audit log could not be read; retry later")]
    AuditUnreadable(#[from] cii_audit::store::StoreError),
    /// The log disagrees with itself (a proof for a found entry failed).
    #[error("{0}")]
    AuditInconsistent(String),
    /// A transcryption could not be completed (the second transcryptor did not answer).
    #[error(transparent)]
    Pseudonyms(#[from] crate::pseudonyms::PseudonymsError),
    /// The holder of a pull has no data about the person.
    #[error("{holder} holds no data about the person ({code})")]
    HolderHasNoData {
        /// The holder.
        holder: InstitutionId,
        /// The holder's code.
        code: String,
    },
    /// The holder of a pull did not answer.
    #[error("{holder} did not provide the data ({code}); retry with the same transfer id")]
    HolderUnavailable {
        /// The holder.
        holder: InstitutionId,
        /// The holder's code, or the gRPC status.
        code: String,
    },
    /// The holder answered without data.
    #[error("the holder answered without data")]
    HolderAnswerEmpty,
    /// The holder's answer is not sealed parts of a `DataResponse`.
    #[error("the holder's answer is not sealed parts of a cii.exchange.v1.DataResponse")]
    HolderAnswerInvalid,
    /// The sender pushes faster than its limit of pushes whose decision turns on the
    /// recipient's relationship with the person (each could probe for it).
    #[error("the relationship_pushes rate limit of the institution is reached; retry in {wait_ms} ms")]
    RelationshipPushesLimited {
        /// How long until one is free.
        wait_ms: u128,
    },
    /// A lock was poisoned by a panic elsewhere.
    #[error("in-flight set poisoned")]
    Poisoned,
}

impl TransferError {
    /// The stable code (`ErrorInfo.reason`).
    pub fn code(&self) -> &'static str {
        use TransferError as E;
        match self {
            E::TransferId(e) => e.code(),
            E::Counterparty(_) => "COUNTERPARTY_INVALID",
            E::CounterpartyIsCaller => "COUNTERPARTY_IS_CALLER",
            E::CounterpartyUnknown(_) => "COUNTERPARTY_UNKNOWN",
            E::DirectionRequired => "DIRECTION_REQUIRED",
            E::TriggerRequired => "TRIGGER_REQUIRED",
            E::FieldRequired { .. } => "FIELD_REQUIRED",
            E::FieldNotAllowed { .. } => "FIELD_NOT_ALLOWED",
            E::WrittenRequestTooLong(_) => "WRITTEN_REQUEST_TOO_LONG",
            E::Ciphertext { source, .. } => source.code(),
            E::Pseudonyms(e) => e.code(),
            E::FactUnknown(_) => "FACT_UNKNOWN",
            E::FactNotAssertable { .. } => "FACT_NOT_ASSERTABLE",
            E::ReviewNotFound(_) => "REVIEW_NOT_FOUND",
            E::ReviewQueueFull(_) => "REVIEW_QUEUE_FULL",
            E::RefusalReasonInvalid(_) => "REFUSAL_REASON_INVALID",
            E::Payload(e) => e.code(),
            E::PayloadEmpty => "PAYLOAD_EMPTY",
            E::SealedPartsInvalid(_) => "SEALED_PARTS_INVALID",
            E::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            E::PullAnswerGone => "PULL_ANSWER_GONE",
            E::Undecidable(e) => e.code(),
            E::InProgress => "TRANSFER_IN_PROGRESS",
            E::IdReused => "TRANSFER_ID_REUSED",
            E::ConsentRegistryUnavailable(_) => "CONSENT_REGISTRY_UNAVAILABLE",
            E::Store(crate::store::StoreError::Corrupt(_)) | E::StoreCorrupt(_) => "GATEWAY_STORE",
            E::Store(_) => "GATEWAY_STORE_UNAVAILABLE",
            E::Audit(e) => e.code(),
            E::AuditUnreadable(_) => "AUDIT_UNAVAILABLE",
            E::AuditInconsistent(_) => "AUDIT_INCONSISTENT",
            E::HolderHasNoData { .. } => "HOLDER_HAS_NO_DATA",
            E::HolderUnavailable { .. } => "HOLDER_UNAVAILABLE",
            E::HolderAnswerEmpty => "HOLDER_ANSWER_EMPTY",
            E::HolderAnswerInvalid => "HOLDER_ANSWER_INVALID",
            E::RelationshipPushesLimited { .. } => "RATE_LIMITED",
            E::Poisoned => "INTERNAL",
        }
    }

    /// The request's field at fault, if the request is at fault.
    pub fn field(&self) -> Option<&str> {
        use TransferError as E;
        Some(match self {
            E::TransferId(_) | E::InProgress | E::IdReused | E::PullAnswerGone => "transfer_id",
            E::Counterparty(_) | E::CounterpartyIsCaller | E::CounterpartyUnknown(_) => "counterparty",
            E::DirectionRequired => "direction",
            E::TriggerRequired => "trigger",
            E::FieldRequired { field, .. } | E::FieldNotAllowed { field, .. } => field,
            E::WrittenRequestTooLong(_) => "written_request",
            E::Ciphertext { field, .. } => field,
            E::FactUnknown(_) | E::FactNotAssertable { .. } => "attested_facts",
            E::ReviewNotFound(_) | E::ReviewQueueFull(_) => "transfer_id",
            E::RefusalReasonInvalid(_) => "refusal_reason",
            E::Payload(_) | E::PayloadEmpty | E::PayloadTooLarge { .. } | E::SealedPartsInvalid(_) => "sealed",
            E::Undecidable(cii_policy::decide::InputError::UnknownPurpose(_)) => "purpose",
            E::Undecidable(_) => "categories",
            _ => return None,
        })
    }

    /// A ciphertext field's error.
    pub(super) fn ciphertext(field: &str, source: cii_pseudonym::PseudonymError) -> TransferError {
        TransferError::Ciphertext {
            field: format!("{field}.ciphertext"),
            source,
        }
    }
}
