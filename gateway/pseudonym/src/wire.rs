//! Ciphertexts on the wire: libpep's 64-byte encoding (two compressed points).

use libpep::data::elgamal::ElGamalEncrypted;
use libpep::prelude::{EncryptedAttribute, EncryptedPseudonym};

use crate::PseudonymError;

/// Parses a pseudonym ciphertext, telling a wrong length from an invalid point.
pub fn pseudonym(bytes: &[u8]) -> Result<EncryptedPseudonym, PseudonymError> {
    if bytes.len() != 64 {
        return Err(PseudonymError::Length);
    }
    <EncryptedPseudonym>::from_slice(bytes).ok_or(PseudonymError::NotAPoint)
}

/// Parses an identity-attribute ciphertext.
pub fn attribute(bytes: &[u8]) -> Result<EncryptedAttribute, PseudonymError> {
    if bytes.len() != 64 {
        return Err(PseudonymError::Length);
    }
    <EncryptedAttribute>::from_slice(bytes).ok_or(PseudonymError::NotAPoint)
}

/// The 64-byte wire form of a ciphertext.
pub fn to_bytes(ciphertext: &impl ElGamalEncrypted) -> Vec<u8> {
    ciphertext.to_bytes().to_vec()
}
