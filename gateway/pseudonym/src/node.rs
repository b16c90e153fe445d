//! The node half: what an institution's node does with its own session key.

use cii_types::AvsNumber;
use libpep::data::elgamal::ElGamalEncryptable;
use libpep::data::padding::Padded;
use libpep::elgamal::arithmetic::hashing::hash_to_group;
use libpep::prelude::*;

use crate::PseudonymError;

/// Domain-separation tag of the origin identifier.
const AVS_TAG: &[u8] = b"cii/avs/v1\0";

/// A node's key material: the network's global public keys and its own session keys.
pub struct NodeKeys {
    global: GlobalPublicKeys,
    session: SessionKeys,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // INVARIANT (no-secrets-in-logs): the session secret is never printed.
        f.write_str("NodeKeys(..)")
    }
}

/// A person's pseudonym in this node's domain (the index key of its records).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalPseudonym(pub [u8; 32]);

impl std::fmt::Debug for LocalPseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hex is fine for a node's own logs (it is not the AVS number), but keep it short.
        write!(f, "LocalPseudonym({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl NodeKeys {
    /// Builds from the global public keys and this node's session keys.
    pub fn new(global: GlobalPublicKeys, session: SessionKeys) -> NodeKeys {
        NodeKeys { global, session }
    }

    /// Builds from the ceremony's files: `global-public.json` and the party's `session-keys.json`.
    pub fn from_json(global_public: &str, session_keys: &str) -> Result<NodeKeys, PseudonymError> {
        let global = serde_json::from_str(global_public)
            .map_err(|_| PseudonymError::Key("global public key file is not the ceremony's JSON"))?;
        let session = serde_json::from_str(session_keys)
            .map_err(|_| PseudonymError::Key("session key file is not the ceremony's JSON"))?;
        Ok(NodeKeys::new(global, session))
    }

    /// The origin identifier of `avs` (tagged hash to the group), encrypted
    /// under the global key, for enrolment.
    pub fn enrolment_ciphertext(&self, avs: &AvsNumber) -> EncryptedPseudonym {
        let mut input = AVS_TAG.to_vec();
        input.extend_from_slice(avs.expose_digits().as_bytes());
        let origin: Pseudonym = <Pseudonym>::from_point(hash_to_group(&input));
        encrypt_global(&origin, &self.global, &mut rand::rng())
    }

    /// Decrypts a pseudonym addressed to this node. A ciphertext addressed to
    /// another domain or key gives a different value, not an error: it then
    /// matches no enrolled person ("not enrolled").
    pub fn decrypt(&self, ciphertext: &EncryptedPseudonym) -> LocalPseudonym {
        let p: Pseudonym = decrypt(ciphertext, &self.session);
        LocalPseudonym(p.to_bytes())
    }

    /// Encrypts this node's pseudonym of a person under the global key, for a transfer.
    pub fn encrypt_own(&self, pseudonym: &LocalPseudonym) -> Result<EncryptedPseudonym, PseudonymError> {
        let p: Pseudonym = <Pseudonym>::from_slice(&pseudonym.0).ok_or(PseudonymError::NotAPoint)?;
        Ok(encrypt_global(&p, &self.global, &mut rand::rng()))
    }

    /// The AVS number as an identity attribute, encrypted under the global attribute key.
    pub fn encrypt_identity(&self, avs: &AvsNumber) -> Result<EncryptedAttribute, PseudonymError> {
        let a: Attribute = <Attribute>::from_string_padded(&avs.expose_digits())
            .map_err(|_| PseudonymError::Key("avs does not fit an attribute"))?;
        Ok(encrypt_global(&a, &self.global, &mut rand::rng()))
    }

    /// Encrypts any attribute under the global attribute key (a seal key's element).
    pub(crate) fn encrypt_global_attribute(&self, attribute: &Attribute) -> EncryptedAttribute {
        encrypt_global(attribute, &self.global, &mut rand::rng())
    }

    /// Decrypts any attribute addressed to this node (for opening sealed payloads).
    pub(crate) fn decrypt_attribute(&self, ciphertext: &EncryptedAttribute) -> Attribute {
        decrypt(ciphertext, &self.session)
    }

    /// Reads an identity attribute addressed to this node.
    pub fn decrypt_identity(&self, ciphertext: &EncryptedAttribute) -> Result<AvsNumber, PseudonymError> {
        let a: Attribute = decrypt(ciphertext, &self.session);
        let text = a.to_string_padded().map_err(|_| PseudonymError::NotAnIdentity)?;
        AvsNumber::parse(&text).map_err(|_| PseudonymError::NotAnIdentity)
    }
}
