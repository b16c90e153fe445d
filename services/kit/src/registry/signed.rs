//! The registry as every process holds it: signed by the network's offline key,
//! versioned, and reloaded when it changes.
//!
//! The signature is a detached Ed25519 signature over the file's exact bytes, in
//! `<registry>.sig` (64 raw bytes), so it can be made and checked with standard
//! tools (`openssl pkeyutl -sign -rawin`); `cii registry sign` does the same. The
//! verification key is an SPKI PEM file named by every process's config
//! (`registry_key`).
//!
//! A process starts only from a signed file, and afterwards activates a new file
//! only if its signature verifies and its version is higher than the active one;
//! a lower version (a replayed old file that re-admits a revoked certificate) is
//! refused and the active registry stays. Readers take a snapshot
//! ([`Live::current`]) per request, so a revocation applies to the next request
//! on an already open connection, not only to the next handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

use super::Registry;
use crate::config::ConfigError;

/// Why a registry file was not activated. Each variant has a stable code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The file or its signature could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The signature does not verify with the network's registry key.
    #[error("{file}: the signature in {file}.sig does not verify with the network's registry key")]
    Signature {
        /// The registry file.
        file: PathBuf,
    },
    /// The file parses but is not a valid registry.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The version is lower than the active one.
    #[error(
        "{file}: version {found} is lower than the active version {active}; an older registry is never reactivated"
    )]
    VersionLower {
        /// The registry file.
        file: PathBuf,
        /// The file's version.
        found: u64,
        /// The active version.
        active: u64,
    },
    /// The content changed but the version did not.
    #[error("{file}: the content changed but version {version} did not; raise the version with every change")]
    VersionReused {
        /// The registry file.
        file: PathBuf,
        /// The version.
        version: u64,
    },
}

impl RegistryError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::Read { .. } => "REGISTRY_UNREADABLE",
            RegistryError::Signature { .. } => "REGISTRY_SIGNATURE_INVALID",
            RegistryError::Invalid(_) => "REGISTRY_INVALID",
            RegistryError::VersionLower { .. } => "REGISTRY_VERSION_LOWER",
            RegistryError::VersionReused { .. } => "REGISTRY_VERSION_REUSED",
        }
    }
}

/// The network's registry verification key.
#[derive(Debug, Clone)]
pub struct RegistryKey(Arc<UnparsedPublicKey<Vec<u8>>>);

/// The Ed25519 SubjectPublicKeyInfo prefix (RFC 8410): the raw key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl RegistryKey {
    /// Reads an Ed25519 public key in SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn load(file: &Path) -> Result<RegistryKey, ConfigError> {
        let invalid = |problem: &str| ConfigError::invalid(file, "registry_key", problem);
        let pem = std::fs::read(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(&pem)
            .map_err(|_| invalid("not a public key in PEM (-----BEGIN PUBLIC KEY-----)"))?;
        let raw = spki
            .as_ref()
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .filter(|k| k.len() == 32)
            .ok_or_else(|| invalid("not an Ed25519 public key"))?;
        Ok(RegistryKey(Arc::new(UnparsedPublicKey::new(&ED25519, raw.to_vec()))))
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify(message, signature).is_ok()
    }
}

/// Where the detached signature of `registry` lives.
pub fn signature_file(registry: &Path) -> PathBuf {
    let mut name = registry.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Signs `registry` with the network's registry key (Ed25519, PKCS#8 PEM), writing
/// `<registry>.sig`. The offline step of every registry change.
pub fn sign(registry: &Path, private_key_pem: &[u8]) -> Result<PathBuf, RegistryError> {
    let read = |file: &Path| {
        let file = file.to_owned();
        move |source| RegistryError::Read { file, source }
    };
    let bytes = std::fs::read(registry).map_err(read(registry))?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(private_key_pem)
        .ok()
        .and_then(|der| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()).ok())
        .ok_or_else(|| {
            RegistryError::Invalid(ConfigError::invalid(
                registry,
                "signing key",
                "not an Ed25519 private key in PKCS#8 PEM",
            ))
        })?;
    let out = signature_file(registry);
    std::fs::write(&out, key.sign(&bytes).as_ref()).map_err(read(&out))?;
    Ok(out)
}

/// Reads and verifies a signed registry (no version rule: that needs an active one).
fn read_signed(file: &Path, key: &RegistryKey) -> Result<(Registry, Vec<u8>), RegistryError> {
    let read = |file: &Path| {
        let file = file.to_owned();
        move |source| RegistryError::Read { file, source }
    };
    let bytes = std::fs::read(file).map_err(read(file))?;
    let sig_file = signature_file(file);
    let signature = std::fs::read(&sig_file).map_err(read(&sig_file))?;
    if !key.verifies(&bytes, &signature) {
        return Err(RegistryError::Signature { file: file.to_owned() });
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| ConfigError::invalid(file, "registry", "not UTF-8 text"))?;
    Ok((Registry::parse(file, text)?, bytes))
}

