//! Stage 4, sealed: a permitted push's parts, as the sender's node sealed them for the
//! recipient, forwarded without being read — the parts of withheld categories dropped,
//! the seal key rekeyed to the recipient — with the person transcrypted into the
//! recipient's domain and the identity rekeyed only if `identity.avs` is released. This
//! happens before the entry, so the entry commits to the bytes the recipient receives.
//!
//! INVARIANT (nothing-readable-at-the-gateway): the gateway holds no seal key's element
//! and opens nothing; it releases or withholds whole parts by their labels. That each part
//! carries only its label's fields, the recipient's node checks when it opens it.

use cii_kit::auth::Caller;
use cii_proto::common as common_pb;
use cii_proto::node as node_pb;
use cii_pseudonym::gateway::Identity;
use cii_pseudonym::names::Party;
use prost::Message;

use super::check::{Direction, IDENTITY_AVS, SealedContent, sha256};
use super::{Checked, Decided, TransferError, Transfers};

/// Stage 4: what the recipient will receive, if anything.
#[derive(Debug, Default)]
pub struct Sealed {
    /// For a permitted push: the delivery for the outbox (without its receipt yet).
    pub(super) delivery: Option<node_pb::Delivery>,
    /// SHA-256 of the sealed parts as delivered (empty when nothing is delivered).
    pub(super) sealed_sha256: Vec<u8>,
}

/// Sealed content forwarded to `to`: only the parts whose category `released` accepts,
/// the written request if any, the key rekeyed from the global key to `to`.
pub(super) fn forward(
    pseudonyms: &cii_pseudonym::gateway::Gateway,
    sealed: &SealedContent,
    released: impl Fn(&str) -> bool,
    to: &Party,
) -> common_pb::SealedParts {
    common_pb::SealedParts {
        key: cii_pseudonym::wire::to_bytes(&pseudonyms.rekey_seal_key(&sealed.key, to)),
        type_url: sealed.type_url.clone(),
        parts: sealed.parts.iter().filter(|p| released(&p.category)).cloned().collect(),
        written_request: sealed.written_request.clone(),
    }
}

impl Transfers {
    /// Stage 4: forward a permitted push's parts and transcrypt its persons; nothing otherwise.
    pub(super) fn seal(&self, caller: &Caller, decided: &Decided<'_>) -> Result<Sealed, TransferError> {
        let checked = decided.checked();
        let (Direction::Push { identity }, Some(content), true) =
            (&checked.direction, &checked.sealed, decided.decision.is_permit())
        else {
            return Ok(Sealed::default());
        };
        let recipient = Party::Institution(decided.consulted.to.id.clone());
        // INVARIANT (filter-before-seal): only released categories' parts reach the recipient.
        let parts = forward(&self.pseudonyms, content, |c| decided.released.contains(c), &recipient);
        let caller_party = Party::Institution(caller.institution.id.clone());
        let person = checked
            .person
            .as_ref()
            .map(|p| self.pseudonyms.translate(p, &caller_party, &recipient));
        // The AVS number travels only when `identity.avs` is released, rekeyed (never reshuffled).
        let identity = identity.filter(|_| decided.released.contains(IDENTITY_AVS));
        let identity = identity.map(|i| self.pseudonyms.rekey_identity(&Identity(i), &recipient).0);
        // The entry commits to the bytes the recipient receives, which it can check.
        let sealed_sha256 = sha256(&parts.encode_to_vec());
        let delivery = node_pb::Delivery {
            transfer_id: checked.id.to_string(),
            sender: caller.institution.id.to_string(),
            person: person.map(|p| common_pb::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&p),
            }),
            identity: identity.map(|i| common_pb::EncryptedIdentity {
                ciphertext: cii_pseudonym::wire::to_bytes(&i),
            }),
            payload: None,
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
            parts: Some(parts),
        };
        Ok(Sealed {
            delivery: Some(delivery),
            sealed_sha256,
        })
    }

    /// A pull's written request, as the requester's node sealed it, forwarded to the holder
    /// `to` (for its review, or with the ask to provide).
    pub(super) fn forward_sealed(&self, checked: &Checked<'_>, to: &Party) -> Option<common_pb::SealedParts> {
        let sealed = checked.sealed.as_ref()?;
        Some(forward(&self.pseudonyms, sealed, |_| false, to))
    }
}
