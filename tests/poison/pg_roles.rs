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

/// Runs `deploy/postgres/<script>` as the owner, its role `named` renamed `role` (roles are
/// per cluster: each test's database gets its own).
async fn apply_roles(owner_url: &str, script: &str, named: &str, role: &str) {
    let path = format!("{}/../deploy/postgres/{script}", env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(path)
        .expect("roles script")
        .replace(named, role);
    let statements: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for statement in statements.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        execute(owner_url, statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_role_cannot_truncate_or_drop_triggers_on_a_real_postgres() {
    let owner_url = cii_tests::pg::fresh_database().await;
    Store::open(&owner_url).await.expect("the owner migrates").close().await;
    // Roles are per cluster: a name of this database's own.
    let database = owner_url.rsplit('/').next().expect("database name");
    let role = format!("svc_{database}");
    apply_roles(&owner_url, "audit-roles.sql", "cii_gateway", &role).await;
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
    // Appends queued as every replica's are, integrated by the lease holder.
    let signer = std::sync::Arc::new(signer);
    let (log, _follower) = Log::follow(store.clone(), signer.clone(), origin.into())
        .await
        .expect("the service role follows the log");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = cii_audit::queue::integrate(store.clone(), signer, origin.into(), &lease, stopped)
        .await
        .expect("the service role integrates the queue");
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
    stop.send_replace(true);
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

/// The operational store under its service role (`deploy/postgres/operations-roles.sql`): the
/// owner migrates (`cii gateway --migrate` does the same), the service role opens the store
/// without DDL, records and releases a transfer, and cannot drop or empty a table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operational_store_works_under_its_service_role_and_no_more() {
    use cii_gateway::store::{ObligationRecord, Store as Operations, TransferRecord};
    let owner_url = cii_tests::pg::fresh_database().await;
    Operations::open(&owner_url)
        .await
        .expect("the owner migrates")
        .close()
        .await;
    let database = owner_url.rsplit('/').next().expect("database name");
    let role = format!("ops_{database}");
    apply_roles(&owner_url, "operations-roles.sql", "cii_gateway_ops", &role).await;
    let service_url = owner_url.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let store = Operations::open(&service_url)
        .await
        .expect("the service role opens the migrated store");
    let obligations = [ObligationRecord {
        id: "ORP-VS:t-1:0".into(),
        owner: "AI-VS".into(),
        due_micros: 5,
        wire: b"obligation".to_vec(),
    }];
    store
        .record(&TransferRecord {
            caller: "ORP-VS",
            transfer_id: "t-1",
            acting_user: "anna@ORP-VS",
            request_sha256: &[0; 32],
            counterparty: "AI-VS",
            pull: false,
            response: b"answer",
            state: cii_types::TransferState::Queued,
            delivery: Some(b"sealed"),
            obligations: &obligations,
            consents: &[],
            now_micros: 0,
            entry: b"entry",
            log_size_before: 0,
        })
        .await
        .expect("recorded by the service role");
    store
        .release("ORP-VS", "t-1", b"answer", Some(b"sealed"))
        .await
        .expect("released by the service role");
    store.close().await;
    for attack in [
        "DROP TABLE transfer",
        "TRUNCATE outbox",
        "ALTER TABLE transfer ADD COLUMN x INT",
        "CREATE TABLE mine (x INT)",
    ] {
        assert!(
            execute(&service_url, attack).await.is_err(),
            "the service role may not: {attack}"
        );
    }
}
