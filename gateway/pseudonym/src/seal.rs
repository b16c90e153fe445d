//! Payloads sealed to one party: the gateway seals what it delivers (and what
//! waits in its outbox) so that only the recipient can read it.
//!
//! A key-encapsulation in libpep's own terms: a random group element is
//! ElGamal-encrypted under the global attribute key and rekeyed into the
//! recipient's attribute context (as the identity attribute is); the AES-256-GCM
//! key is SHA-256 of that element. The gateway forgets the element; the
//! recipient recovers it with its session key. No new key material is needed.

use libpep::data::elgamal::ElGamalEncryptable;
use libpep::prelude::*;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::PseudonymError;
use crate::gateway::{Gateway, Identity};
use crate::names::Party;
use crate::node::NodeKeys;

/// Domain separation of the key derivation.
const KEY_TAG: &[u8] = b"cii/seal/v1\0";

/// A sealed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The key element, encrypted for the recipient (64 bytes on the wire).
    pub key: EncryptedAttribute,
    /// The AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

fn aead_key(element: &Attribute) -> Result<LessSafeKey, PseudonymError> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(KEY_TAG);
    context.update(&element.to_bytes());
    let digest = context.finish();
    UnboundKey::new(&AES_256_GCM, digest.as_ref())
        .map(LessSafeKey::new)
        .map_err(|_| PseudonymError::Key("aead key"))
}

impl Gateway {
    /// Seals `plaintext` to `to`, bound to `aad` (e.g. sender and transfer id).
    pub fn seal(&self, to: &Party, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, PseudonymError> {
        let element = Attribute::random(&mut rand::rng());
        let key = aead_key(&element)?;
        let encrypted = self.encrypt_attribute(&element);
        let Identity(key_for_recipient) = self.rekey_identity(&Identity(encrypted), to);
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| PseudonymError::Key("random generator failed"))?;
        let mut ciphertext = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut ciphertext)
            .map_err(|_| PseudonymError::Key("seal failed"))?;
        Ok(Sealed {
            key: key_for_recipient,
            nonce,
            ciphertext,
        })
    }
}

impl NodeKeys {
    /// Opens a payload sealed to this node. Fails (`SEALED_PAYLOAD_UNREADABLE`)
    /// if it was sealed to another party, bound to other associated data, or altered.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, PseudonymError> {
        let element = self.decrypt_attribute(&sealed.key);
        let key = aead_key(&element)?;
        let mut buffer = sealed.ciphertext.clone();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(sealed.nonce), Aad::from(aad), &mut buffer)
            .map_err(|_| PseudonymError::Unsealed)?;
        Ok(plain.to_vec())
    }
}
