//! Content sealed to this institution by the gateway: a delivery's payload, a pull's
//! answer. Both use the same scheme (`cii_pseudonym::seal`), opened with this node's keys.

use cii_proto::node as pb;
use prost::Message;

use crate::error::NodeError;

/// Opens content sealed to this institution (a delivery's payload, a pull's answer):
/// `(key, nonce, ciphertext)` as they travel, under the associated data `aad`.
pub(crate) fn open(
    keys: &cii_pseudonym::node::NodeKeys,
    field: &'static str,
    (key, nonce, ciphertext): (&[u8], &[u8], &[u8]),
    aad: &[u8],
) -> Result<pb::DeliveryContent, NodeError> {
    let key = cii_pseudonym::wire::attribute(key).map_err(|source| NodeError::Crypto { field, source })?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| NodeError::NonceInvalid)?;
    let sealed = cii_pseudonym::seal::Sealed {
        key,
        nonce,
        ciphertext: ciphertext.to_vec(),
    };
    let plain = keys
        .open(&sealed, aad)
        .map_err(|source| NodeError::Crypto { field, source })?;
    pb::DeliveryContent::decode(plain.as_slice()).map_err(|_| NodeError::ContentInvalid)
}
