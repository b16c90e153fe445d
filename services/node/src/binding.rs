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
    if entry.released != expected.released {
        return mismatch("the entry released other categories than the decision received");
    }
    if let Some(sealed) = expected.sealed {
        let digest = ring::digest::digest(&ring::digest::SHA256, sealed);
        if entry.kind != cii_audit::EntryKind::TransferPermitted as i32 || entry.sealed_sha256 != digest.as_ref() {
            return mismatch("the entry does not commit to the sealed payload received");
        }
    }
    Ok(entry)
}

/// The exchange type an entry names must be the message received.
pub(crate) fn check_exchange_type(entry: &cii_audit::Entry, type_url: &str) -> Result<(), NodeError> {
    if type_url.rsplit('/').next() == Some(entry.exchange_type.as_str()) {
        Ok(())
    } else {
        Err(NodeError::ReceiptMismatch(
            "the entry names another exchange type than the payload received",
        ))
    }
}
