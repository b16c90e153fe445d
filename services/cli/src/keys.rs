//! `cii keys init`: the key ceremony (offline).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make the global key pair, the gateway's two secrets, and the session keys of every party.
    #[command(after_help = "Writes into DIR, one file per party (secrets with mode 0600):\n  \
global-public.json                      every node and the gateway\n  \
gateway/transcryptor.json               the gateway: pseudonymisation and rekeying secrets only\n  \
institutions/<ID>/session-keys.json     each registry institution's node\n  \
consent/session-keys.json               the consent registry\n  \
dpo/audit-session-keys.json             the network DPO's audit tools (the whole log)\n  \
dpo/<ID>/session-keys.json              institution <ID>'s DPO: its own queries' persons only\n\n\
The global secret key is then discarded, unless --keep-global-secret FILE keeps it (store it offline):\n\
adding an institution or rotating a context later needs that file and the rekeying secret together.\n\n\
Example:\n  cii keys init --dir /secure/ceremony-2026 --registry /etc/cii/registry.toml")]
    Init {
        /// Folder to write into (must not hold a previous ceremony).
        #[arg(long)]
        dir: PathBuf,
        /// The registry file: every institution in it gets session keys.
        #[arg(long)]
        registry: PathBuf,
        /// Key epoch (encryption contexts are named from registry ids and the epoch).
        #[arg(long, default_value_t = 1)]
        epoch: u32,
        /// Keep the global secret key in this file (offline storage), instead of discarding it.
        #[arg(long, value_name = "FILE")]
        keep_global_secret: Option<PathBuf>,
    },
    /// Make a node's store key: 32 random bytes (hex) that seal AVS numbers in its database.
    #[command(
        after_help = "Run it on the node's machine; the key never needs to leave it. Written with mode 0600,
never over an existing file. Back it up with the node's database: without it the stored AVS numbers are lost.

Example:
  cii keys store-key --out /etc/cii/node/store.key"
    )]
    StoreKey {
        /// The file to create.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Writes a new file (never overwrites); a secret one is created 0600, never readable by others.
pub(crate) fn write(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        // INVARIANT (secret-files-0600): key material is readable by its owner only.
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A node's store key: 32 random bytes, hex.
pub(crate) fn new_store_key() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::StoreKey { out } => {
            write(&out, &format!("{}\n", new_store_key()?), true)?;
            eprintln!("created {} (0600)", out.display());
            Ok(())
        }
        KeysCommand::Init {
            dir,
            registry,
            epoch,
            keep_global_secret,
        } => {
            if dir.join("global-public.json").exists() {
                bail!(
                    "{} already holds a ceremony; a second one would orphan every key made by the first",
                    dir.display()
                );
            }
            let registry = cii_kit::registry::Registry::load(&registry)?;
            let ids: Vec<_> = registry.institutions().map(|i| i.id.clone()).collect();
            let ceremony = cii_pseudonym::ceremony::Ceremony::new();
            let files = ceremony.key_files(&ids, epoch, keep_global_secret.is_some())?;
            for (name, contents, secret) in files {
                let path = if name == "global-secret.json" {
                    keep_global_secret
                        .clone()
                        .context("global secret requested without a file")?
                } else {
                    dir.join(&name)
                };
                write(&path, &contents, secret)?;
                eprintln!("created {}{}", path.display(), if secret { " (0600)" } else { "" });
            }
            if keep_global_secret.is_none() {
                eprintln!("the global secret key was discarded: the set of session keys is final");
            }
            Ok(())
        }
    }
}
