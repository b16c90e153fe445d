//! The single sequencer of a log: group commit, then checkpoint, then acknowledge.
//!
//! Appends from all callers go through one task. It takes every request
//! waiting (up to [`MAX_BATCH`]), assigns contiguous indices, writes the batch
//! and the newly signed checkpoint in one transaction, and only then answers
//! each caller with its receipt. A caller therefore never sees an index that
//! is not durable (log before deliver). Batching is what makes it fast: while
//! one commit waits for the disk, the next batch fills up.
//!
//! Scale-out (several gateway replicas on one PostgreSQL log) keeps this shape:
//! one replica holds a PostgreSQL advisory lock and runs the sequencer; the
//! others forward appends to it or wait for the lock. Not built yet.

use tokio::sync::{mpsc, oneshot, watch};

use crate::entry::{Entry, encode};
use crate::merkle::{Hash, Tree, leaf_hash};
use crate::note::{Checkpoint, NoteError, Signer};
use crate::store::{NewEntry, Store, StoreError};

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

struct Request {
    entry: Entry,
    reply: oneshot::Sender<Result<Receipt, String>>,
}

/// What readers may see: the tree up to the newest committed checkpoint.
#[derive(Debug, Default)]
struct Committed {
    tree: Tree,
    /// Size of the newest durable, signed checkpoint; leaves beyond it are in flight.
    size: u64,
    /// That checkpoint's signed note.
    note: String,
}

/// A handle to the log's sequencer; cheap to clone.
#[derive(Debug, Clone)]
pub struct Log {
    tx: mpsc::Sender<Request>,
    committed: std::sync::Arc<std::sync::RwLock<Committed>>,
    /// The committed size, for those who act on every new checkpoint (the witnesses' cosigning).
    sizes: watch::Receiver<u64>,
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
    /// Opens the log: rebuilds the tree from the store, checks it against the
    /// newest signed checkpoint, and starts the sequencer task.
    pub async fn open(
        store: Store,
        signer: std::sync::Arc<Signer>,
        origin: String,
    ) -> Result<(Log, tokio::task::JoinHandle<Stats>), LogError> {
        let mut tree = Tree::new();
        for leaf in store.leaf_hashes().await? {
            tree.push(leaf);
        }
        let verifier = signer.verifier();
        if let Some((size, note)) = store.latest_checkpoint().await? {
            let cp = verifier
                .open_checkpoint(&note, &origin)
                .map_err(|e| LogError::Inconsistent(format!("newest checkpoint: {e}")))?;
            if cp.size != size || size != tree.size() || tree.root_at(size).ok() != Some(cp.root) {
                return Err(LogError::Inconsistent(format!(
                    "the store holds {} entries but its newest checkpoint covers {size}: run `cii audit verify`",
                    tree.size()
                )));
            }
        } else if tree.size() != 0 {
            return Err(LogError::Inconsistent("entries without any checkpoint".to_owned()));
        }
        let note = store.latest_checkpoint().await?.map(|(_, n)| n).unwrap_or_default();
        let size = tree.size();
        let committed = std::sync::Arc::new(std::sync::RwLock::new(Committed { tree, size, note }));
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let (size_tx, sizes) = watch::channel(size);
        let task = tokio::spawn(run(store, signer, origin, committed.clone(), rx, size_tx));
        Ok((Log { tx, committed, sizes }, task))
    }

    /// Changes whenever a new checkpoint is committed (its value: the tree size).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sizes.clone()
    }

    /// The newest signed checkpoint (empty before the first append) and its size.
    pub fn checkpoint(&self) -> (u64, String) {
        let c = self.committed.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (c.size, c.note.clone())
    }

    /// An inclusion proof in the committed tree of `size` (0: the newest checkpoint's), with the leaf hash.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<(u64, Hash, Vec<Hash>), crate::merkle::ProofError> {
        let c = self.committed.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let size = if size == 0 { c.size } else { size };
        if size > c.size {
            return Err(crate::merkle::ProofError::SizeOutOfRange {
                size,
                available: c.size,
            });
        }
        let proof = c.tree.inclusion_proof(index, size)?;
        Ok((size, c.tree.leaf(index).unwrap_or_default(), proof))
    }

    /// A consistency proof between committed sizes (`new` 0: the newest checkpoint's).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<(u64, Vec<Hash>), crate::merkle::ProofError> {
        let c = self.committed.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let new = if new == 0 { c.size } else { new };
        if new > c.size {
            return Err(crate::merkle::ProofError::SizeOutOfRange {
                size: new,
                available: c.size,
            });
        }
        Ok((new, c.tree.consistency_proof(old, new)?))
    }

    /// Appends `entry` (its `index` is assigned here) and returns once it is durable.
    /// An entry that [`crate::entry::check`] refuses is not appended.
    pub async fn append(&self, entry: Entry) -> Result<Receipt, LogError> {
        crate::entry::check(&entry)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { entry, reply })
            .await
            .map_err(|_| LogError::Closed)?;
        match answer.await {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(message)) => Err(LogError::Store(StoreError::Db(sqlx::Error::Protocol(message)))),
            Err(_) => Err(LogError::Closed),
        }
    }
}

async fn run(
    store: Store,
    signer: std::sync::Arc<Signer>,
    origin: String,
    committed: std::sync::Arc<std::sync::RwLock<Committed>>,
    mut rx: mpsc::Receiver<Request>,
    sizes: watch::Sender<u64>,
) -> Stats {
    // The sequencer owns a working copy; readers see `committed`, updated after each commit.
    let mut tree = committed
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .tree
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
        let start = tree.size();
        let mut rows = Vec::with_capacity(batch.len());
        for (i, request) in batch.iter_mut().enumerate() {
            request.entry.index = start + i as u64;
            let bytes = encode(&request.entry);
            let leaf = leaf_hash(&bytes);
            tree.push(leaf);
            rows.push(NewEntry {
                index: request.entry.index,
                leaf_hash: leaf,
                bytes,
                time_micros: request.entry.time_micros,
            });
        }
        let size = tree.size();
        let note = signer.sign(
            &Checkpoint {
                origin: origin.clone(),
                size,
                root: tree.root(),
            }
            .body(),
        );
        match store.append(&rows, (size, &note)).await {
            Ok(()) => {
                stats.batches += 1;
                stats.entries += rows.len() as u64;
                {
                    let mut c = committed.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    for row in &rows {
                        c.tree.push(row.leaf_hash);
                    }
                    c.size = size;
                    c.note = note.clone();
                }
                sizes.send_replace(size);
                for (
                    request,
                    NewEntry {
                        index,
                        leaf_hash: leaf,
                        bytes,
                        ..
                    },
                ) in batch.into_iter().zip(rows)
                {
                    let inclusion_proof = tree.inclusion_proof(index, size).unwrap_or_default();
                    let receipt = Receipt {
                        index,
                        leaf_hash: leaf,
                        checkpoint: note.clone(),
                        tree_size: size,
                        inclusion_proof,
                        entry: bytes,
                    };
                    let _ = request.reply.send(Ok(receipt));
                }
            }
            Err(e) => {
                // Nothing was appended: forget the batch and tell every caller.
                tracing::error!(error = %e, entries = rows.len(), "audit append failed");
                tree.truncate(start);
                for request in batch {
                    let _ = request.reply.send(Err(e.to_string()));
                }
            }
        }
    }
    stats
}
