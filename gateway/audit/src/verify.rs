//! Verifying a whole log from its store: every entry decodes canonically and
//! sits at its own index, every stored leaf hash is right, every checkpoint is
//! signed by the log's key and matches the tree recomputed from the entries,
//! consecutive checkpoints are consistent, and the newest covers every entry.
//! Reads only; the verifier never uses the writer.

use crate::entry::decode;
use crate::merkle::{Tree, leaf_hash, verify_consistency};
use crate::note::{Checkpoint, Verifier};
use crate::store::{Store, StoreError};

/// The first problem found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log is damaged from this index on.
    #[error("first bad index {index}: {problem}")]
    Bad {
        /// The first index that cannot be trusted.
        index: u64,
        /// What is wrong.
        problem: String,
    },
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries verified.
    pub entries: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// The newest checkpoint.
    pub newest: Option<Checkpoint>,
}

fn bad(index: u64, problem: impl Into<String>) -> VerifyError {
    VerifyError::Bad {
        index,
        problem: problem.into(),
    }
}

/// Verifies the log in `store` against `verifier` and `origin`; `progress(done, total)` is called as it goes.
pub async fn verify(
    store: &Store,
    verifier: &Verifier,
    origin: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, VerifyError> {
    let mut checkpoints = Vec::new();
    let mut previous_size = 0;
    for (size, note) in store.checkpoints().await? {
        let cp = verifier
            .open_checkpoint(&note, origin)
            .map_err(|e| bad(previous_size, format!("checkpoint of size {size}: {e}")))?;
        if cp.size != size {
            return Err(bad(
                previous_size,
                format!("checkpoint stored under size {size} says {}", cp.size),
            ));
        }
        previous_size = size;
        checkpoints.push(cp);
    }
    let total = checkpoints.last().map_or(0, |c| c.size);
    let mut next_checkpoint = checkpoints.iter().peekable();
    let mut tree = Tree::new();
    let mut last_verified: Option<&Checkpoint> = None;
    loop {
        let batch = store.entries(tree.size(), 10_000).await?;
        if batch.is_empty() {
            break;
        }
        for stored in batch {
            let expected = tree.size();
            if stored.index != expected {
                return Err(bad(
                    expected,
                    format!("entry {expected} is missing (next stored index is {})", stored.index),
                ));
            }
            let entry = decode(&stored.entry).map_err(|e| bad(expected, e.to_string()))?;
            if entry.index != expected {
                return Err(bad(
                    expected,
                    format!("entry stored at {expected} says it is entry {}", entry.index),
                ));
            }
            let leaf = leaf_hash(&stored.entry);
            if stored.leaf_hash != leaf {
                return Err(bad(expected, "stored leaf hash does not match the entry"));
            }
            tree.push(leaf);
            while let Some(cp) = next_checkpoint.peek() {
                if cp.size != tree.size() {
                    break;
                }
                let start = last_verified.map_or(0, |c| c.size);
                if cp.root != tree.root() {
                    return Err(bad(
                        start,
                        format!(
                            "signed checkpoint of size {} does not match the entries {start}..{}",
                            cp.size, cp.size
                        ),
                    ));
                }
                if let Some(prev) = last_verified {
                    let proof = tree
                        .consistency_proof(prev.size, cp.size)
                        .map_err(|e| bad(start, e.to_string()))?;
                    if !verify_consistency(prev.size, cp.size, &prev.root, &cp.root, &proof) {
                        return Err(bad(
                            start,
                            format!("checkpoints {} and {} are inconsistent", prev.size, cp.size),
                        ));
                    }
                }
                last_verified = next_checkpoint.next();
            }
            progress(tree.size(), total);
        }
    }
    let entries = tree.size();
    if let Some(cp) = next_checkpoint.next() {
        return Err(bad(
            entries,
            format!(
                "log truncated: a signed checkpoint covers {} entries, the store holds {entries}",
                cp.size
            ),
        ));
    }
    let covered = last_verified.map_or(0, |c| c.size);
    if entries > covered {
        return Err(bad(
            covered,
            format!("entries {covered}..{entries} are not covered by any signed checkpoint"),
        ));
    }
    Ok(Report {
        entries,
        checkpoints: checkpoints.len() as u64,
        newest: checkpoints.last().cloned(),
    })
}
