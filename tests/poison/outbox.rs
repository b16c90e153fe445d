//! No item blocks the others: a payload over its cap is refused before any decision; a
//! delivery the recipient refuses for good leaves the outbox at once (logged, the sender
//! told), and the next delivery to the same recipient arrives within seconds.

use std::time::Duration;

use cii_kit::status::error_code;
use cii_proto::gateway::{self as gw, ListDeadLettersRequest, ResolveDeadLetterRequest};
use cii_proto::node::{self as node_pb};
use cii_tests::{Network, Options, with_token};
use cii_types::PeerIdentity;
use cii_types::Role;
use prost::Message;

use crate::{node, peer, two};

/// Writes a delivery straight into the gateway's outbox towards AI-VS (what the earlier
/// release queued), on a runtime of its own: `restart_gateway` calls a synchronous closure.
fn plant_outbox(dir: &std::path::Path, sender: &str, transfer_id: &str, delivery: Vec<u8>) {
    plant_outbox_to(dir, "AI-VS", sender, transfer_id, delivery);
}

fn plant_outbox_to(dir: &std::path::Path, recipient: &str, sender: &str, transfer_id: &str, delivery: Vec<u8>) {
    let url = format!("sqlite:{}", dir.join("gateway/gateway.db").display());
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Runtime::new().expect("runtime").block_on(async {
                let pool = sqlx::SqlitePool::connect(&url).await.expect("gateway db");
                sqlx::query(
                    "INSERT INTO outbox (recipient, sender, transfer_id, delivery, next_attempt_micros) \
                     VALUES (?4, ?1, ?2, ?3, 0)",
                )
                .bind(sender)
                .bind(transfer_id)
                .bind(delivery)
                .bind(recipient)
                .execute(&pool)
                .await
                .expect("plant");
                pool.close().await;
            });
        });
    });
}

