//! Delivery to the nodes: one mutual-TLS channel per institution (the server
//! certificate must name it), the outbox worker that retries with backoff in
//! submission order per (sender, recipient) pair, dead letters, and the
//! consent-change notices.
//!
//! INVARIANT (no-item-blocks-the-others): a delivery the recipient refuses for
//! good (malformed, too large, sealed wrong) leaves the outbox at its first
//! refusal, and one it cannot reach leaves after `give_up`; while it waits it
//! holds back only its own pair's later deliveries.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cii_kit::clock::Clock;
use cii_kit::registry::Live;
use cii_kit::tls::{self, PeerPolicy, TlsIdentity};
use cii_proto::consent::{ListChangesRequest, consent_registry_client::ConsentRegistryClient};
use cii_proto::node::{self as node_pb, node_inbound_client::NodeInboundClient};
use cii_types::{InstitutionId, PeerIdentity};
use prost::Message;
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::store::{Due, Store};

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many of one recipient's waiting deliveries go out in one round: one call (or a few,
/// see `BATCH_BYTES`) and one write marking them delivered, before the other recipients get
/// their turn.
const RUN_LIMIT: u32 = 128;
/// Largest batch call, in encoded bytes: below the nodes' decoding limit, with room for the
/// framing. A delivery larger than this alone goes alone.
const BATCH_BYTES: usize = cii_kit::grpc::MAX_REQUEST_BYTES - (64 << 10);
/// How long a sender's call waits for its delivery's round before it answers QUEUED.
const DELIVER_NOW_WAIT: Duration = ATTEMPT_TIMEOUT;
/// How often pull answers past their keeping time are forgotten.
const ANSWER_SWEEP: Duration = Duration::from_secs(60);
/// First retry delay; doubled per failed attempt up to the configured maximum.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Channels to the nodes' inbound APIs.
#[derive(Clone)]
pub struct Nodes {
    registry: Live,
    identity: TlsIdentity,
    channels: Arc<Mutex<HashMap<InstitutionId, Channel>>>,
    /// Wakes the outbox worker.
    pub wake: Arc<Notify>,
    /// Senders' calls waiting for their delivery's round (`deliver_now`).
    waiting: Arc<Mutex<Waiting>>,
    /// Whether this gateway's outbox worker runs (on the replica that sequences the log only).
    outbox_runs: Arc<std::sync::atomic::AtomicBool>,
    /// Until when this gateway surely holds the sequencer's lease (unlimited alone).
    held: crate::lease::HeldUntil,
    policy: RetryPolicy,
    metrics: cii_kit::metrics::Metrics,
    /// Dead letters are logged before they leave the outbox.
    log: cii_audit::Log,
    /// Read for the entry bytes of receipts an earlier release queued without them.
    audit_store: cii_audit::Store,
    /// The newest checkpoint a quorum of witnesses cosigned: receipts go out on it.
    witnessed: crate::cosigning::Witnessed,
}

/// How long deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Longest wait between two attempts.
    pub max_retry: Duration,
    /// How long a delivery that fails transiently is retried before it is dead-lettered.
    pub give_up: Duration,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nodes(..)")
    }
}

/// Why a call to a node did not go through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeCallError {
    /// The node refused or could not be reached (its status, as it answered).
    #[error("{}", .0.message())]
    Refused(#[from] tonic::Status),
    /// No channel could be made (not in the registry, TLS configuration).
    #[error("{0}")]
    NoChannel(String),
    /// The node refused one item of a batch (its answer for that item).
    #[error("{}", .0.message)]
    Item(node_pb::DeliveryOutcome),
    /// The node's answer to a batch does not match the batch (transient: tried again).
    #[error("the node's answer does not match the batch")]
    Mismatch,
    /// No checkpoint a quorum of witnesses cosigned covers the entry (yet).
    #[error("the entry is not covered by a cosigned checkpoint")]
    Unwitnessed,
    /// An outbox row does not decode.
    #[error("an outbox row does not decode")]
    Corrupt,
}

impl NodeCallError {
    /// The node's stable code if it is a registered one, else the gRPC status code, or ours.
    /// INVARIANT (bounded-labels): a node chooses what it answers; only registered codes and
    /// gRPC code names reach the `deliveries` metric label, `last_delivery_error` and the
    /// sender's messages, so a dishonest node can neither grow the label set nor write text
    /// into another institution's answers.
    pub fn code(&self) -> String {
        match self {
            NodeCallError::Refused(_) | NodeCallError::Item(_) => {
                let (status, code) = self.answered().unwrap_or((tonic::Code::Unknown, None));
                code.filter(|c| cii_types::codes::lookup(c).is_some())
                    .unwrap_or_else(|| format!("{status:?}"))
            }
            NodeCallError::NoChannel(_) => "Unavailable".to_owned(),
            NodeCallError::Unwitnessed => "RECEIPT_NOT_WITNESSED".to_owned(),
            NodeCallError::Mismatch | NodeCallError::Corrupt => "Internal".to_owned(),
        }
    }

    /// What the node answered, if it did: the gRPC status code and the stable code.
    fn answered(&self) -> Option<(tonic::Code, Option<String>)> {
        match self {
            NodeCallError::Refused(status) => Some((status.code(), cii_kit::status::error_code(status))),
            NodeCallError::Item(outcome) => Some((
                tonic::Code::from_i32(outcome.status_code),
                Some(outcome.error_code.clone()).filter(|c| !c.is_empty()),
            )),
            _ => None,
        }
    }

