//! Content sealed to one party, so that only it can read it.
//!
//! A key-encapsulation in libpep's own terms: a random group element is
//! ElGamal-encrypted under the global attribute key and rekeyed into the
//! recipient's attribute context (as the identity attribute is); the AES-256-GCM
//! key is SHA-256 of that element. The recipient recovers the element with its
//! session key. No new key material is needed.
//!
//! Two forms. [`Sealer`]: the **originating node** draws the element, encrypts it
//! under the global key and seals the parts itself; the gateway only rekeys the
//! element's ciphertext ([`Gateway::rekey_seal_key`]) and never holds the element,
//! so it cannot read what it forwards. [`Gateway::seal`]: the form of earlier
//! releases, where the gateway sealed plaintext it had read (still opened by
//! [`NodeKeys::open`] for deliveries queued before the change, and used by the
//! benches' crypto floor).

use libpep::data::elgamal::ElGamalEncryptable;
use libpep::prelude::*;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::PseudonymError;
use crate::gateway::{Gateway, Identity};
use crate::names::Party;
use crate::node::NodeKeys;

/// A fresh seal key at the originating node: its element encrypted under the global key
/// (what travels), and the AES key derived from it (what seals, kept only here).
pub struct Sealer {
    /// The element under the global attribute key: the gateway rekeys it to the addressee.
    pub key: EncryptedAttribute,
    aead: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// Seals one part under this key with a fresh random nonce, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), PseudonymError> {
        seal_with(&self.aead, aad, plaintext)
    }
}

/// A seal key recovered by its addressee: opens each part sealed under it.
pub struct Opener {
    aead: LessSafeKey,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener(..)")
    }
}

impl Opener {
    /// Opens one part; fails (`SEALED_PAYLOAD_UNREADABLE`) if it was bound to other associated
    /// data (another label, transfer or origin) or altered.
    pub fn open(&self, nonce: [u8; NONCE_LEN], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, PseudonymError> {
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .aead
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buffer)
            .map_err(|_| PseudonymError::Unsealed)?;
        Ok(plain.to_vec())
    }
}

fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), PseudonymError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| PseudonymError::Key("random generator failed"))?;
    let mut ciphertext = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut ciphertext)
        .map_err(|_| PseudonymError::Key("seal failed"))?;
    Ok((nonce, ciphertext))
}

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
        let key_for_recipient = self.rekey_seal_key(&encrypted, to);
        let (nonce, ciphertext) = seal_with(&key, aad, plaintext)?;
        Ok(Sealed {
            key: key_for_recipient,
            nonce,
            ciphertext,
        })
    }

    /// Rekeys a seal key drawn at a node (under the global key) to `to`: the one operation the
    /// gateway does on sealed content; it learns nothing of the element.
    pub fn rekey_seal_key(&self, key: &EncryptedAttribute, to: &Party) -> EncryptedAttribute {
        self.rekey_identity(&Identity(*key), to).0
    }
}

impl NodeKeys {
    /// A fresh seal key for content this node originates, under the global key.
    pub fn sealer(&self) -> Result<Sealer, PseudonymError> {
        let element = Attribute::random(&mut rand::rng());
        Ok(Sealer {
            key: self.encrypt_global_attribute(&element),
            aead: aead_key(&element)?,
        })
    }

    /// The seal key of content sealed to this node (rekeyed to it by the gateway).
    pub fn opener(&self, key: &EncryptedAttribute) -> Result<Opener, PseudonymError> {
        Ok(Opener {
            aead: aead_key(&self.decrypt_attribute(key))?,
        })
    }

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
