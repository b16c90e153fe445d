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

/// Operations for the second transcryptor, as `cii.transcryptor.v1` carries them.
pub mod hop {
    use cii_proto::transcryptor as pb;

    use crate::PseudonymError;
    use crate::names::Party;
    use crate::shares::{Ciphertext, Operation, Source};

    /// Why a wire operation is refused: its field and the reason (never a value).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Refused {
        /// The field at fault.
        pub field: &'static str,
        /// Why.
        pub error: PseudonymError,
    }

    /// `op` after the gateway's hop, under `key`, for the wire.
    pub fn to_wire(op: &Operation, key: &[u8; 32]) -> pb::Operation {
        let (kind, ciphertext) = match &op.ciphertext {
            Ciphertext::Pseudonym(c) => (pb::operation::Kind::Pseudonym, super::to_bytes(c)),
            Ciphertext::Attribute(c) => (pb::operation::Kind::Attribute, super::to_bytes(c)),
        };
        let (from_context, from_epoch) = op
            .from
            .context
            .as_ref()
            .map_or((String::new(), 0), |(p, epoch)| (p.label(), *epoch));
        pb::Operation {
            kind: kind as i32,
            ciphertext,
            key: key.to_vec(),
            from_domain: op.from.domain.as_ref().map(Party::label).unwrap_or_default(),
            from_context,
            from_epoch,
            to: op.to.label(),
        }
    }

    /// A wire operation, checked: the operation and the key it is under.
    pub fn from_wire(op: &pb::Operation) -> Result<(Operation, [u8; 32]), Refused> {
        let refuse = |field, error| Refused { field, error };
        let unknown = PseudonymError::Key("not a party of this network's names");
        let ciphertext = match pb::operation::Kind::try_from(op.kind) {
            Ok(pb::operation::Kind::Pseudonym) => {
                Ciphertext::Pseudonym(super::pseudonym(&op.ciphertext).map_err(|e| refuse("ciphertext", e))?)
            }
            Ok(pb::operation::Kind::Attribute) => {
                Ciphertext::Attribute(super::attribute(&op.ciphertext).map_err(|e| refuse("ciphertext", e))?)
            }
            _ => return Err(refuse("kind", PseudonymError::Key("kind is PSEUDONYM or ATTRIBUTE"))),
        };
        let key = <[u8; 32]>::try_from(op.key.as_slice()).map_err(|_| refuse("key", PseudonymError::Length))?;
        let party = |field, label: &str| Party::parse(label).ok_or_else(|| refuse(field, unknown.clone()));
        let domain = if op.from_domain.is_empty() {
            None
        } else {
            Some(party("from_domain", &op.from_domain)?)
        };
        let context = if op.from_context.is_empty() {
            None
        } else {
            Some((party("from_context", &op.from_context)?, op.from_epoch))
        };
        // The origin domain is a source only under the global key (enrolment).
        if domain.is_none() && context.is_some() {
            return Err(refuse("from_context", PseudonymError::OriginTarget));
        }
        let to = party("to", &op.to)?;
        Ok((
            Operation {
                ciphertext,
                from: Source { domain, context },
                to,
            },
            key,
        ))
    }

    /// A result for the wire.
    pub fn result_to_wire(ciphertext: &Ciphertext, key: &[u8; 32]) -> pb::Result {
        let ciphertext = match ciphertext {
            Ciphertext::Pseudonym(c) => super::to_bytes(c),
            Ciphertext::Attribute(c) => super::to_bytes(c),
        };
        pb::Result {
            ciphertext,
            key: key.to_vec(),
        }
    }

    /// A wire result of an operation of `kind`'s kind.
    pub fn result_from_wire(kind: &Ciphertext, result: &pb::Result) -> Result<Ciphertext, PseudonymError> {
        Ok(match kind {
            Ciphertext::Pseudonym(_) => Ciphertext::Pseudonym(super::pseudonym(&result.ciphertext)?),
            Ciphertext::Attribute(_) => Ciphertext::Attribute(super::attribute(&result.ciphertext)?),
        })
    }
}
