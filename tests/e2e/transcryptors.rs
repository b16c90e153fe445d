//! Two transcryptors (issue 24): the second, run by the independent witness, is asked before
//! anything is written. When it does not answer, exchanges stop with a clear, retryable code
//! and nothing half-done; started again, the same transfer id goes through, once.

use std::time::{Duration, Instant};

use cii_proto::common::decision::Outcome;
use cii_proto::node as node_pb;
use cii_tests::{Network, with_token};
use cii_types::PeerIdentity;

use crate::exchanges::{AI, ORP, PERSON, enrol_everywhere, members, node, outcome, report, token, two_transcryptors};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_second_transcryptor_nothing_is_done_and_the_retry_goes_through_once() {
    let mut net = Network::start_with(&members(), two_transcryptors()).await;
    enrol_everywhere(&net).await;
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());
    let size = net.audit_size(&orp).await;
    net.stop_transcryptor().await;

    let facts = ["person_informed_before", "incapacity_for_work_or_threatened"];
    let refused = node(&net, ORP)
        .send(with_token(report("down-1", &facts), &token(&net, ORP)))
        .await
        .expect_err("no second transcryptor");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        cii_kit::grpc::error_code(&refused).as_deref(),
        Some("TRANSCRYPTOR_UNAVAILABLE")
    );
    let enrol = node_pb::EnrolRequest {
        avs_number: PERSON.into(),
        local_record_id: "ORP-VS-2".into(),
    };
    let refused = node(&net, ORP)
        .enrol(with_token(enrol, &token(&net, ORP)))
        .await
        .expect_err("no enrolment either");
    assert_eq!(
        cii_kit::grpc::error_code(&refused).as_deref(),
        Some("TRANSCRYPTOR_UNAVAILABLE")
    );
    assert_eq!(net.audit_size(&orp).await, size, "nothing logged");
    assert!(net.inbox(AI).await.is_empty(), "nothing delivered");

    // Back: the same transfer id goes through, decided and delivered once.
    net.restart_transcryptor().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        match node(&net, ORP)
            .send(with_token(report("down-1", &facts), &token(&net, ORP)))
            .await
        {
            Ok(answer) => break answer.into_inner(),
            Err(e) => {
                assert!(Instant::now() < deadline, "never answered again: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(outcome(&answer), Outcome::Permit, "{:?}", answer.decision);
    let items = net.inbox_of_size(AI, 1).await;
    assert_eq!(items[0].transfer_id, "down-1");
    assert_eq!(
        items[0].local_record_id, "AI-VS-1",
        "the recipient's own pseudonym of the person"
    );
    let entries = cii_tests::audit_entries(net.dir.path())
        .await
        .into_iter()
        .filter(|e| e.transfer_id == "down-1")
        .count();
    assert_eq!(entries, 1, "one decision, one entry");
    net.stop().await;
}
