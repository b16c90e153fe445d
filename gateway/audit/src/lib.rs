//! The tamper-evident audit log of CII Exchange: every decision, enrolment,
//! consent change, DPO lookup and rulebook activation is an entry, a leaf of
//! an append-only RFC 6962 Merkle tree, covered by C2SP checkpoints signed
//! with Ed25519, durable before anything is delivered.
//!
//! # Layout
//! - [`entry`]: the canonical, versioned entry encoding (metadata only).
//! - [`merkle`]: RFC 6962 hashing, the tree, inclusion and consistency proofs and their verification.
//! - [`note`]: checkpoints as C2SP signed notes; signer, verifier key (vkey).
//! - [`body`]: entry bodies sealed per retention period (crypto-shredding).
//! - [`store`]: SQLite and PostgreSQL storage (sqlx; the only I/O besides the sequencer).
//! - [`sequencer`]: the single writer: group commit, checkpoint, receipts.
//! - [`verify`]: whole-log verification from the store (read-only).
//! - [`witness`]: the institutions' side: consistency checks and the alarm.
//!
//! Architecture Invariant: the log is append-only. No code path updates or
//! deletes entries (retention destroys the key of a period, never an entry), and [`verify`] uses only `entry`, `merkle` and `note`,
//! never the writer.

// Security-critical code: no panicking shortcuts outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod bench;
pub mod body;
pub mod entry;
pub mod merkle;
pub mod note;
pub mod sequencer;
pub mod store;
pub mod verify;
pub mod witness;

pub use entry::{Entry, EntryKind};
pub use sequencer::{Log, LogError, Receipt};
pub use store::Store;
