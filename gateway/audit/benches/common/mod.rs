//! What both audit benchmarks append: one realistic permitted-transfer entry.

pub use cii_audit::bench::sample_entry as entry;