    /// Whether trying again cannot help: the node refused the delivery itself (it does
    /// not decode, is larger than the node accepts, or is not sealed to it), or the row
    /// is unreadable. Unreachable nodes, deadlines and a node stopped by its witness
    /// alarm are transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            NodeCallError::Corrupt => true,
            NodeCallError::NoChannel(_) | NodeCallError::Mismatch | NodeCallError::Unwitnessed => false,
            NodeCallError::Refused(_) | NodeCallError::Item(_) => self.answered().is_some_and(|(status, code)| {
                matches!(status, tonic::Code::InvalidArgument | tonic::Code::OutOfRange)
                    || code.as_deref() == Some("SEALED_PAYLOAD_UNREADABLE")
            }),
        }
    }

    /// Whether the node answered that it has nothing (a pull's holder without data).
    pub fn is_not_found(&self) -> bool {
        matches!(self, NodeCallError::Refused(status) if status.code() == tonic::Code::NotFound)
    }
}

impl Nodes {
    pub fn new(
        registry: Live,
        identity: TlsIdentity,
        policy: RetryPolicy,
        metrics: cii_kit::metrics::Metrics,
        (log, audit_store, witnessed): (cii_audit::Log, cii_audit::Store, crate::cosigning::Witnessed),
    ) -> Nodes {
        Nodes {
            registry,
            identity,
            channels: Arc::new(Mutex::new(HashMap::new())),
            wake: Arc::new(Notify::new()),
            waiting: Arc::new(Mutex::new(Waiting::default())),
            outbox_runs: Arc::default(),
            held: crate::lease::HeldUntil::default(),
            policy,
            metrics,
            log,
            audit_store,
            witnessed,
        }
    }

    /// Drops every cached channel (a new registry may move an endpoint or revoke a
    /// certificate; the next call reconnects and handshakes again).
    pub fn forget_channels(&self) {
        if let Ok(mut channels) = self.channels.lock() {
            channels.clear();
        }
    }

