//! The CII Exchange gateway: it sits between all institution nodes,
//! authenticates them by certificate and their users by JWT, and (as the
//! issues land) decides every transfer against the rulebook, translates
//! pseudonyms and writes the audit record before delivering.
//!
//! # Layout
//! - [`config`]: the config file and its checked form.
//! - `service`: the `cii.gateway.v1.Gateway` rpc handlers.
//! - `consent_service`: `cii.gateway.v1.Consents`, consents and relationships forwarded to the registry.
//! - `policy_service`: `cii.policy.v1.Policy`, the active rulebook for jurists.
//! - `audit_service`: `cii.audit.v1.Audit`, checkpoints and proofs for witnesses.
//! - `shredding`: the exceptional early shredding of a month, asked for and approved by two roles.
//! - `cosigning`: asks the witnesses to cosign every new checkpoint; keeps the newest cosigned by a quorum.
//! - `transfer`: the transfer pipeline as typed stages (check, consult and decide, seal, log, deliver).
//! - `status`: the gateway's errors as gRPC statuses (stable code, field at fault), the one place they are built.
//! - `delivery`: channels to the nodes, the outbox worker, consent-change notices.
//! - [`store`]: transfers by id, the outbox, obligations (SQLite).
//! - `wire`: decisions in their wire form.
//!
//! Entry point: [`run`], which `cii gateway` and the tests call.

// Security-critical code: no panicking shortcuts outside tests (clippy.toml allows them in tests).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod audit_service;
pub mod config;
mod consent_service;
mod cosigning;
mod dead_letters;
mod delivery;
mod error;
mod lease;
mod policy_service;
pub mod pseudonyms;
pub mod replay;
mod service;
mod shredding;
mod status;
pub mod store;
mod transfer;
mod wire;

use std::future::Future;
use std::sync::Arc;

use cii_kit::auth::{Authenticate, IssuerSource};
use cii_kit::clock::{Clock, SystemClock};
use cii_kit::metrics::Metrics;
use cii_kit::tls::{self, ClientAuth, PeerPolicy};
use cii_proto::audit::audit_server::AuditServer;
use cii_proto::consent::consent_registry_client::ConsentRegistryClient;
use cii_proto::gateway::consents_server::ConsentsServer;
use cii_proto::gateway::gateway_server::GatewayServer;
use cii_proto::policy::policy_server::PolicyServer;
use cii_types::PeerIdentity;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

pub use config::GatewayConfig;
pub use error::GatewayError;
pub use transfer::{Checked, TransferError, check_request};

/// The sockets the gateway serves on (bound by the caller, so tests use port 0).
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC API for nodes.
    pub grpc: GrpcListener,
    /// The `/metrics` endpoint, if any.
    pub metrics: Option<TcpListener>,
}

/// Where the gateway serves its gRPC API.
#[derive(Debug)]
pub enum GrpcListener {
    /// A socket bound already (tests, which need the port before the gateway starts).
    Bound(TcpListener),
    /// An address bound once this gateway may serve: on a PostgreSQL log shared with other
    /// gateways, after it holds the sequencer's lease — a standby refuses connections, so a
    /// client moves on to the next replica at once and a TCP readiness probe fails.
    Address(std::net::SocketAddr),
}

impl From<TcpListener> for GrpcListener {
    fn from(listener: TcpListener) -> GrpcListener {
        GrpcListener::Bound(listener)
    }
}

impl GrpcListener {
    async fn bind(self, config: &GatewayConfig) -> Result<TcpListener, RunError> {
        let listener = match self {
            GrpcListener::Bound(listener) => listener,
            GrpcListener::Address(addr) => TcpListener::bind(addr).await.map_err(RunError::Bind)?,
        };
        let institutions = config.registry.current().institutions().count();
        tracing::info!(addr = ?listener.local_addr().ok(), institutions, "gateway serving");
        Ok(listener)
    }
}

