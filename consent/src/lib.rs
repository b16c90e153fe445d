//! The CII Exchange consent registry and reference directory: its own
//! process, its own store, its own pseudonymisation domain. It holds persons'
//! consent declarations (every version kept) and which institution serves
//! which person, and answers the gateway's lookups. Only the gateway reaches it.
//!
//! # Layout
//! - [`config`]: the config file and its checked form.
//! - [`model`]: what a consent is, the checks of a declaration, whether it covers a transfer (pure).
//! - [`store`]: SQLite or PostgreSQL; append-only versions, the directory, the change feed.
//! - `service`: `cii.consent.v1.ConsentRegistry`.
//! - `error`, `status`: the registry's errors, each with its stable code, and their gRPC statuses (built only there).
//!
//! Architecture Invariant: persons exist here only as registry-domain
//! pseudonyms, decrypted with the registry's own session key from what the
//! gateway transcrypted; no AVS number, no other domain's pseudonym, and no
//! pseudonym in a log line or an answer.
//!
//! Entry point: [`run`], which `cii consent` and the tests call.

// Security-critical code: no panicking shortcuts outside tests (clippy.toml allows them in tests).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod config;
mod error;
pub mod model;
mod service;
mod status;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cii_kit::auth::{Authenticate, IssuerSource};
use cii_kit::clock::{Clock, SystemClock};
use cii_kit::metrics::Metrics;
use cii_kit::tls::{self, ClientAuth, PeerPolicy};
use cii_proto::consent::consent_registry_server::ConsentRegistryServer;
use cii_types::PeerIdentity;
use tokio::net::TcpListener;

pub use config::ConsentConfig;

/// The sockets the registry serves on (bound by the caller, so tests use port 0).
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC API for the gateway.
    pub grpc: TcpListener,
    /// The `/metrics` endpoint, if any.
    pub metrics: Option<TcpListener>,
}

/// Why the registry stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] cii_kit::tls::TlsError),
    /// Reflection could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] cii_kit::grpc::ReflectionError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Services the registry serves.
pub const SERVICES: &[&str] = &["cii.consent.v1.ConsentRegistry"];

/// Runs the registry until `shutdown` resolves.
pub async fn run(
    config: ConsentConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with_clock(config, listeners, Arc::new(SystemClock), shutdown).await
}

/// [`run`] with an injected clock (tests of expiry).
pub async fn run_with_clock(
    config: ConsentConfig,
    listeners: Listeners,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Metrics::new("consent");
    let revoked = {
        let registry = config.registry.clone();
        move |serial: &[u8]| registry.current().is_revoked(serial)
    };
    // Only the gateway: institutions reach the registry through it.
    let tls_config = tls::server_config(
        &config.tls,
        ClientAuth::Required(PeerPolicy::only(PeerIdentity::Gateway, revoked)),
    )?;
    let store = store::Store::open(&config.database).await?;
    let (_health_reporter, health, reflection_v1, reflection_v1alpha) =
        cii_kit::grpc::health_and_reflection(SERVICES).await?;
    let vocabulary = Arc::new(service::Vocabulary {
        registry: config.registry.clone(),
        rulebook: config.rulebook.clone(),
    });
    // Every call is checked again against the registry active now (a revoked
    // gateway certificate stops working on open connections too).
    let authenticate = Authenticate::new(IssuerSource::PeerCertificate, config.registry.clone(), clock.clone())
        .admit(Arc::new(|peer: &PeerIdentity| *peer == PeerIdentity::Gateway));
    let registry_service = ConsentRegistryServer::with_interceptor(
        service::ConsentService::new(store.clone(), config.keys.clone(), vocabulary, clock.clone()),
        authenticate,
    );
    let router = cii_kit::grpc::server(&metrics)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(registry_service);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(
        config
            .registry
            .clone()
            .watch(config.file.registry.poll(), metrics.clone(), |_| {}, stop_rx.clone()),
    );
    // The process's own certificate, renewed on the same beat.
    tokio::spawn(
        config
            .tls
            .clone()
            .watch_renewal(config.file.registry.poll(), metrics.clone(), stop_rx.clone()),
    );
    if let Some(listener) = listeners.metrics {
        let mut stop = stop_rx.clone();
        tokio::spawn(cii_kit::metrics::serve(listener, metrics.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    // Expiries enter the change feed within one sweep period.
    let sweep = {
        let (store, clock, mut stop) = (store.clone(), clock.clone(), stop_rx);
        let period = Duration::from_secs(config.file.store.expiry_sweep_seconds);
        tokio::spawn(async move {
            loop {
                let now = cii_types::time::micros(clock.now());
                match store.sweep_expired(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "consents expired"),
                    Err(e) => tracing::warn!(error = %e, "expiry sweep failed; retrying next period"),
                }
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        })
    };
    tracing::info!(addr = ?listeners.grpc.local_addr().ok(), "consent registry serving");
    let result = cii_kit::grpc::serve_tls(router, listeners.grpc, tls_config, &metrics, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = sweep.await;
    store.close().await;
    tracing::info!("consent registry stopped");
    Ok(result?)
}