    fn client(&self, id: &InstitutionId) -> Result<NodeInboundClient<Channel>, NodeCallError> {
        if let Some(channel) = self.channels.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(NodeInboundClient::new(channel));
        }
        let institution = self
            .registry
            .current()
            .get(id)
            .cloned()
            .ok_or_else(|| NodeCallError::NoChannel(format!("{id} is not in the registry")))?;
        let registry = self.registry.clone();
        let config = tls::client_config(
            &self.identity,
            PeerPolicy::only(PeerIdentity::Institution(id.clone()), move |serial: &[u8]| {
                registry.current().is_revoked(serial)
            }),
        )
        .map_err(|e| NodeCallError::NoChannel(e.to_string()))?;
        let channel =
            tls::channel(&institution.endpoint, config).map_err(|e| NodeCallError::NoChannel(e.to_string()))?;
        if let Ok(mut channels) = self.channels.lock() {
            channels.insert(id.clone(), channel.clone());
        }
        Ok(NodeInboundClient::new(channel))
    }

    /// Asks the holder of a permitted pull for the data.
    pub async fn provide(
        &self,
        holder: &InstitutionId,
        request: node_pb::ProvideRequest,
    ) -> Result<node_pb::ProvideResponse, NodeCallError> {
        let mut client = self.client(holder)?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(ATTEMPT_TIMEOUT);
        Ok(client.provide(request).await?.into_inner())
    }

    /// Puts a pull before the holder's caseworkers for review.
    pub async fn offer_review(
        &self,
        holder: &InstitutionId,
        request: node_pb::OfferReviewRequest,
    ) -> Result<(), NodeCallError> {
        let mut client = self.client(holder)?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(ATTEMPT_TIMEOUT);
        client.offer_review(request).await?;
        Ok(())
    }

    /// The delivery as it goes out: a receipt queued by an earlier release gets its entry,
    /// a notice queued by an earlier release its entry and receipt.
    /// `None` while no checkpoint a quorum of witnesses cosigned covers its entry: the node
    /// would only wait for one (or refuse the receipt), holding up the whole round.
    async fn prepare(&self, store: &Store, due: &Due) -> Result<Option<node_pb::Delivery>, NodeCallError> {
        let mut delivery = node_pb::Delivery::decode(due.delivery.as_slice()).map_err(|_| NodeCallError::Corrupt)?;
        if let Some(receipt) = delivery.receipt.as_mut() {
            // Queued by an earlier release, whose receipts did not carry their entry.
            fill_entry(&self.audit_store, receipt).await;
        } else if let Some(notice) = &delivery.notice {
            // A consent notice queued by an earlier release, which did not log notices: logged
            // now, its receipt kept in the row (a retry appends nothing more).
            let entry = notice_entry(
                &due.recipient,
                &delivery.transfer_id,
                notice,
                time::OffsetDateTime::now_utc(),
            );
            let receipt = self
                .log
                .append(entry)
                .await
                .map_err(|e| NodeCallError::NoChannel(e.to_string()))?;
            delivery.receipt = Some(crate::wire::receipt_to_wire(&receipt));
            store
                .replace_delivery(due.seq, &delivery.encode_to_vec())
                .await
                .map_err(|e| NodeCallError::NoChannel(e.to_string()))?;
        }
        if let Some(receipt) = delivery.receipt.as_mut()
            && !self.witnessed_receipt(receipt).await
        {
            return Ok(None);
        }
        Ok(Some(delivery))
    }

    /// Moves a receipt onto the newest checkpoint a quorum of witnesses cosigned, if one
    /// covers the entry yet (false if none does): the node checks the cosignatures and the
    /// proof itself, without asking back (`Audit/GetWitnessedInclusion`, still there for a
    /// receipt that comes otherwise).
    pub(crate) async fn witnessed_receipt(&self, receipt: &mut cii_proto::common::Receipt) -> bool {
        let Some(cosigned) = self.witnessed.covering_now(receipt.leaf_index) else {
            return false;
        };
        if let Ok((_, _, proof)) = self.log.inclusion_proof(receipt.leaf_index, cosigned.size).await {
            receipt.checkpoint.clone_from(&cosigned.note);
            receipt.inclusion_proof = proof.iter().map(|h| h.to_vec()).collect();
        }
        true
    }

    /// Waits for the round of the outbox that carries the just-released delivery of
    /// (sender, transfer id). True if it was delivered; false if it waits behind older
    /// deliveries of its pair, failed, or the round took longer than `DELIVER_NOW_WAIT`
    /// (it stays queued).
    pub async fn deliver_now(&self, sender: &str, transfer_id: &str, recipient: &str) -> bool {
        if !self.outbox_runs.load(std::sync::atomic::Ordering::SeqCst) {
            // Another replica's outbox delivers it (the one that sequences the log).
            return false;
        }
        let (tell, told) = tokio::sync::oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            let call = Call {
                round: waiting.started + 1,
                recipient: recipient.to_owned(),
                tell,
            };
            waiting.calls.insert((sender.to_owned(), transfer_id.to_owned()), call);
        }
        self.wake.notify_one();
        matches!(tokio::time::timeout(DELIVER_NOW_WAIT, told).await, Ok(Ok(true)))
    }

    /// Delivers `run` (one recipient's due deliveries, oldest first) in batches: a
    /// failure holds back only the rest of its own sender's deliveries. Marks the
    /// delivered ones in one write; schedules each failed one's retry or dead-letters it.
    /// The (sender, transfer id) of those delivered, and of those not witnessed yet.
    async fn deliver_run(&self, store: &Store, run: &[Due]) -> (Vec<(String, String)>, Vec<(String, String)>) {
        let outcomes = self.send_run(store, run).await;
        // Senders whose head waits for witnessing: their held-back items wait with it.
        let waiting: HashSet<&str> = run
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| matches!(o, Outcome::Unwitnessed))
            .map(|(due, _)| due.sender.as_str())
            .collect();
        let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
        let mut done = Vec::new();
        let mut unwitnessed = Vec::new();
        for (due, outcome) in run.iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered => {
                    cii_kit::metrics::Metrics::count(&self.metrics.deliveries, "DELIVERED");
                    tracing::debug!(recipient = %due.recipient, transfer_id = %due.transfer_id, "delivered");
                    done.push(due.clone());
                }
                Outcome::Refused(e) => self.failed(store, due, &e).await,
                // Not charged while the witnesses cosign, but not kept beyond `give_up` either.
                Outcome::Unwitnessed if self.expired(due, now) => {
                    self.failed(store, due, &NodeCallError::Unwitnessed).await;
                }
                Outcome::Unwitnessed => unwitnessed.push((due.sender.clone(), due.transfer_id.clone())),
                Outcome::HeldBack if waiting.contains(due.sender.as_str()) => {
                    unwitnessed.push((due.sender.clone(), due.transfer_id.clone()));
                }
                Outcome::HeldBack => {}
            }
        }
        if !done.is_empty()
            && let Err(e) = store.delivered(&done).await
        {
            // Delivered but not marked: sent again later, and the node ignores the repeat
            // (idempotent on sender and transfer id).
            tracing::error!(error = %e, "deliveries not marked");
        }
        (
            done.into_iter().map(|d| (d.sender, d.transfer_id)).collect(),
            unwitnessed,
        )
    }

    /// Sends `run` to its recipient in batches of at most `BATCH_BYTES`; what became of each.
    async fn send_run(&self, store: &Store, run: &[Due]) -> Vec<Outcome> {
        let mut tally = Tally::new(run);
        let Some(recipient) = run
            .first()
            .and_then(|due| InstitutionId::parse("recipient", &due.recipient).ok())
        else {
            tally.refuse_all(&(0..run.len()).collect::<Vec<_>>(), &NodeCallError::Corrupt);
            return tally.outcomes;
        };
        let mut batch: Vec<(usize, node_pb::Delivery)> = Vec::new();
        let mut bytes = 0;
        for (index, due) in run.iter().enumerate() {
            if tally.held_back(index) {
                continue;
            }
            let delivery = match self.prepare(store, due).await {
                Ok(Some(delivery)) => delivery,
                Ok(None) => {
                    tally.unwitnessed(index);
                    continue;
                }
                Err(e) => {
                    tally.refuse(index, e);
                    continue;
                }
            };
            let size = delivery.encoded_len();
            if !batch.is_empty() && bytes + size > BATCH_BYTES {
                self.send_batch(&recipient, std::mem::take(&mut batch), &mut tally)
                    .await;
                bytes = 0;
                if tally.held_back(index) {
                    continue;
                }
            }
            bytes += size;
            batch.push((index, delivery));
        }
        if !batch.is_empty() {
            self.send_batch(&recipient, batch, &mut tally).await;
        }
        tally.outcomes
    }

    /// One batch call, its answer per item tallied. A node that does not know the batch
    /// call (an earlier release) gets the items one by one, and so does a batch of several
    /// refused as a whole for good (too large, say) or past its deadline: each item then
    /// fails or passes on its own.
    async fn send_batch(
        &self,
        recipient: &InstitutionId,
        batch: Vec<(usize, node_pb::Delivery)>,
        tally: &mut Tally<'_>,
    ) {
        let (indices, deliveries): (Vec<usize>, Vec<node_pb::Delivery>) = batch.into_iter().unzip();
        let mut client = match self.client(recipient) {
            Ok(client) => client,
            Err(e) => return tally.refuse_all(&indices, &e),
        };
        let mut request = tonic::Request::new(node_pb::DeliveryBatch {
            deliveries: deliveries.clone(),
        });
        request.set_timeout(ATTEMPT_TIMEOUT);
        match client.deliver_batch(request).await.map(tonic::Response::into_inner) {
            Ok(ack) if ack.outcomes.len() == indices.len() => {
                for ((index, sent), outcome) in indices.into_iter().zip(&deliveries).zip(ack.outcomes) {
                    tally.answer(index, sent, outcome);
                }
            }
            Ok(_) => tally.refuse_all(&indices, &NodeCallError::Mismatch),
            // Past its deadline: tonic reports our own timeout as `Cancelled` ("Timeout
            // expired"), a server that enforced it as `DeadlineExceeded`.
            Err(status)
                if status.code() == tonic::Code::Unimplemented
                    || (indices.len() > 1
                        && (matches!(status.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
                            || NodeCallError::Refused(status.clone()).is_permanent())) =>
            {
                for (index, delivery) in indices.into_iter().zip(deliveries) {
                    if !tally.held_back(index) {
                        match self.deliver_one(recipient, delivery).await {
                            Ok(()) => tally.set(index, Outcome::Delivered),
                            Err(e) => tally.refuse(index, e),
                        }
                    }
                }
            }
            Err(status) => tally.refuse_all(&indices, &NodeCallError::Refused(status)),
        }
    }

    /// One delivery in its own call (`Deliver`).
    async fn deliver_one(&self, recipient: &InstitutionId, delivery: node_pb::Delivery) -> Result<(), NodeCallError> {
        let mut request = tonic::Request::new(delivery);
        request.set_timeout(ATTEMPT_TIMEOUT);
        self.client(recipient)?.deliver(request).await?;
        Ok(())
    }

    /// Whether `due` has waited `give_up` since it was queued.
    fn expired(&self, due: &Due, now: i64) -> bool {
        let give_up = i64::try_from(self.policy.give_up.as_micros()).unwrap_or(i64::MAX);
        due.queued_micros > 0 && now.saturating_sub(due.queued_micros) >= give_up
    }

    /// Records a failed attempt: a retry with backoff, or a dead letter when the failure
    /// is permanent or the delivery has waited longer than `give_up`.
    async fn failed(&self, store: &Store, due: &Due, e: &NodeCallError) {
        let code = e.code();
        cii_kit::metrics::Metrics::count(&self.metrics.deliveries, &code);
        let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
        if e.is_permanent() || self.expired(due, now) {
            self.dead_letter(store, due, &code, now).await;
            return;
        }
        let exponent = due.attempts.min(16);
        let delay = FIRST_RETRY.saturating_mul(1u32 << exponent).min(self.policy.max_retry);
        let next = now.saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
        tracing::info!(recipient = %due.recipient, transfer_id = %due.transfer_id, %code, retry_in_ms = delay.as_millis(), "delivery failed; queued");
        if let Err(e) = store.attempt_failed(due, &code, next).await {
            tracing::error!(error = %e, "delivery failure not recorded");
        }
    }

    /// Takes `due` out of the outbox: its DELIVERY_DEAD_LETTERED entry first, then the
    /// dead letter and the notice to its sender in one write. If the entry cannot be
    /// written the delivery stays in the outbox and is tried again.
    async fn dead_letter(&self, store: &Store, due: &Due, code: &str, now: i64) {
        let entry = cii_audit::Entry {
            time_micros: now,
            kind: cii_audit::EntryKind::DeliveryDeadLettered as i32,
            transfer_id: due.transfer_id.clone(),
            sender: due.sender.clone(),
            recipient: due.recipient.clone(),
            detail: format!("code={code} attempts={}", due.attempts + 1),
            ..cii_audit::Entry::default()
        };
        let receipt = match self.log.append(entry).await {
            Ok(receipt) => crate::wire::receipt_to_wire(&receipt),
            Err(e) => {
                tracing::error!(code = e.code(), error = %e, "dead letter not logged; the delivery stays queued");
                let retry = now.saturating_add(i64::try_from(FIRST_RETRY.as_micros()).unwrap_or(i64::MAX));
                let _ = store.attempt_failed(due, code, retry).await;
                return;
            }
        };
        // A notice about a notice would have no one to read it; a sender not told the
        // decision is not told it was permitted either.
        let told = due.sender != "gateway" && !undisclosed_to_sender(store, due).await;
        let notice = told.then(|| crate::store::SenderNotice {
            id: format!("delivery-failed:{}", due.seq),
            delivery: node_pb::Delivery {
                transfer_id: format!("delivery-failed:{}", due.seq),
                sender: "gateway".to_owned(),
                failure: Some(node_pb::DeliveryFailure {
                    transfer_id: due.transfer_id.clone(),
                    recipient: due.recipient.clone(),
                    code: code.to_owned(),
                    at: Some(cii_types::time::timestamp_of_micros(now)),
                }),
                // The sender's node checks the notice against its DELIVERY_DEAD_LETTERED entry.
                receipt: Some(receipt),
                ..node_pb::Delivery::default()
            }
            .encode_to_vec(),
        });
        cii_kit::metrics::Metrics::count(&self.metrics.deliveries, "DEAD_LETTERED");
        tracing::warn!(recipient = %due.recipient, transfer_id = %due.transfer_id, %code, "delivery dead-lettered");
        if let Err(e) = store.dead_letter(due, code, now, notice.as_ref()).await {
            tracing::error!(error = %e, "dead letter not recorded; the delivery stays queued");
        }
        self.wake.notify_one();
    }

    /// The outbox worker: delivers each recipient's waiting items, oldest first,
    /// when they are due, until `stop` is set. Each recipient's run goes in a task of its
    /// own, and a recipient whose run is still out is left out of the next rounds: a slow or
    /// unreachable node holds up only its own deliveries, never the others'.
    pub async fn run_outbox(self, store: Store, mut stop: tokio::sync::watch::Receiver<bool>) {
        self.outbox_runs.store(true, std::sync::atomic::Ordering::SeqCst);
        // A new cosigned checkpoint makes the deliveries it covers ready.
        let mut cosigned = self.witnessed.subscribe();
        let mut swept = tokio::time::Instant::now();
        let mut runs = tokio::task::JoinSet::new();
        // Recipients with a run out, by the run's task (a task that panicked frees its recipient too).
        let mut busy = Busy::default();
        loop {
            while let Some(finished) = runs.try_join_next_with_id() {
                busy.finished(finished);
            }
            if swept.elapsed() >= ANSWER_SWEEP {
                swept = tokio::time::Instant::now();
                forget_answers(&store).await;
            }
            // Begun before the read (and its time taken after): a call that waits for this
            // round has its row in it.
            let round = self.begin_round();
            for run in self.due_while_held(&store, &busy).await {
                let Some(recipient) = run.first().map(|d| d.recipient.clone()) else {
                    continue;
                };
                let (nodes, store, out) = (self.clone(), store.clone(), recipient.clone());
                let task = runs.spawn(async move {
                    let (done, unwitnessed) = nodes.deliver_run(&store, &run).await;
                    nodes.settle(round, &run, &done, &unwitnessed);
                    if !done.is_empty() {
                        // More may be waiting behind these.
                        nodes.wake.notify_one();
                    }
                    out
                });
                busy.started(task.id(), recipient);
            }
            self.end_round(round, &busy);
            let stopping = tokio::select! {
                _ = self.wake.notified() => false,
                Ok(()) = cosigned.changed() => false,
                Some(finished) = runs.join_next_with_id() => {
                    busy.finished(finished);
                    false
                }
                _ = tokio::time::sleep(FIRST_RETRY) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                self.outbox_runs.store(false, std::sync::atomic::Ordering::SeqCst);
                // Runs out now finish (each is bounded by its calls' deadlines).
                while runs.join_next().await.is_some() {}
                return;
            }
        }
    }
}