/// Why the gateway stopped abnormally.
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
    /// The gRPC address could not be bound.
    #[error("listen: {0}")]
    Bind(std::io::Error),
    /// The audit log could not be opened or written.
    #[error(transparent)]
    Audit(#[from] cii_audit::LogError),
    /// The audit store could not be opened.
    #[error(transparent)]
    AuditStore(#[from] cii_audit::store::StoreError),
    /// The audit log's sequencer stopped while serving (its store holds entries it did not
    /// write: a commit whose answer was lost, or another writer).
    #[error("the audit log's sequencer stopped (its store moved past what it wrote); start the gateway again")]
    SequencerStopped,
    /// The audit sequencer's lease was lost while serving (another gateway may sequence the
    /// log now): this one stopped.
    #[error("the audit log's sequencer lease was lost; this gateway stopped (start it again to stand by)")]
    LeaseLost,
    /// The operational store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The exchange catalogue could not be read.
    #[error(transparent)]
    Catalogue(#[from] cii_types::exchange::ExchangeError),
    /// `[audit] retention_days` is shorter than the limit the log was kept under.
    #[error(
        "[audit] retention_days = {configured} is shorter than the {stored} days this log is kept under; \
         the limit can only grow (months would become due early)"
    )]
    RetentionShortened {
        /// The config's limit.
        configured: u32,
        /// The stored limit.
        stored: u32,
    },
}

/// Opens the log's store and binds it to the configured retention limit, which may only grow.
async fn open_audit_store(config: &GatewayConfig) -> Result<cii_audit::Store, RunError> {
    let store = cii_audit::Store::open(&config.audit_store).await?;
    let configured = config.file.audit.retention_days;
    match store.retention_days().await? {
        Some(stored) if stored > configured => Err(RunError::RetentionShortened { configured, stored }),
        Some(stored) if stored == configured => Ok(store),
        _ => {
            store.set_retention_days(configured).await?;
            Ok(store)
        }
    }
}

/// The health check's name for the sequencer's role: `SERVING` on the replica that sequences
/// the log (always, alone on SQLite), `NOT_SERVING` on the others (they serve all the same).
pub const SEQUENCER_HEALTH: &str = "cii.audit.v1.Sequencer";

/// Keeps [`SEQUENCER_HEALTH`] up to date with this replica's role.
async fn report_sequencing(
    reporter: cii_kit::grpc::HealthReporter,
    mut sequencing: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let serving = *sequencing.borrow_and_update();
        cii_kit::grpc::set_serving(&reporter, SEQUENCER_HEALTH, serving).await;
        if sequencing.changed().await.is_err() {
            return;
        }
    }
}

/// Migrates the audit store and the operational store to this release's schema and returns
/// (`cii gateway --migrate`, run with the owner's URLs before the replicas start with the
/// service role's: a Job in deploy/kubernetes/gateway.yaml).
pub async fn migrate(config: &GatewayConfig) -> Result<(), RunError> {
    let audit = open_audit_store(config).await?;
    audit.close().await;
    let store = store::Store::open(&config.store).await?;
    store.close().await;
    tracing::info!("the gateway's stores are migrated");
    Ok(())
}

/// Services the gateway serves (listed by reflection, reported by health).
pub const SERVICES: &[&str] = &[
    "cii.gateway.v1.Gateway",
    "cii.gateway.v1.Consents",
    "cii.policy.v1.Policy",
    "cii.audit.v1.Audit",
];

/// Runs the gateway until `shutdown` resolves, then drains in-flight calls.
pub async fn run(
    config: GatewayConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with_clock(config, listeners, Arc::new(SystemClock), shutdown).await
}

