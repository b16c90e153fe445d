//! The append queue of a PostgreSQL log several replicas share (`cii_audit::queue`), on a real
//! PostgreSQL: replicas' appends are integrated by the lease holder, the same entry queued by
//! two replicas at once is one entry, a takeover integrates what waits exactly once, a
//! follower answers only on a checkpoint whose signature and root it checked, and what a
//! sequencer cannot append is dropped without blocking the rest.

use std::sync::Arc;
use std::time::Duration;

use cii_audit::lease::Lease;
use cii_audit::note::{Signer, generate_key_pem};
use cii_audit::{Entry, EntryKind, Log, Store};

use super::lease::{ORIGIN, entry};

fn signer() -> Arc<Signer> {
    Arc::new(Signer::from_pem(ORIGIN, &generate_key_pem().expect("key")).expect("signer"))
}

/// A replica's log on `url` (a store of its own, as a process has).
async fn replica(url: &str, signer: &Arc<Signer>) -> (Log, Store) {
    let store = Store::open(url).await.expect("open");
    let (log, _follower) = Log::follow(store.clone(), signer.clone(), ORIGIN.into())
        .await
        .expect("follow");
    (log, store)
}

/// The lease holder's integrator on `store`, stopped by the returned sender.
async fn integrator(store: &Store, signer: &Arc<Signer>, holder: &str) -> (tokio::sync::watch::Sender<bool>, Lease) {
    let lease = Lease::acquire(store, holder, Duration::from_secs(60))
        .await
        .expect("acquire")
        .expect("free");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    cii_audit::queue::integrate(store.clone(), signer.clone(), ORIGIN.into(), &lease, stopped)
        .await
        .expect("integrate");
    (stop, lease)
}

