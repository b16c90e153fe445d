//! Cosigning: after every new checkpoint the gateway asks the network's
//! witnesses — the nodes and the independent witnesses the registry lists — to
//! cosign it (C2SP tlog-witness carried by `cii.witness.v1.Witness`), and keeps
//! the newest checkpoint that more than half of them cosigned. Nodes accept a
//! receipt only on such a checkpoint (`Audit/GetWitnessedInclusion`).
//!
//! The gateway only carries cosignatures: it holds no witness key, and a
//! witness cosigns only a tree that extends the last one it cosigned, so a
//! gateway showing two histories cannot get both past a quorum.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cii_audit::cosignature::{CosignatureVerifier, Quorum, split_note};
use cii_kit::metrics::Metrics;
use cii_kit::registry::{Live, Witness};
use cii_kit::tls::{self, PeerPolicy, TlsIdentity};
use cii_proto::witness::add_checkpoint_response::Outcome;
use cii_proto::witness::witness_client::WitnessClient;
use cii_proto::witness::{AddCheckpointRequest, AddCheckpointResponse};
use tokio::sync::watch;
use tonic::transport::Channel;

/// How long one witness may take to answer.
const WITNESS_DEADLINE: Duration = Duration::from_secs(5);
/// How many times one witness is asked in a round (each time from the size it last named).
const ASKS: usize = 4;
/// Pause before asking again after a round without a quorum.
const RETRY: Duration = Duration::from_secs(1);

/// A checkpoint cosigned by a quorum: the log's note with the witnesses' lines appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// Its tree size.
    pub size: u64,
    /// The signed note with the cosignature lines.
    pub note: String,
}

/// The newest cosigned checkpoint, for those who hand out receipts.
#[derive(Debug, Clone)]
pub struct Witnessed {
    latest: watch::Receiver<Option<Arc<Cosigned>>>,
}

impl Witnessed {
    /// Changes whenever a newer checkpoint is cosigned.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Cosigned>>> {
        self.latest.clone()
    }

    /// The newest cosigned checkpoint if it already covers entry `index` (no waiting).
    pub fn covering_now(&self, index: u64) -> Option<Arc<Cosigned>> {
        self.latest.borrow().as_ref().filter(|c| c.size > index).cloned()
    }

    /// The newest cosigned checkpoint covering entry `index`, waiting up to `wait` for one.
    pub async fn covering(&self, index: u64, wait: Duration) -> Option<Arc<Cosigned>> {
        let mut latest = self.latest.clone();
        let found = tokio::time::timeout(wait, latest.wait_for(|c| c.as_ref().is_some_and(|c| c.size > index))).await;
        match found {
            Ok(Ok(cosigned)) => cosigned.clone(),
            _ => None,
        }
    }
}

/// Whether this gateway asks the witnesses itself.
#[derive(Clone)]
pub struct Role {
    /// True while this gateway sequences the log (always, alone on SQLite).
    pub sequencing: watch::Receiver<bool>,
    /// A log on PostgreSQL that other replicas share: the sequencing one publishes each
    /// cosigned checkpoint there, the others take it from there (checking its quorum) until they
    /// sequence — witnesses asked by several replicas would see each one's slightly older tree
    /// as a log behind theirs.
    pub shared: Option<cii_audit::Store>,
}

impl Role {
    /// The role of a gateway on `store` (shared if on PostgreSQL).
    pub fn of(store: &cii_audit::Store, sequencing: &watch::Receiver<bool>) -> Role {
        Role {
            sequencing: sequencing.clone(),
            shared: matches!(store, cii_audit::Store::Postgres(_)).then(|| store.clone()),
        }
    }
}

