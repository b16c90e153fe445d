//! The single sequencer of a log: group commit, then checkpoint, then acknowledge.
//!
//! Appends from all callers go through one task. It takes every request
//! waiting (up to [`MAX_BATCH`]), assigns contiguous indices, writes the batch
//! and the newly signed checkpoint in one transaction, and only then answers
//! each caller with its receipt. A caller therefore never sees an index that
//! is not durable (log before deliver). Batching is what makes it fast: while
//! one commit waits for the disk, the next batch fills up.
//!
//! Several gateway replicas on one PostgreSQL log keep this shape: the holder of the
//! sequencer's lease ([`crate::lease`]) runs it, fed from the append queue every replica
//! writes ([`crate::queue`]); every replica's [`Log`] then follows the store.

use tokio::sync::{mpsc, oneshot, watch};

use std::sync::Arc;

use crate::entry::{Entry, encode};
use crate::merkle::{Hash, ProofError, consistency_ranges, inclusion_ranges, leaf_hash};
use crate::note::{Checkpoint, NoteError, Signer};
use crate::store::{NewEntry, Node, Store, StoreError};
use crate::subtrees::{self, Recent};

/// Most entries written in one transaction.
pub const MAX_BATCH: usize = 512;

/// An append could not be made durable; nothing was appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The store failed (retryable).
    #[error("audit log unavailable: {0}")]
    Store(#[from] StoreError),
    /// The store does not match its own newest checkpoint: refuse to extend it.
    #[error("audit log inconsistent at start: {0}")]
    Inconsistent(String),
    /// The checkpoint key is unusable.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The sequencer has stopped.
    #[error("audit log is shut down")]
    Closed,
    /// The entry breaks a rule of what the log holds (see [`crate::entry::check`]); nothing was appended.
    #[error(transparent)]
    Refused(#[from] crate::entry::Refused),
}

impl LogError {
    /// Stable code for callers.
    pub fn code(&self) -> &'static str {
        match self {
            LogError::Store(_) | LogError::Closed => "AUDIT_UNAVAILABLE",
            LogError::Inconsistent(_) => "AUDIT_INCONSISTENT",
            LogError::Note(_) => "AUDIT_KEY",
            LogError::Refused(_) => "AUDIT_ENTRY_REFUSED",
        }
    }
}

/// What an append returns: the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's index.
    pub index: u64,
    /// SHA-256(0x00 ‖ entry).
    pub leaf_hash: Hash,
    /// The signed checkpoint of the batch, covering the entry.
    pub checkpoint: String,
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// Inclusion proof of the entry in that tree.
    pub inclusion_proof: Vec<Hash>,
    /// The entry's canonical bytes (what the leaf hash is over).
    pub entry: Vec<u8>,
}

pub(crate) struct Request {
    pub(crate) entry: Entry,
    /// Its row in the append queue, when it came from there (marked in the batch's statement).
    pub(crate) queue_id: Option<i64>,
    pub(crate) reply: oneshot::Sender<Result<Receipt, String>>,
}

/// What readers may see: the tree up to the newest committed checkpoint.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// The recent part of the committed tree (the rest is in the store).
    pub(crate) recent: Arc<Recent>,
    /// Size of the newest durable, signed checkpoint; leaves beyond it are in flight.
    pub(crate) size: u64,
    /// That checkpoint's signed note.
    pub(crate) note: String,
}

/// A proof could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The sizes or the index are not in the log.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A handle to the log's sequencer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Log {
    pub(crate) appends: Appends,
    pub(crate) committed: Arc<std::sync::RwLock<Committed>>,
    pub(crate) store: Store,
    /// The committed size, for those who act on every new checkpoint (the witnesses' cosigning).
    pub(crate) sizes: watch::Receiver<u64>,
}

/// Where a [`Log`]'s appends go.
#[derive(Debug, Clone)]
pub(crate) enum Appends {
    /// To this process's sequencer task.
    Sequencer(mpsc::Sender<Request>),
    /// Elsewhere: into the append queue of a log several replicas share ([`crate::queue`]),
    /// whichever of them sequences it.
    Elsewhere(Arc<dyn Appender>),
}

