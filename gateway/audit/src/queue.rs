//! One log, several gateway replicas (a PostgreSQL log): every replica accepts transfers and
//! appends through the append queue (`audit_queue`, migration 0008); the holder of the
//! sequencer's lease ([`crate::lease`]) integrates what waits there, in queue order, and every
//! replica follows the log's checkpoints to answer its callers.
//!
//! - [`Log::follow`]: a replica's log. An append queues the entry's bytes (`NOTIFY
//!   cii_audit_queue`) and waits until a sequencer has marked its row with an index; the
//!   follower task reads each new checkpoint (`NOTIFY cii_audit_size`, or a poll), checks its
//!   signature and that the entries' tree has its root, and only then answers: a receipt is
//!   never handed out before its checkpoint is durable and verified (log before deliver).
//! - [`integrate`]: the lease holder's task, the sequencer fed from the queue. A batch's
//!   entries, its checkpoint and the marks of its queued rows are one fenced statement: a row
//!   is integrated once, with its batch, or not at all.
//!
//! - [`Store::publish_cosigned`], [`Store::latest_cosigned`]: only the sequencing replica asks
//!   the witnesses; it publishes each checkpoint a quorum cosigned, and the others take it from
//!   there once they checked its quorum.
//!
//! Exactly one entry per entry: the same bytes queued twice are one row (`entry_sha256` is
//! unique). Held transfers carry their encoded entry, so the sender's retry on one replica
//! and the sweep on another, completing the same transfer at once, wait for the same row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{Notify, watch};

use crate::entry::{Entry, decode, encode};
use crate::merkle::{inclusion_ranges, leaf_hash};
use crate::note::{Signer, Verifier};
use crate::sequencer::{Appender, Appends, Committed, Log, LogError, MAX_BATCH, Receipt, Stats, hashes_of, submit};
use crate::store::{Store, StoreError};
use crate::subtrees;

/// Notified (at commit) with the new size whenever a batch is appended.
const SIZES: &str = "cii_audit_size";
/// Notified whenever an entry is queued.
const QUEUED: &str = "cii_audit_queue";
/// How often the store is read without a notification (one lost while reconnecting).
const POLL: Duration = Duration::from_millis(500);
/// How often a caller waiting for its row looks at the store itself.
const RECHECK: Duration = Duration::from_secs(2);
/// How long an append waits for a sequencer (a takeover lasts at most a lease); then it fails
/// as unavailable, its transfer stays held and is completed once, later.
const WAIT: Duration = Duration::from_secs(60);
/// A follower behind by more entries than this reads the tree's recent part afresh instead of
/// every leaf in between.
const CATCH_UP_BY_LEAVES: u64 = 65_536;
/// How often integrated rows older than a day are deleted.
const FORGET_EVERY: Duration = Duration::from_secs(600);

/// The callers of this process waiting for their queued rows, by entry digest, and the key this
/// replica signs its rows with (the log's).
#[derive(Debug)]
pub(crate) struct Waiters {
    waiting: Mutex<HashMap<Vec<u8>, Vec<tokio::sync::oneshot::Sender<u64>>>>,
    /// Flipped when this replica gives up waiting ([`Log::abandon_waits`]).
    abandoned: watch::Sender<bool>,
    signer: Arc<Signer>,
}

impl Waiters {
    /// The entries (by digest) this process's callers wait for (callers that went away
    /// forgotten).
    fn digests(&self) -> Vec<Vec<u8>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.retain(|_, list| {
            list.retain(|w| !w.is_closed());
            !list.is_empty()
        });
        waiting.keys().cloned().collect()
    }

    fn resolve(&self, marked: Vec<(Vec<u8>, u64)>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        for (digest, index) in marked {
            for waiter in waiting.remove(&digest).unwrap_or_default() {
                let _ = waiter.send(index);
            }
        }
    }

    /// Listens for the index of the entry with `digest`, before it is queued: its integration
    /// cannot pass unheard, so nobody asks the store right after queueing.
    fn listen(&self, digest: &[u8]) -> tokio::sync::oneshot::Receiver<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(digest.to_vec())
            .or_default()
            .push(tx);
        rx
    }

    /// The index row `id` gets, once a sequencer integrated it: heard on `rx`, or read from the
    /// store every [`RECHECK`] (a notification lost while the listener reconnected).
    async fn wait(&self, store: &Store, id: i64, mut rx: tokio::sync::oneshot::Receiver<u64>) -> Result<u64, LogError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut abandoned = self.abandoned.subscribe();
        loop {
            let until = deadline.min(tokio::time::Instant::now() + RECHECK);
            tokio::select! {
                answer = &mut rx => return answer.map_err(|_| LogError::Closed),
                () = tokio::time::sleep_until(until) => {}
                _ = abandoned.wait_for(|a| *a) => return Err(LogError::Closed),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LogError::Closed);
            }
            match store.queued(id).await? {
                Some(Some(index)) => return Ok(index),
                Some(None) => {}
                // Dropped by the sequencer: it can never be appended.
                None => return Err(LogError::Closed),
            }
        }
    }
}

