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
    /// An earlier alarm has not been acknowledged.
    #[error("witness in alarm state: an operator must acknowledge before trusting this gateway again")]
    Alarm,
}

/// The witness state of one institution for one log.
#[derive(Debug, Clone)]
pub struct Witness {
    verifier: Verifier,
    origin: String,
    newest: Option<Checkpoint>,
    alarm: bool,
}

impl Witness {
    /// A witness that has seen nothing yet (or `newest`, restored from disk).
    pub fn new(verifier: Verifier, origin: String, newest: Option<Checkpoint>) -> Witness {
        Witness {
            verifier,
            origin,
            newest,
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
        self.newest = Some(trusted);
    }

    /// Accepts `note` if it is signed and consistent with what was seen, given
    /// `proof` (a consistency proof from the newest accepted size).
    pub fn observe(&mut self, note: &str, proof: &[Hash]) -> Result<Checkpoint, WitnessError> {
        if self.alarm {
            return Err(WitnessError::Alarm);
        }
        let cp = self.verifier.open_checkpoint(note, &self.origin)?;
        if let Some(old) = &self.newest {
            let consistent = if cp.size < old.size {
                false
            } else {
                verify_consistency(old.size, cp.size, &old.root, &cp.root, proof)
            };
            if !consistent {
                self.alarm = true;
                tracing::error!(old_size = old.size, new_size = cp.size, "ALARM: audit log rewritten");
                return Err(WitnessError::Inconsistent {
                    old_size: old.size,
                    new_size: cp.size,
                });
            }
            if cp.size == old.size {
                return Ok(cp);
            }
        }
        self.newest = Some(cp.clone());
        Ok(cp)
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
    fn a_growing_log_is_accepted_and_a_rewritten_one_raises_the_alarm() {
        let signer = Signer::from_pem(ORIGIN, &generate_key_pem().unwrap()).unwrap();
        let mut witness = Witness::new(signer.verifier(), ORIGIN.into(), None);
        let mut tree = Tree::new();
        for i in 0..5u8 {
            tree.push(leaf_hash(&[i]));
        }
        witness.observe(&signed(&signer, &tree), &[]).expect("first checkpoint");
        for i in 5..12u8 {
            tree.push(leaf_hash(&[i]));
        }
        let proof = tree.consistency_proof(5, 12).unwrap();
        let cp = witness
            .observe(&signed(&signer, &tree), &proof)
            .expect("consistent growth");
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
        assert_eq!(
            witness.observe(&signed(&signer, &forged), &proof),
            Err(WitnessError::Inconsistent {
                old_size: 12,
                new_size: 15
            })
        );
        assert!(witness.in_alarm());
        // Even an honest checkpoint is refused until an operator acknowledges.
        tree.push(leaf_hash(&[12]));
        let honest = tree.consistency_proof(12, 13).unwrap();
        assert_eq!(
            witness.observe(&signed(&signer, &tree), &honest),
            Err(WitnessError::Alarm)
        );
        witness.acknowledge(cp);
        assert!(witness.observe(&signed(&signer, &tree), &honest).is_ok());
        // A smaller tree than seen is a rollback.
        let mut small = Tree::new();
        small.push(leaf_hash(&[0]));
        assert!(matches!(
            witness.observe(&signed(&signer, &small), &[]),
            Err(WitnessError::Inconsistent { .. })
        ));
    }
}
