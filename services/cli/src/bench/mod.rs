//! `cii bench`: throughput measured against a baseline taken in the same run,
//! on the same threads, so the ratio holds on a noisy machine: the whole
//! transfer pipeline (`pipeline`), the pseudonym path, the audit log and the
//! decision engine.

mod pipeline;
pub mod soak;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cii_policy::decide::{ConsentFound, Facts, Party, Transfer};
use cii_policy::{Fact, Trigger};
use cii_pseudonym::ceremony::Ceremony;
use cii_pseudonym::names::Party as Domain;
use cii_types::{AvsNumber, InstitutionId, InstitutionType};
use clap::{Args, ValueEnum};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Section {
    /// Full transfers through gateway, registry and two nodes (processes) vs a bare mTLS relay and the crypto floor.
    Pipeline,
    /// The gateway's batch transcryption vs libpep's own loop on all cores.
    Pseudonyms,
    /// Durable appends through the sequencer vs raw inserts, SQLite (and PostgreSQL with --postgres).
    Audit,
    /// Decisions per second on the default federal rulebook, one core.
    Policy,
    /// Every section.
    All,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Each section prints a table and, as its last line, its headline ratio. With --json the\n\
last line printed is one JSON object with a key per section run.\n\n\
Examples:\n  cii bench policy --seconds 5\n  cii bench pseudonyms --seconds 10 --json\n  \
cii bench pipeline --seconds 10 --soak 600     # a 10-minute soak: is the gateway's memory flat?\n\n\
State the build flags with the figures: RUSTFLAGS='-C target-cpu=native' roughly halves libpep's costs."
)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    section: Section,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Requests in flight (pipeline).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// A soak: the pipeline's load runs this many seconds (the baselines keep --seconds); the
    /// gateway's RSS is sampled every second and reported at the start, the end and its maximum.
    #[arg(long)]
    soak: Option<u64>,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// A PostgreSQL server URL (`postgres://user@host/db`) for the audit section; a database
    /// is created per phase. Without it only SQLite is measured.
    #[arg(long, env = "TEST_DATABASE_URL")]
    postgres: Option<String>,
}

