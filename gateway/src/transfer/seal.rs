//! Stage 4, sealed: a permitted push's payload filtered to the released
//! categories (generic, from the contract's `category` options), sealed to the
//! recipient, with the person transcrypted into the recipient's domain and the
//! identity rekeyed only if `identity.avs` is released. Filtering and sealing
//! happen before the entry, so the entry names what is delivered.

use cii_kit::auth::Caller;
use cii_proto::common as common_pb;
use cii_proto::node as node_pb;
use cii_pseudonym::gateway::Identity;
use cii_pseudonym::names::Party;
use prost::Message;

use super::check::{Direction, IDENTITY_AVS, sha256};
use super::{Decided, TransferError, Transfers};

/// Stage 4: what the recipient will receive, if anything.
#[derive(Debug, Default)]
pub struct Sealed {
    /// For a permitted push: the delivery for the outbox (without its receipt yet).
    pub(super) delivery: Option<node_pb::Delivery>,
    /// SHA-256 of the sealed payload as delivered (empty when nothing is delivered).
    pub(super) sealed_sha256: Vec<u8>,
}

impl Transfers {
    /// Stage 4: filter, transcrypt and seal a permitted push; nothing otherwise.
    pub(super) fn seal(&self, caller: &Caller, decided: &Decided<'_>) -> Result<Sealed, TransferError> {
        let checked = decided.checked();
        let (
            Direction::Push {
                type_url,
                payload,
                identity,
            },
            true,
        ) = (&checked.direction, decided.decision.is_permit())
        else {
            return Ok(Sealed::default());
        };
        let content = self.released_content(decided, type_url, payload)?;
        let recipient = Party::Institution(decided.consulted.to.id.clone());
        let sender = caller.institution.id.to_string();
        let aad = cii_types::transfer::seal_associated_data(&sender, checked.id.as_str());
        let sealed = self
            .pseudonyms
            .seal(&recipient, &aad, &content.encode_to_vec())
            .map_err(TransferError::Seal)?;
        let caller_party = Party::Institution(caller.institution.id.clone());
        let person = checked
            .person
            .as_ref()
            .map(|p| self.pseudonyms.translate(p, &caller_party, &recipient));
        // The AVS number travels only when `identity.avs` is released, rekeyed (never reshuffled).
        let identity = identity.filter(|_| decided.released.contains(IDENTITY_AVS));
        let identity = identity.map(|i| self.pseudonyms.rekey_identity(&Identity(i), &recipient).0);
        let sealed_payload = sealed_payload(sealed);
        // The entry commits to the bytes the recipient receives, which it can check.
        let sealed_sha256 = sha256(&sealed_payload.encode_to_vec());
        let delivery = node_pb::Delivery {
            transfer_id: checked.id.to_string(),
            sender,
            person: person.map(|p| common_pb::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&p),
            }),
            identity: identity.map(|i| common_pb::EncryptedIdentity {
                ciphertext: cii_pseudonym::wire::to_bytes(&i),
            }),
            payload: Some(sealed_payload.clone()),
            list_persons: checked
                .list
                .iter()
                .map(|p| common_pb::EncryptedPseudonym {
                    ciphertext: cii_pseudonym::wire::to_bytes(&self.pseudonyms.translate(p, &caller_party, &recipient)),
                })
                .collect(),
            decision: Some(decided.wire.clone()),
            receipt: None,
            notice: None,
            failure: None,
        };
        Ok(Sealed {
            delivery: Some(delivery),
            sealed_sha256,
        })
    }
}

impl Transfers {
    /// The content the recipient will open: the payload filtered to the released categories,
    /// and the written request.
    fn released_content(
        &self,
        decided: &Decided<'_>,
        type_url: &str,
        payload: &[u8],
    ) -> Result<node_pb::DeliveryContent, TransferError> {
        // INVARIANT (filter-before-seal): only released categories reach the sealed content.
        let filtered = self
            .catalogue
            .filter(type_url, payload, |c| decided.released.contains(c))
            .map_err(TransferError::Payload)?;
        let content = node_pb::DeliveryContent {
            payload: Some(prost_types::Any {
                type_url: type_url.to_owned(),
                value: filtered.bytes,
            }),
            written_request: decided.checked().written_request.clone(),
        };
        Ok(content)
    }
}

fn sealed_payload(sealed: cii_pseudonym::seal::Sealed) -> node_pb::SealedPayload {
    node_pb::SealedPayload {
        key: cii_pseudonym::wire::to_bytes(&sealed.key),
        nonce: sealed.nonce.to_vec(),
        ciphertext: sealed.ciphertext,
    }
}
