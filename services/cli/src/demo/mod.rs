//! `cii demo`: the Valais CII network on one machine, and a story played
//! through it. Everything is real: a development PKI, the key ceremony, the
//! consent registry, the gateway and six nodes as processes talking mutual TLS
//! on loopback, the federal rulebook with the canton's extension, SQLite
//! stores. The demo prints each step's decision, verifies the audit log and
//! the institutions' witnesses, and writes the legal matrix and a subject
//! report. It exits 1 if anything does not behave as the story says.

mod story;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cii_types::Role;
use clap::Args;

use crate::local_network::{self as network, Network, Spec, node_dir};
use crate::node_api::{NodeApiArgs, authorized};

/// The canton's rulebook extension, shipped in deploy/ and used as it is.
const VALAIS_RULEBOOK: &str = include_str!("../../../../deploy/rulebook/vs/00-vs.toml");

/// The six signatories of the 2012 CII-VS convention: (id, registry type, name).
const INSTITUTIONS: [(&str, &str, &str); 6] = [
    (
        "ORP-VS",
        "AC_ORP",
        "Service de l'industrie, du commerce et du travail — ORP",
    ),
    ("AS-VS", "AS", "Service de l'action sociale"),
    ("FP-VS", "FP", "Service de la formation professionnelle"),
    ("AI-VS", "AI", "Office cantonal AI du Valais"),
    ("ADDICTION-VS", "OTHER", "Addiction Valais"),
    ("SUVA", "SUVA", "Suva, agence de Sion"),
];
use story::{Desk, Row};

/// `cii demo`.
#[derive(Debug, Args)]
#[command(
    after_help = "What it shows: an ORP early-detection report to the AI office; a fin-de-droits handover to \
the social service under the person's written consent; an LPGA art. 32 request refused without its written \
justification, then answered with it; a CII case handover under a consent that the person then revokes, and the \
next handover refused. Then the audit log is verified (tree, signatures, every node's witnessed checkpoint).\n\n\
The folder keeps everything: gateway.toml (so `cii audit verify --config DIR/gateway.toml` and the other audit \
commands work on it), gateway/ (its databases, keys, log), consent/, nodes/<ID>/, dpo/ (the DPO context key, the \
subject report). Persons are synthetic; the output names them by record id, never by AVS number.\n\n\
Exit 0: every step behaved as the story says. Exit 1: a step, the log or a witness did not.\n\n\
Examples:\n  cargo run --release -p cii -- demo\n  cii demo --dir /tmp/cii-vs --keep-running"
)]
pub struct DemoArgs {
    /// Create DIR (new or empty) and leave everything there; default: a new temporary folder, also kept.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the network running after the story and print commands to try (Ctrl-C stops it).
    #[arg(long)]
    keep_running: bool,
    /// 2: the key ceremony in shares and a second transcryptor, run by the independent witness's
    /// party, through which every pseudonym operation passes (so the gateway alone can recover
    /// no key); 1: the gateway is the only transcryptor.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
    transcryptors: u32,
}

fn cell_list(items: &[String]) -> String {
    if items.is_empty() {
        "—".to_owned()
    } else {
        items.join(", ")
    }
}

/// The table of steps, one line each, columns separated by ` | `.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "#",
        "step",
        "from → to",
        "exchange",
        "decision",
        "released",
        "withheld",
        "basis or reason",
        "id",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.step.to_string(),
                r.what.to_owned(),
                format!("{} → {}", r.from, r.to),
                r.exchange.to_owned(),
                if r.as_expected() {
                    r.outcome.clone()
                } else {
                    format!("{} (expected {})", r.outcome, r.expected.word())
                },
                cell_list(&r.released),
                cell_list(&r.withheld),
                cell_list(&r.citations),
                r.id.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count()))))
            .collect();
        format!("{}\n", padded.join(" | ").trim_end())
    };
    let mut out = line(&header.map(str::to_owned));
    out.push_str(&format!("{}\n", widths.map(|w| "-".repeat(w)).join("-|-")));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// Runs another `cii` command as a child process; its stdout.
