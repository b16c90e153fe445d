//! The log refuses what it could not read back; what was planted anyway is reported by
//! index and hides nothing after it.

use cii_kit::status::error_code;
use cii_proto::audit::QueryRequest;
use cii_tests::{Network, Options, with_token};
use cii_types::Role;
use tokio_stream::StreamExt;

use crate::{node, peer, two};

const AVS: &str = "756.1234.5678.97";

/// Everything a query stream answers: decoded entries, and the indices reported undecodable.
async fn query_all(net: &Network, i: usize, role: Role) -> (Vec<cii_audit::Entry>, Vec<u64>) {
    let token = net.token(i, "dpo.1", &[role]);
    let mut stream = node(net, i)
        .query_audit(with_token(QueryRequest::default(), &token))
        .await
        .expect("query")
        .into_inner();
    let (mut entries, mut undecodable) = (Vec::new(), Vec::new());
    while let Some(item) = stream.next().await {
        let item = item.expect("item");
        if item.undecodable.is_empty() {
            entries.push(cii_audit::entry::decode(&item.body).expect("decode"));
        } else {
            assert!(item.body.is_empty(), "an undecodable entry's bytes are not sent");
            undecodable.push(item.index);
        }
    }
    (entries, undecodable)
}

/// Verifies the log of the test network stopped in `dir`.
pub(crate) async fn verify(dir: &std::path::Path) -> cii_audit::verify::Report {
    let key = std::fs::read_to_string(cii_kit::pki::audit_signing_key(&dir.join("pki"))).expect("key");
    let verifier = cii_audit::note::Signer::from_pem("cii.test/audit", &key)
        .expect("signer")
        .verifier();
    let store = cii_audit::Store::open_read_only(&format!("sqlite:{}", dir.join("gateway/audit.db").display()))
        .await
        .expect("store");
    let report = cii_audit::verify::verify(&store, &verifier, "cii.test/audit", |_, _| {})
        .await
        .expect("the log verifies");
    store.close().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_or_personal_query_filter_is_refused_before_it_reaches_the_log() {
    let net = Network::start(&two()).await;
    let size = net.audit_size(&peer(&net, 0)).await;
    let token = net.token(0, "dpo.1", &[Role::Dpo]);
    let attempts = [
        (
            "basis",
            QueryRequest {
                basis: "b".repeat(200_000),
                ..QueryRequest::default()
            },
        ),
        (
            "acting_user",
            QueryRequest {
                acting_user: format!("{AVS}@ORP-VS"),
                ..QueryRequest::default()
            },
        ),
        (
            "exchange_type",
            QueryRequest {
                exchange_type: AVS.replace('.', ""),
                ..QueryRequest::default()
            },
        ),
        (
            "acting_user",
            QueryRequest {
                acting_user: "anna@ORP-VS\nkind=ADMIN".into(),
                ..QueryRequest::default()
            },
        ),
        (
            "institution",
            QueryRequest {
                institution: "ORP-VS ".into(),
                ..QueryRequest::default()
            },
        ),
    ];
    for (field, request) in attempts {
        let status = node(&net, 0)
            .query_audit(with_token(request, &token))
            .await
            .expect_err("refused");
        assert_eq!(
            error_code(&status).as_deref(),
            Some("FILTER_INVALID"),
            "{field}: {status:?}"
        );
        assert_eq!(
            status
                .metadata()
                .get(cii_kit::status::FIELD_TRAILER)
                .and_then(|v| v.to_str().ok()),
            Some(field)
        );
        assert!(!status.message().contains("756"), "the refusal does not echo the value");
    }
    assert_eq!(
        net.audit_size(&peer(&net, 0)).await,
        size,
        "a refused query logs nothing"
    );
    // A query of the form the log records still works, and is logged.
    let (entries, undecodable) = query_all(&net, 0, Role::Dpo).await;
    assert!(undecodable.is_empty());
    assert!(!entries.is_empty());
    let dir = net.stop().await;
    let report = verify(dir.path()).await;
    assert!(report.undecodable.is_empty(), "{:?}", report.undecodable);
    assert_eq!(report.entries, size + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_entry_planted_in_the_store_is_reported_by_index_and_hides_nothing() {
    let mut net = Network::start_with(
        &two(),
        Options {
            network_roles: vec![1],
            ..Options::default()
        },
    )
    .await;
    let mut planted = 0;
    net.restart_gateway(|dir| {
        let key = std::fs::read_to_string(cii_kit::pki::audit_signing_key(&dir.join("pki"))).expect("key");
        let url = format!("sqlite:{}", dir.join("gateway/audit.db").display());
        let oversized = cii_audit::entry::encode(&cii_audit::Entry {
            kind: cii_audit::EntryKind::AuditQuery as i32,
            detail: "x".repeat(200_000),
            ..cii_audit::Entry::default()
        });
        // After it, an ordinary entry: the walk must not stop at the bad one.
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Runtime::new().expect("runtime");
                let first = runtime.block_on(cii_tests::plant_audit_entries(&url, &key, &[oversized]));
                let next = cii_audit::entry::encode(&cii_audit::Entry {
                    index: first + 1,
                    kind: cii_audit::EntryKind::AdminAction as i32,
                    detail: "after".into(),
                    ..cii_audit::Entry::default()
                });
                runtime.block_on(cii_tests::plant_audit_entries(&url, &key, &[next]));
                planted = first;
            });
        });
    })
    .await;
    // The gateway opens the log, and every DPO's query reports the entry by index.
    for (i, role) in [(1, Role::NetworkDpo), (0, Role::Dpo)] {
        let (entries, undecodable) = query_all(&net, i, role).await;
        assert_eq!(undecodable, vec![planted], "{role:?}");
        if role == Role::NetworkDpo {
            assert!(
                entries.iter().any(|e| e.detail == "after"),
                "the entry after it is read"
            );
        }
    }
    let dir = net.stop().await;
    let report = verify(dir.path()).await;
    assert_eq!(report.undecodable.len(), 1);
    assert_eq!(report.undecodable[0].0, planted);
    assert!(
        report.undecodable[0].1.contains("larger than"),
        "{:?}",
        report.undecodable
    );
    assert!(report.entries > planted + 2, "verification went on past it");
}
