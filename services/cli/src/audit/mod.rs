//! `cii audit …`: verification commands that read the audit store directly
//! (read-only, no JWT, work while the gateway is stopped), and the DPO's
//! commands, which go through the institution's node.
//!
//! # Layout
//! - `query`: `query`, `export` (with proofs) and `check-export`.
//! - `subject_report`: the subject-access report (nLPD art. 25), FR/DE/EN.
//! - `usage_report`: a month's counts as HTML charts and CSV.
//! - `retention`: the operator's retention run.

mod query;
mod retention;
mod subject_report;
mod usage_report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cii_audit::Store;
use cii_audit::merkle::Tree;
use cii_audit::note::Verifier;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The gateway's config file: store, origin and key are read from its `[audit]` section
    /// (relative paths resolve from its folder).
    #[arg(long, conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store URL instead (sqlite:PATH or postgres://…); needs --vkey and --origin for `verify`.
    #[arg(long)]
    store: Option<String>,
    /// The log's verifier key (`cii audit vkey`), when --store is used.
    #[arg(long)]
    vkey: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the tree from the store and check every entry, checkpoint signature and consistency.
    #[command(
        after_help = "Exit 0: the log is intact. Exit 1: the first bad index and what is wrong are printed.\n\
Exit 3: the tree and every checkpoint verify, but the entries listed as UNDECODABLE do not decode\n\
(written straight into the store: the gateway refuses such entries); investigate them.\n\n\
Example:\n  cii audit verify --config /etc/cii/gateway.toml"
    )]
    Verify(StoreArgs),
    /// Print the newest signed checkpoint, byte for byte.
    Checkpoint(StoreArgs),
    /// Print the verifier key: `<origin>+<key id>+<base64 key>`.
    Vkey(StoreArgs),
    /// Print an inclusion proof (--index) or a consistency proof (--old-size) as JSON.
    #[command(after_help = "Examples:\n  cii audit prove --config gateway.toml --index 42\n  \
cii audit prove --config gateway.toml --old-size 100 --size 250")]
    Prove {
        #[command(flatten)]
        store: StoreArgs,
        /// The entry to prove.
        #[arg(long, conflicts_with = "old_size", required_unless_present = "old_size")]
        index: Option<u64>,
        /// The older tree size of a consistency proof.
        #[arg(long)]
        old_size: Option<u64>,
        /// The tree size (default: the newest checkpoint's).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Select entries by institution, period, exchange type, basis, decision, user or person
    /// (a DPO's question; through the node, logged at the gateway).
    Query(query::QueryArgs),
    /// Export the selected entries with inclusion proofs as JSON lines (a DPO's export).
    Export(query::ExportArgs),
    /// Check an export offline against the log's verifier key.
    CheckExport(query::CheckExportArgs),
    /// Everything the log holds about one person, for an access request (FR, DE or EN; text and HTML).
    SubjectReport(subject_report::SubjectReportArgs),
    /// An institution's month in figures: HTML with bar charts and CSV (refusals, obligations).
    UsageReport(usage_report::UsageReportArgs),
    /// Apply the retention limit: shred the bodies of entries past `retention_days` (role operator; logged).
    Retention(retention::RetentionArgs),
    /// The exception: shred an ended month early, asked for and approved by two roles (both logged).
    Shred(retention::ShredArgs),
}

struct Opened {
    store: Store,
    verifier: Option<Verifier>,
}

async fn open(args: &StoreArgs) -> anyhow::Result<Opened> {
    match (&args.config, &args.store) {
        (Some(config), None) => {
            let file: cii_gateway::config::GatewayFile = cii_kit::config::load(config)?;
            let signer = file.audit.signer(config)?;
            let store = Store::open_read_only(&file.audit.store_url(config))
                .await
                .context("opening the audit store")?;
            Ok(Opened {
                store,
                verifier: Some(signer.verifier()),
            })
        }
        (None, Some(url)) => {
            let verifier = args
                .vkey
                .as_deref()
                .map(Verifier::from_vkey)
                .transpose()
                .context("--vkey")?;
            Ok(Opened {
                store: Store::open_read_only(url).await.context("opening the audit store")?,
                verifier,
            })
        }
        _ => bail!("give --config GATEWAY_CONFIG or --store URL"),
    }
}

/// The exit code of `verify`, `query` and `export` when the log holds entries whose bytes
/// do not decode: the tree and checkpoints verified, but those entries cannot be read.
pub(crate) const EXIT_UNDECODABLE: u8 = 3;

/// Prints the gateway's report of an undecodable entry (to stderr, beside the answer)
/// and says whether `item` was one.
#[expect(clippy::print_stderr, reason = "a warning beside the command's output")]
pub(crate) fn report_undecodable(item: &cii_proto::audit::Entry) -> bool {
    if item.undecodable.is_empty() {
        return false;
    }
    eprintln!(
        "entry {} cannot be decoded ({}): it is in the log but cannot be shown; the operator runs `cii audit verify`",
        item.index, item.undecodable
    );
    true
}

/// Success, or [`EXIT_UNDECODABLE`] if any entry could not be decoded.
pub(crate) fn exit_after(undecodable: u64) -> ExitCode {
    if undecodable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNDECODABLE)
    }
}

/// Standard padded base64, as C2SP notes and our proofs use.
pub(crate) fn b64(h: &[u8]) -> String {
    STANDARD.encode(h)
}

