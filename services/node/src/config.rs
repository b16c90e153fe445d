//! The node's config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cii_kit::config::{self, ConfigError, LogConfig, TlsFiles};
use cii_kit::registry::{Institution, Live, signed::RegistryFiles};
use cii_kit::tls::TlsIdentity;
use cii_pseudonym::node::NodeKeys;
use cii_types::{InstitutionId, PeerIdentity};
use serde::Deserialize;

/// `node.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This node's institution (a registry id).
    pub institution: String,
    /// The registry (the same signed file the gateway uses), its key, the poll interval.
    pub registry: RegistryFiles,
    /// The gateway's URL, `https://host:port`.
    pub gateway_url: String,
    /// Further replicas of the gateway (`https://host:port` each): when the one this node is
    /// connected to cannot be reached, the next that answers is used (default none).
    #[serde(default)]
    pub gateway_replicas: Vec<String>,
    /// Address of the API for the institution's own IT systems (TLS, JWT).
    pub api_listen: SocketAddr,
    /// Address of the inbound API for the gateway (mutual TLS, gateway only).
    pub inbound_listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint; none if absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The node's TLS identity (its certificate names its institution).
    pub tls: TlsFiles,
    /// The node's pseudonym keys, from `cii keys init`.
    pub pseudonym: PseudonymFile,
    /// The node's own database.
    pub store: StoreFile,
    /// The gateway's audit log, which the node witnesses.
    pub audit: AuditFile,
    /// Rate limits of the node's API on the rpc families (the institution's own IT systems).
    #[serde(default)]
    pub limits: cii_kit::rate_limit::LimitsFile,
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
    /// This institution's `session-keys.json` from `cii keys init` (secret: mode 0600).
    pub session_keys: PathBuf,
}

/// The `[store]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// `sqlite:PATH` (relative to the config file's folder).
    pub database: String,
    /// File with the 32-byte key (64 hex digits) that seals AVS numbers at rest;
    /// make one with `cii keys store-key --out FILE`. Losing it loses the stored AVS numbers.
    pub key: PathBuf,
    /// Days after which sent requests and processed inbox items are forgotten (default 90;
    /// at least 1). Unprocessed items stay until acknowledged.
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
}

fn default_keep_days() -> u32 {
    90
}

/// The `[audit]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// A file holding the log's verifier key (`cii audit vkey` on the gateway prints it):
    /// every receipt's checkpoint must carry this key's signature.
    pub verifier_key_file: PathBuf,
    /// The node's own cosigning key as a witness of the log (Ed25519, PKCS#8 PEM; `cii pki
    /// init` writes `cosigning.key`, `cii witness vkey` prints the vkey the registry lists as
    /// the institution's `witness_vkey`). Needed when the registry lists one.
    #[serde(default)]
    pub cosigning_key_file: Option<PathBuf>,
}

/// A checked node configuration, ready to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The file as written.
    pub file: NodeFile,
    /// This node's institution, as the registry describes it.
    pub institution: Institution,
    /// The active registry (reloaded when the file changes).
    pub registry: Live,
    /// The loaded TLS identity.
    pub tls: TlsIdentity,
    /// The node's pseudonym keys.
    pub keys: Arc<NodeKeys>,
    /// The database URL (resolved).
    pub database: String,
    /// The store key.
    pub store_key: StoreKey,
    /// The audit log's verifier key.
    pub audit_verifier: cii_audit::note::Verifier,
    /// The node's cosigning key, if it witnesses the log.
    pub cosigning_key: Option<crate::witness::CosigningKey>,
}

