//! `cii witness …`: the witnesses of the gateway's audit log — the independent
//! witness process, a cosigning key's vkey, what a node or witness has
//! witnessed, and clearing the alarm after an investigation (process stopped).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Run an independent witness of the audit log (a party other than the gateway's operator).
    #[command(
        after_help = "The witness cosigns each new checkpoint the gateway offers only if it extends the \
newest one it cosigned before (C2SP tlog-witness), keeps that checkpoint, and raises its alarm — keeping \
both checkpoints as evidence — when offered a tree that does not. Nodes accept a receipt only on a \
checkpoint cosigned by more than half of the registry's witnesses, so at least one witness should be \
run by a party independent of the gateway's operator (e.g. the data-protection authority).\n\n\
The config names the witness's name (the registry's [[witness]] entry and its certificate \
urn:cii:witness:<name>), the listen address, the registry, TLS files, its database, the log's verifier key \
and its cosigning key; see deploy/config/witness.toml. Stops gracefully on SIGTERM or Ctrl-C.\n\n\
Example:\n  cii witness serve --config /etc/cii/witness.toml"
    )]
    Serve {
        /// The witness's config file (TOML).
        #[arg(long, env = "CII_WITNESS_CONFIG")]
        config: PathBuf,
    },
    /// Print the C2SP vkey of a cosigning key, as the registry lists it.
    #[command(
        after_help = "For a node, the vkey goes into its registry entry as `witness_vkey`; for an \
independent witness, into its [[witness]] entry as `vkey` (the name must be the witness's name).\n\n\
Example:\n  cii witness vkey --key dev/pki/witnesses/witness.edoeb.example/cosigning.key --name witness.edoeb.example"
    )]
    Vkey {
        /// The cosigning key (Ed25519, PKCS#8 PEM; `cii pki init` writes cosigning.key).
        #[arg(long)]
        key: PathBuf,
        /// The key's name: the witness's name, or for a node e.g. `orp-vs.node.cii.example`.
        #[arg(long)]
        name: String,
    },
    /// The newest checkpoint a node or witness accepted, whether it raised the alarm, and the evidence.
    Status {
        /// The node's or the independent witness's config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Forget the witnessed checkpoint and lower the alarm; the next receipt becomes the new
    /// anchor. The evidence (both conflicting checkpoints) is kept, and the clearing recorded.
    #[command(
        after_help = "Only after the operator has investigated the rewrite (the alarm means the gateway \
showed a log that does not extend what this node saw before) and with the node stopped. \
`cii witness status` shows the evidence, which clearing never deletes.\n\n\
Example:\n  systemctl stop cii-node && cii witness clear-alarm --config /etc/cii/node.toml \
--reason \"ticket SEC-2026-114: gateway restored from backup, DPOs informed\" && systemctl start cii-node"
    )]
    ClearAlarm {
        /// The node's or the independent witness's config file.
        #[arg(long)]
        config: PathBuf,
        /// Why the alarm may be cleared (the investigation's reference), kept with the clearing.
        #[arg(long)]
        reason: String,
    },
}

/// Opens the store of a node or of an independent witness, whichever `config` describes.
async fn witness_store(config: &std::path::Path) -> anyhow::Result<cii_node::store::Store> {
    let (database, key) = match cii_node::NodeConfig::load(config) {
        Ok(node) => (node.database.clone(), node.store_key.0),
        Err(node_error) => match cii_node::independent::WitnessConfig::load(config) {
            // The witness tables are not sealed: any key opens them.
            Ok(witness) => (witness.database, [0; 32]),
            Err(_) => return Err(node_error.into()),
        },
    };
    cii_node::store::Store::open(&database, &key)
        .await
        .context("opening the witness's store")
}

#[expect(clippy::print_stdout, reason = "the commands' output")]
pub async fn run(command: WitnessCommand) -> anyhow::Result<ExitCode> {
    let config = match &command {
        WitnessCommand::Serve { .. } => anyhow::bail!("`cii witness serve` runs as a service (see lib.rs)"),
        WitnessCommand::Vkey { key, name } => {
            let pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
            let cosigner =
                cii_audit::cosignature::Cosigner::from_pem(name, &pem).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", cosigner.verifier().vkey());
            return Ok(ExitCode::SUCCESS);
        }
        WitnessCommand::Status { config } | WitnessCommand::ClearAlarm { config, .. } => config.clone(),
    };
    let store = witness_store(&config).await?;
    match command {
        WitnessCommand::Serve { .. } | WitnessCommand::Vkey { .. } => {}
        WitnessCommand::Status { .. } => match store.witness().await? {
            Some((note, alarm)) => {
                let size = note.lines().nth(1).unwrap_or("?");
                println!(
                    "witnessed checkpoint of size {size}; alarm: {}",
                    if alarm { "RAISED" } else { "no" }
                );
            }
            None => println!("no checkpoint witnessed yet; alarm: no"),
        },
        WitnessCommand::ClearAlarm { reason, .. } if reason.trim().is_empty() => {
            anyhow::bail!("--reason: say why the alarm may be cleared (the investigation's reference)")
        }
        WitnessCommand::ClearAlarm { reason, .. } => match store
            .clear_witness(reason.trim(), cii_types::time::micros(time::OffsetDateTime::now_utc()))
            .await?
        {
            Some((size, alarm)) => println!(
                "cleared: checkpoint of size {size} forgotten{}; the next receipt becomes the anchor",
                if alarm { ", alarm lowered" } else { "" }
            ),
            None => println!("nothing to clear"),
        },
    }
    for (at, held, conflicting, problem) in store.witness_evidence().await? {
        println!("evidence (seen at {at} µs): {problem}\n--- held ---\n{held}--- conflicting ---\n{conflicting}");
    }
    for (at, size, reason) in store.witness_clearances().await? {
        println!("alarm cleared at {at} µs (checkpoint of size {size} forgotten): {reason}");
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
