//! Transfers: the id a sender chooses, the reference that names a transfer
//! across the network, the associated data that binds a sealed payload to its
//! transfer, and the states a transfer goes through.
//!
//! Node and gateway call the same functions: the node refuses, before storing
//! anything, every id the gateway would refuse.

use std::fmt;

use crate::InstitutionId;
use crate::avs::looks_like_avs;

/// Longest transfer id.
pub const MAX_TRANSFER_ID: usize = 64;

/// A transfer id chosen by its sender: 1–64 characters of `A–Z a–z 0–9 . _ : -`,
/// and nothing that looks like an AVS number (the id is stored at the gateway and
/// written into the audit log).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(String);

/// Why a text is not a transfer id. Messages never quote the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransferIdError {
    /// Empty, too long, or a character outside the alphabet.
    #[error("transfer_id must be 1–64 characters of A–Z, a–z, 0–9, '.', '_', ':', '-'")]
    Invalid,
    /// Its digits read as an AVS number.
    #[error("transfer_id looks like an AVS number; use a UUID")]
    LooksLikeAvs,
}

impl TransferIdError {
    /// Stable machine code.
    pub fn code(self) -> &'static str {
        match self {
            TransferIdError::Invalid => "TRANSFER_ID_INVALID",
            TransferIdError::LooksLikeAvs => "TRANSFER_ID_IS_AVS",
        }
    }
}

impl TransferId {
    /// Parses a transfer id.
    pub fn parse(id: &str) -> Result<TransferId, TransferIdError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
        if id.is_empty() || id.len() > MAX_TRANSFER_ID || !id.chars().all(allowed) {
            return Err(TransferIdError::Invalid);
        }
        if looks_like_avs(id) {
            return Err(TransferIdError::LooksLikeAvs);
        }
        Ok(TransferId(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `sender/transfer_id`: a transfer's name across the network (each sender chooses
/// its own ids). One-off consents record the transfer that used them by this name.
pub fn reference(sender: &InstitutionId, id: &TransferId) -> String {
    format!("{sender}/{id}")
}

/// The associated data of a payload sealed to a transfer's recipient: the sender
/// and the transfer id, so the recipient's node opens a sealed payload only as the
/// delivery it was sealed for (a payload moved into another delivery fails to open).
///
/// INVARIANT (seal-binds-transfer): the gateway seals and the node opens with this
/// one function.
pub fn seal_associated_data(sender: &str, transfer_id: &str) -> Vec<u8> {
    format!("{sender}/{transfer_id}").into_bytes()
}

/// The label of a sealed written request (`cii.common.v1.SealedParts.written_request`).
pub const WRITTEN_REQUEST_LABEL: &str = "written_request";

/// The associated data of one part of content sealed where it originates
/// (`cii.common.v1.SealedParts`): its origin (the institution that sealed it), the
/// transfer id, the exchange type and the part's label (its category, or
/// [`WRITTEN_REQUEST_LABEL`]). A part opens only as the part it was sealed as: the
/// gateway can drop parts, but not relabel one, move it into another transfer or
/// present it as another type.
///
/// INVARIANT (seal-binds-part): the originating node seals and the addressee opens with
/// this one function.
pub fn part_associated_data(origin: &str, transfer_id: &str, type_url: &str, label: &str) -> Vec<u8> {
    format!("cii/part/v1\n{origin}/{transfer_id}\n{type_url}\n{label}").into_bytes()
}

/// Where a transfer stands (the values of `gateway.v1.TransferResponse.State`,
/// which the gateway's store keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransferState {
    /// Denied: nothing was or will be delivered.
    Denied,
    /// Permitted and waiting in the outbox for the recipient.
    Queued,
    /// Delivered to the recipient (a pull: answered to the requester).
    Delivered,
    /// Acknowledged by the recipient.
    Acknowledged,
    /// Taken out of the outbox: refused for good by the recipient, or undeliverable past
    /// the retry limit (an operator may put it back).
    DeadLettered,
}

impl TransferState {
    /// The wire and stored value.
    pub fn code(self) -> i32 {
        use cii_proto::gateway::transfer_response::State;
        match self {
            TransferState::Denied => State::Denied as i32,
            TransferState::Queued => State::Queued as i32,
            TransferState::Delivered => State::Delivered as i32,
            TransferState::Acknowledged => State::Acknowledged as i32,
            TransferState::DeadLettered => State::DeadLettered as i32,
        }
    }

    /// The state of a stored or wire value; `None` for an unknown value.
    pub fn from_code(code: i64) -> Option<TransferState> {
        [
            TransferState::Denied,
            TransferState::Queued,
            TransferState::Delivered,
            TransferState::Acknowledged,
            TransferState::DeadLettered,
        ]
        .into_iter()
        .find(|s| i64::from(s.code()) == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_ids() {
        assert!(TransferId::parse("0b5e6c1a-4f2e-4c1b-9d7e-2a1f3c4d5e6f").is_ok());
        assert!(TransferId::parse("ORP-VS:2026.12_1").is_ok());
        assert_eq!(TransferId::parse(""), Err(TransferIdError::Invalid));
        assert_eq!(TransferId::parse(&"a".repeat(65)), Err(TransferIdError::Invalid));
        assert_eq!(TransferId::parse("a b"), Err(TransferIdError::Invalid));
        assert_eq!(TransferId::parse("é"), Err(TransferIdError::Invalid));
        assert_eq!(
            TransferId::parse("756.1234.5678.97"),
            Err(TransferIdError::LooksLikeAvs)
        );
        assert_eq!(TransferId::parse("x-7561234567897"), Err(TransferIdError::LooksLikeAvs));
        // 13 digits not starting with 756, and 756 with 12 digits, are ids.
        assert!(TransferId::parse("1234567890123").is_ok());
        assert!(TransferId::parse("756123456789").is_ok());
    }

    #[test]
    fn states_match_the_proto() {
        use cii_proto::gateway::transfer_response::State;
        assert_eq!(TransferState::Denied.code(), State::Denied as i32);
        assert_eq!(TransferState::Queued.code(), 2);
        assert_eq!(TransferState::from_code(3), Some(TransferState::Delivered));
        assert_eq!(TransferState::from_code(0), None);
        assert_eq!(TransferState::from_code(5), Some(TransferState::DeadLettered));
        assert_eq!(TransferState::from_code(6), None);
        assert!(TransferState::Queued < TransferState::Delivered);
    }
}