/// Starts the cosigning task (the witnesses the gateway's registry lists, reached with its TLS
/// identity); it runs until `stop` flips.
pub fn start(
    log: cii_audit::Log,
    config: &crate::GatewayConfig,
    (metrics, role): (Metrics, Role),
    stop: watch::Receiver<bool>,
) -> (Witnessed, tokio::task::JoinHandle<()>) {
    let (tx, latest) = watch::channel(None);
    let task = Cosigning {
        log,
        registry: config.registry.clone(),
        identity: config.tls.clone(),
        metrics,
        channels: HashMap::new(),
        sizes: HashMap::new(),
        registry_version: 0,
        shared: role.shared,
        log_key: (config.audit_signer.verifier(), config.file.audit.origin.clone()),
    };
    let run = async move {
        let mut stop = stop;
        if !task.follow_until_sequencing(&tx, role.sequencing, &mut stop).await {
            return;
        }
        task.run(tx, stop).await;
    };
    (Witnessed { latest }, tokio::spawn(run))
}

struct Cosigning {
    log: cii_audit::Log,
    registry: Live,
    identity: TlsIdentity,
    metrics: Metrics,
    /// One channel per witness (dropped when the registry changes).
    channels: HashMap<String, Channel>,
    /// The size of each witness's newest checkpoint, as far as the gateway knows (by vkey).
    sizes: HashMap<String, u64>,
    registry_version: u64,
    /// Where the sequencing replica publishes what it got cosigned (a shared log).
    shared: Option<cii_audit::Store>,
    /// The log's verifier key and origin (a published checkpoint must be the log's own).
    log_key: (cii_audit::note::Verifier, String),
}

/// How often a replica that does not sequence looks for a newer cosigned checkpoint.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