/// [`run`] with an injected clock (tests of token expiry and clock skew).
pub async fn run_with_clock(
    config: GatewayConfig,
    listeners: Listeners,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let (metrics, (clients, tls_config)) = (Metrics::new("gateway"), tls_configs(&config)?);
    let mut shutdown = std::pin::pin!(shutdown);
    // The audit log is opened before anything is served: nothing happens unlogged.
    let audit_store = open_audit_store(&config).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let Some(OpenedLog {
        audit,
        sequencing,
        ended,
        sequencer,
        held,
    }) = open_log(&config, &audit_store, &stop_tx, &mut shutdown).await?
    else {
        return Ok(());
    };
    activate_rulebook(&config, &audit, clock.now()).await?;
    let store = store::Store::open(&config.store).await?;
    let role = cosigning::Role::of(&audit_store, &sequencing);
    let (witnessed, cosigning) = cosigning::start(audit.clone(), &config, (metrics.clone(), role), stop_rx.clone());
    let completion = consent_service::Completion::new(&clients.consent_registry, &audit, &audit_store);
    let parts = Parts {
        config: &config,
        clock: &clock,
        metrics: &metrics,
        audit: &audit,
        audit_store: &audit_store,
        store: &store,
        clients: &clients,
        witnessed: &witnessed,
        completion: &completion,
        stop: &stop_rx,
        sequencing: &sequencing,
    };
    let (overstepping, overstepped) = tokio::sync::mpsc::channel(64);
    let (router, nodes) = services(parts, overstepping).await?;
    tokio::spawn(log_overstepping(audit.clone(), clock.clone(), overstepped));
    tokio::spawn(watch_registry(parts, &nodes));
    let deliveries = spawn_background(nodes, &parts, held);
    serve_metrics(listeners.metrics, &metrics, stop_rx);
    let grpc = listeners.grpc.bind(&config).await?;
    let why = std::sync::atomic::AtomicU8::new(lease::STOPPED);
    let stopping = lease::until_stopped(&mut shutdown, ended, &audit, &why);
    let result = cii_kit::grpc::serve_tls(router, grpc, tls_config, &metrics, stopping).await;
    let _ = stop_tx.send(true);
    for task in deliveries.into_iter().chain([cosigning]) {
        let _ = task.await;
    }
    store.close().await;
    drop((audit, completion));
    sequencer.finish().await;
    audit_store.close().await;
    tracing::info!("gateway stopped");
    stopped_because(why.into_inner(), result)
}

/// How a run ended: its own reason to stop (`why`, see [`lease`]) before the server's result.
fn stopped_because(why: u8, served: Result<(), tonic::transport::Error>) -> Result<(), RunError> {
    match why {
        lease::LEASE_LOST => Err(RunError::LeaseLost),
        lease::SEQUENCER_STOPPED => Err(RunError::SequencerStopped),
        _ => Ok(served?),
    }
}

/// The audit log as this gateway appends to it.
struct OpenedLog {
    audit: cii_audit::Log,
    /// True while this gateway sequences the log (always, alone on SQLite).
    sequencing: tokio::sync::watch::Receiver<bool>,
    /// Hears why a replica stopped sequencing on its own.
    ended: tokio::sync::oneshot::Receiver<u8>,
    /// The log's sequencer (alone) or this replica's part in sequencing (shared).
    sequencer: lease::Running,
    /// Until when this gateway surely holds the lease (its outbox starts no round past it).
    held: lease::HeldUntil,
}

