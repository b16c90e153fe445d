//! Witnessing: an institution keeps the newest checkpoint it has seen and
//! accepts a newer one only with a consistency proof from it. An inconsistency
//! means the operator rewrote history: the witness raises an alarm and refuses
//! every further checkpoint until an operator acknowledges.

use crate::merkle::{Hash, verify_consistency, verify_inclusion};
use crate::note::{Checkpoint, NoteError, Verifier};

/// Why a checkpoint or receipt was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// Bad signature or format.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The new checkpoint is not consistent with the one seen before: ALARM.
    #[error("audit log rewritten: checkpoint {new_size} is not consistent with checkpoint {old_size} seen before")]
    Inconsistent {
        /// Size seen before.
        old_size: u64,
        /// Size now offered.
        new_size: u64,
    },
    /// A receipt's inclusion proof does not verify.
    #[error("receipt for entry {0} does not verify against its checkpoint")]
    Inclusion(u64),
    /// The log asked to cosign from another tree size than the one this witness cosigned last
    /// (tlog-witness's 409 Conflict): the log should retry from `witness_size`.
    #[error("this witness's newest checkpoint has size {witness_size}")]
    Conflict {
        /// The size of the newest checkpoint this witness cosigned or accepted.
        witness_size: u64,
    },
    /// The request does not make sense (a tree smaller than the old size, a proof from nothing).
    #[error("bad cosigning request: {0}")]
    BadRequest(&'static str),
    /// An earlier alarm has not been acknowledged.
    #[error("witness in alarm state: an operator must acknowledge before trusting this gateway again")]
    Alarm,
}

/// How many recently accepted checkpoints a witness remembers (size and root).
const RECENT: usize = 64;

/// The witness state of one institution for one log.
#[derive(Debug, Clone)]
pub struct Witness {
    verifier: Verifier,
    origin: String,
    newest: Option<Checkpoint>,
    /// Checkpoints accepted lately, oldest first: each was proved consistent with the newest of
    /// its time, so with the newest now (consistency is transitive along one history). A receipt
    /// on one of them needs no proof again — under load every receipt of a batch, and every
    /// answer, comes on a checkpoint a witness has just accepted or cosigned.
    recent: std::collections::VecDeque<(u64, Hash)>,
    alarm: bool,
}

impl Witness {
    /// A witness that has seen nothing yet (or `newest`, restored from disk).
    pub fn new(verifier: Verifier, origin: String, newest: Option<Checkpoint>) -> Witness {
        Witness {
            verifier,
            origin,
            newest,
            recent: std::collections::VecDeque::new(),
            alarm: false,
        }
    }

    /// The newest checkpoint accepted.
    pub fn newest(&self) -> Option<&Checkpoint> {
        self.newest.as_ref()
    }

    /// Whether an inconsistency was seen and not acknowledged.
    pub fn in_alarm(&self) -> bool {
        self.alarm
    }

    /// The operator has investigated the alarm; `trusted` becomes the new reference.
    pub fn acknowledge(&mut self, trusted: Checkpoint) {
        self.alarm = false;
        self.recent.clear();
        self.newest = Some(trusted);
    }

    /// The root accepted lately for a tree of `size`, if any.
    fn recently(&self, size: u64) -> Option<&Hash> {
        self.recent.iter().rev().find(|(s, _)| *s == size).map(|(_, root)| root)
    }

    fn remember(&mut self, cp: &Checkpoint) {
        if self.recently(cp.size).is_none() {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back((cp.size, cp.root));
        }
    }

    /// Raises the alarm (restored from storage: an alarm survives restarts).
    pub fn raise_alarm(&mut self) {
        self.alarm = true;
    }

    /// Opens a signed checkpoint of this log (signature and origin), accepting nothing yet.
    pub fn open(&self, note: &str) -> Result<Checkpoint, WitnessError> {
        Ok(self.verifier.open_checkpoint(note, &self.origin)?)
    }

