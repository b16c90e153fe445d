//! The gateway's config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cii_kit::config::{self, ConfigError, LogConfig, TlsFiles};
use cii_kit::registry::{Live, Registry, signed::RegistryFiles};
use cii_kit::tls::TlsIdentity;
use cii_types::PeerIdentity;
use serde::Deserialize;

/// `gateway.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Address of the gRPC API for nodes (mutual TLS), e.g. `0.0.0.0:7443`.
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint (plain HTTP); none if absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The registry (the network's members): the signed file, its key, the poll interval.
    pub registry: RegistryFiles,
    /// A rulebook directory (TOML files); the built-in federal rulebook if absent.
    #[serde(default)]
    pub rulebook: Option<PathBuf>,
    /// The gateway's TLS identity.
    pub tls: TlsFiles,
    /// The audit log.
    pub audit: AuditFile,
    /// The transcryptor's key files and the enrolment rate limit.
    pub pseudonym: PseudonymFile,
    /// The consent registry.
    pub consent: ConsentFile,
    /// The operational store and delivery.
    #[serde(default)]
    pub store: StoreFile,
    /// Per-institution rate limits on the rpc families.
    #[serde(default)]
    pub limits: cii_kit::rate_limit::LimitsFile,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
}

/// The `[audit]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// `sqlite:PATH` (relative to the config file's folder) or `postgres://…`. A database of its
    /// own, apart from the gateway's operational tables.
    pub store: String,
    /// The log's origin, the first line of every checkpoint (e.g. `cii.vs.example/audit`).
    pub origin: String,
    /// The Ed25519 key (PKCS#8 PEM) that signs checkpoints.
    pub signing_key: PathBuf,
    /// How long entry bodies are kept, in days: required, at least [`MIN_RETENTION_DAYS`].
    /// Applied by `cii audit retention` (whole months past the limit are destroyed).
    pub retention_days: u32,
    /// How long a node's request for a receipt's cosigned checkpoint waits for the witnesses
    /// before `AUDIT_NOT_WITNESSED` (1–8 s, default 5: below the 10 s a delivery attempt may
    /// take, since a node asks while the gateway waits for its answer).
    #[serde(default = "default_witness_wait")]
    pub witness_wait_seconds: u32,
    /// With a PostgreSQL log: how long the sequencer's lease lasts between renewals, in
    /// seconds (2–30, default 10; renewed every third of it: a takeover must come well within the
    /// minute an append waits for a sequencer). A gateway whose lease lapses
    /// stops; a standby on the same log takes over within this time of the holder's death.
    #[serde(default = "default_lease")]
    pub lease_seconds: u32,
}

fn default_witness_wait() -> u32 {
    5
}

fn default_lease() -> u32 {
    10
}

/// The shortest retention: logs are kept at least one year (nLPD ordinance art. 4 al. 5).
pub const MIN_RETENTION_DAYS: u32 = 365;

impl AuditFile {
    /// The store URL with a relative SQLite path resolved from `config_file`'s folder.
    pub fn store_url(&self, config_file: &Path) -> String {
        config::database_url(config_file, &self.store)
    }

    /// Loads the checkpoint signer.
    pub fn signer(&self, config_file: &Path) -> Result<cii_audit::note::Signer, ConfigError> {
        // The checkpoint-signing key: refused when other accounts can read it.
        let pem = config::read_secret(config_file, "audit.signing_key", &self.signing_key)?;
        cii_audit::note::Signer::from_pem(&self.origin, &pem)
            .map_err(|e| ConfigError::invalid(config_file, "audit.signing_key", e.to_string()))
    }
}

