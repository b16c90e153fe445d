//! `cii audit retention`: an operator applies the retention limit through
//! their institution's node; the gateway logs the run, then shreds the entry
//! bodies of the months past the limit (their leaf hashes stay, so the log
//! still verifies) and forgets old operational records.

use std::process::ExitCode;

use clap::Args;

use crate::node_api::{NodeApiArgs, authorized, refused};

/// `cii audit retention`.
#[derive(Debug, Args)]
#[command(
    after_help = "What it does: the gateway's `[audit] retention_days` (at least 365, nLPD ordinance \
art. 4 al. 5) sets the limit. Every whole month that ended more than that many days ago has its \
body key destroyed: its entries can no longer be read by anyone, while their hashes keep every \
checkpoint and proof verifiable (`cii audit verify` counts them as expired). The run is itself an \
audit entry, written before anything is destroyed. Run it daily (e.g. a systemd timer); a run with \
nothing to do is harmless.\n\n\
Exit 0: done (or nothing had expired). Exit 2: refused (the code says why; e.g. ROLE_REQUIRED).\n\n\
Example:\n  cii audit retention --node https://127.0.0.1:7100 --ca pki/ca.pem --token-file operator.token --dry-run"
)]
pub struct RetentionArgs {
    /// The node and the operator's token (role `operator`).
    #[command(flatten)]
    pub node: NodeApiArgs,
    /// Show (and log) what would be destroyed; destroy nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[expect(clippy::print_stdout, reason = "the command's output")]
pub async fn run(args: RetentionArgs) -> anyhow::Result<ExitCode> {
    let (mut client, token) = args.node.connect()?;
    let request = cii_proto::audit::ApplyRetentionRequest { dry_run: args.dry_run };
    let answer = match client.apply_audit_retention(authorized(&token, request)?).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return Ok(refused(&status)),
    };
    let cutoff = answer
        .cutoff
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .map_or_else(|| "?".to_owned(), |t| t.date().to_string());
    let verb = if answer.dry_run { "would destroy" } else { "destroyed" };
    println!("retention: {} days, cutoff {cutoff}", answer.retention_days);
    if answer.destroyed.is_empty() {
        println!("no month has passed the limit");
    }
    for period in &answer.destroyed {
        println!("{verb}: {} ({} entries)", period.period, period.entries);
    }
    let forget = if answer.dry_run { "would forget" } else { "forgot" };
    println!(
        "operational store: {forget} {} transfer records and {} fulfilled obligations",
        answer.transfers_forgotten, answer.obligations_forgotten
    );
    println!("logged as entry {}", answer.run_index);
    Ok(ExitCode::SUCCESS)
}
