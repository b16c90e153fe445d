//! The RFC 6962 / RFC 9162 Merkle tree: leaf = SHA-256(0x00‖entry),
//! node = SHA-256(0x01‖left‖right); inclusion and consistency proofs as
//! audit paths; indices are 0-based.
//!
//! [`Tree`] keeps every perfect subtree's hash, level by level (about two
//! hashes per leaf), so that appending, roots and proofs are O(log n). It is
//! rebuilt from the stored leaf hashes at start. (A tile store as in C2SP
//! tlog-tiles is the way to bound memory for very large logs.)

use ring::digest::{Context, SHA256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

fn finish(ctx: Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0]);
    ctx.update(entry);
    finish(ctx)
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[1]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    finish(Context::new(&SHA256))
}

/// A proof could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The index is not in a tree of that size.
    #[error("index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The tree size exceeds the log.
    #[error("tree size {size} exceeds the log's {available}")]
    SizeOutOfRange {
        /// The size asked for.
        size: u64,
        /// The log's size.
        available: u64,
    },
    /// The old size is larger than the new size (or zero).
    #[error("old size {old} is not between 1 and {new}")]
    BadOldSize {
        /// Old size.
        old: u64,
        /// New size.
        new: u64,
    },
}

/// Largest power of two strictly smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// An in-memory Merkle tree over leaf hashes.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// `levels[l][k]` = hash of the perfect subtree of leaves [k·2^l, (k+1)·2^l).
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else { return };
            row.push(hash);
            // A completed pair forms its parent.
            if row.len() % 2 == 0 {
                let (Some(left), Some(right)) = (row.get(row.len() - 2), row.last()) else {
                    return;
                };
                hash = node_hash(left, right);
                level += 1;
            } else {
                return;
            }
        }
    }

    /// The hash of the complete perfect subtree `k` at `level` (leaves are level 0), if any.
    pub fn node(&self, level: u32, k: u64) -> Option<Hash> {
        self.levels
            .get(level as usize)
            .and_then(|row| row.get(usize::try_from(k).ok()?))
            .copied()
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
    }

    /// MTH of leaves [start, end) (end > start), from its perfect pieces.
    fn range_hash(&self, start: u64, end: u64) -> Hash {
        let hashes: Vec<Hash> = pieces(start, end)
            .into_iter()
            .map(|(level, k)| {
                self.levels
                    .get(level as usize)
                    .and_then(|row| row.get(usize::try_from(k).ok()?))
                    .copied()
                    .unwrap_or([0; 32])
            })
            .collect();
        fold(&hashes)
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeOutOfRange {
                size,
                available: self.size(),
            });
        }
        Ok(if size == 0 {
            empty_root()
        } else {
            self.range_hash(0, size)
        })
    }

    /// The current root.
    pub fn root(&self) -> Hash {
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// RFC 6962 `PATH(index, D[0:size])`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.in_range(size)?;
        Ok(inclusion_ranges(index, size)?
            .into_iter()
            .map(|(start, end)| self.range_hash(start, end))
            .collect())
    }

    /// RFC 6962 `PROOF(old, D[0:new])`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        self.in_range(new)?;
        Ok(consistency_ranges(old, new)?
            .into_iter()
            .map(|(start, end)| self.range_hash(start, end))
            .collect())
    }

    fn in_range(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeOutOfRange {
                size,
                available: self.size(),
            });
        }
        Ok(())
    }
}

/// A range of leaves `[start, end)` whose MTH a proof needs.
pub type Range = (u64, u64);

/// The ranges whose MTHs make RFC 6962 `PATH(index, D[0:size])`, in proof order. A log that
/// keeps only some subtree hashes in memory computes a proof from these (see [`pieces`]).
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<Range>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    let (mut m, mut start, mut end) = (index, 0, size);
    // PATH recursion, unrolled: the sibling of each step is pushed, innermost first.
    let mut siblings = Vec::new();
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            siblings.push((start + k, end));
            end = start + k;
        } else {
            siblings.push((start, start + k));
            m -= k;
            start += k;
        }
    }
    out.extend(siblings.into_iter().rev());
    Ok(out)
}