async fn inbox(net: &Network, i: usize) -> Vec<node_pb::InboxItem> {
    node(net, i)
        .list_inbox(with_token(
            node_pb::ListInboxRequest { limit: 100 },
            &net.token(i, "caseworker.1", &[Role::Caseworker]),
        ))
        .await
        .expect("inbox")
        .into_inner()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_push_is_refused_before_any_decision() {
    let net = Network::start(&two()).await;
    crate::enrol_both(&net).await;
    let size = net.audit_size(&peer(&net, 0)).await;
    let status = node(&net, 0)
        .send(with_token(
            crate::report("t-big", &"x".repeat(2 * 1024 * 1024)),
            &net.token(0, "caseworker.1", &[Role::Caseworker]),
        ))
        .await
        .expect_err("refused");
    assert_eq!(error_code(&status).as_deref(), Some("PAYLOAD_TOO_LARGE"), "{status:?}");
    assert_eq!(net.audit_size(&peer(&net, 0)).await, size, "no decision, no entry");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_refused_for_good_is_dead_lettered_and_the_next_one_arrives() {
    let mut net = Network::start_with(
        &two(),
        Options {
            network_roles: vec![0],
            ..Options::default()
        },
    )
    .await;
    crate::enrol_both(&net).await;
    // A 4.5 MB delivery queued by an earlier release (before the cap): the recipient's node
    // refuses it on every attempt (MESSAGE_TOO_LARGE).
    net.restart_gateway(|dir| {
        let delivery = node_pb::Delivery {
            transfer_id: "t-huge".into(),
            sender: "ORP-VS".into(),
            payload: Some(node_pb::SealedPayload {
                ciphertext: vec![7; 4_500_000],
                ..node_pb::SealedPayload::default()
            }),
            ..node_pb::Delivery::default()
        }
        .encode_to_vec();
        plant_outbox(dir, "ORP-VS", "t-huge", delivery);
    })
    .await;
    node(&net, 0)
        .send(with_token(
            crate::report("t-next", "reduced capacity"),
            &net.token(0, "caseworker.1", &[Role::Caseworker]),
        ))
        .await
        .expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !inbox(&net, 1).await.iter().any(|i| i.transfer_id == "t-next") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the next delivery did not arrive within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The sender is told, the operator sees it, the log has it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let notice = loop {
        if let Some(failure) = inbox(&net, 0).await.into_iter().find_map(|i| i.failure) {
            break failure;
        }
        assert!(tokio::time::Instant::now() < deadline, "no notice to the sender");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (notice.transfer_id.as_str(), notice.recipient.as_str()),
        ("t-huge", "AI-VS")
    );
    assert_eq!(notice.code, "MESSAGE_TOO_LARGE");
    let operator = net.token(0, "operator.1", &[Role::Operator]);
    let listed = node(&net, 0)
        .list_dead_letters(with_token(ListDeadLettersRequest { limit: 0 }, &operator))
        .await
        .expect("list")
        .into_inner()
        .dead_letters;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].transfer_id.as_str(),
            listed[0].error_code.as_str(),
            listed[0].attempts
        ),
        ("t-huge", "MESSAGE_TOO_LARGE", 1)
    );
    // A caseworker may not; the operator drops it, logged first.
    let caseworker = net.token(0, "caseworker.1", &[Role::Caseworker]);
    let refused = node(&net, 0)
        .list_dead_letters(with_token(ListDeadLettersRequest { limit: 0 }, &caseworker))
        .await
        .expect_err("operator only");
    assert_eq!(error_code(&refused).as_deref(), Some("ROLE_REQUIRED"));
    let resolve = |action: gw::resolve_dead_letter_request::Action| ResolveDeadLetterRequest {
        sender: "ORP-VS".into(),
        transfer_id: "t-huge".into(),
        action: action as i32,
    };
    let unspecified = node(&net, 0)
        .resolve_dead_letter(with_token(
            resolve(gw::resolve_dead_letter_request::Action::Unspecified),
            &operator,
        ))
        .await
        .expect_err("an action is required");
    assert_eq!(error_code(&unspecified).as_deref(), Some("ACTION_REQUIRED"));
    node(&net, 0)
        .resolve_dead_letter(with_token(
            resolve(gw::resolve_dead_letter_request::Action::Drop),
            &operator,
        ))
        .await
        .expect("drop");
    let again = node(&net, 0)
        .resolve_dead_letter(with_token(
            resolve(gw::resolve_dead_letter_request::Action::Drop),
            &operator,
        ))
        .await
        .expect_err("gone");
    assert_eq!(error_code(&again).as_deref(), Some("DEAD_LETTER_NOT_FOUND"));
    let dir = net.stop().await;
    let entries = cii_tests::audit_entries(dir.path()).await;
    let kinds: Vec<(i32, &str, &str)> = entries
        .iter()
        .filter(|e| e.transfer_id == "t-huge")
        .map(|e| (e.kind, e.detail.as_str(), e.acting_user.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                cii_audit::EntryKind::DeliveryDeadLettered as i32,
                "code=MESSAGE_TOO_LARGE attempts=1",
                ""
            ),
            (
                cii_audit::EntryKind::DeadLetterResolved as i32,
                "action=drop code=MESSAGE_TOO_LARGE",
                "operator.1@ORP-VS"
            ),
        ]
    );
}