/// An append made by another part of the crate (the queue of a shared log: this module does
/// not know it, it knows this module).
pub(crate) trait Appender: Send + Sync + std::fmt::Debug {
    /// Appends `entry` to `log`; its receipt once durable.
    fn append<'a>(
        &'a self,
        log: &'a Log,
        entry: Entry,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Receipt, LogError>> + Send + 'a>>;

    /// Every append still waiting fails now as unavailable, and every later one.
    fn abandon(&self);
}

/// Statistics of the sequencer (for benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Batches committed.
    pub batches: u64,
    /// Entries committed.
    pub entries: u64,
}

impl Log {
    /// Opens the log: reads the recent part of the tree from the store (storing the subtree
    /// hashes a log of an earlier release lacks), checks its root against the newest signed
    /// checkpoint, and starts the sequencer task.
    pub async fn open(
        store: Store,
        signer: Arc<Signer>,
        origin: String,
    ) -> Result<(Log, tokio::task::JoinHandle<Stats>), LogError> {
        Log::open_with(store, signer, origin, None).await
    }

    /// [`Log::open`] for a PostgreSQL log several replicas share, by the holder of `lease`
    /// (acquired before: the log is read after the last batch of any earlier holder). Every
    /// batch is appended under the lease's epoch; once the lease is lost every append fails
    /// with nothing written, and this `Log` stays stale: a replica that acquires the lease
    /// again opens the log again.
    pub async fn open_leased(
        store: Store,
        signer: Arc<Signer>,
        origin: String,
        lease: &crate::lease::Lease,
    ) -> Result<(Log, tokio::task::JoinHandle<Stats>), LogError> {
        Log::open_with(store, signer, origin, Some(lease.epoch())).await
    }

    async fn open_with(
        store: Store,
        signer: Arc<Signer>,
        origin: String,
        epoch: Option<i64>,
    ) -> Result<(Log, tokio::task::JoinHandle<Stats>), LogError> {
        let committed = Arc::new(std::sync::RwLock::new(
            load_checked(&store, &signer.verifier(), &origin, false).await?,
        ));
        let size = committed.read().unwrap_or_else(std::sync::PoisonError::into_inner).size;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let (size_tx, sizes) = watch::channel(size);
        let sequencer = Sequencer {
            store: store.clone(),
            signer,
            origin,
            epoch,
        };
        let task = tokio::spawn(run(sequencer, committed.clone(), rx, size_tx));
        Ok((
            Log {
                appends: Appends::Sequencer(tx),
                committed,
                store,
                sizes,
            },
            task,
        ))
    }

    /// Changes whenever a new checkpoint is committed (its value: the tree size).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sizes.clone()
    }

    /// Resolves when the sequencer has stopped (nothing more can be appended through this log).
    pub async fn closed(&self) {
        let mut sizes = self.sizes.clone();
        while sizes.changed().await.is_ok() {}
    }

    /// The newest signed checkpoint (empty before the first append) and its size.
    pub fn checkpoint(&self) -> (u64, String) {
        let c = self.committed.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (c.size, c.note.clone())
    }

    /// The committed part the readers see: its recent tree and size.
    fn snapshot(&self) -> (Arc<Recent>, u64) {
        let c = self.committed.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (c.recent.clone(), c.size)
    }

    /// An inclusion proof in the committed tree of `size` (0: the newest checkpoint's), with the leaf hash.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<(u64, Hash, Vec<Hash>), ReadError> {
        let (recent, committed) = self.snapshot();
        let size = if size == 0 { committed } else { size };
        if size > committed {
            return Err(ProofError::SizeOutOfRange {
                size,
                available: committed,
            }
            .into());
        }
        let ranges = inclusion_ranges(index, size)?;
        let proof = hashes_of(&recent, &self.store, &ranges).await?;
        let leaf = subtrees::node(&recent, &self.store, 0, index).await?;
        Ok((size, leaf, proof))
    }

    /// A consistency proof between committed sizes (`new` 0: the newest checkpoint's).
    pub async fn consistency_proof(&self, old: u64, new: u64) -> Result<(u64, Vec<Hash>), ReadError> {
        let (recent, committed) = self.snapshot();
        let new = if new == 0 { committed } else { new };
        if new > committed {
            return Err(ProofError::SizeOutOfRange {
                size: new,
                available: committed,
            }
            .into());
        }
        let ranges = consistency_ranges(old, new)?;
        Ok((new, hashes_of(&recent, &self.store, &ranges).await?))
    }

    /// How many tree hashes the log holds in memory (bounded whatever its size).
    pub fn hashes_in_memory(&self) -> usize {
        self.snapshot().0.hashes_held()
    }

    /// Every append of this replica still waiting for another replica's sequencer fails now as
    /// unavailable (and every later one): its gateway stops. What it queued stays queued,
    /// integrated later by whichever replica sequences; a retry of the same entry finds it
    /// there. (Nothing to abandon where this process sequences.)
    pub fn abandon_waits(&self) {
        if let Appends::Elsewhere(appender) = &self.appends {
            appender.abandon();
        }
    }

    /// Appends `entry` (its `index` is assigned here) and returns once it is durable.
    /// An entry that [`crate::entry::check`] refuses is not appended.
    pub async fn append(&self, entry: Entry) -> Result<Receipt, LogError> {
        crate::entry::check(&entry)?;
        let tx = match &self.appends {
            Appends::Sequencer(tx) => tx,
            Appends::Elsewhere(appender) => return appender.append(self, entry).await,
        };
        let answer = submit(tx, entry, None).await?;
        match answer.await {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(message)) => Err(LogError::Store(StoreError::Db(sqlx::Error::Protocol(message)))),
            Err(_) => Err(LogError::Closed),
        }
    }
}