/// The registry keys every process's config carries.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFiles {
    /// The registry file (signed: `<file>.sig` beside it).
    pub file: PathBuf,
    /// The network's registry verification key (Ed25519, SPKI PEM).
    pub verification_key: PathBuf,
    /// How often the file is checked for a new version, in seconds.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u32,
    /// The longest lifetime (`exp - iat`) of an acting user's token, in seconds.
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime_seconds: u32,
}

fn default_poll_seconds() -> u32 {
    10
}

fn default_max_token_lifetime() -> u32 {
    3600
}

impl RegistryFiles {
    /// Opens the signed registry; problems name `config_file` and the `registry` section.
    pub fn open(&self, config_file: &Path) -> Result<Live, ConfigError> {
        if self.poll_seconds == 0 {
            return Err(ConfigError::invalid(
                config_file,
                "registry.poll_seconds",
                "must be at least 1",
            ));
        }
        if self.max_token_lifetime_seconds == 0 {
            return Err(ConfigError::invalid(
                config_file,
                "registry.max_token_lifetime_seconds",
                "must be at least 1",
            ));
        }
        let key = RegistryKey::load(&crate::config::resolve(config_file, &self.verification_key))
            .map_err(|e| ConfigError::invalid(config_file, "registry.verification_key", e.to_string()))?;
        Live::open(&crate::config::resolve(config_file, &self.file), key).map_err(|e| match e {
            RegistryError::Invalid(e) => e,
            e => ConfigError::invalid(config_file, "registry.file", e.to_string()),
        })
    }

    /// The poll interval.
    pub fn poll(&self) -> Duration {
        Duration::from_secs(u64::from(self.poll_seconds))
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The file is the active one.
    Unchanged,
    /// A newer version is now active.
    Activated {
        /// The new version.
        version: u64,
    },
}

/// What a process checks of a new registry before activating it (the gateway: that it
/// still agrees with the rulebook), beyond signature and version.
pub type Check = Arc<dyn Fn(&Registry) -> Result<(), String> + Send + Sync>;

/// The active registry of a running process, replaced as a whole on reload.
#[derive(Clone)]
pub struct Live {
    file: PathBuf,
    key: RegistryKey,
    active: Arc<RwLock<Active>>,
    check: Option<Check>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("file", &self.file).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Active {
    registry: Arc<Registry>,
    bytes: Vec<u8>,
}

impl Live {
    /// Opens the signed registry `file`, verified with `key`.
    pub fn open(file: &Path, key: RegistryKey) -> Result<Live, RegistryError> {
        let (registry, bytes) = read_signed(file, &key)?;
        Ok(Live {
            file: file.to_owned(),
            key,
            active: Arc::new(RwLock::new(Active {
                registry: Arc::new(registry),
                bytes,
            })),
            check: None,
        })
    }

    /// Every later version must also pass `check` to be activated.
    pub fn with_check(mut self, check: Check) -> Live {
        self.check = Some(check);
        self
    }

    /// The active registry. Take one snapshot per request and decide on it.
    pub fn current(&self) -> Arc<Registry> {
        // A poisoned lock means a reload panicked mid-swap; the value inside is
        // still a whole registry (it is replaced by one assignment).
        match self.active.read() {
            Ok(a) => a.registry.clone(),
            Err(poisoned) => poisoned.into_inner().registry.clone(),
        }
    }

    /// Re-reads the file: activates it if it is signed and newer, keeps the
    /// active one otherwise.
    pub fn reload(&self) -> Result<Reload, RegistryError> {
        let (registry, bytes) = read_signed(&self.file, &self.key)?;
        let mut active = match self.active.write() {
            Ok(a) => a,
            Err(poisoned) => poisoned.into_inner(),
        };
        if active.bytes == bytes {
            return Ok(Reload::Unchanged);
        }
        let (found, current) = (registry.version(), active.registry.version());
        if found < current {
            return Err(RegistryError::VersionLower {
                file: self.file.clone(),
                found,
                active: current,
            });
        }
        if found == current {
            return Err(RegistryError::VersionReused {
                file: self.file.clone(),
                version: found,
            });
        }
        if let Some(check) = &self.check {
            check(&registry)
                .map_err(|problem| RegistryError::Invalid(ConfigError::invalid(&self.file, "registry", problem)))?;
        }
        *active = Active {
            registry: Arc::new(registry),
            bytes,
        };
        Ok(Reload::Activated { version: found })
    }

