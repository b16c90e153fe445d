//! The node witnesses the gateway's audit log. Every receipt the gateway
//! hands out (enrolment, and transfers with the exchanges) is checked: the
//! checkpoint is signed by the log's key, the entry is included in it, and the
//! checkpoint is consistent with the newest one this node accepted before. A
//! rewritten log raises the alarm, which is stored: the node then refuses to
//! exchange until an operator has investigated. The rule itself is
//! `cii_audit::witness::Witness` (pure); this adds the node's store and the
//! gateway's consistency proofs.
//!
//! When the registry lists witnesses, a receipt counts only on a checkpoint
//! cosigned by more than half of them (C2SP tlog-cosignature): the node asks
//! the gateway for the newest such checkpoint covering the entry and checks
//! the entry's inclusion there, so a gateway showing this node a branch the
//! other witnesses never saw cannot get a receipt accepted. The node is itself
//! one of the witnesses: [`LogWitness::add_checkpoint`] is its side of C2SP
//! tlog-witness, on the same state as its receipt checks.

use std::future::Future;
use std::sync::Arc;

use cii_audit::cosignature::{Cosigner, Quorum};
use cii_audit::merkle::Hash;
use cii_audit::note::Verifier;
use cii_audit::witness::{Witness, WitnessError};
use cii_kit::registry::Live;
use cii_types::PeerIdentity;

use crate::store::{Store, StoreError};

/// Why a receipt was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessFailure {
    /// The log was seen rewritten (now or before): stop.
    #[error("the gateway's audit log is not consistent with what this node saw before ({0}); exchanges are stopped")]
    Alarm(String),
    /// The receipt itself is malformed, badly signed, or its entry not included.
    #[error("the receipt does not verify: {0}")]
    BadReceipt(String),
    /// The gateway did not give the consistency proof.
    #[error("consistency proof unavailable: {0}")]
    ProofUnavailable(String),
    /// No checkpoint cosigned by a quorum of witnesses covers the entry (yet).
    #[error("the receipt is not on a checkpoint cosigned by a quorum of witnesses: {0}")]
    NotWitnessed(String),
    /// A checkpoint offered for cosigning is not one of the log's.
    #[error("not a checkpoint of the audit log: {0}")]
    CheckpointInvalid(String),
    /// Asked to cosign without being a witness the registry lists with this key.
    #[error("not a witness of the audit log: {0}")]
    NotAWitness(&'static str),
    /// The node's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl WitnessFailure {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            WitnessFailure::Alarm(_) => "AUDIT_LOG_ALARM",
            WitnessFailure::BadReceipt(_) => "RECEIPT_INVALID",
            WitnessFailure::ProofUnavailable(_) => "AUDIT_UNAVAILABLE",
            WitnessFailure::NotWitnessed(_) => "RECEIPT_NOT_WITNESSED",
            WitnessFailure::CheckpointInvalid(_) => "CHECKPOINT_INVALID",
            WitnessFailure::NotAWitness(_) => "NOT_A_WITNESS",
            WitnessFailure::Store(_) => "NODE_STORE",
        }
    }
}

/// How long a receipt check waits for the gateway's consistency proof.
const PROOF_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// The witness of one node (or of an independent witness process).
pub struct LogWitness {
    /// The log's name (for `Debug`).
    log: String,
    store: Arc<Store>,
    /// Who the network's witnesses are (the active registry's list).
    witnesses: Witnesses,
    /// This witness's identity and cosigning key (PKCS#8 PEM), if it cosigns.
    cosigning: Option<(PeerIdentity, CosigningKey)>,
    /// Serialises checks, so the newest checkpoint only moves forward.
    witness: tokio::sync::Mutex<Witness>,
    /// The stored alarm, mirrored here so the hot path reads no database.
    alarm: std::sync::atomic::AtomicBool,
    /// Checkpoint notes already verified (see [`VerifiedNotes`]).
    verified: std::sync::Mutex<VerifiedNotes>,
}

/// How many verified checkpoint notes a witness remembers, of each kind.
const VERIFIED_NOTES: usize = 64;

