//! The tamper-evident audit log of CII Exchange: every decision, enrolment,
//! consent change, DPO lookup and rulebook activation is an entry, a leaf of
//! an append-only RFC 6962 Merkle tree, covered by C2SP checkpoints signed
//! with Ed25519, durable before anything is delivered.
//!
//! # Layout
//! - [`entry`]: the canonical, versioned entry encoding (metadata only).
//! - [`merkle`]: RFC 6962 hashing, the tree, inclusion and consistency proofs and their verification.
//! - [`note`]: checkpoints as C2SP signed notes; signer, verifier key (vkey).
//! - [`cosignature`]: C2SP tlog-cosignature lines of the witnesses, and the quorum that makes a checkpoint trusted.
//! - [`body`]: entry bodies sealed per retention period (crypto-shredding).
//! - [`store`]: SQLite and PostgreSQL storage (sqlx; the only I/O besides the sequencer).
//! - [`sequencer`]: the single writer: group commit, checkpoint, receipts.
//! - [`queue`]: several replicas on one PostgreSQL log: appends queued, integrated by the lease holder.
//! - [`verify`]: whole-log verification from the store (read-only).
//!
//! `store`, `sequencer`, `verify` and `bench` are the crate's I/O, behind the `store` feature
//! (on by default); without it the crate is pure (a tidy test checks its dependency closure).
//! - [`witness`]: the institutions' side: consistency checks and the alarm.
//!
//! Architecture Invariant: the log is append-only. No code path updates or
//! deletes entries (retention destroys the key of a period, never an entry), and [`verify`] uses only `entry`, `merkle` and `note`,
//! never the writer.

// Security-critical code: no panicking shortcuts outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[cfg(feature = "store")]
pub mod bench;
pub mod body;
pub mod cosignature;
pub mod entry;
#[cfg(feature = "store")]
pub mod lease;
pub mod merkle;
pub mod note;
#[cfg(feature = "store")]
pub mod queue;
#[cfg(feature = "store")]
pub mod sequencer;
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "store")]
pub mod subtrees;
#[cfg(feature = "store")]
pub mod verify;
pub mod witness;

pub use entry::{Entry, EntryKind};
#[cfg(feature = "store")]
pub use sequencer::{Log, LogError, Receipt};
#[cfg(feature = "store")]
pub use store::Store;
