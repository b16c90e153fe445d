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
        let refused = early
            .map(|()| store_name)
            .expect_err("an early destruction is refused")
            .to_string();
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

/// The exceptional early shredding: asked for by one user of one role, approved by another
/// user of the other role, both logged before the month's key goes; `verify` accepts that
/// month, and fails on one destroyed behind the log's back with a forged record (both stores).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_shredding_needs_two_roles_and_verify_checks_both_entries() {
    use cii_kit::status::{error_code, error_field};
    use cii_proto::audit::{ShredPeriodRequest, audit_client::AuditClient};
    use cii_tests::with_token;
    use cii_types::Role;
    for postgres in [false, true] {
        let audit_store = if postgres {
            Some(cii_tests::pg::fresh_database().await)
        } else {
            None
        };
        let clock = cii_kit::clock::SkewedClock::default();
        let net = Network::start_with(
            &two(),
            Options {
                audit_store: audit_store.clone(),
                gateway_clock: Some(std::sync::Arc::new(clock.clone())),
                network_roles: vec![0],
                ..Options::default()
            },
        )
        .await;
        // Entries of this month (the gateway is up once the nodes enrolled through it).
        crate::enrol_both(&net).await;
        let month = cii_audit::body::period_of(cii_types::time::micros(time::OffsetDateTime::now_utc()));
        // Forty days on, this month has ended (entry 0, the rulebook's activation, is of it).
        let ahead = 40 * 86_400;
        clock.set_offset(ahead);
        let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(ahead);
        let token = |user: &str, roles: &[Role]| net.token_with(0, 0, user, roles, at, 300);
        let audit = AuditClient::new(net.gateway_channel_as(&crate::peer(&net, 0)));
        let shred = |request: ShredPeriodRequest, user: &str, roles: &[Role]| {
            let token = token(user, roles);
            let mut audit = audit.clone();
            async move {
                audit
                    .shred_period(with_token(request, &token))
                    .await
                    .map(tonic::Response::into_inner)
            }
        };
        let ask = |reason: &str| ShredPeriodRequest {
            period: month.clone(),
            entry: 0,
            reason: reason.into(),
            approve: 0,
        };
        let refused = shred(ask("patient 756.1234.5678.97 named"), "ops.anna", &[Role::Operator]).await;
        let refused = refused.expect_err("an AVS number in the reason");
        assert_eq!(error_field(&refused).as_deref(), Some("reason"), "{refused:?}");
        let asked = shred(
            ask("a diagnosis typed into a free-text field (ticket DPO-7)"),
            "ops.anna",
            &[Role::Operator],
        )
        .await
        .expect("asked");
        assert!(!asked.destroyed);
        let approve = |period: &str| ShredPeriodRequest {
            period: period.into(),
            approve: asked.index,
            ..ShredPeriodRequest::default()
        };
        for (user, roles) in [
            ("ops.anna", &[Role::NetworkDpo][..]),
            ("ops.bruno", &[Role::Operator][..]),
            ("dpo.carla", &[Role::Operator, Role::NetworkDpo][..]),
        ] {
            let err = shred(approve(&month), user, roles)
                .await
                .expect_err("not two people of two roles");
            assert_eq!(error_code(&err).as_deref(), Some("SHRED_APPROVAL_INVALID"), "{user}");
        }
        let this_month = cii_audit::body::period_of(cii_types::time::micros(at));
        let err = shred(approve(&this_month), "dpo.carla", &[Role::NetworkDpo])
            .await
            .expect_err("open month");
        assert_eq!(error_field(&err).as_deref(), Some("period"));
        let approved = shred(approve(&month), "dpo.carla", &[Role::NetworkDpo])
            .await
            .expect("approved");
        assert!(approved.destroyed && approved.index > asked.index);
        let again = shred(approve(&month), "dpo.carla", &[Role::NetworkDpo])
            .await
            .expect_err("done already");
        assert_eq!(error_code(&again).as_deref(), Some("SHRED_INVALID"));
        let dir = net.stop().await;
        let url = audit_store.unwrap_or_else(|| format!("sqlite:{}", dir.path().join("gateway/audit.db").display()));
        let report = verify(dir.path(), &url)
            .await
            .expect("the log verifies with the approved shredding");
        assert_eq!(report.expired_periods, vec![month.clone()]);

        // A record forged behind the log's back (naming the request, not an approval) lets the
        // store destroy the open month's key; `verify` fails on that month.
        let forged = cii_types::time::micros(at);
        execute(
            &url,
            &format!(
                "INSERT INTO audit_early_shredding (period, approval_index, at_micros) \
                 VALUES ('{this_month}', {}, {forged})",
                asked.index
            ),
        )
        .await
        .expect("a forged record");
        execute(
            &url,
            &format!("UPDATE audit_body_key SET key = NULL, destroyed_micros = {forged} WHERE period = '{this_month}'"),
        )
        .await
        .expect("the store lets the destruction through");
        let failed = verify(dir.path(), &url)
            .await
            .expect_err("verify fails on the forged record");
        assert!(
            failed.to_string().contains(&this_month) || failed.to_string().contains("retention"),
            "{failed}"
        );
    }
}
