//! Why a gateway rpc other than `SubmitTransfer` refused or failed. Each
//! variant carries its stable code ([`GatewayError::code`]); `crate::status`
//! turns them into gRPC statuses. The transfer pipeline's own errors are
//! [`crate::TransferError`].

use cii_types::InstitutionId;

use crate::TransferError;

/// Why a gateway rpc refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A request field shared with transfers (a ciphertext, a required field).
    #[error(transparent)]
    Request(#[from] TransferError),
    /// A transcryption could not be completed (the second transcryptor did not answer).
    #[error(transparent)]
    Pseudonyms(#[from] crate::pseudonyms::PseudonymsError),
    /// The caller's institution enrols faster than its limit.
    #[error("enrolment rate limit of {institution} reached; retry in {wait_ms} ms")]
    EnrolmentRateLimited {
        /// The caller's institution.
        institution: InstitutionId,
        /// How long until a token is free.
        wait_ms: u128,
    },
    /// No transfer of the caller's institution has this id.
    #[error("no transfer of your institution has this id")]
    TransferNotFound,
    /// An obligation's note is not a reference.
    #[error(
        "note is a reference in your own systems (e.g. a letter number): at most 64 characters of A–Z, a–z, 0–9, '.', '_', ':', '/', '-', and no AVS number"
    )]
    NoteInvalid,
    /// The caller's institution has no such obligation.
    #[error("your institution has no obligation with this id")]
    ObligationNotFound,
    /// Fulfilled already.
    #[error("this obligation was already marked fulfilled")]
    ObligationAlreadyFulfilled,
    /// The operational store failed.
    #[error("the gateway's store failed; nothing was done, retry later")]
    Store(#[from] crate::store::StoreError),
    /// A stored record does not decode.
    #[error("{0}")]
    StoreCorrupt(&'static str),
    /// The audit log could not record the call.
    #[error("the audit log could not record the call; nothing was done, retry later")]
    Audit(#[from] cii_audit::LogError),
    /// The audit log could not be read.
    #[error("the audit log could not be read")]
    AuditUnreadable,
    /// A store failed while retention ran (after its entry was logged).
    #[error("the store failed during retention; the run is logged, run it again")]
    RetentionInterrupted,
    /// A DPO asked about another institution.
    #[error("a dpo sees the entries of their own institution only (network_dpo sees all)")]
    DpoScope,
    /// The decision filter is neither `permit` nor `deny`.
    #[error("decision is `permit` or `deny`")]
    DecisionInvalid,
    /// A query filter is not of its form.
    #[error("{field} is not of its form: {expected}, and no AVS number")]
    FilterInvalid {
        /// The filter at fault.
        field: &'static str,
        /// The form it must have.
        expected: &'static str,
    },
    /// The period ends before it starts.
    #[error("from must be before until")]
    PeriodInvalid,
    /// A proof was asked for beyond the log.
    #[error("{0}")]
    ProofOutOfRange(cii_audit::merkle::ProofError),
    /// An early shredding's request is not of its form.
    #[error("{problem}")]
    ShredInvalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// An early shredding's approval does not approve a pending request of another user and role.
    #[error("{0}")]
    ShredApprovalInvalid(&'static str),
    /// No checkpoint covering the entry is cosigned by a quorum of witnesses yet.
    #[error("entry {0} is not covered by a checkpoint cosigned by a quorum of witnesses yet")]
    NotWitnessed(u64),
    /// An explain request names something the rulebook does not know.
    #[error("{problem}")]
    ExplainInvalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong (names rulebook ids, never personal data).
        problem: String,
    },
    /// No dead letter has this sender and transfer id.
    #[error("no dead letter has this sender and transfer id")]
    DeadLetterNotFound,
    /// A dead letter's resolution names no action.
    #[error("action is RETRY or DROP")]
    ActionRequired,
    /// The consent registry cannot be reached.
    #[error("the consent registry cannot be reached; nothing was changed, retry later")]
    ConsentRegistryUnavailable,
}

impl GatewayError {
    /// The stable code (`ErrorInfo.reason`).
    pub fn code(&self) -> &'static str {
        use GatewayError as E;
        match self {
            E::Request(e) => e.code(),
            E::Pseudonyms(e) => e.code(),
            E::EnrolmentRateLimited { .. } => "ENROLMENT_RATE_LIMITED",
            E::TransferNotFound => "TRANSFER_NOT_FOUND",
            E::NoteInvalid => "NOTE_INVALID",
            E::ObligationNotFound => "OBLIGATION_NOT_FOUND",
            E::ObligationAlreadyFulfilled => "OBLIGATION_ALREADY_FULFILLED",
            E::Store(crate::store::StoreError::Corrupt(_)) | E::StoreCorrupt(_) => "GATEWAY_STORE",
            E::Store(_) => "GATEWAY_STORE_UNAVAILABLE",
            E::Audit(e) => e.code(),
            E::AuditUnreadable | E::RetentionInterrupted => "AUDIT_UNAVAILABLE",
            E::DpoScope => "DPO_SCOPE",
            E::DecisionInvalid => "DECISION_INVALID",
            E::PeriodInvalid => "PERIOD_INVALID",
            E::FilterInvalid { .. } => "FILTER_INVALID",
            E::ProofOutOfRange(_) => "PROOF_OUT_OF_RANGE",
            E::NotWitnessed(_) => "AUDIT_NOT_WITNESSED",
            E::ShredInvalid { .. } => "SHRED_INVALID",
            E::ShredApprovalInvalid(_) => "SHRED_APPROVAL_INVALID",
            E::ExplainInvalid { .. } => "INVALID_ARGUMENT",
            E::ConsentRegistryUnavailable => "CONSENT_REGISTRY_UNAVAILABLE",
            E::DeadLetterNotFound => "DEAD_LETTER_NOT_FOUND",
            E::ActionRequired => "ACTION_REQUIRED",
        }
    }

    /// The request's field at fault, if the request is at fault.
    pub fn field(&self) -> Option<&str> {
        use GatewayError as E;
        Some(match self {
            E::Request(e) => return e.field(),
            E::TransferNotFound => "transfer_id",
            E::NoteInvalid => "note",
            E::ObligationNotFound | E::ObligationAlreadyFulfilled => "obligation_id",
            E::DpoScope => "institution",
            E::DecisionInvalid => "decision",
            E::PeriodInvalid => "until",
            E::FilterInvalid { field, .. } => field,
            E::ExplainInvalid { field, .. } => field,
            E::ShredInvalid { field, .. } => field,
            E::ShredApprovalInvalid(_) => "approve",
            E::DeadLetterNotFound => "transfer_id",
            E::ActionRequired => "action",
            _ => return None,
        })
    }
}

impl From<cii_audit::sequencer::ReadError> for GatewayError {
    fn from(e: cii_audit::sequencer::ReadError) -> GatewayError {
        match e {
            cii_audit::sequencer::ReadError::Proof(p) => GatewayError::ProofOutOfRange(p),
            other => {
                tracing::warn!(error = %other, "audit store not readable for a proof");
                GatewayError::AuditUnreadable
            }
        }
    }
}
