//! `cii witness …`: the node's view of the gateway's audit log — what it has
//! witnessed, and clearing the alarm after an investigation (node stopped).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// The newest checkpoint the node accepted and whether it raised the alarm.
    Status {
        /// The node's config file.
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
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// Why the alarm may be cleared (the investigation's reference), kept with the clearing.
        #[arg(long)]
        reason: String,
    },
}

#[expect(clippy::print_stdout, reason = "the commands' output")]
pub async fn run(command: WitnessCommand) -> anyhow::Result<ExitCode> {
    let (WitnessCommand::Status { config } | WitnessCommand::ClearAlarm { config, .. }) = &command;
    let node = cii_node::NodeConfig::load(config)?;
    let store = cii_node::store::Store::open(&node.database, &node.store_key.0)
        .await
        .context("opening the node's store")?;
    match command {
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