/// The committed tree as the store holds it: the recent part read (storing the subtree hashes
/// a log of an earlier release lacks), its root checked against the newest signed checkpoint.
/// The sequencer checks that the checkpoint covers every stored entry; a replica following a
/// log another one sequences reads the tree the newest checkpoint covers (more may be
/// committed meanwhile) and stores nothing.
pub(crate) async fn load_checked(
    store: &Store,
    verifier: &crate::note::Verifier,
    origin: &str,
    following: bool,
) -> Result<Committed, LogError> {
    let newest = store.latest_checkpoint().await?;
    let size = match (&newest, following) {
        (Some((checkpointed, _)), true) => *checkpointed,
        (None, true) => 0,
        (_, false) => store.size().await?,
    };
    if !following {
        let filled = subtrees::backfill(store, size).await?;
        if filled > 0 {
            tracing::info!(
                nodes = filled,
                "audit log: subtree hashes of an earlier release's entries stored"
            );
        }
    }
    let recent = Recent::load(store, size).await?;
    let note = match newest {
        Some((checkpointed, note)) => {
            let cp = verifier
                .open_checkpoint(&note, origin)
                .map_err(|e| LogError::Inconsistent(format!("newest checkpoint: {e}")))?;
            let root = if size == 0 {
                crate::merkle::empty_root()
            } else {
                subtrees::hash_of(&recent, store, 0, size).await?
            };
            if cp.size != checkpointed || checkpointed != size || root != cp.root {
                return Err(LogError::Inconsistent(format!(
                    "the store holds {size} entries but its newest checkpoint covers {checkpointed}: run `cii audit verify`"
                )));
            }
            note
        }
        None if size != 0 => return Err(LogError::Inconsistent("entries without any checkpoint".to_owned())),
        None => String::new(),
    };
    Ok(Committed {
        recent: Arc::new(recent),
        size,
        note,
    })
}

/// The MTH of each range, in order.
pub(crate) async fn hashes_of(recent: &Recent, store: &Store, ranges: &[(u64, u64)]) -> Result<Vec<Hash>, StoreError> {
    let mut out = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        out.push(subtrees::hash_of(recent, store, *start, *end).await?);
    }
    Ok(out)
}

/// Hands `entry` to the sequencer task; its answer comes on the receiver.
pub(crate) async fn submit(
    tx: &mpsc::Sender<Request>,
    entry: Entry,
    queue_id: Option<i64>,
) -> Result<oneshot::Receiver<Result<Receipt, String>>, LogError> {
    let (reply, answer) = oneshot::channel();
    tx.send(Request { entry, queue_id, reply })
        .await
        .map_err(|_| LogError::Closed)?;
    Ok(answer)
}

