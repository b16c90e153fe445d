//! The second transcryptor (`cii transcryptor serve`, issue 24): a party other than the
//! gateway's operator — an independent witness, under its witness certificate — holds the
//! second half of the network's pseudonym secrets (`cii_pseudonym::shares`). Every libpep
//! operation of the gateway passes through it after the gateway's own hop: it applies its
//! reshuffle and rekey ratios and rerandomises. Neither half alone links persons, opens a
//! seal or recovers the global key. It serves `cii.transcryptor.v1.Transcryptor` to the
//! gateway only, over mutual TLS. It keeps a tamper-evident log of its own (the audit log's
//! format and checkpoints, its own key): one `TRANSCRIBED` entry per request — institutions,
//! reference, time, the purpose, no pseudonym — durable before it answers, which `compare`
//! matches against the gateway's audit log.

pub mod compare;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cii_kit::auth::{Authenticate, IssuerSource};
use cii_kit::clock::SystemClock;
use cii_kit::config::{self, ConfigError, LogConfig, TlsFiles};
use cii_kit::metrics::Metrics;
use cii_kit::registry::{Live, signed::RegistryFiles};
use cii_kit::tls::{self, ClientAuth, PeerPolicy, TlsIdentity};
use cii_proto::transcryptor::{self as pb, transcryptor_server::TranscryptorServer};
use cii_pseudonym::shares::TranscryptorSecrets;
use cii_types::{PeerIdentity, WitnessName};
use serde::Deserialize;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Most operations in one request (a transfer needs a handful; a list exchange up to 100 persons each way).
pub const MAX_OPERATIONS: usize = 256;