/// A consent notice queued by the earlier release (which neither logged notices nor gave
/// them receipts) is logged when it is sent and arrives with its receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notice_queued_by_the_earlier_release_is_logged_and_arrives() {
    let mut net = Network::start(&two()).await;
    net.restart_gateway(|dir| {
        let delivery = node_pb::Delivery {
            transfer_id: "consent-notice:7".into(),
            sender: "gateway".into(),
            notice: Some(node_pb::ConsentNotice {
                consent_id: "c-old".into(),
                version: 2,
                change: "revoked".into(),
                transfer_ids: vec!["t-old".into()],
                ..node_pb::ConsentNotice::default()
            }),
            ..node_pb::Delivery::default()
        }
        .encode_to_vec();
        plant_outbox(dir, "gateway", "consent-notice:7", delivery);
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !inbox(&net, 1).await.iter().any(|i| i.transfer_id == "consent-notice:7") {
        assert!(tokio::time::Instant::now() < deadline, "the old notice did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = net.stop().await;
    let logged: Vec<cii_audit::Entry> = cii_tests::audit_entries(dir.path())
        .await
        .into_iter()
        .filter(|e| e.kind == cii_audit::EntryKind::ConsentNoticeQueued as i32)
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].consents, ["c-old@2"]);
}

/// A batch is answered item by item: a delivery the node refuses for good, sent in one call
/// with the deliveries queued behind it, is dead-lettered alone at that refusal; its sender's
/// later deliveries in the call are held back by the node (not tried, no attempt counted) and
/// arrive at the next round, in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refused_item_of_a_batch_is_dead_lettered_alone_and_the_rest_arrive_in_order() {
    let mut net = Network::start_with(
        &two(),
        Options {
            network_roles: vec![0],
            ..Options::default()
        },
    )
    .await;
    crate::enrol_both(&net).await;
    net.stop_node(1).await;
    net.restart_gateway(|dir| {
        // Queued by an earlier release without a transfer id inside: refused for good (FIELD_REQUIRED).
        let delivery = node_pb::Delivery {
            sender: "ORP-VS".into(),
            ..node_pb::Delivery::default()
        }
        .encode_to_vec();
        plant_outbox(dir, "ORP-VS", "t-bad", delivery);
    })
    .await;
    let sent = ["t-1", "t-2", "t-3"];
    for id in sent {
        let answer = node(&net, 0)
            .send(with_token(
                crate::report(id, "reduced capacity"),
                &net.token(0, "caseworker.1", &[Role::Caseworker]),
            ))
            .await
            .expect("send")
            .into_inner();
        assert_eq!(
            answer.state,
            gw::transfer_response::State::Queued as i32,
            "{id}: the recipient is down"
        );
    }
    net.restart_node(1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let arrived = loop {
        let arrived: Vec<String> = inbox(&net, 1).await.into_iter().map(|i| i.transfer_id).collect();
        if arrived.len() >= sent.len() {
            break arrived;
        }
        assert!(tokio::time::Instant::now() < deadline, "arrived only {arrived:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        arrived, sent,
        "in the order they were sent, the refused one not among them"
    );
    let operator = net.token(0, "operator.1", &[Role::Operator]);
    let dead = node(&net, 0)
        .list_dead_letters(with_token(ListDeadLettersRequest { limit: 0 }, &operator))
        .await
        .expect("list")
        .into_inner()
        .dead_letters;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].transfer_id.as_str(), dead[0].error_code.as_str()),
        ("t-bad", "FIELD_REQUIRED")
    );
    let dir = net.stop().await;
    let url = format!("sqlite:{}", dir.path().join("gateway/gateway.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("gateway db");
    for id in sent {
        let attempts: i64 =
            sqlx::query_scalar("SELECT attempts FROM transfer WHERE sender = 'ORP-VS' AND transfer_id = ?1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("row");
        assert_eq!(attempts, 1, "{id} was tried once: held back, not refused, behind t-bad");
    }
    pool.close().await;
}

/// Order within a batch: a delivery refused for now (its receipt does not verify) and its
/// sender's next delivery go out in one call once both are due; the node tries the first,
/// holds the second back, stores neither, and the second stays queued behind the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_refused_for_now_holds_back_its_senders_next_one_in_the_same_batch() {
    let mut net = Network::start(&two()).await;
    crate::enrol_both(&net).await;
    net.restart_gateway(|dir| {
        // Queued by an earlier release without a receipt: refused for now (RECEIPT_INVALID), retried.
        let delivery = node_pb::Delivery {
            transfer_id: "t-stuck".into(),
            sender: "ORP-VS".into(),
            ..node_pb::Delivery::default()
        }
        .encode_to_vec();
        plant_outbox(dir, "ORP-VS", "t-stuck", delivery);
    })
    .await;
    let caseworker = net.token(0, "caseworker.1", &[Role::Caseworker]);
    let answer = node(&net, 0)
        .send(with_token(crate::report("t-next", "reduced capacity"), &caseworker))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(
        answer.state,
        gw::transfer_response::State::Queued as i32,
        "behind t-stuck"
    );
    // t-stuck is retried after 0.25, 0.5, 1 and 2 s; from its second retry on, t-next rides in the same call.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        inbox(&net, 1).await.is_empty(),
        "t-next must not overtake t-stuck: the node holds it back"
    );
    let state = node(&net, 0)
        .get_transfer(with_token(
            gw::GetTransferRequest {
                transfer_id: "t-next".into(),
            },
            &caseworker,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(state.state, gw::transfer_response::State::Queued as i32);
    assert_eq!(
        state.delivery_attempts, 0,
        "held back: never charged with t-stuck's refusal"
    );
    net.stop().await;
}

/// A recipient whose node takes connections and never answers holds up only its own
/// deliveries: another recipient's delivery goes at once, and its sender is told DELIVERED.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_never_answers_holds_up_only_its_own_deliveries() {
    let members = [
        cii_tests::member("ORP-VS", cii_types::InstitutionType::AcOrp),
        cii_tests::member("AI-VS", cii_types::InstitutionType::Ai),
        cii_tests::member("AS-VS", cii_types::InstitutionType::As),
    ];
    let mut net = Network::start(&members).await;
    crate::enrol_both(&net).await;
    // AS-VS's node goes; in its place, a listener that takes connections and says nothing.
    net.stop_node(2).await;
    let silent = tokio::net::TcpListener::bind(net.node(2).inbound).await.expect("bind");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    net.restart_gateway(|dir| {
        let delivery = node_pb::Delivery {
            transfer_id: "t-to-silent".into(),
            sender: "ORP-VS".into(),
            ..node_pb::Delivery::default()
        }
        .encode_to_vec();
        plant_outbox_to(dir, "AS-VS", "ORP-VS", "t-to-silent", delivery);
    })
    .await;
    // The outbox's run to AS-VS is out now, waiting for an answer that never comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    let answer = node(&net, 0)
        .send(with_token(
            crate::report("t-to-ai", "reduced capacity"),
            &net.token(0, "caseworker.1", &[Role::Caseworker]),
        ))
        .await
        .expect("send")
        .into_inner();
    let took = started.elapsed();
    assert_eq!(
        answer.state,
        gw::transfer_response::State::Delivered as i32,
        "{answer:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the answer took {took:?}: held up behind AS-VS"
    );
    hold.abort();
    net.stop().await;
}

/// A node of the release before `DeliverBatch`: it knows `Deliver` only. With `batch_hangs`,
/// a node that takes the batch call and never answers it (yet answers `Deliver`).
struct EarlierNode {
    delivered: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    batch_calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    batch_hangs: bool,
}

#[tonic::async_trait]
impl node_pb::node_inbound_server::NodeInbound for EarlierNode {
    async fn ping(
        &self,
        _: tonic::Request<node_pb::PingRequest>,
    ) -> Result<tonic::Response<node_pb::PingResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("earlier release"))
    }
    async fn deliver(
        &self,
        request: tonic::Request<node_pb::Delivery>,
    ) -> Result<tonic::Response<node_pb::DeliveryAck>, tonic::Status> {
        let transfer_id = request.into_inner().transfer_id;
        self.delivered.lock().expect("lock").push(transfer_id.clone());
        Ok(tonic::Response::new(node_pb::DeliveryAck { transfer_id }))
    }
    async fn provide(
        &self,
        _: tonic::Request<node_pb::ProvideRequest>,
    ) -> Result<tonic::Response<node_pb::ProvideResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("earlier release"))
    }
    async fn deliver_batch(
        &self,
        _: tonic::Request<node_pb::DeliveryBatch>,
    ) -> Result<tonic::Response<node_pb::DeliveryBatchAck>, tonic::Status> {
        self.batch_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.batch_hangs {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        Err(tonic::Status::unimplemented("earlier release"))
    }
    async fn offer_review(
        &self,
        _: tonic::Request<node_pb::OfferReviewRequest>,
    ) -> Result<tonic::Response<node_pb::OfferReviewResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("earlier release"))
    }
}