impl Nodes {
    /// Each recipient's due deliveries, but for those with a run out.
    async fn due(&self, store: &Store, busy: &Busy) -> Vec<Vec<Due>> {
        let recipients: Vec<String> = self
            .registry
            .current()
            .institutions()
            .map(|i| i.id.to_string())
            .filter(|id| !busy.contains(id))
            .collect();
        let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
        store.due_runs(&recipients, now, RUN_LIMIT).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "outbox not readable");
            Vec::new()
        })
    }

    /// A round of the outbox begins: the calls waiting now have their rows in it.
    /// The outbox's worker under `held`: it starts no round past the lease's time.
    pub fn with_lease(mut self, held: crate::lease::HeldUntil) -> Nodes {
        self.held = held;
        self
    }

    /// The runs due now, unless this gateway's lease ran out by its own clock (paused, cut
    /// off): then none — another replica's outbox may run now, and two never overlap.
    async fn due_while_held(&self, store: &Store, busy: &Busy) -> Vec<Vec<Due>> {
        if self.held.holds() {
            self.due(store, busy).await
        } else {
            Vec::new()
        }
    }

    fn begin_round(&self) -> u64 {
        self.waiting.lock().map_or(0, |mut waiting| {
            waiting.started += 1;
            waiting.started
        })
    }

    /// Tells the calls waiting for `run`'s deliveries, read in `round`, what became of
    /// them: delivered; still waiting for witnessing (they wait on); or not (QUEUED). A
    /// call that came during the round waits for the next unless its delivery went.
    fn settle(&self, round: u64, run: &[Due], delivered: &[(String, String)], unwitnessed: &[(String, String)]) {
        let Ok(mut waiting) = self.waiting.lock() else { return };
        for due in run {
            let key = (due.sender.clone(), due.transfer_id.clone());
            let Some(call) = waiting.calls.remove(&key) else {
                continue;
            };
            if delivered.contains(&key) {
                let _ = call.tell.send(true);
            } else if call.round <= round && !unwitnessed.contains(&key) {
                let _ = call.tell.send(false);
            } else {
                waiting.calls.insert(key, call);
            }
        }
    }

    /// After `round`'s read: a call waiting for it whose recipient has no run out had its
    /// delivery not due (held back behind an earlier one of its pair): QUEUED. Calls to a
    /// recipient with a run out wait for that run, or for a round that reads their row.
    fn end_round(&self, round: u64, busy: &Busy) {
        let Ok(mut waiting) = self.waiting.lock() else { return };
        let calls = std::mem::take(&mut waiting.calls);
        for (key, call) in calls {
            if call.round <= round && !busy.contains(&call.recipient) {
                let _ = call.tell.send(false);
            } else {
                waiting.calls.insert(key, call);
            }
        }
    }
}

