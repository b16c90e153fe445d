//! Loading TOML config files with errors that name the file, the key and the problem.
//!
//! Every config struct uses `#[serde(deny_unknown_fields)]`: a misspelt key is an
//! error, not a silently ignored setting. Relative paths inside a config file
//! resolve from the file's own folder, so a config directory can be moved whole.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Environment variable that, when set, replaces the PEM of the TLS private
/// key named in any config file (secrets may be injected by the environment
/// rather than written to disk next to the config).
pub const ENV_TLS_KEY_PEM: &str = "CII_TLS_KEY_PEM";

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The key at fault, dotted (`tls.cert`), if known.
        key: Option<String>,
        /// What is wrong, with the line and column.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{file}: key `{key}`: {problem}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key at fault, dotted.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`].
    pub fn invalid(file: &Path, key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_owned(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Reads and parses a TOML file into `T`.
pub fn load<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_owned(),
        source,
    })?;
    parse(file, &text)
}

/// Parses TOML text that came from `file` (named in errors).
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let key = missing_or_unknown_key(e.message());
        // toml's message already carries line, column and a snippet; keep it whole
        // but drop the trailing newline.
        ConfigError::Parse {
            file: file.to_owned(),
            key,
            message: e.to_string().trim_end().to_owned(),
        }
    })
}

/// Extracts the key from serde's "missing field `x`" / "unknown field `x`" messages.
fn missing_or_unknown_key(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next().map(str::to_owned)
}

/// Resolves `path` against the folder of `config_file` unless it is absolute.
pub fn resolve(config_file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        config_file.parent().unwrap_or_else(|| Path::new(".")).join(path)
    }
}

/// Reads the file `path` (relative to `config_file`) named by `key`.
pub fn read_file(config_file: &Path, key: &str, path: &Path) -> Result<String, ConfigError> {
    let resolved = resolve(config_file, path);
    std::fs::read_to_string(&resolved)
        .map_err(|e| ConfigError::invalid(config_file, key, format!("cannot read {}: {e}", resolved.display())))
}

/// Reads a file of secret key material: it must be readable by its owner only
/// (mode 0600 or stricter), as `cii keys` writes it — a secret readable by other
/// accounts of the machine is refused, like ssh refuses such a private key.
/// The text comes back in a [`zeroize::Zeroizing`] string: wiped when dropped, so the
/// secret lives in memory only as long as its parsed form.
pub fn read_secret(config_file: &Path, key: &str, path: &Path) -> Result<zeroize::Zeroizing<String>, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let resolved = resolve(config_file, path);
    if let Ok(meta) = std::fs::metadata(&resolved)
        && meta.permissions().mode() & 0o077 != 0
    {
        return Err(ConfigError::invalid(
            config_file,
            key,
            format!(
                "{} is readable by other accounts (mode {:o}); run chmod 600 on it",
                resolved.display(),
                meta.permissions().mode() & 0o777
            ),
        ));
    }
    read_file(config_file, key, path).map(zeroize::Zeroizing::new)
}

/// A PostgreSQL URL that leaves the machine must verify the server's certificate
/// and name (`sslmode=verify-full`): the stores hold the audit log and consents.
/// Loopback hosts and Unix sockets are exempt. Other URLs pass unchanged.
pub fn check_database_tls(config_file: &Path, key: &str, url: &str) -> Result<(), ConfigError> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Ok(());
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let socket = query.split('&').any(|p| p.starts_with("host=/"));
    let local = socket || host.is_empty() || ["localhost", "127.0.0.1", "::1"].contains(&host);
    if local || query.split('&').any(|p| p == "sslmode=verify-full") {
        return Ok(());
    }
    Err(ConfigError::invalid(
        config_file,
        key,
        "a PostgreSQL server on another host needs sslmode=verify-full (and sslrootcert=…): \
         the connection carries the audit log or the consents",
    ))
}

/// A database URL with a relative `sqlite:PATH` resolved from `config_file`'s folder;
/// other URLs (`postgres://…`) unchanged.
pub fn database_url(config_file: &Path, url: &str) -> String {
    match url.strip_prefix("sqlite:") {
        Some(rest) => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
            let resolved = resolve(config_file, Path::new(path));
            match query {
                Some(q) => format!("sqlite:{}?{q}", resolved.display()),
                None => format!("sqlite:{}", resolved.display()),
            }
        }
        None => url.to_owned(),
    }
}

