//! The CII Exchange institution node: the institution's IT systems call its
//! API; it talks to the gateway on their behalf and receives what the gateway
//! delivers.
//!
//! # Layout
//! - [`config`]: the config file and its checked form.
//! - `api`: `cii.node.v1.Node`, for the institution's IT (TLS + JWT).
//! - `inbound`: `cii.node.v1.NodeInbound`, for the gateway (mutual TLS, gateway only).
//! - [`store`]: the node's database: enrolled persons, AVS numbers sealed at rest.
//! - [`witness`]: every receipt checked against the log's key, the checkpoints seen before and
//!   the witnesses' quorum; the node's own cosigning of checkpoints.
//! - [`independent`]: the independent witness process (`cii witness serve`): the witness role alone.
//! - [`witness_service`]: `cii.witness.v1.Witness` on the inbound API (and in `cii witness serve`).
//! - `error`, `status`: the node's errors, each with its stable code, and their gRPC statuses (built only there).
//!
//! Entry point: [`run`], which `cii node` and the tests call.

// Security-critical code: no panicking shortcuts outside tests (clippy.toml allows them in tests).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod api;
mod binding;
pub mod config;
pub use error::NodeError;
mod error;
mod inbound;
pub mod independent;
pub mod sealed;
mod status;
pub mod store;
pub mod witness;
pub mod witness_service;

use std::future::Future;
use std::sync::Arc;

use cii_kit::auth::{Authenticate, IssuerSource};
use cii_kit::clock::{Clock, SystemClock};
use cii_kit::metrics::Metrics;
use cii_kit::tls::{self, ClientAuth, PeerPolicy};
use cii_proto::node::node_inbound_server::NodeInboundServer;
use cii_proto::node::node_server::NodeServer;
use cii_types::PeerIdentity;
use tokio::net::TcpListener;

pub use config::NodeConfig;

/// The sockets the node serves on (bound by the caller, so tests use port 0).
#[derive(Debug)]
pub struct Listeners {
    /// The API for the institution's IT systems.
    pub api: TcpListener,
    /// The inbound API for the gateway.
    pub inbound: TcpListener,
    /// The `/metrics` endpoint, if any.
    pub metrics: Option<TcpListener>,
}

/// Why the node stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] cii_kit::tls::TlsError),
    /// Reflection could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] cii_kit::grpc::ReflectionError),
    /// A gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The node's database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The witness state could not be restored.
    #[error(transparent)]
    Witness(#[from] witness::WitnessFailure),
}

/// Services of the IT-facing API.
pub const API_SERVICES: &[&str] = &["cii.node.v1.Node"];
/// Services of the gateway-facing API.
pub const INBOUND_SERVICES: &[&str] = &["cii.node.v1.NodeInbound", "cii.witness.v1.Witness"];

/// Runs the node until `shutdown` resolves.
pub async fn run(config: NodeConfig, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_with_clock(config, listeners, Arc::new(SystemClock), shutdown).await
}

