//! The gateway's side of the audit sequencer's lease (`cii_audit::lease`), when its log is on
//! PostgreSQL: a gateway waits for the lease before it serves anything (a second gateway
//! started on the same log stands by), renews it every third of its time, and stops as soon as
//! it is lost — its appends would be refused from then on, and a supervisor restarting it puts
//! it back in the queue for the lease. A clean stop hands the lease over at once.
//!
//! Until replicas that do not sequence can accept transfers (issue 23), one gateway serves at a
//! time; the others wait here.

use std::time::Duration;

use cii_audit::lease::{self, Lease};
use tokio::sync::oneshot;

/// This process's name as a lease holder: host, process id and a random suffix, so that a
/// restarted process is a new holder and never mistakes its predecessor's lease for its own.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned());
    let mut suffix = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix);
    format!("{host}-{}-{:08x}", std::process::id(), u32::from_be_bytes(suffix))
}

/// A gateway's turn to serve.
pub enum Turn {
    /// It may sequence the log: under this lease (`None` on SQLite: one process).
    Sequence(Option<Lease>),
    /// It was stopped while standing by.
    Stopped,
}

/// Waits until this gateway holds the lease of `store`'s log, or `shutdown` while it stands by
/// (a gateway that gets the lease at once starts as before: a stop comes after its start).
pub async fn wait_for(
    store: &cii_audit::Store,
    ttl: Duration,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<Turn, cii_audit::store::StoreError> {
    if matches!(store, cii_audit::Store::Sqlite(_)) {
        return Ok(Turn::Sequence(None));
    }
    let holder = holder_name();
    let mut told = false;
    loop {
        if let Some(lease) = Lease::acquire(store, &holder, ttl).await? {
            tracing::info!(holder, epoch = lease.epoch(), "this gateway sequences the audit log");
            return Ok(Turn::Sequence(Some(lease)));
        }
        if !told {
            let now = lease::state(store).await?;
            tracing::info!(
                holder = now.holder,
                epoch = now.epoch,
                "standing by: another gateway sequences the audit log"
            );
            told = true;
        }
        tokio::select! {
            () = tokio::time::sleep(ttl / 4) => {}
            () = &mut *shutdown => return Ok(Turn::Stopped),
        }
    }
}

/// Renews `lease` every third of its time until it is lost or `stop` fires. A renewal that
/// fails (a database error, or no answer within a third of the lease) is tried again; the lease
/// counts as lost once its time since the last renewal has run out. On a loss the gateway's
/// background work (outbox, consent notices, completions) is stopped at once through `stop` —
/// another gateway may run it now — and the loss is reported on `lost`.
async fn keep(lease: Lease, lost: oneshot::Sender<()>, stop: tokio::sync::watch::Sender<bool>) {
    let ttl = lease.ttl();
    let mut stopped = stop.subscribe();
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = stopped.changed() => return,
        }
        match tokio::time::timeout(ttl / 3, lease.renew()).await {
            Ok(Ok(true)) => renewed = tokio::time::Instant::now(),
            Ok(Ok(false)) => break,
            failed if renewed.elapsed() + ttl / 3 < ttl => {
                let error = failed.map_or_else(|_| "no answer in time".to_owned(), |r| format!("{r:?}"));
                tracing::warn!(error, "the sequencer's lease could not be renewed; trying again");
            }
            _ => {
                tracing::error!("the sequencer's lease could not be renewed in time");
                break;
            }
        }
    }
    let _ = stop.send(true);
    tracing::error!(
        epoch = lease.epoch(),
        "the sequencer's lease is lost: this gateway stops (another may sequence the log now)"
    );
    let _ = lost.send(());
}

/// Keeps `lease` (if any) in a task of its own until `stop`; the receiver hears of its loss
/// (never, without a lease).
pub fn keep_while_serving(lease: Option<&Lease>, stop: tokio::sync::watch::Sender<bool>) -> oneshot::Receiver<()> {
    let (lost_tx, lost) = oneshot::channel();
    if let Some(lease) = lease {
        tokio::spawn(keep(lease.clone(), lost_tx, stop));
    }
    lost
}

/// Why a serving gateway stops.
pub const STOPPED: u8 = 0;
/// Its lease was lost.
pub const LEASE_LOST: u8 = 1;
/// Its sequencer stopped (the store moved past what it wrote).
pub const SEQUENCER_STOPPED: u8 = 2;

/// Resolves when `shutdown` does, when the lease is lost, or when the sequencer stops;
/// `why` says which ([`STOPPED`], [`LEASE_LOST`], [`SEQUENCER_STOPPED`]).
pub async fn until_stopped(
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    lost: oneshot::Receiver<()>,
    audit: &cii_audit::Log,
    why: &std::sync::atomic::AtomicU8,
) {
    use std::sync::atomic::Ordering::SeqCst;
    tokio::select! {
        () = shutdown => {}
        Ok(()) = lost => why.store(LEASE_LOST, SeqCst),
        () = audit.closed() => {
            tracing::error!("the audit log's sequencer stopped: this gateway stops (start it again)");
            why.store(SEQUENCER_STOPPED, SeqCst);
        }
    }
}

/// How long the lease lasts, from `[audit] lease_seconds`.
pub fn ttl(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds))
}