/// Prepares the file of an SQLite URL (`sqlite:PATH`; others are left alone): creates its
/// folder, creates the database file readable by this account only (0600) if it is missing,
/// and takes group and other permissions away from an existing one and its `-wal`/`-shm`
/// files (SQLite gives those the database file's mode).
///
/// INVARIANT (stores-are-private): every store a process of ours opens is 0600, whatever
/// the umask: they hold sealed payloads, pseudonyms and the log.
pub fn prepare_sqlite_file(url: &str) -> std::io::Result<()> {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(());
    };
    let path = rest.strip_prefix("//").unwrap_or(rest).split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let path = Path::new(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    private_file(path)
}

/// The URL a store opens through sqlx's `Any` driver: a SQLite file made private and created
/// if missing ([`prepare_sqlite_file`], `mode=rwc`), any other URL unchanged.
pub fn any_store_url(url: &str) -> std::io::Result<String> {
    if !url.starts_with("sqlite:") {
        return Ok(url.to_owned());
    }
    prepare_sqlite_file(url)?;
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    Ok(format!("sqlite:{}?mode=rwc", path.split('?').next().unwrap_or("")))
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_file(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Files of a party's TLS identity, as written in config files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The network CA certificate (PEM) that every peer must chain to.
    pub ca: PathBuf,
    /// This party's certificate chain (PEM).
    pub cert: PathBuf,
    /// This party's private key (PEM); overridden by `CII_TLS_KEY_PEM`.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Resolves the paths against the config file's folder.
    pub fn resolved(&self, config_file: &Path) -> TlsFiles {
        TlsFiles {
            ca: resolve(config_file, &self.ca),
            cert: resolve(config_file, &self.cert),
            key: resolve(config_file, &self.key),
        }
    }
}

/// Log output settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `cii_gateway=debug,info` (default `info`);
    /// `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed")]
    struct Sample {
        listen: String,
        tls: TlsFiles,
    }

    #[test]
    fn a_remote_postgres_url_must_verify_the_server() {
        let f = Path::new("gateway.toml");
        for ok in [
            "sqlite:audit.db",
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@localhost/db",
            "postgres://u@[::1]:5432/db",
            "postgres://u@/db?host=/run/postgresql",
            "postgres://u@db.example/db?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        ] {
            assert!(check_database_tls(f, "audit.store", ok).is_ok(), "{ok}");
        }
        for bad in [
            "postgres://u@db.example/db",
            "postgresql://u:secret@10.0.0.5:5432/db?sslmode=require",
            "postgres://u@db.example/db?sslmode=prefer",
        ] {
            let err = check_database_tls(f, "audit.store", bad).unwrap_err().to_string();
            assert!(err.contains("audit.store") && err.contains("verify-full"), "{err}");
            assert!(!err.contains("secret"), "the URL is not echoed: {err}");
        }
    }

    #[test]
    fn a_secret_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("node.toml");
        let secret = dir.path().join("session-keys.json");
        std::fs::write(&secret, "{}").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&config, "pseudonym.session_keys", Path::new("session-keys.json")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("pseudonym.session_keys") && text.contains("chmod 600") && text.contains("644"),
            "{text}"
        );
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_secret(&config, "pseudonym.session_keys", Path::new("session-keys.json"))
                .unwrap()
                .as_str(),
            "{}"
        );
    }

    #[test]
    fn missing_and_unknown_keys_are_named() {
        let file = Path::new("/etc/cii/gateway.toml");
        let err = parse::<Sample>(file, "listen = \"x\"\n[tls]\nca = \"a\"\ncert = \"b\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/etc/cii/gateway.toml") && text.contains("missing field `key`"),
            "{text}"
        );
        assert!(matches!(err, ConfigError::Parse { key: Some(ref k), .. } if k == "key"));

        let err = parse::<Sample>(file, "listen = \"x\"\nlisten_typo = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `listen_typo`"), "{err}");

        let err = parse::<Sample>(file, "listen = 3\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_from_the_config_folder() {
        let cfg = Path::new("/srv/cii/gateway.toml");
        assert_eq!(resolve(cfg, Path::new("pki/ca.pem")), Path::new("/srv/cii/pki/ca.pem"));
        assert_eq!(resolve(cfg, Path::new("/abs/ca.pem")), Path::new("/abs/ca.pem"));
    }
}

/// A file of a folder could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FolderError {
    /// The file or folder.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

/// The `.toml` files of `dir`, sorted by name: (file name, text). A rulebook folder is read
/// this way; what the files mean is `cii_policy`'s business.
pub fn toml_files(dir: &Path) -> Result<Vec<(String, String)>, FolderError> {
    let failed = |path: &Path| {
        let path = path.display().to_string();
        move |source| FolderError { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(failed(dir))? {
        let path = entry.map_err(failed(dir))?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).map_err(failed(&path))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, text));
        }
    }
    files.sort();
    Ok(files)
}