/// The `[store]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// `sqlite:PATH` (relative to the config file's folder) or `postgres://…` of the
    /// operational store: transfers by id, the outbox, obligations, pending reviews, dead
    /// letters. Default `sqlite:gateway/gateway.db`.
    #[serde(default = "default_store")]
    pub database: String,
    /// Longest wait between two delivery attempts to a node that is down, in seconds (default 30).
    #[serde(default = "default_max_retry")]
    pub delivery_retry_max_seconds: u32,
    /// How long a delivery whose recipient cannot be reached is retried before it becomes a
    /// dead letter, in days (default 7). A delivery the recipient refuses for good (malformed,
    /// too large, sealed wrong) becomes one at once.
    #[serde(default = "default_give_up_days")]
    pub delivery_give_up_days: u32,
    /// Largest payload a transfer may carry, in bytes, by exchange type (the message's full
    /// name, e.g. `cii.exchange.v1.EarlyDetectionReport`), refused before the decision with
    /// PAYLOAD_TOO_LARGE. Types not named get `payload_max_bytes`.
    #[serde(default)]
    pub payload_max_bytes_by_type: std::collections::BTreeMap<String, u32>,
    /// Largest payload of the types not named above (default 1 MiB; at most 3 MiB, so the
    /// sealed delivery stays below the nodes' 4 MiB decoding limit).
    #[serde(default = "default_payload_max")]
    pub payload_max_bytes: u32,
    /// How long a permitted pull's answer is kept, sealed to the requester, for retries of
    /// the same request by the same user, in seconds (default 3600). After it, the id answers
    /// PULL_ANSWER_GONE: new data needs a new transfer, a new decision and a new entry.
    #[serde(default = "default_pull_answer_keep")]
    pub pull_answer_keep_seconds: u32,
    /// How long a pull waits for its holder's review, in seconds (default 5 days: 432000,
    /// at least 1). Past it the pull is denied (REVIEW_TIMEOUT) and logged.
    #[serde(default = "default_review_timeout")]
    pub review_timeout_seconds: u32,
    /// How often transfers held without anyone deciding them (an append that failed; one a
    /// gateway that lost its lease recorded) are completed, in seconds (default 30, at least 1).
    #[serde(default = "default_held_sweep")]
    pub held_sweep_seconds: u32,
}

/// The largest payload cap a config may set: a sealed delivery adds the seal, the
/// person, the decision and the receipt, and must stay below the nodes' 4 MiB limit.
pub const PAYLOAD_CAP_LIMIT: u32 = 3 * 1024 * 1024;

impl Default for StoreFile {
    fn default() -> StoreFile {
        StoreFile {
            database: default_store(),
            delivery_retry_max_seconds: default_max_retry(),
            delivery_give_up_days: default_give_up_days(),
            payload_max_bytes_by_type: std::collections::BTreeMap::new(),
            payload_max_bytes: default_payload_max(),
            pull_answer_keep_seconds: default_pull_answer_keep(),
            review_timeout_seconds: default_review_timeout(),
            held_sweep_seconds: default_held_sweep(),
        }
    }
}

fn default_store() -> String {
    "sqlite:gateway/gateway.db".to_owned()
}

fn default_max_retry() -> u32 {
    30
}

fn default_give_up_days() -> u32 {
    7
}

fn default_pull_answer_keep() -> u32 {
    3600
}

fn default_review_timeout() -> u32 {
    5 * 86_400
}

fn default_held_sweep() -> u32 {
    30
}

fn default_payload_max() -> u32 {
    1024 * 1024
}

/// The `[consent]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentFile {
    /// The consent registry's URL, `https://host:port` (its certificate must name `urn:cii:consent`).
    pub url: String,
    /// Further replicas of the registry on the same database (`https://host:port` each): when
    /// the one the gateway is connected to cannot be reached, the next that answers is used.
    #[serde(default)]
    pub replicas: Vec<String>,
}

/// The `[pseudonym]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudonymFile {
    /// `gateway/transcryptor.json` from `cii keys init`: the pseudonymisation and rekeying
    /// secrets. The gateway holds no session key and no global secret key.
    pub transcryptor: PathBuf,
    /// `global-public.json` from `cii keys init`.
    pub global_public: PathBuf,
    /// Enrolments each institution may make per minute, sustained (default 600).
    #[serde(default = "default_enrolments_per_minute")]
    pub enrolments_per_minute: u32,
    /// Enrolments an institution may make at once before the rate applies (default 600).
    #[serde(default = "default_enrolments_per_minute")]
    pub enrolment_burst: u32,
    /// The second transcryptor, required exactly when the key file says the network has two
    /// (`cii keys init --transcryptors 2`): every libpep operation passes through it.
    #[serde(default)]
    pub second_transcryptor: Option<SecondTranscryptorFile>,
}

/// `[pseudonym.second_transcryptor]`: where the second transcryptor is and who runs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondTranscryptorFile {
    /// The independent witness that runs it: its certificate must name `urn:cii:witness:<name>`.
    pub name: String,
    /// Its address, `https://host:port`.
    pub url: String,
}

fn default_enrolments_per_minute() -> u32 {
    600
}

