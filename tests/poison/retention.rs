//! Retention bound by the log itself: a key destroyed before its month is due is refused
//! by the store, and one destroyed behind the store's back (a forged time) fails
//! `verify`, which checks every destroyed month against the logged retention runs. The
//! stored limit only grows.

use cii_tests::{Network, Options};

use crate::two;

async fn execute(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        let result = sqlx::query(sql).execute(&pool).await.map(|_| ());
        pool.close().await;
        result
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        let result = sqlx::query(sql).execute(&pool).await.map(|_| ());
        pool.close().await;
        result
    }
}

async fn verify(dir: &std::path::Path, url: &str) -> Result<cii_audit::verify::Report, cii_audit::verify::VerifyError> {
    let key = std::fs::read_to_string(cii_kit::pki::audit_signing_key(&dir.join("pki"))).expect("key");
    let verifier = cii_audit::note::Signer::from_pem("cii.test/audit", &key)
        .expect("signer")
        .verifier();
    let store = cii_audit::Store::open_read_only(url).await.expect("store");
    let report = cii_audit::verify::verify(&store, &verifier, "cii.test/audit", |_, _| {}).await;
    store.close().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_destroyed_early_is_refused_or_fails_verify_on_both_stores() {
    for postgres in [false, true] {
        let audit_store = if postgres {
            Some(cii_tests::pg::fresh_database().await)
        } else {
            None
        };
        let net = Network::start_with(
            &two(),
            Options {
                audit_store: audit_store.clone(),
                ..Options::default()
            },
        )
        .await;
        let dir = net.stop().await;
        let url = audit_store.unwrap_or_else(|| format!("sqlite:{}", dir.path().join("gateway/audit.db").display()));
        let store_name = if postgres { "postgres" } else { "sqlite" };
        verify(dir.path(), &url).await.expect("the log verifies before");
        let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
        // This month's key, destroyed now: not due for a year, refused by the store.
        let early = execute(
            &url,
            &format!("UPDATE audit_body_key SET key = NULL, destroyed_micros = {now}"),
        )
        .await;
        let refused = early.expect_err("an early destruction is refused").to_string();
        assert!(refused.contains("not due"), "{store_name}: {refused}");
        // The stored limit only grows.
        let shorter = execute(&url, "UPDATE audit_retention SET retention_days = 365").await;
        assert!(
            shorter.is_ok(),
            "{store_name}: 365 is the limit the test gateway was given"
        );
        let shrunk = execute(&url, "UPDATE audit_retention SET retention_days = 364").await;
        assert!(shrunk.is_err(), "{store_name}: the legal minimum");
        execute(&url, "UPDATE audit_retention SET retention_days = 400")
            .await
            .expect("lengthened");
        let back = execute(&url, "UPDATE audit_retention SET retention_days = 365").await;
        assert!(
            back.expect_err("shortened").to_string().contains("only grow"),
            "{store_name}"
        );
        // Behind the store's back, with a forged time ten years on: `verify` fails, naming
        // the month (no logged retention run destroyed it, and none could have yet).
        let forged = now + 10 * 366 * 86_400 * 1_000_000;
        execute(
            &url,
            &format!("UPDATE audit_body_key SET key = NULL, destroyed_micros = {forged}"),
        )
        .await
        .expect("the forged time passes the trigger");
        match verify(dir.path(), &url).await {
            Err(cii_audit::verify::VerifyError::Bad { index, problem }) => {
                assert_eq!(index, 0, "{store_name}");
                assert!(
                    problem.contains("no retention run in the log names it"),
                    "{store_name}: {problem}"
                );
            }
            other => panic!("{store_name}: an early destruction verified: {other:?}"),
        }
    }
}