/// In place of AI-VS's node, an [`EarlierNode`] with AI-VS's certificate: what it received by
/// `Deliver`, and how many batch calls it took.
type Received = (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
);

async fn replace_ai_node(net: &mut Network, batch_hangs: bool) -> Received {
    net.stop_node(1).await;
    let listener = tokio::net::TcpListener::bind(net.node(1).inbound).await.expect("bind");
    let admit = cii_kit::tls::PeerPolicy::new(|p: &PeerIdentity| *p == PeerIdentity::Gateway, |_| false);
    let config = cii_kit::tls::server_config(&net.identity(&peer(net, 1)), cii_kit::tls::ClientAuth::Required(admit))
        .expect("server config");
    let (delivered, batch_calls) = (std::sync::Arc::default(), std::sync::Arc::default());
    let earlier = EarlierNode {
        delivered: std::sync::Arc::clone(&delivered),
        batch_calls: std::sync::Arc::clone(&batch_calls),
        batch_hangs,
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(node_pb::node_inbound_server::NodeInboundServer::new(earlier))
            .serve_with_incoming(cii_kit::tls::incoming(listener, config, |_| {})),
    );
    (delivered, batch_calls, server)
}

/// Waits up to `within` for `delivered` to hold `expected`, and returns what it holds.
async fn received(delivered: &std::sync::Mutex<Vec<String>>, expected: usize, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    while delivered.lock().expect("lock").len() < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    delivered.lock().expect("lock").clone()
}