/// The store key (never printed; wiped from memory when dropped).
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct StoreKey(pub [u8; 32]);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl NodeConfig {
    /// Loads `path` and everything it references; any problem names the file and key.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let file: NodeFile = config::load(path)?;
        let id = InstitutionId::parse("institution", &file.institution)
            .map_err(|e| ConfigError::invalid(path, "institution", e.to_string()))?;
        let registry = file.registry.open(path)?;
        // A party that exchanges nothing runs a node too: its users' way to the gateway.
        let institution = registry
            .current()
            .caller(&id)
            .cloned()
            .ok_or_else(|| ConfigError::invalid(path, "institution", format!("{id} is not in the registry")))?;
        if !file.gateway_url.starts_with("https://") {
            return Err(ConfigError::invalid(path, "gateway_url", "must be an https:// URL"));
        }
        if let Some(bad) = file.gateway_replicas.iter().find(|url| !url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                path,
                "gateway_replicas",
                format!("{bad:?} must be an https:// URL"),
            ));
        }
        let tls = TlsIdentity::load(&file.tls.resolved(path))
            .map_err(|e| ConfigError::invalid(path, "tls", e.to_string()))?;
        match tls.identity() {
            Ok(PeerIdentity::Institution(cert_id)) if cert_id == id => {}
            Ok(other) => {
                return Err(ConfigError::invalid(
                    path,
                    "tls.cert",
                    format!("certificate names {other}, not institution {id}"),
                ));
            }
            Err(e) => return Err(ConfigError::invalid(path, "tls.cert", e.to_string())),
        }
        let read = |key: &str, file: &Path| config::read_file(path, key, file);
        let keys = NodeKeys::from_json(
            &read("pseudonym.global_public", &file.pseudonym.global_public)?,
            &config::read_secret(path, "pseudonym.session_keys", &file.pseudonym.session_keys)?,
        )
        .map_err(|e| ConfigError::invalid(path, "pseudonym", e.to_string()))?;
        if !file.store.database.starts_with("sqlite:") {
            return Err(ConfigError::invalid(path, "store.database", "must be sqlite:PATH"));
        }
        if file.store.keep_days == 0 {
            return Err(ConfigError::invalid(path, "store.keep_days", "must be at least 1"));
        }
        let store_key =
            crate::store::parse_key(&config::read_secret(path, "store.key", &file.store.key)?).ok_or_else(|| {
                ConfigError::invalid(
                    path,
                    "store.key",
                    "must hold 64 hex digits (make one with `cii keys store-key --out FILE`)",
                )
            })?;
        let database = config::database_url(path, &file.store.database);
        let audit_verifier = cii_audit::note::Verifier::from_vkey(
            read("audit.verifier_key_file", &file.audit.verifier_key_file)?.trim(),
        )
        .map_err(|e| ConfigError::invalid(path, "audit.verifier_key_file", e.to_string()))?;
        let cosigning_key = cosigning_key(path, &file.audit, &registry.current(), &id)?;
        Ok(NodeConfig {
            file,
            institution,
            registry,
            tls,
            keys: Arc::new(keys),
            database,
            store_key: StoreKey(store_key),
            audit_verifier,
            cosigning_key,
        })
    }
}

/// The node's cosigning key, checked against the vkey the registry lists for it.
fn cosigning_key(
    path: &Path,
    audit: &AuditFile,
    registry: &cii_kit::registry::Registry,
    id: &InstitutionId,
) -> Result<Option<crate::witness::CosigningKey>, ConfigError> {
    let me = PeerIdentity::Institution(id.clone());
    let listed = registry.witnesses().iter().find(|w| w.identity == me);
    let Some(file) = &audit.cosigning_key_file else {
        return match listed {
            Some(_) => Err(ConfigError::invalid(
                path,
                "audit.cosigning_key_file",
                "the registry lists this node as a witness (witness_vkey): give its cosigning key",
            )),
            None => Ok(None),
        };
    };
    let key = crate::witness::CosigningKey(config::read_secret(path, "audit.cosigning_key_file", file)?.to_string());
    if let Some(listed) = listed
        && cii_audit::cosignature::Cosigner::for_vkey(&key.0, &listed.vkey).is_none()
    {
        return Err(ConfigError::invalid(
            path,
            "audit.cosigning_key_file",
            "not the key of the registry's witness_vkey for this institution (`cii witness vkey` prints a key's vkey)",
        ));
    }
    Ok(Some(key))
}