/// `transcryptor.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscryptorFile {
    /// The party's witness name: the registry's `[[witness]]` entry and its certificate
    /// (`urn:cii:witness:<name>`), which the gateway checks.
    pub name: String,
    /// The registry (the same signed file the gateway uses), its key, the poll interval.
    pub registry: RegistryFiles,
    /// Address of the transcryptor API for the gateway (mutual TLS, gateway only).
    pub listen: SocketAddr,
    /// The party's TLS identity.
    pub tls: TlsFiles,
    /// This party's secrets from the ceremony in shares (`transcryptor/secrets.json`).
    pub secrets_file: PathBuf,
    /// Its own log of what it transcrypted.
    pub transcriptions: TranscriptionsFile,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[transcriptions]`: the transcryptor's own log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptionsFile {
    /// `sqlite:PATH` (relative paths from the config's folder).
    pub store: String,
    /// Its checkpoint-signing key (Ed25519, PKCS#8 PEM; `cii pki init` makes
    /// `witnesses/<name>/transcriptions.key`).
    pub signing_key: PathBuf,
    /// The log's origin line in its checkpoints, e.g. `edoeb.example/transcriptions`.
    pub origin: String,
}

/// A checked transcryptor configuration.
pub struct TranscryptorConfig {
    /// The file as written.
    pub file: TranscryptorFile,
    /// The party's name.
    pub name: WitnessName,
    /// The active registry.
    pub registry: Live,
    /// The TLS identity.
    pub tls: TlsIdentity,
    /// The secrets.
    pub secrets: Arc<TranscryptorSecrets>,
    /// Its log's store URL (resolved) and signer.
    pub transcriptions: (String, Arc<cii_audit::note::Signer>),
}

impl std::fmt::Debug for TranscryptorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscryptorConfig")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TranscryptorConfig {
    /// Loads `path` and everything it references; any problem names the file and key.
    pub fn load(path: &Path) -> Result<TranscryptorConfig, ConfigError> {
        let file: TranscryptorFile = config::load(path)?;
        let name =
            WitnessName::parse("name", &file.name).map_err(|e| ConfigError::invalid(path, "name", e.to_string()))?;
        let registry = file.registry.open(path)?;
        let me = PeerIdentity::Witness(name.clone());
        if !registry.current().witnesses().iter().any(|w| w.identity == me) {
            return Err(ConfigError::invalid(
                path,
                "name",
                format!(
                    "the registry lists no [[witness]] named {name}: the second transcryptor is run by an independent witness"
                ),
            ));
        }
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
        let secrets = TranscryptorSecrets::from_json(&config::read_secret(path, "secrets_file", &file.secrets_file)?)
            .map_err(|e| ConfigError::invalid(path, "secrets_file", e.to_string()))?;
        let log = &file.transcriptions;
        if !log.store.starts_with("sqlite:") {
            return Err(ConfigError::invalid(
                path,
                "transcriptions.store",
                "must be sqlite:PATH",
            ));
        }
        let pem = config::read_secret(path, "transcriptions.signing_key", &log.signing_key)?;
        let signer = cii_audit::note::Signer::from_pem(&log.origin, &pem)
            .map_err(|e| ConfigError::invalid(path, "transcriptions.signing_key", e.to_string()))?;
        Ok(TranscryptorConfig {
            transcriptions: (config::database_url(path, &log.store), Arc::new(signer)),
            file,
            name,
            registry,
            tls,
            secrets: Arc::new(secrets),
        })
    }
}

/// Why the transcryptor stopped.
#[derive(Debug, thiserror::Error)]
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
    /// Its log could not be opened.
    #[error(transparent)]
    Log(#[from] cii_audit::LogError),
    /// Its log's store could not be opened.
    #[error(transparent)]
    Store(#[from] cii_audit::store::StoreError),
}

/// The rpc handler.
struct Service {
    secrets: Arc<TranscryptorSecrets>,
    log: cii_audit::Log,
}

impl Service {
    /// The request's entry in this transcryptor's log, durable before anything is transcrypted.
    async fn record(&self, purpose: Option<&pb::Purpose>, operations: usize) -> Result<(), Status> {
        let purpose = purpose.cloned().unwrap_or_default();
        let entry = cii_audit::Entry {
            kind: cii_audit::EntryKind::Transcribed as i32,
            time_micros: cii_types::time::micros(time::OffsetDateTime::now_utc()),
            sender: purpose.institution,
            recipient: purpose.counterparty,
            transfer_id: purpose.reference,
            detail: format!("purpose={} operations={operations}", purpose.kind),
            ..cii_audit::Entry::default()
        };
        if let Err(e) = cii_audit::entry::check(&entry) {
            return Err(cii_kit::status::refusal(
                "OPERATION_INVALID",
                e.to_string(),
                Some("purpose"),
            ));
        }
        self.log.append(entry).await.map(|_| ()).map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "transcription not logged");
            cii_kit::status::refusal("TRANSCRYPTOR_UNAVAILABLE", "its log is not writable", None)
        })
    }
}

#[tonic::async_trait]
impl pb::transcryptor_server::Transcryptor for Service {
    async fn transcrypt(
        &self,
        request: Request<pb::TranscryptRequest>,
    ) -> Result<Response<pb::TranscryptResponse>, Status> {
        let request = request.into_inner();
        let operations = request.operations;
        if operations.len() > MAX_OPERATIONS {
            return Err(cii_kit::status::refusal(
                "OPERATION_INVALID",
                format!("at most {MAX_OPERATIONS} operations per request"),
                Some("operations"),
            ));
        }
        // Checked in full before any is applied: a malformed one refuses the request.
        let mut checked = Vec::with_capacity(operations.len());
        for (index, op) in operations.iter().enumerate() {
            let op = cii_pseudonym::wire::hop::from_wire(op).map_err(|r| {
                cii_kit::status::refusal(
                    "OPERATION_INVALID",
                    format!("operation {index}: {}", r.error),
                    Some(r.field),
                )
            })?;
            checked.push(op);
        }
        self.record(request.purpose.as_ref(), checked.len()).await?;
        let secrets = self.secrets.clone();
        // Scalar multiplications: off the async workers.
        let results = tokio::task::spawn_blocking(move || {
            let hop = secrets.hop();
            checked
                .iter()
                .map(|(op, key)| {
                    hop.apply(op, key)
                        .map(|(ciphertext, key)| cii_pseudonym::wire::hop::result_to_wire(&ciphertext, &key))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|_| Status::internal("a transcryption task failed"))?
        .map_err(|e| cii_kit::status::refusal("OPERATION_INVALID", e.to_string(), Some("key")))?;
        Ok(Response::new(pb::TranscryptResponse { results }))
    }
}

/// Runs the transcryptor until `shutdown` resolves.
pub async fn run(
    config: TranscryptorConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Metrics::new("transcryptor");
    let (url, signer) = config.transcriptions.clone();
    let store = cii_audit::Store::open(&url).await?;
    let origin = config.file.transcriptions.origin.clone();
    let (log, sequencer) = cii_audit::Log::open(store.clone(), signer, origin).await?;
    let revoked = {
        let registry = config.registry.clone();
        move |serial: &[u8]| registry.current().is_revoked(serial)
    };
    let server_tls = tls::server_config(
        &config.tls,
        ClientAuth::Required(PeerPolicy::only(PeerIdentity::Gateway, revoked)),
    )?;
    let (_health_reporter, health, refl_v1, refl_v1alpha) =
        cii_kit::grpc::health_and_reflection(&["cii.transcryptor.v1.Transcryptor"]).await?;
    let service = TranscryptorServer::with_interceptor(
        Service {
            secrets: config.secrets.clone(),
            log,
        },
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
    tokio::spawn(
        config
            .tls
            .clone()
            .watch_renewal(config.file.registry.poll(), metrics.clone(), stop_rx.clone()),
    );
    tracing::info!(transcryptor = %config.name, "transcryptor serving");
    let mut stop = stop_rx;
    let served = cii_kit::grpc::serve_tls(router, listener, server_tls, &metrics, async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let stopper = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let (_, result) = tokio::join!(stopper, served);
    // The service (and its log handle) is gone with the server: the sequencer drains and stops.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), sequencer).await;
    store.close().await;
    tracing::info!(transcryptor = %config.name, "transcryptor stopped");
    Ok(result?)
}