/// Checkpoint notes already verified, by SHA-256 of the whole note text (body and every
/// signature line): under load every receipt of a delivery batch, and every answer settled by
/// one cosigning round, comes on the same note, and checking it again costs one Ed25519
/// verification per signature (the log's, and each witness's). A note that differs in any byte
/// is verified afresh. What a quorum cosigned is forgotten when the registry's witness list
/// changes (a witness removed or its key replaced may no longer count); what the log's key
/// signed stays true for this process's life (the log's key is fixed at start). Only successes
/// are kept, in bounded queues.
#[derive(Debug, Default)]
struct VerifiedNotes {
    /// The witness list (vkey, independent) the quorum and `cosigned` are for.
    listed: Vec<(String, bool)>,
    quorum: Quorum,
    /// Notes a quorum of `listed` cosigned.
    cosigned: std::collections::VecDeque<[u8; 32]>,
    /// Notes the log's key signed, with their content.
    signed: std::collections::VecDeque<([u8; 32], cii_audit::note::Checkpoint)>,
    /// How many checks were answered from memory.
    hits: u64,
}

fn note_digest(note: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, note.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn remember<T>(queue: &mut std::collections::VecDeque<T>, item: T) {
    if queue.len() >= VERIFIED_NOTES {
        queue.pop_front();
    }
    queue.push_back(item);
}

impl std::fmt::Debug for LogWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWitness").field("log", &self.log).finish()
    }
}

/// A receipt as the gateway returns it.
#[derive(Debug, Clone)]
pub struct ReceiptParts<'a> {
    /// The entry's index.
    pub index: u64,
    /// The entry's leaf hash.
    pub leaf_hash: &'a [u8],
    /// The signed checkpoint.
    pub checkpoint: &'a str,
    /// The inclusion proof.
    pub inclusion_proof: &'a [Vec<u8>],
}

fn hashes(raw: &[Vec<u8>]) -> Result<Vec<Hash>, WitnessFailure> {
    raw.iter()
        .map(|h| {
            Hash::try_from(h.as_slice()).map_err(|_| WitnessFailure::BadReceipt("a proof hash is not 32 bytes".into()))
        })
        .collect()
}

/// The network's witnesses, read at each use (the registry's list, reloaded when it changes).
pub type Witnesses = Arc<dyn Fn() -> Vec<cii_kit::registry::Witness> + Send + Sync>;

/// The witnesses the active registry lists.
pub fn witnesses_of(registry: Live) -> Witnesses {
    Arc::new(move || registry.current().witnesses().to_vec())
}

/// A cosigning key in PKCS#8 PEM (never printed; wiped from memory when dropped).
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct CosigningKey(pub String);

impl std::fmt::Debug for CosigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CosigningKey(..)")
    }
}

/// What a witness answers a log that asks it to cosign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cosigning {
    /// The cosignature line.
    Cosigned(String),
    /// The log started from another size: this witness's newest.
    WitnessSize(u64),
}

impl LogWitness {
    /// Restores the witness from the node's store; `cosigning` is this witness's identity
    /// and key, if it cosigns.
    pub async fn open(
        verifier: Verifier,
        store: Arc<Store>,
        witnesses: Witnesses,
        cosigning: Option<(PeerIdentity, CosigningKey)>,
    ) -> Result<LogWitness, WitnessFailure> {
        let log = verifier.name().to_owned();
        let mut witness = Witness::new(verifier, log.clone(), None);
        let mut alarm = false;
        if let Some((note, raised)) = store.witness().await? {
            let newest = witness
                .open(&note)
                .map_err(|e| WitnessFailure::BadReceipt(format!("stored checkpoint: {e}")))?;
            witness.acknowledge(newest);
            if raised {
                witness.raise_alarm();
            }
            alarm = raised;
        }
        Ok(LogWitness {
            log,
            store,
            witnesses,
            cosigning,
            witness: tokio::sync::Mutex::new(witness),
            alarm: std::sync::atomic::AtomicBool::new(alarm),
            verified: std::sync::Mutex::default(),
        })
    }

