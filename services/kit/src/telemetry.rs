//! Log output: human-readable or JSON lines on standard error.
//!
//! INVARIANT (no-pii-in-logs): span and event fields carry institution ids,
//! transfer ids, codes and pseudonym *ciphertext hashes* only; AVS numbers,
//! payloads and secrets have no `Display` and are never logged.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber (a second call does nothing, so tests can
/// start several services in one process).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // When standard error cannot be written (a full disk under the log file), the
        // subscriber would report it with `eprintln!`, which panics — in the middle of a
        // transfer. A log line that cannot be written is dropped instead.
        .log_internal_errors(false);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Human => builder.with_target(true).try_init(),
    };
}