/// Pull answers past their keeping time go (they are sealed; still, keep nothing longer).
async fn forget_answers(store: &Store) {
    let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
    if let Err(e) = store.forget_answers(now).await {
        tracing::warn!(error = %e, "kept pull answers not swept");
    }
}

/// The recipients with a run out, and the task of each.
#[derive(Default)]
struct Busy {
    recipients: HashSet<String>,
    tasks: HashMap<tokio::task::Id, String>,
}

impl Busy {
    fn started(&mut self, task: tokio::task::Id, recipient: String) {
        self.recipients.insert(recipient.clone());
        self.tasks.insert(task, recipient);
    }

    fn finished(&mut self, joined: Result<(tokio::task::Id, String), tokio::task::JoinError>) {
        let task = match joined {
            Ok((task, _)) => task,
            Err(e) => {
                tracing::error!(error = %e, "a delivery run ended abnormally");
                e.id()
            }
        };
        if let Some(recipient) = self.tasks.remove(&task) {
            self.recipients.remove(&recipient);
        }
    }

    fn contains(&self, recipient: &str) -> bool {
        self.recipients.contains(recipient)
    }
}

/// The senders' calls waiting for a round of the outbox (`Nodes::deliver_now`).
#[derive(Default)]
struct Waiting {
    /// The number of the last round begun.
    started: u64,
    /// (sender, transfer id) → the call waiting for that delivery.
    calls: HashMap<(String, String), Call>,
}