impl PseudonymFile {
    /// Loads the transcryptor from the two key files, and checks that a second transcryptor
    /// is configured exactly when the key file is the first of two.
    pub fn transcryptor(&self, config_file: &Path) -> Result<cii_pseudonym::gateway::Gateway, ConfigError> {
        let transcryptor = config::read_secret(config_file, "pseudonym.transcryptor", &self.transcryptor)?;
        let global_public = config::read_file(config_file, "pseudonym.global_public", &self.global_public)?;
        let gateway = cii_pseudonym::gateway::Gateway::from_json(&transcryptor, &global_public)
            .map_err(|e| ConfigError::invalid(config_file, "pseudonym", e.to_string()))?;
        match (gateway.transcryptors(), &self.second_transcryptor) {
            (1, Some(_)) => Err(ConfigError::invalid(
                config_file,
                "pseudonym.second_transcryptor",
                "the key file is of a network with one transcryptor; a network moves to two only \
                 with a new ceremony (`cii keys init --transcryptors 2`): its pseudonyms all change",
            )),
            (2, None) => Err(ConfigError::invalid(
                config_file,
                "pseudonym.second_transcryptor",
                "the key file is the first of two transcryptors: name the second (name, url)",
            )),
            (_, Some(second)) if !second.url.starts_with("https://") => Err(ConfigError::invalid(
                config_file,
                "pseudonym.second_transcryptor.url",
                "must be an https:// URL",
            )),
            _ => Ok(gateway),
        }
    }
}

/// A checked gateway configuration, ready to run.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file as written.
    pub file: GatewayFile,
    /// The active registry (reloaded when the file changes).
    pub registry: Live,
    /// The loaded TLS identity.
    pub tls: TlsIdentity,
    /// The checked rulebook.
    pub rulebook: Arc<cii_policy::Rulebook>,
    /// The audit store URL (resolved).
    pub audit_store: String,
    /// The audit checkpoint signer.
    pub audit_signer: Arc<cii_audit::note::Signer>,
    /// The transcryptor.
    pub pseudonyms: Arc<cii_pseudonym::gateway::Gateway>,
    /// The second transcryptor's identity, when the network has two.
    pub second_transcryptor: Option<cii_types::PeerIdentity>,
    /// The operational store URL (resolved).
    pub store: String,
}

impl GatewayConfig {
    /// Loads `path` and everything it references; any problem names the file and key.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let file: GatewayFile = config::load(path)?;
        let registry = file.registry.open(path)?;
        let tls = gateway_identity(path, &file)?;
        let rulebook = Arc::new(rulebook(path, &file, &registry.current())?);
        // A later registry that disagrees with the rulebook (an institution gone or of
        // another type) is refused like a badly signed one; the active registry stays.
        let registry = registry.with_check({
            let rulebook = rulebook.clone();
            Arc::new(move |next: &Registry| {
                cii_policy::fit::check_agreement(&rulebook, |id| next.get(id).map(|m| m.kind))
                    .and_then(|()| {
                        cii_policy::fit::check_types(&rulebook, next.institutions().map(|m| (&m.id, m.kind)))
                    })
                    .map_err(|e| e.to_string())
            })
        });
        check_stores(path, &file)?;
        let audit_signer = Arc::new(file.audit.signer(path)?);
        let audit_store = file.audit.store_url(path);
        let pseudonyms = Arc::new(file.pseudonym.transcryptor(path)?);
        let second_transcryptor = match &file.pseudonym.second_transcryptor {
            Some(second) => Some(second_transcryptor_identity(path, second, &registry.current())?),
            None => None,
        };
        if !file.consent.url.starts_with("https://") {
            return Err(ConfigError::invalid(path, "consent.url", "must be an https:// URL"));
        }
        if let Some(bad) = file.consent.replicas.iter().find(|url| !url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                path,
                "consent.replicas",
                format!("{bad:?} must be an https:// URL"),
            ));
        }
        let store = config::database_url(path, &file.store.database);
        Ok(GatewayConfig {
            store,
            pseudonyms,
            second_transcryptor,
            file,
            registry,
            tls,
            rulebook,
            audit_store,
            audit_signer,
        })
    }
}

/// The TLS identity, which must be the gateway's.
fn gateway_identity(path: &Path, file: &GatewayFile) -> Result<TlsIdentity, ConfigError> {
    let tls =
        TlsIdentity::load(&file.tls.resolved(path)).map_err(|e| ConfigError::invalid(path, "tls", e.to_string()))?;
    match tls.identity() {
        Ok(PeerIdentity::Gateway) => Ok(tls),
        Ok(other) => Err(ConfigError::invalid(
            path,
            "tls.cert",
            format!("certificate names {other}, not the gateway"),
        )),
        Err(e) => Err(ConfigError::invalid(path, "tls.cert", e.to_string())),
    }
}