/// Runs `work` (which handles `per_call` items) repeatedly for `phase`; items per second.
fn rate(phase: Duration, per_call: u64, mut work: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < phase {
        work();
        done += per_call;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

const BATCH: usize = 1000;

/// Batch transcription through the gateway's path vs libpep's raw loop, same ciphertexts.
fn pseudonyms(phase: Duration) -> anyhow::Result<serde_json::Value> {
    let ceremony = Ceremony::new();
    let gateway = cii_pseudonym::gateway::Gateway::new(
        ceremony.pseudonymisation_secret.clone(),
        ceremony.rekeying_secret.clone(),
        &ceremony.global_public,
        1,
    );
    let orp = Domain::Institution(InstitutionId::parse("id", "ORP-VS")?);
    let ai = Domain::Institution(InstitutionId::parse("id", "AI-VS")?);
    let node = cii_pseudonym::node::NodeKeys::new(ceremony.global_public, ceremony.session_keys(&orp, 1));
    let avs = AvsNumber::parse("756.1234.5678.97")?;
    let local = node.decrypt(&gateway.enrol(&node.enrolment_ciphertext(&avs), &orp));
    let items = (0..BATCH)
        .map(|_| node.encrypt_own(&local))
        .collect::<Result<Vec<_>, _>>()?;
    let batch_items: Vec<cii_pseudonym::gateway::BatchItem> = items.iter().map(|c| (*c, None)).collect();
    let batch = rate(phase, BATCH as u64, || {
        std::hint::black_box(gateway.translate_batch(batch_items.clone(), &orp, &ai));
    });
    let raw = rate(phase, BATCH as u64, || {
        gateway.raw_transcrypt_all_cores(&items, &orp, &ai)
    });
    Ok(serde_json::json!({ "batch_per_s": batch, "raw_per_s": raw, "ratio": batch / raw }))
}

/// Decisions per second on one core, cycling through representative transfers.
fn policy(phase: Duration) -> anyhow::Result<serde_json::Value> {
    let today = time::OffsetDateTime::now_utc().date();
    let rulebook = cii_kit::rulebook::load(None, today)?;
    let mut informed = Facts::default();
    informed.set(Fact::PersonInformedBefore, true);
    let transfer = |to, trigger, purpose: &str, categories: &[&str], facts, consents| Transfer {
        from: Party::of_type(InstitutionType::AcOrp),
        to: Party::of_type(to),
        trigger: Some(trigger),
        purpose: purpose.to_owned(),
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        persons: 1,
        facts,
        consents,
        date: today,
    };
    let consent = vec![ConsentFound {
        reference: "c@1".into(),
        categories: vec!["identity".into(), "job_search".into()],
        purposes: vec!["integration".into()],
        written: true,
    }];
    let transfers = [
        transfer(
            InstitutionType::Ai,
            Trigger::SpontaneousReport,
            "early_detection",
            &["identity", "health_limitations"],
            informed,
            vec![],
        ),
        transfer(
            InstitutionType::As,
            Trigger::CaseAccess,
            "integration",
            &["identity", "job_search"],
            Facts::default(),
            consent,
        ),
        transfer(
            InstitutionType::Suva,
            Trigger::CaseAccess,
            "integration",
            &["identity"],
            Facts::default(),
            vec![],
        ),
    ];
    let mut n = 0usize;
    let per_s = rate(phase, 1, || {
        let t = &transfers[n % transfers.len()];
        n += 1;
        std::hint::black_box(cii_policy::decide(&rulebook, t).ok());
    });
    Ok(serde_json::json!({ "decisions_per_s": per_s }))
}

/// Appends per second through the sequencer, and raw inserts, on one store kind.
async fn audit_store(url_for: impl Fn(&str) -> String, concurrency: usize) -> anyhow::Result<(f64, f64, f64)> {
    let writers = concurrency.max(1) as u64;
    let per_writer = (12_800 / writers).max(10);
    let (appends, batch) = cii_audit::bench::sequencer_rate(&url_for("seq"), writers, per_writer).await?;
    let raw = cii_audit::bench::raw_rate(&url_for("raw"), batch.round() as usize, writers, per_writer).await?;
    Ok((appends, raw, batch))
}

async fn postgres_database(base: &str, tag: &str) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/').rsplit_once('/').map_or(base, |(b, _)| b);
    let name = format!("cii_bench_{}_{tag}", std::process::id());
    let admin = sqlx::PgPool::connect(&format!("{base}/postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    admin.close().await;
    Ok(format!("{base}/{name}"))
}

#[expect(clippy::print_stdout, reason = "the section's table")]
fn audit(concurrency: usize, postgres: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_owned();
        let (appends, raw, batch) = audit_store(
            |tag| format!("sqlite:{}", path.join(format!("{tag}.db")).display()),
            concurrency,
        )
        .await?;
        println!("\naudit (SQLite, synchronous=FULL, {concurrency} writers)");
        println!("  sequencer appends    {appends:>12.0} /s (average batch {batch:.1})");
        println!(
            "  raw inserts          {raw:>12.0} /s (transactions of {:.0})",
            batch.round()
        );
        let mut section = serde_json::json!({ "sqlite_appends_per_s": appends, "sqlite_ratio": appends / raw });
        if let Some(base) = postgres {
            let seq = postgres_database(base, "seq").await?;
            let raw_db = postgres_database(base, "raw").await?;
            let (appends, raw, batch) = audit_store(
                |tag| if tag == "seq" { seq.clone() } else { raw_db.clone() },
                concurrency,
            )
            .await?;
            println!("audit (PostgreSQL)");
            println!("  sequencer appends    {appends:>12.0} /s (average batch {batch:.1})");
            println!("  raw inserts          {raw:>12.0} /s");
            section["postgres_appends_per_s"] = appends.into();
            section["postgres_ratio"] = (appends / raw).into();
        }
        println!(
            "audit.sqlite_ratio {:.2}",
            section["sqlite_ratio"].as_f64().unwrap_or(0.0)
        );
        Ok(section)
    })
}

#[expect(clippy::print_stdout, reason = "the tables are the command's output")]
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let phase = Duration::from_secs(args.seconds.max(1));
    let run = |s: Section| args.section == s || args.section == Section::All;
    println!(
        "RUSTFLAGS={:?} cores={} seconds/phase={} concurrency={}",
        std::env::var("RUSTFLAGS").unwrap_or_default(),
        std::thread::available_parallelism().map_or(1, usize::from),
        phase.as_secs(),
        args.concurrency
    );
    let mut report = serde_json::Map::new();
    if run(Section::Pipeline) {
        let load = args.soak.map_or(phase, |s| Duration::from_secs(s.max(1)));
        let mut r = pipeline::run(load, phase, args.concurrency.max(1))?;
        let peak = r
            .as_object_mut()
            .and_then(|o| o.remove("gateway_peak_rss_mb"))
            .unwrap_or_default();
        report.insert("gateway".into(), serde_json::json!({ "peak_rss_mb": peak }));
        report.insert("pipeline".into(), r);
    }
    if run(Section::Pseudonyms) {
        let r = pseudonyms(phase)?;
        println!("\npseudonyms");
        println!(
            "  gateway batch path   {:>12.0} /s",
            r["batch_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  libpep raw, all cores{:>12.0} /s",
            r["raw_per_s"].as_f64().unwrap_or(0.0)
        );
        println!("pseudonyms.ratio {:.2}", r["ratio"].as_f64().unwrap_or(0.0));
        report.insert("pseudonyms".into(), r);
    }
    if run(Section::Audit) {
        report.insert("audit".into(), audit(args.concurrency, args.postgres.as_deref())?);
    }
    if run(Section::Policy) {
        let r = policy(phase)?;
        println!("\npolicy");
        println!(
            "policy.decisions_per_s {:.0} (one core)",
            r["decisions_per_s"].as_f64().unwrap_or(0.0)
        );
        report.insert("policy".into(), r);
    }
    if args.json {
        println!("{}", serde_json::Value::Object(report));
    }
    Ok(ExitCode::SUCCESS)
}