impl Cosigning {
    /// Until this replica sequences: the newest cosigned checkpoint the sequencing one published,
    /// taken only if a quorum of the registry's witnesses cosigned it and this replica's log
    /// holds its tree. False if `stop` flipped first.
    async fn follow_until_sequencing(
        &self,
        tx: &watch::Sender<Option<Arc<Cosigned>>>,
        mut sequencing: watch::Receiver<bool>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let Some(store) = &self.shared else {
            return true;
        };
        loop {
            if *sequencing.borrow_and_update() {
                return self.caught_up(store, stop).await;
            }
            match store.latest_cosigned().await {
                Ok(Some((size, note))) if size <= self.log.checkpoint().0 => {
                    let newer = tx.borrow().as_ref().is_none_or(|c| c.size < size);
                    if newer && self.is_published_cosigned(size, &note) {
                        tx.send_replace(Some(Arc::new(Cosigned { size, note })));
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the published cosigned checkpoint is not readable"),
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = sequencing.changed() => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Once this replica sequences: waits until its view of the log holds every checkpoint
    /// stored when it took over — the witnesses may have cosigned any of them for the last
    /// holder (even one it died before publishing), and a round on an older tree would find
    /// them ahead of it, the alarm of a log gone back. False if `stop` flipped first.
    async fn caught_up(&self, store: &cii_audit::Store, stop: &mut watch::Receiver<bool>) -> bool {
        let stored = loop {
            match store.latest_checkpoint().await {
                Ok(newest) => break newest.map_or(0, |(size, _)| size),
                Err(e) => tracing::warn!(error = %e, "the log's newest checkpoint is not readable; trying again"),
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        };
        let mut sizes = self.log.subscribe();
        tokio::select! {
            _ = sizes.wait_for(|size| *size >= stored) => true,
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Whether a published `note` is a checkpoint of this log, of tree `size`, signed with the
    /// log's key and cosigned by a quorum of the witnesses the registry lists (none listed: the
    /// log's signature alone, as [`Cosigning::round`] answers then).
    fn is_published_cosigned(&self, size: u64, note: &str) -> bool {
        let (verifier, origin) = &self.log_key;
        if !verifier.open_checkpoint(note, origin).is_ok_and(|c| c.size == size) {
            return false;
        }
        let registry = self.registry.current();
        let witnesses = registry.witnesses();
        let (quorum, _) = Quorum::from_vkeys(witnesses.iter().map(|w| (w.vkey.as_str(), w.is_independent())));
        witnesses.is_empty() || quorum.check(note).is_ok()
    }

    async fn run(mut self, tx: watch::Sender<Option<Arc<Cosigned>>>, mut stop: watch::Receiver<bool>) {
        let mut sizes = self.log.subscribe();
        let mut done = 0u64;
        loop {
            let (size, note) = self.log.checkpoint();
            let mut pause = None;
            if size > done {
                // A round waits for the witnesses: stopping does not.
                let outcome = tokio::select! {
                    outcome = self.round(size, &note) => outcome,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match outcome {
                    Ok(cosigned) => {
                        done = size;
                        Metrics::count(&self.metrics.cosigning, "QUORUM");
                        self.metrics.cosigned_size.set(i64::try_from(size).unwrap_or(i64::MAX));
                        self.publish(&cosigned).await;
                        tx.send_replace(Some(Arc::new(cosigned)));
                    }
                    Err(problem) => {
                        tracing::warn!(size, %problem, "checkpoint not cosigned by a quorum of witnesses");
                        Metrics::count(&self.metrics.cosigning, "NO_QUORUM");
                        pause = Some(RETRY);
                    }
                }
            }
            let wait_retry = async {
                match pause {
                    Some(p) => tokio::time::sleep(p).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = sizes.changed() => if changed.is_err() { return },
                () = wait_retry => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// For the replicas that do not sequence (a shared log).
    async fn publish(&self, cosigned: &Cosigned) {
        if let Some(store) = &self.shared
            && let Err(e) = store.publish_cosigned(cosigned.size, &cosigned.note).await
        {
            tracing::warn!(error = %e, "the cosigned checkpoint was not published to the other replicas");
        }
    }

    /// One round: every witness asked at once; the note with the valid cosignatures if they reach a quorum.
    async fn round(&mut self, size: u64, note: &str) -> Result<Cosigned, String> {
        let registry = self.registry.current();
        if registry.version() != self.registry_version {
            self.registry_version = registry.version();
            self.channels.clear();
        }
        let witnesses = registry.witnesses();
        if witnesses.is_empty() {
            // No witnesses: receipts rest on the log's signature alone (nodes know it from the registry).
            return Ok(Cosigned {
                size,
                note: note.to_owned(),
            });
        }
        let (body, _) = split_note(note).map_err(|e| e.to_string())?;
        let (quorum, problems) = Quorum::from_vkeys(witnesses.iter().map(|w| (w.vkey.as_str(), w.is_independent())));
        for (vkey, e) in problems {
            // Counted in the quorum's size, never among its cosigners: fail closed.
            tracing::error!(%vkey, error = %e, "unusable witness key in the registry");
        }
        let mut asks = tokio::task::JoinSet::new();
        for witness in witnesses {
            let Ok(verifier) = CosignatureVerifier::from_vkey(&witness.vkey) else {
                continue;
            };
            let client = match self.client(witness) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(witness = %witness.identity, error = %e, "no channel to witness");
                    continue;
                }
            };
            let old = self.sizes.get(&witness.vkey).copied().unwrap_or(0);
            let (log, note, vkey) = (self.log.clone(), note.to_owned(), witness.vkey.clone());
            asks.spawn(async move {
                let answer = ask(client, &log, old, size, &note).await;
                (verifier, vkey, answer)
            });
        }
        let mut cosigned = note.to_owned();
        while let Some(joined) = asks.join_next().await {
            let Ok((verifier, vkey, answer)) = joined else { continue };
            if let Some(line) = self.take(&verifier, vkey, answer, (body, size)) {
                cosigned.push_str(&line);
                // Published as soon as a quorum cosigned: a slow witness does not hold the
                // network back (the rest of its round is dropped; it catches up on the next).
                if quorum.check(&cosigned).is_ok() {
                    return Ok(Cosigned { size, note: cosigned });
                }
            }
        }
        quorum
            .check(&cosigned)
            .map(|()| Cosigned { size, note: cosigned })
            .map_err(|e| e.to_string())
    }

    /// Records a witness's answer; its cosignature line if it verifies over `body`.
    fn take(
        &mut self,
        verifier: &CosignatureVerifier,
        vkey: String,
        answer: Result<(String, u64), Refusal>,
        (body, size): (&str, u64),
    ) -> Option<String> {
        let who = verifier.name();
        match answer {
            Ok((answer, witness_size)) => {
                self.sizes.insert(vkey, witness_size);
                // Only the line that verified, rebuilt: a witness's junk never enters the note.
                if let Some(line) = verifier.verified_line(body, &answer) {
                    return Some(line);
                }
                tracing::error!(witness = %who, "a witness answered with a cosignature that does not verify");
            }
            Err(Refusal::Behind(witness_size)) => {
                self.sizes.insert(vkey, witness_size);
                Metrics::count(&self.metrics.cosigning, "WITNESS_AHEAD");
                tracing::error!(witness = %who, witness_size, size, "ALARM: a witness holds a larger tree than this log");
            }
            Err(Refusal::Failed(e)) => tracing::warn!(witness = %who, error = %e, "witness did not cosign"),
        }
        None
    }

    fn client(&mut self, witness: &Witness) -> Result<WitnessClient<Channel>, tls::TlsError> {
        let key = format!("{} {}", witness.identity, witness.endpoint);
        if let Some(channel) = self.channels.get(&key) {
            return Ok(WitnessClient::new(channel.clone()));
        }
        let registry = self.registry.clone();
        let config = tls::client_config(
            &self.identity,
            PeerPolicy::only(witness.identity.clone(), move |serial: &[u8]| {
                registry.current().is_revoked(serial)
            }),
        )?;
        let channel = tls::channel_with_deadline(&witness.endpoint, config, WITNESS_DEADLINE)?;
        self.channels.insert(key, channel.clone());
        Ok(WitnessClient::new(channel))
    }
}

/// Why a witness gave no cosignature.
enum Refusal {
    /// The witness holds a tree larger than this log's: this log cannot extend it (a fork, or
    /// a log restored from an old backup).
    Behind(u64),
    /// Unreachable, alarmed, or refusing the checkpoint.
    Failed(String),
}

/// Asks one witness to cosign the checkpoint of `size`, starting from `old` and retrying from
/// the size the witness names, a few times: the ask of a round that ended at its quorum may
/// still land at a slow witness after the next round's first ask, and moving its size again
/// is no reason to leave it out (two such witnesses of three would stall receipts a second). The cosignature line and the witness's new size.
async fn ask(
    mut client: WitnessClient<Channel>,
    log: &cii_audit::Log,
    mut old: u64,
    size: u64,
    note: &str,
) -> Result<(String, u64), Refusal> {
    for _ in 0..ASKS {
        if old > size {
            return Err(Refusal::Behind(old));
        }
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            let (_, hashes) = log
                .consistency_proof(old, size)
                .await
                .map_err(|e| Refusal::Failed(e.to_string()))?;
            hashes.iter().map(|h| h.to_vec()).collect()
        };
        let answer = client
            .add_checkpoint(AddCheckpointRequest {
                old_size: old,
                consistency_proof: proof,
                checkpoint: note.to_owned(),
            })
            .await
            .map_err(|status| Refusal::Failed(format!("{:?}: {}", status.code(), status.message())))?;
        match answer.into_inner() {
            AddCheckpointResponse {
                outcome: Some(Outcome::Cosignature(line)),
            } => return Ok((line, size)),
            AddCheckpointResponse {
                outcome: Some(Outcome::WitnessSize(witness_size)),
            } => old = witness_size,
            AddCheckpointResponse { outcome: None } => return Err(Refusal::Failed("empty answer".into())),
        }
    }
    if old > size {
        Err(Refusal::Behind(old))
    } else {
        Err(Refusal::Failed("the witness's size kept changing".into()))
    }
}
