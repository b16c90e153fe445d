//! Receipts bound to what they came with. A receipt proves that *an* entry is in the
//! log; the node also checks that it is the entry of *this* delivery or answer: the
//! entry's canonical bytes travel with the receipt, hash to its leaf, and name this
//! transfer id, sender and recipient, the released categories of the decision that came
//! with it, and (for a delivery) the hash of the sealed bytes received.
//!
//! INVARIANT (receipt-bound-to-delivery): the node stores nothing whose receipt's entry
//! is about something else; a dishonest gateway cannot reuse one logged entry to cover
//! a delivery it never logged.

use cii_proto::common::Receipt;

use crate::error::NodeError;

/// What the receipt's entry must say.
pub(crate) struct Expected<'a> {
    pub transfer_id: &'a str,
    pub sender: &'a str,
    pub recipient: &'a str,
    /// The released categories of the decision that came with it.
    pub released: &'a [String],
    /// For a delivery: the encoded sealed payload received.
    pub sealed: Option<&'a [u8]>,
    /// Whether the entry must be a permit (a delivery, a pull answered with data, a holder
    /// asked to provide).
    pub permitted: bool,
}

/// Checks the receipt's entry against `expected`; the decoded entry if it matches.
pub(crate) fn check(receipt: &Receipt, expected: &Expected<'_>) -> Result<cii_audit::Entry, NodeError> {
    let mismatch = |what| Err(NodeError::ReceiptMismatch(what));
    if cii_audit::merkle::leaf_hash(&receipt.entry).as_slice() != receipt.leaf_hash.as_slice() {
        return mismatch("the entry's bytes do not hash to the receipt's leaf");
    }
    let entry = cii_audit::entry::decode(&receipt.entry)
        .map_err(|_| NodeError::ReceiptMismatch("the entry does not decode"))?;
    if entry.index != receipt.leaf_index {
        return mismatch("the entry is not at the receipt's index");
    }
    if entry.transfer_id != expected.transfer_id {
        return mismatch("the entry is about another transfer id");
    }
    if entry.sender != expected.sender || entry.recipient != expected.recipient {
        return mismatch("the entry names other parties");
    }
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    if sorted(&entry.released) != sorted(expected.released) {
        return mismatch("the entry released other categories than the decision received");
    }
    if expected.permitted && entry.kind != cii_audit::EntryKind::TransferPermitted as i32 {
        return mismatch("the entry is not a permit");
    }
    if let Some(sealed) = expected.sealed {
        let digest = ring::digest::digest(&ring::digest::SHA256, sealed);
        // Entries of earlier releases commit to the plaintext instead: `check_content` checks it.
        let legacy = entry.sealed_sha256.is_empty() && entry.payload_sha256.len() == 32;
        if !legacy && entry.sealed_sha256 != digest.as_ref() {
            return mismatch("the entry does not commit to the sealed payload received");
        }
    }
    Ok(entry)
}

/// The opened payload agrees with the entry: the exchange type it names and, for an entry of
/// an earlier release (which committed to the plaintext), the payload's hash.
pub(crate) fn check_content(entry: &cii_audit::Entry, payload: Option<&prost_types::Any>) -> Result<(), NodeError> {
    let (type_url, value) = payload.map_or(("", &[][..]), |p| (p.type_url.as_str(), p.value.as_slice()));
    if type_url.rsplit('/').next() != Some(entry.exchange_type.as_str()) {
        return Err(NodeError::ReceiptMismatch(
            "the entry names another exchange type than the payload received",
        ));
    }
    if entry.sealed_sha256.is_empty()
        && ring::digest::digest(&ring::digest::SHA256, value).as_ref() != entry.payload_sha256.as_slice()
    {
        return Err(NodeError::ReceiptMismatch(
            "the entry does not commit to the payload received",
        ));
    }
    Ok(())
}

/// A notice from the gateway is logged before it is sent: its receipt's entry is the
/// CONSENT_NOTICE_QUEUED entry of this notice to this institution, or the
/// DELIVERY_DEAD_LETTERED entry of this institution's own delivery.
pub(crate) fn check_notice(
    receipt: &Receipt,
    own: &str,
    delivery: &cii_proto::node::Delivery,
) -> Result<(), NodeError> {
    let mismatch = |what| Err(NodeError::ReceiptMismatch(what));
    if cii_audit::merkle::leaf_hash(&receipt.entry).as_slice() != receipt.leaf_hash.as_slice() {
        return mismatch("the entry's bytes do not hash to the receipt's leaf");
    }
    let entry = cii_audit::entry::decode(&receipt.entry)
        .map_err(|_| NodeError::ReceiptMismatch("the entry does not decode"))?;
    let matches = match (&delivery.notice, &delivery.failure) {
        (Some(notice), None) => {
            entry.kind == cii_audit::EntryKind::ConsentNoticeQueued as i32
                && entry.recipient == own
                && entry.consents == [format!("{}@{}", notice.consent_id, notice.version)]
                && entry
                    .detail
                    .split_whitespace()
                    .any(|w| w.strip_prefix("notice=") == Some(delivery.transfer_id.as_str()))
        }
        (None, Some(failure)) => {
            entry.kind == cii_audit::EntryKind::DeliveryDeadLettered as i32
                && entry.sender == own
                && entry.transfer_id == failure.transfer_id
                && entry.recipient == failure.recipient
        }
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        mismatch("the entry is not this notice's")
    }
}
