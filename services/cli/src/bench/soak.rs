//! `cii soak`: the mixed load for N minutes on a network of processes (the
//! consent registry, the gateway, the ORP and AI nodes), then the books are
//! balanced: every permit delivered once, every answered transfer logged once
//! with the decision it was answered, nothing malformed logged, the log
//! verified by `cii audit verify`. Reports throughput, outcomes and errors by
//! code, and the gateway's RSS over time (is memory flat?).
//!
//! The load, per sender: of every six transfers four are permitted (an
//! early-detection report with the person informed beforehand, LAI art. 3b),
//! one is refused (the same report without it) and one is malformed (an id
//! with a space: `TRANSFER_ID_INVALID`, refused before any decision).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cii_proto::gateway as gw;
use cii_proto::node::{self as node_pb, node_client::NodeClient};
use clap::Args;
use tonic::transport::Channel;

use super::pipeline::{
    code_of, connect_and_enrol, memory_mb, outbox_drained, outbox_of, report_payload, two_node_network,
};
use crate::local_network::node_dir;
use crate::node_api::authorized;

#[derive(Debug, Args)]
#[command(
    after_help = "Runs the consent registry, the gateway and two nodes as processes on loopback and sends \
a mixed load from the ORP to the AI office: of every six transfers four are permitted, one refused \
(LAI art. 3b without the person informed) and one malformed (TRANSFER_ID_INVALID). Every minute it \
prints transfers answered and delivered, errors and the gateway's RSS. At the end it waits for the \
outbox to drain and balances the books: every permit delivered exactly once, every answered transfer \
logged once with its decision, nothing malformed logged, `cii audit verify` ok. Exit code 1 if any of \
that fails.\n\nExamples:\n  cii soak --minutes 10\n  cii soak --minutes 60 --concurrency 16 --json"
)]
pub struct SoakArgs {
    /// How long the load runs, in minutes (fractions allowed: 0.5 is 30 seconds).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Transfers in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// What one transfer was meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Permitted,
    Refused,
    Malformed,
}

impl Kind {
    fn of(n: u64) -> Kind {
        match n % 6 {
            4 => Kind::Refused,
            5 => Kind::Malformed,
            _ => Kind::Permitted,
        }
    }

    /// The answer this kind must get.
    fn expected(self) -> &'static str {
        match self {
            Kind::Permitted => "PERMIT",
            Kind::Refused => "DENY",
            Kind::Malformed => "TRANSFER_ID_INVALID",
        }
    }
}

/// Transfer id → (what it was meant to be, the decision answered).
type Decided = BTreeMap<String, (Kind, &'static str)>;
/// Transfer id → copies in the recipient's inbox.
type Delivered = BTreeMap<String, u64>;
/// Transfer id → the decisions logged for it.
type Logged = BTreeMap<String, Vec<&'static str>>;

/// Every call's answer: the outcome (`PERMIT`, `DENY`) or the error's stable code.
#[derive(Debug, Default)]
struct Tally {
    /// The transfers that were decided.
    decided: Decided,
    /// Answers by code, and how many differed from what their kind must get.
    answers: BTreeMap<String, u64>,
    unexpected: BTreeMap<String, u64>,
}

fn request(id: String, person: u64, kind: Kind) -> node_pb::SendRequest {
    node_pb::SendRequest {
        list_record_ids: Vec::new(),
        transfer_id: id,
        recipient: "AI-VS".into(),
        local_record_id: format!("O-{person}"),
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        payload: Some(report_payload()),
        include_identity: false,
        attested_facts: if kind == Kind::Refused {
            Vec::new()
        } else {
            vec![
                "person_informed_before".into(),
                "incapacity_for_work_or_threatened".into(),
            ]
        },
        written_request: String::new(),
        case_reference: "soak-case".into(),
    }
}

/// One sender until `stop`: its transfers, their answers.
async fn sender(client: NodeClient<Channel>, token: String, task: usize, persons: u64, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let kind = Kind::of(n);
        let id = match kind {
            Kind::Malformed => format!("s{task} {n}"),
            _ => format!("s{task}-{n}"),
        };
        let person = (task as u64 * 7 + n) % persons;
        let answer = match authorized(&token, request(id.clone(), person, kind)) {
            Ok(call) => match client.clone().send(call).await {
                Ok(response) => {
                    let permit = response
                        .into_inner()
                        .decision
                        .is_some_and(|d| d.outcome == cii_proto::common::decision::Outcome::Permit as i32);
                    let outcome = if permit { "PERMIT" } else { "DENY" };
                    tally.decided.insert(id, (kind, outcome));
                    outcome.to_owned()
                }
                Err(status) => code_of(&status),
            },
            Err(e) => e.to_string(),
        };
        if answer != kind.expected() {
            *tally.unexpected.entry(answer.clone()).or_default() += 1;
        }
        *tally.answers.entry(answer).or_default() += 1;
        n += 1;
    }
    tally
}

