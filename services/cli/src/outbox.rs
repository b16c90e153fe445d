//! `cii outbox …`: the network operator's dead letters, through the operator's node
//! (role `operator`; each retry or drop is logged at the gateway before it happens).

use std::process::ExitCode;

use cii_proto::gateway::{ListDeadLettersRequest, ResolveDeadLetterRequest, resolve_dead_letter_request::Action};
use clap::{Args, Subcommand};

use crate::node_api::{NodeApiArgs, authorized, refused};

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List the dead letters: deliveries a recipient refused for good (malformed, too large,
    /// sealed wrong) or could not take for `store.delivery_give_up_days`.
    #[command(
        after_help = "Example:\n  cii outbox dead-letters --node https://127.0.0.1:7100 --ca pki/ca.pem --token-file operator.token"
    )]
    DeadLetters(ListArgs),
    /// Put a dead letter back in the outbox, behind its pair's waiting deliveries (once the
    /// recipient fixed its side). Logged as DEAD_LETTER_RESOLVED.
    Retry(ResolveArgs),
    /// Remove a dead letter for good (the sender's transfer stays DEAD_LETTERED). Logged.
    Drop(ResolveArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The node and the operator's token (role `operator`).
    #[command(flatten)]
    node: NodeApiArgs,
    /// At most this many, oldest first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The node and the operator's token (role `operator`).
    #[command(flatten)]
    node: NodeApiArgs,
    /// The sender's registry id.
    #[arg(long)]
    sender: String,
    /// The sender's transfer id.
    #[arg(long)]
    transfer_id: String,
}

#[expect(clippy::print_stdout, reason = "the commands' output")]
pub async fn run(command: OutboxCommand) -> anyhow::Result<ExitCode> {
    let (args, action) = match command {
        OutboxCommand::DeadLetters(args) => {
            let (mut client, token) = args.node.connect()?;
            let request = ListDeadLettersRequest { limit: args.limit };
            let answer = match client.list_dead_letters(authorized(&token, request)?).await {
                Ok(answer) => answer.into_inner(),
                Err(status) => return Ok(refused(&status)),
            };
            println!("sender  transfer_id  recipient  code  attempts  bytes  dead_at");
            for d in &answer.dead_letters {
                let at = d.dead_at.map_or(0, |t| t.seconds);
                println!(
                    "{}  {}  {}  {}  {}  {}  {at}",
                    d.sender, d.transfer_id, d.recipient, d.error_code, d.attempts, d.size_bytes
                );
            }
            println!("{} dead letters", answer.dead_letters.len());
            return Ok(ExitCode::SUCCESS);
        }
        OutboxCommand::Retry(args) => (args, Action::Retry),
        OutboxCommand::Drop(args) => (args, Action::Drop),
    };
    let (mut client, token) = args.node.connect()?;
    let request = ResolveDeadLetterRequest {
        sender: args.sender,
        transfer_id: args.transfer_id,
        action: action as i32,
    };
    match client.resolve_dead_letter(authorized(&token, request)?).await {
        Ok(answer) => {
            println!("done; logged as entry {}", answer.into_inner().audit_index);
            Ok(ExitCode::SUCCESS)
        }
        Err(status) => Ok(refused(&status)),
    }
}