    /// The consistency proof [`observe`](Self::observe) needs for `cp`, as (smaller size,
    /// larger size) of the newest accepted tree and `cp`'s; `None` if none is needed.
    pub fn proof_needed(&self, cp: &Checkpoint) -> Option<(u64, u64)> {
        let old = self.newest.as_ref()?;
        if self.recently(cp.size) == Some(&cp.root) {
            return None;
        }
        (old.size != cp.size).then(|| (old.size.min(cp.size), old.size.max(cp.size)))
    }

    /// Accepts `cp` if it is consistent with the newest accepted checkpoint, `proof` being the
    /// consistency proof between the sizes [`proof_needed`](Self::proof_needed) named. An older
    /// checkpoint that is a prefix of the newest is accepted but does not replace it (receipts
    /// of concurrent calls arrive out of order); a tree that is not a prefix of the other, or
    /// two roots for one size, raise the alarm, which stays until acknowledged. True if `cp`
    /// became the newest.
    pub fn observe(&mut self, cp: Checkpoint, proof: &[Hash]) -> Result<bool, WitnessError> {
        if self.alarm {
            return Err(WitnessError::Alarm);
        }
        let Some(old) = &self.newest else {
            self.remember(&cp);
            self.newest = Some(cp);
            return Ok(true);
        };
        let (small, large) = if cp.size >= old.size { (old, &cp) } else { (&cp, old) };
        let consistent = if let Some(root) = self.recently(cp.size) {
            // Accepted lately: the same root again, or two roots for one size.
            *root == cp.root
        } else if small.size == large.size {
            small.root == large.root
        } else {
            // The empty tree is a prefix of every tree.
            small.size == 0 || verify_consistency(small.size, large.size, &small.root, &large.root, proof)
        };
        if !consistent {
            self.alarm = true;
            tracing::error!(seen = old.size, offered = cp.size, "ALARM: audit log rewritten");
            return Err(WitnessError::Inconsistent {
                old_size: old.size,
                new_size: cp.size,
            });
        }
        let newer = cp.size > old.size;
        self.remember(&cp);
        if newer {
            self.newest = Some(cp);
        }
        Ok(newer)
    }

    /// A log asks this witness to cosign `cp` (C2SP tlog-witness `add-checkpoint`): `old_size`
    /// must be the size of the newest checkpoint this witness holds, `proof` the consistency
    /// proof from it to `cp`. On success `cp` becomes the newest and may be cosigned; a tree
    /// that does not extend the newest raises the alarm (it is a fork the log signed).
    pub fn add_checkpoint(&mut self, old_size: u64, cp: Checkpoint, proof: &[Hash]) -> Result<(), WitnessError> {
        if self.alarm {
            return Err(WitnessError::Alarm);
        }
        let witness_size = self.newest.as_ref().map_or(0, |c| c.size);
        if old_size != witness_size {
            return Err(WitnessError::Conflict { witness_size });
        }
        if cp.size < old_size {
            return Err(WitnessError::BadRequest("the checkpoint is smaller than the old size"));
        }
        if let Some(old) = &self.newest {
            let consistent = if old.size == cp.size {
                old.root == cp.root
            } else {
                old.size == 0 || verify_consistency(old.size, cp.size, &old.root, &cp.root, proof)
            };
            if !consistent {
                self.alarm = true;
                tracing::error!(seen = old.size, offered = cp.size, "ALARM: audit log forked");
                return Err(WitnessError::Inconsistent {
                    old_size: old.size,
                    new_size: cp.size,
                });
            }
        } else if !proof.is_empty() {
            return Err(WitnessError::BadRequest(
                "a consistency proof from an empty tree must be empty",
            ));
        }
        self.remember(&cp);
        self.newest = Some(cp);
        Ok(())
    }

