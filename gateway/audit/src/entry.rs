//! The canonical encoding of audit entries.
//!
//! `version ‖ body`. Version 1 is `0x01 ‖ AuditEntry` (protobuf,
//! `proto/cii/audit/v1/entry.proto`). prost writes fields in number order and
//! omits defaults, so one entry has one encoding; decoding re-encodes and
//! rejects anything that is not byte for byte canonical (unknown fields,
//! non-minimal varints, an unknown version).
//!
//! INVARIANT (entries-readable-forever): every version ever written keeps its
//! decoder here, so a log verifies the same after any upgrade; a new format is
//! a new version with its own decoder, never a change to an old one. The
//! fixture of `tests/fixtures/release-0.1` is a log written by an earlier
//! release, verified by the current build in `tests/e2e/upgrade.rs`.

use prost::Message;

pub use cii_proto::audit::{AuditEntry as Entry, EntryKind};

/// The encoding version written as the first byte.
pub const VERSION: u8 = 1;

/// Largest entry accepted (entries hold metadata only; anything bigger is a bug or an attack).
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// An entry's bytes could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Empty input.
    #[error("empty entry")]
    Empty,
    /// Unknown encoding version.
    #[error("unknown entry encoding version {0}")]
    Version(u8),
    /// Too large.
    #[error("entry larger than {MAX_ENTRY_BYTES} bytes")]
    TooLarge,
    /// Not a valid `AuditEntry`.
    #[error("entry is not a valid AuditEntry")]
    Malformed,
    /// Valid, but not the canonical encoding.
    #[error("entry is not canonically encoded")]
    NotCanonical,
    /// `kind` is unspecified or unknown.
    #[error("entry kind is missing or unknown")]
    Kind,
}

/// The canonical bytes of an entry.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entry.encoded_len());
    out.push(VERSION);
    // Encoding into a Vec cannot fail (it grows as needed).
    let _ = entry.encode(&mut out);
    out
}

/// Decodes the canonical bytes of any version this release reads; anything else is an error.
pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
    let (&version, body) = bytes.split_first().ok_or(EntryError::Empty)?;
    match version {
        1 => decode_v1(bytes, body),
        other => Err(EntryError::Version(other)),
    }
}

/// Version 1: `0x01 ‖ AuditEntry`, canonical.
fn decode_v1(bytes: &[u8], body: &[u8]) -> Result<Entry, EntryError> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(EntryError::TooLarge);
    }
    let entry = Entry::decode(body).map_err(|_| EntryError::Malformed)?;
    if EntryKind::try_from(entry.kind).map_or(true, |k| k == EntryKind::Unspecified) {
        return Err(EntryError::Kind);
    }
    // Canonical as version 1 wrote it (not as the current version would).
    let mut canonical = Vec::with_capacity(bytes.len());
    canonical.push(1);
    let _ = entry.encode(&mut canonical);
    if canonical != bytes {
        return Err(EntryError::NotCanonical);
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            index: 7,
            time_micros: 1_790_000_000_000_000,
            kind: EntryKind::TransferPermitted as i32,
            transfer_id: "t-1".into(),
            sender: "ORP-VS".into(),
            recipient: "AI-VS".into(),
            bases: vec!["LAI-3b-2-i".into()],
            audit_pseudonym: vec![9; 64],
            ..Entry::default()
        }
    }

    #[test]
    fn encoding_round_trips_and_is_deterministic() {
        let e = sample();
        let bytes = encode(&e);
        assert_eq!(bytes, encode(&e.clone()));
        assert_eq!(decode(&bytes), Ok(e));
    }

    #[test]
    fn non_canonical_or_foreign_bytes_are_refused() {
        let bytes = encode(&sample());
        assert_eq!(decode(&[]), Err(EntryError::Empty));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(decode(&v2), Err(EntryError::Version(2)));
        // An unknown field appended: valid protobuf, not canonical.
        let mut extra = bytes.clone();
        extra.extend_from_slice(&[0xf8, 0x07, 0x01]); // field 127, varint 1
        assert_eq!(decode(&extra), Err(EntryError::NotCanonical));
        let no_kind = encode(&Entry { kind: 0, ..sample() });
        assert_eq!(decode(&no_kind), Err(EntryError::Kind));
        assert_eq!(decode(&[1, 0xff]), Err(EntryError::Malformed));
    }
}
