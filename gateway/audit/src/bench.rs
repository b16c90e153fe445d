//! The audit log's throughput against its baseline, shared by `cii bench audit`
//! and `cargo bench -p cii-audit --bench append`: durable appends per second
//! through the sequencer (group commit) against raw inserts of the same encoded
//! entries into the same kind of store, with the same durability, in
//! transactions of the sequencer's average batch size, by the same writers.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::entry::encode;
use crate::merkle::leaf_hash;
use crate::note::{Signer, generate_key_pem};
use crate::store::SealedEntry;
use crate::{Entry, EntryKind, Log, LogError, Store};

/// The `i`-th benchmark entry: one realistic permitted-transfer entry (metadata only).
pub fn sample_entry(i: u64) -> Entry {
    Entry {
        kind: EntryKind::TransferPermitted as i32,
        time_micros: 1_790_000_000_000_000 + i64::try_from(i).unwrap_or(0),
        transfer_id: format!("transfer-{i:012}"),
        sender: "ORP-VS".into(),
        recipient: "AI-VS".into(),
        acting_user: "anna.meier@ORP-VS".into(),
        purpose: "early_detection".into(),
        bases: vec!["LAI-3b-2-i".into()],
        released: vec!["identity".into(), "health_limitations".into()],
        audit_pseudonym: vec![7; 64],
        payload_sha256: vec![9; 32],
        rulebook_hash: "76dfced76fda7da64f8aa660994798f154ae0ffb224bc2c217eece94cc5ed428".into(),
        ..Entry::default()
    }
}

/// A benchmark run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A writer task failed.
    #[error("a writer task failed: {0}")]
    Task(String),
    /// The signing key could not be made.
    #[error("signing key: {0}")]
    Key(String),
}

/// Appends per second through the sequencer by `writers` concurrent writers,
/// and the sequencer's average batch size.
pub async fn sequencer_rate(url: &str, writers: u64, per_writer: u64) -> Result<(f64, f64), BenchError> {
    let store = Store::open(url).await?;
    let pem = generate_key_pem().map_err(|e| BenchError::Key(e.to_string()))?;
    let signer = Signer::from_pem("bench/audit", &pem).map_err(|e| BenchError::Key(e.to_string()))?;
    let (log, task) = Log::open(store.clone(), Arc::new(signer), "bench/audit".into()).await?;
    // Untimed: the store's connections opened, as in a running gateway.
    warm(&store).await?;
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_writer {
                log.append(sample_entry(w * per_writer + i)).await?;
            }
            Ok::<(), LogError>(())
        }));
    }
    for h in handles {
        h.await.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    let elapsed = start.elapsed();
    drop(log);
    let stats = task.await.map_err(|e| BenchError::Task(e.to_string()))?;
    store.close().await;
    let n = (writers * per_writer) as f64;
    Ok((
        n / elapsed.as_secs_f64(),
        stats.entries as f64 / stats.batches.max(1) as f64,
    ))
}

/// Opens the store's connections (a read on each at once), so that neither rate counts them.
async fn warm(store: &Store) -> Result<(), BenchError> {
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.size().await })
        })
        .collect();
    for read in reads {
        read.await.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    Ok(())
}

/// Rows per second of raw inserts of the same stored rows (entries sealed
/// beforehand; no hashing, sealing or signing while timed), in transactions
/// of `batch` rows by `writers` concurrent writers.
pub async fn raw_rate(url: &str, batch: usize, writers: u64, per_writer: u64) -> Result<f64, BenchError> {
    let store = Store::open(url).await?;
    let key = crate::body::new_key().map_err(|_| BenchError::Key("body key".into()))?;
    let rows: Vec<_> = (0..writers * per_writer)
        .map(|i| {
            let mut e = sample_entry(i);
            e.index = i;
            let bytes = encode(&e);
            let period = crate::body::period_of(e.time_micros);
            let body = crate::body::seal(&key, &period, i, &bytes).map_err(|_| BenchError::Key("sealing".into()))?;
            Ok(SealedEntry {
                index: i,
                leaf_hash: leaf_hash(&bytes),
                period,
                body,
            })
        })
        .collect::<Result<_, BenchError>>()?;
    let total = rows.len();
    let chunks: Vec<Vec<_>> = rows.chunks(batch.max(1)).map(<[_]>::to_vec).collect();
    let queue = Arc::new(Mutex::new(chunks.into_iter().enumerate().collect::<Vec<_>>()));
    warm(&store).await?;
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..writers {
        let (store, queue) = (store.clone(), queue.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some((n, chunk)) = next else { break };
                // A small second row keeps the transaction the same shape (entries + checkpoint).
                store.insert_sealed(&chunk, (1_000_000_000 + n as u64, "raw")).await?;
            }
            Ok::<(), crate::store::StoreError>(())
        }));
    }
    for h in handles {
        h.await.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    let elapsed = start.elapsed();
    store.close().await;
    Ok(total as f64 / elapsed.as_secs_f64())
}
