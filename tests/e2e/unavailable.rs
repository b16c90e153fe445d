//! The audit log's database goes away under the gateway: transfers are refused
//! with a clear, retryable error and nothing is delivered unlogged; when the
//! database is back, the sender's retry completes the transfer exactly once.

use cii_proto::gateway as gw;
use cii_proto::node::{self as node_pb, node_client::NodeClient};
use cii_tests::{Network, Options, member, with_token};
use cii_types::{InstitutionType, Role};
use prost::Message;

const PERSON: &str = "756.1234.5678.97";

fn report(id: &str) -> node_pb::SendRequest {
    node_pb::SendRequest {
        list_record_ids: Vec::new(),
        case_reference: "case-1".into(),
        transfer_id: id.into(),
        recipient: "AI-VS".into(),
        local_record_id: "O-1".into(),
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/cii.exchange.v1.EarlyDetectionReport".into(),
            value: cii_proto::exchange::EarlyDetectionReport {
                health_limitations: "reduced capacity".into(),
                ..cii_proto::exchange::EarlyDetectionReport::default()
            }
            .encode_to_vec(),
        }),
        include_identity: false,
        attested_facts: vec![
            "person_informed_before".into(),
            "incapacity_for_work_or_threatened".into(),
        ],
        written_request: String::new(),
    }
}

/// Lets (or stops letting) anyone connect to `database`, and ends its open sessions.
async fn set_reachable(url: &str, reachable: bool) {
    let (base, name) = url.rsplit_once('/').expect("database url");
    let admin = sqlx::PgPool::connect(&format!("{base}/postgres")).await.expect("admin");
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {reachable}"))
        .execute(&admin)
        .await
        .expect("alter database");
    if !reachable {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .execute(&admin)
            .await
            .expect("terminate sessions");
    }
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_its_audit_database_the_gateway_refuses_and_delivers_nothing_then_recovers() {
    let url = cii_tests::pg::fresh_database().await;
    let net = Network::start_with(
        &[
            member("ORP-VS", InstitutionType::AcOrp),
            member("AI-VS", InstitutionType::Ai),
        ],
        Options {
            audit_store: Some(url.clone()),
            ..Options::default()
        },
    )
    .await;
    let node = |i: usize| NodeClient::new(net.node_api_channel(i));
    let token = |i: usize| net.token(i, "caseworker.1", &[Role::Caseworker]);
    for (i, record) in [(0, "O-1"), (1, "A-1")] {
        node(i)
            .enrol(with_token(
                node_pb::EnrolRequest {
                    avs_number: PERSON.into(),
                    local_record_id: record.into(),
                },
                &token(i),
            ))
            .await
            .expect("enrol");
    }
    let inbox = async || {
        node(1)
            .list_inbox(with_token(node_pb::ListInboxRequest { limit: 100 }, &token(1)))
            .await
            .expect("inbox")
            .into_inner()
            .items
    };

    set_reachable(&url, false).await;
    for _ in 0..3 {
        let refused = node(0)
            .send(with_token(report("down-1"), &token(0)))
            .await
            .expect_err("no log, no transfer");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert_eq!(
            cii_kit::grpc::error_code(&refused).as_deref(),
            Some("AUDIT_UNAVAILABLE")
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(inbox().await.is_empty(), "nothing was delivered while the log was down");

    set_reachable(&url, true).await;
    let mut answer = None;
    for _ in 0..50 {
        match node(0).send(with_token(report("down-1"), &token(0))).await {
            Ok(a) => {
                answer = Some(a.into_inner());
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let answer = answer.expect("the retry succeeds once the log is back");
    assert_eq!(
        answer.decision.expect("decision").outcome,
        cii_proto::common::decision::Outcome::Permit as i32
    );
    let mut delivered = Vec::new();
    for _ in 0..50 {
        delivered = inbox().await;
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        delivered.iter().map(|i| i.transfer_id.as_str()).collect::<Vec<_>>(),
        ["down-1"],
        "delivered once"
    );
    net.stop().await;
    let logged = cii_tests::audit_entries_at(&url).await;
    let entries = logged.iter().filter(|e| e.transfer_id == "down-1").count();
    assert_eq!(entries, 1, "exactly one entry for the transfer");
}
