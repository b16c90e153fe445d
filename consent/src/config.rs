//! The consent registry's config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cii_kit::config::{self, ConfigError, LogConfig, TlsFiles};
use cii_kit::registry::{Live, signed::RegistryFiles};
use cii_kit::tls::TlsIdentity;
use cii_pseudonym::node::NodeKeys;
use cii_types::PeerIdentity;
use serde::Deserialize;

/// `consent.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentFile {
    /// Address of the gRPC API (mutual TLS; only the gateway is admitted).
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint; none if absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The registry file (the network's members).
    pub registry: RegistryFiles,
    /// A rulebook directory, for the vocabulary of categories and purposes; the built-in
    /// federal rulebook if absent. Use the gateway's.
    #[serde(default)]
    pub rulebook: Option<PathBuf>,
    /// The registry's TLS identity (its certificate names `urn:cii:consent`).
    pub tls: TlsFiles,
    /// The registry's pseudonym keys.
    pub pseudonym: PseudonymFile,
    /// The registry's database.
    pub store: StoreFile,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
}

/// The `[pseudonym]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudonymFile {
    /// `global-public.json` from `cii keys init`.
    pub global_public: PathBuf,
    /// `consent/session-keys.json` from `cii keys init` (secret: mode 0600).
    pub session_keys: PathBuf,
}

/// The `[store]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// `sqlite:PATH` (relative to the config file's folder) or `postgres://…`.
    pub database: String,
    /// How often consents whose period ended are put into the change feed, in seconds (default 60).
    #[serde(default = "default_sweep")]
    pub expiry_sweep_seconds: u64,
}

fn default_sweep() -> u64 {
    60
}

/// A checked configuration, ready to run.
#[derive(Debug, Clone)]
pub struct ConsentConfig {
    /// The file as written.
    pub file: ConsentFile,
    /// The active registry (reloaded when the file changes).
    pub registry: Live,
    /// The rulebook (for its vocabulary).
    pub rulebook: Arc<cii_policy::Rulebook>,
    /// The loaded TLS identity.
    pub tls: TlsIdentity,
    /// The registry's session keys.
    pub keys: Arc<NodeKeys>,
    /// The database URL (resolved).
    pub database: String,
}

impl ConsentConfig {
    /// Loads `path` and everything it references; any problem names the file and key.
    pub fn load(path: &Path) -> Result<ConsentConfig, ConfigError> {
        let file: ConsentFile = config::load(path)?;
        let registry = file.registry.open(path)?;
        let dir = file.rulebook.as_ref().map(|d| config::resolve(path, d));
        let files = dir
            .as_deref()
            .map(config::toml_files)
            .transpose()
            .map_err(|e| ConfigError::invalid(path, "rulebook", e.to_string()))?;
        let rulebook = cii_policy::fit::load(files, time::OffsetDateTime::now_utc().date())
            .map_err(|e| ConfigError::invalid(path, "rulebook", e.to_string()))?;
        let tls = TlsIdentity::load(&file.tls.resolved(path))
            .map_err(|e| ConfigError::invalid(path, "tls", e.to_string()))?;
        match tls.identity() {
            Ok(PeerIdentity::Consent) => {}
            Ok(other) => {
                return Err(ConfigError::invalid(
                    path,
                    "tls.cert",
                    format!("certificate names {other}, not the consent registry"),
                ));
            }
            Err(e) => return Err(ConfigError::invalid(path, "tls.cert", e.to_string())),
        }
        let keys = NodeKeys::from_json(
            &config::read_file(path, "pseudonym.global_public", &file.pseudonym.global_public)?,
            &config::read_secret(path, "pseudonym.session_keys", &file.pseudonym.session_keys)?,
        )
        .map_err(|e| ConfigError::invalid(path, "pseudonym", e.to_string()))?;
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| file.store.database.starts_with(p))
        {
            return Err(ConfigError::invalid(
                path,
                "store.database",
                "must be sqlite:PATH or postgres://…",
            ));
        }
        if file.store.expiry_sweep_seconds == 0 {
            return Err(ConfigError::invalid(
                path,
                "store.expiry_sweep_seconds",
                "must be at least 1",
            ));
        }
        config::check_database_tls(path, "store.database", &file.store.database)?;
        let database = config::database_url(path, &file.store.database);
        Ok(ConsentConfig {
            file,
            registry,
            rulebook: Arc::new(rulebook),
            tls,
            keys: Arc::new(keys),
            database,
        })
    }
}