/// The rulebook (a folder, or the built-in federal one), checked against the registry and
/// the contract.
fn rulebook(path: &Path, file: &GatewayFile, registry: &Registry) -> Result<cii_policy::Rulebook, ConfigError> {
    let dir = file.rulebook.as_ref().map(|d| config::resolve(path, d));
    let today = time::OffsetDateTime::now_utc().date();
    let invalid = |e: &dyn std::fmt::Display| ConfigError::invalid(path, "rulebook", e.to_string());
    let files = dir
        .as_deref()
        .map(config::toml_files)
        .transpose()
        .map_err(|e| invalid(&e))?;
    let rulebook = cii_policy::fit::load(files, today).map_err(|e| invalid(&e))?;
    cii_policy::fit::check_agreement(&rulebook, |id| registry.get(id).map(|m| m.kind)).map_err(|e| invalid(&e))?;
    cii_policy::fit::check_types(&rulebook, registry.institutions().map(|m| (&m.id, m.kind)))
        .map_err(|e| invalid(&e))?;
    cii_policy::fit::check_contract(&rulebook).map_err(|e| invalid(&e))?;
    Ok(rulebook)
}

/// A database URL: SQLite, or PostgreSQL (over TLS unless on loopback: `check_database_tls`).
fn check_database(path: &Path, field: &'static str, url: &str) -> Result<(), ConfigError> {
    if !["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        return Err(ConfigError::invalid(path, field, "must be sqlite:PATH or postgres://…"));
    }
    config::check_database_tls(path, field, url)
}

/// The audit log's store and limits.
fn check_audit(path: &Path, audit: &AuditFile) -> Result<(), ConfigError> {
    check_database(path, "audit.store", &audit.store)?;
    if audit.retention_days < MIN_RETENTION_DAYS {
        return Err(ConfigError::invalid(
            path,
            "audit.retention_days",
            format!("must be at least {MIN_RETENTION_DAYS}: logs are kept at least one year (nLPD ordinance art. 4)"),
        ));
    }
    if !(1..=8).contains(&audit.witness_wait_seconds) {
        return Err(ConfigError::invalid(
            path,
            "audit.witness_wait_seconds",
            "must be 1 to 8 (below a delivery attempt's 10 s)",
        ));
    }
    if !(2..=30).contains(&audit.lease_seconds) {
        return Err(ConfigError::invalid(
            path,
            "audit.lease_seconds",
            "must be 2 to 30 (renewed every third of it; a takeover must come within the minute an append waits)",
        ));
    }
    Ok(())
}

/// The stores' URLs and limits.
fn check_stores(path: &Path, file: &GatewayFile) -> Result<(), ConfigError> {
    check_audit(path, &file.audit)?;
    check_database(path, "store.database", &file.store.database)?;
    if file.store.delivery_retry_max_seconds == 0 {
        return Err(ConfigError::invalid(
            path,
            "store.delivery_retry_max_seconds",
            "must be at least 1",
        ));
    }
    if file.store.held_sweep_seconds == 0 {
        return Err(ConfigError::invalid(
            path,
            "store.held_sweep_seconds",
            "must be at least 1",
        ));
    }
    if file.store.review_timeout_seconds == 0 {
        return Err(ConfigError::invalid(
            path,
            "store.review_timeout_seconds",
            "must be at least 1 (a pull waits that long for its holder's review)",
        ));
    }
    if file.store.delivery_give_up_days == 0 {
        return Err(ConfigError::invalid(
            path,
            "store.delivery_give_up_days",
            "must be at least 1",
        ));
    }
    let caps = std::iter::once(("payload_max_bytes".to_owned(), file.store.payload_max_bytes)).chain(
        file.store
            .payload_max_bytes_by_type
            .iter()
            .map(|(t, n)| (format!("payload_max_bytes_by_type.{t}"), *n)),
    );
    for (key, cap) in caps {
        if cap == 0 || cap > PAYLOAD_CAP_LIMIT {
            return Err(ConfigError::invalid(
                path,
                format!("store.{key}"),
                format!(
                    "must be between 1 and {PAYLOAD_CAP_LIMIT} bytes (the sealed delivery must fit the nodes' 4 MiB limit)"
                ),
            ));
        }
    }
    Ok(())
}

/// The second transcryptor's identity: an independent witness of the registry.
fn second_transcryptor_identity(
    path: &Path,
    second: &SecondTranscryptorFile,
    registry: &Registry,
) -> Result<cii_types::PeerIdentity, ConfigError> {
    let key = "pseudonym.second_transcryptor.name";
    let name = cii_types::WitnessName::parse("name", &second.name)
        .map_err(|e| ConfigError::invalid(path, key, e.to_string()))?;
    let identity = cii_types::PeerIdentity::Witness(name);
    if !registry.witnesses().iter().any(|w| w.identity == identity) {
        return Err(ConfigError::invalid(
            path,
            key,
            "the registry lists no [[witness]] of this name: the second transcryptor is run by an independent witness",
        ));
    }
    Ok(identity)
}