/// A sender's call waiting for its delivery.
struct Call {
    /// The first round that reads its row.
    round: u64,
    recipient: String,
    tell: tokio::sync::oneshot::Sender<bool>,
}

/// What became of one delivery of a run.
enum Outcome {
    Delivered,
    Refused(NodeCallError),
    /// Not tried yet: no checkpoint a quorum of witnesses cosigned covers its entry.
    Unwitnessed,
    /// Not tried: an earlier delivery of its sender was refused or is not ready (order is kept).
    HeldBack,
}

/// What became of each delivery of a run so far, and the senders already refused in it
/// (their later deliveries are held back: the order per pair is kept).
struct Tally<'a> {
    run: &'a [Due],
    outcomes: Vec<Outcome>,
    refused: std::collections::HashSet<&'a str>,
}

impl<'a> Tally<'a> {
    fn new(run: &'a [Due]) -> Tally<'a> {
        Tally {
            run,
            outcomes: run.iter().map(|_| Outcome::HeldBack).collect(),
            refused: std::collections::HashSet::new(),
        }
    }

    fn sender(&self, index: usize) -> Option<&'a str> {
        self.run.get(index).map(|due| due.sender.as_str())
    }

    /// Whether the delivery at `index` waits behind a refused one of its sender.
    fn held_back(&self, index: usize) -> bool {
        self.sender(index).is_some_and(|sender| self.refused.contains(sender))
    }

    fn set(&mut self, index: usize, outcome: Outcome) {
        if let Some(slot) = self.outcomes.get_mut(index) {
            *slot = outcome;
        }
    }

    /// The delivery at `index` waits for its entry to be witnessed; its sender's later ones wait behind it.
    fn unwitnessed(&mut self, index: usize) {
        if let Some(sender) = self.sender(index) {
            self.refused.insert(sender);
        }
        self.set(index, Outcome::Unwitnessed);
    }

    fn refuse(&mut self, index: usize, e: NodeCallError) {
        if let Some(sender) = self.sender(index) {
            self.refused.insert(sender);
        }
        self.set(index, Outcome::Refused(e));
    }

    /// The items at `indices` were refused together: each sender's first one carries the
    /// failure (an attempt counted, a retry scheduled), its later ones are held back.
    fn refuse_all(&mut self, indices: &[usize], e: &NodeCallError) {
        for &index in indices {
            if !self.held_back(index) {
                self.refuse(index, e.clone());
            }
        }
    }

    /// The node's answer for the item at `index`, which went out as `sent`.
    fn answer(&mut self, index: usize, sent: &node_pb::Delivery, outcome: node_pb::DeliveryOutcome) {
        // A node may hold an item back only behind a refused one of its sender: one that holds
        // back everything would otherwise have its items sent again every round, never charged,
        // never dead-lettered.
        if outcome.transfer_id != sent.transfer_id || outcome.sender != sent.sender {
            self.refuse(index, NodeCallError::Mismatch);
        } else if outcome.held_back {
            if !self.held_back(index) {
                self.refuse(index, NodeCallError::Mismatch);
            }
        } else if outcome.status_code == 0 {
            self.set(index, Outcome::Delivered);
        } else {
            self.refuse(index, NodeCallError::Item(outcome));
        }
    }
}

