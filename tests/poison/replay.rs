//! A replay adds nothing: a permitted pull resent under the same id gets the first
//! answer's bytes, not the holder's newer data; another user's replay is refused; once
//! the answer is no longer kept (its time passed, or its requester released it) the id says
//! so; new data takes a new transfer, a new decision and a new entry.

use cii_kit::status::error_code;
use cii_proto::exchange as xt;
use cii_proto::gateway as gw;
use cii_proto::node as node_pb;
use cii_tests::{Network, Options, with_token};
use cii_types::Role;
use prost::Message;

use crate::{node, peer, two};

const FIRST: &str = "HEALTH-ALPHA-7q";
const NEWER: &str = "HEALTH-BETA-9z";

fn ask(transfer_id: &str) -> node_pb::RequestRequest {
    node_pb::RequestRequest {
        case_reference: "case-1".into(),
        transfer_id: transfer_id.into(),
        holder: "AI-VS".into(),
        local_record_id: "ORP-VS-1".into(),
        // LPGA art. 32 al. 2: insurers provide on a written, reasoned request (a duty, so the
        // holder answers without a review).
        purpose: "benefit_determination".into(),
        categories: vec!["health_limitations".into()],
        written_request: "Benefit determination under LACI art. 23: please state the capacity to work.".into(),
        trigger: gw::Trigger::WrittenRequest as i32,
        attested_facts: Vec::new(),
    }
}

async fn publish(net: &Network, health: &str) {
    node(net, 1)
        .publish(with_token(
            node_pb::PublishRequest {
                local_record_id: "AI-VS-1".into(),
                data: Some(prost_types::Any {
                    type_url: "type.googleapis.com/cii.exchange.v1.DataResponse".into(),
                    value: xt::DataResponse {
                        health_limitations: health.into(),
                        ..xt::DataResponse::default()
                    }
                    .encode_to_vec(),
                }),
            },
            &net.token(1, "caseworker.1", &[Role::Caseworker]),
        ))
        .await
        .expect("publish");
}

async fn pull(net: &Network, user: &str, transfer_id: &str) -> Result<gw::TransferResponse, tonic::Status> {
    node(net, 0)
        .request(with_token(ask(transfer_id), &net.token(0, user, &[Role::Caseworker])))
        .await
        .map(tonic::Response::into_inner)
}

fn health(answer: &gw::TransferResponse) -> String {
    let provided = answer.provided.as_ref().expect("provided");
    xt::DataResponse::decode(provided.value.as_slice())
        .expect("decode")
        .health_limitations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_pull_gets_the_first_answer_and_nothing_new() {
    let net = Network::start_with(
        &two(),
        Options {
            gateway_store: Some("[store]\npull_answer_keep_seconds = 3\n\n".into()),
            ..Options::default()
        },
    )
    .await;
    crate::enrol_both(&net).await;
    publish(&net, FIRST).await;
    let first = pull(&net, "anna", "r-1").await.expect("permitted pull");
    assert_eq!(health(&first), FIRST);
    let size = net.audit_size(&peer(&net, 0)).await;

    // The holder publishes newer data; the same request by the same user gets the first answer.
    publish(&net, NEWER).await;
    let replay = pull(&net, "anna", "r-1").await.expect("replay");
    assert_eq!(replay, first, "the first answer, byte for byte");
    assert_eq!(net.audit_size(&peer(&net, 0)).await, size, "no new decision, no entry");

    // Another user of the same institution may not take over the id.
    let other = pull(&net, "mallory", "r-1").await.expect_err("another user's replay");
    assert_eq!(error_code(&other).as_deref(), Some("TRANSFER_ID_REUSED"));

    // Newer data needs a new transfer: a new decision, a new entry.
    let second = pull(&net, "anna", "r-2").await.expect("a new pull");
    assert_eq!(health(&second), NEWER);
    assert_eq!(net.audit_size(&peer(&net, 0)).await, size + 1);

    // The requester releases the answer it has: gone at once, for that user only.
    let running = &net;
    let release = |user: &str, id: &str| {
        let token = running.token(0, user, &[Role::Caseworker]);
        let request = gw::ReleasePullAnswerRequest { transfer_id: id.into() };
        async move { node(running, 0).release_pull_answer(with_token(request, &token)).await }
    };
    let refused = release("mallory", "r-2").await.expect_err("another user's release");
    assert_eq!(error_code(&refused).as_deref(), Some("TRANSFER_ID_REUSED"));
    let unknown = release("anna", "r-404").await.expect_err("unknown id");
    assert_eq!(error_code(&unknown).as_deref(), Some("TRANSFER_NOT_FOUND"));
    assert!(release("anna", "r-2").await.expect("release").into_inner().released);
    assert!(!release("anna", "r-2").await.expect("again").into_inner().released);
    let released = pull(&net, "anna", "r-2").await.expect_err("released");
    assert_eq!(error_code(&released).as_deref(), Some("PULL_ANSWER_GONE"));

    // Once the answer is no longer kept (here 3 s; an hour by default), the id says so.
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    let gone = pull(&net, "anna", "r-1").await.expect_err("answer gone");
    assert_eq!(error_code(&gone).as_deref(), Some("PULL_ANSWER_GONE"));
    assert_eq!(net.audit_size(&peer(&net, 0)).await, size + 1);

    // The gateway's table holds the kept answer sealed: the plaintext is nowhere in it.
    let dir = net.stop().await;
    for file in ["gateway/gateway.db", "gateway/gateway.db-wal"] {
        let Ok(db) = std::fs::read(dir.path().join(file)) else {
            continue;
        };
        for plain in [FIRST, NEWER] {
            assert!(
                !db.windows(plain.len()).any(|w| w == plain.as_bytes()),
                "plaintext in {file}"
            );
        }
    }
}