impl Log {
    /// The log of a replica sharing a PostgreSQL log with others: appends are queued for
    /// whichever replica holds the sequencer's lease ([`integrate`]), each row signed with
    /// `signer` (the log's key), and reads follow the newest checkpoint (its signature checked
    /// with the same key). The task runs while a handle to the log is alive.
    pub async fn follow(
        store: Store,
        signer: Arc<Signer>,
        origin: String,
    ) -> Result<(Log, tokio::task::JoinHandle<()>), LogError> {
        let pool = postgres(&store)?.clone();
        let verifier = signer.verifier();
        let committed = crate::sequencer::load_checked(&store, &verifier, &origin, true).await?;
        let size = committed.size;
        let committed = Arc::new(std::sync::RwLock::new(committed));
        let waiters = Arc::new(Waiters {
            waiting: Mutex::default(),
            abandoned: watch::channel(false).0,
            signer,
        });
        let (sizes_tx, sizes) = watch::channel(size);
        let follower = Follower {
            store: store.clone(),
            verifier,
            origin,
            committed: committed.clone(),
            waiters: waiters.clone(),
            sizes: sizes_tx,
        };
        let heard = listen(pool, SIZES);
        let task = tokio::spawn(follower.run(heard));
        Ok((
            Log {
                appends: Appends::Elsewhere(waiters),
                committed,
                store,
                sizes,
            },
            task,
        ))
    }
}

impl Appender for Waiters {
    fn append<'a>(
        &'a self,
        log: &'a Log,
        entry: Entry,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Receipt, LogError>> + Send + 'a>> {
        Box::pin(append(log, self, entry))
    }

    fn abandon(&self) {
        self.abandoned.send_replace(true);
    }
}

/// Queues `entry` and waits for its receipt (see the module's documentation).
async fn append(log: &Log, waiters: &Waiters, entry: Entry) -> Result<Receipt, LogError> {
    if *waiters.abandoned.borrow() {
        return Err(LogError::Closed);
    }
    let queued = Entry { index: 0, ..entry };
    let bytes = encode(&queued);
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let signed = waiters.signer.sign(&row_body(digest.as_ref()));
    let heard = waiters.listen(digest.as_ref());
    let (id, marked) = log.store.enqueue(&bytes, digest.as_ref(), &signed).await?;
    let index = match marked {
        Some(index) => index,
        None => waiters.wait(&log.store, id, heard).await?,
    };
    let mut sizes = log.sizes.clone();
    match tokio::time::timeout(WAIT, sizes.wait_for(|size| *size > index)).await {
        Ok(Ok(_)) => {}
        _ => return Err(LogError::Closed),
    }
    let (recent, size, note) = {
        let c = log.committed.read().unwrap_or_else(PoisonError::into_inner);
        (c.recent.clone(), c.size, c.note.clone())
    };
    let bytes = encode(&Entry { index, ..queued });
    let leaf = leaf_hash(&bytes);
    if subtrees::node(&recent, &log.store, 0, index).await? != leaf {
        return Err(LogError::Inconsistent(format!(
            "the entry at index {index} is not the one queued as row {id}"
        )));
    }
    let ranges = inclusion_ranges(index, size).unwrap_or_default();
    Ok(Receipt {
        index,
        leaf_hash: leaf,
        checkpoint: note,
        tree_size: size,
        inclusion_proof: hashes_of(&recent, &log.store, &ranges).await?,
        entry: bytes,
    })
}

