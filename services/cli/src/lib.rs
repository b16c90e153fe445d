//! The `cii` command as a library: argument parsing and every subcommand.
//! `src/main.rs` only calls [`run`]. Running a process (`cii gateway`, `cii
//! node`, `cii consent`) parses its config, initialises tracing and calls the
//! service crate's `run`; the tools (`demo`, `audit`, `policy`, `bench`, …)
//! live here.
//!
//! # Layout
//! - `audit/`: `cii audit …` — verification from the store, and the DPO's commands through the node
//!   (query and export, subject-access report, usage report, retention).
//! - `bench/`: `cii bench` (one file per section) and `cii soak`.
//! - `demo/` and `local_network`: the Valais network on this machine, and the story played through it.
//! - `policy`: the jurists' tools. `pki`, `keys`: the development PKI and the key ceremony.
//! - `enrol`, `witness`, `node_api`: batch enrolment, the node's witness, the flags of node clients.
//! - `outbox`: the network operator's dead letters (list, retry, drop).

mod audit;
mod bench;
mod demo;
mod enrol;
mod keys;
mod local_network;
mod node_api;
mod outbox;
mod pki;
mod policy;
mod policy_replay;
mod transcryptor;
mod witness;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a configuration problem (nothing was started).
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "cii",
    version,
    about = "CII Exchange: lawful data exchange between Swiss social-security institutions",
    long_about = "CII Exchange connects the institutions of interinstitutional collaboration (ORP/RAV, AI offices, \
social services, supplementary benefits, vocational training, migration offices, SUVA). Each institution runs a \
node; a gateway between them authenticates every party by certificate and every user by JWT.",
    after_help = "Getting started on one machine:\n  \
cii pki init --dir dev/pki --institution ORP-VS --institution AI-VS\n  \
cii gateway --config deploy/dev/gateway.toml\n  \
cii node --config deploy/dev/orp-vs.toml\n\nSee README.md and docs/ for the guides."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play the Valais CII network on this machine: six institutions, the gateway, a story, the verified log.
    Demo(demo::DemoArgs),
    /// Run the gateway (the exchange layer between all nodes).
    #[command(
        after_help = "The config file names the listen address, the registry file and the gateway's TLS files; \
see deploy/config/gateway.toml. Relative paths resolve from the config file's folder.\n\
Stops gracefully on SIGTERM or Ctrl-C. Exit code 2: the configuration is unusable (nothing started).\n\
On PostgreSQL, several gateways may run on the same databases: all serve, one at a time \
sequences the audit log (its health names it: cii.audit.v1.Sequencer). `--migrate` migrates the \
stores and exits: run it with the owner's URLs before starting the replicas with the service role's."
    )]
    Gateway {
        /// The gateway's config file (TOML).
        #[arg(long, env = "CII_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Migrate the audit store and the operational store to this release, then exit.
        #[arg(long)]
        migrate: bool,
    },
    /// Run an institution's node (its IT systems talk to it; it talks to the gateway).
    #[command(
        after_help = "The config file names the institution id, the registry, the gateway URL, the two \
listen addresses (API for the institution's IT, inbound API for the gateway) and the TLS files; see \
deploy/config/node-orp-vs.toml.\nStops gracefully on SIGTERM or Ctrl-C. Exit code 2: the configuration is unusable."
    )]
    Node {
        /// The node's config file (TOML).
        #[arg(long, env = "CII_NODE_CONFIG")]
        config: PathBuf,
    },
    /// Run the consent registry and reference directory (reached by the gateway only).
    #[command(
        after_help = "The config file names the listen address, the registry file, the registry's TLS files (certificate urn:cii:consent), its session keys from `cii keys init` and its database (sqlite:PATH or postgres://…); see deploy/config/consent.toml.