fn cii(args: &[&std::ffi::OsStr]) -> anyhow::Result<Vec<u8>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .output()
        .context("running cii")?;
    if !out.status.success() {
        anyhow::bail!("cii {:?} failed: {}", args, String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// Verifies the log from its store, and asks every node what it witnessed.
async fn check_log(network: &Network, desk: &Desk) -> anyhow::Result<(bool, String)> {
    let dir = &network.dir;
    let store = cii_audit::Store::open_read_only(&format!("sqlite:{}", dir.join("gateway/audit.db").display())).await?;
    let vkey = std::fs::read_to_string(dir.join("gateway/audit.vkey"))?;
    let verifier = cii_audit::note::Verifier::from_vkey(vkey.trim())?;
    let result = cii_audit::verify::verify(&store, &verifier, network::ORIGIN, |_, _| {}).await;
    store.close().await;
    let mut out = String::new();
    let mut ok = match result {
        Ok(report) => {
            let _ = writeln!(
                out,
                "audit log: ok — {} entries, {} signed checkpoints, tree and signatures verified",
                report.entries, report.checkpoints
            );
            true
        }
        Err(e) => {
            let _ = writeln!(out, "audit log: FAILED — {e}");
            false
        }
    };
    let mut witnessed = Vec::new();
    for (id, client, token) in &desk.clients {
        let status = client
            .clone()
            .status(authorized(token, cii_proto::node::StatusRequest {})?)
            .await
            .with_context(|| format!("status of {id}"))?
            .into_inner();
        if status.audit_alarm {
            ok = false;
            witnessed.push(format!("{id}: ALARM"));
        } else {
            witnessed.push(format!("{id} {}", status.audit_checkpoint_size));
        }
    }
    let _ = writeln!(
        out,
        "witnesses: every node checked each receipt it received against a signed checkpoint consistent with the \
         ones before; newest size witnessed: {}",
        witnessed.join(", ")
    );
    Ok((ok, out))
}

/// `cii demo`. SIGTERM, like Ctrl-C, stops the whole network at any moment: the
/// handlers are installed before the first process starts, and dropping the story's
/// future drops the [`Network`], which stops its processes.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut interrupt) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    let mut stopped = stop.clone();
    tokio::select! {
        // First: once the story waits for the signal (--keep-running), it ends as it would on its own.
        biased;
        result = play(args, stop) => result,
        _ = stopped.wait_for(|s| *s) => {
            eprintln!("\nstopped by a signal; every process of the network was stopped");
            Ok(ExitCode::from(130))
        }
    }
}

#[expect(clippy::print_stdout, reason = "the demo's output")]
async fn play(args: DemoArgs, mut stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<ExitCode> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new().prefix("cii-demo-").tempdir()?.keep(),
    };
    println!(
        "CII Exchange — the Valais CII network on this machine, in {}",
        dir.display()
    );
    println!(
        "starting the consent registry, the gateway{} and {} nodes (real processes, mutual TLS on loopback)…",
        if args.transcryptors == 2 {
            ", the second transcryptor (the independent witness's)"
        } else {
            ""
        },
        INSTITUTIONS.len()
    );
    let spec = Spec {
        institutions: &INSTITUTIONS,
        rulebook: Some(VALAIS_RULEBOOK),
        log_level: "info",
        limits: None,
        gateways: crate::local_network::Gateways::ONE,
        transcryptors: args.transcryptors,
    };
    let network = tokio::task::block_in_place(|| Network::start(&dir, &spec))?;
    let dir = network.dir.clone();
    let ca = dir.join("ca.pem");
    let mut desk = Desk { clients: Vec::new() };
    for (id, _, _) in INSTITUTIONS {
        let token_file = network.token_file(
            id,
            "demo.caseworker",
            &[Role::Caseworker],
            &node_dir(&dir, id).join("caseworker.token"),
        )?;
        let api = NodeApiArgs {
            node: network.api(id)?,
            ca: ca.clone(),
            token_file,
        };
        let (client, token) = api.connect()?;
        desk.clients.push((id, client, token));
    }
    println!(
        "network up: gateway on 127.0.0.1:{}; nodes {}",
        network.gateway_port,
        INSTITUTIONS.map(|i| i.0).join(", ")
    );
    story::enrol(&desk).await?;
    println!(
        "enrolled {} synthetic persons as {} records at 3 institutions (their AVS numbers stay at the nodes)\n",
        story::PERSONS.len(),
        story::RECORDS.len()
    );
    let rows = story::play(&desk).await?;
    print!("{}", table(&rows));
    let story_ok = rows.iter().all(Row::as_expected);
    println!();
    let (log_ok, log_report) = check_log(&network, &desk).await?;
    print!("{log_report}");

    // The jurists' matrix and the DPO's subject report, as files.
    let matrix = cii(&[
        "policy".as_ref(),
        "matrix".as_ref(),
        "--rulebook".as_ref(),
        dir.join("rulebook").as_os_str(),
        "--format".as_ref(),
        "html".as_ref(),
    ])?;
    std::fs::write(dir.join("matrix.html"), matrix)?;
    let dpo_dir = dir.join("dpo");
    let dpo_token = network.token_file("ORP-VS", "demo.dpo", &[Role::Dpo], &dpo_dir.join("dpo.token"))?;
    let (record, node) = (story::RECORDS[0].2, network.api("ORP-VS")?);
    let report = cii(&[
        "audit".as_ref(),
        "subject-report".as_ref(),
        "--node".as_ref(),
        node.as_ref(),
        "--ca".as_ref(),
        ca.as_os_str(),
        "--token-file".as_ref(),
        dpo_token.as_os_str(),
        "--record".as_ref(),
        record.as_ref(),
        "--dpo-keys".as_ref(),
        // ORP-VS's own DPO key: the gateway rekeys the persons of its queries into it.
        dpo_dir.join("ORP-VS/session-keys.json").as_os_str(),
        "--global-public".as_ref(),
        dir.join("global-public.json").as_os_str(),
        "--lang".as_ref(),
        "fr".as_ref(),
        "--out".as_ref(),
        dpo_dir.as_os_str(),
    ])?;
    let report_text = dpo_dir.join(format!("subject-report-{}-fr.txt", record.to_lowercase()));
    std::fs::write(&report_text, report)?;
    println!("\nwhere things are:");
    println!(
        "  the audit log        {}  (cii audit verify --config {})",
        dir.join("gateway/audit.db").display(),
        dir.join("gateway.toml").display()
    );
    println!("  the legal matrix     {}", dir.join("matrix.html").display());
    println!(
        "  a subject report     {} (and .html), ORP-VS record {record}",
        report_text.display()
    );
    println!(
        "  logs                 {}/gateway/gateway.log, consent/consent.log, nodes/<ID>/node.log",
        dir.display()
    );

    if args.keep_running {
        print!("{}", try_it(&network, &dir)?);
        let _ = stop.wait_for(|s| *s).await;
    }
    drop(network);
    if story_ok && log_ok {
        println!("\nevery step behaved as the story says.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nFAILED: a step, the log or a witness did not behave as the story says (see above).");
        Ok(ExitCode::FAILURE)
    }
}

fn try_it(network: &Network, dir: &Path) -> anyhow::Result<String> {
    let orp = network.api("ORP-VS")?.replace("https://", "");
    let token = dir.join("nodes/ORP-VS/caseworker.token");
    let ca = dir.join("ca.pem");
    Ok(format!(
        "\nThe network keeps running; try (grpcurl: https://github.com/fullstorydev/grpcurl):\n  \
         grpcurl -cacert {ca} -H \"authorization: Bearer $(cat {token})\" {orp} cii.node.v1.Node/Status\n  \
         grpcurl -cacert {ca} -H \"authorization: Bearer $(cat {token})\" -d '{{\"limit\": 10}}' {orp} cii.node.v1.Node/ListInbox\n  \
         cii audit verify --config {gateway}\n\
         Press Ctrl-C to stop (SIGTERM stops it too).\n",
        ca = ca.display(),
        token = token.display(),
        gateway = dir.join("gateway.toml").display(),
    ))
}