/// Rows of the AI node's inbox per transfer id (read-only look at its SQLite file).
async fn inbox(db: &Path) -> anyhow::Result<Delivered> {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT transfer_id, COUNT(*) FROM inbox WHERE sender = 'ORP-VS' GROUP BY transfer_id")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    Ok(rows
        .into_iter()
        .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
        .collect())
}

/// The decision kinds logged per transfer id.
async fn logged(db: &Path) -> anyhow::Result<Logged> {
    let store = cii_audit::Store::open_read_only(&format!("sqlite:{}", db.display())).await?;
    let mut per_transfer = Logged::new();
    let mut next = 0;
    loop {
        let batch = store.entries(next, 10_000).await?;
        let Some(last) = batch.last().map(|e| e.index) else {
            break;
        };
        for stored in &batch {
            let Some(Ok(entry)) = stored.readable().map(cii_audit::entry::decode) else {
                continue;
            };
            let kind = match cii_audit::EntryKind::try_from(entry.kind) {
                Ok(cii_audit::EntryKind::TransferPermitted) => "PERMIT",
                Ok(cii_audit::EntryKind::TransferDenied) => "DENY",
                _ => continue,
            };
            per_transfer.entry(entry.transfer_id).or_default().push(kind);
        }
        next = last + 1;
    }
    store.close().await;
    Ok(per_transfer)
}

/// What balancing the books found wrong, one line each (empty: all balanced).
fn imbalances(decided: &Decided, delivered: &Delivered, logged: &Logged) -> Vec<String> {
    let mut wrong = Vec::new();
    for (id, (_, outcome)) in decided {
        let copies = delivered.get(id).copied().unwrap_or(0);
        match (*outcome, copies) {
            ("PERMIT", 1) | ("DENY", 0) => {}
            (o, c) => wrong.push(format!("{id}: answered {o}, delivered {c} times")),
        }
        match logged.get(id).map(Vec::as_slice) {
            Some([kind]) if kind == outcome => {}
            other => wrong.push(format!("{id}: answered {outcome}, logged {other:?}")),
        }
    }
    for id in delivered.keys().filter(|id| !decided.contains_key(*id)) {
        wrong.push(format!("{id}: delivered, but nobody was answered a decision"));
    }
    for id in logged
        .keys()
        .filter(|id| id.starts_with('s') && !decided.contains_key(*id))
    {
        wrong.push(format!("{id}: logged, but nobody was answered a decision"));
    }
    wrong
}

