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
        /// 2: the ceremony in shares of a network of two transcryptors (the gateway's and an
        /// independent witness's `cii transcryptor`); no global secret key ever exists. A network
        /// chooses at its first ceremony: moving from one to two changes every pseudonym.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
        transcryptors: u32,
    },
    /// Issue every party's keys for a new key epoch (a rotation), from what the first ceremony kept.
    #[command(
        after_help = "Reads, offline, the first ceremony's global-public.json and gateway/transcryptor.json (FROM)
and the global secret it kept (--keep-global-secret). Writes into DIR the same files as `init`, for
--epoch: the pseudonyms stay (the secrets do), the encryption contexts and so every session key and
DPO key change. Deploy the new transcryptor to the gateway together with the new session keys to
every node and the consent registry; entries written before stay readable (each says its epoch):
the gateway rekeys them for the institutions' new DPO keys, and the network DPO keeps the previous
epoch's audit key for them.

Example:
  cii keys rotate --from /secure/ceremony-2026 --global-secret /media/offline/global-secret.json \
    --registry /etc/cii/registry.toml --epoch 2 --dir /secure/ceremony-2027"
    )]
    Rotate {
        /// The first ceremony's folder (its global-public.json and gateway/transcryptor.json).
        #[arg(long)]
        from: PathBuf,
        /// The global secret key the first ceremony kept.
        #[arg(long, value_name = "FILE")]
        global_secret: PathBuf,
        /// The registry file: every institution in it gets session keys.
        #[arg(long)]
        registry: PathBuf,
        /// The new key epoch (higher than the one in use).
        #[arg(long)]
        epoch: u32,
        /// Folder to write into (must not hold a previous ceremony).
        #[arg(long)]
        dir: PathBuf,
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
        KeysCommand::Rotate {
            from,
            global_secret,
            registry,
            epoch,
            dir,
        } => rotate(&from, &global_secret, &registry, epoch, &dir),
        KeysCommand::Init {
            dir,
            registry,
            epoch,
            keep_global_secret,
            transcryptors,
        } => {
            if dir.join("global-public.json").exists() {
                bail!(
                    "{} already holds a ceremony; a second one would orphan every key made by the first",
                    dir.display()
                );
            }
            let registry = cii_kit::registry::Registry::load(&registry)?;
            let ids: Vec<_> = registry.institutions().map(|i| i.id.clone()).collect();
            let files = if transcryptors == 2 {
                if keep_global_secret.is_some() {
                    bail!("--keep-global-secret: a ceremony in shares has no global secret key to keep");
                }
                cii_pseudonym::shares::key_files(&ids, epoch)?
            } else {
                cii_pseudonym::ceremony::Ceremony::new().key_files(&ids, epoch, keep_global_secret.is_some())?
            };
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
            if transcryptors == 2 {
                eprintln!(
                    "ceremony in shares: give transcryptor/secrets.json to the second transcryptor's party only; \
                     no global secret key was made"
                );
            } else if keep_global_secret.is_none() {
                eprintln!("the global secret key was discarded: the set of session keys is final");
            }
            Ok(())
        }
    }
}

/// `cii keys rotate`: the first ceremony resumed, every party's keys for `epoch`.
fn rotate(from: &Path, global_secret: &Path, registry: &Path, epoch: u32, dir: &Path) -> anyhow::Result<()> {
    let read = |path: &Path| std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
    let transcryptor = read(&from.join("gateway/transcryptor.json"))?;
    let current: serde_json::Value = serde_json::from_str(&transcryptor).context("the transcryptor file")?;
    let in_use = current.get("epoch").and_then(serde_json::Value::as_u64).unwrap_or(1);
    if current.get("transcryptors").and_then(serde_json::Value::as_u64) == Some(2) {
        bail!(
            "{} is a ceremony in shares (two transcryptors): its keys are rotated by each transcryptor \
             issuing its shares for the new epoch, which this tool does not do yet",
            from.display()
        );
    }
    if u64::from(epoch) <= in_use {
        bail!("--epoch {epoch} is not after the epoch in use ({in_use}): a rotation moves forward");
    }
    if dir.join("global-public.json").exists() {
        bail!("{} already holds a ceremony", dir.display());
    }
    let ceremony = cii_pseudonym::ceremony::Ceremony::resume(
        &read(&from.join("global-public.json"))?,
        &read(global_secret)?,
        &transcryptor,
    )?;
    let registry = cii_kit::registry::Registry::load(registry)?;
    let ids: Vec<_> = registry.institutions().map(|i| i.id.clone()).collect();
    for (name, contents, secret) in ceremony.key_files(&ids, epoch, false)? {
        let path = dir.join(&name);
        write(&path, &contents, secret)?;
        eprintln!("created {}{}", path.display(), if secret { " (0600)" } else { "" });
    }
    Ok(())
}
