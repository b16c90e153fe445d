//! The rulebook of CII Exchange: load, lint, decide, explain. Pure: no I/O,
//! no async, no clock (today's date is an argument).
//!
//! Jurists write the rulebook as TOML files (see `rulebook/federal/` for the
//! built-in federal one and docs/jurist-guide.md); [`check`] turns them into
//! a [`Rulebook`], [`decide()`] answers one transfer with a [`Decision`] that
//! cites its articles, [`explain()`] renders the full reasoning in FR, DE or EN.
//!
//! # Layout
//! - [`vocab`]: triggers, built-in conditions, attesters: the words the engine gives a meaning in code.
//! - [`rulebook`]: files → checked rulebook (types, facts, conditions, obligations, categories,
//!   purposes and bases all declared there), diagnostics, hash.
//! - [`mod@decide`]: the engine (deny by default).
//! - [`mod@explain`]: the reasoning, in three languages.
//! - [`scenario`]: jurists' test files.
//! - [`fit`]: whether a rulebook fits the network (registry members, the contract's categories).
//! - [`matrix`] and [`diff`]: tables for reading and reviewing a rulebook.
//! - [`replay`]: a changed rulebook run against recorded decisions.

// Security-critical code: no panicking shortcuts outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod decide;
pub mod diff;
pub mod explain;
pub mod fit;
pub mod matrix;
pub mod prove;
pub mod replay;
pub mod rulebook;
pub mod scenario;
pub mod space;
pub mod vocab;

pub use decide::{ConsentFound, Decision, Evaluation, Party, Transfer, decide};
pub use explain::explain;
pub use rulebook::{CheckReport, Diagnostic, Rulebook, Severity, Source, check, federal_sources, load};
pub use vocab::{Attester, Builtin, Lang, Trigger};

/// A single value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A name that is not in its list.
    #[error("unknown {what} `{value}` (expected one of: {expected})")]
    Unknown {
        /// What kind of name.
        what: String,
        /// The name given (an id, never personal data).
        value: String,
        /// The accepted names.
        expected: String,
    },
    /// A date that is not `YYYY-MM-DD`.
    #[error("`{0}` is not a date (YYYY-MM-DD)")]
    Date(String),
}

/// `YYYY-MM-DD`, as [`parse_date`] reads it.
pub fn date_text(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<time::Date, LoadError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &format).map_err(|_| LoadError::Date(s.to_owned()))
}