    /// The tree size of the newest accepted checkpoint (0 if none).
    pub async fn newest_size(&self) -> u64 {
        self.witness.lock().await.newest().map_or(0, |c| c.size)
    }

    /// Whether the alarm was raised (the node then sends nothing).
    pub fn in_alarm(&self) -> bool {
        self.alarm.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Checks a receipt; `consistency(old, new)` fetches an RFC 6962 consistency proof
    /// between two tree sizes from the gateway.
    pub async fn check<F, Fut>(&self, receipt: &ReceiptParts<'_>, consistency: F) -> Result<(), WitnessFailure>
    where
        F: FnOnce(u64, u64) -> Fut,
        Fut: Future<Output = Result<Vec<Vec<u8>>, String>>,
    {
        let mut witness = self.witness.lock().await;
        if self.in_alarm() {
            return Err(WitnessFailure::Alarm("alarm raised earlier and not cleared".into()));
        }
        let bad = |e: WitnessError| WitnessFailure::BadReceipt(e.to_string());
        let cp = self.open_note(&witness, receipt.checkpoint).map_err(bad)?;
        let leaf = Hash::try_from(receipt.leaf_hash)
            .map_err(|_| WitnessFailure::BadReceipt("leaf hash is not 32 bytes".into()))?;
        witness
            .check_receipt(&leaf, receipt.index, &cp, &hashes(receipt.inclusion_proof)?)
            .map_err(|_| {
                WitnessFailure::BadReceipt(format!("entry {} is not included in the checkpoint", receipt.index))
            })?;
        let proof = match witness.proof_needed(&cp) {
            // Bounded: the witness's lock is held meanwhile (the gateway may be asking this
            // witness to cosign).
            Some((small, large)) => hashes(
                &tokio::time::timeout(PROOF_DEADLINE, consistency(small, large))
                    .await
                    .map_err(|_| WitnessFailure::ProofUnavailable("the gateway did not answer in time".into()))?
                    .map_err(WitnessFailure::ProofUnavailable)?,
            )?,
            None => Vec::new(),
        };
        // What the store says first, then memory: a failed write leaves both as they were.
        let mut next = witness.clone();
        let size = cp.size;
        match next.observe(cp, &proof) {
            Ok(true) => {
                self.store.save_checkpoint(size, receipt.checkpoint).await?;
                *witness = next;
            }
            // Not newer: nothing to store, but remembered as accepted (`Witness::recent`).
            Ok(false) => *witness = next,
            Err(WitnessError::Inconsistent { old_size, new_size }) => {
                let problem = format!("checkpoints of sizes {old_size} and {new_size} are inconsistent");
                let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
                self.store.raise_alarm(receipt.checkpoint, &problem, now).await?;
                self.alarm.store(true, std::sync::atomic::Ordering::SeqCst);
                *witness = next;
                return Err(WitnessFailure::Alarm(format!("sizes {old_size} and {new_size}")));
            }
            Err(e) => return Err(WitnessFailure::Alarm(e.to_string())),
        }
        Ok(())
    }
}

impl LogWitness {
    fn verified(&self) -> std::sync::MutexGuard<'_, VerifiedNotes> {
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a quorum of the witnesses the active registry lists cosigned `note`; `None` if
    /// the registry lists no witnesses (receipts then rest on the log's key alone).
    fn cosigned(&self, note: &str) -> Option<Result<(), cii_audit::cosignature::NoQuorum>> {
        let listed: Vec<(String, bool)> = (self.witnesses)()
            .iter()
            .map(|w| (w.vkey.clone(), w.is_independent()))
            .collect();
        let digest = note_digest(note);
        let quorum = {
            let mut verified = self.verified();
            if verified.listed != listed || verified.quorum.is_empty() != listed.is_empty() {
                let (quorum, problems) = Quorum::from_vkeys(listed.iter().map(|(vkey, i)| (vkey.as_str(), *i)));
                for (vkey, e) in problems {
                    tracing::error!(%vkey, error = %e, "unusable witness key in the registry (counted, never cosigning)");
                }
                verified.quorum = quorum;
                verified.listed = listed.clone();
                verified.cosigned.clear();
            }
            if verified.quorum.is_empty() {
                return None;
            }
            if verified.cosigned.contains(&digest) {
                verified.hits += 1;
                return Some(Ok(()));
            }
            verified.quorum.clone()
        };
        // Verified outside the lock: other receipts' checks go on meanwhile.
        let result = quorum.check(note);
        if result.is_ok() {
            let mut verified = self.verified();
            // Kept only if the witness list did not change while this was verified.
            if verified.listed == listed {
                remember(&mut verified.cosigned, digest);
            }
        }
        Some(result)
    }

    /// Opens a checkpoint note of the log (its signature and origin), or recalls it if this
    /// very note was opened before.
    fn open_note(&self, witness: &Witness, note: &str) -> Result<cii_audit::note::Checkpoint, WitnessError> {
        let digest = note_digest(note);
        {
            let mut verified = self.verified();
            if let Some(cp) = verified
                .signed
                .iter()
                .find(|(d, _)| *d == digest)
                .map(|(_, cp)| cp.clone())
            {
                verified.hits += 1;
                return Ok(cp);
            }
        }
        let cp = witness.open(note)?;
        remember(&mut self.verified().signed, (digest, cp.clone()));
        Ok(cp)
    }

    /// How many signature checks were answered from the notes already verified.
    pub fn verified_hits(&self) -> u64 {
        self.verified().hits
    }

    /// The log asks this witness to cosign `note` (C2SP tlog-witness `add-checkpoint`): it must
    /// be signed by the log's key and extend the newest checkpoint this witness holds
    /// (`old_size`, `proof`). A tree that does not extend it raises the alarm and is kept as
    /// evidence; the witness then cosigns nothing until an operator clears it.
    pub async fn add_checkpoint(
        &self,
        old_size: u64,
        proof: &[Vec<u8>],
        note: &str,
    ) -> Result<Cosigning, WitnessFailure> {
        let (identity, key) = self
            .cosigning
            .as_ref()
            .ok_or(WitnessFailure::NotAWitness("this process has no cosigning key"))?;
        let witnesses = (self.witnesses)();
        let listed = witnesses
            .iter()
            .find(|w| w.identity == *identity)
            .ok_or(WitnessFailure::NotAWitness("the registry does not list this witness"))?;
        let cosigner = Cosigner::for_vkey(&key.0, &listed.vkey).ok_or(WitnessFailure::NotAWitness(
            "the cosigning key is not the one the registry lists",
        ))?;
        let proof = hashes(proof)?;
        let mut witness = self.witness.lock().await;
        if self.in_alarm() {
            return Err(WitnessFailure::Alarm("alarm raised earlier and not cleared".into()));
        }
        let cp = witness
            .open(note)
            .map_err(|e| WitnessFailure::CheckpointInvalid(e.to_string()))?;
        let size = cp.size;
        let mut next = witness.clone();
        match next.add_checkpoint(old_size, cp, &proof) {
            Ok(()) => {
                // Durable before the cosignature leaves: a restarted witness never cosigns less.
                self.store.save_checkpoint(size, note).await?;
                *witness = next;
                let body = cii_audit::cosignature::split_note(note)
                    .map_err(|e| WitnessFailure::CheckpointInvalid(e.to_string()))?
                    .0;
                let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
                Ok(Cosigning::Cosigned(cosigner.cosign(body, now)))
            }
            Err(WitnessError::Conflict { witness_size }) => Ok(Cosigning::WitnessSize(witness_size)),
            Err(WitnessError::Inconsistent { old_size, new_size }) => {
                let problem =
                    format!("offered to cosign: checkpoints of sizes {old_size} and {new_size} are inconsistent");
                let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
                self.store.raise_alarm(note, &problem, now).await?;
                self.alarm.store(true, std::sync::atomic::Ordering::SeqCst);
                *witness = next;
                Err(WitnessFailure::Alarm(format!("sizes {old_size} and {new_size}")))
            }
            Err(WitnessError::Alarm) => Err(WitnessFailure::Alarm("alarm raised earlier and not cleared".into())),
            Err(e) => Err(WitnessFailure::CheckpointInvalid(e.to_string())),
        }
    }

    /// Checks a receipt from the gateway, fetching consistency proofs from its
    /// `Audit` service (mutual TLS; proofs carry nothing personal). A failure is a
    /// stable code; after a rewrite it is `AUDIT_LOG_ALARM`.
    ///
    /// When the registry lists witnesses, the receipt is moved onto the newest checkpoint
    /// cosigned by a quorum of them (its `checkpoint` and `inclusion_proof` replaced), and
    /// counts only there.
    pub async fn check_receipt(
        &self,
        audit: &cii_proto::audit::audit_client::AuditClient<tonic::transport::Channel>,
        receipt: Option<&mut cii_proto::common::Receipt>,
    ) -> Result<(), WitnessFailure> {
        let receipt =
            receipt.ok_or_else(|| WitnessFailure::BadReceipt("the gateway sent no audit receipt".to_owned()))?;
        // The gateway sends a receipt on a checkpoint a quorum cosigned when it has one (its
        // outbox does); else the newest such checkpoint covering the entry is asked for.
        if let Some(Err(_)) = self.cosigned(&receipt.checkpoint) {
            // Fetched before the witness's lock: the gateway may be asking this very node to
            // cosign while it waits for a quorum.
            let witnessed = audit
                .clone()
                .get_witnessed_inclusion(cii_proto::audit::WitnessedInclusionRequest {
                    index: receipt.leaf_index,
                })
                .await
                .map_err(|status| WitnessFailure::NotWitnessed(status.message().to_owned()))?
                .into_inner();
            let (Some(checkpoint), Some(proof)) = (witnessed.checkpoint, witnessed.proof) else {
                return Err(WitnessFailure::NotWitnessed(
                    "the gateway's answer is incomplete".into(),
                ));
            };
            if let Some(Err(e)) = self.cosigned(&checkpoint.note) {
                return Err(WitnessFailure::NotWitnessed(e.to_string()));
            }
            receipt.checkpoint = checkpoint.note;
            receipt.inclusion_proof = proof.hashes;
        }
        let parts = ReceiptParts {
            index: receipt.leaf_index,
            leaf_hash: &receipt.leaf_hash,
            checkpoint: &receipt.checkpoint,
            inclusion_proof: &receipt.inclusion_proof,
        };
        let fetch = |old_size: u64, tree_size: u64| async move {
            audit
                .clone()
                .get_consistency_proof(cii_proto::audit::ConsistencyProofRequest { old_size, tree_size })
                .await
                .map(|answer| answer.into_inner().hashes)
                .map_err(|status| status.message().to_owned())
        };
        self.check(&parts, fetch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cii_audit::note::{Signer, generate_key_pem};
    use cii_audit::{Entry, EntryKind, Log, Receipt};

    const ORIGIN: &str = "cii.test/audit";

    struct TestLog {
        log: Log,
        _dir: tempfile::TempDir,
    }

    /// A fresh log on its own SQLite file, signed with the key in `pem`.
    async fn log(pem: &str) -> TestLog {
        let dir = tempfile::tempdir().unwrap();
        let store = cii_audit::Store::open(&format!("sqlite:{}", dir.path().join("audit.db").display()))
            .await
            .unwrap();
        let signer = Signer::from_pem(ORIGIN, pem).unwrap();
        let (log, _task) = Log::open(store, Arc::new(signer), ORIGIN.into()).await.unwrap();
        TestLog { log, _dir: dir }
    }

    async fn append(log: &Log, user: &str) -> Receipt {
        log.append(Entry {
            kind: EntryKind::Enrolment as i32,
            acting_user: user.into(),
            ..Entry::default()
        })
        .await
        .unwrap()
    }

    fn parts(r: &Receipt) -> (Vec<Vec<u8>>, ReceiptParts<'_>) {
        let proof: Vec<Vec<u8>> = r.inclusion_proof.iter().map(|h| h.to_vec()).collect();
        let parts = ReceiptParts {
            index: r.index,
            leaf_hash: &r.leaf_hash,
            checkpoint: &r.checkpoint,
            inclusion_proof: &[],
        };
        (proof, parts)
    }

    async fn check(witness: &LogWitness, log: &Log, r: &Receipt) -> Result<(), WitnessFailure> {
        let (proof, mut p) = parts(r);
        p.inclusion_proof = &proof;
        let log = log.clone();
        witness
            .check(&p, |old, new| async move {
                log.consistency_proof(old, new)
                    .await
                    .map(|(_, hashes)| hashes.iter().map(|h| h.to_vec()).collect())
                    .map_err(|e| e.to_string())
            })
            .await
    }

    async fn node_store(dir: &tempfile::TempDir) -> Arc<Store> {
        Arc::new(
            Store::open(&format!("sqlite:{}", dir.path().join("node.db").display()), &[3; 32])
                .await
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_growing_log_passes_and_a_rewritten_one_stops_the_node_for_good() {
        let pem = generate_key_pem().unwrap();
        let signer = Signer::from_pem(ORIGIN, &pem).unwrap();
        let node_dir = tempfile::tempdir().unwrap();
        let store = node_store(&node_dir).await;
        let witness = LogWitness::open(signer.verifier(), store.clone(), Arc::new(Vec::new), None)
            .await
            .unwrap();

        let a = log(&pem).await;
        let r1 = append(&a.log, "one").await;
        let r2 = append(&a.log, "two").await;
        let r3 = append(&a.log, "three").await;
        check(&witness, &a.log, &r1).await.unwrap();
        check(&witness, &a.log, &r3).await.unwrap();
        // An older receipt arriving late is a prefix of what was seen: fine.
        check(&witness, &a.log, &r2).await.unwrap();

        // A receipt whose inclusion proof does not match is refused, without alarm.
        let (mut proof, mut p) = parts(&r3);
        proof.push(vec![0; 32]);
        p.inclusion_proof = &proof;
        let err = witness.check(&p, |_, _| async { Ok(Vec::new()) }).await.unwrap_err();
        assert_eq!(err.code(), "RECEIPT_INVALID");
        // A checkpoint signed by another key is refused.
        let foreign = Signer::from_pem(ORIGIN, &generate_key_pem().unwrap()).unwrap();
        let forged = foreign.sign(
            &cii_audit::note::Checkpoint {
                origin: ORIGIN.into(),
                size: 1,
                root: [0; 32],
            }
            .body(),
        );
        let forged_parts = ReceiptParts {
            index: 0,
            leaf_hash: &[0; 32],
            checkpoint: &forged,
            inclusion_proof: &[],
        };
        let err = witness
            .check(&forged_parts, |_, _| async { Ok(Vec::new()) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "RECEIPT_INVALID");
        assert!(!witness.in_alarm());

        // The same key, another history (the log was rebuilt behind the node's back): ALARM.
        let b = log(&pem).await;
        for user in ["x", "y", "z"] {
            append(&b.log, user).await;
        }
        let rewritten = append(&b.log, "w").await;
        let err = check(&witness, &b.log, &rewritten).await.unwrap_err();
        assert_eq!(err.code(), "AUDIT_LOG_ALARM");
        assert!(witness.in_alarm());
        // Stopped: even a good receipt of the old log is refused now, and after a restart.
        assert_eq!(
            check(&witness, &a.log, &r3).await.unwrap_err().code(),
            "AUDIT_LOG_ALARM"
        );
        drop(witness);
        let restarted = LogWitness::open(signer.verifier(), store, Arc::new(Vec::new), None)
            .await
            .unwrap();
        assert!(restarted.in_alarm());
    }

    /// A registry's witness list that the test can change.
    fn listed(witnesses: &[(&cii_audit::cosignature::Cosigner, &str)]) -> Vec<cii_kit::registry::Witness> {
        witnesses
            .iter()
            .map(|(cosigner, name)| cii_kit::registry::Witness {
                identity: PeerIdentity::Witness(cii_types::identity::WitnessName::parse("test", name).unwrap()),
                vkey: cosigner.verifier().vkey(),
                endpoint: "https://127.0.0.1:1".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_note_verified_once_is_recalled_until_the_witness_list_changes() {
        use cii_audit::cosignature::Cosigner;
        let pem = generate_key_pem().unwrap();
        let signer = Signer::from_pem(ORIGIN, &pem).unwrap();
        let w: Vec<Cosigner> = (0..3)
            .map(|i| Cosigner::from_pem(&format!("w{i}.example"), &generate_key_pem().unwrap()).unwrap())
            .collect();
        let names = ["w0.example", "w1.example", "w2.example"];
        let registry = Arc::new(std::sync::Mutex::new(listed(&[
            (&w[0], names[0]),
            (&w[1], names[1]),
            (&w[2], names[2]),
        ])));
        let current = registry.clone();
        let node_dir = tempfile::tempdir().unwrap();
        let witness = LogWitness::open(
            signer.verifier(),
            node_store(&node_dir).await,
            Arc::new(move || current.lock().unwrap().clone()),
            None,
        )
        .await
        .unwrap();

        let a = log(&pem).await;
        let r = append(&a.log, "one").await;
        let body = cii_audit::cosignature::split_note(&r.checkpoint).unwrap().0.to_owned();
        let cosigned = format!("{}{}{}", r.checkpoint, w[0].cosign(&body, 1), w[1].cosign(&body, 1));
        assert_eq!(witness.cosigned(&cosigned).map(|r| r.is_ok()), Some(true));
        assert_eq!(witness.verified_hits(), 0);
        assert_eq!(witness.cosigned(&cosigned).map(|r| r.is_ok()), Some(true));
        assert_eq!(
            witness.verified_hits(),
            1,
            "the same note is recalled, not verified again"
        );
        // One byte of a cosignature changed: another note, verified afresh (and short of a quorum).
        let at = cosigned.trim_end().len() - 2;
        let swapped = if cosigned.as_bytes()[at] == b'A' { "B" } else { "A" };
        let tampered = format!("{}{}{}", &cosigned[..at], swapped, &cosigned[at + 1..]);
        assert_eq!(witness.cosigned(&tampered).map(|r| r.is_ok()), Some(false));
        assert_eq!(witness.verified_hits(), 1);
        // w1's key replaced in the registry: its cosignature no longer counts, and the note
        // recalled a moment ago is short of a quorum now.
        let replaced = Cosigner::from_pem(names[1], &generate_key_pem().unwrap()).unwrap();
        *registry.lock().unwrap() = listed(&[(&w[0], names[0]), (&replaced, names[1]), (&w[2], names[2])]);
        assert_eq!(witness.cosigned(&cosigned).map(|r| r.is_ok()), Some(false));
        // No witnesses listed: none needed.
        registry.lock().unwrap().clear();
        assert!(witness.cosigned(&cosigned).is_none());

        // The log's signature: a receipt's note opened once is recalled; a forged one is not.
        check(&witness, &a.log, &r).await.unwrap();
        let hits = witness.verified_hits();
        check(&witness, &a.log, &r).await.unwrap();
        assert_eq!(witness.verified_hits(), hits + 1);
        let foreign = Signer::from_pem(ORIGIN, &generate_key_pem().unwrap()).unwrap();
        let forged = foreign.sign(
            &cii_audit::note::Checkpoint {
                origin: ORIGIN.into(),
                size: r.tree_size,
                root: [0; 32],
            }
            .body(),
        );
        let forged_parts = ReceiptParts {
            index: r.index,
            leaf_hash: &r.leaf_hash,
            checkpoint: &forged,
            inclusion_proof: &[],
        };
        let err = witness
            .check(&forged_parts, |_, _| async { Ok(Vec::new()) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "RECEIPT_INVALID");
    }
}
