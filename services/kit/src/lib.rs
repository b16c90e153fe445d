//! Shared service plumbing of CII Exchange: config files, mutual TLS, JWT
//! verification, authentication, tracing, health and reflection, metrics,
//! graceful shutdown, and the development PKI.
//!
//! Architecture Invariant: this crate makes no domain decisions. It knows who
//! is calling and how to talk; what they may do is decided elsewhere.
//!
//! # Layout
//! - [`config`]: loading TOML with errors naming file and key; shared config pieces.
//! - [`registry`]: the network's members (the one file of truth).
//! - [`tls`]: rustls configurations, the TLS accept loop, lazily connecting channels.
//! - [`jwt`] and [`auth`]: the acting user, verified before any handler runs.
//! - [`grpc`]: health, reflection, the shared server and its refusal layer.
//! - [`status`]: errors as gRPC statuses with stable codes (the registry's status for each code).
//! - [`metrics`], [`telemetry`], [`shutdown`], [`clock`]: operations.
//! - [`pki`]: the development CA and certificates.
//! - [`rate_limit`]: per-institution token buckets by rpc family.

// Security-critical code: no panicking shortcuts outside tests (clippy.toml allows them in tests).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod grpc;
pub mod jwt;
pub mod metrics;
pub mod pki;
pub mod rate_limit;
pub mod registry;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod tls;
