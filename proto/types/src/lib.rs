//! Validated domain types of CII Exchange: institution ids and types, user
//! roles, and the identities that certificates carry.
//!
//! Parse, don't validate: every value here was checked when it was built, so
//! code holding one never re-checks it. Domain types are deliberately not
//! `Serialize`; wire (prost), row and config types live at the boundaries and
//! convert into these in exactly one place.
//!
//! # Layout
//! - [`access`]: the rpc → roles table, checked before any handler.
//! - [`avs`]: [`AvsNumber`], which never prints itself; the AVS look-alike rule.
//! - [`codes`]: the registry of stable error codes (gRPC status, retryability, meaning).
//! - [`exchange`]: the catalogue's field categories and the generic payload filter.
//! - [`institution`]: [`InstitutionId`], [`InstitutionType`].
//! - [`identity`]: [`PeerIdentity`], the identity inside a certificate.
//! - [`role`]: [`Role`], what an acting user may do.
//! - [`time`]: moments as microseconds and as wire timestamps (the one conversion).
//! - [`transfer`]: [`TransferId`], the transfer reference, the seal's associated data, [`TransferState`].

// Security-critical code: no panicking shortcuts outside tests (clippy.toml allows them in tests).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod access;
pub mod avs;
pub mod codes;
pub mod exchange;
pub mod identity;
pub mod institution;
pub mod role;
pub mod time;
pub mod transfer;

pub use avs::{AvsError, AvsNumber};
pub use identity::{PeerIdentity, WitnessName};
pub use institution::{InstitutionId, InstitutionType};
pub use role::Role;
pub use transfer::{TransferId, TransferState};

/// Why a value was rejected. Messages never quote the rejected input, which may
/// be personal data; they name the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The value is empty.
    #[error("{field}: must not be empty")]
    Empty {
        /// The field at fault.
        field: &'static str,
    },
    /// The value is longer than allowed.
    #[error("{field}: longer than {max} characters")]
    TooLong {
        /// The field at fault.
        field: &'static str,
        /// The maximum length.
        max: usize,
    },
    /// The value contains characters outside its alphabet.
    #[error("{field}: {rule}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The value is not one of the known names.
    #[error("{field}: unknown value, expected one of {expected}")]
    Unknown {
        /// The field at fault.
        field: &'static str,
        /// The accepted values.
        expected: &'static str,
    },
}

impl ParseError {
    /// Stable machine code for callers (`INVALID_ARGUMENT` reasons).
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::Empty { .. } => "EMPTY",
            ParseError::TooLong { .. } => "TOO_LONG",
            ParseError::Invalid { .. } => "INVALID",
            ParseError::Unknown { .. } => "UNKNOWN_VALUE",
        }
    }

    /// The field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            ParseError::Empty { field }
            | ParseError::TooLong { field, .. }
            | ParseError::Invalid { field, .. }
            | ParseError::Unknown { field, .. } => field,
        }
    }
}
