//! The gateway's side of the audit sequencer's lease (`cii_audit::lease`), when its log is on
//! PostgreSQL and several gateway replicas share it. Every replica serves from its start: its
//! appends wait in the log's queue (`cii_audit::queue`). Exactly one replica at a time, the
//! holder of the lease, integrates the queue and runs the work that must run once (the
//! outbox, consent notices, completions, the held sweep: gated on [`Replica::sequencing`]).
//! The holder renews the lease every third of its time and stops as soon as it is lost — its
//! batches would be refused from then on, and a supervisor restarting it makes it a replica
//! queueing for the lease again. A clean stop hands the lease over at once.

use std::time::Duration;

use std::sync::Arc;

use cii_audit::lease::{self, Lease};
use tokio::sync::{oneshot, watch};

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

/// Why a serving gateway stops.
pub const STOPPED: u8 = 0;
/// Its lease was lost.
pub const LEASE_LOST: u8 = 1;
/// Its sequencer stopped (the store moved past what it wrote).
pub const SEQUENCER_STOPPED: u8 = 2;

/// What a replica sequences with.
pub struct Sequencing {
    /// The shared log's store.
    pub store: cii_audit::Store,
    /// The checkpoint-signing key (every replica that may sequence holds it).
    pub signer: std::sync::Arc<cii_audit::note::Signer>,
    /// The log's origin line.
    pub origin: String,
    /// How long the lease lasts between renewals.
    pub ttl: Duration,
}

/// Until when this gateway surely holds the sequencer's lease, by its own clock: the time its
/// last renewal was asked for, plus the lease's time (unlimited alone on SQLite). The outbox
/// starts no round past it — a holder paused past its lease and resumed starts no delivery
/// before its keeper has even noticed the loss, so two replicas' outboxes do not overlap.
#[derive(Debug, Clone, Default)]
pub struct HeldUntil(Arc<std::sync::Mutex<Option<tokio::time::Instant>>>);

impl HeldUntil {
    /// Whether the lease is surely held now.
    pub fn holds(&self) -> bool {
        let until = *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        until.is_none_or(|until| tokio::time::Instant::now() < until)
    }

    fn set(&self, until: tokio::time::Instant) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }
}

/// A replica of a shared log.
pub struct Replica {
    /// True from the moment this replica sequences the log.
    pub sequencing: watch::Receiver<bool>,
    /// Why it stopped sequencing on its own ([`LEASE_LOST`], [`SEQUENCER_STOPPED`]): the
    /// gateway then stops.
    pub ended: oneshot::Receiver<u8>,
    /// Its sequencing part, finished once the background work is joined.
    pub running: Running,
    /// Until when it surely holds the lease.
    pub held: HeldUntil,
}

/// A sequencer running in this process (its task), finished in order: after the work that
/// appends (the outbox, completions) has stopped, so that what it queued is still integrated
/// and no other replica's outbox starts while this one's last round is out.
pub struct Running {
    task: tokio::task::JoinHandle<()>,
    finish: watch::Sender<bool>,
}

impl Running {
    /// A sequencer task that ends by itself (on SQLite: once the last handle to the log is gone).
    pub fn alone(task: tokio::task::JoinHandle<()>) -> Running {
        Running {
            task,
            finish: watch::channel(true).0,
        }
    }

    /// Stops integrating, then hands the lease over (unless it was lost); returns when done.
    pub async fn finish(self) {
        self.finish.send_replace(true);
        let _ = self.task.await;
    }
}

/// Starts queueing for the lease (until `stop` flips); once it is held, the queue is integrated
/// and [`Replica::sequencing`] turns true, until [`Running::finish`] or the lease is lost (which
/// flips `stop`: the background work stops at once, another replica may run it now).
pub fn replicate(parts: Sequencing, stop: watch::Sender<bool>) -> Replica {
    let (sequencing_tx, sequencing) = watch::channel(false);
    let (ended_tx, ended) = oneshot::channel();
    let (finish, finishing) = watch::channel(false);
    let stop_renewing = finish.clone();
    // Nothing is held before the lease is.
    let held = HeldUntil::default();
    held.set(tokio::time::Instant::now());
    let holding = held.clone();
    let task = tokio::spawn(async move {
        let Some((lease, asked)) = acquire(&parts, &stop).await else {
            return;
        };
        holding.set(asked + parts.ttl);
        let mut lost = keep(&lease, (stop.clone(), holding.clone()), finishing.clone());
        let integrating =
            cii_audit::queue::integrate(parts.store, parts.signer, parts.origin, &lease, finishing.clone()).await;
        let why = match integrating {
            Err(e) => {
                tracing::error!(code = e.code(), error = %e, "the audit log could not be sequenced");
                SEQUENCER_STOPPED
            }
            Ok(mut integrator) => {
                sequencing_tx.send_replace(true);
                tokio::select! {
                    Ok(()) = &mut lost => {
                        // Its batches are refused from now on: it stops at once.
                        stop_renewing.send_replace(true);
                        let _ = integrator.await;
                        LEASE_LOST
                    }
                    _ = &mut integrator => if *finishing.borrow() { STOPPED } else { SEQUENCER_STOPPED },
                }
            }
        };
        if why == SEQUENCER_STOPPED {
            tracing::error!("the audit log's sequencer stopped: this gateway stops (start it again)");
        }
        if why != STOPPED {
            let _ = ended_tx.send(why);
        }
        // The keeper stops renewing what is handed over (or lost) now.
        stop_renewing.send_replace(true);
        if why != LEASE_LOST
            && let Err(e) = lease.release().await
        {
            tracing::warn!(error = %e, "the sequencer's lease was not released; it expires by itself");
        }
    });
    Replica {
        sequencing,
        ended,
        running: Running { task, finish },
        held,
    }
}

