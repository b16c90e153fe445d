//! The log's Merkle tree in flat memory: the recent part in memory, the rest in the store.
//!
//! The store keeps every leaf hash and, at every [`STORED_EVERY`]th level (256 leaves, 65,536,
//! …), the hash of each complete perfect subtree (`audit_node`), written in the transaction
//! that completes it. In memory, [`Recent`] keeps for each of these tiers the last
//! [`WINDOW_BLOCKS`] blocks of 256 hashes with their inner levels: enough to compute the root
//! and every new entry's inclusion proof without reading the store, and a few hundred
//! kilobytes whatever the log's size (the tree of a year of traffic used to live in memory,
//! twice). Proofs about older entries read the hashes they need from the store
//! ([`hash_of`]): a few range reads of at most 256 hashes.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::merkle::{Hash, Tree, fold, pieces};
use crate::store::{Node, Store, StoreError};

/// Every how many levels subtree hashes are stored: a stored node has 256 children.
pub const STORED_EVERY: u32 = 8;
/// Hashes per block (children of one stored node).
const BLOCK: u64 = 1 << STORED_EVERY;
/// Blocks kept in memory per tier: a batch of the sequencer spans at most three.
pub const WINDOW_BLOCKS: usize = 4;

/// One tier's recent hashes: those at level `8 t` of the last few blocks, each block with the
/// inner levels up to its root.
#[derive(Debug, Clone, Default)]
struct Tier {
    /// The block number (hashes at this tier's level / 256) of `blocks[0]`.
    first_block: u64,
    /// Hashes pushed at this tier's level so far.
    count: u64,
    blocks: VecDeque<Arc<Tree>>,
}

impl Tier {
    fn push(&mut self, hash: Hash) -> Option<Hash> {
        if self.blocks.back().is_none_or(|b| b.size() == BLOCK) {
            self.blocks.push_back(Arc::new(Tree::new()));
            if self.blocks.len() > WINDOW_BLOCKS {
                self.blocks.pop_front();
                self.first_block += 1;
            }
        }
        let block = self.blocks.back_mut()?;
        let tree = Arc::make_mut(block);
        tree.push(hash);
        self.count += 1;
        (tree.size() == BLOCK).then(|| tree.root())
    }

    /// The hash of the complete subtree `k` at `r` levels above this tier's level.
    fn node(&self, r: u32, k: u64) -> Option<Hash> {
        let first = k << r;
        let block = first / BLOCK;
        let offset = usize::try_from(block.checked_sub(self.first_block)?).ok()?;
        self.blocks.get(offset)?.node(r, (first % BLOCK) >> r)
    }
}

/// The recent part of the tree, by tier.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    size: u64,
    tiers: Vec<Tier>,
}

impl Recent {
    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; the stored-level subtrees it completes are added to `completed`.
    pub fn push(&mut self, leaf: Hash, completed: &mut Vec<Node>) {
        let mut hash = leaf;
        let mut t = 0usize;
        loop {
            if self.tiers.len() == t {
                self.tiers.push(Tier::default());
            }
            let Some(tier) = self.tiers.get_mut(t) else { return };
            let Some(root) = tier.push(hash) else { break };
            let level = STORED_EVERY * (t as u32 + 1);
            completed.push(Node {
                level,
                index: tier.count / BLOCK - 1,
                hash: root,
            });
            hash = root;
            t += 1;
        }
        self.size += 1;
    }

    /// The hash of the perfect subtree `k` at `level`, if it is complete and in memory.
    pub fn node(&self, level: u32, k: u64) -> Option<Hash> {
        let tier = self.tiers.get((level / STORED_EVERY) as usize)?;
        tier.node(level % STORED_EVERY, k)
    }

    /// How many hashes are held (a bound independent of the log's size).
    pub fn hashes_held(&self) -> usize {
        self.tiers
            .iter()
            .flat_map(|t| t.blocks.iter())
            .map(|b| 2 * b.size() as usize)
            .sum()
    }