    /// Checks a receipt: the entry's leaf hash is included in the checkpoint's tree.
    pub fn check_receipt(
        &self,
        leaf: &Hash,
        index: u64,
        checkpoint: &Checkpoint,
        proof: &[Hash],
    ) -> Result<(), WitnessError> {
        if verify_inclusion(leaf, index, checkpoint.size, proof, &checkpoint.root) {
            Ok(())
        } else {
            Err(WitnessError::Inclusion(index))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{Tree, leaf_hash};
    use crate::note::{Signer, generate_key_pem};

    const ORIGIN: &str = "cii.test/audit";

    fn signed(signer: &Signer, tree: &Tree) -> String {
        signer.sign(
            &Checkpoint {
                origin: ORIGIN.into(),
                size: tree.size(),
                root: tree.root(),
            }
            .body(),
        )
    }

    #[test]
    fn a_witness_cosigns_only_what_extends_what_it_cosigned_before() {
        let signer = Signer::from_pem(ORIGIN, &generate_key_pem().unwrap()).unwrap();
        let mut witness = Witness::new(signer.verifier(), ORIGIN.into(), None);
        let mut tree = Tree::new();
        for i in 0..4u8 {
            tree.push(leaf_hash(&[i]));
        }
        let four = witness.open(&signed(&signer, &tree)).unwrap();
        assert_eq!(
            witness.add_checkpoint(3, four.clone(), &[]),
            Err(WitnessError::Conflict { witness_size: 0 })
        );
        assert_eq!(witness.add_checkpoint(0, four.clone(), &[]), Ok(()));
        // The same tree again is fine (a log that lost its cosignatures asks again).
        assert_eq!(witness.add_checkpoint(4, four, &[]), Ok(()));
        for i in 4..9u8 {
            tree.push(leaf_hash(&[i]));
        }
        let nine = witness.open(&signed(&signer, &tree)).unwrap();
        assert_eq!(
            witness.add_checkpoint(0, nine.clone(), &[]),
            Err(WitnessError::Conflict { witness_size: 4 })
        );
        let proof = tree.consistency_proof(4, 9).unwrap();
        assert_eq!(witness.add_checkpoint(4, nine, &proof), Ok(()));
        // A second branch from size 4, signed with the same key: refused, alarm raised.
        let mut branch = Tree::new();
        for i in 0..10u8 {
            branch.push(leaf_hash(&[if i < 4 { i } else { 100 + i }]));
        }
        let forked = witness.open(&signed(&signer, &branch)).unwrap();
        let proof = branch.consistency_proof(9, 10).unwrap();
        assert!(matches!(
            witness.add_checkpoint(9, forked, &proof),
            Err(WitnessError::Inconsistent { .. })
        ));
        assert!(witness.in_alarm());
        tree.push(leaf_hash(&[9]));
        let honest = witness.open(&signed(&signer, &tree)).unwrap();
        let proof = tree.consistency_proof(9, 10).unwrap();
        assert_eq!(witness.add_checkpoint(9, honest, &proof), Err(WitnessError::Alarm));
    }

    /// A checkpoint accepted lately is accepted again without a proof (the proof was checked
    /// once); another root for one of those sizes is a fork, and raises the alarm.
    #[test]
    fn a_checkpoint_accepted_lately_needs_no_proof_again_and_a_second_root_for_its_size_is_a_fork() {
        let signer = Signer::from_pem(ORIGIN, &generate_key_pem().unwrap()).unwrap();
        let mut witness = Witness::new(signer.verifier(), ORIGIN.into(), None);
        let mut tree = Tree::new();
        let mut checkpoints = Vec::new();
        for size in 1..=4u8 {
            tree.push(leaf_hash(&[size]));
            let cp = witness.open(&signed(&signer, &tree)).unwrap();
            let proof = if size == 1 {
                Vec::new()
            } else {
                tree.consistency_proof(u64::from(size) - 1, u64::from(size)).unwrap()
            };
            assert_eq!(witness.add_checkpoint(u64::from(size) - 1, cp.clone(), &proof), Ok(()));
            checkpoints.push(cp);
        }
        // A receipt on the tree of size 2, cosigned earlier: no proof needed, accepted as is.
        assert_eq!(witness.proof_needed(&checkpoints[1]), None);
        assert_eq!(witness.observe(checkpoints[1].clone(), &[]), Ok(false));
        // A tree of size 2 with another root, signed by the same key: the alarm.
        let mut other = Tree::new();
        other.push(leaf_hash(&[1]));
        other.push(leaf_hash(&[99]));
        let forked = witness.open(&signed(&signer, &other)).unwrap();
        assert_eq!(witness.proof_needed(&forked), Some((2, 4)));
        assert!(matches!(
            witness.observe(forked, &[]),
            Err(WitnessError::Inconsistent { .. })
        ));
        assert!(witness.in_alarm());
    }

    #[test]
    fn a_growing_log_is_accepted_and_a_rewritten_one_raises_the_alarm() {
        let signer = Signer::from_pem(ORIGIN, &generate_key_pem().unwrap()).unwrap();
        let mut witness = Witness::new(signer.verifier(), ORIGIN.into(), None);
        let mut tree = Tree::new();
        for i in 0..5u8 {
            tree.push(leaf_hash(&[i]));
        }
        let first = witness.open(&signed(&signer, &tree)).expect("opens");
        assert_eq!(witness.proof_needed(&first), None);
        assert_eq!(witness.observe(first, &[]), Ok(true));
        for i in 5..12u8 {
            tree.push(leaf_hash(&[i]));
        }
        let cp = witness.open(&signed(&signer, &tree)).expect("opens");
        assert_eq!(witness.proof_needed(&cp), Some((5, 12)));
        let proof = tree.consistency_proof(5, 12).unwrap();
        assert_eq!(witness.observe(cp.clone(), &proof), Ok(true), "consistent growth");
        assert_eq!(witness.newest(), Some(&cp));
        // A receipt of entry 7 verifies against it.
        let inclusion = tree.inclusion_proof(7, 12).unwrap();
        assert!(witness.check_receipt(&leaf_hash(&[7]), 7, &cp, &inclusion).is_ok());
        assert_eq!(
            witness.check_receipt(&leaf_hash(&[8]), 7, &cp, &inclusion),
            Err(WitnessError::Inclusion(7))
        );

        // The operator rewrites entry 3 and signs a bigger tree: inconsistent with size 12.
        let mut forged = Tree::new();
        for i in 0..15u8 {
            forged.push(leaf_hash(&[if i == 3 { 99 } else { i }]));
        }
        let proof = forged.consistency_proof(12, 15).unwrap();
        let forged_cp = witness.open(&signed(&signer, &forged)).unwrap();
        assert_eq!(
            witness.observe(forged_cp, &proof),
            Err(WitnessError::Inconsistent {
                old_size: 12,
                new_size: 15
            })
        );
        assert!(witness.in_alarm());
        // Even an honest checkpoint is refused until an operator acknowledges.
        tree.push(leaf_hash(&[12]));
        let honest = tree.consistency_proof(12, 13).unwrap();
        let honest_cp = witness.open(&signed(&signer, &tree)).unwrap();
        assert_eq!(witness.observe(honest_cp.clone(), &honest), Err(WitnessError::Alarm));
        witness.acknowledge(cp);
        assert_eq!(witness.observe(honest_cp, &honest), Ok(true));
        // An older checkpoint that is a prefix (a receipt of a concurrent call) is accepted
        // but does not replace the newest.
        let prefix_tree = {
            let mut t = Tree::new();
            for i in 0..4u8 {
                t.push(leaf_hash(&[i]));
            }
            t
        };
        let prefix = witness.open(&signed(&signer, &prefix_tree)).unwrap();
        assert_eq!(witness.proof_needed(&prefix), Some((4, 13)));
        assert_eq!(
            witness.observe(prefix, &tree.consistency_proof(4, 13).unwrap()),
            Ok(false)
        );
        assert_eq!(witness.newest().map(|c| c.size), Some(13));
        // A smaller tree that is not a prefix is a fork.
        let mut other = Tree::new();
        other.push(leaf_hash(&[42]));
        let other_cp = witness.open(&signed(&signer, &other)).unwrap();
        assert!(matches!(
            witness.observe(other_cp, &tree.consistency_proof(1, 13).unwrap()),
            Err(WitnessError::Inconsistent { .. })
        ));
    }
}