/// Waits until this replica holds the lease (and when the acquisition that got it was asked
/// for); `None` if `stop` flipped first.
async fn acquire(parts: &Sequencing, stop: &watch::Sender<bool>) -> Option<(Lease, tokio::time::Instant)> {
    let holder = holder_name();
    let mut stopped = stop.subscribe();
    let mut told = false;
    loop {
        let asked = tokio::time::Instant::now();
        match Lease::acquire(&parts.store, &holder, parts.ttl).await {
            Ok(Some(lease)) => {
                tracing::info!(holder, epoch = lease.epoch(), "this gateway sequences the audit log");
                return Some((lease, asked));
            }
            Ok(None) if !told => {
                if let Ok(now) = lease::state(&parts.store).await {
                    tracing::info!(
                        holder = now.holder,
                        epoch = now.epoch,
                        "serving; another gateway sequences the audit log"
                    );
                }
                told = true;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the sequencer's lease could not be asked for; trying again"),
        }
        tokio::select! {
            () = tokio::time::sleep(parts.ttl / 4) => {}
            _ = stopped.wait_for(|s| *s) => return None,
        }
    }
}

/// Keeps `lease` in a task of its own until `finishing` flips; the receiver hears of its loss.
fn keep(
    lease: &Lease,
    stop: (watch::Sender<bool>, HeldUntil),
    finishing: watch::Receiver<bool>,
) -> oneshot::Receiver<()> {
    let (lost_tx, lost) = oneshot::channel();
    tokio::spawn(renew(lease.clone(), lost_tx, stop, finishing));
    lost
}

/// Renews `lease` every third of its time until it is lost or `finishing` flips (the gateway
/// stopping keeps its lease while its last appends are integrated). A renewal that fails (a
/// database error, or no answer within a third of the lease) is tried again; the lease counts
/// as lost once its time since the last renewal was asked for has run out. On a loss the
/// gateway's background work (outbox, consent notices, completions) is stopped at once through
/// `stop` — another gateway may run it now — and the loss is reported on `lost`.
async fn renew(
    lease: Lease,
    lost: oneshot::Sender<()>,
    (stop, held): (watch::Sender<bool>, HeldUntil),
    mut finishing: watch::Receiver<bool>,
) {
    let ttl = lease.ttl();
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = finishing.wait_for(|f| *f) => return,
        }
        let asked = tokio::time::Instant::now();
        match tokio::time::timeout(ttl / 3, lease.renew()).await {
            Ok(Ok(true)) => {
                renewed = asked;
                held.set(asked + ttl);
            }
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
    held.set(tokio::time::Instant::now());
    let _ = stop.send(true);
    tracing::error!(
        epoch = lease.epoch(),
        "the sequencer's lease is lost: this gateway stops (another may sequence the log now)"
    );
    let _ = lost.send(());
}

/// Resolves when `shutdown` does, when the replica stopped sequencing on its own, or when the
/// log's sequencer stops; `why` says which ([`STOPPED`], [`LEASE_LOST`], [`SEQUENCER_STOPPED`]).
pub async fn until_stopped(
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    ended: oneshot::Receiver<u8>,
    audit: &cii_audit::Log,
    why: &std::sync::atomic::AtomicU8,
) {
    use std::sync::atomic::Ordering::SeqCst;
    tokio::select! {
        () = shutdown => {}
        Ok(ended) = ended => {
            // Its callers waiting for a sequencer are answered now (their entries stay queued).
            audit.abandon_waits();
            why.store(ended, SeqCst);
        }
        () = audit.closed() => {
            tracing::error!("the audit log's sequencer stopped: this gateway stops (start it again)");
            why.store(SEQUENCER_STOPPED, SeqCst);
        }
    }
}

/// Whether a replica of a shared log (PostgreSQL) serves now. One whose operational store is
/// its own (SQLite) would decide transfers no other replica sees and that its outbox would
/// deliver only while it sequences: it stands by until it sequences (it binds no port and
/// answers nothing meanwhile, so nodes move on to the one that serves). False if `shutdown`
/// came first.
pub async fn serves_unless_sequencing(
    config: &crate::GatewayConfig,
    mut sequencing: watch::Receiver<bool>,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> bool {
    if !config.store.starts_with("sqlite:") {
        return true;
    }
    if !*sequencing.borrow() {
        tracing::info!(
            "standing by: this gateway's operational store is SQLite, so it serves only while it sequences the shared log"
        );
    }
    tokio::select! {
        begun = sequencing.wait_for(|s| *s) => begun.is_ok(),
        () = shutdown => false,
    }
}

/// How long the lease lasts, from `[audit] lease_seconds`.
pub fn ttl(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds))
}

/// Runs `work` once this replica sequences (at once on SQLite), unless `stop` flips first.
pub fn when_sequencing<F>(
    mut sequencing: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    work: F,
) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let begun = tokio::select! {
            begun = sequencing.wait_for(|s| *s) => begun.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        };
        if begun {
            work.await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alone (no lease) the outbox is never held back; with a lease, only until the time the
    /// last renewal was asked for plus the lease's time.
    #[tokio::test]
    async fn the_lease_is_held_until_its_time_by_this_clock() {
        assert!(HeldUntil::default().holds(), "no lease: unlimited");
        let held = HeldUntil::default();
        held.set(tokio::time::Instant::now() + Duration::from_millis(100));
        assert!(held.holds());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!held.holds(), "past its time");
        held.set(tokio::time::Instant::now() + Duration::from_secs(10));
        assert!(held.holds(), "renewed");
    }
}