    /// The recent part of the tree of the `size` leaves in `store`, read from it.
    pub async fn load(store: &Store, size: u64) -> Result<Recent, StoreError> {
        let mut recent = Recent {
            size,
            tiers: Vec::new(),
        };
        let mut level = 0;
        loop {
            let count = size >> level;
            if count == 0 {
                break;
            }
            // The window ends with the block the next hash goes into (or the last complete one).
            let last_block = (count - 1) / BLOCK;
            let first_block = last_block.saturating_sub(WINDOW_BLOCKS as u64 - 1);
            let hashes = store.hashes(level, first_block * BLOCK, count).await?;
            let mut tier = Tier {
                first_block,
                count: first_block * BLOCK,
                blocks: VecDeque::new(),
            };
            for hash in hashes {
                if tier.blocks.back().is_none_or(|b| b.size() == BLOCK) {
                    tier.blocks.push_back(Arc::new(Tree::new()));
                }
                if let Some(block) = tier.blocks.back_mut() {
                    Arc::make_mut(block).push(hash);
                }
                tier.count += 1;
            }
            recent.tiers.push(tier);
            level += STORED_EVERY;
        }
        Ok(recent)
    }
}

/// The hash of the perfect subtree `k` at `level`: from memory, else from the store (the
/// stored hashes at the tier's level below it, folded up).
pub async fn node(recent: &Recent, store: &Store, level: u32, k: u64) -> Result<Hash, StoreError> {
    if let Some(hash) = recent.node(level, k) {
        return Ok(hash);
    }
    let (base, r) = ((level / STORED_EVERY) * STORED_EVERY, level % STORED_EVERY);
    let hashes = store.hashes(base, k << r, (k + 1) << r).await?;
    let mut tree = Tree::new();
    for hash in hashes {
        tree.push(hash);
    }
    Ok(tree.root())
}

/// The MTH of leaves `[start, end)`.
pub async fn hash_of(recent: &Recent, store: &Store, start: u64, end: u64) -> Result<Hash, StoreError> {
    let mut hashes = Vec::new();
    for (level, k) in pieces(start, end) {
        hashes.push(node(recent, store, level, k).await?);
    }
    Ok(fold(&hashes))
}

/// Stores the subtree hashes a log written before `audit_node` existed lacks, tier by tier
/// from the leaves (once, at its first start with this release). Memory stays one block.
pub async fn backfill(store: &Store, size: u64) -> Result<u64, StoreError> {
    let mut written = 0;
    let mut level = STORED_EVERY;
    while size >> level > 0 {
        let expected = size >> level;
        let mut next = store.node_count(level).await?;
        while next < expected {
            let upto = (next + 1024).min(expected);
            let below = level - STORED_EVERY;
            let hashes = store.hashes(below, next * BLOCK, upto * BLOCK).await?;
            let nodes: Vec<Node> = hashes
                .chunks(BLOCK as usize)
                .zip(next..)
                .map(|(children, index)| {
                    let mut tree = Tree::new();
                    children.iter().for_each(|h| tree.push(*h));
                    Node {
                        level,
                        index,
                        hash: tree.root(),
                    }
                })
                .collect();
            store.insert_nodes(&nodes).await?;
            written += nodes.len() as u64;
            next = upto;
        }
        level += STORED_EVERY;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::leaf_hash;

    /// Every perfect subtree the window holds has the hash a whole tree gives it, and the
    /// stored-level nodes come out once each, in order.
    #[test]
    fn the_window_agrees_with_the_whole_tree() {
        let mut whole = Tree::new();
        let mut recent = Recent::default();
        let mut completed = Vec::new();
        let n = 3 * 65_536 + 777;
        for i in 0u64..n {
            let leaf = leaf_hash(&i.to_be_bytes());
            whole.push(leaf);
            recent.push(leaf, &mut completed);
        }
        assert_eq!(recent.size(), n);
        for level in 0..=18 {
            let complete = n >> level;
            for k in complete.saturating_sub(600)..complete {
                if let Some(hash) = recent.node(level, k) {
                    assert_eq!(Some(hash), whole.node(level, k), "level {level} node {k}");
                }
            }
            // The newest complete subtree of every level is in memory.
            if complete > 0 {
                assert!(recent.node(level, complete - 1).is_some(), "level {level}");
            }
        }
        let eights: Vec<u64> = completed.iter().filter(|c| c.level == 8).map(|c| c.index).collect();
        assert_eq!(eights, (0..n / 256).collect::<Vec<_>>());
        assert!(completed.iter().all(|c| whole.node(c.level, c.index) == Some(c.hash)));
        assert!(recent.hashes_held() <= 3 * WINDOW_BLOCKS * 2 * BLOCK as usize);
    }
}
