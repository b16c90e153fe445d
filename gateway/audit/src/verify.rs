//! Verifying a whole log from its store: every entry decodes canonically and
//! sits at its own index, every stored leaf hash is right, every checkpoint is
//! signed by the log's key and matches the tree recomputed from the entries,
//! consecutive checkpoints are consistent, and the newest covers every entry.
//! Entries whose period retention destroyed keep only their leaf hash: they
//! still rebuild the tree (so every checkpoint still verifies) but their
//! bodies are counted as expired, not checked. A body that should open and
//! does not is damage. An entry whose bytes hash right but do not decode
//! (oversized, malformed: written by a bug or straight into the store) is
//! listed by index and the walk goes on with the hash of its bytes, so every
//! checkpoint is still checked and one bad entry hides nothing after it.
//! Reads only; the verifier never uses the writer.

use crate::entry::decode;
use crate::merkle::{Tree, leaf_hash, verify_consistency};
use crate::note::{Checkpoint, Verifier};
use crate::store::{Body, Store, StoreError};

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
    /// Entries whose bodies retention destroyed (leaf hashes verified in the tree only).
    pub expired: u64,
    /// The periods those entries belong to, oldest first.
    pub expired_periods: Vec<String>,
    /// Entries in the tree whose bytes cannot be read as an entry: index and problem, in order.
    /// The log's structure verified; these entries' content cannot be shown.
    pub undecodable: Vec<(u64, String)>,
}

fn bad(index: u64, problem: impl Into<String>) -> VerifyError {
    VerifyError::Bad {
        index,
        problem: problem.into(),
    }
}

