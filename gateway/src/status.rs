//! The one place the gateway turns its errors into gRPC statuses: the stable
//! code in `ErrorInfo.reason` and the `cii-error-code` trailer, the field at
//! fault, the gRPC status code from the code registry (`cii_types::codes`).
//! Failures of the gateway itself (stores, the log) are logged here with
//! their cause; the caller gets the generic message only.

use tonic::Status;

use crate::{GatewayError, TransferError};

impl From<TransferError> for Status {
    fn from(e: TransferError) -> Status {
        match &e {
            TransferError::Store(cause) => tracing::error!(error = %cause, "gateway store failed"),
            TransferError::StoreCorrupt(what) => tracing::error!(what, "gateway store holds an unreadable record"),
            TransferError::AuditInconsistent(what) => tracing::error!(what, "audit log inconsistent"),
            TransferError::Pseudonyms(cause) => tracing::warn!(error = %cause, "transcryption not completed"),
            _ => {}
        }
        let mut status = cii_kit::status::refusal(e.code(), e.to_string(), e.field());
        if let TransferError::RelationshipPushesLimited { wait_ms } = e
            && let Ok(value) = wait_ms.to_string().parse()
        {
            status.metadata_mut().insert(cii_kit::status::RETRY_AFTER_MS, value);
        }
        status
    }
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Status {
        match &e {
            GatewayError::Request(inner) => {
                return cii_kit::status::refusal(inner.code(), inner.to_string(), inner.field());
            }
            GatewayError::Store(cause) => tracing::error!(error = %cause, "gateway store failed"),
            GatewayError::StoreCorrupt(what) => tracing::error!(what, "gateway store holds an unreadable record"),
            GatewayError::ConsentRegistryUnavailable => tracing::warn!("consent registry unreachable"),
            GatewayError::Pseudonyms(cause) => tracing::warn!(error = %cause, "transcryption not completed"),
            _ => {}
        }
        cii_kit::status::refusal(e.code(), e.to_string(), e.field())
    }
}
