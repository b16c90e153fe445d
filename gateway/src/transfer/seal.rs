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
use cii_pseudonym::names::Party;
use cii_pseudonym::shares::{Ciphertext, Operation, Source};
use cii_pseudonym::{EncryptedAttribute, EncryptedPseudonym};
use prost::Message;

use crate::pseudonyms::PseudonymsError;

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
/// the written request if any, the key rekeyed (by both transcryptors) to `to`.
pub(super) async fn forward(
    pseudonyms: &crate::pseudonyms::Pseudonyms,
    sealed: &SealedContent,
    released: impl Fn(&str) -> bool,
    (to, purpose): (&Party, &crate::pseudonyms::Purpose),
) -> Result<common_pb::SealedParts, TransferError> {
    Ok(forwarded(
        sealed,
        released,
        pseudonyms.rekey(&sealed.key, to, purpose).await?,
    ))
}

/// The parts `released` accepts, under `key` (the seal key rekeyed to the addressee).
fn forwarded(
    sealed: &SealedContent,
    released: impl Fn(&str) -> bool,
    key: EncryptedAttribute,
) -> common_pb::SealedParts {
    common_pb::SealedParts {
        key: cii_pseudonym::wire::to_bytes(&key),
        type_url: sealed.type_url.clone(),
        parts: sealed.parts.iter().filter(|p| released(&p.category)).cloned().collect(),
        written_request: sealed.written_request.clone(),
    }
}

impl Transfers {
    /// Stage 4: forward a permitted push's parts and transcrypt its persons; nothing otherwise.
    pub(super) async fn seal(&self, caller: &Caller, decided: &Decided<'_>) -> Result<Sealed, TransferError> {
        let checked = decided.checked();
        let (Direction::Push { identity }, Some(content), true) =
            (&checked.direction, &checked.sealed, decided.decision.is_permit())
        else {
            return Ok(Sealed::default());
        };
        let recipient = Party::Institution(decided.consulted.to.id.clone());
        // The AVS number travels only when `identity.avs` is released, rekeyed (never reshuffled).
        let identity = identity.filter(|_| decided.released.contains(IDENTITY_AVS));
        let operations = recipient_operations(caller, checked, content, identity, &recipient);
        let mut done = self
            .pseudonyms
            .run(operations, &checked.purpose(caller))
            .await?
            .into_iter();
        let mut attribute = || match done.next() {
            Some(Ciphertext::Attribute(a)) => Ok(a),
            _ => Err(TransferError::from(PseudonymsError::Invalid(
                "not an attribute".to_owned(),
            ))),
        };
        // INVARIANT (filter-before-seal): only released categories' parts reach the recipient.
        let parts = forwarded(content, |c| decided.released.contains(c), attribute()?);
        let identity = identity.map(|_| attribute()).transpose()?;
        let mut pseudonyms = done.map(|c| match c {
            Ciphertext::Pseudonym(p) => Ok(common_pb::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&p),
            }),
            Ciphertext::Attribute(_) => Err(TransferError::from(PseudonymsError::Invalid(
                "not a pseudonym".to_owned(),
            ))),
        });
        let person = checked.person.as_ref().and_then(|_| pseudonyms.next()).transpose()?;
        let list_persons = pseudonyms.collect::<Result<Vec<_>, _>>()?;
        // The entry commits to the bytes the recipient receives, which it can check.
        let sealed_sha256 = sha256(&parts.encode_to_vec());
        let delivery = node_pb::Delivery {
            transfer_id: checked.id.to_string(),
            sender: caller.institution.id.to_string(),
            person,
            identity: identity.map(|i| common_pb::EncryptedIdentity {
                ciphertext: cii_pseudonym::wire::to_bytes(&i),
            }),
            payload: None,
            list_persons,
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
    pub(super) async fn forward_sealed(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
        to: &Party,
    ) -> Result<Option<common_pb::SealedParts>, TransferError> {
        match &checked.sealed {
            Some(sealed) => Ok(Some(
                forward(&self.pseudonyms, sealed, |_| false, (to, &checked.purpose(caller))).await?,
            )),
            None => Ok(None),
        }
    }
}

/// What the recipient of a push gets, in one round of both transcryptors, in this order: the
/// seal key, the identity (if it travels), the person (if any), the list's persons.
fn recipient_operations(
    caller: &Caller,
    checked: &Checked<'_>,
    content: &SealedContent,
    identity: Option<EncryptedAttribute>,
    recipient: &Party,
) -> Vec<Operation> {
    let from_node = Source::node(None);
    let from_caller = Source::node(Some(Party::Institution(caller.institution.id.clone())));
    let attribute = |a: EncryptedAttribute| Operation {
        ciphertext: Ciphertext::Attribute(a),
        from: from_node.clone(),
        to: recipient.clone(),
    };
    let pseudonym = |p: &EncryptedPseudonym| Operation {
        ciphertext: Ciphertext::Pseudonym(*p),
        from: from_caller.clone(),
        to: recipient.clone(),
    };
    std::iter::once(attribute(content.key))
        .chain(identity.map(attribute))
        .chain(checked.person.iter().map(pseudonym))
        .chain(checked.list.iter().map(pseudonym))
        .collect()
}