/// What the sequencer task writes with: the store, the checkpoint key, the log's origin, and
/// the lease's epoch when replicas share the store.
struct Sequencer {
    store: Store,
    signer: Arc<Signer>,
    origin: String,
    epoch: Option<i64>,
}

async fn run(
    sequencer: Sequencer,
    committed: Arc<std::sync::RwLock<Committed>>,
    mut rx: mpsc::Receiver<Request>,
    sizes: watch::Sender<u64>,
) -> Stats {
    // The sequencer's own copy of the recent tree; readers see `committed`, replaced after each commit.
    let mut recent: Recent = (*committed
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .recent)
        .clone();
    let mut stats = Stats::default();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // The batch goes into a copy (blocks are shared, only the newest is copied), kept
        // only once the batch is durable.
        let mut next = recent.clone();
        let (start, mut nodes) = (next.size(), Vec::<Node>::new());
        let mut rows = Vec::with_capacity(batch.len());
        for (i, request) in batch.iter_mut().enumerate() {
            request.entry.index = start + i as u64;
            let bytes = encode(&request.entry);
            let leaf = leaf_hash(&bytes);
            next.push(leaf, &mut nodes);
            rows.push(NewEntry {
                index: request.entry.index,
                leaf_hash: leaf,
                bytes,
                time_micros: request.entry.time_micros,
            });
        }
        let size = next.size();
        let queued: Vec<(i64, u64)> = batch
            .iter()
            .filter_map(|r| r.queue_id.map(|id| (id, r.entry.index)))
            .collect();
        let committing = commit(&sequencer, &next, &rows, &nodes, &queued).await;
        let note = match committing {
            Ok(note) => note,
            Err(e) => {
                // Nothing was appended, as far as this sequencer knows: forget the batch and tell
                // every caller (their transfers stay held, completed later exactly once).
                tracing::error!(error = %e, entries = rows.len(), "audit append failed");
                for request in batch {
                    let _ = request.reply.send(Err(e.to_string()));
                }
                // Unless the store moved past what this sequencer wrote: a commit whose answer
                // was lost, or another writer. Every later batch would collide with it, so the
                // sequencer stops (its log's `closed` resolves) and a restart reads the store.
                match sequencer.store.size().await {
                    Ok(stored) if stored != start => {
                        tracing::error!(
                            stored,
                            expected = start,
                            "the audit store holds entries this sequencer did not write: it stops"
                        );
                        return stats;
                    }
                    _ => continue,
                }
            }
        };
        stats.batches += 1;
        stats.entries += rows.len() as u64;
        recent = next;
        {
            let mut c = committed.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            c.recent = Arc::new(recent.clone());
            c.size = size;
            c.note = note.clone();
        }
        sizes.send_replace(size);
        for (request, row) in batch.into_iter().zip(rows) {
            let receipt = receipt(&recent, &sequencer.store, row, size, &note).await;
            let _ = request.reply.send(receipt.map_err(|e| e.to_string()));
        }
    }
    stats
}

/// Signs the checkpoint of `next` and writes the batch, its completed subtrees and the
/// checkpoint (and the marks of the queued rows it integrates) in one transaction; the signed note.
async fn commit(
    sequencer: &Sequencer,
    next: &Recent,
    rows: &[NewEntry],
    nodes: &[Node],
    queued: &[(i64, u64)],
) -> Result<String, StoreError> {
    let size = next.size();
    let root = subtrees::hash_of(next, &sequencer.store, 0, size).await?;
    let note = sequencer.signer.sign(
        &Checkpoint {
            origin: sequencer.origin.clone(),
            size,
            root,
        }
        .body(),
    );
    sequencer
        .store
        .append_fenced(rows, nodes, (size, &note), sequencer.epoch, queued)
        .await?;
    Ok(note)
}