Stops gracefully on SIGTERM or Ctrl-C. Exit code 2: the configuration is unusable (nothing started)."
    )]
    Consent {
        /// The registry's config file (TOML).
        #[arg(long, env = "CII_CONSENT_CONFIG")]
        config: PathBuf,
    },
    /// The second transcryptor of a network of two: run it, its log's vkey, compare its log with the gateway's.
    #[command(subcommand)]
    Transcryptor(transcryptor::TranscryptorCommand),
    /// Enrol an institution's caseload from a CSV file through its node, with a progress bar.
    Enrol(enrol::EnrolArgs),
    /// The key ceremony of the pseudonym scheme (offline).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Development PKI: a CA, certificates, JWT keys and test tokens.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// The audit log: verify it, print its checkpoint and verifier key, prove entries.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Jurists' tools: lint, explain, test scenarios, legal matrix, diff of rulebooks.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Throughput against a baseline measured in the same run (pseudonyms, policy).
    Bench(bench::BenchArgs),
    /// The mixed load (permitted, refused, malformed) for N minutes, then the books balanced and the log verified.
    Soak(bench::soak::SoakArgs),
    /// Witnesses of the audit log: run an independent one, print a cosigning vkey, status, clearing the alarm.
    #[command(subcommand)]
    Witness(witness::WitnessCommand),
    /// The network operator's dead letters: list them, retry or drop one (each logged).
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
}

/// Parses the command line and runs the command; the process's exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Gateway { config, migrate } => {
            let config = match cii_gateway::GatewayConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            cii_kit::telemetry::init(&config.file.log);
            serve(async move {
                if migrate {
                    cii_gateway::migrate(&config).await?;
                    return Ok(());
                }
                let grpc = cii_gateway::GrpcListener::Address(config.file.listen);
                let metrics = bind_optional(config.file.metrics_listen).await?;
                let listeners = cii_gateway::Listeners { grpc, metrics };
                cii_gateway::run(config, listeners, cii_kit::shutdown::signal()).await?;
                Ok(())
            })
        }
        Command::Node { config } => {
            let config = match cii_node::NodeConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            cii_kit::telemetry::init(&config.file.log);
            serve(async move {
                let api = tokio::net::TcpListener::bind(config.file.api_listen).await?;
                let inbound = tokio::net::TcpListener::bind(config.file.inbound_listen).await?;
                let metrics = bind_optional(config.file.metrics_listen).await?;
                let listeners = cii_node::Listeners { api, inbound, metrics };
                cii_node::run(config, listeners, cii_kit::shutdown::signal()).await?;
                Ok(())
            })
        }
        Command::Consent { config } => {
            let config = match cii_consent::ConsentConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            cii_kit::telemetry::init(&config.file.log);
            serve(async move {
                let grpc = tokio::net::TcpListener::bind(config.file.listen).await?;
                let metrics = bind_optional(config.file.metrics_listen).await?;
                let listeners = cii_consent::Listeners { grpc, metrics };
                cii_consent::run(config, listeners, cii_kit::shutdown::signal()).await?;
                Ok(())
            })
        }
        Command::Transcryptor(transcryptor::TranscryptorCommand::Serve { config }) => {
            let config = match cii_transcryptor::TranscryptorConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            cii_kit::telemetry::init(&config.file.log);
            serve(async move {
                let listener = tokio::net::TcpListener::bind(config.file.listen).await?;
                cii_transcryptor::run(config, listener, cii_kit::shutdown::signal()).await?;
                Ok(())
            })
        }
        Command::Transcryptor(command) => run_tool(transcryptor::run(command)),
        Command::Demo(args) => run_tool(demo::run(args)),
        Command::Enrol(args) => run_tool(enrol::run(args)),
        Command::Audit(command) => run_tool(audit::run(command)),
        Command::Witness(witness::WitnessCommand::Serve { config }) => {
            let config = match cii_node::independent::WitnessConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            cii_kit::telemetry::init(&config.file.log);
            serve(async move {
                let listener = tokio::net::TcpListener::bind(config.file.listen).await?;
                let metrics = bind_optional(config.file.metrics_listen).await?;
                cii_node::independent::run(config, listener, metrics, cii_kit::shutdown::signal()).await?;
                Ok(())
            })
        }
        Command::Witness(command) => run_tool(witness::run(command)),
        Command::Outbox(command) => run_tool(outbox::run(command)),
        Command::Soak(args) => match bench::soak::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench(args) => match bench::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Policy(command) => match policy::run(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Keys(command) => match keys::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Pki(command) => match pki::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("configuration error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// Binds the optional `/metrics` address.
async fn bind_optional(addr: Option<std::net::SocketAddr>) -> std::io::Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(tokio::net::TcpListener::bind(addr).await?)),
        None => Ok(None),
    }
}

/// Runs a tool command that returns its own exit code; an error is a usage or configuration problem.
fn run_tool(body: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(body) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn serve(body: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let body = async {
        cii_kit::shutdown::survive_file_size_limit();
        body.await
    };
    match runtime.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped with an error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
