//! Delivery to the nodes: one mutual-TLS channel per institution (the server
//! certificate must name it), the outbox worker that retries with backoff in
//! submission order per recipient, and the consent-change notices.

use std::collections::HashMap;
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
/// How many of one recipient's waiting deliveries go out before they are marked delivered
/// together (and the other recipients get their turn).
const RUN_LIMIT: u32 = 64;
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
    max_retry: Duration,
    metrics: cii_kit::metrics::Metrics,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nodes(..)")
    }
}

/// Why a call to a node did not go through.
#[derive(Debug, thiserror::Error)]
pub enum NodeCallError {
    /// The node refused or could not be reached (its status, as it answered).
    #[error("{}", .0.message())]
    Refused(#[from] tonic::Status),
    /// No channel could be made (not in the registry, TLS configuration).
    #[error("{0}")]
    NoChannel(String),
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
            NodeCallError::Refused(status) => cii_kit::status::error_code(status)
                .filter(|c| cii_types::codes::lookup(c).is_some())
                .unwrap_or_else(|| format!("{:?}", status.code())),
            NodeCallError::NoChannel(_) => "Unavailable".to_owned(),
            NodeCallError::Corrupt => "Internal".to_owned(),
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
        max_retry: Duration,
        metrics: cii_kit::metrics::Metrics,
    ) -> Nodes {
        Nodes {
            registry,
            identity,
            channels: Arc::new(Mutex::new(HashMap::new())),
            wake: Arc::new(Notify::new()),
            max_retry,
            metrics,
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

    async fn deliver(&self, due: &Due) -> Result<(), NodeCallError> {
        let recipient = InstitutionId::parse("recipient", &due.recipient).map_err(|_| NodeCallError::Corrupt)?;
        let delivery = node_pb::Delivery::decode(due.delivery.as_slice()).map_err(|_| NodeCallError::Corrupt)?;
        let mut request = tonic::Request::new(delivery);
        request.set_timeout(ATTEMPT_TIMEOUT);
        self.client(&recipient)?.deliver(request).await?;
        Ok(())
    }

    /// Tries a just-recorded delivery at once, unless older deliveries to the
    /// same recipient are waiting (order is kept). True if delivered.
    pub async fn deliver_now(&self, store: &Store, sender: &str, transfer_id: &str) -> bool {
        let head = match store.head_for(sender, transfer_id).await {
            Ok(Some(due)) => due,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "outbox not readable");
                return false;
            }
        };
        self.attempt(store, &head).await
    }

    /// One attempt; the outcome is recorded. True if delivered.
    async fn attempt(&self, store: &Store, due: &Due) -> bool {
        self.deliver_run(store, std::slice::from_ref(due)).await > 0
    }

    /// Delivers `run` (one recipient's waiting deliveries, oldest first) in
    /// order until one fails; marks the delivered ones in one write and
    /// schedules the failed one's retry. How many were delivered.
    async fn deliver_run(&self, store: &Store, run: &[Due]) -> usize {
        let mut delivered = 0;
        let mut failure = None;
        for due in run {
            match self.deliver(due).await {
                Ok(()) => {
                    cii_kit::metrics::Metrics::count(&self.metrics.deliveries, "DELIVERED");
                    tracing::debug!(recipient = %due.recipient, transfer_id = %due.transfer_id, "delivered");
                    delivered += 1;
                }
                Err(e) => {
                    failure = Some((due, e));
                    break;
                }
            }
        }
        let done = run.get(..delivered).unwrap_or_default();
        if !done.is_empty()
            && let Err(e) = store.delivered(done).await
        {
            // Delivered but not marked: sent again later, and the node ignores the repeat
            // (idempotent on sender and transfer id).
            tracing::error!(error = %e, "deliveries not marked");
        }
        if let Some((due, e)) = failure {
            let code = e.code();
            cii_kit::metrics::Metrics::count(&self.metrics.deliveries, &code);
            let exponent = due.attempts.min(16);
            let delay = FIRST_RETRY.saturating_mul(1u32 << exponent).min(self.max_retry);
            let next = cii_types::time::micros(time::OffsetDateTime::now_utc())
                .saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
            tracing::info!(recipient = %due.recipient, transfer_id = %due.transfer_id, %code, retry_in_ms = delay.as_millis(), "delivery failed; queued");
            if let Err(e) = store.attempt_failed(due, &code, next).await {
                tracing::error!(error = %e, "delivery failure not recorded");
            }
        }
        delivered
    }

    /// The outbox worker: delivers each recipient's waiting items, oldest first,
    /// when they are due, until `stop` is set.
    pub async fn run_outbox(self, store: Store, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
            let recipients: Vec<String> = self
                .registry
                .current()
                .institutions()
                .map(|i| i.id.to_string())
                .collect();
            let runs = store.due_runs(&recipients, now, RUN_LIMIT).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "outbox not readable");
                Vec::new()
            });
            let mut progressed = false;
            for run in &runs {
                progressed |= self.deliver_run(&store, run).await > 0;
            }
            if progressed {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(FIRST_RETRY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
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
        match notices_once(&mut registry, &store, &clock).await {
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
        let mut by_recipient: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (recipient, transfer_id) in uses {
            by_recipient.entry(recipient).or_default().push(transfer_id);
        }
        let kind = match cii_proto::consent::ChangeKind::try_from(change.kind) {
            Ok(cii_proto::consent::ChangeKind::ChangeRevoked) => "revoked",
            Ok(cii_proto::consent::ChangeKind::ChangeExpired) => "expired",
            _ => "changed",
        };
        for (recipient, transfer_ids) in by_recipient {
            let id = format!("consent-notice:{}", change.sequence);
            let delivery = node_pb::Delivery {
                transfer_id: id.clone(),
                sender: "gateway".to_owned(),
                notice: Some(node_pb::ConsentNotice {
                    consent_id: change.consent_id.clone(),
                    version: change.version,
                    change: kind.to_owned(),
                    at: change.at,
                    transfer_ids,
                }),
                ..node_pb::Delivery::default()
            };
            notices.push((recipient, id, delivery.encode_to_vec()));
        }
    }
    store
        .notices(&notices, last, cii_types::time::micros(clock.now()))
        .await
        .map_err(|e| e.to_string())?;
    if !notices.is_empty() {
        tracing::info!(notices = notices.len(), "consent change notices queued");
    }
    Ok(true)
}
