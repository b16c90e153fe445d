//! The registry of stable error codes: every code a CII Exchange process puts
//! in `google.rpc.ErrorInfo.reason` (domain `cii.exchange`), with its gRPC
//! status, whether the same call may succeed later unchanged, and its meaning.
//!
//! INVARIANT (one-registry): a code is emitted only if it is listed here, and
//! every code listed here is emitted; the services build their statuses from
//! this table (the status code comes from the entry, not from the call site),
//! and `tests/tidy/codes.rs` checks the table against the sources, the proto
//! comments, docs/integration-guide.md and docs/exchanges.md.
//!
//! Decision reasons (`NO_MATCHING_BASIS`, …), consent answers (`REVOKED`, …)
//! and rulebook diagnostics are not errors: they are values in answers and
//! reports, documented with them.

/// The gRPC status codes our refusals use (tonic's `Code`, without tonic: this crate does no I/O).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grpc {
    /// The request is wrong; it will not succeed as it is.
    InvalidArgument,
    /// The thing asked about does not exist (for the caller).
    NotFound,
    /// The id is taken.
    AlreadyExists,
    /// The caller may not.
    PermissionDenied,
    /// Who calls is not established.
    Unauthenticated,
    /// The system is not in a state where this can be done.
    FailedPrecondition,
    /// A concurrent call on the same thing; retry shortly.
    Aborted,
    /// Beyond a valid range.
    OutOfRange,
    /// A quota is used up; retry later.
    ResourceExhausted,
    /// A dependency is down; retry later, nothing was done.
    Unavailable,
    /// A fault of the service itself.
    Internal,
}

/// One registered code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// The code, `SCREAMING_SNAKE_CASE`.
    pub code: &'static str,
    /// The gRPC status it travels with.
    pub grpc: Grpc,
    /// The same call may succeed later unchanged.
    pub retryable: bool,
    /// What it means, in one line.
    pub meaning: &'static str,
}

/// The registered code `code`, if any.
pub fn lookup(code: &str) -> Option<&'static Code> {
    CODES.iter().find(|c| c.code == code)
}

macro_rules! registry {
    ($($code:ident: $grpc:ident, $retry:literal, $meaning:literal;)*) => {
        /// Every registered code.
        pub const CODES: &[Code] = &[
            $(Code { code: stringify!($code), grpc: Grpc::$grpc, retryable: $retry, meaning: $meaning },)*
        ];
    };
}

