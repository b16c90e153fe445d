//! The gateway's config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cii_kit::config::{self, ConfigError, LogConfig, TlsFiles};
use cii_kit::registry::Registry;
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
    /// The registry file (the network's members).
    pub registry: PathBuf,
    /// A rulebook directory (TOML files); the built-in federal rulebook if absent.
    #[serde(default)]
    pub rulebook: Option<PathBuf>,
    /// The gateway's TLS identity.
    pub tls: TlsFiles,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
}

/// A checked gateway configuration, ready to run.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file as written.
    pub file: GatewayFile,
    /// The loaded registry.
    pub registry: Arc<Registry>,
    /// The loaded TLS identity.
    pub tls: TlsIdentity,
    /// The checked rulebook.
    pub rulebook: Arc<cii_policy::Rulebook>,
}

impl GatewayConfig {
    /// Loads `path` and everything it references; any problem names the file and key.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let file: GatewayFile = config::load(path)?;
        let registry = Arc::new(Registry::load(&config::resolve(path, &file.registry))?);
        let tls = TlsIdentity::load(&file.tls.resolved(path))
            .map_err(|e| ConfigError::invalid(path, "tls", e.to_string()))?;
        match tls.identity() {
            Ok(PeerIdentity::Gateway) => {}
            Ok(other) => {
                return Err(ConfigError::invalid(
                    path,
                    "tls.cert",
                    format!("certificate names {other}, not the gateway"),
                ));
            }
            Err(e) => return Err(ConfigError::invalid(path, "tls.cert", e.to_string())),
        }
        let dir = file.rulebook.as_ref().map(|d| config::resolve(path, d));
        let today = time::OffsetDateTime::now_utc().date();
        let rulebook = crate::rulebook::load(dir.as_deref(), today)
            .map_err(|e| ConfigError::invalid(path, "rulebook", e.to_string()))?;
        crate::rulebook::check_agreement(&rulebook, &registry)
            .map_err(|e| ConfigError::invalid(path, "rulebook", e.to_string()))?;
        Ok(GatewayConfig {
            file,
            registry,
            tls,
            rulebook: Arc::new(rulebook),
        })
    }
}
