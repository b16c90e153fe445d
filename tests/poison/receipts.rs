//! Receipts bound to deliveries: a dishonest gateway (here: the gateway's certificate in
//! a test's hands) cannot cover a delivery it never logged with the receipt of another.
//! The node checks that the receipt's entry hashes to its leaf and is about this
//! transfer, these parties, these categories and these sealed bytes; a holder asked to
//! provide checks that the entry is this pull's permit.

use cii_kit::status::error_code;
use cii_proto::node::{self as node_pb, node_inbound_client::NodeInboundClient};
use cii_tests::with_token;
use cii_types::{PeerIdentity, Role};

use crate::{node, two};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receipt_of_another_delivery_is_refused_by_the_node() {
    let net = cii_tests::Network::start(&two()).await;
    crate::enrol_both(&net).await;
    let sent = node(&net, 0)
        .send(with_token(
            crate::report("t-1", "reduced capacity"),
            &net.token(0, "caseworker.1", &[Role::Caseworker]),
        ))
        .await
        .expect("send")
        .into_inner();
    let receipt = sent.receipt.clone().expect("receipt");
    assert!(!receipt.entry.is_empty(), "the receipt carries its entry");
    let genuine = node_pb::Delivery {
        transfer_id: "t-1".into(),
        sender: "ORP-VS".into(),
        decision: sent.decision.clone(),
        receipt: Some(receipt.clone()),
        payload: Some(node_pb::SealedPayload {
            key: vec![1; 64],
            nonce: vec![2; 12],
            ciphertext: vec![3; 48],
        }),
        ..node_pb::Delivery::default()
    };
    let mut tampered_entry = receipt.clone();
    if let Some(last) = tampered_entry.entry.last_mut() {
        *last ^= 1;
    }
    let attempts = [
        (
            "another transfer",
            node_pb::Delivery {
                transfer_id: "t-forged".into(),
                ..genuine.clone()
            },
        ),
        (
            "another sender",
            node_pb::Delivery {
                sender: "AS-VS".into(),
                ..genuine.clone()
            },
        ),
        ("other sealed bytes under the same transfer", genuine.clone()),
        (
            "entry bytes changed",
            node_pb::Delivery {
                receipt: Some(tampered_entry),
                ..genuine.clone()
            },
        ),
    ];
    let mut inbound = NodeInboundClient::new(net.node_inbound_channel_as(1, &PeerIdentity::Gateway));
    for (what, delivery) in attempts {
        let status = inbound.deliver(delivery).await.expect_err(what);
        assert_eq!(
            error_code(&status).as_deref(),
            Some("RECEIPT_MISMATCH"),
            "{what}: {status:?}"
        );
    }
    // A notice is logged before it is sent: one under another entry's receipt is refused.
    let forged_notice = node_pb::Delivery {
        transfer_id: "consent-notice:999".into(),
        sender: "gateway".into(),
        notice: Some(node_pb::ConsentNotice {
            consent_id: "c-forged".into(),
            version: 1,
            change: "revoked".into(),
            ..node_pb::ConsentNotice::default()
        }),
        receipt: Some(receipt.clone()),
        ..node_pb::Delivery::default()
    };
    // An AVS number the decision did not release is refused, whatever came with it.
    let with_identity = node_pb::Delivery {
        identity: Some(cii_proto::common::EncryptedIdentity {
            ciphertext: vec![1; 64],
        }),
        ..genuine.clone()
    };
    let status = inbound.deliver(with_identity).await.expect_err("identity not released");
    assert_eq!(error_code(&status).as_deref(), Some("FIELD_NOT_ALLOWED"), "{status:?}");
    assert_eq!(cii_kit::grpc::error_field(&status).as_deref(), Some("identity"));
    let status = inbound.deliver(forged_notice).await.expect_err("a notice never logged");
    assert_eq!(error_code(&status).as_deref(), Some("RECEIPT_MISMATCH"), "{status:?}");
    // The holder's side: asked to provide under a receipt that is not this pull's permit.
    let provide = node_pb::ProvideRequest {
        transfer_id: "p-forged".into(),
        requester: "ORP-VS".into(),
        person: Some(cii_proto::common::EncryptedPseudonym {
            ciphertext: vec![0; 64],
        }),
        categories: vec!["health_limitations".into()],
        receipt: Some(receipt.clone()),
        ..node_pb::ProvideRequest::default()
    };
    let status = inbound.provide(provide).await.expect_err("another entry's receipt");
    assert_eq!(error_code(&status).as_deref(), Some("RECEIPT_MISMATCH"), "{status:?}");
    let items = node(&net, 1)
        .list_inbox(with_token(
            node_pb::ListInboxRequest { limit: 100 },
            &net.token(1, "caseworker.1", &[Role::Caseworker]),
        ))
        .await
        .expect("inbox")
        .into_inner()
        .items;
    let ids: Vec<&str> = items.iter().map(|i| i.transfer_id.as_str()).collect();
    assert_eq!(ids, ["t-1"], "only the genuine delivery is stored");
    net.stop().await;
}
