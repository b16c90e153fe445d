//! `cii bench`: throughput measured against a baseline taken in the same run,
//! on the same threads, so the ratio holds on a noisy machine: the whole
//! transfer pipeline (`pipeline`), the pseudonym path, the audit log and the
//! decision engine.
//!
//! # Layout
//! One file per section: `pipeline`, `pseudonyms`, `audit`, `policy`; `soak` is `cii soak`.

mod audit;
mod pipeline;
mod policy;
mod pseudonyms;
pub mod soak;

use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    /// Gateway processes for the pipeline (more than one needs --postgres): the pipeline is
    /// measured with one gateway and then with this many, both with the audit log and the
    /// operational store on fresh PostgreSQL databases, and `pipeline.ratio_to_one_gateway`
    /// compares them (what replication costs or gains on this machine).
    #[arg(long, default_value_t = 1)]
    gateways: usize,
    /// 2: the pipeline is measured with one transcryptor and then with two (the second a
    /// process of its own, every pseudonym operation through both), and
    /// `pipeline.ratio_to_one_transcryptor` compares them: the cost of the second hop.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
    transcryptors: u32,
}

/// The pipeline with one transcryptor, then two, in the same run: the two-transcryptor figures
/// with `transcryptors`, `one_transcryptor_per_s` and `ratio_to_one_transcryptor`.
#[expect(clippy::print_stdout, reason = "the section's table")]
fn second_hop(args: &BenchArgs, load: Duration, phase: Duration) -> anyhow::Result<serde_json::Value> {
    let mut figures = Vec::new();
    for transcryptors in [1, 2] {
        println!(
            "
{transcryptors} transcryptor(s)"
        );
        figures.push(pipeline::run(
            load,
            phase,
            args.concurrency.max(1),
            (crate::local_network::Gateways::ONE, transcryptors),
        )?);
    }
    let one = figures
        .first()
        .map_or(0.0, |f| f["throughput_per_s"].as_f64().unwrap_or(0.0));
    let mut two = figures.pop().unwrap_or_default();
    let ratio = two["throughput_per_s"].as_f64().unwrap_or(0.0) / one.max(f64::MIN_POSITIVE);
    println!("pipeline.ratio_to_one_transcryptor {ratio:.2} (two transcryptors against one, same run)");
    if let Some(object) = two.as_object_mut() {
        object.insert("transcryptors".into(), 2.into());
        object.insert("one_transcryptor_per_s".into(), one.into());
        object.insert("ratio_to_one_transcryptor".into(), ratio.into());
    }
    Ok(two)
}

/// The pipeline with `--gateways N` on PostgreSQL: one gateway, then N, each on databases of
/// their own; the N-gateway figures with `gateways`, `one_gateway_per_s` and
/// `ratio_to_one_gateway`.
#[expect(clippy::print_stdout, reason = "the section's table")]
fn replicated(args: &BenchArgs, load: Duration, phase: Duration) -> anyhow::Result<serde_json::Value> {
    let Some(server) = args.postgres.as_deref() else {
        anyhow::bail!(
            "--gateways {} shares the gateways' stores: give --postgres URL",
            args.gateways
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut figures = Vec::new();
    for count in [1, args.gateways] {
        let (audit, operations) = runtime.block_on(async {
            let audit = audit::postgres_database(server, &format!("g{count}_audit")).await?;
            let operations = audit::postgres_database(server, &format!("g{count}_ops")).await?;
            anyhow::Ok((audit, operations))
        })?;
        let gateways = crate::local_network::Gateways {
            count,
            postgres: Some((&audit, &operations)),
        };
        println!("\n{count} gateway process(es), the audit log and the operational store on PostgreSQL");
        figures.push(pipeline::run(load, phase, args.concurrency.max(1), (gateways, 1))?);
    }
    let one = figures
        .first()
        .map_or(0.0, |f| f["throughput_per_s"].as_f64().unwrap_or(0.0));
    let mut many = figures.pop().unwrap_or_default();
    let ratio = many["throughput_per_s"].as_f64().unwrap_or(0.0) / one.max(f64::MIN_POSITIVE);
    println!(
        "pipeline.ratio_to_one_gateway {ratio:.2} ({} gateways against one, same PostgreSQL, same run)",
        args.gateways
    );
    if let Some(object) = many.as_object_mut() {
        object.insert("gateways".into(), args.gateways.into());
        object.insert("one_gateway_per_s".into(), one.into());
        object.insert("ratio_to_one_gateway".into(), ratio.into());
    }
    Ok(many)
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
        let mut r = if args.gateways > 1 {
            replicated(&args, load, phase)?
        } else if args.transcryptors == 2 {
            second_hop(&args, load, phase)?
        } else {
            pipeline::run(
                load,
                phase,
                args.concurrency.max(1),
                (crate::local_network::Gateways::ONE, 1),
            )?
        };
        let peak = r
            .as_object_mut()
            .and_then(|o| o.remove("gateway_peak_rss_mb"))
            .unwrap_or_default();
        // Flat memory: RSS once warmed up (a tenth into the load, at most a minute) against
        // RSS at the end, with the entries the load appended in between.
        let samples: Vec<f64> = r["gateway_rss_mb_samples"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default();
        let warm = usize::try_from((load.as_secs() / 10).min(60)).unwrap_or(0);
        let start = samples.get(warm).or(samples.first()).copied().unwrap_or_default();
        let end = samples.last().copied().unwrap_or_default();
        report.insert(
            "gateway".into(),
            serde_json::json!({
                "peak_rss_mb": peak,
                "rss_start_mb": start,
                "rss_start_at_s": warm.min(samples.len().saturating_sub(1)),
                "rss_end_mb": end,
                "entries": r["answered"],
            }),
        );
        report.insert("pipeline".into(), r);
    }
    if run(Section::Pseudonyms) {
        let r = pseudonyms::pseudonyms(phase)?;
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
        println!(
            "  one transcryptor     {:>12.0} /s   (one core, a transfer's person)",
            r["one_transcryptor_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  two transcryptors    {:>12.0} /s   (both hops' cryptography, no network call)",
            r["two_transcryptors_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "pseudonyms.ratio_two_to_one_transcryptor {:.2}",
            r["ratio_two_to_one_transcryptor"].as_f64().unwrap_or(0.0)
        );
        report.insert("pseudonyms".into(), r);
    }
    if run(Section::Audit) {
        report.insert(
            "audit".into(),
            audit::audit(args.concurrency, args.postgres.as_deref(), phase)?,
        );
    }
    if run(Section::Policy) {
        let r = policy::policy(phase)?;
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