/// Verifies the log in `store` against `verifier` and `origin`; `progress(done, total)` is called as it goes.
///
/// Works on a log that is being appended to: each batch commits its entries
/// and its checkpoint together, but the checkpoints and the entries are read
/// by separate queries, so entries read after the checkpoints may be newer
/// than them. The checkpoints are therefore read again once the entries are
/// read; entries that even the second read does not cover are an error.
pub async fn verify(
    store: &Store,
    verifier: &Verifier,
    origin: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, VerifyError> {
    let mut walk = Walk::default();
    walk.add_checkpoints(store, verifier, origin).await?;
    let total = walk.newest_size();
    // Everything committed until now, matched against the checkpoints as it comes.
    loop {
        let batch = store.entries(walk.tree.size(), 10_000).await?;
        if batch.is_empty() {
            break;
        }
        for stored in batch {
            walk.push(stored)?;
        }
        progress(walk.tree.size(), total.max(walk.tree.size()));
    }
    let read = walk.tree.size();
    if walk.covered() < read {
        // Entries newer than the first checkpoint read: their checkpoints were
        // committed with them, so a second read finds them.
        walk.add_checkpoints(store, verifier, origin).await?;
        walk.settle()?;
        let target = walk.newest_size();
        while walk.tree.size() < target {
            let batch = store.entries(walk.tree.size(), 10_000).await?;
            if batch.is_empty() {
                break;
            }
            for stored in batch.into_iter().take_while(|e| e.index < target) {
                walk.push(stored)?;
            }
        }
    }
    let entries = walk.tree.size();
    if let Some(cp) = walk.pending.front() {
        return Err(bad(
            entries,
            format!(
                "log truncated: a signed checkpoint covers {} entries, the store holds {entries}",
                cp.size
            ),
        ));
    }
    let covered = walk.covered();
    if read > covered {
        return Err(bad(
            covered,
            format!("entries {covered}..{read} are not covered by any signed checkpoint"),
        ));
    }
    let destroyed: std::collections::BTreeMap<String, i64> = store
        .periods()
        .await?
        .into_iter()
        .filter_map(|p| p.destroyed_micros.map(|at| (p.period, at)))
        .collect();
    let early = store.early_shreddings().await?;
    walk.check_retention(&destroyed, &early)?;
    progress(entries, entries);
    Ok(Report {
        entries,
        checkpoints: walk.checkpoints,
        newest: walk.last_verified,
        expired: walk.expired,
        expired_periods: walk.expired_periods.into_iter().collect(),
        undecodable: walk.undecodable,
    })
}

/// The state of a verification: the tree rebuilt so far and the checkpoints
/// still to match.
#[derive(Default)]
struct Walk {
    tree: Tree,
    /// Checkpoints read, not yet reached by the tree, smallest first.
    pending: std::collections::VecDeque<Checkpoint>,
    /// The newest checkpoint matched against the tree.
    last_verified: Option<Checkpoint>,
    /// Checkpoints matched.
    checkpoints: u64,
    /// Entries with expired bodies.
    expired: u64,
    expired_periods: std::collections::BTreeSet<String>,
    undecodable: Vec<(u64, String)>,
    /// Each expired period's first entry.
    first_expired: std::collections::BTreeMap<String, u64>,
    /// The readable retention runs (not dry runs).
    runs: Vec<RetentionRun>,
    /// The readable early-shredding requests and approvals, by index.
    shreddings: std::collections::BTreeMap<u64, Shredding>,
}

/// What a readable SHREDDING_REQUESTED or SHREDDING_APPROVED entry says.
#[derive(Debug)]
struct Shredding {
    approval: bool,
    time_micros: i64,
    acting_user: String,
    period: String,
    role: String,
    /// For an approval: the request's index.
    request: Option<u64>,
}

impl Shredding {
    fn of(entry: &crate::Entry) -> Option<Shredding> {
        let approval = entry.kind == crate::EntryKind::ShreddingApproved as i32;
        if !approval && entry.kind != crate::EntryKind::ShreddingRequested as i32 {
            return None;
        }
        let value = |key: &str| entry.detail.split_whitespace().find_map(|w| w.strip_prefix(key));
        Some(Shredding {
            approval,
            time_micros: entry.time_micros,
            acting_user: entry.acting_user.clone(),
            period: value("period=")?.to_owned(),
            role: value("role=")?.to_owned(),
            request: value("request=").and_then(|r| r.parse().ok()),
        })
    }
}

/// What a readable RETENTION_RUN entry says.
#[derive(Debug)]
struct RetentionRun {
    time_micros: i64,
    retention_days: u32,
    periods: Vec<String>,
}

impl RetentionRun {
    /// The run of `entry`, if it is one that destroyed (not a dry run).
    fn of(entry: &crate::Entry) -> Option<RetentionRun> {
        if entry.kind != crate::EntryKind::RetentionRun as i32 {
            return None;
        }
        let words: Vec<&str> = entry.detail.split_whitespace().collect();
        if words.contains(&"dry_run") {
            return None;
        }
        let value = |key: &str| words.iter().find_map(|w| w.strip_prefix(key));
        Some(RetentionRun {
            time_micros: entry.time_micros,
            retention_days: value("retention_days=").and_then(|d| d.parse().ok()).unwrap_or(0),
            periods: value("periods=")
                .filter(|p| *p != "none")
                .map(|p| p.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }
}

impl Walk {
    fn covered(&self) -> u64 {
        self.last_verified.as_ref().map_or(0, |c| c.size)
    }

    fn newest_size(&self) -> u64 {
        self.pending.back().map_or(self.covered(), |c| c.size)
    }

    /// Reads the checkpoints newer than every one known, checking their signatures.
    async fn add_checkpoints(&mut self, store: &Store, verifier: &Verifier, origin: &str) -> Result<(), VerifyError> {
        let mut previous_size = self.newest_size();
        let known = self.newest_size();
        let first_read = self.last_verified.is_none() && self.pending.is_empty();
        for (size, note) in store.checkpoints().await? {
            if !first_read && size <= known {
                continue;
            }
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
            self.pending.push_back(cp);
        }
        Ok(())
    }

    /// Adds the next stored entry and checks every checkpoint it completes.
    fn push(&mut self, stored: crate::store::StoredEntry) -> Result<(), VerifyError> {
        let expected = self.tree.size();
        if stored.index != expected {
            return Err(bad(
                expected,
                format!("entry {expected} is missing (next stored index is {})", stored.index),
            ));
        }
        let leaf = match &stored.body {
            Body::Readable(bytes) => {
                // The hash of the bytes as stored, whatever their size or content.
                let leaf = leaf_hash(bytes);
                if stored.leaf_hash != leaf {
                    return Err(bad(expected, "stored leaf hash does not match the entry"));
                }
                match decode(bytes) {
                    Ok(entry) if entry.index != expected => {
                        return Err(bad(
                            expected,
                            format!("entry stored at {expected} says it is entry {}", entry.index),
                        ));
                    }
                    Ok(entry) => {
                        self.runs.extend(RetentionRun::of(&entry));
                        if let Some(shredding) = Shredding::of(&entry) {
                            self.shreddings.insert(expected, shredding);
                        }
                    }
                    Err(e) => self.undecodable.push((expected, e.to_string())),
                }
                leaf
            }
            Body::Expired { period } => {
                self.expired += 1;
                self.expired_periods.insert(period.clone());
                self.first_expired.entry(period.clone()).or_insert(expected);
                <[u8; 32]>::try_from(stored.leaf_hash.as_slice())
                    .map_err(|_| bad(expected, "stored leaf hash is not 32 bytes"))?
            }
            // A sealed body that does not open cannot be hashed: damage, not content.
            Body::Unreadable(problem) => return Err(bad(expected, problem.clone())),
        };
        self.tree.push(leaf);
        self.settle()
    }

    /// Retention bound by the log itself. Every destroyed period:
    /// - was due when a logged retention run ran (its end at least the run's own limit, and
    ///   never less than the legal 365 days, before the run);
    /// - is named by a logged run, or is older than a month a logged run names (the run that
    ///   named an older month may itself be shredded since);
    /// - was destroyed at a time between its due date and the newest logged run (a key
    ///   destroyed with a forged later time, which the store's trigger cannot tell, fails here).
    ///
    /// A month shredded early is exempt from these when the store names a readable approval
    /// for it whose request is for the same month, by another user of the other role, and the
    /// key was destroyed within an hour of the approval.
    fn check_retention(
        &self,
        destroyed: &std::collections::BTreeMap<String, i64>,
        early: &std::collections::BTreeMap<String, u64>,
    ) -> Result<(), VerifyError> {
        const DAY_MICROS: i64 = 86_400 * 1_000_000;
        // A run destroys its months right after its entry is durable; an hour covers a slow store.
        const RUN_SLACK_MICROS: i64 = 3_600 * 1_000_000;
        let limit = |r: &RetentionRun| i64::from(r.retention_days.max(365)) * DAY_MICROS;
        let latest_due = self.runs.iter().map(|r| r.time_micros.saturating_sub(limit(r))).max();
        let latest_run = self.runs.iter().map(|r| r.time_micros).max();
        let newest_named = self.runs.iter().flat_map(|r| r.periods.iter()).max();
        for (period, &index) in &self.first_expired {
            let at = destroyed.get(period).copied().unwrap_or(i64::MAX);
            if early
                .get(period)
                .is_some_and(|&approval| self.approved_early(period, approval, at, RUN_SLACK_MICROS))
            {
                continue;
            }
            let named = self.runs.iter().any(|r| r.periods.contains(period))
                || newest_named.is_some_and(|newest| period < newest);
            if !named {
                return Err(bad(
                    index,
                    format!("period {period} was destroyed, but no retention run in the log names it"),
                ));
            }
            let end = crate::body::period_end_micros(period);
            if end.is_none_or(|end| latest_due.is_none_or(|due| end > due)) {
                return Err(bad(
                    index,
                    format!("period {period} was destroyed before it was due under the retention limit"),
                ));
            }
            if latest_run.is_none_or(|run| at > run.saturating_add(RUN_SLACK_MICROS)) {
                return Err(bad(
                    index,
                    format!("period {period} says it was destroyed after the newest retention run in the log"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the log holds the approval `approval` of an early shredding of `period`, asked
    /// for by another user of the other role, and the key went at most `slack` after it.
    fn approved_early(&self, period: &str, approval: u64, destroyed_at: i64, slack: i64) -> bool {
        let Some(approved) = self
            .shreddings
            .get(&approval)
            .filter(|s| s.approval && s.period == period)
        else {
            return false;
        };
        let Some(asked) = approved
            .request
            .and_then(|r| self.shreddings.get(&r))
            .filter(|s| !s.approval && s.period == period)
        else {
            return false;
        };
        asked.acting_user != approved.acting_user
            && asked.role != approved.role
            && asked.time_micros <= approved.time_micros
            && (approved.time_micros..=approved.time_micros.saturating_add(slack)).contains(&destroyed_at)
    }

    /// Checks every pending checkpoint the tree has reached: its root, and
    /// its consistency with the previous one.
    fn settle(&mut self) -> Result<(), VerifyError> {
        while self.pending.front().is_some_and(|cp| cp.size <= self.tree.size()) {
            let Some(cp) = self.pending.pop_front() else { break };
            let start = self.covered();
            let root = self.tree.root_at(cp.size).map_err(|e| bad(start, e.to_string()))?;
            if cp.root != root {
                return Err(bad(
                    start,
                    format!(
                        "signed checkpoint of size {} does not match the entries {start}..{}",
                        cp.size, cp.size
                    ),
                ));
            }
            if let Some(prev) = &self.last_verified {
                let proof = self
                    .tree
                    .consistency_proof(prev.size, cp.size)
                    .map_err(|e| bad(start, e.to_string()))?;
                if !verify_consistency(prev.size, cp.size, &prev.root, &cp.root, &proof) {
                    return Err(bad(
                        start,
                        format!("checkpoints {} and {} are inconsistent", prev.size, cp.size),
                    ));
                }
            }
            self.last_verified = Some(cp);
            self.checkpoints += 1;
        }
        Ok(())
    }
}
