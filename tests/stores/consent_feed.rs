//! The consent registry's change feed on a real PostgreSQL, written by two writers at once
//! (two connections, or two replicas of the registry): a reader never sees a later change
//! before an earlier one, so the gateway, reading after its last position, misses no
//! revocation notice.

use std::collections::BTreeSet;

use cii_consent::model::{Consent, Recurrence, Revocation};
use cii_consent::store::{FEED_LOCK, Store};
use sqlx::Connection;

fn consent(now: i64) -> Consent {
    let institutions: BTreeSet<String> = ["ORP-VS", "AI-VS"].into_iter().map(str::to_owned).collect();
    Consent {
        id: String::new(),
        version: 0,
        recorded_by: "ORP-VS".into(),
        recorded_by_user: "anna".into(),
        recorded_at: now,
        institutions,
        directions: [("ORP-VS".to_owned(), "AI-VS".to_owned())].into_iter().collect(),
        categories: ["contact".to_owned()].into_iter().collect(),
        purposes: ["integration".to_owned()].into_iter().collect(),
        valid_from: now,
        valid_until: now + 1_000_000_000,
        written: true,
        evidence_sha256: vec![1; 32],
        evidence_reference: "dossier 1".into(),
        recurrence: Recurrence::Recurring,
        onward_transfer_allowed: false,
        information_given: "informed".into(),
        representative: String::new(),
        language: "fr".into(),
        revocation: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_change_is_never_visible_before_an_earlier_one() {
    let url = cii_tests::pg::fresh_database().await;
    let store = Store::open(&url).await.expect("open");
    let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
    let recorded = store.record(&[9; 32], consent(now), now, None).await.expect("record");

    // Another writer's change, numbered and not committed yet (it follows the feed's protocol).
    let mut other = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut open = other.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(FEED_LOCK)
        .execute(&mut *open)
        .await
        .expect("lock");
    sqlx::query(
        "INSERT INTO consent_change (consent_id, version, kind, at_micros, institutions) \
         VALUES ('other', 1, 'revoked', 1, '[]')",
    )
    .execute(&mut *open)
    .await
    .expect("insert");

    // This writer's revocation comes after it: it waits, and nothing of it shows meanwhile.
    let revoking = {
        let (store, id) = (store.clone(), recorded.id.clone());
        tokio::spawn(async move {
            let revocation = Revocation {
                at: now,
                institution: "ORP-VS".into(),
                user: "anna".into(),
                channel: "letter".into(),
            };
            store.revoke(&id, revocation, None).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        store.changes(0, 10).await.expect("feed").is_empty(),
        "a later change visible before the earlier one commits"
    );
    open.commit().await.expect("commit");
    revoking.await.expect("task").expect("revoked");
    let feed = store.changes(0, 10).await.expect("feed");
    let order: Vec<(&str, u64)> = feed.iter().map(|c| (c.consent_id.as_str(), c.sequence)).collect();
    assert_eq!(order.len(), 2, "{order:?}");
    assert_eq!(order[0].0, "other", "numbered first, visible first: {order:?}");
    assert_eq!(order[1].0, recorded.id);
    store.close().await;
}
