//! The one place the node turns its errors into gRPC statuses (stable code,
//! field at fault, the registry's status for the code). Failures of the node
//! itself are logged here with their cause; callers get the generic message.

use tonic::Status;

use crate::error::NodeError;

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        match &e {
            NodeError::Store(cause) => tracing::error!(error = %cause, "node store failed"),
            NodeError::StoreCorrupt(what) => tracing::error!(what, "node store holds an unusable record"),
            NodeError::Witness(failure) => {
                tracing::error!(code = failure.code(), error = %failure, "receipt refused")
            }
            _ => {}
        }
        cii_kit::status::refusal(e.code(), e.to_string(), e.field())
    }
}
