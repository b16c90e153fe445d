//! Why a node rpc refused or failed. Each variant carries its stable code
//! ([`NodeError::code`]) and, for a request at fault, the field;
//! `crate::status` turns them into gRPC statuses. Refusals the node passes on
//! from the gateway keep the gateway's status as it is.

/// Why a node rpc refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The local record id is not one.
    #[error("local_record_id must be 1–{0} characters of A–Z, a–z, 0–9, '.', ':', '_', '/', '-'")]
    RecordIdInvalid(usize),
    /// The local record id carries an AVS number.
    #[error("local_record_id looks like an AVS number; use the institution's own record id")]
    RecordIdIsAvs,
    /// No person enrolled under the record id.
    #[error("no person is enrolled under this local record id; call Enrol first")]
    NotEnrolled,
    /// The record id is enrolled for another person.
    #[error("this local record id is already enrolled for another person")]
    RecordTaken,
    /// The person is enrolled under another record id (a record id of the caller's own institution).
    #[error("this person is already enrolled under local record id {0}")]
    PersonAlreadyEnrolled(String),
    /// Not an AVS number.
    #[error(transparent)]
    Avs(#[from] cii_types::AvsError),
    /// The transfer id is not one the gateway accepts (checked before anything is stored).
    #[error(transparent)]
    TransferId(#[from] cii_types::transfer::TransferIdError),
    /// A required field is missing.
    #[error("{what}")]
    FieldRequired {
        /// The field.
        field: &'static str,
        /// What is required.
        what: &'static str,
    },
    /// A field this request must not carry, or not so.
    #[error("{what}")]
    FieldNotAllowed {
        /// The field.
        field: &'static str,
        /// Why.
        what: &'static str,
    },
    /// Published data must be a `DataResponse`.
    #[error("data must be a {0}")]
    NotDataResponse(&'static str),
    /// An inbox id is not a number ListInbox returned.
    #[error("inbox ids are the numbers ListInbox returns")]
    InboxIdInvalid,
    /// The node saw the log rewritten.
    #[error("this node saw the gateway's audit log rewritten and stopped exchanging; an operator must investigate")]
    AuditLogAlarm,
    /// A receipt or the log's consistency could not be checked.
    #[error(transparent)]
    Witness(#[from] crate::witness::WitnessFailure),
    /// A ciphertext, key or sealed payload does not decode or open.
    #[error("{source}")]
    Crypto {
        /// The field.
        field: &'static str,
        /// Why.
        source: cii_pseudonym::PseudonymError,
    },
    /// The receipt's entry is not about what came with it.
    #[error("the audit receipt's entry is not about this delivery: {0}")]
    ReceiptMismatch(&'static str),
    /// The sealed payload's nonce is not 12 bytes.
    #[error("the nonce must be 12 bytes")]
    NonceInvalid,
    /// The sealed content does not decode.
    #[error("the sealed content does not decode")]
    ContentInvalid,
    /// The payload to send is not a valid exchange message (checked before it is sealed).
    #[error(transparent)]
    Payload(cii_types::exchange::ExchangeError),
    /// A sealed part received is not what its label says.
    #[error(transparent)]
    Part(cii_types::exchange::PartError),
    /// Sealed parts received are malformed.
    #[error("{0}")]
    SealedPartsInvalid(&'static str),
    /// The written request received is blank or does not match its declared hash.
    #[error("the written request received is blank or has not the SHA-256 its author declared")]
    WrittenRequestMismatch,
    /// Nothing to provide about the person of a pull: not enrolled here, or nothing
    /// published (one answer, so that it reveals no relationship).
    #[error("the holder has no data to provide about this person")]
    NoDataPublished,
    /// The gateway's answer is unusable.
    #[error("{0}")]
    GatewayAnswerInvalid(String),
    /// The identity could not be encrypted.
    #[error("the identity could not be encrypted")]
    IdentityNotEncrypted(cii_pseudonym::PseudonymError),
    /// The store failed.
    #[error("the node's database failed; nothing was recorded")]
    Store(#[from] crate::store::StoreError),
    /// A stored record does not decode or is unusable.
    #[error("{0}")]
    StoreCorrupt(&'static str),
}

impl NodeError {
    /// The stable code (`ErrorInfo.reason`).
    pub fn code(&self) -> &'static str {
        use NodeError as E;
        match self {
            E::RecordIdInvalid(_) => "LOCAL_RECORD_ID_INVALID",
            E::RecordIdIsAvs => "LOCAL_RECORD_ID_IS_AVS",
            E::NotEnrolled => "NOT_ENROLLED",
            E::RecordTaken => "LOCAL_RECORD_ID_TAKEN",
            E::PersonAlreadyEnrolled(_) => "PERSON_ALREADY_ENROLLED",
            E::Avs(e) => e.code(),
            E::TransferId(e) => e.code(),
            E::FieldRequired { .. } => "FIELD_REQUIRED",
            E::FieldNotAllowed { .. } => "FIELD_NOT_ALLOWED",
            E::NotDataResponse(_) => "EXCHANGE_TYPE_UNKNOWN",
            E::InboxIdInvalid => "INBOX_ID_INVALID",
            E::AuditLogAlarm => "AUDIT_LOG_ALARM",
            E::Witness(e) => e.code(),
            E::Crypto { source, .. } | E::IdentityNotEncrypted(source) => source.code(),
            E::NonceInvalid => "NONCE_INVALID",
            E::ReceiptMismatch(_) => "RECEIPT_MISMATCH",
            E::ContentInvalid => "PAYLOAD_INVALID",
            E::NoDataPublished => "NO_DATA_PUBLISHED",
            E::Payload(e) => e.code(),
            E::Part(e) => e.code(),
            E::SealedPartsInvalid(_) => "SEALED_PARTS_INVALID",
            E::WrittenRequestMismatch => "WRITTEN_REQUEST_MISMATCH",
            E::GatewayAnswerInvalid(_) => "GATEWAY_ANSWER_INVALID",
            E::Store(_) | E::StoreCorrupt(_) => "NODE_STORE",
        }
    }

    /// The request's field at fault, if the request is at fault.
    pub fn field(&self) -> Option<&str> {
        use NodeError as E;
        Some(match self {
            E::RecordIdInvalid(_) | E::RecordIdIsAvs | E::NotEnrolled | E::RecordTaken => "local_record_id",
            E::PersonAlreadyEnrolled(_) | E::Avs(_) => "avs_number",
            E::TransferId(_) => "transfer_id",
            E::FieldRequired { field, .. } | E::FieldNotAllowed { field, .. } => field,
            E::NotDataResponse(_) => "data",
            E::InboxIdInvalid => "ids",
            E::Crypto { field, .. } => field,
            E::NonceInvalid => "payload.nonce",
            E::ReceiptMismatch(_) => "receipt",
            E::ContentInvalid => "payload",
            E::NoDataPublished => "person",
            E::Payload(_) => "payload",
            E::Part(_) | E::SealedPartsInvalid(_) => "parts",
            E::WrittenRequestMismatch => "written_request",
            _ => return None,
        })
    }
}