/// The receipt of a committed entry: its proof from the recent tree (in memory for a new entry).
async fn receipt(recent: &Recent, store: &Store, row: NewEntry, size: u64, note: &str) -> Result<Receipt, StoreError> {
    let ranges = inclusion_ranges(row.index, size).unwrap_or_default();
    Ok(Receipt {
        index: row.index,
        leaf_hash: row.leaf_hash,
        checkpoint: note.to_owned(),
        tree_size: size,
        inclusion_proof: hashes_of(recent, store, &ranges).await?,
        entry: row.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log's memory does not grow with it: after thousands of appends it holds the same
    /// bounded window of hashes, and its proofs about the oldest entries (read from the store)
    /// still verify against the newest checkpoint — also after a restart.
    #[tokio::test]
    async fn memory_stays_flat_and_old_proofs_come_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("log.db").display());
        let store = Store::open(&url).await.unwrap();
        let pem = crate::note::generate_key_pem().unwrap();
        let signer = Arc::new(crate::note::Signer::from_pem("test/flat", &pem).unwrap());
        let (log, _task) = Log::open(store.clone(), signer.clone(), "test/flat".into())
            .await
            .unwrap();
        let append = |log: Log, n: u64| async move {
            let mut handles = Vec::new();
            for i in 0..n {
                let log = log.clone();
                handles.push(tokio::spawn(async move {
                    log.append(Entry {
                        time_micros: 1_700_000_000_000_000 + i as i64,
                        kind: crate::EntryKind::TransferPermitted as i32,
                        transfer_id: format!("t-{i}"),
                        ..Entry::default()
                    })
                    .await
                    .unwrap()
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        };
        append(log.clone(), 2_000).await;
        let held = log.hashes_in_memory();
        append(log.clone(), 8_000).await;
        let bound = 3 * crate::subtrees::WINDOW_BLOCKS * 2 * 256;
        assert!(log.hashes_in_memory() <= bound, "{} > {bound}", log.hashes_in_memory());
        assert!(held <= bound);
        let (size, note) = log.checkpoint();
        assert_eq!(size, 10_000);
        let root = signer.verifier().open_checkpoint(&note, "test/flat").unwrap().root;
        let check = |log: Log| async move {
            for index in [0, 1, 255, 256, 4_097, 9_999] {
                let (_, leaf, proof) = log.inclusion_proof(index, 0).await.unwrap();
                assert!(
                    crate::merkle::verify_inclusion(&leaf, index, size, &proof, &root),
                    "{index}"
                );
            }
            let (_, proof) = log.consistency_proof(3, 0).await.unwrap();
            let old = store_root(&log, 3).await;
            assert!(crate::merkle::verify_consistency(3, size, &old, &root, &proof));
        };
        check(log.clone()).await;
        drop(log);
        let (reopened, _task) = Log::open(store.clone(), signer, "test/flat".into()).await.unwrap();
        check(reopened).await;
    }

    async fn store_root(log: &Log, size: u64) -> Hash {
        let leaves = log.store.hashes(0, 0, size).await.unwrap();
        let mut tree = crate::merkle::Tree::new();
        leaves.into_iter().for_each(|l| tree.push(l));
        tree.root()
    }

    /// A store that moved past what the sequencer wrote (a commit whose answer was lost, or
    /// another writer) stops the sequencer instead of failing every later batch: its `closed`
    /// resolves, and appends are refused as closed.
    #[tokio::test]
    async fn a_store_moved_behind_the_sequencers_back_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("log.db").display());
        let store = Store::open(&url).await.unwrap();
        let pem = crate::note::generate_key_pem().unwrap();
        let signer = Arc::new(crate::note::Signer::from_pem("test/moved", &pem).unwrap());
        let entry = |id: &str| Entry {
            time_micros: 1_700_000_000_000_000,
            kind: crate::EntryKind::TransferPermitted as i32,
            transfer_id: id.into(),
            ..Entry::default()
        };
        let (a, _task_a) = Log::open(store.clone(), signer.clone(), "test/moved".into())
            .await
            .unwrap();
        a.append(entry("a-0")).await.unwrap();
        let (b, _task_b) = Log::open(store.clone(), signer.clone(), "test/moved".into())
            .await
            .unwrap();
        b.append(entry("b-1")).await.unwrap();
        assert!(a.append(entry("a-1")).await.is_err(), "index 1 is taken");
        tokio::time::timeout(std::time::Duration::from_secs(5), a.closed())
            .await
            .expect("the sequencer stopped");
        assert!(matches!(a.append(entry("a-2")).await, Err(LogError::Closed)));
        assert_eq!(store.size().await.unwrap(), 2);
    }
}
