//! The independent witness (`cii witness serve`): a party other than the
//! gateway's operator — a data-protection authority, a canton's IT security
//! office — runs the node's witness role alone. It holds the checkpoints it
//! cosigned, its alarm and the evidence of a fork in a node-format store of its
//! own (the witness tables only: nothing personal, nothing sealed), and serves
//! `cii.witness.v1.Witness` to the gateway over mutual TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cii_kit::auth::{Authenticate, IssuerSource};
use cii_kit::clock::SystemClock;
use cii_kit::config::{self, ConfigError, LogConfig, TlsFiles};
use cii_kit::metrics::Metrics;
use cii_kit::registry::{Live, signed::RegistryFiles};
use cii_kit::tls::{self, ClientAuth, PeerPolicy, TlsIdentity};
use cii_types::{PeerIdentity, WitnessName};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::witness::{CosigningKey, LogWitness};

/// `witness.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessFile {
    /// The witness's name, as the registry's `[[witness]]` entry and its certificate name it.
    pub name: String,
    /// The registry (the same signed file the gateway uses), its key, the poll interval.
    pub registry: RegistryFiles,
    /// Address of the witness API for the gateway (mutual TLS, gateway only).
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint; none if absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The witness's TLS identity (its certificate names `urn:cii:witness:<name>`).
    pub tls: TlsFiles,
    /// `sqlite:PATH`: the checkpoints cosigned, the alarm and the evidence.
    pub database: String,
    /// The log's verifier key file (`cii audit vkey`).
    pub verifier_key_file: PathBuf,
    /// The witness's cosigning key (Ed25519, PKCS#8 PEM; its vkey is the registry's).
    pub cosigning_key_file: PathBuf,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
}

/// A checked witness configuration.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// The file as written.
    pub file: WitnessFile,
    /// The witness's name.
    pub name: WitnessName,
    /// The active registry.
    pub registry: Live,
    /// The TLS identity.
    pub tls: TlsIdentity,
    /// The database URL (resolved).
    pub database: String,
    /// The log's verifier key.
    pub audit_verifier: cii_audit::note::Verifier,
    /// The cosigning key.
    pub cosigning_key: CosigningKey,
}

impl WitnessConfig {
    /// Loads `path` and everything it references; any problem names the file and key.
    pub fn load(path: &Path) -> Result<WitnessConfig, ConfigError> {
        let file: WitnessFile = config::load(path)?;
        let name =
            WitnessName::parse("name", &file.name).map_err(|e| ConfigError::invalid(path, "name", e.to_string()))?;
        let registry = file.registry.open(path)?;
        let me = PeerIdentity::Witness(name.clone());
        let listed = registry
            .current()
            .witnesses()
            .iter()
            .find(|w| w.identity == me)
            .cloned()
            .ok_or_else(|| {
                ConfigError::invalid(path, "name", format!("the registry lists no [[witness]] named {name}"))
            })?;
        let tls = TlsIdentity::load(&file.tls.resolved(path))
            .map_err(|e| ConfigError::invalid(path, "tls", e.to_string()))?;
        match tls.identity() {
            Ok(identity) if identity == me => {}
            Ok(other) => {
                return Err(ConfigError::invalid(
                    path,
                    "tls.cert",
                    format!("certificate names {other}, not {me}"),
                ));
            }
            Err(e) => return Err(ConfigError::invalid(path, "tls.cert", e.to_string())),
        }
        if !file.database.starts_with("sqlite:") {
            return Err(ConfigError::invalid(path, "database", "must be sqlite:PATH"));
        }
        let audit_verifier = cii_audit::note::Verifier::from_vkey(
            config::read_file(path, "verifier_key_file", &file.verifier_key_file)?.trim(),
        )
        .map_err(|e| ConfigError::invalid(path, "verifier_key_file", e.to_string()))?;
        let cosigning_key =
            CosigningKey(config::read_secret(path, "cosigning_key_file", &file.cosigning_key_file)?.to_string());
        if cii_audit::cosignature::Cosigner::for_vkey(&cosigning_key.0, &listed.vkey).is_none() {
            return Err(ConfigError::invalid(
                path,
                "cosigning_key_file",
                "not the key of the registry's vkey for this witness (`cii witness vkey` prints a key's vkey)",
            ));
        }
        Ok(WitnessConfig {
            database: config::database_url(path, &file.database),
            file,
            name,
            registry,
            tls,
            audit_verifier,
            cosigning_key,
        })
    }
}

/// Runs the independent witness until `shutdown` resolves.
pub async fn run(
    config: WitnessConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), crate::RunError> {
    let metrics = Metrics::new("witness");
    // Nothing sealed lives in a witness's store: a fresh key each run is never used.
    let mut unused_key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut unused_key)
        .map_err(|_| crate::store::StoreError::Random)?;
    let store = Arc::new(crate::store::Store::open(&config.database, &unused_key).await?);
    let me = PeerIdentity::Witness(config.name.clone());
    let witness = Arc::new(
        LogWitness::open(
            config.audit_verifier.clone(),
            store.clone(),
            crate::witness::witnesses_of(config.registry.clone()),
            Some((me, config.cosigning_key.clone())),
        )
        .await?,
    );
    let revoked = {
        let registry = config.registry.clone();
        move |serial: &[u8]| registry.current().is_revoked(serial)
    };
    let server_tls = tls::server_config(
        &config.tls,
        ClientAuth::Required(PeerPolicy::only(PeerIdentity::Gateway, revoked)),
    )?;
    let (_health_reporter, health, refl_v1, refl_v1alpha) =
        cii_kit::grpc::health_and_reflection(&["cii.witness.v1.Witness"]).await?;
    let service = cii_proto::witness::witness_server::WitnessServer::with_interceptor(
        crate::witness_service::WitnessService::new(witness.clone()),
        Authenticate::new(
            IssuerSource::PeerCertificate,
            config.registry.clone(),
            Arc::new(SystemClock),
        )
        .admit(Arc::new(|peer: &PeerIdentity| *peer == PeerIdentity::Gateway)),
    );
    let router = cii_kit::grpc::server(&metrics)
        .add_service(health)
        .add_service(refl_v1)
        .add_service(refl_v1alpha)
        .add_service(service);
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
    tokio::spawn(crate::mirror_witness_alarm(witness, metrics.clone(), stop_rx.clone()));
    if let Some(listener) = metrics_listener {
        let mut stop = stop_rx.clone();
        tokio::spawn(cii_kit::metrics::serve(listener, metrics.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    tracing::info!(witness = %config.name, "witness serving");
    let mut stop = stop_rx;
    let served = cii_kit::grpc::serve_tls(router, listener, server_tls, &metrics, async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let stopper = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let (_, result) = tokio::join!(stopper, served);
    store.close().await;
    tracing::info!(witness = %config.name, "witness stopped");
    Ok(result?)
}