async fn entries(url: &str) -> Vec<Entry> {
    cii_tests::audit_entries_at(url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_appends_are_integrated_by_the_lease_holder_and_each_receipt_verifies() {
    let url = cii_tests::pg::fresh_database().await;
    let signer = signer();
    let (a, store_a) = replica(&url, &signer).await;
    let (b, _store_b) = replica(&url, &signer).await;
    let (_stop, _lease) = integrator(&store_a, &signer, "replica-a").await;
    let (from_a, from_b) = tokio::join!(
        async {
            let mut receipts = Vec::new();
            for n in 0..20 {
                receipts.push(a.append(entry(&format!("a-{n}"))).await.expect("a appends"));
            }
            receipts
        },
        async {
            let mut receipts = Vec::new();
            for n in 0..20 {
                receipts.push(b.append(entry(&format!("b-{n}"))).await.expect("b appends"));
            }
            receipts
        },
    );
    let verifier = signer.verifier();
    let mut indices: Vec<u64> = from_a.iter().chain(&from_b).map(|r| r.index).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..40).collect::<Vec<_>>(), "one index each, none twice");
    for receipt in from_a.iter().chain(&from_b) {
        let checkpoint = verifier.open_checkpoint(&receipt.checkpoint, ORIGIN).expect("signed");
        assert_eq!(checkpoint.size, receipt.tree_size);
        assert!(
            cii_audit::merkle::verify_inclusion(
                &receipt.leaf_hash,
                receipt.index,
                receipt.tree_size,
                &receipt.inclusion_proof,
                &checkpoint.root,
            ),
            "the receipt's proof leads to its checkpoint's root"
        );
        assert_eq!(cii_audit::merkle::leaf_hash(&receipt.entry), receipt.leaf_hash);
    }
    assert_eq!(entries(&url).await.len(), 40);
    // Both replicas follow the log to its end.
    assert_eq!(a.checkpoint().0, 40);
    for _ in 0..50 {
        if b.checkpoint().0 == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.checkpoint().0, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_entry_queued_by_two_replicas_at_once_is_one_entry() {
    let url = cii_tests::pg::fresh_database().await;
    let signer = signer();
    let (a, store_a) = replica(&url, &signer).await;
    let (b, _store_b) = replica(&url, &signer).await;
    let (_stop, _lease) = integrator(&store_a, &signer, "replica-a").await;
    for n in 0..10 {
        // A held transfer's recorded entry, completed by its sender's retry on one replica and
        // by the sweep on another at the same moment.
        let same = entry(&format!("held-{n}"));
        let (one, other) = tokio::join!(a.append(same.clone()), b.append(same.clone()));
        let (one, other) = (one.expect("one"), other.expect("other"));
        assert_eq!(one.index, other.index, "the same entry, the same index");
        assert_eq!(one.leaf_hash, other.leaf_hash);
    }
    let logged = entries(&url).await;
    assert_eq!(logged.len(), 10, "one entry each: {logged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_waits_when_the_holder_stops_is_integrated_once_by_the_next() {
    let url = cii_tests::pg::fresh_database().await;
    let signer = signer();
    let (a, store_a) = replica(&url, &signer).await;
    let (b, store_b) = replica(&url, &signer).await;
    let (stop_a, lease_a) = integrator(&store_a, &signer, "replica-a").await;
    a.append(entry("before")).await.expect("integrated by a");
    stop_a.send_replace(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Queued while nobody sequences: waits.
    let waiting = tokio::spawn(async move {
        let mut receipts = Vec::new();
        for n in 0..5 {
            receipts.push(b.append(entry(&format!("while-{n}"))).await.expect("integrated later"));
        }
        receipts
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(entries(&url).await.len(), 1, "nothing appended without a sequencer");
    lease_a.release().await.expect("release");
    let (_stop_b, lease_b) = integrator(&store_b, &signer, "replica-b").await;
    assert!(lease_b.epoch() > lease_a.epoch());
    let receipts = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("answered")
        .expect("task");
    let indices: Vec<u64> = receipts.iter().map(|r| r.index).collect();
    assert_eq!(indices, [1, 2, 3, 4, 5]);
    let logged = entries(&url).await;
    assert_eq!(logged.len(), 6, "each once: {logged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_only_on_a_checkpoint_it_verified() {
    let url = cii_tests::pg::fresh_database().await;
    let signer = signer();
    let (a, store_a) = replica(&url, &signer).await;
    let (stop, lease) = integrator(&store_a, &signer, "replica-a").await;
    a.append(entry("first")).await.expect("first");
    stop.send_replace(true);
    lease.release().await.expect("release");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Writers in the database without the lease append a batch and a checkpoint of their
    // own: one signed with another key, then one signed with the log's key over a root that
    // is not the entries'. The replica's follower takes neither.
    let intruder = Signer::from_pem(ORIGIN, &generate_key_pem().expect("key")).expect("signer");
    let bytes = cii_audit::entry::encode(&Entry {
        index: 1,
        ..entry("forged")
    });
    let forged = cii_audit::store::NewEntry {
        index: 1,
        leaf_hash: cii_audit::merkle::leaf_hash(&bytes),
        bytes,
        time_micros: cii_types::time::micros(time::OffsetDateTime::now_utc()),
    };
    let body = |size: u64| {
        cii_audit::note::Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: [7u8; 32],
        }
        .body()
    };
    store_a
        .append(std::slice::from_ref(&forged), &[], (2, &intruder.sign(&body(2))))
        .await
        .expect("written by the intruder");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        a.checkpoint().0,
        1,
        "a checkpoint signed with another key is not followed"
    );
    let forged = cii_audit::store::NewEntry { index: 2, ..forged };
    store_a
        .append(std::slice::from_ref(&forged), &[], (3, &signer.sign(&body(3))))
        .await
        .expect("written with the log's key over a wrong root");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(a.checkpoint().0, 1, "a root that is not the entries' is not followed");
    let refused = tokio::time::timeout(Duration::from_secs(3), a.inclusion_proof(1, 2)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "no proof against an unverified size: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_row_no_replica_signed_is_dropped_and_blocks_nothing() {
    let url = cii_tests::pg::fresh_database().await;
    let signer = signer();
    let (a, store_a) = replica(&url, &signer).await;
    let owner = sqlx::PgPool::connect(&url).await.expect("connect");
    // A database writer without the log's key: garbage, then a well-formed entry with its
    // digest but no replica's signature (a shredding approval it would like signed into the
    // log), then the same with a note signed by another key.
    let forged = cii_audit::entry::encode(&Entry {
        kind: EntryKind::ShreddingApproved as i32,
        ..entry("forged approval")
    });
    let digest = ring::digest::digest(&ring::digest::SHA256, &forged);
    let intruder = Signer::from_pem(ORIGIN, &generate_key_pem().expect("key")).expect("signer");
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let other_key = intruder.sign(&format!("cii-audit-queue/v1\n{hex}\n"));
    for (digest, bytes, signed) in [
        (vec![0u8], vec![0xde, 0xad], String::new()),
        (digest.as_ref().to_vec(), forged.clone(), String::new()),
        (vec![1u8], forged.clone(), other_key),
    ] {
        sqlx::query("INSERT INTO audit_queue (entry_sha256, entry, signed) VALUES ($1, $2, $3)")
            .bind(digest)
            .bind(bytes)
            .bind(signed)
            .execute(&owner)
            .await
            .expect("queued by the intruder");
    }
    let (_stop, _lease) = integrator(&store_a, &signer, "replica-a").await;
    let receipt = a.append(entry("after")).await.expect("appended after the forged rows");
    assert_eq!(receipt.index, 0, "nothing of the intruder's was appended");
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_queue WHERE idx IS NULL")
        .fetch_one(&owner)
        .await
        .expect("count");
    assert_eq!(left, 0, "the forged rows were dropped");
    assert_eq!(store_a.size().await.expect("size"), 1);
    owner.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_gives_up_answers_its_waiting_callers_at_once() {
    let url = cii_tests::pg::fresh_database().await;
    let signer = signer();
    let (a, _store_a) = replica(&url, &signer).await;
    let waiting = {
        let a = a.clone();
        tokio::spawn(async move { a.append(entry("nobody sequences")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.abandon_waits();
    let answer = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("answered at once")
        .expect("task");
    assert_eq!(answer.expect_err("unavailable").code(), "AUDIT_UNAVAILABLE");
    assert_eq!(
        a.append(entry("later")).await.expect_err("refused").code(),
        "AUDIT_UNAVAILABLE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_a_month_retention_destroyed_is_dropped_and_holds_back_nothing() {
    let url = cii_tests::pg::fresh_database().await;
    let signer = signer();
    let (a, store_a) = replica(&url, &signer).await;
    let (_stop, _lease) = integrator(&store_a, &signer, "replica-a").await;
    let january_2024 = 1_704_100_000_000_000;
    let old = move |detail: &str| Entry {
        time_micros: january_2024,
        ..entry(detail)
    };
    a.append(old("old")).await.expect("January 2024 still open");
    store_a.set_retention_days(365).await.expect("limit");
    store_a
        .destroy_keys(
            &["2024-01".to_owned()],
            cii_types::time::micros(time::OffsetDateTime::now_utc()),
        )
        .await
        .expect("retention");
    // A held transfer of that month completed now: it can never be written.
    let late = {
        let a = a.clone();
        tokio::spawn(async move { a.append(old("late")).await })
    };
    let now = tokio::time::timeout(Duration::from_secs(20), a.append(entry("now")))
        .await
        .expect("not held back")
        .expect("this month's entry appended");
    assert_eq!(now.index, 1);
    let refused = tokio::time::timeout(Duration::from_secs(10), late)
        .await
        .expect("answered once its row was dropped")
        .expect("task");
    assert_eq!(refused.expect_err("unwritable").code(), "AUDIT_UNAVAILABLE");
    assert_eq!(store_a.size().await.expect("size"), 2, "the old entry and this month's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_does_not_start_where_the_log_ends_is_refused() {
    // A database rolled back under a live sequencer (an asynchronous failover): its next batch
    // would leave a gap under a signed checkpoint. The statement refuses it, and marks nothing.
    let url = cii_tests::pg::fresh_database().await;
    let signer = signer();
    let store = Store::open(&url).await.expect("open");
    let lease = Lease::acquire(&store, "replica-a", Duration::from_secs(60))
        .await
        .expect("acquire")
        .expect("free");
    let owner = sqlx::PgPool::connect(&url).await.expect("connect");
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_queue (entry_sha256, entry, signed) VALUES ('\\x01', '\\x02', '') RETURNING id",
    )
    .fetch_one(&owner)
    .await
    .expect("a waiting row");
    let bytes = cii_audit::entry::encode(&Entry {
        index: 3,
        ..entry("after a gap")
    });
    let row = cii_audit::store::NewEntry {
        index: 3,
        leaf_hash: cii_audit::merkle::leaf_hash(&bytes),
        bytes,
        time_micros: cii_types::time::micros(time::OffsetDateTime::now_utc()),
    };
    let note = signer.sign(
        &cii_audit::note::Checkpoint {
            origin: ORIGIN.into(),
            size: 4,
            root: [9u8; 32],
        }
        .body(),
    );
    let refused = store
        .append_fenced(
            std::slice::from_ref(&row),
            &[],
            (4, &note),
            Some(lease.epoch()),
            &[(id, 3)],
        )
        .await;
    assert!(refused.is_err(), "a batch at 3 on a log of 0 is refused");
    assert_eq!(store.size().await.expect("size"), 0);
    let waiting: Option<i64> = sqlx::query_scalar("SELECT idx FROM audit_queue WHERE id = $1")
        .bind(id)
        .fetch_one(&owner)
        .await
        .expect("row");
    assert_eq!(waiting, None, "the row still waits");
    owner.close().await;
}