registry! {
    // Calls refused before any handler: transport, certificate, token.
    MESSAGE_TOO_LARGE: OutOfRange, false, "the request is larger than the service decodes (4 MiB)";
    MESSAGE_MALFORMED: Internal, false, "the request does not decode as its protobuf message (gRPC reports parse errors as INTERNAL)";
    CLIENT_CERT_MISSING: Unauthenticated, false, "the connection carries no client certificate";
    CLIENT_CERT_INVALID: Unauthenticated, false, "the client certificate names no CII identity";
    INSTITUTION_UNKNOWN: PermissionDenied, false, "the certificate's institution is not in the registry";
    PEER_NOT_INSTITUTION: PermissionDenied, false, "the peer is not an institution (only institutions call this service)";
    JWT_MISSING: Unauthenticated, false, "no `authorization: Bearer` token";
    JWT_MALFORMED: Unauthenticated, false, "the token is not a JWT";
    JWT_ALGORITHM: Unauthenticated, false, "the token's algorithm is not accepted";
    JWT_ISSUER_MISMATCH: PermissionDenied, false, "the token was issued by another institution than the certificate's";
    JWT_BAD_SIGNATURE: Unauthenticated, false, "the token's signature does not verify with the institution's keys";
    JWT_EXPIRED: Unauthenticated, false, "the token has expired";
    JWT_NOT_YET_VALID: Unauthenticated, false, "the token is not valid yet";
    JWT_CLAIM_INVALID: Unauthenticated, false, "a claim of the token is missing or invalid (sub, roles)";
    ROLE_REQUIRED: PermissionDenied, false, "the acting user lacks the role this rpc needs";
    RATE_LIMITED: ResourceExhausted, true, "the institution calls this rpc family (transfers, consent changes, queries) faster than its limit; retry after `retry-after-ms`";
    ROLE_NOT_GRANTED: PermissionDenied, false, "the token claims a role the registry does not grant its institution (logged as a refused access)";
    JWT_AUDIENCE: Unauthenticated, false, "the token's audience (`aud`) is not this network's id";
    JWT_LIFETIME: Unauthenticated, false, "the token lives longer than the maximum lifetime (`exp - iat`), or has no `iat`";
    CLIENT_CERT_REVOKED: Unauthenticated, false, "the client certificate was revoked by a registry activated after the connection opened";
    PEER_NOT_ADMITTED: PermissionDenied, false, "this peer's certificate does not admit it to this service";
    RPC_NOT_LISTED: PermissionDenied, false, "the rpc has no row in the access table, so nobody may call it";
    REGISTRY_UNREADABLE: FailedPrecondition, false, "the registry file or its signature cannot be read; the active registry stays";
    REGISTRY_SIGNATURE_INVALID: FailedPrecondition, false, "the registry's signature does not verify with the network's registry key; the active registry stays";
    REGISTRY_INVALID: FailedPrecondition, false, "the registry file is signed but not valid; the active registry stays";
    REGISTRY_VERSION_LOWER: FailedPrecondition, false, "the registry's version is lower than the active one (an old file replayed); the active registry stays";
    REGISTRY_VERSION_REUSED: FailedPrecondition, false, "the registry changed without a new version; the active registry stays";
    TLS_RENEWAL_REFUSED: FailedPrecondition, false, "the replaced TLS certificate or key is unusable, names another party or does not chain to the network CA; the current certificate stays";
    INTERNAL: Internal, false, "an internal fault; nothing personal is reported";
    // Shared field checks.
    FIELD_REQUIRED: InvalidArgument, false, "a required field is missing";
    FIELD_NOT_ALLOWED: InvalidArgument, false, "a field this kind of request must not carry";
    EMPTY: InvalidArgument, false, "a value must not be empty";
    TOO_LONG: InvalidArgument, false, "a value is longer than allowed";
    INVALID: InvalidArgument, false, "a value has characters outside its alphabet";
    UNKNOWN_VALUE: InvalidArgument, false, "a value is not one of the known names";
    INVALID_ARGUMENT: InvalidArgument, false, "a jurist's explain request names something the rulebook does not know";
    AVS_FORMAT: InvalidArgument, false, "not 13 digits written 756.XXXX.XXXX.XC or without dots";
    AVS_PREFIX: InvalidArgument, false, "an AVS number starts with 756";
    AVS_CHECK_DIGIT: InvalidArgument, false, "the AVS number's check digit does not match";
    CIPHERTEXT_LENGTH: InvalidArgument, false, "a ciphertext is not 64 bytes";
    CIPHERTEXT_INVALID: InvalidArgument, false, "a ciphertext is not a valid group element";
    ORIGIN_TARGET_REFUSED: InvalidArgument, false, "nothing is transcrypted into the reserved origin domain";
    IDENTITY_UNREADABLE: Internal, false, "an identity attribute does not decrypt to an AVS number";
    SEALED_PAYLOAD_UNREADABLE: InvalidArgument, false, "a sealed payload does not open with the recipient's key";
    SEALED_PARTS_INVALID: InvalidArgument, false, "sealed parts are not one per category in order, name a category the exchange type does not carry, or are malformed";
    SEALED_PART_MISLABELLED: InvalidArgument, false, "an opened sealed part carries fields of another category than its label";
    SEALED_PART_EMPTY: InvalidArgument, false, "an opened sealed part carries no field";
    OPERATION_INVALID: InvalidArgument, false, "the second transcryptor refused a malformed operation (kind, ciphertext, key, party) or too many";
    TRANSCRYPTOR_UNAVAILABLE: Unavailable, true, "the second transcryptor did not answer; nothing was done, retry";
    WRITTEN_REQUEST_MISMATCH: InvalidArgument, false, "the opened written request is blank or has not the SHA-256 its author declared";
    KEY_MATERIAL: Internal, false, "key material could not be used";
    // Transfers.
    TRANSFER_ID_INVALID: InvalidArgument, false, "transfer_id is not 1–64 characters of A–Z a–z 0–9 . _ : -";
    TRANSFER_ID_IS_AVS: InvalidArgument, false, "transfer_id looks like an AVS number";
    TRANSFER_ID_REUSED: AlreadyExists, false, "the transfer id was used for a different request";
    TRANSFER_IN_PROGRESS: Aborted, true, "the same transfer id is being processed";
    TRANSFER_NOT_FOUND: NotFound, false, "no transfer of the caller's institution has this id";
    COUNTERPARTY_INVALID: InvalidArgument, false, "counterparty is not an institution id";
    COUNTERPARTY_IS_CALLER: InvalidArgument, false, "an institution cannot exchange with itself";
    COUNTERPARTY_UNKNOWN: InvalidArgument, false, "the counterparty is not a member of the network";
    DIRECTION_REQUIRED: InvalidArgument, false, "direction must be PUSH or PULL";
    TRIGGER_REQUIRED: InvalidArgument, false, "trigger must be set";
    WRITTEN_REQUEST_TOO_LONG: InvalidArgument, false, "the written request is longer than 20,000 characters";
    FACT_UNKNOWN: InvalidArgument, false, "an attested fact the vocabulary does not know";
    FACT_NOT_ASSERTABLE: InvalidArgument, false, "a fact the caller may not attest in this transfer: the network establishes it, or the discloser weighs it (in a pull, only the holder's reviewer), or only the recipient attests it";
    REVIEW_NOT_FOUND: NotFound, false, "no pull of this requester and id waits for the caller's institution's review (unknown, answered already, or its review period ended)";
    REVIEW_QUEUE_FULL: ResourceExhausted, true, "too many of the institution's pulls wait for their holders' review or for their answers to be collected";
    REFUSAL_REASON_INVALID: InvalidArgument, false, "a refused review names one of the refusal reason codes";
    PAYLOAD_EMPTY: InvalidArgument, false, "the payload carries no field";
    PULL_ANSWER_GONE: FailedPrecondition, false, "the answer of this pull is no longer kept; new data needs a new request with a new transfer id (a new decision)";
    PAYLOAD_TOO_LARGE: InvalidArgument, false, "the payload is larger than its exchange type's cap on this network (gateway `store.payload_max_bytes`), refused before any decision";
    PAYLOAD_INVALID: InvalidArgument, false, "the payload does not decode as its exchange type";
    PAYLOAD_UNKNOWN_FIELD: InvalidArgument, false, "the payload carries a field the contract does not declare";
    EXCHANGE_TYPE_UNKNOWN: InvalidArgument, false, "the payload's type is not in the exchange catalogue";
    FIELD_UNCATEGORISED: Internal, false, "a payload field has no data category in the contract";
    CONTRACT_DESCRIPTORS: Internal, false, "the contract's descriptors could not be read";
    UNKNOWN_CATEGORY: InvalidArgument, false, "a category the rulebook does not declare";
    UNKNOWN_PURPOSE: InvalidArgument, false, "a purpose the rulebook does not declare";
    NO_CATEGORIES: InvalidArgument, false, "no category asked for";
    NO_PERSONS: InvalidArgument, false, "a transfer concerns at least one person";
    HOLDER_HAS_NO_DATA: NotFound, false, "the holder of a pull holds no data about the person";
    HOLDER_UNAVAILABLE: Unavailable, true, "the holder of a pull did not answer; retry with the same transfer id";
    HOLDER_ANSWER_EMPTY: Unavailable, true, "the holder answered without data";
    HOLDER_ANSWER_INVALID: Unavailable, true, "the holder's answer does not fit the contract";
    ENROLMENT_RATE_LIMITED: ResourceExhausted, true, "the institution's enrolment rate limit is reached";
    OBLIGATION_NOT_FOUND: NotFound, false, "the caller's institution has no obligation with this id";
    OBLIGATION_ALREADY_FULFILLED: FailedPrecondition, false, "the obligation was already marked fulfilled";
    DEAD_LETTER_NOT_FOUND: NotFound, false, "no dead letter has this sender and transfer id";
    ACTION_REQUIRED: InvalidArgument, false, "a dead letter's resolution is RETRY or DROP";
    NOTE_INVALID: InvalidArgument, false, "an obligation's note is not a reference in the institution's systems";
    // The gateway's own stores and the audit log.
    GATEWAY_STORE_UNAVAILABLE: Unavailable, true, "the gateway's store failed; nothing was done";
    GATEWAY_STORE: Internal, false, "a record of the gateway's store does not decode";
    AUDIT_UNAVAILABLE: Unavailable, true, "the audit log could not record or be read; nothing was done";
    AUDIT_INCONSISTENT: Internal, false, "the audit log disagrees with its own checkpoints";
    AUDIT_KEY: Unavailable, true, "the checkpoint could not be signed; nothing was done";
    AUDIT_ENTRY_REFUSED: InvalidArgument, false, "the entry would hold a value the log does not accept (too long, a control character, an AVS look-alike); nothing was done";
    AUDIT_NOT_WITNESSED: Unavailable, true, "no checkpoint covering the entry is cosigned by more than half of the witnesses yet (witnesses unreachable or refusing); retry later";
    SHRED_INVALID: InvalidArgument, false, "an early shredding names an ended month with a key, an entry of that month and a reason (1–500 characters, no control character, no AVS number)";
    SHRED_APPROVAL_INVALID: FailedPrecondition, false, "the approval names no pending shredding request of this month, or comes from the requester or the requester's role, or from a user holding both roles";
    PROOF_OUT_OF_RANGE: OutOfRange, false, "a proof asked for beyond the log's size";
    DPO_SCOPE: PermissionDenied, false, "a dpo sees the entries of their own institution only";
    DECISION_INVALID: InvalidArgument, false, "the decision filter is `permit` or `deny`";
    PERIOD_INVALID: InvalidArgument, false, "the period's start is not before its end";
    FILTER_INVALID: InvalidArgument, false, "a query filter is not of its form (an institution id, a basis or exchange-type id, an account `user@INSTITUTION`) or looks like an AVS number";
    // The consent registry.
    CONSENT_REGISTRY_UNAVAILABLE: Unavailable, true, "the consent registry cannot be reached; nothing was decided or changed";
    CONSENT_STORE_UNAVAILABLE: Unavailable, true, "the consent registry's store failed; nothing was changed";
    CONSENT_NOT_FOUND: NotFound, false, "no consent with this id covers the caller's institution";
    CONSENT_NOT_ACTIVE: FailedPrecondition, false, "the consent is revoked or expired";
    CONSENT_CONFLICT: Aborted, true, "the consent changed concurrently; read it again";
    CONSENT_PERSON_MISMATCH: FailedPrecondition, false, "the consent belongs to another person";
    CONSENT_NOT_USABLE: FailedPrecondition, false, "only the newest version of an active one-off consent can be marked used";
    CONSENT_ALREADY_USED: FailedPrecondition, false, "the one-off consent was used by another transfer";
    RELATIONSHIP_NOT_FOUND: NotFound, false, "no such relationship in the reference directory";
    ACTOR_REQUIRED: InvalidArgument, false, "the gateway must name the acting institution and user";
    RECURRENCE_REQUIRED: InvalidArgument, false, "a consent is one-off or repeated";
    VALIDITY_REQUIRED: InvalidArgument, false, "a consent's validity period is required";
    VALIDITY_PAST: InvalidArgument, false, "a consent's validity ends in the past";
    VALIDITY_INVERTED: InvalidArgument, false, "a consent's validity ends before it starts";
    VALIDITY_TOO_LONG: InvalidArgument, false, "a consent's validity is longer than allowed";
    DAYS_OUT_OF_RANGE: InvalidArgument, false, "the number of days asked about is out of range";
    SCOPE_EMPTY: InvalidArgument, false, "a consent's scope (institutions, directions, categories, purposes) is empty";
    UNKNOWN_INSTITUTION: InvalidArgument, false, "an institution id that is not in the registry";
    RECORDER_NOT_COVERED: InvalidArgument, false, "the recording institution is not among the consent's institutions";
    DIRECTION_TO_SELF: InvalidArgument, false, "a direction from an institution to itself";
    DIRECTION_OUTSIDE_SCOPE: InvalidArgument, false, "a direction names an institution outside the consent";
    EVIDENCE_REFERENCE_TOO_LONG: InvalidArgument, false, "the evidence reference is too long";
    EVIDENCE_HASH_LENGTH: InvalidArgument, false, "the evidence hash is not 32 bytes";
    EVIDENCE_REQUIRED: InvalidArgument, false, "a written consent needs its evidence";
    INFORMATION_REQUIRED: InvalidArgument, false, "the information given to the person is required";
    INFORMATION_TOO_LONG: InvalidArgument, false, "the information given to the person is too long";
    REPRESENTATIVE_INVALID: InvalidArgument, false, "the representative's description is invalid";
    LANGUAGE_UNKNOWN: InvalidArgument, false, "the language is not fr, de, it or en";
    CHANNEL_UNKNOWN: InvalidArgument, false, "the channel of the declaration is unknown";
    CAPACITY_INVALID: InvalidArgument, false, "the capacity of a relationship is invalid";
    // The node.
    NOT_ENROLLED: NotFound, false, "the local record id is not enrolled at this node";
    PERSON_ALREADY_ENROLLED: AlreadyExists, false, "the person is enrolled under another local record id";
    LOCAL_RECORD_ID_INVALID: InvalidArgument, false, "local_record_id is not 1–64 characters of A–Z a–z 0–9 . : _ / -";
    LOCAL_RECORD_ID_IS_AVS: InvalidArgument, false, "local_record_id looks like an AVS number";
    LOCAL_RECORD_ID_TAKEN: AlreadyExists, false, "the local record id is enrolled for another person";
    INBOX_ID_INVALID: InvalidArgument, false, "an inbox item id is not one of this node's";
    NODE_STORE: Internal, false, "the node's store failed or holds an unreadable record";
    GATEWAY_ANSWER_INVALID: Internal, false, "the gateway's answer could not be used by the node";
    RECEIPT_MISMATCH: InvalidArgument, false, "the audit receipt's entry is not about what came with it (another transfer, other parties or categories, other sealed bytes); nothing was stored";
    AUDIT_LOG_ALARM: FailedPrecondition, false, "this node saw the audit log rewritten and stopped exchanging";
    RECEIPT_INVALID: Unavailable, true, "the gateway's receipt does not verify against the log's key; nothing was recorded";
    RECEIPT_NOT_WITNESSED: Unavailable, true, "the receipt's checkpoint is not cosigned by more than half of the network's witnesses; nothing was recorded (the sender retries)";
    NOT_A_WITNESS: FailedPrecondition, false, "asked to cosign by a process the registry does not list as a witness with this key";
    CHECKPOINT_INVALID: InvalidArgument, false, "a checkpoint offered to a witness is not a checkpoint of the audit log signed by its key";
    NONCE_INVALID: InvalidArgument, false, "a sealed payload's nonce is not 12 bytes";
    NO_DATA_PUBLISHED: NotFound, false, "the holder has no data to provide about the person (not enrolled there, or nothing published: one answer, revealing no relationship)";
}

