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

/// Longest value of a one-line field (ids, codes, names, the acting user).
pub const MAX_FIELD_CHARS: usize = 256;

/// Longest `detail` (a short description: filters, versions, a retention run's months).
pub const MAX_DETAIL_CHARS: usize = 4096;

/// Most values of a repeated field (bases, categories, reasons, consents…).
pub const MAX_VALUES: usize = 256;

/// Why an entry was refused before it was written: the field and the rule it breaks.
///
/// INVARIANT (log-reads-back-what-it-writes): the writer checks every entry with
/// [`check`], so nothing enters the log that the reader would refuse, and no
/// control character, oversized value or AVS look-alike reaches a DPO's screen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry field {field}: {problem}")]
pub struct Refused {
    /// The entry's field at fault.
    pub field: &'static str,
    /// The rule it breaks (never the value, which may be personal data).
    pub problem: &'static str,
}

/// Checks what an entry may hold: every text field one line of at most
/// [`MAX_FIELD_CHARS`] characters ([`MAX_DETAIL_CHARS`] for `detail`), no control
/// characters, no AVS look-alike (in `detail`, per word), at most [`MAX_VALUES`]
/// values per repeated field, hashes and pseudonyms of their own sizes, and the
/// whole encoding within [`MAX_ENTRY_BYTES`] whatever index it is given.
pub fn check(entry: &Entry) -> Result<(), Refused> {
    let refuse = |field, problem| Err(Refused { field, problem });
    let singles = [
        ("transfer_id", &entry.transfer_id),
        ("sender", &entry.sender),
        ("recipient", &entry.recipient),
        ("acting_user", &entry.acting_user),
        ("exchange_type", &entry.exchange_type),
        ("purpose", &entry.purpose),
        ("trigger", &entry.trigger),
        ("rulebook_hash", &entry.rulebook_hash),
        ("reviewer", &entry.reviewer),
        ("case_reference", &entry.case_reference),
    ];
    for (field, value) in singles {
        check_text(field, value, MAX_FIELD_CHARS)?;
    }
    // Free text a member chooses: no AVS number anywhere in it, whatever surrounds it.
    for (field, value) in [
        ("acting_user", &entry.acting_user),
        ("purpose", &entry.purpose),
        ("reviewer", &entry.reviewer),
    ] {
        if cii_types::avs::contains_avs(value) {
            return refuse(field, "looks like an AVS number");
        }
    }
    // A case reference is an identifier: separators must not disguise a number in it.
    if cii_types::avs::hides_avs(&entry.case_reference) {
        return refuse("case_reference", "looks like an AVS number");
    }
    let lists = [
        ("bases", &entry.bases),
        ("released", &entry.released),
        ("withheld", &entry.withheld),
        ("reasons", &entry.reasons),
        ("consents", &entry.consents),
        ("attestations", &entry.attestations),
        ("obligations", &entry.obligations),
        ("reviewer_attestations", &entry.reviewer_attestations),
        ("network_facts", &entry.network_facts),
        ("consents_found", &entry.consents_found),
    ];
    for (field, values) in lists {
        if values.len() > MAX_VALUES {
            return refuse(field, "too many values");
        }
        for value in values {
            check_text(field, value, MAX_FIELD_CHARS)?;
        }
    }
    check_line(&entry.detail, MAX_DETAIL_CHARS).map_err(|problem| Refused {
        field: "detail",
        problem,
    })?;
    if entry
        .detail
        .split_whitespace()
        .any(|word| word.split(['=', ',', ';']).any(cii_types::avs::looks_like_avs))
    {
        return refuse("detail", "looks like an AVS number");
    }
    for (field, bytes, allowed) in [
        ("audit_pseudonym", &entry.audit_pseudonym, 64),
        ("payload_sha256", &entry.payload_sha256, 32),
        ("written_request_sha256", &entry.written_request_sha256, 32),
        ("sealed_sha256", &entry.sealed_sha256, 32),
    ] {
        if !bytes.is_empty() && bytes.len() != allowed {
            return refuse(field, "wrong length");
        }
    }
    if entry.list_audit_pseudonyms.len() > MAX_VALUES {
        return refuse("list_audit_pseudonyms", "too many values");
    }
    if entry.list_audit_pseudonyms.iter().any(|p| p.len() != 64) {
        return refuse("list_audit_pseudonyms", "wrong length");
    }
    // The largest index adds at most 10 bytes of varint and its tag.
    let largest = 1
        + Entry {
            index: u64::MAX,
            ..Entry::default()
        }
        .encoded_len()
        + entry.encoded_len();
    if largest > MAX_ENTRY_BYTES {
        return refuse("entry", "larger than the log reads back");
    }
    Ok(())
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), Refused> {
    let problem = check_line(value, max)
        .err()
        .or_else(|| cii_types::avs::looks_like_avs(value).then_some("looks like an AVS number"));
    problem.map_or(Ok(()), |problem| Err(Refused { field, problem }))
}

