//! The CII Exchange pseudonym scheme (polymorphic pseudonymisation, libpep
//! 0.14): the node half and the gateway (transcryptor) half. Pure: no I/O.
//!
//! Every institution is its own pseudonymisation domain, and so are the
//! consent registry and the audit log. Nodes encrypt under the network's
//! global public key (libpep-check.md §1 (4b)); the gateway transcrypts from
//! the caller's domain — taken from its certificate, never from a request —
//! into a target domain and encryption context, and never sees a plaintext.
//!
//! # Layout
//! - [`names`]: domains and encryption contexts named from registry ids.
//! - [`node`]: what a node does (enrol, decrypt, encrypt its own pseudonym, the identity attribute).
//! - [`gateway`]: what the gateway does (transcrypt, rekey identities), with its two refusals.
//! - [`wire`]: ciphertexts to and from bytes.
//! - [`shares`]: two transcryptors: the ceremony in shares (no dealer) and one transcryptor's hop.
//!
//! Architecture Invariant: the gateway half holds only the pseudonymisation
//! and rekeying secrets (and public keys); it has no way to decrypt, and it
//! refuses a target equal to the origin domain. Rekeying exists only for
//! [`Identity`](gateway::Identity) attributes, so a pseudonym cannot be rekeyed
//! without its reshuffle (both would hand out the AVS-derived origin value).

// Security-critical code: no panicking shortcuts outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod ceremony;
pub mod gateway;
pub mod names;
pub mod node;
pub mod seal;
pub mod shares;
pub mod wire;

/// The ciphertext types callers hold, so they need not depend on libpep themselves.
pub use libpep::prelude::{EncryptedAttribute, EncryptedPseudonym};

/// A pseudonym operation failed. Messages never contain a pseudonym or an AVS number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PseudonymError {
    /// A ciphertext is not 64 bytes.
    #[error("ciphertext must be 64 bytes")]
    Length,
    /// 64 bytes that are not two valid Ristretto255 points.
    #[error("ciphertext is not a valid Ristretto255 encoding")]
    NotAPoint,
    /// The target is the reserved origin domain.
    #[error("refused: transcryption into the origin domain would reveal the AVS-derived value")]
    OriginTarget,
    /// The identity attribute does not decode to an AVS number (wrong recipient or damaged).
    #[error("identity attribute does not decode to an AVS number")]
    NotAnIdentity,
    /// A sealed payload does not open: sealed to another party, other associated data, or altered.
    #[error("sealed payload does not open with this key (another recipient, or altered)")]
    Unsealed,
    /// Key material is unusable.
    #[error("key material: {0}")]
    Key(&'static str),
}

impl PseudonymError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            PseudonymError::Length => "CIPHERTEXT_LENGTH",
            PseudonymError::NotAPoint => "CIPHERTEXT_INVALID",
            PseudonymError::OriginTarget => "ORIGIN_TARGET_REFUSED",
            PseudonymError::NotAnIdentity => "IDENTITY_UNREADABLE",
            PseudonymError::Unsealed => "SEALED_PAYLOAD_UNREADABLE",
            PseudonymError::Key(_) => "KEY_MATERIAL",
        }
    }
}

/// Decodes lowercase or uppercase hex; `None` on anything else.
fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}
