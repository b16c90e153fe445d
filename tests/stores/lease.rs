//! The audit sequencer's lease on a real PostgreSQL: one sequencer at a time, and one that
//! lost the lease (paused past its expiry, then resumed) appends nothing more, even where
//! its stale view of the log would still fit the next index.

use std::sync::Arc;
use std::time::Duration;

use cii_audit::lease::{self, Lease};
use cii_audit::note::{Signer, generate_key_pem};
use cii_audit::{Entry, EntryKind, Log, Store};

pub(crate) const ORIGIN: &str = "cii.test/audit";

/// An administrative entry of now (the log's tests in this binary share it).
pub(crate) fn entry(detail: &str) -> Entry {
    Entry {
        kind: EntryKind::AdminAction as i32,
        time_micros: cii_types::time::micros(time::OffsetDateTime::now_utc()),
        detail: detail.into(),
        ..Entry::default()
    }
}

/// The lease's time runs out now: the test moves its expiry rather than sleeping past it.
async fn expire(url: &str) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    sqlx::query("UPDATE audit_lease SET expires_at = clock_timestamp() WHERE id = 1")
        .execute(&pool)
        .await
        .expect("expire");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequencer_that_lost_its_lease_appends_nothing_more() {
    let url = cii_tests::pg::fresh_database().await;
    let store = Store::open(&url).await.expect("open");
    let signer = Arc::new(Signer::from_pem(ORIGIN, &generate_key_pem().expect("key")).expect("signer"));
    let ttl = Duration::from_secs(60);

    // Replica A holds the lease; B is turned away while it does.
    let a = Lease::acquire(&store, "replica-a", ttl)
        .await
        .expect("acquire")
        .expect("free");
    assert!(
        Lease::acquire(&store, "replica-b", ttl)
            .await
            .expect("acquire")
            .is_none()
    );
    assert!(a.renew().await.expect("renew"));
    let (log_a, _task_a) = Log::open_leased(store.clone(), signer.clone(), ORIGIN.into(), &a)
        .await
        .expect("log");
    for n in 0..3 {
        log_a
            .append(entry(&format!("a-{n}")))
            .await
            .expect("A appends while it holds the lease");
    }

    // A pauses past its expiry; B takes over with a higher epoch. A's view (size 3) is still
    // the log's size, so only the fence, not the entries' keys, can stop it.
    expire(&url).await;
    let b = Lease::acquire(&store, "replica-b", ttl)
        .await
        .expect("acquire")
        .expect("lapsed");
    assert!(b.epoch() > a.epoch());
    assert!(!a.renew().await.expect("renew"), "A's lease is gone");
    let refused = log_a
        .append(entry("a-after"))
        .await
        .expect_err("A resumed without its lease");
    assert_eq!(refused.code(), "AUDIT_UNAVAILABLE");
    assert!(refused.to_string().contains("lease"), "{refused}");
    assert_eq!(store.size().await.expect("size"), 3, "A's batch left nothing");

    let (log_b, _task_b) = Log::open_leased(store.clone(), signer.clone(), ORIGIN.into(), &b)
        .await
        .expect("log");
    for n in 0..2 {
        log_b.append(entry(&format!("b-{n}"))).await.expect("B appends");
    }
    // A again, now behind B: still refused, and the log is B's.
    assert!(log_a.append(entry("a-late")).await.is_err());
    let details: Vec<String> = cii_tests::audit_entries_at(&url)
        .await
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert_eq!(details, ["a-0", "a-1", "a-2", "b-0", "b-1"]);
    let report = cii_audit::verify::verify(&store, &signer.verifier(), ORIGIN, |_, _| {})
        .await
        .expect("the log verifies");
    assert_eq!(report.entries, 5);

    // The database says who sequences; a clean stop hands over at once.
    let now = lease::state(&store).await.expect("state");
    assert_eq!(
        (now.holder.as_str(), now.epoch, now.live),
        ("replica-b", b.epoch(), true)
    );
    b.release().await.expect("release");
    assert!(!lease::state(&store).await.expect("state").live);
    let c = Lease::acquire(&store, "replica-c", ttl)
        .await
        .expect("acquire")
        .expect("released");
    assert_eq!(c.epoch(), b.epoch() + 1);
    assert!(
        log_b.append(entry("b-after-release")).await.is_err(),
        "B gave its lease up"
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_has_no_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&format!("sqlite:{}", dir.path().join("audit.db").display()))
        .await
        .expect("open");
    let err = Lease::acquire(&store, "replica-a", Duration::from_secs(5))
        .await
        .expect_err("no lease");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
}