/// The ranges whose MTHs make RFC 6962 `PROOF(old, D[0:new])`, in proof order.
pub fn consistency_ranges(old: u64, new: u64) -> Result<Vec<Range>, ProofError> {
    if old == 0 || old > new {
        return Err(ProofError::BadOldSize { old, new });
    }
    if old == new {
        return Ok(Vec::new());
    }
    // SUBPROOF recursion, unrolled: (m, start, end, complete) down to m == n.
    let (mut m, mut start, mut end, mut complete) = (old, 0, new, true);
    let mut siblings = Vec::new();
    let mut innermost = None;
    loop {
        let n = end - start;
        if m == n {
            if !complete {
                innermost = Some((start, end));
            }
            break;
        }
        let k = split(n);
        if m <= k {
            siblings.push((start + k, end));
            end = start + k;
        } else {
            siblings.push((start, start + k));
            m -= k;
            start += k;
            complete = false;
        }
    }
    Ok(innermost.into_iter().chain(siblings.into_iter().rev()).collect())
}

/// The perfect subtrees `(level, index)` of `[start, end)` — its binary decomposition, left
/// to right, largest first — whose hashes [`fold`] into the range's MTH. Ranges that proofs
/// ask for start aligned to their largest piece, so every piece is an aligned subtree.
pub fn pieces(start: u64, end: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let n = end - at;
        // The largest power of two that fits and keeps `at` aligned.
        let mut level = 63 - n.leading_zeros();
        if at != 0 {
            level = level.min(at.trailing_zeros());
        }
        out.push((level, at >> level));
        at += 1 << level;
    }
    out
}

/// The MTH of a range from its pieces' hashes (RFC 6962 splits the largest power of two off
/// the left, so the pieces combine from the right).
pub fn fold(hashes: &[Hash]) -> Hash {
    let mut iter = hashes.iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    iter.fold(*last, |right, left| node_hash(left, &right))
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(old_size: u64, new_size: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *old_root && sr == *new_root
}

impl Tree {
    /// Drops every leaf from `size` on (undoes appends that did not commit).
    pub fn truncate(&mut self, size: u64) {
        for (level, row) in self.levels.iter_mut().enumerate() {
            row.truncate(usize::try_from(size >> level).unwrap_or(usize::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MTH straight from the RFC definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn tree(n: u64) -> (Tree, Vec<Hash>) {
        let mut t = Tree::new();
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for l in &leaves {
            t.push(*l);
        }
        (t, leaves)
    }

    #[test]
    fn roots_match_the_rfc_definition_for_every_size() {
        let (t, leaves) = tree(70);
        for size in 0..=70u64 {
            assert_eq!(t.root_at(size).unwrap(), mth(&leaves[..size as usize]), "size {size}");
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies() {
        let (t, leaves) = tree(40);
        for size in 1..=40u64 {
            let root = t.root_at(size).unwrap();
            for i in 0..size {
                let proof = t.inclusion_proof(i, size).unwrap();
                assert!(
                    verify_inclusion(&leaves[i as usize], i, size, &proof, &root),
                    "inclusion {i} in {size}"
                );
                let other = leaf_hash(b"not in the log");
                assert!(
                    !verify_inclusion(&other, i, size, &proof, &root),
                    "a foreign leaf must not verify"
                );
            }
            for old in 1..=size {
                let proof = t.consistency_proof(old, size).unwrap();
                assert!(
                    verify_consistency(old, size, &t.root_at(old).unwrap(), &root, &proof),
                    "consistency {old} -> {size}"
                );
                if old < size {
                    let wrong = t.root_at(old - 1).unwrap_or_else(|_| empty_root());
                    assert!(!verify_consistency(old, size, &wrong, &root, &proof));
                }
            }
        }
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let (t, _) = tree(5);
        assert_eq!(
            t.inclusion_proof(5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            t.inclusion_proof(0, 6),
            Err(ProofError::SizeOutOfRange { size: 6, available: 5 })
        );
        assert_eq!(
            t.consistency_proof(0, 5),
            Err(ProofError::BadOldSize { old: 0, new: 5 })
        );
        assert_eq!(
            t.consistency_proof(4, 3),
            Err(ProofError::BadOldSize { old: 4, new: 3 })
        );
    }
}
