//! On PostgreSQL the gateway's service role appends and reads the log and nothing more:
//! `deploy/postgres/audit-roles.sql` applied to a real server, then the role's attempts to
//! truncate, drop a trigger, disable triggers or touch keys or the sequencer's lease directly,
//! refused; its ordinary work (the lease through its functions, append under it, read,
//! retention through the owner's function) done.

use cii_audit::note::{Signer, generate_key_pem};
use cii_audit::{Entry, EntryKind, Log, Store};

async fn execute(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    let pool = sqlx::PgPool::connect(url).await?;
    let result = sqlx::query(sql).execute(&pool).await.map(|_| ());
    pool.close().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_role_cannot_truncate_or_drop_triggers_on_a_real_postgres() {
    let owner_url = cii_tests::pg::fresh_database().await;
    Store::open(&owner_url).await.expect("the owner migrates").close().await;
    // Roles are per cluster: a name of this database's own.
    let database = owner_url.rsplit('/').next().expect("database name");
    let role = format!("svc_{database}");
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/postgres/audit-roles.sql"
    ))
    .expect("roles script")
    .replace("cii_gateway", &role);
    let statements: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for statement in statements.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        execute(&owner_url, statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let service_url = owner_url.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);

    // Its ordinary work: open (no DDL), append into an old month and this one, read.
    let origin = "cii.test/audit";
    let signer = Signer::from_pem(origin, &generate_key_pem().expect("key")).expect("signer");
    let store = Store::open(&service_url)
        .await
        .expect("the service role opens the migrated log");
    store.set_retention_days(365).await.expect("the limit");
    // As one of several replicas would: under the sequencer's lease, through its functions.
    let lease = cii_audit::lease::Lease::acquire(&store, "replica-1", std::time::Duration::from_secs(30))
        .await
        .expect("the service role acquires the lease")
        .expect("free");
    let (log, task) = Log::open_leased(store.clone(), std::sync::Arc::new(signer), origin.into(), &lease)
        .await
        .expect("log");
    for time_micros in [
        1_704_100_000_000_000,
        cii_types::time::micros(time::OffsetDateTime::now_utc()),
    ] {
        log.append(Entry {
            kind: EntryKind::AdminAction as i32,
            time_micros,
            detail: "work".into(),
            ..Entry::default()
        })
        .await
        .expect("append");
    }
    drop(log);
    task.await.expect("sequencer");
    // Retention through the owner's function: January 2024 is due.
    store
        .destroy_keys(
            &["2024-01".to_owned()],
            cii_types::time::micros(time::OffsetDateTime::now_utc()),
        )
        .await
        .expect("retention through audit_destroy_keys");
    let periods = store.periods().await.expect("periods");
    assert!(
        periods
            .iter()
            .any(|p| p.period == "2024-01" && p.destroyed_micros.is_some()),
        "{periods:?}"
    );
    assert_eq!(store.entries(0, 10).await.expect("read").len(), 2);
    assert!(lease.renew().await.expect("the service role renews"));
    lease.release().await.expect("and releases");
    store.close().await;

    // What it may not do.
    for attempt in [
        "TRUNCATE audit_entry",
        "TRUNCATE audit_checkpoint",
        "DROP TRIGGER audit_entry_append_only ON audit_entry",
        "ALTER TABLE audit_entry DISABLE TRIGGER ALL",
        "DROP TABLE audit_checkpoint",
        "UPDATE audit_body_key SET key = NULL",
        "DELETE FROM audit_body_key",
        "DELETE FROM audit_retention",
        "UPDATE audit_lease SET epoch = epoch + 1",
        "UPDATE audit_lease SET expires_at = 'infinity'",
    ] {
        let error = execute(&service_url, attempt).await.expect_err(attempt).to_string();
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "{attempt}: {error}"
        );
    }
}