fn check_line(value: &str, max: usize) -> Result<(), &'static str> {
    if value.chars().count() > max {
        return Err("too long");
    }
    // Control characters, and the format characters that break a line or reorder what a
    // DPO reads (line and paragraph separators, bidirectional overrides, zero-width marks).
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if value.chars().any(unsafe_char) {
        return Err("contains a control character");
    }
    Ok(())
}

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

    #[test]
    fn check_refuses_what_the_reader_would_refuse_or_should_not_show() {
        assert_eq!(check(&sample()), Ok(()));
        let refused = |e: Entry| check(&e).map_err(|r| (r.field, r.problem));
        let long = "x".repeat(MAX_FIELD_CHARS + 1);
        assert_eq!(
            refused(Entry {
                acting_user: long.clone(),
                ..sample()
            }),
            Err(("acting_user", "too long"))
        );
        assert_eq!(
            refused(Entry {
                bases: vec![long],
                ..sample()
            }),
            Err(("bases", "too long"))
        );
        assert_eq!(
            refused(Entry {
                bases: vec!["b".into(); MAX_VALUES + 1],
                ..sample()
            }),
            Err(("bases", "too many values"))
        );
        assert_eq!(
            refused(Entry {
                transfer_id: "a\nb".into(),
                ..sample()
            }),
            Err(("transfer_id", "contains a control character"))
        );
        assert_eq!(
            refused(Entry {
                acting_user: "756.1234.5678.97".into(),
                ..sample()
            }),
            Err(("acting_user", "looks like an AVS number"))
        );
        assert_eq!(
            refused(Entry {
                detail: "basis=x acting_user=7561234567897".into(),
                ..sample()
            }),
            Err(("detail", "looks like an AVS number"))
        );
        // Digits spread over several words of a detail are not one number.
        assert_eq!(
            check(&Entry {
                detail: "version=756 size=1234567897".into(),
                ..sample()
            }),
            Ok(())
        );
        assert_eq!(
            refused(Entry {
                detail: "d".repeat(MAX_DETAIL_CHARS + 1),
                ..sample()
            }),
            Err(("detail", "too long"))
        );
        assert_eq!(
            refused(Entry {
                payload_sha256: vec![0; 31],
                ..sample()
            }),
            Err(("payload_sha256", "wrong length"))
        );
        // Every field at its limit still fits what the reader accepts.
        let max = "m".repeat(MAX_FIELD_CHARS);
        let full = Entry {
            index: u64::MAX,
            detail: "d".repeat(MAX_DETAIL_CHARS),
            bases: vec![max.clone(); 40],
            ..sample()
        };
        assert_eq!(check(&full), Ok(()));
        assert!(decode(&encode(&full)).is_ok());
        let over = Entry {
            bases: vec![max.clone(); 250],
            released: vec![max; 250],
            ..sample()
        };
        assert_eq!(refused(over), Err(("entry", "larger than the log reads back")));
    }
}