/// What a replica signs for a row it queues: the entry's digest, under a first line no
/// checkpoint body has (a checkpoint's second line is its size, a number).
fn row_body(digest: &[u8]) -> String {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cii-audit-queue/v1\n{hex}\n")
}

/// Whether a queued row is what a replica holding the log's key queued: its digest is its
/// entry's, and it is signed.
fn signed_by_a_replica(verifier: &Verifier, row: &QueuedRow) -> bool {
    let digest = ring::digest::digest(&ring::digest::SHA256, &row.entry);
    digest.as_ref() == row.digest.as_slice()
        && verifier
            .open(&row.signed)
            .is_ok_and(|body| body == row_body(&row.digest))
}

/// A row waiting in the queue.
struct QueuedRow {
    id: i64,
    digest: Vec<u8>,
    entry: Vec<u8>,
    signed: String,
}

/// A replica's view of the log, moved forward checkpoint by checkpoint.
struct Follower {
    store: Store,
    verifier: Verifier,
    origin: String,
    committed: Arc<std::sync::RwLock<Committed>>,
    waiters: Arc<Waiters>,
    sizes: watch::Sender<u64>,
}

impl Follower {
    async fn run(self, heard: Arc<Notify>) {
        loop {
            if let Err(e) = self.advance().await {
                tracing::error!(code = e.code(), error = %e, "the audit log could not be followed");
            }
            tokio::select! {
                () = self.sizes.closed() => return,
                () = heard.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Moves to the newest checkpoint if it is newer: its signature, then the root of the
    /// entries it covers, checked before anyone is answered.
    async fn advance(&self) -> Result<(), LogError> {
        let Some((size, note)) = self.store.latest_checkpoint().await? else {
            return Ok(());
        };
        let (mut next, old) = {
            let c = self.committed.read().unwrap_or_else(PoisonError::into_inner);
            ((*c.recent).clone(), c.size)
        };
        if size <= old {
            return Ok(());
        }
        let checkpoint = self
            .verifier
            .open_checkpoint(&note, &self.origin)
            .map_err(|e| LogError::Inconsistent(format!("newest checkpoint: {e}")))?;
        if checkpoint.size != size {
            return Err(LogError::Inconsistent(format!(
                "the checkpoint of size {size} says it is of size {}",
                checkpoint.size
            )));
        }
        if size - old > CATCH_UP_BY_LEAVES {
            // Far behind (paused, or cut off): the recent part of the tree read afresh, memory
            // bounded whatever the gap.
            next = subtrees::Recent::load(&self.store, size).await?;
        } else {
            let leaves = self.store.hashes(0, old, size).await?;
            if leaves.len() as u64 != size - old {
                return Err(LogError::Inconsistent(format!(
                    "the checkpoint of size {size} covers entries the store does not hold"
                )));
            }
            let mut completed = Vec::new();
            for leaf in leaves {
                next.push(leaf, &mut completed);
            }
        }
        if subtrees::hash_of(&next, &self.store, 0, size).await? != checkpoint.root {
            return Err(LogError::Inconsistent(format!(
                "the entries do not have the root the checkpoint of size {size} signs"
            )));
        }
        {
            let mut c = self.committed.write().unwrap_or_else(PoisonError::into_inner);
            *c = Committed {
                recent: Arc::new(next),
                size,
                note,
            };
        }
        self.sizes.send_replace(size);
        let waiting = self.waiters.digests();
        if !waiting.is_empty() {
            self.waiters.resolve(self.store.integrated(&waiting).await?);
        }
        Ok(())
    }
}

/// The sequencer of a shared log, run by the holder of `lease`: integrates the queued entries
/// in queue order until `stop` flips, the lease is lost (its batches are refused) or the
/// sequencer stops; then the statistics. Opens the log after the lease was acquired, so it
/// reads the store after the last batch of any earlier holder.
pub async fn integrate(
    store: Store,
    signer: Arc<Signer>,
    origin: String,
    lease: &crate::lease::Lease,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Stats>, LogError> {
    let pool = postgres(&store)?.clone();
    let verifier = signer.verifier();
    let (log, sequencer) = Log::open_leased(store.clone(), signer, origin, lease).await?;
    let heard = listen(pool, QUEUED);
    Ok(tokio::spawn(async move {
        let mut forgotten = tokio::time::Instant::now();
        loop {
            match integrate_waiting(&log, &store, &verifier).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(LogError::Closed) => break,
                Err(e) => tracing::error!(code = e.code(), error = %e, "queued audit entries not integrated"),
            }
            if forgotten.elapsed() >= FORGET_EVERY {
                forgotten = tokio::time::Instant::now();
                if let Err(e) = store.forget_integrated().await {
                    tracing::warn!(error = %e, "integrated queue rows not deleted");
                }
            }
            tokio::select! {
                () = heard.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = log.closed() => break,
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        drop(log);
        sequencer.await.unwrap_or_default()
    }))
}

/// One batch from the queue through the sequencer; whether it was full (more may wait).
async fn integrate_waiting(log: &Log, store: &Store, verifier: &Verifier) -> Result<bool, LogError> {
    let Appends::Sequencer(tx) = &log.appends else {
        return Err(LogError::Closed);
    };
    let waiting = store.waiting(MAX_BATCH).await?;
    let full = waiting.len() == MAX_BATCH;
    let mut answers = Vec::with_capacity(waiting.len());
    let mut periods = Vec::with_capacity(waiting.len());
    for row in waiting {
        let id = row.id;
        if !signed_by_a_replica(verifier, &row) {
            // Written into the database by someone without the log's key: never signed into
            // the log (the queue is no signing oracle for the database's service role).
            tracing::error!(row = id, "ALARM: a queued audit entry no replica signed: dropped");
            store.drop_queued(id).await?;
            continue;
        }
        let entry = decode(&row.entry)
            .ok()
            .filter(|entry| crate::entry::check(entry).is_ok());
        let Some(entry) = entry else {
            // Queued by no replica of this release (each checks before queueing): dropped,
            // its caller, if any, times out.
            tracing::error!(row = id, "a queued audit entry is malformed: dropped");
            store.drop_queued(id).await?;
            continue;
        };
        periods.push((id, crate::body::period_of(entry.time_micros)));
        answers.push(submit(tx, entry, Some(id)).await?);
    }
    let mut failed = None;
    for answer in answers {
        match answer.await {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => failed = Some(LogError::Store(StoreError::Db(sqlx::Error::Protocol(message)))),
            Err(_) => failed = Some(LogError::Closed),
        }
    }
    match failed {
        None => Ok(full),
        Some(e) => {
            drop_unwritable(store, &periods).await?;
            Err(e)
        }
    }
}

/// After a batch failed: drops the rows no batch could ever write — entries of a month whose
/// key retention destroyed (a held transfer completed more than the retention limit after it
/// was decided) — so that one of them does not hold back every append behind it. Their callers,
/// if any, time out; any other failure is the store's, and the batch is tried again.
async fn drop_unwritable(store: &Store, periods: &[(i64, String)]) -> Result<(), StoreError> {
    let destroyed = store.destroyed_periods().await?;
    for (id, period) in periods.iter().filter(|(_, p)| destroyed.contains(p)) {
        tracing::error!(
            row = id,
            period,
            "a queued audit entry falls in a month retention destroyed: dropped"
        );
        store.drop_queued(*id).await?;
    }
    Ok(())
}

/// Wakes (through the returned `Notify`) on every notification of `channel`; a task of its
/// own, so that no notification is lost to a cancelled wait, ended when the pool closes.
fn listen(pool: PgPool, channel: &'static str) -> Arc<Notify> {
    let heard = Arc::new(Notify::new());
    let notify = heard.clone();
    tokio::spawn(async move {
        let mut listener = loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => match listener.listen(channel).await {
                    Ok(()) => break listener,
                    Err(e) => tracing::warn!(error = %e, channel, "not listening (polling meanwhile)"),
                },
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => tracing::warn!(error = %e, channel, "not listening (polling meanwhile)"),
            }
            if pool.is_closed() {
                return;
            }
            tokio::time::sleep(POLL).await;
        };
        loop {
            match listener.recv().await {
                Ok(_) => notify.notify_one(),
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, channel, "listening interrupted (polling meanwhile)");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    });
    heard
}

fn postgres(store: &Store) -> Result<&PgPool, StoreError> {
    match store {
        Store::Postgres(pool) => Ok(pool),
        Store::Sqlite(_) => Err(StoreError::NoLease),
    }
}

fn to_index(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The append queue's statements (PostgreSQL only).
impl Store {
    /// Queues an entry's bytes (their `digest`, and the replica's note over it): the row's id,
    /// and its index if the same bytes were queued and integrated before.
    async fn enqueue(&self, bytes: &[u8], digest: &[u8], signed: &str) -> Result<(i64, Option<u64>), StoreError> {
        // DO UPDATE (of nothing) returns the row another caller queued, even one committed
        // while this statement waited for it; DO NOTHING would return no row then.
        let (id, index): (i64, Option<i64>) = sqlx::query_as(
            "WITH queued AS (INSERT INTO audit_queue (entry_sha256, entry, signed) VALUES ($1, $2, $3) \
                 ON CONFLICT (entry_sha256) DO UPDATE SET entry_sha256 = EXCLUDED.entry_sha256 \
                 RETURNING id, idx), \
             told AS MATERIALIZED (SELECT pg_notify('cii_audit_queue', '')) \
             SELECT id, idx FROM queued, (SELECT COUNT(*) FROM told) t",
        )
        .bind(digest)
        .bind(bytes)
        .bind(signed)
        .fetch_one(postgres(self)?)
        .await?;
        Ok((id, index.map(to_index)))
    }

    /// Row `id`: `None` if it is gone (dropped), else the index it got once integrated.
    async fn queued(&self, id: i64) -> Result<Option<Option<u64>>, StoreError> {
        let index: Option<Option<i64>> = sqlx::query_scalar("SELECT idx FROM audit_queue WHERE id = $1")
            .bind(id)
            .fetch_optional(postgres(self)?)
            .await?;
        Ok(index.map(|i| i.map(to_index)))
    }

    /// The rows waiting, oldest first, at most `limit`.
    async fn waiting(&self, limit: usize) -> Result<Vec<QueuedRow>, StoreError> {
        let rows: Vec<(i64, Vec<u8>, Vec<u8>, String)> = sqlx::query_as(
            "SELECT id, entry_sha256, entry, signed FROM audit_queue WHERE idx IS NULL ORDER BY id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(postgres(self)?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, digest, entry, signed)| QueuedRow {
                id,
                digest,
                entry,
                signed,
            })
            .collect())
    }

    /// Those of the entries with `digests` already integrated, with their indices.
    async fn integrated(&self, digests: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT entry_sha256, idx FROM audit_queue WHERE entry_sha256 = ANY($1) AND idx IS NOT NULL",
        )
        .bind(digests)
        .fetch_all(postgres(self)?)
        .await?;
        Ok(rows.into_iter().map(|(id, index)| (id, to_index(index))).collect())
    }

    /// The months whose entry-body key retention destroyed (nothing can be written into them).
    async fn destroyed_periods(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT period FROM audit_body_key WHERE destroyed_micros IS NOT NULL")
                .fetch_all(postgres(self)?)
                .await?,
        )
    }

    /// Deletes a waiting row the sequencer cannot append.
    async fn drop_queued(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM audit_queue WHERE id = $1 AND idx IS NULL")
            .bind(id)
            .execute(postgres(self)?)
            .await?;
        Ok(())
    }

    /// Publishes the newest checkpoint a quorum of witnesses cosigned, for the replicas that do
    /// not ask the witnesses (a larger tree only replaces a smaller one).
    pub async fn publish_cosigned(&self, size: u64, note: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_cosigned (id, tree_size, note) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET tree_size = EXCLUDED.tree_size, note = EXCLUDED.note \
             WHERE audit_cosigned.tree_size < EXCLUDED.tree_size",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(note)
        .execute(postgres(self)?)
        .await?;
        Ok(())
    }

    /// The newest published cosigned checkpoint: its size and note (whose quorum the reader
    /// checks: anyone who can write the table could put a note there).
    pub async fn latest_cosigned(&self) -> Result<Option<(u64, String)>, StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as("SELECT tree_size, note FROM audit_cosigned WHERE id = 1")
            .fetch_optional(postgres(self)?)
            .await?;
        Ok(row.map(|(size, note)| (to_index(size), note)))
    }

    /// Deletes rows integrated more than a day ago (their entries are found in the log).
    async fn forget_integrated(&self) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM audit_queue WHERE idx IS NOT NULL AND queued_at < clock_timestamp() - interval '1 day'",
        )
        .execute(postgres(self)?)
        .await?;
        Ok(())
    }
}
