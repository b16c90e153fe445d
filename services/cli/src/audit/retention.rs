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

/// `cii audit shred`.
#[derive(Debug, Args)]
#[command(
    after_help = "For the exception only: an entry of an ended month holds content that must not be \
kept (e.g. a diagnosis typed into a free-text field). Two people decide: a user of role operator or \
network_dpo asks, naming the month, the entry and the reason (logged as SHREDDING_REQUESTED, whose \
index is printed); a user of the other role approves with that index (logged as \
SHREDDING_APPROVED), and only then is the whole month's key destroyed: every entry of that month \
becomes unreadable, the tree stays verifiable, and `cii audit verify` accepts the month only with \
both entries. Each token must carry exactly one of the two roles.\n\n\
Exit 0: asked or shredded. Exit 2: refused (SHRED_INVALID names the field; \
SHRED_APPROVAL_INVALID: not another user of the other role, or not a request of this month).\n\n\
Examples:\n  cii audit shred --node https://127.0.0.1:7100 --ca pki/ca.pem --token-file ops.token \
--period 2026-11 --entry 48211 --reason \"diagnosis in a free-text field, ticket DPO-7\"\n  \
cii audit shred --node https://127.0.0.1:7100 --ca pki/ca.pem --token-file dpo.token --period 2026-11 --approve 48230"
)]
pub struct ShredArgs {
    /// The node and the user's token (role `operator` or `network_dpo`, exactly one).
    #[command(flatten)]
    pub node: NodeApiArgs,
    /// The month, YYYY-MM (ended).
    #[arg(long)]
    pub period: String,
    /// Ask: the index of the entry whose content must not be kept.
    #[arg(long, conflicts_with = "approve", requires = "reason")]
    pub entry: Option<u64>,
    /// Ask: why (1–500 characters, no AVS number).
    #[arg(long, conflicts_with = "approve")]
    pub reason: Option<String>,
    /// Approve: the index of the SHREDDING_REQUESTED entry (as the other role).
    #[arg(long, required_unless_present = "entry")]
    pub approve: Option<u64>,
}

#[expect(clippy::print_stdout, reason = "the command's output")]
pub async fn shred(args: ShredArgs) -> anyhow::Result<ExitCode> {
    let (mut client, token) = args.node.connect()?;
    let request = cii_proto::audit::ShredPeriodRequest {
        period: args.period.clone(),
        approve: args.approve.unwrap_or(0),
        entry: args.entry.unwrap_or(0),
        reason: args.reason.unwrap_or_default(),
    };
    let answer = match client.shred_audit_period(authorized(&token, request)?).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return Ok(refused(&status)),
    };
    if answer.destroyed {
        println!("{}: shredded (approval logged as entry {})", args.period, answer.index);
    } else {
        println!(
            "{}: early shredding asked for, logged as entry {}; a user of the other role approves with --approve {}",
            args.period, answer.index, answer.index
        );
    }
    Ok(ExitCode::SUCCESS)
}