/// Turns the consent registry's change feed (revocations, expiries) into
/// notices for every institution that received data under the changed consent.
pub async fn run_consent_notices(
    mut registry: ConsentRegistryClient<Channel>,
    store: Store,
    nodes: Nodes,
    clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match notices_once(&mut registry, &store, &nodes.log, &clock).await {
            Ok(true) => {
                nodes.wake.notify_one();
                continue;
            }
            Ok(false) => {}
            Err(message) => tracing::debug!(%message, "consent change feed not read"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn notices_once(
    registry: &mut ConsentRegistryClient<Channel>,
    store: &Store,
    log: &cii_audit::Log,
    clock: &Arc<dyn Clock>,
) -> Result<bool, String> {
    let after = store.consent_feed().await.map_err(|e| e.to_string())?;
    let changes = registry
        .list_changes(ListChangesRequest { after, limit: 500 })
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner()
        .changes;
    let Some(last) = changes.last().map(|c| c.sequence) else {
        return Ok(false);
    };
    let mut notices = Vec::new();
    for change in &changes {
        let uses = store
            .consent_uses(&change.consent_id)
            .await
            .map_err(|e| e.to_string())?;
        notices.extend(notices_of(change, uses, clock.now()));
    }
    // Every notice has its entry before it is queued (log before deliver), and carries its
    // receipt, which the recipient's node checks; if the log cannot record them, the feed
    // position stays and the changes are read again.
    let mut queued = Vec::with_capacity(notices.len());
    for (recipient, id, mut delivery, entry) in notices {
        let receipt = log.append(entry).await.map_err(|e| e.to_string())?;
        delivery.receipt = Some(crate::wire::receipt_to_wire(&receipt));
        queued.push((recipient, id, delivery.encode_to_vec()));
    }
    let notices = queued;
    store
        .notices(&notices, last, cii_types::time::micros(clock.now()))
        .await
        .map_err(|e| e.to_string())?;
    if !notices.is_empty() {
        tracing::info!(notices = notices.len(), "consent change notices queued");
    }
    Ok(true)
}

/// The notices of one consent change, one per recipient of data under it, each with its entry.
fn notices_of(
    change: &cii_proto::consent::Change,
    uses: Vec<(String, String)>,
    now: time::OffsetDateTime,
) -> Vec<(String, String, node_pb::Delivery, cii_audit::Entry)> {
    let mut by_recipient: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (recipient, transfer_id) in uses {
        by_recipient.entry(recipient).or_default().push(transfer_id);
    }
    let kind = match cii_proto::consent::ChangeKind::try_from(change.kind) {
        Ok(cii_proto::consent::ChangeKind::ChangeRevoked) => "revoked",
        Ok(cii_proto::consent::ChangeKind::ChangeExpired) => "expired",
        _ => "changed",
    };
    by_recipient
        .into_iter()
        .map(|(recipient, transfer_ids)| {
            let id = format!("consent-notice:{}", change.sequence);
            let notice = node_pb::ConsentNotice {
                consent_id: change.consent_id.clone(),
                version: change.version,
                change: kind.to_owned(),
                at: change.at,
                transfer_ids,
            };
            let entry = notice_entry(&recipient, &id, &notice, now);
            let delivery = node_pb::Delivery {
                transfer_id: id.clone(),
                sender: "gateway".to_owned(),
                notice: Some(notice),
                ..node_pb::Delivery::default()
            };
            (recipient, id, delivery, entry)
        })
        .collect()
}

/// The CONSENT_NOTICE_QUEUED entry of a consent notice to `recipient`.
fn notice_entry(
    recipient: &str,
    id: &str,
    notice: &node_pb::ConsentNotice,
    now: time::OffsetDateTime,
) -> cii_audit::Entry {
    cii_audit::Entry {
        time_micros: cii_types::time::micros(now),
        kind: cii_audit::EntryKind::ConsentNoticeQueued as i32,
        sender: "gateway".to_owned(),
        recipient: recipient.to_owned(),
        consents: vec![format!("{}@{}", notice.consent_id, notice.version)],
        detail: format!(
            "change={} notice={id} transfers={}",
            notice.change,
            notice.transfer_ids.len()
        ),
        ..cii_audit::Entry::default()
    }
}

/// Adds its entry's canonical bytes to a receipt that lacks them (written by an earlier
/// release), from the log; left as is if the log cannot give them.
/// Whether `due`'s sender was not told its decision (`transfer::undisclosed`). A store that
/// cannot say counts as not told: the notice is a courtesy, the operator sees every dead letter.
async fn undisclosed_to_sender(store: &Store, due: &Due) -> bool {
    match store.transfer(&due.sender, &due.transfer_id).await {
        Ok(Some(row)) => cii_proto::gateway::TransferResponse::decode(row.response.as_slice()).map_or(true, |r| {
            r.state == cii_proto::gateway::transfer_response::State::Undisclosed as i32
        }),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "gateway store not readable; the dead letter is not noticed");
            true
        }
    }
}

pub(crate) async fn fill_entry(audit_store: &cii_audit::Store, receipt: &mut cii_proto::common::Receipt) {
    if !receipt.entry.is_empty() {
        return;
    }
    match audit_store.entry_bytes(receipt.leaf_index).await {
        Ok(Some(bytes)) => receipt.entry = bytes,
        Ok(None) => tracing::warn!(index = receipt.leaf_index, "a receipt's entry is not readable"),
        Err(e) => tracing::warn!(error = %e, "audit store not readable"),
    }
}

#[cfg(test)]
mod tests {
    use super::{NodeCallError, Outcome, Tally};
    use crate::store::Due;
    use cii_proto::node as node_pb;

    fn due(sender: &str, transfer_id: &str) -> Due {
        Due {
            seq: 0,
            recipient: "AI-VS".into(),
            sender: sender.into(),
            transfer_id: transfer_id.into(),
            delivery: Vec::new(),
            attempts: 0,
            queued_micros: 0,
        }
    }

    fn sent(due: &Due) -> node_pb::Delivery {
        node_pb::Delivery {
            transfer_id: due.transfer_id.clone(),
            sender: due.sender.clone(),
            ..node_pb::Delivery::default()
        }
    }

    fn outcome(due: &Due, status_code: i32, held_back: bool) -> node_pb::DeliveryOutcome {
        node_pb::DeliveryOutcome {
            transfer_id: due.transfer_id.clone(),
            sender: due.sender.clone(),
            error_code: if status_code == 0 {
                String::new()
            } else {
                "SEALED_PAYLOAD_UNREADABLE".into()
            },
            status_code,
            held_back,
            ..node_pb::DeliveryOutcome::default()
        }
    }

    fn names(tally: &Tally<'_>) -> Vec<&'static str> {
        tally
            .outcomes
            .iter()
            .map(|o| match o {
                Outcome::Delivered => "delivered",
                Outcome::Refused(e) if e.is_permanent() => "refused for good",
                Outcome::Refused(_) => "refused",
                Outcome::Unwitnessed => "unwitnessed",
                Outcome::HeldBack => "held back",
            })
            .collect()
    }

    #[test]
    fn a_refused_item_holds_back_only_its_own_senders_later_items() {
        let run = [
            due("ORP-VS", "o1"),
            due("AS-VS", "s1"),
            due("ORP-VS", "o2"),
            due("AS-VS", "s2"),
        ];
        let mut tally = Tally::new(&run);
        tally.answer(
            0,
            &sent(&run[0]),
            outcome(&run[0], tonic::Code::Unavailable as i32, false),
        );
        tally.answer(1, &sent(&run[1]), outcome(&run[1], 0, false));
        // The node held o2 back (o1 refused); AS-VS's items go on.
        tally.answer(2, &sent(&run[2]), outcome(&run[2], 0, true));
        tally.answer(3, &sent(&run[3]), outcome(&run[3], 0, false));
        assert_eq!(
            names(&tally),
            ["refused for good", "delivered", "held back", "delivered"]
        );
        assert!(tally.held_back(2) && !tally.held_back(3));
    }

    #[test]
    fn an_item_held_back_behind_nothing_is_a_transient_refusal() {
        let run = [due("ORP-VS", "o1"), due("ORP-VS", "o2")];
        let mut tally = Tally::new(&run);
        tally.answer(0, &sent(&run[0]), outcome(&run[0], 0, true));
        tally.answer(1, &sent(&run[1]), outcome(&run[1], 0, true));
        assert_eq!(
            names(&tally),
            ["refused", "held back"],
            "charged: retried with backoff, dead-lettered in time"
        );
    }

    #[test]
    fn an_answer_for_another_item_is_a_transient_refusal() {
        let run = [due("ORP-VS", "o1"), due("ORP-VS", "o2")];
        let mut tally = Tally::new(&run);
        tally.answer(0, &sent(&run[0]), outcome(&run[1], 0, false));
        assert_eq!(names(&tally), ["refused", "held back"]);
        assert_eq!(
            tally
                .outcomes
                .first()
                .map(|o| matches!(o, Outcome::Refused(NodeCallError::Mismatch))),
            Some(true)
        );
    }

    #[test]
    fn a_batch_refused_as_a_whole_charges_each_senders_first_item() {
        let run = [due("ORP-VS", "o1"), due("ORP-VS", "o2"), due("AS-VS", "s1")];
        let mut tally = Tally::new(&run);
        tally.refuse_all(&[0, 1, 2], &NodeCallError::NoChannel("down".into()));
        assert_eq!(names(&tally), ["refused", "held back", "refused"]);
        let item = NodeCallError::Item(outcome(&run[0], tonic::Code::InvalidArgument as i32, false));
        assert!(item.is_permanent());
        assert_eq!(item.code(), "SEALED_PAYLOAD_UNREADABLE");
        // A node chooses its answers: an unregistered code never reaches a label or a sender.
        let mut made_up = outcome(&run[0], tonic::Code::InvalidArgument as i32, false);
        made_up.error_code = "ANY TEXT A NODE LIKES".into();
        assert_eq!(NodeCallError::Item(made_up).code(), "InvalidArgument");
    }

    #[test]
    fn only_a_refusal_of_the_delivery_itself_is_permanent() {
        let refused = |code, reason: Option<&str>| {
            let status = match reason {
                Some(r) => cii_kit::status::refusal(r, "x".to_owned(), None),
                None => tonic::Status::new(code, "x"),
            };
            NodeCallError::Refused(status).is_permanent()
        };
        assert!(refused(tonic::Code::OutOfRange, None), "MESSAGE_TOO_LARGE");
        assert!(refused(tonic::Code::InvalidArgument, None));
        assert!(refused(tonic::Code::Ok, Some("SEALED_PAYLOAD_UNREADABLE")));
        assert!(NodeCallError::Corrupt.is_permanent());
        for transient in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::FailedPrecondition,
            tonic::Code::PermissionDenied,
        ] {
            assert!(!refused(transient, None), "{transient:?}");
        }
        assert!(!NodeCallError::NoChannel("down".into()).is_permanent());
    }
}
