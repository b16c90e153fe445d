//! Criterion view of the audit log's throughput: durable appends through the
//! sequencer (group commit) and raw inserts of the same stored rows with
//! the same durability, in the same run; SQLite always, PostgreSQL when
//! `TEST_DATABASE_URL` names a server. Each iteration is 64 concurrent
//! writers × 25 entries; criterion reports elements per second.
//! Run: `cargo bench -p cii-audit --bench append_criterion`.
//! (`--bench append` prints the same comparison as a single ratio.)

mod common;
use common::entry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cii_audit::body::{new_key, period_of, seal};
use cii_audit::entry::encode;
use cii_audit::merkle::leaf_hash;
use cii_audit::note::{Signer, generate_key_pem};
use cii_audit::store::SealedEntry;
use cii_audit::{Log, Store};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const WRITERS: u64 = 64;
const PER_WRITER: u64 = 25;
const BATCH: usize = 32;

fn bench_store(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, url: String) {
    let store = rt.block_on(Store::open(&url)).expect("open");
    let signer = Arc::new(Signer::from_pem("bench/audit", &generate_key_pem().expect("key")).expect("signer"));
    let (log, _task) = rt
        .block_on(Log::open(store.clone(), signer, "bench/audit".into()))
        .expect("log");
    let mut group = c.benchmark_group(format!("audit/{name}"));
    group.throughput(Throughput::Elements(WRITERS * PER_WRITER));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("sequencer_appends", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
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
                }
                start.elapsed()
            })
        })
    });
    let mut next_index = 1_000_000_000u64;
    let key = new_key().expect("body key");
    group.bench_function("raw_inserts", |b| {
        b.iter_custom(|iters| {
            let mut rows = Vec::new();
            for _ in 0..iters * WRITERS * PER_WRITER {
                let mut e = entry(next_index);
                e.index = next_index;
                let bytes = encode(&e);
                let period = period_of(e.time_micros);
                rows.push(SealedEntry {
                    index: next_index,
                    leaf_hash: leaf_hash(&bytes),
                    body: seal(&key, &period, next_index, &bytes).expect("seal"),
                    period,
                });
                next_index += 1;
            }
            let chunks: Vec<Vec<_>> = rows.chunks(BATCH).map(|c| c.to_vec()).collect();
            let queue = Arc::new(std::sync::Mutex::new(chunks));
            rt.block_on(async {
                let start = Instant::now();
                let mut handles = Vec::new();
                for _ in 0..WRITERS {
                    let (store, queue) = (store.clone(), queue.clone());
                    handles.push(tokio::spawn(async move {
                        loop {
                            let next = queue.lock().expect("queue").pop();
                            let Some(chunk) = next else { break };
                            let marker = chunk.first().map_or(0, |r| r.index);
                            store
                                .insert_sealed(&chunk, (marker + 10_000_000_000, "raw"))
                                .await
                                .expect("insert");
                        }
                    }));
                }
                for h in handles {
                    h.await.expect("writer");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    bench_store(
        c,
        &rt,
        "sqlite",
        format!("sqlite:{}", dir.path().join("audit.db").display()),
    );
    if let Ok(base) = std::env::var("TEST_DATABASE_URL") {
        let base = base
            .trim_end_matches('/')
            .rsplit_once('/')
            .map_or(base.clone(), |(b, _)| b.to_owned());
        let name = format!("cii_bench_criterion_{}", std::process::id());
        let url = rt.block_on(async {
            let admin = sqlx::PgPool::connect(&format!("{base}/postgres"))
                .await
                .expect("connect");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .expect("create");
            admin.close().await;
            format!("{base}/{name}")
        });
        bench_store(c, &rt, "postgres", url);
    }
}

criterion_group!(group, benches);
criterion_main!(group);
