//! The one place the consent registry turns its errors into gRPC statuses
//! (stable code, field at fault, the registry's status for the code). A store
//! failure is logged here with its cause; the gateway gets the generic message.

use tonic::Status;

use crate::error::ConsentError;
use crate::model::Invalid;
use crate::store::StoreError;

impl From<ConsentError> for Status {
    fn from(e: ConsentError) -> Status {
        let message = match &e {
            ConsentError::Store(StoreError::Db(_) | StoreError::Migrate(_) | StoreError::Corrupt(_)) => {
                tracing::error!(error = %e, "consent store failed");
                "the consent registry's database failed; nothing was changed, retry later".to_owned()
            }
            _ => e.to_string(),
        };
        cii_kit::status::refusal(e.code(), message, e.field())
    }
}

impl From<Invalid> for Status {
    fn from(invalid: Invalid) -> Status {
        ConsentError::Invalid(invalid).into()
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        ConsentError::Store(e).into()
    }
}