    /// Reloads every `interval` until `stop` flips, calling `activated` with each
    /// newly active registry (the gateway logs it). A refused file is logged and
    /// counted; the active registry stays.
    pub async fn watch(
        self,
        interval: Duration,
        metrics: crate::metrics::Metrics,
        activated: impl Fn(Arc<Registry>) + Send + 'static,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_refusal: Option<&'static str> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.reload() {
                Ok(Reload::Unchanged) => last_refusal = None,
                Ok(Reload::Activated { version }) => {
                    last_refusal = None;
                    tracing::info!(version, "registry activated");
                    activated(self.current());
                }
                Err(e) => {
                    // Once per distinct refusal, not on every poll.
                    if last_refusal != Some(e.code()) {
                        tracing::error!(code = e.code(), error = %e, "registry file refused; the active registry stays");
                        metrics.count_refusal(e.code());
                        last_refusal = Some(e.code());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(version: u64, revoked: &str) -> String {
        format!(
            "network = \"cii.test\"\nversion = {version}\nrevoked_serials = [{revoked}]\n[[institution]]\nid = \"ORP-VS\"\ntype = \"AC_ORP\"\ncanton = \"VS\"\nname = \"ORP\"\nendpoint = \"https://localhost:1\"\n[[institution.jwt_keys]]\nkid = \"k1\"\npublic_key = \"\"\"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n\"\"\"\n"
        )
    }

    fn keypair(dir: &Path) -> (Vec<u8>, RegistryKey) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        std::fs::write(dir.join("registry.pub"), key.public_key_pem()).unwrap();
        (
            key.serialize_pem().into_bytes(),
            RegistryKey::load(&dir.join("registry.pub")).unwrap(),
        )
    }

    #[test]
    fn only_a_signed_newer_registry_is_activated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.toml");
        let (private, key) = keypair(dir.path());
        std::fs::write(&file, registry(2, "")).unwrap();
        // Unsigned: refused at start.
        assert_eq!(
            Live::open(&file, key.clone()).unwrap_err().code(),
            "REGISTRY_UNREADABLE"
        );
        sign(&file, &private).unwrap();
        let live = Live::open(&file, key.clone()).unwrap();
        assert_eq!(live.reload().unwrap(), Reload::Unchanged);

        // A change signed by another key: refused, the active one stays.
        let elsewhere = tempfile::tempdir().unwrap();
        let (other, _) = keypair(elsewhere.path());
        std::fs::write(&file, registry(3, "\"4f\"")).unwrap();
        sign(&file, &other).unwrap();
        assert_eq!(live.reload().unwrap_err().code(), "REGISTRY_SIGNATURE_INVALID");
        assert!(!live.current().is_revoked(&[0x4f]));

        // Signed and newer: active, the revocation applies to the next snapshot.
        sign(&file, &private).unwrap();
        assert_eq!(live.reload().unwrap(), Reload::Activated { version: 3 });
        assert!(live.current().is_revoked(&[0x4f]));

        // The old file replayed (validly signed, lower version): refused.
        std::fs::write(&file, registry(2, "")).unwrap();
        sign(&file, &private).unwrap();
        assert_eq!(live.reload().unwrap_err().code(), "REGISTRY_VERSION_LOWER");
        assert!(live.current().is_revoked(&[0x4f]));

        // Changed content under the same version: refused.
        std::fs::write(&file, registry(3, "\"4e\"")).unwrap();
        sign(&file, &private).unwrap();
        assert_eq!(live.reload().unwrap_err().code(), "REGISTRY_VERSION_REUSED");
        assert!(!live.current().is_revoked(&[0x4e]));
    }

    #[test]
    fn a_newer_registry_that_fails_the_process_check_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.toml");
        let (private, key) = keypair(dir.path());
        std::fs::write(&file, registry(1, "")).unwrap();
        sign(&file, &private).unwrap();
        let live = Live::open(&file, key).unwrap().with_check(Arc::new(|r: &Registry| {
            if r.is_revoked(&[0x4e]) {
                Err("the rulebook needs it".to_owned())
            } else {
                Ok(())
            }
        }));
        std::fs::write(&file, registry(2, "\"4e\"")).unwrap();
        sign(&file, &private).unwrap();
        let err = live.reload().unwrap_err();
        assert_eq!(err.code(), "REGISTRY_INVALID");
        assert!(err.to_string().contains("the rulebook needs it"), "{err}");
        assert_eq!(live.current().version(), 1);
    }

    #[test]
    fn a_key_that_is_not_ed25519_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(dir.path().join("k.pub"), key.public_key_pem()).unwrap();
        let err = RegistryKey::load(&dir.path().join("k.pub")).unwrap_err();
        assert!(err.to_string().contains("registry_key"), "{err}");
    }
}
