//! Errors as gRPC statuses, the one place kit builds them.
//!
//! Every caller-facing error carries a stable machine code in
//! `google.rpc.ErrorInfo.reason` (domain `cii.exchange`) and, for grpcurl and
//! simple clients, in the `cii-error-code` trailer; the field at fault, if
//! any, in ErrorInfo metadata `field` and the `cii-error-field` trailer. The
//! message is generic and never holds personal data. The gRPC status code of a
//! registered code comes from the registry (`cii_types::codes`), so one code
//! always travels with one status.

use std::collections::HashMap;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// The ErrorInfo domain of our codes.
pub const ERROR_DOMAIN: &str = "cii.exchange";
/// Trailer carrying the stable code.
pub const CODE_TRAILER: &str = "cii-error-code";

/// The metadata key carrying the delay before a rate-limited call may be retried, in milliseconds.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
/// Trailer carrying the field at fault.
pub const FIELD_TRAILER: &str = "cii-error-field";

impl From<crate::auth::AuthError> for Status {
    fn from(e: crate::auth::AuthError) -> Status {
        let mut status = refusal(e.code(), e.to_string(), e.field());
        if let crate::auth::AuthError::RateLimited { wait_ms, .. } = e
            && let Ok(value) = wait_ms.to_string().parse()
        {
            // The delay as a number, for clients that back off (also in the message).
            status.metadata_mut().insert(RETRY_AFTER_MS, value);
        }
        status
    }
}

/// A refusal with the registered code `code`: its gRPC status comes from the
/// registry. A code missing from the registry is a bug (the registry test
/// catches it); it is still sent, as INTERNAL, and logged.
pub fn refusal(code: &str, message: impl Into<String>, field: Option<&str>) -> Status {
    let grpc = match cii_types::codes::lookup(code) {
        Some(entry) => tonic::Code::from_i32(entry.grpc.number()),
        None => {
            tracing::error!(code, "unregistered error code");
            tonic::Code::Internal
        }
    };
    error(grpc, code, message, field)
}

/// tonic's refusal of a request above its decoding limit, named.
pub fn message_too_large(limit: usize) -> Status {
    refusal(
        "MESSAGE_TOO_LARGE",
        format!("the request is larger than {limit} bytes; nothing was done"),
        None,
    )
}

/// tonic's refusal of a request that does not decode, named (`detail` is prost's text: the
/// message and field path, never the bytes).
pub fn message_malformed(detail: &str) -> Status {
    refusal(
        "MESSAGE_MALFORMED",
        format!("the request does not decode ({detail}); nothing was done"),
        None,
    )
}

/// A caller-facing error with a stable `reason` code and an explicit status.
fn error(code: tonic::Code, reason: &str, message: impl Into<String>, field: Option<&str>) -> Status {
    let mut metadata = HashMap::new();
    if let Some(field) = field {
        metadata.insert("field".to_owned(), field.to_owned());
    }
    let mut status = Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    );
    if let Ok(value) = reason.parse() {
        status.metadata_mut().insert(CODE_TRAILER, value);
    }
    if let Some(value) = field.and_then(|f| f.parse().ok()) {
        status.metadata_mut().insert(FIELD_TRAILER, value);
    }
    status
}

/// The stable code of a status, if it carries one.
pub fn error_code(status: &Status) -> Option<String> {
    status.get_error_details().error_info().map(|info| info.reason.clone())
}

/// The field at fault named by a status, if any.
pub fn error_field(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get("field").cloned())
}