/// A recipient node of the earlier release answers the batch call `Unimplemented`: the
/// gateway sends it the same deliveries one by one, and they arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_the_earlier_release_gets_its_deliveries_one_by_one() {
    let mut net = Network::start(&two()).await;
    crate::enrol_both(&net).await;
    let (delivered, batch_calls, server) = replace_ai_node(&mut net, false).await;
    let caseworker = net.token(0, "caseworker.1", &[Role::Caseworker]);
    for id in ["t-earlier-1", "t-earlier-2"] {
        node(&net, 0)
            .send(with_token(crate::report(id, "reduced capacity"), &caseworker))
            .await
            .expect("send");
    }
    assert_eq!(
        received(&delivered, 2, Duration::from_secs(20)).await,
        vec!["t-earlier-1".to_owned(), "t-earlier-2".to_owned()],
        "each delivery arrives once, in order"
    );
    assert!(
        batch_calls.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the batch call was tried first"
    );
    server.abort();
    net.stop().await;
}

/// A batch of several deliveries that runs past its deadline (a node that takes the batch
/// call and hangs) is sent again one by one at once, not retried whole later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_past_its_deadline_is_sent_again_one_by_one() {
    let mut net = Network::start(&two()).await;
    crate::enrol_both(&net).await;
    // Both queued while AI-VS is down, so that they go out together in one batch.
    net.stop_node(1).await;
    let caseworker = net.token(0, "caseworker.1", &[Role::Caseworker]);
    for id in ["t-slow-1", "t-slow-2"] {
        node(&net, 0)
            .send(with_token(crate::report(id, "reduced capacity"), &caseworker))
            .await
            .expect("send");
    }
    let (delivered, batch_calls, server) = replace_ai_node(&mut net, true).await;
    // One batch call (10 s deadline), then each by `Deliver`; a retry of the batch would only
    // come after the backoff, and hang again.
    let got = received(&delivered, 2, Duration::from_secs(40)).await;
    assert_eq!(
        got,
        vec!["t-slow-1".to_owned(), "t-slow-2".to_owned()],
        "both arrive one by one after the batch's deadline ({} batch calls)",
        batch_calls.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(
        batch_calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one batch call, not retried"
    );
    server.abort();
    net.stop().await;
}