/// The audit log: on SQLite sequenced by this process alone; on PostgreSQL shared by replicas,
/// followed, and sequenced by this one while it holds the lease (`lease::replicate`: every
/// replica serves, whichever sequences — except one with an operational store of its own, which
/// stands by until it sequences). `None` if `shutdown` came while it stood by.
async fn open_log(
    config: &GatewayConfig,
    audit_store: &cii_audit::Store,
    stop: &tokio::sync::watch::Sender<bool>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<OpenedLog>, RunError> {
    let (signer, origin) = (config.audit_signer.clone(), config.file.audit.origin.clone());
    if matches!(audit_store, cii_audit::Store::Sqlite(_)) {
        let (audit, sequencer) = cii_audit::Log::open(audit_store.clone(), signer, origin).await?;
        return Ok(Some(OpenedLog {
            audit,
            sequencing: tokio::sync::watch::channel(true).1,
            ended: tokio::sync::oneshot::channel().1,
            sequencer: lease::Running::alone(tokio::spawn(async move {
                let _ = sequencer.await;
            })),
            held: lease::HeldUntil::default(),
        }));
    }
    let (audit, _follower) = cii_audit::Log::follow(audit_store.clone(), signer.clone(), origin.clone()).await?;
    let replica = lease::replicate(
        lease::Sequencing {
            // A pool of its own: the lease's renewals and the sequencer's batches never wait
            // behind the requests' connections.
            store: cii_audit::Store::open(&config.audit_store).await?,
            signer,
            origin,
            ttl: lease::ttl(config.file.audit.lease_seconds),
        },
        stop.clone(),
    );
    if !lease::serves_unless_sequencing(config, replica.sequencing.clone(), shutdown).await {
        let _ = stop.send(true);
        replica.running.finish().await;
        return Ok(None);
    }
    Ok(Some(OpenedLog {
        audit,
        sequencing: replica.sequencing,
        ended: replica.ended,
        sequencer: replica.running,
        held: replica.held,
    }))
}

/// The outbox worker, the consent-notice task and the completion of held consent changes,
/// until `stop` flips: on the replica that sequences the log only (they run once per network).
fn spawn_background(nodes: delivery::Nodes, p: &Parts<'_>, held: lease::HeldUntil) -> [tokio::task::JoinHandle<()>; 3] {
    let (store, stop, sequencing) = (p.store.clone(), p.stop.clone(), p.sequencing.clone());
    let notices = delivery::run_consent_notices(
        p.completion.registry.clone(),
        store.clone(),
        nodes.clone(),
        p.clock.clone(),
        stop.clone(),
    );
    let completions = consent_service::run_completion(p.completion.clone(), stop.clone());
    let outbox = nodes.with_lease(held).run_outbox(store, stop.clone());
    [
        lease::when_sequencing(sequencing.clone(), stop.clone(), outbox),
        lease::when_sequencing(sequencing.clone(), stop.clone(), notices),
        lease::when_sequencing(sequencing, stop, completions),
    ]
}

/// Serves `/metrics` on `listener`, if there is one, until `stop` flips.
fn serve_metrics(listener: Option<TcpListener>, metrics: &Metrics, mut stop: tokio::sync::watch::Receiver<bool>) {
    if let Some(listener) = listener {
        tokio::spawn(cii_kit::metrics::serve(listener, metrics.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
}

/// The gateway's clients of other parties.
struct Clients {
    /// The consent registry.
    consent_registry: ConsentRegistryClient<tonic::transport::Channel>,
    /// Every libpep operation: this gateway's transcryptor and the second, if any.
    pseudonyms: pseudonyms::Pseudonyms,
}

/// The clients of the consent registry (which must present the registry's certificate) and
/// of the second transcryptor (its witness certificate), and the server's TLS: only registry
/// members (and the consent registry) complete the handshake; revoked serials are refused
/// there too.
fn tls_configs(config: &GatewayConfig) -> Result<(Clients, Arc<rustls::ServerConfig>), RunError> {
    let registry = config.registry.clone();
    let admit = {
        let registry = registry.clone();
        move |peer: &PeerIdentity| registry.current().knows(peer) && *peer != PeerIdentity::Gateway
    };
    let revoked = {
        let registry = registry.clone();
        move |serial: &[u8]| registry.current().is_revoked(serial)
    };
    let registry_tls = tls::client_config(
        &config.tls,
        PeerPolicy::only(PeerIdentity::Consent, move |serial: &[u8]| {
            registry.current().is_revoked(serial)
        }),
    )?;
    let registries: Vec<String> = std::iter::once(&config.file.consent.url)
        .chain(&config.file.consent.replicas)
        .cloned()
        .collect();
    let consent_registry =
        ConsentRegistryClient::new(tls::channel_to_any(&registries, registry_tls, tls::CALL_DEADLINE)?);
    let second = match (&config.file.pseudonym.second_transcryptor, &config.second_transcryptor) {
        (Some(second), Some(identity)) => {
            let registry = config.registry.clone();
            let client = tls::client_config(
                &config.tls,
                PeerPolicy::only(identity.clone(), move |serial: &[u8]| {
                    registry.current().is_revoked(serial)
                }),
            )?;
            Some(tls::channel_with_deadline(&second.url, client, tls::CALL_DEADLINE)?)
        }
        _ => None,
    };
    let server = tls::server_config(&config.tls, ClientAuth::Required(PeerPolicy::new(admit, revoked)))?;
    let pseudonyms = pseudonyms::Pseudonyms::new(config.pseudonyms.clone(), second);
    Ok((
        Clients {
            consent_registry,
            pseudonyms,
        },
        server,
    ))
}

/// Every decision can be traced to the exact rules by this entry's hash.
async fn activate_rulebook(
    config: &GatewayConfig,
    audit: &cii_audit::Log,
    now: time::OffsetDateTime,
) -> Result<(), RunError> {
    let activation = cii_audit::Entry {
        kind: cii_audit::EntryKind::RulebookActivated as i32,
        time_micros: cii_types::time::micros(now),
        acting_user: "gateway".to_owned(),
        rulebook_hash: config.rulebook.hash.clone(),
        detail: config.rulebook.version.clone(),
        ..cii_audit::Entry::default()
    };
    let receipt = audit.append(activation).await?;
    tracing::info!(version = %config.rulebook.version, hash = %config.rulebook.hash, audit_index = receipt.index, "rulebook activated");
    // And the registry it decides with.
    log_registry(audit, &config.registry.current(), now).await
}

/// Reloads the registry when its file changes; each activation is logged, and the
/// channels to nodes are dropped (an endpoint may have moved, a certificate been revoked).
/// The gateway's own TLS certificate is renewed on the same beat.
fn watch_registry(p: Parts<'_>, nodes: &delivery::Nodes) -> impl Future<Output = ()> + use<> {
    let (config, audit, clock, metrics, stop) = (p.config, p.audit, p.clock, p.metrics, p.stop.clone());
    // The gateway's own certificate, renewed on the same beat.
    let renewal = config.tls.clone();
    tokio::spawn(renewal.watch_renewal(config.file.registry.poll(), metrics.clone(), stop.clone()));
    let (audit, clock, nodes) = (audit.clone(), clock.clone(), nodes.clone());
    let activated = move |registry: Arc<cii_kit::registry::Registry>| {
        nodes.forget_channels();
        let (audit, now) = (audit.clone(), clock.now());
        tokio::spawn(async move {
            if let Err(e) = log_registry(&audit, &registry, now).await {
                tracing::error!(error = %e, "registry activation could not be logged");
            }
        });
    };
    config
        .registry
        .clone()
        .watch(config.file.registry.poll(), metrics.clone(), activated, stop)
}

/// Every registry version the gateway decides under is on record.
async fn log_registry(
    audit: &cii_audit::Log,
    registry: &cii_kit::registry::Registry,
    now: time::OffsetDateTime,
) -> Result<(), RunError> {
    let entry = cii_audit::Entry {
        kind: cii_audit::EntryKind::RegistryActivated as i32,
        time_micros: cii_types::time::micros(now),
        acting_user: "gateway".to_owned(),
        detail: format!("network={} version={}", registry.network(), registry.version()),
        ..cii_audit::Entry::default()
    };
    let receipt = audit.append(entry).await?;
    tracing::info!(
        version = registry.version(),
        audit_index = receipt.index,
        "registry activated"
    );
    Ok(())
}

/// A member whose identity provider signs roles the network did not grant it is
/// on record, one entry per refused call (bounded by the reporting channel).
async fn log_overstepping(
    audit: cii_audit::Log,
    clock: Arc<dyn Clock>,
    mut refused: tokio::sync::mpsc::Receiver<cii_kit::auth::RoleNotGranted>,
) {
    while let Some(r) = refused.recv().await {
        let entry = cii_audit::Entry {
            kind: cii_audit::EntryKind::AccessRefused as i32,
            time_micros: cii_types::time::micros(clock.now()),
            sender: r.institution.to_string(),
            acting_user: format!("?@{}", r.institution),
            detail: format!("code=ROLE_NOT_GRANTED rpc={}", r.rpc),
            ..cii_audit::Entry::default()
        };
        if let Err(e) = audit.append(entry).await {
            tracing::error!(error = %e, "refused access could not be logged");
        }
    }
}

/// The transfer pipeline.
fn retry_policy(store: &config::StoreFile) -> delivery::RetryPolicy {
    delivery::RetryPolicy {
        max_retry: std::time::Duration::from_secs(u64::from(store.delivery_retry_max_seconds)),
        give_up: std::time::Duration::from_secs(u64::from(store.delivery_give_up_days) * 86_400),
    }
}

fn transfers(p: &Parts<'_>, nodes: delivery::Nodes) -> Result<Arc<transfer::Transfers>, RunError> {
    Ok(Arc::new(transfer::Transfers::new(transfer::Parts {
        registry: p.config.registry.clone(),
        payload_caps: transfer::PayloadCaps {
            default: p.config.file.store.payload_max_bytes,
            by_type: p.config.file.store.payload_max_bytes_by_type.clone(),
        },
        pull_answer_keep: std::time::Duration::from_secs(u64::from(p.config.file.store.pull_answer_keep_seconds)),
        review_timeout: std::time::Duration::from_secs(u64::from(p.config.file.store.review_timeout_seconds)),
        rulebook: p.config.rulebook.clone(),
        catalogue: Arc::new(cii_types::exchange::Catalogue::load()?),
        pseudonyms: p.clients.pseudonyms.clone(),
        audit: p.audit.clone(),
        audit_store: p.audit_store.clone(),
        consent: p.clients.consent_registry.clone(),
        store: p.store.clone(),
        nodes,
        clock: p.clock.clone(),
        metrics: p.metrics.clone(),
        relationship_pushes: cii_kit::rate_limit::RateLimit::new(
            p.config.file.limits.relationship_pushes.per_minute,
            p.config.file.limits.relationship_pushes.burst,
        ),
    })))
}

/// The audit service. Checkpoints and proofs are hashes and signed notes, nothing personal:
/// any member (mutual TLS) may fetch them without a user, so nodes can witness the log when
/// the gateway delivers to them; the DPO and operator rpcs verify the user themselves.
fn audit(
    p: &Parts<'_>,
    authenticate: Authenticate,
) -> InterceptedService<AuditServer<audit_service::AuditService>, Authenticate> {
    AuditServer::with_interceptor(
        audit_service::AuditService::new(
            audit_service::AuditParts {
                log: p.audit.clone(),
                pseudonyms: p.clients.pseudonyms.clone(),
                store: p.audit_store.clone(),
                operations: p.store.clone(),
                retention_days: p.config.file.audit.retention_days,
                metrics: p.metrics.clone(),
                witnessed: p.witnessed.clone(),
                witness_wait: std::time::Duration::from_secs(u64::from(p.config.file.audit.witness_wait_seconds)),
            },
            p.clock.clone(),
        ),
        authenticate,
    )
}

/// Every call's check: nodes only (not the consent registry's certificate), each
/// call against the registry active at that moment.
fn authenticate(
    config: &GatewayConfig,
    clock: &Arc<dyn Clock>,
    overstepped: tokio::sync::mpsc::Sender<cii_kit::auth::RoleNotGranted>,
) -> Authenticate {
    Authenticate::new(IssuerSource::PeerCertificate, config.registry.clone(), clock.clone())
        .max_lifetime(i64::from(config.file.registry.max_token_lifetime_seconds))
        .admit(Arc::new(|peer: &PeerIdentity| {
            matches!(peer, PeerIdentity::Institution(_))
        }))
        .report_overstepping(overstepped)
        .limits(Arc::new(cii_kit::rate_limit::Limits::new(&config.file.limits)))
}

/// What the services are built from.
#[derive(Clone, Copy)]
struct Parts<'a> {
    config: &'a GatewayConfig,
    clock: &'a Arc<dyn Clock>,
    metrics: &'a Metrics,
    audit: &'a cii_audit::Log,
    audit_store: &'a cii_audit::Store,
    store: &'a store::Store,
    clients: &'a Clients,
    witnessed: &'a cosigning::Witnessed,
    completion: &'a consent_service::Completion,
    stop: &'a tokio::sync::watch::Receiver<bool>,
    /// True while this gateway sequences the log (the work that runs once waits for it).
    sequencing: &'a tokio::sync::watch::Receiver<bool>,
}

/// How often held transfers nobody is deciding are completed.
fn held_sweep(config: &GatewayConfig) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(config.file.store.held_sweep_seconds))
}

/// Held transfers: those of a crash before anything is served (alone) or once this replica
/// sequences, later any that nobody is deciding.
async fn complete_held(transfers: &Arc<transfer::Transfers>, p: &Parts<'_>) {
    if *p.sequencing.borrow() {
        transfers.complete_all_held().await;
    }
    transfer::sweep_held(transfers, held_sweep(p.config), (p.stop, p.sequencing));
}

/// The router with every service, and the nodes' channels (for the background tasks).
/// Transfers held by a crash are completed before anything is served.
async fn services(
    p: Parts<'_>,
    overstepped: tokio::sync::mpsc::Sender<cii_kit::auth::RoleNotGranted>,
) -> Result<(tonic::transport::server::Router<cii_kit::grpc::Layers>, delivery::Nodes), RunError> {
    let (config, clock) = (p.config, p.clock);
    let registry = config.registry.clone();
    let (health_reporter, health, reflection_v1, reflection_v1alpha) =
        cii_kit::grpc::health_and_reflection(SERVICES).await?;
    tokio::spawn(report_sequencing(health_reporter, p.sequencing.clone()));
    let authenticate = authenticate(config, clock, overstepped);
    let nodes = delivery::Nodes::new(
        registry.clone(),
        config.tls.clone(),
        retry_policy(&config.file.store),
        p.metrics.clone(),
        (p.audit.clone(), p.audit_store.clone(), p.witnessed.clone()),
    );
    let transfers = transfers(&p, nodes.clone())?;
    complete_held(&transfers, &p).await;
    let rate_limit = cii_kit::rate_limit::RateLimit::new(
        config.file.pseudonym.enrolments_per_minute,
        config.file.pseudonym.enrolment_burst,
    );
    let gateway = GatewayServer::with_interceptor(
        service::GatewayService::new(
            transfers,
            p.store.clone(),
            clock.clone(),
            p.clients.pseudonyms.clone(),
            p.audit.clone(),
            rate_limit,
        ),
        authenticate.clone(),
    );
    let consents = ConsentsServer::with_interceptor(
        consent_service::ConsentsService::new(p.clients.pseudonyms.clone(), clock.clone(), p.completion.clone()),
        authenticate.clone(),
    );
    let policy = PolicyServer::with_interceptor(
        policy_service::PolicyService::new(
            config.rulebook.clone(),
            config.registry.clone(),
            p.audit.clone(),
            p.audit_store.clone(),
            p.clock.clone(),
        ),
        authenticate.clone(),
    );
    let audit = audit(&p, authenticate);
    let router = cii_kit::grpc::server(p.metrics)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(gateway)
        .add_service(consents)
        .add_service(policy)
        .add_service(audit);
    Ok((router, nodes))
}

/// Failpoints for crash tests: with the `failpoints` feature, a test arms one in-process for
/// one acting user, and that user's next pass through it fails as a crash there would (nothing
/// outside the process can arm one: no variable, no config). Without the feature they compile
/// to nothing.
pub mod failpoints {
    /// Where a handler can be stopped.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Point {
        /// A consent change: after the registry's held commit, before the log.
        ConsentAfterRegistry,
        /// A consent change: after the log, before the activation.
        ConsentAfterLog,
    }

    #[cfg(feature = "failpoints")]
    static ARMED: std::sync::Mutex<Vec<(Point, String)>> = std::sync::Mutex::new(Vec::new());

    /// Arms `point` for `acting_user`'s next pass (`user@INSTITUTION`).
    #[cfg(feature = "failpoints")]
    pub fn arm(point: Point, acting_user: &str) {
        ARMED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((point, acting_user.to_owned()));
    }

    /// Fails if `point` is armed for `acting_user` (and disarms it), as the caller of a gateway
    /// that stopped there would see it: the log unavailable.
    #[cfg_attr(not(feature = "failpoints"), expect(unused_variables, reason = "compiled out"))]
    pub(crate) fn check(point: Point, acting_user: &str) -> Result<(), crate::GatewayError> {
        #[cfg(feature = "failpoints")]
        {
            let mut armed = ARMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(at) = armed.iter().position(|(p, u)| *p == point && u == acting_user) {
                armed.remove(at);
                tracing::warn!(?point, "failpoint: stopped as a crash would");
                return Err(crate::GatewayError::Audit(cii_audit::LogError::Closed));
            }
        }
        Ok(())
    }
}