#[expect(clippy::print_stdout, reason = "the commands' output")]
pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Query(args) => query::run(args).await,
        AuditCommand::Export(args) => query::export(args).await,
        AuditCommand::CheckExport(args) => query::check_export(args),
        AuditCommand::SubjectReport(args) => subject_report::run(args).await,
        AuditCommand::UsageReport(args) => usage_report::run(args).await,
        AuditCommand::Retention(args) => retention::run(args).await,
        AuditCommand::Shred(args) => retention::shred(args).await,
        AuditCommand::Verify(args) => {
            let opened = open(&args).await?;
            let verifier = opened
                .verifier
                .context("verify needs the log's verifier key: --config, or --store with --vkey")?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} entries {per_sec} {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let origin = verifier.name().to_owned();
            let result = cii_audit::verify::verify(&opened.store, &verifier, &origin, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await;
            bar.finish_and_clear();
            opened.store.close().await;
            match result {
                Ok(report) => {
                    println!(
                        "ok: {} entries, {} signed checkpoints, newest size {}",
                        report.entries,
                        report.checkpoints,
                        report.newest.map_or(0, |c| c.size)
                    );
                    if report.expired > 0 {
                        println!(
                            "{} entries expired by retention (periods {}): their hashes verified in the tree, their bodies are destroyed",
                            report.expired,
                            report.expired_periods.join(", ")
                        );
                    }
                    for (index, problem) in &report.undecodable {
                        println!(
                            "UNDECODABLE: entry {index}: {problem} (its hash is in the tree; its content cannot be read)"
                        );
                    }
                    Ok(exit_after(report.undecodable.len() as u64))
                }
                Err(e) => {
                    println!("FAILED: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        AuditCommand::Checkpoint(args) => {
            let opened = open(&args).await?;
            let (_, note) = opened
                .store
                .latest_checkpoint()
                .await?
                .context("the log has no checkpoint yet")?;
            print!("{note}");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Vkey(args) => {
            // Needs the signing key only: it works before the log has its first entry.
            let config = args
                .config
                .as_deref()
                .context("vkey needs --config (the gateway's config, which names the signing key)")?;
            let file: cii_gateway::config::GatewayFile = cii_kit::config::load(config)?;
            println!("{}", file.audit.signer(config)?.verifier().vkey());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prove {
            store,
            index,
            old_size,
            size,
        } => {
            let opened = open(&store).await?;
            let newest = opened.store.latest_checkpoint().await?.map_or(0, |(s, _)| s);
            let size = size.unwrap_or(newest);
            if size > newest {
                bail!("--size {size} is beyond the newest checkpoint ({newest})");
            }
            let mut tree = Tree::new();
            for leaf in opened.store.leaf_hashes().await? {
                tree.push(leaf);
            }
            let json = match (index, old_size) {
                (Some(index), _) => {
                    let proof = tree.inclusion_proof(index, size)?;
                    let leaf = tree.leaf(index).context("no such entry")?;
                    serde_json::json!({
                        "index": index,
                        "tree_size": size,
                        "leaf_hash": b64(&leaf),
                        "inclusion_proof": proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                    })
                }
                (None, Some(old)) => {
                    let proof = tree.consistency_proof(old, size)?;
                    serde_json::json!({
                        "old_size": old,
                        "tree_size": size,
                        "consistency_proof": proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                    })
                }
                (None, None) => bail!("give --index or --old-size"),
            };
            println!("{json}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The person of a queried entry as the caller's DPO key opens it: rekeyed into the
/// institution's DPO context for a `dpo` (`dpo_person`), the entry's own audit-context
/// ciphertext for a `network_dpo`.
fn dpo_person<'a>(item: &'a cii_proto::audit::Entry, entry: &'a cii_audit::Entry) -> &'a [u8] {
    if item.dpo_person.is_empty() {
        &entry.audit_pseudonym
    } else {
        &item.dpo_person
    }
}

/// Every person a queried entry concerns, as the caller's DPO key opens them: the one person
/// ([`dpo_person`]), and each person of a list entry.
fn dpo_persons<'a>(item: &'a cii_proto::audit::Entry, entry: &'a cii_audit::Entry) -> Vec<&'a [u8]> {
    let list: Vec<&[u8]> = if item.dpo_list_persons.is_empty() {
        entry.list_audit_pseudonyms.iter().map(Vec::as_slice).collect()
    } else {
        item.dpo_list_persons.iter().map(Vec::as_slice).collect()
    };
    std::iter::once(dpo_person(item, entry))
        .filter(|p| !p.is_empty())
        .chain(list)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list entry concerns each of its persons: a DPO's query and subject report look at all
    /// of them (rekeyed by the gateway for a `dpo`, the entry's own for a `network_dpo`).
    #[test]
    fn every_person_of_a_list_entry_is_looked_at() {
        let entry = cii_audit::Entry {
            list_audit_pseudonyms: vec![vec![1; 64], vec![2; 64]],
            ..cii_audit::Entry::default()
        };
        let network_dpo = cii_proto::audit::Entry::default();
        assert_eq!(dpo_persons(&network_dpo, &entry), [&[1u8; 64][..], &[2u8; 64][..]]);
        let dpo = cii_proto::audit::Entry {
            dpo_list_persons: vec![vec![3; 64], vec![4; 64]],
            ..cii_proto::audit::Entry::default()
        };
        assert_eq!(dpo_persons(&dpo, &entry), [&[3u8; 64][..], &[4u8; 64][..]]);
        let single = cii_audit::Entry {
            audit_pseudonym: vec![5; 64],
            ..cii_audit::Entry::default()
        };
        assert_eq!(dpo_persons(&network_dpo, &single), [&[5u8; 64][..]]);
    }
}