#[expect(clippy::print_stdout, reason = "the soak's report is the command's output")]
pub fn run(args: SoakArgs) -> anyhow::Result<std::process::ExitCode> {
    let duration = Duration::from_secs_f64((args.minutes * 60.0).max(1.0));
    let concurrency = args.concurrency.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (_dir, network) = two_node_network("cii-soak-", crate::local_network::Gateways::ONE, 1)?;
    let net = network.dir.clone();
    let gateway_pid = network.gateway_pid().context("the gateway's pid")?;
    println!(
        "soak: {:.1} minutes, {concurrency} in flight; of every six transfers ORP → AI four permitted, one refused, one malformed",
        duration.as_secs_f64() / 60.0
    );
    let (tally, samples, elapsed) = runtime.block_on(async {
        let persons = concurrency.max(16) as u64;
        let ((orp, token), _) = connect_and_enrol(&network, persons).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..concurrency)
            .map(|task| tokio::spawn(sender(orp.clone(), token.clone(), task, persons, stop.clone())))
            .collect();
        // Every 5 s: the gateway's RSS and the outbox; every minute, a line.
        let start = Instant::now();
        let mut samples: Vec<(f64, f64)> = Vec::new();
        let mut next_line = Duration::from_secs(60);
        while start.elapsed() < duration {
            tokio::time::sleep(Duration::from_secs(5).min(duration.saturating_sub(start.elapsed()))).await;
            samples.push((start.elapsed().as_secs_f64(), memory_mb(gateway_pid, "VmRSS:")));
            if start.elapsed() >= next_line {
                let delivered = inbox(&node_dir(&net, "AI-VS").join("node.db")).await?.len();
                println!(
                    "  {:>5.0} s   delivered {delivered:>9}   gateway RSS {:>6.1} MB",
                    start.elapsed().as_secs_f64(),
                    samples.last().map_or(0.0, |s| s.1)
                );
                next_line += Duration::from_secs(60);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        for s in senders {
            let t = s.await?;
            tally.decided.extend(t.decided);
            for (code, n) in t.answers {
                *tally.answers.entry(code).or_default() += n;
            }
            for (code, n) in t.unexpected {
                *tally.unexpected.entry(code).or_default() += n;
            }
        }
        anyhow::Ok((tally, samples, start.elapsed().as_secs_f64()))
    })?;
    let outbox = outbox_of(&net, crate::local_network::Gateways::ONE);
    let (drained, backlog) = runtime.block_on(outbox_drained(&outbox))?;
    let delivered = runtime.block_on(inbox(&node_dir(&net, "AI-VS").join("node.db")))?;
    let logged = runtime.block_on(logged(&net.join("gateway/audit.db")))?;
    let verify = std::process::Command::new(std::env::current_exe()?)
        .args(["audit", "verify", "--config"])
        .arg(net.join("gateway.toml"))
        .output()?;
    let verify_line = String::from_utf8_lossy(&verify.stdout)
        .lines()
        .find(|l| l.starts_with("ok: ") || l.contains("error") || l.contains("BAD"))
        .unwrap_or("no answer")
        .to_owned();
    drop(network);

    let answered: u64 = tally.answers.values().sum();
    let copies: u64 = delivered.values().sum();
    let wrong = imbalances(&tally.decided, &delivered, &logged);
    let verified = verify.status.success() && verify_line.starts_with("ok: ");
    println!(
        "\nanswered   {answered} in {elapsed:.0} s: {:.0} /s",
        answered as f64 / elapsed
    );
    println!(
        "delivered  {copies} ({:.0} /s over the load and the {drained:.1} s the outbox took to drain; {backlog} left)",
        copies as f64 / (elapsed + drained)
    );
    for (code, n) in &tally.answers {
        println!("  {code:<28} {n:>9}");
    }
    for (code, n) in &tally.unexpected {
        println!("  UNEXPECTED {code:<17} {n:>9}");
    }
    let rss: Vec<f64> = samples.iter().map(|(_, mb)| *mb).collect();
    println!(
        "gateway RSS {} MB at the start, {} MB at the end, {} MB at most",
        rss.first().map_or("?".into(), |v| format!("{v:.1}")),
        rss.last().map_or("?".into(), |v| format!("{v:.1}")),
        rss.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "books: {}",
        if wrong.is_empty() {
            "balanced".to_owned()
        } else {
            format!("{} imbalances", wrong.len())
        }
    );
    for line in wrong.iter().take(20) {
        println!("  {line}");
    }
    println!("log: {verify_line}");
    let ok = wrong.is_empty() && tally.unexpected.is_empty() && verified && backlog == 0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "seconds": elapsed,
                "answered": answered,
                "answered_per_s": answered as f64 / elapsed,
                "delivered": copies,
                "delivered_per_s": copies as f64 / (elapsed + drained),
                "answers": tally.answers,
                "unexpected": tally.unexpected,
                "imbalances": wrong.len(),
                "outbox_backlog": backlog,
                "gateway_rss_mb": samples.iter().map(|(t, mb)| serde_json::json!([t.round(), mb])).collect::<Vec<_>>(),
                "log_verified": verified,
                "ok": ok,
            })
        );
    }
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn books() -> (Decided, Delivered, Logged) {
        let decided = BTreeMap::from([
            ("s0-0".to_owned(), (Kind::Permitted, "PERMIT")),
            ("s0-4".to_owned(), (Kind::Refused, "DENY")),
        ]);
        let delivered = BTreeMap::from([("s0-0".to_owned(), 1)]);
        let logged = BTreeMap::from([("s0-0".to_owned(), vec!["PERMIT"]), ("s0-4".to_owned(), vec!["DENY"])]);
        (decided, delivered, logged)
    }

    #[test]
    fn balanced_books_have_no_imbalance() {
        let (decided, delivered, logged) = books();
        assert_eq!(imbalances(&decided, &delivered, &logged), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_imbalance_is_named() {
        let (decided, mut delivered, mut logged) = books();
        delivered.insert("s0-0".into(), 2); // a duplicate delivery
        delivered.insert("s0-4".into(), 1); // a refused transfer delivered
        delivered.insert("s9-9".into(), 1); // delivered, never answered
        logged.insert("s0-0".into(), vec!["PERMIT", "PERMIT"]); // logged twice
        logged.remove("s0-4"); // a decision without its entry
        logged.insert("s8-8".into(), vec!["PERMIT"]); // logged, never answered
        let wrong = imbalances(&decided, &delivered, &logged);
        for expected in [
            "s0-0: answered PERMIT, delivered 2 times",
            "s0-4: answered DENY, delivered 1 times",
            "s9-9: delivered, but nobody was answered a decision",
            "s0-0: answered PERMIT, logged Some([\"PERMIT\", \"PERMIT\"])",
            "s0-4: answered DENY, logged None",
            "s8-8: logged, but nobody was answered a decision",
        ] {
            assert!(wrong.iter().any(|w| w == expected), "{expected} in {wrong:?}");
        }
    }
}