/// [`run`] with an injected clock.
pub async fn run_with_clock(
    config: NodeConfig,
    listeners: Listeners,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Metrics::new("node");
    let revoked = {
        let registry = config.registry.clone();
        move |serial: &[u8]| registry.current().is_revoked(serial)
    };
    // Outbound: we only talk to a server whose certificate names the gateway.
    let gateway_tls = tls::client_config(&config.tls, PeerPolicy::only(PeerIdentity::Gateway, revoked.clone()))?;
    let gateways: Vec<String> = std::iter::once(&config.file.gateway_url)
        .chain(&config.file.gateway_replicas)
        .cloned()
        .collect();
    let gateway = tls::channel_to_any(&gateways, gateway_tls, tls::CALL_DEADLINE)?;

    // IT-facing API: server-authenticated TLS; users authenticate by JWT of this institution.
    let api_tls = tls::server_config(&config.tls, ClientAuth::None)?;
    let (_api_health, api_health, api_refl_v1, api_refl_v1alpha) =
        cii_kit::grpc::health_and_reflection(API_SERVICES).await?;
    // The institution's keys and granted roles are read from the registry active at each call.
    let authenticate = Authenticate::new(
        IssuerSource::Fixed(config.institution.id.clone()),
        config.registry.clone(),
        clock.clone(),
    )
    .max_lifetime(i64::from(config.file.registry.max_token_lifetime_seconds))
    .limits(Arc::new(cii_kit::rate_limit::Limits::new(&config.file.limits)));
    let store = Arc::new(store::Store::open(&config.database, &config.store_key.0).await?);
    let witness = Arc::new(
        witness::LogWitness::open(
            config.audit_verifier.clone(),
            store.clone(),
            witness::witnesses_of(config.registry.clone()),
            config
                .cosigning_key
                .clone()
                .map(|key| (PeerIdentity::Institution(config.institution.id.clone()), key)),
        )
        .await?,
    );
    let api = NodeServer::with_interceptor(
        api::NodeApi::new(
            config.institution.id.clone(),
            gateway.clone(),
            config.keys.clone(),
            store.clone(),
            witness.clone(),
            clock.clone(),
        ),
        authenticate,
    );
    let api_router = cii_kit::grpc::server(&metrics)
        .add_service(api_health)
        .add_service(api_refl_v1)
        .add_service(api_refl_v1alpha)
        .add_service(api);

    // Gateway-facing API: mutual TLS admitting the gateway only.
    let inbound_tls = tls::server_config(
        &config.tls,
        ClientAuth::Required(PeerPolicy::only(PeerIdentity::Gateway, revoked)),
    )?;
    let (_in_health, in_health, in_refl_v1, in_refl_v1alpha) =
        cii_kit::grpc::health_and_reflection(INBOUND_SERVICES).await?;
    // The gateway's certificate is checked again on every call against the active
    // registry, so its revocation reaches connections already open.
    let inbound = NodeInboundServer::with_interceptor(
        inbound::NodeInboundService::new(
            config.institution.id.clone(),
            config.keys.clone(),
            store.clone(),
            witness.clone(),
            gateway,
            clock.clone(),
        ),
        Authenticate::new(IssuerSource::PeerCertificate, config.registry.clone(), clock.clone())
            .admit(Arc::new(|peer: &PeerIdentity| *peer == PeerIdentity::Gateway)),
    );
    let cosigning = cii_proto::witness::witness_server::WitnessServer::with_interceptor(
        witness_service::WitnessService::new(witness.clone()),
        Authenticate::new(IssuerSource::PeerCertificate, config.registry.clone(), clock.clone())
            .admit(Arc::new(|peer: &PeerIdentity| *peer == PeerIdentity::Gateway)),
    );
    let inbound_router = cii_kit::grpc::server(&metrics)
        .add_service(in_health)
        .add_service(in_refl_v1)
        .add_service(in_refl_v1alpha)
        .add_service(inbound)
        .add_service(cosigning);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
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
    tokio::spawn(mirror_witness_alarm(witness.clone(), metrics.clone(), stop_rx.clone()));
    tokio::spawn(forget_old_items(
        store.clone(),
        config.file.store.keep_days,
        stop_rx.clone(),
    ));
    if let Some(listener) = listeners.metrics {
        tokio::spawn(cii_kit::metrics::serve(
            listener,
            metrics.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    tracing::info!(institution = %config.institution.id, "node serving");
    let api_task = cii_kit::grpc::serve_tls(api_router, listeners.api, api_tls, &metrics, stopped(stop_rx.clone()));
    let inbound_task = cii_kit::grpc::serve_tls(
        inbound_router,
        listeners.inbound,
        inbound_tls,
        &metrics,
        stopped(stop_rx),
    );
    let stop = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let (_, api_result, inbound_result) = tokio::join!(stop, api_task, inbound_task);
    store.close().await;
    tracing::info!(institution = %config.institution.id, "node stopped");
    api_result?;
    inbound_result?;
    Ok(())
}

/// Keeps `cii_witness_alarm` equal to the witness's alarm (the alert rules page on it).
async fn mirror_witness_alarm(
    witness: Arc<witness::LogWitness>,
    metrics: Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        metrics.witness_alarm.set(i64::from(witness.in_alarm()));
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Forgets sent requests and processed inbox items past `[store] keep_days`, hourly.
async fn forget_old_items(store: Arc<store::Store>, keep_days: u32, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let keep = i64::from(keep_days) * 86_400 * 1_000_000;
        let cutoff = cii_types::time::micros(time::OffsetDateTime::now_utc()).saturating_sub(keep);
        match store.forget_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, keep_days, "old sent and received items forgotten"),
            Err(e) => tracing::warn!(error = %e, "old items not forgotten"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3_600)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
