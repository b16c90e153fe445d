//! Durable appends per second through the sequencer (group commit) against
//! raw inserts of the same encoded entries into the same store, with the same
//! durability, in transactions of the sequencer's average batch size, by the
//! same number of writers; and verification speed. SQLite always; PostgreSQL
//! when `TEST_DATABASE_URL` names a server (a database is created per run).
//!
//! Run: `cargo bench -p cii-audit --bench append` (results are printed as ratios).
#![expect(clippy::print_stdout, reason = "a benchmark reports on standard output")]

mod common;
use common::entry;

use std::time::{Duration, Instant};

use cii_audit::note::{Signer, generate_key_pem};
use cii_audit::{Log, Store};

const WRITERS: u64 = 64;
const PER_WRITER: u64 = 200;

async fn sequencer_rate(url: &str) -> (f64, f64) {
    cii_audit::bench::sequencer_rate(url, WRITERS, PER_WRITER)
        .await
        .expect("sequencer run")
}

async fn raw_rate(url: &str, batch: usize) -> f64 {
    cii_audit::bench::raw_rate(url, batch, WRITERS, PER_WRITER)
        .await
        .expect("raw run")
}

async fn verify_rate(url: &str) -> f64 {
    // Fill through the sequencer, then time a full verification.
    let store = Store::open(url).await.expect("open");
    let signer = Signer::from_pem("bench/verify", &generate_key_pem().expect("key")).expect("signer");
    let verifier = signer.verifier();
    let (log, task) = Log::open(store.clone(), std::sync::Arc::new(signer), "bench/verify".into())
        .await
        .expect("log");
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                log.append(entry(w * PER_WRITER + i)).await.expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("writer");
    }
    drop(log);
    task.await.expect("sequencer");
    let start = Instant::now();
    let report = cii_audit::verify::verify(&store, &verifier, "bench/verify", |_, _| {})
        .await
        .expect("verify");
    let elapsed = start.elapsed();
    store.close().await;
    report.entries as f64 / elapsed.as_secs_f64()
}

async fn run(name: &str, url_for: impl Fn(&str) -> std::pin::Pin<Box<dyn std::future::Future<Output = String>>>) {
    let (appends, avg_batch) = sequencer_rate(&url_for("seq").await).await;
    let raw = raw_rate(&url_for("raw").await, avg_batch.round() as usize).await;
    let verify = verify_rate(&url_for("verify").await).await;
    println!(
        "{name}: sequencer {appends:.0} appends/s (avg batch {avg_batch:.1}), raw inserts {raw:.0} rows/s in transactions of {:.0}; ratio {:.2}; verify {verify:.0} entries/s",
        avg_batch.round(),
        appends / raw
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_owned();
        run("sqlite", move |tag| {
            let url = format!("sqlite:{}", path.join(format!("{tag}.db")).display());
            Box::pin(async move { url })
        })
        .await;
        if let Ok(base) = std::env::var("TEST_DATABASE_URL") {
            let base = base
                .trim_end_matches('/')
                .rsplit_once('/')
                .map_or(base.clone(), |(b, _)| b.to_owned());
            run("postgres", move |tag| {
                let base = base.clone();
                let tag = tag.to_owned();
                Box::pin(async move {
                    let name = format!("cii_bench_{}_{tag}", std::process::id());
                    let admin = sqlx::PgPool::connect(&format!("{base}/postgres"))
                        .await
                        .expect("connect");
                    sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(&admin)
                        .await
                        .expect("create");
                    admin.close().await;
                    format!("{base}/{name}")
                })
            })
            .await;
        } else {
            println!("postgres: skipped (set TEST_DATABASE_URL to a server to measure it)");
        }
        let _ = Duration::ZERO;
    });
}
