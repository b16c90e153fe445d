//! What both audit benchmarks append: one realistic permitted-transfer entry.

use cii_audit::{Entry, EntryKind};

/// The `i`-th benchmark entry (metadata only, as the gateway writes them).
pub fn entry(i: u64) -> Entry {
    Entry {
        kind: EntryKind::TransferPermitted as i32,
        time_micros: 1_790_000_000_000_000 + i as i64,
        transfer_id: format!("transfer-{i:012}"),
        sender: "ORP-VS".into(),
        recipient: "AI-VS".into(),
        acting_user: "anna.meier".into(),
        purpose: "early_detection".into(),
        bases: vec!["LAI-3b-2-i".into()],
        released: vec!["identity".into(), "health_limitations".into()],
        audit_pseudonym: vec![7; 64],
        payload_sha256: vec![9; 32],
        rulebook_hash: "76dfced76fda7da64f8aa660994798f154ae0ffb224bc2c217eece94cc5ed428".into(),
        ..Entry::default()
    }
}
