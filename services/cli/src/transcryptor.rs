//! `cii transcryptor …`: the second transcryptor of a network of two — the process, its own
//! log's verifier key, and the comparison of its log with the gateway's audit log.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cii_audit::Store;
use cii_audit::note::Verifier;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TranscryptorCommand {
    /// Run the second transcryptor (an independent witness's party, not the gateway's operator).
    #[command(
        after_help = "On a network whose key ceremony was made in shares (`cii keys init --transcryptors 2`), \
every pseudonym operation of the gateway — enrolment, a transfer's persons, the identity and the seal key \
of a payload, a DPO's look-up — passes through this process after the gateway's own hop: it applies its \
half of the secrets. Neither half alone links persons, opens a sealed payload or recovers the global key. \
The gateway names it in [pseudonym.second_transcryptor]; when it does not answer, exchanges stop with \
TRANSCRYPTOR_UNAVAILABLE (retryable) and nothing is written. Every request it serves is first an entry of \
its own tamper-evident log ([transcriptions]: institutions, reference, time, purpose, no pseudonym).\n\n\
The config names the party's witness name (the registry's [[witness]] entry and its certificate \
urn:cii:witness:<name>), the listen address, the registry, TLS files, its secrets file \
(transcryptor/secrets.json of the ceremony) and its log; see deploy/config/transcryptor.toml. Stops \
gracefully on SIGTERM or Ctrl-C. Exit code 2: the configuration is unusable (nothing started).\n\n\
Example:\n  cii transcryptor serve --config /etc/cii/transcryptor.toml"
    )]
    Serve {
        /// The transcryptor's config file (TOML).
        #[arg(long, env = "CII_TRANSCRYPTOR_CONFIG")]
        config: PathBuf,
    },
    /// Print the verifier key of the transcryptor's own log (for `cii audit verify --store … --vkey …`).
    Vkey {
        /// The transcryptor's config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Compare the transcryptor's log with the gateway's audit log; every difference listed.
    #[command(
        after_help = "Both logs are verified first (tree, checkpoints, signatures). Then every request the \
transcryptor served must match an event the gateway logged (an enrolment, a transfer by its id and \
institutions, a consent change, a DPO's look-up or query), and every such logged event that concerns a \
person must match a request. A transcription the gateway did not log, or a logged event the transcryptor \
never saw, is printed on a line of its own.\n\n\
Exit 0: no difference. Exit 1: a log does not verify. Exit 3: differences (listed).\n\n\
Example:\n  cii transcryptor compare --config /etc/cii/transcryptor.toml \\\n    \
--audit-store postgres://reader@audit.cii.example/cii_audit --audit-vkey \"$(cat /etc/cii/audit.vkey)\""
    )]
    Compare {
        /// The transcryptor's config file (its log's store and key).
        #[arg(long)]
        config: PathBuf,
        /// The gateway's audit store, read-only (sqlite:PATH or postgres://…): a replica or a copy.
        #[arg(long)]
        audit_store: String,
        /// The gateway's audit log verifier key (`cii audit vkey`).
        #[arg(long)]
        audit_vkey: String,
    },
}

/// Runs a tool command (`serve` runs as a service, see lib.rs).
#[expect(clippy::print_stdout, reason = "the command's output")]
pub async fn run(command: TranscryptorCommand) -> anyhow::Result<ExitCode> {
    match command {
        TranscryptorCommand::Serve { .. } => anyhow::bail!("`cii transcryptor serve` runs as a service (see lib.rs)"),
        TranscryptorCommand::Vkey { config } => {
            let config = cii_transcryptor::TranscryptorConfig::load(&config)?;
            println!("{}", config.transcriptions.1.verifier().vkey());
            Ok(ExitCode::SUCCESS)
        }
        TranscryptorCommand::Compare {
            config,
            audit_store,
            audit_vkey,
        } => {
            let config = cii_transcryptor::TranscryptorConfig::load(&config)?;
            let (url, signer) = &config.transcriptions;
            let ours = read_verified(url, &signer.verifier(), "the transcryptor's log").await?;
            let verifier = Verifier::from_vkey(audit_vkey.trim()).context("--audit-vkey")?;
            let theirs = read_verified(&audit_store, &verifier, "the gateway's audit log").await?;
            let differences = cii_transcryptor::compare::compare(&ours, &theirs);
            for d in &differences {
                println!("DIFFERENCE: {d}");
            }
            println!(
                "{} transcriptions, {} audit entries: {} difference(s)",
                ours.len(),
                theirs.len(),
                differences.len()
            );
            Ok(if differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(crate::audit::EXIT_UNDECODABLE)
            })
        }
    }
}

/// Every readable entry of the log at `url`, once the log verified against `verifier`.
async fn read_verified(url: &str, verifier: &Verifier, what: &str) -> anyhow::Result<Vec<cii_audit::Entry>> {
    let store = Store::open_read_only(url)
        .await
        .with_context(|| format!("opening {what}"))?;
    let origin = verifier.name().to_owned();
    let verified = cii_audit::verify::verify(&store, verifier, &origin, |_, _| {}).await;
    if let Err(e) = verified {
        store.close().await;
        anyhow::bail!("{what} does not verify: {e}");
    }
    let mut entries = Vec::new();
    let mut next = 0;
    loop {
        let batch = store.entries(next, 10_000).await?;
        let Some(last) = batch.last().map(|e| e.index) else {
            break;
        };
        for stored in batch {
            if let cii_audit::store::Body::Readable(body) = stored.body
                && let Ok(entry) = cii_audit::entry::decode(&body)
            {
                entries.push(entry);
            }
        }
        next = last + 1;
    }
    store.close().await;
    Ok(entries)
}