impl Grpc {
    /// The numeric gRPC status code.
    pub fn number(self) -> i32 {
        match self {
            Grpc::InvalidArgument => 3,
            Grpc::NotFound => 5,
            Grpc::AlreadyExists => 6,
            Grpc::PermissionDenied => 7,
            Grpc::ResourceExhausted => 8,
            Grpc::FailedPrecondition => 9,
            Grpc::Aborted => 10,
            Grpc::OutOfRange => 11,
            Grpc::Internal => 13,
            Grpc::Unavailable => 14,
            Grpc::Unauthenticated => 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_screaming_snake_case_and_retryable_only_when_transient() {
        let mut seen = std::collections::BTreeSet::new();
        for c in CODES {
            assert!(seen.insert(c.code), "{} registered twice", c.code);
            assert!(
                c.code
                    .chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_'),
                "{}",
                c.code
            );
            assert!(!c.meaning.is_empty() && !c.meaning.ends_with('.'), "{}", c.code);
            let transient = matches!(c.grpc, Grpc::Unavailable | Grpc::Aborted | Grpc::ResourceExhausted);
            assert_eq!(c.retryable, transient, "{}", c.code);
        }
        assert_eq!(lookup("TRANSFER_ID_REUSED").map(|c| c.grpc), Some(Grpc::AlreadyExists));
        assert_eq!(lookup("NO_SUCH_CODE"), None);
    }
}
