//! Exchanges end to end: ORP, AI, social service and supplementary-benefits
//! nodes, the gateway and the consent registry on loopback. Each transfer goes
//! through the node's API, as an institution's IT system would send it.

use std::time::Duration;

use cii_proto::common::{Receipt, decision::Outcome};
use cii_proto::consent as consent_pb;
use cii_proto::exchange as xt;
use cii_proto::gateway::{self as gw, gateway_client::GatewayClient, transfer_response::State};
use cii_proto::node::{self as node_pb, node_client::NodeClient};
use cii_tests::{Network, Options, member, with_token};
use cii_types::{InstitutionType, PeerIdentity, Role};
use prost::Message;
use tonic::Code;

pub(crate) const PERSON: &str = "756.1234.5678.97";
const PERSON_DIGITS: &str = "7561234567897";
pub(crate) const ORP: usize = 0;
pub(crate) const AI: usize = 1;
const AS: usize = 2;

pub(crate) fn members() -> Vec<cii_tests::Member> {
    vec![
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
        member("AS-VS", InstitutionType::As),
        member("PC-VS", InstitutionType::Pc),
    ]
}

pub(crate) fn node(net: &Network, i: usize) -> NodeClient<tonic::transport::Channel> {
    NodeClient::new(net.node_api_channel(i))
}

pub(crate) fn token(net: &Network, i: usize) -> String {
    net.token(i, "caseworker.1", &[Role::Caseworker])
}

pub(crate) fn any<M: Message>(name: &str, message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/cii.exchange.v1.{name}"),
        value: message.encode_to_vec(),
    }
}

pub(crate) fn code(status: &tonic::Status) -> String {
    cii_kit::grpc::error_code(status).unwrap_or_default()
}

/// Enrols PERSON at each of the first three institutions under `<ID>-1`.
/// Two gateways on one PostgreSQL log: the second serves from its start while the first holds
/// the sequencer's lease (the lease stays the first's; what the second appends waits in the
/// log's queue and the first integrates it), and takes over when the first stops cleanly: it
/// appends under a higher epoch, and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_gateway_on_the_same_log_serves_at_once_and_takes_over_when_the_first_stops() {
    let mut net = Network::start_with(&members(), on_postgres().await).await;
    enrol_everywhere(&net).await;
    let audit = cii_audit::Store::open_read_only(&net.audit_store)
        .await
        .expect("audit store");
    let first = cii_audit::lease::state(&audit).await.expect("lease");
    assert!(first.live && !first.holder.is_empty(), "{first:?}");
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());

    let second = net.start_second_gateway().await;
    let checkpoint = |channel: tonic::transport::Channel| async move {
        cii_proto::audit::audit_client::AuditClient::new(channel)
            .get_checkpoint(cii_proto::audit::GetCheckpointRequest {})
            .await
            .map(|answer| answer.into_inner().tree_size)
    };
    let second_channel = net.gateway_channel_at(second.addr, &orp, Duration::from_secs(10));
    let at_second = || second_channel.clone();
    let mut served = None;
    for _ in 0..50 {
        if let Ok(size) = checkpoint(at_second()).await {
            served = Some(size);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    served.expect("the second gateway serves while the first sequences");
    assert!(
        sequences(net.gateway_channel_as(&orp)).await,
        "health: the first sequences"
    );
    assert!(!sequences(at_second()).await, "health: the second does not");
    assert_eq!(
        cii_audit::lease::state(&audit).await.expect("lease"),
        first,
        "the lease stays the first's"
    );
    // A transfer decided by the second, logged by the first's sequencer, delivered.
    let mut gateway = GatewayClient::new(at_second());
    let answer = gateway
        .submit_transfer(with_token(direct_report(&net, "two-1"), &token(&net, ORP)))
        .await
        .expect("decided by the second gateway")
        .into_inner();
    assert_eq!(outcome(&answer), Outcome::Permit);
    let receipt = answer.receipt.expect("receipt");
    let logged = cii_tests::audit_entries_at(&net.audit_store).await;
    let entry = logged.iter().find(|e| e.transfer_id == "two-1").expect("logged");
    assert_eq!(entry.index, receipt.leaf_index, "the receipt names the entry's index");
    // The witnesses are asked by the sequencing gateway alone; the second hands out what the
    // first got cosigned (published in the log's database, its quorum checked).
    let witnessed = cii_proto::audit::audit_client::AuditClient::new(at_second())
        .get_witnessed_inclusion(cii_proto::audit::WitnessedInclusionRequest {
            index: receipt.leaf_index,
        })
        .await
        .expect("witnessed through the second gateway")
        .into_inner();
    let note = witnessed.checkpoint.expect("checkpoint").note;
    assert!(
        note.lines().filter(|l| l.starts_with('\u{2014}')).count() > 1,
        "the log's signature and cosignatures: {note}"
    );
    let items = inbox_of_size(&net, AI, 1).await;
    assert_eq!(items.first().map(|i| i.transfer_id.as_str()), Some("two-1"));

    net.stop_gateway().await;
    let mut taken = first.clone();
    for _ in 0..100 {
        taken = cii_audit::lease::state(&audit).await.expect("lease");
        if taken.epoch > first.epoch {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(taken.epoch, first.epoch + 1, "{taken:?}");
    assert!(taken.live && taken.holder != first.holder, "{taken:?}");
    let mut now_sequences = false;
    for _ in 0..50 {
        now_sequences = sequences(at_second()).await;
        if now_sequences {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(now_sequences, "health: the second sequences now");
    let size_before = checkpoint(at_second()).await.expect("served");
    let again = GatewayClient::new(at_second())
        .submit_transfer(with_token(direct_report(&net, "two-2"), &token(&net, ORP)))
        .await
        .expect("decided and logged by the second alone")
        .into_inner();
    assert_eq!(outcome(&again), Outcome::Permit);
    let size = checkpoint(at_second()).await.expect("served");
    assert!(
        size > size_before,
        "appended under its own lease: {size_before} → {size}"
    );
    let verifier = cii_audit::note::Verifier::from_vkey(
        std::fs::read_to_string(net.dir.path().join("pki/gateway/audit.vkey"))
            .expect("vkey")
            .trim(),
    )
    .expect("verifier");
    let report = cii_audit::verify::verify(&audit, &verifier, "cii.test/audit", |_, _| {})
        .await
        .expect("one log, both gateways' entries, verified");
    assert!(report.entries >= size);
    second.stop().await;
    audit.close().await;
}

/// A gateway whose operational store is its own (SQLite) on a shared PostgreSQL log stands by:
/// it would decide transfers no other replica sees. It serves nothing while the first holds the
/// lease, and takes over when the first stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_with_its_own_operational_store_on_a_shared_log_stands_by() {
    let options = Options {
        audit_store: Some(cii_tests::pg::fresh_database().await),
        ..Options::default()
    };
    let mut net = Network::start_with(&members(), options).await;
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());
    let second = net.start_second_gateway().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let checkpoint = |channel: tonic::transport::Channel| async move {
        cii_proto::audit::audit_client::AuditClient::new(channel)
            .get_checkpoint(cii_proto::audit::GetCheckpointRequest {})
            .await
            .map(|answer| answer.into_inner().tree_size)
    };
    let quick = net.gateway_channel_at(second.addr, &orp, Duration::from_millis(500));
    assert!(
        checkpoint(quick).await.is_err(),
        "it serves nothing while another sequences"
    );
    net.stop_gateway().await;
    let mut served = None;
    for _ in 0..100 {
        if let Ok(size) = checkpoint(net.gateway_channel_at(second.addr, &orp, Duration::from_secs(2))).await {
            served = Some(size);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served.is_some(), "it serves once it sequences");
    second.stop().await;
}

/// The same (sender, transfer id) sent to two replicas at the same moment: one decision and
/// one entry. One call records it; the other is told it is in progress or answers the
/// recorded outcome; a retry on either answers the same receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_transfer_sent_to_two_replicas_at_once_is_decided_and_logged_once() {
    let net = Network::start_with(&members(), on_postgres().await).await;
    enrol_everywhere(&net).await;
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());
    let second = net.start_second_gateway().await;
    let at_second = net.gateway_channel_at(second.addr, &orp, Duration::from_secs(10));
    let at_first = net.gateway_channel_as(&orp);
    for round in 0..5 {
        let id = format!("twice-{round}");
        // One request, byte for byte (its person's ciphertext is randomised per encryption).
        let request = direct_report(&net, &id);
        let (mut one, mut other) = (
            GatewayClient::new(at_first.clone()),
            GatewayClient::new(at_second.clone()),
        );
        let (a, b) = tokio::join!(
            one.submit_transfer(with_token(request.clone(), &token(&net, ORP))),
            other.submit_transfer(with_token(request.clone(), &token(&net, ORP))),
        );
        for answer in [&a, &b] {
            match answer {
                Ok(answer) => assert_eq!(outcome(answer.get_ref()), Outcome::Permit),
                Err(status) => assert!(
                    matches!(code(status).as_str(), "TRANSFER_IN_PROGRESS" | "UNAVAILABLE"),
                    "{status:?}"
                ),
            }
        }
        assert!(a.is_ok() || b.is_ok(), "one of the two decided it");
        let retried = GatewayClient::new(at_second.clone())
            .submit_transfer(with_token(request, &token(&net, ORP)))
            .await
            .expect("the recorded outcome")
            .into_inner();
        let first_receipt = [a, b]
            .into_iter()
            .find_map(|answer| answer.ok().and_then(|a| a.into_inner().receipt))
            .expect("a receipt");
        assert_eq!(retried.receipt.map(|r| r.leaf_index), Some(first_receipt.leaf_index));
        let logged = cii_tests::audit_entries_at(&net.audit_store).await;
        assert_eq!(
            logged.iter().filter(|e| e.transfer_id == id).count(),
            1,
            "{id}: one entry"
        );
    }
    let items = inbox_of_size(&net, AI, 5).await;
    assert_eq!(items.len(), 5, "each delivered and stored once");
    second.stop().await;
}

/// Whether the gateway behind `channel` says it sequences the log (its health check).
async fn sequences(channel: tonic::transport::Channel) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: cii_gateway::SEQUENCER_HEALTH.into(),
        })
        .await
        .expect("health")
        .into_inner();
    answer.status == ServingStatus::Serving as i32
}

/// Clients that know several gateways spread over them: each channel connects first to one
/// picked at random (told apart here by their health: only one sequences).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_knowing_two_gateways_spread_over_both() {
    let net = Network::start_with(&members(), on_postgres().await).await;
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());
    let second = net.start_second_gateway().await;
    let addrs = [net.gateway, second.addr];
    let mut sequencing = 0;
    for _ in 0..16 {
        let channel = net.gateway_channel_to_any(&addrs, &orp);
        for _ in 0..50 {
            // The second's port answers once its log is open.
            if tonic_health::pb::health_client::HealthClient::new(channel.clone())
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if sequences(channel).await {
            sequencing += 1;
        }
    }
    assert!(
        (1..16).contains(&sequencing),
        "{sequencing} of 16 clients reached the sequencing replica"
    );
    second.stop().await;
}

/// A spontaneous early-detection report from the ORP to the AI office, as its node would
/// send it to the gateway (for the tests that call a chosen gateway replica directly).
fn direct_report(net: &Network, transfer_id: &str) -> gw::TransferRequest {
    gw::TransferRequest {
        list_persons: Vec::new(),
        case_reference: "case-1".into(),
        transfer_id: transfer_id.into(),
        counterparty: "AI-VS".into(),
        direction: gw::transfer_request::Direction::Push as i32,
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        categories: Vec::new(),
        person: Some(net.ciphertext_for(
            PERSON,
            &cii_pseudonym::names::Party::Institution(net.node(ORP).member.id.clone()),
        )),
        identity: None,
        payload: None,
        written_request: String::new(),
        attested_facts: vec![
            "person_informed_before".into(),
            "incapacity_for_work_or_threatened".into(),
        ],
        sealed: Some(
            net.sealed_as(
                "ORP-VS",
                transfer_id,
                Some(&any("EarlyDetectionReport", &early_detection())),
                "",
            )
            .0,
        ),
        written_request_sha256: Vec::new(),
    }
}

/// A gateway that loses the sequencer's lease while it serves (paused past its expiry and
/// another holder took over, here an intruder the test lets in) appends nothing more: the
/// transfer it was deciding stays held, unlogged, and the gateway stops. Started again once
/// the lease is free, it completes the held transfer with exactly one entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_that_lost_the_lease_appends_nothing_and_stops() {
    let mut net = Network::start_with(&members(), on_postgres().await).await;
    enrol_everywhere(&net).await;
    let facts = ["person_informed_before", "incapacity_for_work_or_threatened"];
    send(&net, ORP, report("lease-1", &facts))
        .await
        .expect("sent under the lease");
    let audit = cii_audit::Store::open(&net.audit_store).await.expect("audit store");
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());
    let size = net.audit_size(&orp).await;

    // The lease's time runs out (the test moves its expiry rather than pause the process
    // for it) and another holder takes it.
    let owner = sqlx::PgPool::connect(&net.audit_store).await.expect("connect");
    sqlx::query("UPDATE audit_lease SET expires_at = clock_timestamp() WHERE id = 1")
        .execute(&owner)
        .await
        .expect("expire");
    owner.close().await;
    let intruder = cii_audit::lease::Lease::acquire(&audit, "intruder", Duration::from_secs(60))
        .await
        .expect("acquire")
        .expect("lapsed");
    let refused = send(&net, ORP, report("lease-2", &facts))
        .await
        .expect_err("not logged");
    assert_eq!(code(&refused), "AUDIT_UNAVAILABLE", "{refused:?}");
    let exit = net
        .gateway_exit(Duration::from_secs(15))
        .await
        .expect("the gateway stopped");
    assert!(exit.contains("LeaseLost"), "{exit}");
    let logged = cii_tests::audit_entries_at(&net.audit_store).await;
    assert_eq!(logged.len() as u64, size, "nothing appended after the lease was lost");
    assert!(logged.iter().all(|e| e.transfer_id != "lease-2"));

    // The lease free again, the gateway back: the held transfer completed once.
    intruder.release().await.expect("release");
    net.restart_gateway(|_| {}).await;
    let again = send(&net, ORP, report("lease-2", &facts))
        .await
        .expect("the retry's answer");
    assert_eq!(outcome(&again), Outcome::Permit);
    let logged = cii_tests::audit_entries_at(&net.audit_store).await;
    assert_eq!(logged.iter().filter(|e| e.transfer_id == "lease-2").count(), 1);
    audit.close().await;
}

/// Nodes that know two gateways (`gateway_replicas`) use either (each node picks one at
/// random) and carry on through the second once the first stops: the second takes the lease
/// over, the nodes' next connection reaches it, and their transfers are decided, logged in
/// the same log and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_carry_on_through_the_second_gateway_when_the_first_stops() {
    let standby = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let options = Options {
        gateway_replicas: vec![format!(
            "https://127.0.0.1:{}",
            standby.local_addr().expect("addr").port()
        )],
        ..on_postgres().await
    };
    let mut net = Network::start_with(&members(), options).await;
    let second = net.start_second_gateway_on(standby);
    enrol_everywhere(&net).await;
    let facts = ["person_informed_before", "incapacity_for_work_or_threatened"];
    let first = send(&net, ORP, report("fo-1", &facts))
        .await
        .expect("through either gateway");
    assert_eq!(outcome(&first), Outcome::Permit);
    net.stop_gateway().await;
    // While the standby takes over: unreachable, or the same id still being decided.
    let answer = send_once_reachable(&net, report("fo-2", &facts)).await;
    assert_eq!(outcome(&answer), Outcome::Permit);
    let items = inbox_of_size(&net, AI, 2).await;
    let ids: Vec<&str> = items.iter().map(|i| i.transfer_id.as_str()).collect();
    assert_eq!(ids, ["fo-1", "fo-2"]);
    let logged = cii_tests::audit_entries_at(&net.audit_store).await;
    for id in ["fo-1", "fo-2"] {
        assert_eq!(
            logged.iter().filter(|e| e.transfer_id == id).count(),
            1,
            "{id} logged once"
        );
    }
    second.stop().await;
}

/// A transfer left held while the gateway runs (its append failed, or a gateway that lost its
/// lease recorded it) is completed by the gateway's own sweep, without its sender's retry:
/// one entry, released, delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_transfer_nobody_retries_is_completed_by_the_sweep() {
    let net = Network::start_with(
        &members(),
        Options {
            gateway_store: Some("[store]\nheld_sweep_seconds = 1\n".into()),
            ..Options::default()
        },
    )
    .await;
    enrol_everywhere(&net).await;
    let facts = ["person_informed_before", "incapacity_for_work_or_threatened"];
    send(&net, ORP, report("sweep-1", &facts)).await.expect("send");
    let root = net.dir.path().to_path_buf();
    let audit = cii_tests::store_url(&root, &net.audit_store);
    let mut entry = cii_tests::audit_entries_at(&audit)
        .await
        .into_iter()
        .find(|e| e.transfer_id == "sweep-1")
        .expect("entry");
    // Held again with an entry the log does not hold (its time changed): as if its append failed.
    entry.index = 0;
    entry.time_micros += 1;
    let pool = gateway_store(&root, &net.gateway_store).await;
    sqlx::query("UPDATE transfer SET held = 1, entry = $1, log_size_before = 0 WHERE transfer_id = 'sweep-1'")
        .bind(cii_audit::entry::encode(&entry))
        .execute(&pool)
        .await
        .expect("hold");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held: i64 = sqlx::query_scalar("SELECT held FROM transfer WHERE transfer_id = 'sweep-1'")
            .fetch_one(&pool)
            .await
            .expect("read");
        if held == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the held transfer was never completed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.close().await;
    let logged = cii_tests::audit_entries_at(&audit).await;
    assert_eq!(
        logged.iter().filter(|e| e.transfer_id == "sweep-1").count(),
        2,
        "the recorded entry appended once by the sweep (the test changed its time)"
    );
}

/// The gateway's operational store as configured (SQLite in the network folder `dir`, or
/// PostgreSQL), for a test to look into or edit.
async fn gateway_store(dir: &std::path::Path, configured: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&cii_tests::store_url(dir, configured))
        .await
        .expect("gateway store")
}

/// Options putting the gateway's operational store and its audit log on a real PostgreSQL
/// (a database each, in the tests' throwaway cluster).
async fn on_postgres() -> Options {
    let store = cii_tests::pg::fresh_database().await;
    Options {
        audit_store: Some(cii_tests::pg::fresh_database().await),
        gateway_database: Some(store),
        ..Options::default()
    }
}

pub(crate) async fn enrol_everywhere(net: &Network) {
    for i in [ORP, AI, AS] {
        node(net, i)
            .enrol(with_token(
                node_pb::EnrolRequest {
                    avs_number: PERSON.into(),
                    local_record_id: format!("{}-1", net.node(i).member.id),
                },
                &token(net, i),
            ))
            .await
            .expect("enrol");
    }
}

pub(crate) fn early_detection() -> xt::EarlyDetectionReport {
    xt::EarlyDetectionReport {
        person: Some(xt::PersonDetails {
            family_name: "Muster".into(),
            given_names: "Anna".into(),
            birth_date: "1980-04-01".into(),
        }),
        contact: Some(xt::ContactDetails {
            address: "Rue du Rhône 1, 1950 Sion".into(),
            phone: "+41 27 000 00 00".into(),
            email: String::new(),
        }),
        employment_situation: "unemployed since 2026-03, repeated absences".into(),
        health_limitations: "back pain limits standing work".into(),
        medical_reports: vec!["report of Dr X, 2026-09".into()],
        vocational_training: String::new(),
        accident_benefits: "SUVA daily allowance 2025".into(),
        incapacity_certificate: "Dr X: unable to work 100 % since 2026-08-01".into(),
    }
}

pub(crate) fn report(transfer_id: &str, facts: &[&str]) -> node_pb::SendRequest {
    node_pb::SendRequest {
        list_record_ids: Vec::new(),
        case_reference: "case-1".into(),
        transfer_id: transfer_id.into(),
        recipient: "AI-VS".into(),
        local_record_id: "ORP-VS-1".into(),
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        payload: Some(any("EarlyDetectionReport", &early_detection())),
        include_identity: true,
        attested_facts: facts.iter().map(|f| (*f).to_owned()).collect(),
        written_request: String::new(),
    }
}

async fn send(
    net: &Network,
    from: usize,
    request: node_pb::SendRequest,
) -> Result<gw::TransferResponse, tonic::Status> {
    node(net, from)
        .send(with_token(request, &token(net, from)))
        .await
        .map(tonic::Response::into_inner)
}

/// Sends `request` from the ORP node until the network answers it (a replica taking over:
/// unreachable meanwhile); retries reuse the transfer id, so at most one decision.
async fn send_once_reachable(net: &Network, request: node_pb::SendRequest) -> gw::TransferResponse {
    for _ in 0..100 {
        if let Ok(answer) = send(net, ORP, request.clone()).await {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{} never answered", request.transfer_id);
}

async fn pull(
    net: &Network,
    from: usize,
    request: node_pb::RequestRequest,
) -> Result<gw::TransferResponse, tonic::Status> {
    node(net, from)
        .request(with_token(request, &token(net, from)))
        .await
        .map(tonic::Response::into_inner)
}

async fn inbox(net: &Network, i: usize) -> Vec<node_pb::InboxItem> {
    net.inbox(i).await
}

pub(crate) async fn inbox_of_size(net: &Network, i: usize, n: usize) -> Vec<node_pb::InboxItem> {
    net.inbox_of_size(i, n).await
}

pub(crate) fn outcome(response: &gw::TransferResponse) -> Outcome {
    Outcome::try_from(response.decision.as_ref().expect("decision").outcome).expect("outcome")
}

/// Checks a receipt as an independent verifier would: the checkpoint's
/// signature under the log's verifier key, then the RFC 6962 inclusion proof.
fn verify_receipt(net: &Network, receipt: &Receipt) {
    let vkey = std::fs::read_to_string(net.pki().join("gateway/audit.vkey")).expect("vkey");
    let verifier = cii_audit::note::Verifier::from_vkey(vkey.trim()).expect("verifier");
    let checkpoint = verifier
        .open_checkpoint(&receipt.checkpoint, "cii.test/audit")
        .expect("checkpoint signature");
    let leaf: [u8; 32] = receipt.leaf_hash.as_slice().try_into().expect("leaf hash");
    let proof: Vec<[u8; 32]> = receipt
        .inclusion_proof
        .iter()
        .map(|h| h.as_slice().try_into().expect("hash"))
        .collect();
    assert!(
        cii_audit::merkle::verify_inclusion(&leaf, receipt.leaf_index, checkpoint.size, &proof, &checkpoint.root),
        "inclusion proof verifies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permitted_push_arrives_with_exactly_the_released_fields_and_a_refused_one_arrives_nowhere() {
    permitted_push_and_refused_one(Options::default()).await;
}

/// The same with the gateway's operational store and audit log on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permitted_push_arrives_with_exactly_the_released_fields_and_a_refused_one_arrives_nowhere_on_postgres() {
    permitted_push_and_refused_one(on_postgres().await).await;
}

/// The same with two transcryptors (issue 24): the second run by the independent witness.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permitted_push_arrives_with_exactly_the_released_fields_through_two_transcryptors() {
    permitted_push_and_refused_one(two_transcryptors()).await;
}

pub(crate) fn two_transcryptors() -> Options {
    Options {
        two_transcryptors: true,
        ..Options::default()
    }
}

async fn permitted_push_and_refused_one(options: Options) {
    let net = Network::start_with(&members(), options).await;
    enrol_everywhere(&net).await;

    let asked_back = || async {
        let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
        let line = r#"cii_rpc_calls_total{rpc="/cii.audit.v1.Audit/GetWitnessedInclusion"} "#;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .map_or(0, |n| n.trim().parse::<u64>().expect("count"))
    };
    let before = asked_back().await;
    let permitted = send(
        &net,
        ORP,
        report("ed-1", &["person_informed_before", "incapacity_for_work_or_threatened"]),
    )
    .await
    .expect("send");
    assert_eq!(outcome(&permitted), Outcome::Permit);
    // The delivery and the sender's answer come on a checkpoint the witnesses cosigned:
    // neither node asks the gateway back for one.
    assert_eq!(asked_back().await, before, "no node called GetWitnessedInclusion");
    let decision = permitted.decision.clone().expect("decision");
    assert_eq!(decision.bases[0].id, "LAI-3b-2-i");
    assert!(
        decision.bases[0]
            .citation
            .as_ref()
            .expect("citation")
            .fr
            .starts_with("LAI art. 3abis al. 2, art. 3b al. 1, al. 2 let. i")
    );
    // LAI 3b al. 1: the report may carry the certificate of incapacity, never the medical file.
    assert!(
        decision
            .released_categories
            .contains(&"incapacity_certificate".to_owned())
    );
    assert!(
        decision.withheld.iter().any(|w| w.category == "medical_reports"),
        "{:?}",
        decision.withheld
    );
    assert!(
        !decision.released_categories.contains(&"identity.avs".to_owned()),
        "identity.avs withheld"
    );
    assert!(
        decision.withheld.iter().any(|w| w.category == "accident_benefits"),
        "accident benefits are not among LAI 3b's categories: {:?}",
        decision.withheld
    );
    assert_eq!(State::try_from(permitted.state), Ok(State::Delivered));
    verify_receipt(&net, permitted.receipt.as_ref().expect("receipt"));
    // The volume of individual cases per basis and pair is watched (alert CiiCaseVolumeHigh).
    assert!(
        cii_tests::metrics_eventually_contain(
            net.gateway_metrics,
            r#"cii_permits_by_basis_total{basis="LAI-3b-2-i",sender="ORP-VS",recipient="AI-VS"} 1"#
        )
        .await
    );

    let items = inbox(&net, AI).await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!((item.sender.as_str(), item.transfer_id.as_str()), ("ORP-VS", "ed-1"));
    assert_eq!(
        item.local_record_id, "AI-VS-1",
        "the AI office recognises its own record"
    );
    assert!(item.avs_number.is_empty(), "identity.avs was not released");
    let payload = item.payload.as_ref().expect("payload");
    let received = xt::EarlyDetectionReport::decode(payload.value.as_slice()).expect("decode");
    assert!(received.accident_benefits.is_empty());
    assert!(
        received.medical_reports.is_empty(),
        "the medical file stays with the ORP"
    );
    assert_eq!(
        received.incapacity_certificate,
        early_detection().incapacity_certificate
    );
    assert_eq!(received.health_limitations, early_detection().health_limitations);
    assert_eq!(
        received.encode_to_vec(),
        payload.value,
        "a withheld field is absent from the bytes, not present-but-empty"
    );
    verify_receipt(&net, item.receipt.as_ref().expect("receipt"));

    // Without the attestation that the person was informed: refused, with the citation.
    let refused = send(&net, ORP, report("ed-2", &[])).await.expect("send");
    assert_eq!(outcome(&refused), Outcome::Deny);
    assert_eq!(State::try_from(refused.state), Ok(State::Denied));
    let reasons = refused.decision.as_ref().expect("decision").reasons.clone();
    assert!(
        reasons
            .iter()
            .any(|r| r.basis.as_ref().is_some_and(|b| b.id == "LAI-3b-2-i")
                && r.code == "CONDITION_NOT_MET"
                && r.text_en.contains("informed")),
        "{reasons:?}"
    );
    verify_receipt(&net, refused.receipt.as_ref().expect("a denial is logged too"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbox(&net, AI).await.len(), 1, "the refused transfer arrived nowhere");

    // The same transfer again: the same outcome, one delivery.
    let again = send(
        &net,
        ORP,
        report("ed-1", &["person_informed_before", "incapacity_for_work_or_threatened"]),
    )
    .await
    .expect("resend");
    assert_eq!(
        again.receipt.as_ref().map(|r| r.leaf_index),
        permitted.receipt.as_ref().map(|r| r.leaf_index),
        "the recorded outcome, not a new decision"
    );
    let mut changed = report("ed-1", &["person_informed_before", "incapacity_for_work_or_threatened"]);
    changed.purpose = "integration".into();
    let reused = send(&net, ORP, changed).await.expect_err("same id, other request");
    assert_eq!(code(&reused), "TRANSFER_ID_REUSED");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbox(&net, AI).await.len(), 1, "never delivered twice");

    // The AI office processes it; the ORP sees it acknowledged.
    node(&net, AI)
        .acknowledge(with_token(
            node_pb::AcknowledgeRequest {
                ids: vec![item.id.clone()],
            },
            &token(&net, AI),
        ))
        .await
        .expect("acknowledge");
    assert!(inbox(&net, AI).await.is_empty());
    let state = node(&net, ORP)
        .get_transfer(with_token(
            gw::GetTransferRequest {
                transfer_id: "ed-1".into(),
            },
            &token(&net, ORP),
        ))
        .await
        .expect("get transfer")
        .into_inner();
    assert_eq!(State::try_from(state.state), Ok(State::Acknowledged));

    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    for line in [
        "cii_decisions_total{code=\"PERMIT\"} 1",
        "cii_decisions_total{code=\"DENY\"} 1",
        "cii_deliveries_total{code=\"DELIVERED\"} 1",
        "cii_refusals_total{code=\"TRANSFER_ID_REUSED\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // Facts only the network establishes cannot be asserted by the sender.
    let asserted = send(
        &net,
        ORP,
        report(
            "ed-3",
            &[
                "person_informed_before",
                "incapacity_for_work_or_threatened",
                "recipient_serves_person",
            ],
        ),
    )
    .await
    .expect_err("asserted directory fact");
    assert_eq!(code(&asserted), "FACT_NOT_ASSERTABLE");
    assert_eq!(cii_kit::grpc::error_field(&asserted).as_deref(), Some("attested_facts"));
    net.stop().await;
}

/// LPGA art. 32 al. 2: the ORP asks the AI office on a written, reasoned request; insurers
/// must provide (a duty), so the holder answers without a review.
fn written_request_to_the_ai(transfer_id: &str) -> node_pb::RequestRequest {
    node_pb::RequestRequest {
        case_reference: "case-1".into(),
        transfer_id: transfer_id.into(),
        holder: "AI-VS".into(),
        local_record_id: "ORP-VS-1".into(),
        purpose: "benefit_determination".into(),
        categories: vec!["identity".into(), "health_limitations".into(), "medical_reports".into()],
        written_request: "Benefit determination under LACI art. 15: please state the capacity to work.".into(),
        trigger: gw::Trigger::WrittenRequest as i32,
        attested_facts: Vec::new(),
    }
}

/// LACI art. 85f al. 3: the ORP asks the AI office while the cost bearer is unclear. The AI
/// office weighs (no overriding private interest, cost bearer unclear): its review.
fn cost_bearer_request(transfer_id: &str) -> node_pb::RequestRequest {
    node_pb::RequestRequest {
        case_reference: "case-1".into(),
        transfer_id: transfer_id.into(),
        holder: "AI-VS".into(),
        local_record_id: "ORP-VS-1".into(),
        purpose: "claim_clarification_ac_ai".into(),
        categories: vec!["identity".into(), "health_limitations".into(), "medical_reports".into()],
        written_request: String::new(),
        trigger: gw::Trigger::BilateralExchange as i32,
        attested_facts: Vec::new(),
    }
}

fn held_data() -> xt::DataResponse {
    xt::DataResponse {
        person: Some(xt::PersonDetails {
            family_name: "Muster".into(),
            given_names: "Anna".into(),
            birth_date: "1980-04-01".into(),
        }),
        health_limitations: "no standing work over 2 hours".into(),
        medical_reports: vec!["psychiatric report 2026-08".into()],
        social_aid_benefits: "CHF 2,100 per month since 2026-06".into(),
        ..xt::DataResponse::default()
    }
}

async fn publish(net: &Network, i: usize) {
    node(net, i)
        .publish(with_token(
            node_pb::PublishRequest {
                local_record_id: format!("{}-1", net.node(i).member.id),
                data: Some(any("DataResponse", &held_data())),
            },
            &token(net, i),
        ))
        .await
        .expect("publish");
}

/// A refused pull tells the requester nothing about the holder's relationship with the
/// person: "not enrolled there" and "enrolled, nothing published" are one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_answers_the_same_whether_or_not_the_holder_knows_the_person() {
    let net = Network::start(&members()).await;
    enrol_everywhere(&net).await; // the AI office knows PERSON (and published nothing)
    node(&net, ORP)
        .enrol(with_token(
            node_pb::EnrolRequest {
                avs_number: "756.9217.0769.85".into(), // a person the AI office does not know
                local_record_id: "ORP-VS-2".into(),
            },
            &token(&net, ORP),
        ))
        .await
        .expect("enrol");
    let known = pull(&net, ORP, written_request_to_the_ai("oracle-1"))
        .await
        .expect_err("nothing published");
    let unknown = pull(
        &net,
        ORP,
        node_pb::RequestRequest {
            local_record_id: "ORP-VS-2".into(),
            ..written_request_to_the_ai("oracle-2")
        },
    )
    .await
    .expect_err("not enrolled there");
    assert_eq!(code(&known), "HOLDER_HAS_NO_DATA", "{known:?}");
    assert_eq!(
        (code(&unknown), unknown.code(), unknown.message()),
        (code(&known), known.code(), known.message()),
        "one answer"
    );
    net.stop().await;
}

/// The holder's caseworker refuses: a logged denial naming the reviewer and the reason code,
/// which the requester's next call gets; another institution cannot answer the review, and a
/// refusal without a reason code changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_its_holder_refuses_is_a_logged_denial_naming_the_reviewer() {
    let net = Network::start(&members()).await;
    enrol_everywhere(&net).await;
    publish(&net, AI).await;
    let waiting = pull(&net, ORP, cost_bearer_request("cb-9")).await.expect("pull");
    assert_eq!(State::try_from(waiting.state), Ok(State::PendingReview));
    let answer = |refusal_reason: &str| gw::AnswerReviewRequest {
        requester: "ORP-VS".into(),
        transfer_id: "cb-9".into(),
        approve: false,
        attested_facts: Vec::new(),
        refusal_reason: refusal_reason.into(),
    };
    // Only the holder reviews: the social service answering the AI office's review finds nothing.
    let stranger = node(&net, AS)
        .answer_review(with_token(answer("other"), &token(&net, AS)))
        .await
        .expect_err("not the holder");
    assert_eq!(code(&stranger), "REVIEW_NOT_FOUND");
    let free_text = node(&net, AI)
        .answer_review(with_token(answer("the person asked us not to"), &token(&net, AI)))
        .await
        .expect_err("free text");
    assert_eq!(code(&free_text), "REFUSAL_REASON_INVALID");
    assert_eq!(
        cii_kit::grpc::error_field(&free_text).as_deref(),
        Some("refusal_reason")
    );
    let refused = node(&net, AI)
        .answer_review(with_token(answer("overriding_private_interest"), &token(&net, AI)))
        .await
        .expect("refusal")
        .into_inner();
    verify_receipt(&net, refused.receipt.as_ref().expect("the refusal is logged"));
    let told = pull(&net, ORP, cost_bearer_request("cb-9")).await.expect("pull again");
    assert_eq!(outcome(&told), Outcome::Deny);
    assert_eq!(told.decision.expect("decision").reasons[0].code, "REVIEW_REFUSED");
    let entries: Vec<cii_audit::Entry> = cii_tests::audit_entries(net.dir.path())
        .await
        .into_iter()
        .filter(|e| e.transfer_id == "cb-9")
        .collect();
    let kinds: Vec<i32> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            cii_audit::EntryKind::PullHeldForReview as i32,
            cii_audit::EntryKind::PullReviewed as i32,
            cii_audit::EntryKind::TransferDenied as i32
        ]
    );
    assert_eq!(entries[1].detail, "review=refused reason=overriding_private_interest");
    let entry = &entries[2];
    assert_eq!(entry.reviewer, "caseworker.1@AI-VS");
    assert_eq!(entry.reasons, ["REVIEW_REFUSED"]);
    assert_eq!(entry.detail, "review=refused reason=overriding_private_interest");
    // Answered: the review is gone from the holder's list and cannot be answered twice.
    let reviews = node(&net, AI)
        .list_reviews(with_token(node_pb::ListReviewsRequest::default(), &token(&net, AI)))
        .await
        .expect("reviews")
        .into_inner()
        .reviews;
    assert!(reviews.is_empty(), "{reviews:?}");
    let twice = node(&net, AI)
        .answer_review(with_token(answer("other"), &token(&net, AI)))
        .await
        .expect_err("answered already");
    assert_eq!(code(&twice), "REVIEW_NOT_FOUND");
    net.stop().await;
}

/// A review the holder does not answer in time: the requester's next call gets a logged denial
/// (REVIEW_TIMEOUT); the review leaves the holder's list and can no longer be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_its_holder_does_not_review_in_time_is_a_logged_denial() {
    let net = Network::start_with(
        &members(),
        Options {
            gateway_store: Some("[store]\nreview_timeout_seconds = 2\n\n".into()),
            ..Options::default()
        },
    )
    .await;
    enrol_everywhere(&net).await;
    publish(&net, AI).await;
    let waiting = pull(&net, ORP, cost_bearer_request("late-1")).await.expect("pull");
    assert_eq!(State::try_from(waiting.state), Ok(State::PendingReview));
    let listed = |net: &Network| {
        let mut client = node(net, AI);
        let token = token(net, AI);
        async move {
            client
                .list_reviews(with_token(node_pb::ListReviewsRequest::default(), &token))
                .await
                .expect("reviews")
                .into_inner()
                .reviews
                .len()
        }
    };
    assert_eq!(listed(&net).await, 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(listed(&net).await, 0, "past its deadline a review is no longer listed");
    let late = pull(&net, ORP, cost_bearer_request("late-1"))
        .await
        .expect("pull again");
    assert_eq!(outcome(&late), Outcome::Deny);
    assert_eq!(
        late.decision.as_ref().expect("decision").reasons[0].code,
        "REVIEW_TIMEOUT"
    );
    verify_receipt(&net, late.receipt.as_ref().expect("the timeout is logged"));
    let again = pull(&net, ORP, cost_bearer_request("late-1"))
        .await
        .expect("pull once more");
    assert_eq!(again.receipt, late.receipt, "logged once: the same answer again");
    let answer = node(&net, AI)
        .answer_review(with_token(
            gw::AnswerReviewRequest {
                requester: "ORP-VS".into(),
                transfer_id: "late-1".into(),
                approve: true,
                attested_facts: vec!["cost_bearer_unclear".into(), "no_overriding_private_interest".into()],
                refusal_reason: String::new(),
            },
            &token(&net, AI),
        ))
        .await
        .expect_err("too late");
    assert_eq!(code(&answer), "REVIEW_NOT_FOUND");
    let entries = cii_tests::audit_entries(net.dir.path()).await;
    let logged: Vec<_> = entries.iter().filter(|e| e.transfer_id == "late-1").collect();
    assert_eq!(logged.len(), 2, "the hold and the denial: {logged:?}");
    assert_eq!(logged[1].detail, "review=timed-out");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_are_answered_by_the_holder_filtered_and_create_obligations() {
    pulls_answered(Options::default()).await;
}

/// The same with two transcryptors: the person to the holder and back, the seal keys of the
/// written request and of the answer, each through both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_are_answered_through_two_transcryptors() {
    pulls_answered(two_transcryptors()).await;
}

async fn pulls_answered(options: Options) {
    let net = Network::start_with(&members(), options).await;
    enrol_everywhere(&net).await;
    publish(&net, AI).await;
    publish(&net, AS).await;

    // LACI 85f al. 3: the ORP asks the AI office while the cost bearer is unclear. Whether
    // the cost bearer is unclear and no overriding private interest opposes it is the AI
    // office's weighing: the ORP cannot attest it.
    let mut self_attested = cost_bearer_request("cb-0");
    self_attested.attested_facts = vec!["cost_bearer_unclear".into(), "no_overriding_private_interest".into()];
    let refused = pull(&net, ORP, self_attested)
        .await
        .expect_err("the requester weighs for the holder");
    assert_eq!(code(&refused), "FACT_NOT_ASSERTABLE", "{refused:?}");
    // Nor does anyone attest a written request: only its text, whose hash is logged, makes one.
    let mut no_text = written_request_to_the_ai("cb-00");
    no_text.written_request = String::new();
    no_text.attested_facts = vec!["written_request".into()];
    let no_text = pull(&net, ORP, no_text)
        .await
        .expect_err("a written request without text");
    assert_eq!(code(&no_text), "FACT_NOT_ASSERTABLE", "{no_text:?}");
    // The pull waits for the AI office's review: nothing is decided, nothing logged.
    let waiting = pull(&net, ORP, cost_bearer_request("cb-1")).await.expect("pull");
    assert_eq!(State::try_from(waiting.state), Ok(State::PendingReview), "{waiting:?}");
    assert!(waiting.decision.is_none() && waiting.receipt.is_none());
    let decided = |entries: &[cii_audit::Entry]| {
        let kinds = [
            cii_audit::EntryKind::TransferPermitted as i32,
            cii_audit::EntryKind::TransferDenied as i32,
        ];
        entries
            .iter()
            .any(|e| e.transfer_id == "cb-1" && kinds.contains(&e.kind))
    };
    let entries = cii_tests::audit_entries(net.dir.path()).await;
    assert!(!decided(&entries), "no decision before the review");
    let held = entries
        .iter()
        .find(|e| e.transfer_id == "cb-1")
        .expect("the hold is logged before the holder hears of it");
    assert_eq!(held.kind, cii_audit::EntryKind::PullHeldForReview as i32);
    assert_eq!((held.sender.as_str(), held.recipient.as_str()), ("AI-VS", "ORP-VS"));
    let again = pull(&net, ORP, cost_bearer_request("cb-1")).await.expect("pull again");
    assert_eq!(
        State::try_from(again.state),
        Ok(State::PendingReview),
        "a replay while pending answers pending"
    );
    // The AI office's caseworker sees what is asked, and weighs.
    let reviews = node(&net, AI)
        .list_reviews(with_token(node_pb::ListReviewsRequest::default(), &token(&net, AI)))
        .await
        .expect("reviews")
        .into_inner()
        .reviews;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    let review = reviews[0].pull.clone().expect("pull");
    assert_eq!(
        (review.requester.as_str(), review.transfer_id.as_str()),
        ("ORP-VS", "cb-1")
    );
    assert_eq!(
        reviews[0].local_record_id, "AI-VS-1",
        "the holder recognises its own record"
    );
    assert!(
        review
            .discloser_facts
            .contains(&"no_overriding_private_interest".to_owned())
    );
    // A `system` account cannot review: the weighing is a person's.
    let by_system = node(&net, AI)
        .answer_review(with_token(
            gw::AnswerReviewRequest {
                requester: "ORP-VS".into(),
                transfer_id: "cb-1".into(),
                approve: true,
                attested_facts: vec!["cost_bearer_unclear".into(), "no_overriding_private_interest".into()],
                refusal_reason: String::new(),
            },
            &net.token(AI, "batch.job", &[Role::System]),
        ))
        .await
        .expect_err("system account");
    assert_eq!(by_system.code(), tonic::Code::PermissionDenied, "{by_system:?}");
    let reviewed = node(&net, AI)
        .answer_review(with_token(
            gw::AnswerReviewRequest {
                requester: "ORP-VS".into(),
                transfer_id: "cb-1".into(),
                approve: true,
                attested_facts: vec!["cost_bearer_unclear".into(), "no_overriding_private_interest".into()],
                refusal_reason: String::new(),
            },
            &net.token(AI, "claire.roth", &[Role::Caseworker]),
        ))
        .await
        .expect("review")
        .into_inner();
    // The answer is logged; the decision waits for the ORP to collect it.
    assert_eq!(
        State::try_from(reviewed.state),
        Ok(State::PendingReview),
        "{reviewed:?}"
    );
    verify_receipt(&net, reviewed.receipt.as_ref().expect("the answer is logged"));
    assert!(!decided(&cii_tests::audit_entries(net.dir.path()).await));
    // The ORP's next call gets the decision and the answer; medical data stays out.
    let answer = pull(&net, ORP, cost_bearer_request("cb-1")).await.expect("pull");
    assert_eq!(outcome(&answer), Outcome::Permit, "{:?}", answer.decision);
    let entry = cii_tests::audit_entries(net.dir.path())
        .await
        .into_iter()
        .find(|e| e.transfer_id == "cb-1" && e.kind == cii_audit::EntryKind::TransferPermitted as i32)
        .expect("logged once reviewed and collected");
    assert_eq!(entry.reviewer, "claire.roth@AI-VS", "the entry names the reviewer");
    assert_eq!(entry.acting_user, "caseworker.1@ORP-VS", "and the requester");
    assert_eq!(
        entry.reviewer_attestations,
        ["cost_bearer_unclear", "no_overriding_private_interest"]
    );
    assert_eq!(entry.case_reference, "case-1");
    let decision = answer.decision.clone().expect("decision");
    assert!(decision.withheld.iter().any(|w| w.category == "medical_reports"));
    let provided =
        xt::DataResponse::decode(answer.provided.as_ref().expect("provided").value.as_slice()).expect("decode");
    assert!(
        provided.medical_reports.is_empty(),
        "the ORP does not see medical reports"
    );
    assert!(provided.social_aid_benefits.is_empty(), "not asked for, not released");
    assert_eq!(provided.health_limitations, held_data().health_limitations);
    verify_receipt(&net, answer.receipt.as_ref().expect("receipt"));

    // The permit obliges the AI office (the discloser) to inform the person afterwards.
    let obligations = node(&net, AI)
        .list_obligations(with_token(gw::ListObligationsRequest::default(), &token(&net, AI)))
        .await
        .expect("obligations")
        .into_inner()
        .obligations;
    assert_eq!(obligations.len(), 1);
    let open = obligations[0].obligation.clone().expect("obligation");
    assert_eq!(
        (open.kind.as_str(), open.owner.as_str()),
        ("inform_person_after", "AI-VS")
    );
    assert!(open.due.is_some());
    node(&net, AI)
        .fulfil_obligation(with_token(
            gw::FulfilObligationRequest {
                obligation_id: open.id.clone(),
                note: "letter sent".into(),
            },
            &token(&net, AI),
        ))
        .await
        .expect_err("free text is not a reference");
    node(&net, AI)
        .fulfil_obligation(with_token(
            gw::FulfilObligationRequest {
                obligation_id: open.id.clone(),
                note: "L-2026-0815".into(),
            },
            &token(&net, AI),
        ))
        .await
        .expect("fulfil");
    let twice = node(&net, AI)
        .fulfil_obligation(with_token(
            gw::FulfilObligationRequest {
                obligation_id: open.id.clone(),
                note: String::new(),
            },
            &token(&net, AI),
        ))
        .await
        .expect_err("already fulfilled");
    assert_eq!(code(&twice), "OBLIGATION_ALREADY_FULFILLED");
    let not_theirs = node(&net, ORP)
        .fulfil_obligation(with_token(
            gw::FulfilObligationRequest {
                obligation_id: open.id,
                note: String::new(),
            },
            &token(&net, ORP),
        ))
        .await
        .expect_err("another institution's obligation");
    assert_eq!(code(&not_theirs), "OBLIGATION_NOT_FOUND");

    // LPGA art. 32: the ORP asks the social service; without a written, reasoned request, refused.
    let mut lpga = node_pb::RequestRequest {
        case_reference: "case-1".into(),
        transfer_id: "lpga-1".into(),
        holder: "AS-VS".into(),
        local_record_id: "ORP-VS-1".into(),
        purpose: "benefit_determination".into(),
        categories: vec!["identity".into(), "social_aid_benefits".into()],
        written_request: String::new(),
        trigger: gw::Trigger::WrittenRequest as i32,
        attested_facts: Vec::new(),
    };
    let refused = pull(&net, ORP, lpga.clone()).await.expect("pull");
    assert_eq!(outcome(&refused), Outcome::Deny);
    assert!(refused.provided.is_none(), "nothing provided on a denial");
    lpga.transfer_id = "lpga-2".into();
    lpga.written_request = "Nous examinons le droit aux indemnités de Mme Muster (LPGA art. 32 al. 1) …".into();
    let permitted = pull(&net, ORP, lpga).await.expect("pull");
    assert_eq!(outcome(&permitted), Outcome::Permit, "{:?}", permitted.decision);
    let provided =
        xt::DataResponse::decode(permitted.provided.as_ref().expect("provided").value.as_slice()).expect("decode");
    assert_eq!(provided.social_aid_benefits, held_data().social_aid_benefits);
    assert!(provided.health_limitations.is_empty() && provided.medical_reports.is_empty());
    net.stop().await;
}

fn handover_consent() -> consent_pb::ConsentRecord {
    let day = 24 * 3600;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    consent_pb::ConsentRecord {
        institutions: vec!["ORP-VS".into(), "AS-VS".into()],
        directions: vec![consent_pb::Direction {
            from: "ORP-VS".into(),
            to: "AS-VS".into(),
        }],
        categories: vec![
            "identity".into(),
            "contact".into(),
            "unemployment_benefits".into(),
            "job_search".into(),
        ],
        purposes: vec!["integration".into()],
        valid_from: Some(prost_types::Timestamp {
            seconds: now - day,
            nanos: 0,
        }),
        valid_until: Some(prost_types::Timestamp {
            seconds: now + 300 * day,
            nanos: 0,
        }),
        written: true,
        evidence_sha256: vec![7; 32],
        evidence_reference: "dms://orp-vs/consents/2026-0101".into(),
        recurrence: consent_pb::Recurrence::Recurring as i32,
        information_given: "Purpose, recipient, data and the right to revoke explained.".into(),
        language: "fr".into(),
        ..consent_pb::ConsentRecord::default()
    }
}

/// ORP records `consent` about its person ORP-VS-1 through its node.
async fn record_orp_consent(net: &Network, consent: consent_pb::ConsentRecord) -> consent_pb::ConsentRecord {
    node(net, ORP)
        .record_consent(with_token(
            node_pb::RecordConsentRequest {
                local_record_id: "ORP-VS-1".into(),
                consent: Some(consent),
            },
            &token(net, ORP),
        ))
        .await
        .expect("record consent")
        .into_inner()
}

fn handover(transfer_id: &str) -> node_pb::SendRequest {
    node_pb::SendRequest {
        list_record_ids: Vec::new(),
        case_reference: "case-1".into(),
        transfer_id: transfer_id.into(),
        recipient: "AS-VS".into(),
        local_record_id: "ORP-VS-1".into(),
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "integration".into(),
        payload: Some(any(
            "EndOfEntitlementHandover",
            &xt::EndOfEntitlementHandover {
                entitlement_ends: "2026-12-31".into(),
                job_search: "12 applications per month".into(),
                ..xt::EndOfEntitlementHandover::default()
            },
        )),
        include_identity: false,
        attested_facts: Vec::new(),
        written_request: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consent_based_transfer_passes_until_the_revocation_and_the_recipient_is_notified() {
    let net = Network::start(&members()).await;
    enrol_everywhere(&net).await;
    let before = send(&net, ORP, handover("h-0")).await.expect("send");
    assert_eq!(outcome(&before), Outcome::Deny, "no consent yet");

    // A pull about a person the social service does not serve is refused (LACI 85f al. 2).
    let not_served = pull(
        &net,
        AS,
        node_pb::RequestRequest {
            case_reference: "case-1".into(),
            transfer_id: "cs-1".into(),
            holder: "ORP-VS".into(),
            local_record_id: "AS-VS-1".into(),
            purpose: "integration".into(),
            categories: vec!["identity".into(), "job_search".into()],
            written_request: String::new(),
            trigger: gw::Trigger::CaseAccess as i32,
            attested_facts: Vec::new(),
        },
    )
    .await
    .expect("pull");
    assert_eq!(outcome(&not_served), Outcome::Deny);
    let reasons = &not_served.decision.as_ref().expect("decision").reasons;
    assert!(
        reasons
            .iter()
            .any(|r| r.basis.as_ref().is_some_and(|b| b.id == "LACI-85f-2")),
        "{reasons:?}"
    );

    let consent = record_orp_consent(&net, handover_consent()).await;
    let permitted = send(&net, ORP, handover("h-1")).await.expect("send");
    assert_eq!(outcome(&permitted), Outcome::Permit, "{:?}", permitted.decision);
    assert_eq!(
        permitted.decision.as_ref().expect("decision").bases[0].id,
        "LACI-97a-4-b"
    );
    inbox_of_size(&net, AS, 1).await;

    node(&net, ORP)
        .revoke_consent(with_token(
            node_pb::RevokeConsentRequest {
                consent_id: consent.consent_id.clone(),
                local_record_id: "ORP-VS-1".into(),
                channel: "letter".into(),
            },
            &token(&net, ORP),
        ))
        .await
        .expect("revoke");
    let after = send(&net, ORP, handover("h-2")).await.expect("send");
    assert_eq!(
        outcome(&after),
        Outcome::Deny,
        "the next transfer after the revocation is refused"
    );

    // The social service received data under the consent: it finds a notice.
    let items = inbox_of_size(&net, AS, 2).await;
    let notice = items
        .iter()
        .find_map(|i| i.notice.clone())
        .expect("a consent notice in the inbox");
    assert_eq!(notice.consent_id, consent.consent_id);
    assert_eq!(notice.change, "revoked");
    assert_eq!(notice.transfer_ids, vec!["h-1".to_owned()]);

    let dir = net.stop().await;
    // The notice has its entry, written before it was queued.
    let logged: Vec<cii_audit::Entry> = cii_tests::audit_entries(dir.path())
        .await
        .into_iter()
        .filter(|e| e.kind == cii_audit::EntryKind::ConsentNoticeQueued as i32)
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].recipient, "AS-VS");
    assert!(logged[0].consents[0].starts_with(&consent.consent_id));
    assert!(
        logged[0].detail.starts_with("change=revoked notice=consent-notice:"),
        "{}",
        logged[0].detail
    );
    no_avs_number_in(&dir.path().join("gateway"));
    no_avs_number_in(&dir.path().join("consent"));
}

/// Two consent registries on one PostgreSQL database: when the first stops, the gateway carries
/// on through the second (`[consent] replicas`) — the consent recorded through the first covers
/// a transfer, a revocation goes through, and its notice comes from the shared change feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_carries_on_through_a_second_consent_registry_on_the_same_database() {
    let spare = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let options = Options {
        consent_database: Some(cii_tests::pg::fresh_database().await),
        consent_replicas: vec![format!(
            "https://127.0.0.1:{}",
            spare.local_addr().expect("addr").port()
        )],
        ..Options::default()
    };
    let mut net = Network::start_with(&members(), options).await;
    // Both serve from the start (the gateway picks either); then the first stops.
    let second = net.start_second_consent_on(spare);
    enrol_everywhere(&net).await;
    let consent = record_orp_consent(&net, handover_consent()).await;
    net.stop_consent().await;

    let permitted = send_once_reachable(&net, handover("r-1")).await;
    assert_eq!(outcome(&permitted), Outcome::Permit, "{:?}", permitted.decision);
    inbox_of_size(&net, AS, 1).await;
    node(&net, ORP)
        .revoke_consent(with_token(
            node_pb::RevokeConsentRequest {
                consent_id: consent.consent_id.clone(),
                local_record_id: "ORP-VS-1".into(),
                channel: "letter".into(),
            },
            &token(&net, ORP),
        ))
        .await
        .expect("revoked through the second registry");
    let after = send(&net, ORP, handover("r-2")).await.expect("send");
    assert_eq!(outcome(&after), Outcome::Deny);
    let items = inbox_of_size(&net, AS, 2).await;
    let notice = items.iter().find_map(|i| i.notice.clone()).expect("a consent notice");
    assert_eq!(notice.consent_id, consent.consent_id);
    second.stop().await;
}

/// No AVS number, with or without dots, in any file under `dir`.
fn no_avs_number_in(dir: &std::path::Path) {
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("read");
            files += 1;
            for needle in [PERSON, PERSON_DIGITS] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} holds an AVS number",
                    path.display()
                );
            }
        }
    }
    assert!(files > 0, "{} holds files", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recipient_that_is_down_gets_its_transfers_once_and_in_order_when_back() {
    recipient_down_then_back(Options::default()).await;
}

/// The same with the gateway's operational store and audit log on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recipient_that_is_down_gets_its_transfers_once_and_in_order_when_back_on_postgres() {
    recipient_down_then_back(on_postgres().await).await;
}

async fn recipient_down_then_back(options: Options) {
    let mut net = Network::start_with(&members(), options).await;
    enrol_everywhere(&net).await;
    net.stop_node(AI).await;
    for id in ["q-1", "q-2", "q-3"] {
        let queued = send(
            &net,
            ORP,
            report(id, &["person_informed_before", "incapacity_for_work_or_threatened"]),
        )
        .await
        .expect("send");
        assert_eq!(outcome(&queued), Outcome::Permit);
        assert_eq!(
            State::try_from(queued.state),
            Ok(State::Queued),
            "{id} waits in the outbox"
        );
    }
    let state = node(&net, ORP)
        .get_transfer(with_token(
            gw::GetTransferRequest {
                transfer_id: "q-1".into(),
            },
            &token(&net, ORP),
        ))
        .await
        .expect("get transfer")
        .into_inner();
    assert_eq!(State::try_from(state.state), Ok(State::Queued));
    assert!(state.delivery_attempts >= 1 && !state.last_delivery_error.is_empty());

    // The outbox is durable: the gateway restarts in between.
    net.restart_gateway(|_| {}).await;
    net.restart_node(AI).await;
    let items = inbox_of_size(&net, AI, 3).await;
    let ids: Vec<&str> = items.iter().map(|i| i.transfer_id.as_str()).collect();
    assert_eq!(ids, ["q-1", "q-2", "q-3"], "delivered in submission order");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(inbox(&net, AI).await.len(), 3, "delivered once");
    let configured = net.gateway_store.clone();
    let dir = net.stop().await;
    // Delivered rows leave the outbox.
    let pool = gateway_store(dir.path(), &configured).await;
    let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(waiting, 0);
    let delivered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfer WHERE state = 3")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(delivered, 3, "three transfers delivered");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_with_a_valid_certificate_but_a_bad_token_is_refused() {
    let net = Network::start(&members()).await;
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());
    let mut gateway = GatewayClient::new(net.gateway_channel_as(&orp));
    let now = time::OffsetDateTime::now_utc();
    let tokens = [
        (
            "expired",
            net.token_with(ORP, ORP, "u", &[Role::Caseworker], now - time::Duration::hours(2), 300),
            Code::Unauthenticated,
        ),
        (
            "wrongly signed",
            net.token_with(ORP, AI, "u", &[Role::Caseworker], now, 300),
            Code::Unauthenticated,
        ),
        (
            "foreign issuer",
            net.token_with(AI, AI, "u", &[Role::Caseworker], now, 300),
            Code::PermissionDenied,
        ),
    ];
    for (what, bad, expected) in tokens {
        let refused = gateway
            .submit_transfer(with_token(
                gw::TransferRequest {
                    transfer_id: format!("jwt-{}", what.replace(' ', "-")),
                    ..gw::TransferRequest::default()
                },
                &bad,
            ))
            .await
            .expect_err(what);
        assert_eq!(refused.code(), expected, "{what}: {refused:?}");
        assert!(code(&refused).starts_with("JWT_"), "{what}: {refused:?}");
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_notice_a_rewritten_log_at_their_next_receipt_and_stop() {
    // A registry without witnesses: each node witnesses alone (with witnesses, the rewritten
    // log gets no cosignature at all: tests/poison/witnesses.rs).
    let options = cii_tests::Options {
        no_witnesses: true,
        ..cii_tests::Options::default()
    };
    let mut net = Network::start_with(&members(), options).await;
    enrol_everywhere(&net).await;
    let first = send(
        &net,
        ORP,
        report("rw-1", &["person_informed_before", "incapacity_for_work_or_threatened"]),
    )
    .await
    .expect("send");
    assert_eq!(State::try_from(first.state), Ok(State::Delivered));
    let seen = first.receipt.as_ref().expect("receipt").leaf_index + 1;

    // The operator replaces the log with a fresh one, signed with the same key.
    net.restart_gateway(|dir| {
        for file in ["audit.db", "audit.db-wal", "audit.db-shm"] {
            let _ = std::fs::remove_file(dir.join("gateway").join(file));
        }
    })
    .await;
    // The new log grows past what the nodes saw (PC's node has seen nothing yet).
    let pc = 3;
    for n in 0..=seen {
        let avs = cii_tests::synthetic_avs(n);
        node(&net, pc)
            .enrol(with_token(
                node_pb::EnrolRequest {
                    avs_number: avs,
                    local_record_id: format!("PC-{n}"),
                },
                &token(&net, pc),
            ))
            .await
            .expect("enrol at PC");
    }

    let noticed = send(
        &net,
        ORP,
        report("rw-2", &["person_informed_before", "incapacity_for_work_or_threatened"]),
    )
    .await
    .expect_err("the ORP's node checks the receipt");
    assert_eq!(code(&noticed), "AUDIT_LOG_ALARM");
    let stopped = send(
        &net,
        ORP,
        report("rw-3", &["person_informed_before", "incapacity_for_work_or_threatened"]),
    )
    .await
    .expect_err("and sends nothing more");
    assert_eq!(code(&stopped), "AUDIT_LOG_ALARM");
    // The AI office's node refused the delivery at its receipt and raised its own alarm.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        inbox(&net, AI).await.len(),
        1,
        "only the delivery from before the rewrite"
    );
    let status = node(&net, AI)
        .status(with_token(node_pb::StatusRequest {}, &token(&net, AI)))
        .await
        .expect("status")
        .into_inner();
    assert!(status.audit_alarm, "the AI office's node noticed the rewrite");

    // After the investigation, operators clear the alarm (`cii witness clear-alarm`, node
    // stopped); the nodes then anchor on the log as it is and exchange again.
    for i in [ORP, AI] {
        net.stop_node(i).await;
        let config = cii_node::NodeConfig::load(&net.node(i).config).expect("node config");
        let store = cii_node::store::Store::open(&config.database, &config.store_key.0)
            .await
            .expect("node store");
        let (_, alarm) = store
            .clear_witness("SEC-1: gateway restored from backup", 1)
            .await
            .expect("clear")
            .expect("a witnessed checkpoint");
        assert!(alarm);
        // The evidence of the split stays: the checkpoint held and the one that contradicted it.
        let evidence = store.witness_evidence().await.expect("evidence");
        assert_eq!(evidence.len(), 1, "{evidence:?}");
        let (_, held, conflicting, problem) = &evidence[0];
        assert!(!held.is_empty() && held != conflicting, "two signed checkpoints");
        assert!(problem.contains("inconsistent"), "{problem}");
        let clearances = store.witness_clearances().await.expect("clearances");
        assert_eq!(clearances.len(), 1);
        assert_eq!(clearances[0].2, "SEC-1: gateway restored from backup");
        store.close().await;
        net.restart_node(i).await;
    }
    let again = send(
        &net,
        ORP,
        report("rw-4", &["person_informed_before", "incapacity_for_work_or_threatened"]),
    )
    .await
    .expect("send after clearing");
    assert_eq!(outcome(&again), Outcome::Permit);
    // The delivery the AI office's node refused in alarm waited in the outbox: it comes first.
    let ids: Vec<String> = inbox_of_size(&net, AI, 3)
        .await
        .into_iter()
        .map(|i| i.transfer_id)
        .collect();
    assert_eq!(ids, ["rw-1", "rw-2", "rw-4"]);
    net.stop().await;
}

/// The network, everyone enrolled, and the person's one-off consent to ORP's handover to AS.
async fn network_with_a_one_off_consent() -> Network {
    let net = Network::start(&members()).await;
    enrol_everywhere(&net).await;
    let consent = consent_pb::ConsentRecord {
        recurrence: consent_pb::Recurrence::OneOff as i32,
        ..handover_consent()
    };
    record_orp_consent(&net, consent).await;
    net
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_off_consent_carries_one_transfer_only() {
    let net = network_with_a_one_off_consent().await;
    let first = send(&net, ORP, handover("once-1")).await.expect("send");
    assert_eq!(outcome(&first), Outcome::Permit, "{:?}", first.decision);
    // Resubmitting the same transfer is not a second use.
    let again = send(&net, ORP, handover("once-1")).await.expect("resend");
    assert_eq!(outcome(&again), Outcome::Permit);
    let second = send(&net, ORP, handover("once-2")).await.expect("send");
    assert_eq!(outcome(&second), Outcome::Deny, "the one-off consent was used");
    assert_eq!(inbox_of_size(&net, AS, 1).await.len(), 1);
    net.stop().await;
}

/// A request whose entry the log would refuse (here 300 copies of one attested fact) is
/// refused before anything is consulted: it cannot spend the person's one-off consent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_the_log_would_refuse_does_not_spend_a_one_off_consent() {
    let net = network_with_a_one_off_consent().await;
    let mut bloated = handover("once-bloated");
    bloated.attested_facts = vec!["person_informed_before".into(); 300];
    let refused = send(&net, ORP, bloated).await.expect_err("refused");
    assert_eq!(code(&refused), "AUDIT_ENTRY_REFUSED");
    let first = send(&net, ORP, handover("once-1")).await.expect("send");
    assert_eq!(
        outcome(&first),
        Outcome::Permit,
        "the consent is still there: {:?}",
        first.decision
    );
    net.stop().await;
}

/// The gateway marks a one-off consent used at the registry before it records the transfer.
/// When its own store fails in between, the caller is told "nothing was done, retry": the
/// retry must then be permitted on the same consent (it is this transfer's use), exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_off_consent_survives_a_store_failure_between_its_use_and_the_record() {
    let net = network_with_a_one_off_consent().await;
    // Another process holds the write lock of the gateway's operational store longer than
    // the gateway waits for it: the record after the consent's use fails.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(net.dir.path().join("gateway/gateway.db"));
    let mut locker = sqlx::ConnectOptions::connect(&options).await.expect("open");
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut locker).await.expect("lock");
    let failed = send(&net, ORP, handover("once-store")).await.expect_err("store locked");
    assert_eq!(failed.code(), tonic::Code::Unavailable);
    assert_eq!(
        cii_kit::grpc::error_code(&failed).as_deref(),
        Some("GATEWAY_STORE_UNAVAILABLE")
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.expect("unlock");
    drop(locker);

    let retried = send(&net, ORP, handover("once-store")).await.expect("retry");
    assert_eq!(outcome(&retried), Outcome::Permit, "{:?}", retried.decision);
    // Still one use: another transfer is refused the consent.
    let other = send(&net, ORP, handover("once-other")).await.expect("send");
    assert_eq!(outcome(&other), Outcome::Deny, "the one-off consent was used");
    assert_eq!(inbox_of_size(&net, AS, 1).await.len(), 1);
    net.stop().await;
}

/// Every file under `dir`, searched for `needle`.
pub(crate) fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_requests_get_message_malformed_and_unknown_envelope_fields_are_dropped() {
    const SUBMIT: &str = "/cii.gateway.v1.Gateway/SubmitTransfer";
    let net = Network::start(&members()).await;
    enrol_everywhere(&net).await;
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());
    let token = token(&net, ORP);
    let before = net.audit_size(&orp).await;
    // Groups of an unknown field (number 1000) nested 200 deep: past prost's recursion limit.
    let mut nested = Vec::new();
    nested.extend(std::iter::repeat_n([0xc3, 0x3e], 200).flatten());
    nested.extend(std::iter::repeat_n([0xc4, 0x3e], 200).flatten());
    // transfer_id (field 1) with the varint wire type instead of a length-delimited string.
    let wrong_wire_type = vec![0x08, 0x01];
    // A string field whose length runs past the end of the message.
    let truncated = vec![0x0a, 0x7f, b'a'];
    for (case, body) in [
        ("nested", nested),
        ("wire type", wrong_wire_type),
        ("truncated", truncated),
    ] {
        let status = cii_tests::raw_unary(net.gateway_channel_as(&orp), SUBMIT, body, &token)
            .await
            .expect_err(case);
        assert_eq!(
            cii_kit::grpc::error_code(&status).as_deref(),
            Some("MESSAGE_MALFORMED"),
            "{case}: {status:?}"
        );
    }
    assert_eq!(net.audit_size(&orp).await, before, "nothing was logged");

    // An unknown field in the envelope is skipped, as proto3 prescribes (a newer node may send
    // fields this gateway does not know): the transfer is decided on the known fields, and the
    // unknown bytes are kept nowhere.
    const MARKER: &[u8] = b"unknown-envelope-marker-5f2c";
    let valid = gw::TransferRequest {
        transfer_id: "unknown-envelope-1".into(),
        counterparty: "AI-VS".into(),
        direction: gw::transfer_request::Direction::Push as i32,
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        person: Some(net.ciphertext_for(
            PERSON,
            &cii_pseudonym::names::Party::Institution(net.node(ORP).member.id.clone()),
        )),
        sealed: Some(
            net.sealed_as(
                "ORP-VS",
                "unknown-envelope-1",
                Some(&any("EarlyDetectionReport", &early_detection())),
                "",
            )
            .0,
        ),
        attested_facts: vec![
            "person_informed_before".into(),
            "incapacity_for_work_or_threatened".into(),
        ],
        case_reference: "case-1".into(),
        ..gw::TransferRequest::default()
    };
    let mut body = valid.encode_to_vec();
    body.extend_from_slice(&[0xc2, 0x3e, MARKER.len() as u8]);
    body.extend_from_slice(MARKER);
    let answer = cii_tests::raw_unary(net.gateway_channel_as(&orp), SUBMIT, body, &token)
        .await
        .expect("decided");
    let answer = gw::TransferResponse::decode(answer.as_slice()).expect("a TransferResponse");
    assert_eq!(outcome(&answer), Outcome::Permit);
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    assert!(
        metrics.contains("cii_refusals_total{code=\"MESSAGE_MALFORMED\"} 3"),
        "{metrics}"
    );
    let dir = net.stop().await;
    assert_eq!(files_containing(dir.path(), MARKER), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_transfer_requests_get_a_stable_code_and_the_field_and_change_nothing() {
    let net = Network::start(&members()).await;
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());
    let token = token(&net, ORP);
    let mut gateway = GatewayClient::new(net.gateway_channel_as(&orp));
    let before = net.audit_size(&orp).await;
    let valid = direct_report(&net, "bad-1");
    let sealed = valid.sealed.clone().expect("sealed");
    let with_sealed = |sealed: cii_proto::common::SealedParts| gw::TransferRequest {
        sealed: Some(sealed),
        ..valid.clone()
    };
    let mut reversed = sealed.clone();
    reversed.parts.reverse();
    let mut twice = sealed.clone();
    twice.parts.push(sealed.parts.last().expect("a part").clone());
    let mut foreign = sealed.clone();
    foreign.parts.last_mut().expect("a part").category = "zz_not_carried".into();
    let mut short_nonce = sealed.clone();
    short_nonce.parts[0].nonce.truncate(8);
    let (with_request, request_sha256) = net.sealed_as(
        "ORP-VS",
        "bad-1",
        Some(&any("EarlyDetectionReport", &early_detection())),
        "Please send the report.",
    );
    let cases: Vec<(&str, &str, gw::TransferRequest)> = vec![
        (
            "TRANSFER_ID_INVALID",
            "transfer_id",
            gw::TransferRequest {
                transfer_id: "a b".into(),
                ..valid.clone()
            },
        ),
        (
            "TRANSFER_ID_IS_AVS",
            "transfer_id",
            gw::TransferRequest {
                transfer_id: PERSON.into(),
                ..valid.clone()
            },
        ),
        (
            "COUNTERPARTY_UNKNOWN",
            "counterparty",
            gw::TransferRequest {
                counterparty: "XX-ZZ".into(),
                ..valid.clone()
            },
        ),
        (
            // An AVS number disguised by separators in a case reference never reaches the log.
            "FIELD_NOT_ALLOWED",
            "case_reference",
            gw::TransferRequest {
                case_reference: "A1-756-1234-5678-97".into(),
                ..valid.clone()
            },
        ),
        (
            "FIELD_NOT_ALLOWED",
            "list_persons",
            gw::TransferRequest {
                list_persons: vec![net.ciphertext_for(
                    PERSON,
                    &cii_pseudonym::names::Party::Institution(net.node(ORP).member.id.clone()),
                )],
                ..valid.clone()
            },
        ),
        (
            "COUNTERPARTY_IS_CALLER",
            "counterparty",
            gw::TransferRequest {
                counterparty: "ORP-VS".into(),
                ..valid.clone()
            },
        ),
        (
            "DIRECTION_REQUIRED",
            "direction",
            gw::TransferRequest {
                direction: 0,
                ..valid.clone()
            },
        ),
        (
            "TRIGGER_REQUIRED",
            "trigger",
            gw::TransferRequest {
                trigger: 0,
                ..valid.clone()
            },
        ),
        (
            "FIELD_REQUIRED",
            "person",
            gw::TransferRequest {
                person: None,
                ..valid.clone()
            },
        ),
        (
            "CIPHERTEXT_INVALID",
            "person.ciphertext",
            gw::TransferRequest {
                person: Some(cii_proto::common::EncryptedPseudonym {
                    ciphertext: vec![0xff; 64],
                }),
                ..valid.clone()
            },
        ),
        (
            "FACT_UNKNOWN",
            "attested_facts",
            gw::TransferRequest {
                attested_facts: vec!["is_nice".into()],
                ..valid.clone()
            },
        ),
        (
            "FACT_NOT_ASSERTABLE",
            "attested_facts",
            gw::TransferRequest {
                attested_facts: vec!["cantonal_release".into()],
                ..valid.clone()
            },
        ),
        (
            // The gateway reads no payload: a readable one is refused, not looked at.
            "FIELD_NOT_ALLOWED",
            "payload",
            gw::TransferRequest {
                payload: Some(any("EarlyDetectionReport", &early_detection())),
                ..valid.clone()
            },
        ),
        (
            "FIELD_NOT_ALLOWED",
            "written_request",
            gw::TransferRequest {
                written_request: "Please send the report.".into(),
                ..valid.clone()
            },
        ),
        (
            "FIELD_REQUIRED",
            "sealed",
            gw::TransferRequest {
                sealed: None,
                ..valid.clone()
            },
        ),
        (
            "EXCHANGE_TYPE_UNKNOWN",
            "sealed",
            with_sealed(cii_proto::common::SealedParts {
                type_url: "type.googleapis.com/cii.exchange.v1.Nope".into(),
                ..sealed.clone()
            }),
        ),
        ("SEALED_PARTS_INVALID", "sealed", with_sealed(reversed)),
        (
            // One spelling of each type URL (the list checks compare full URLs).
            "SEALED_PARTS_INVALID",
            "sealed",
            with_sealed(cii_proto::common::SealedParts {
                type_url: "cii.exchange.v1.EarlyDetectionReport".into(),
                ..sealed.clone()
            }),
        ),
        ("SEALED_PARTS_INVALID", "sealed", with_sealed(twice)),
        ("SEALED_PARTS_INVALID", "sealed", with_sealed(foreign)),
        ("SEALED_PARTS_INVALID", "sealed", with_sealed(short_nonce)),
        (
            "CIPHERTEXT_INVALID",
            "sealed.key.ciphertext",
            with_sealed(cii_proto::common::SealedParts {
                key: vec![0xff; 64],
                ..sealed.clone()
            }),
        ),
        (
            // A sealed written request comes with its hash, which is logged.
            "FIELD_REQUIRED",
            "written_request_sha256",
            with_sealed(with_request.clone()),
        ),
        (
            "FIELD_NOT_ALLOWED",
            "written_request_sha256",
            gw::TransferRequest {
                written_request_sha256: request_sha256,
                ..valid.clone()
            },
        ),
        (
            "FIELD_NOT_ALLOWED",
            "categories",
            gw::TransferRequest {
                categories: vec!["identity".into()],
                ..valid.clone()
            },
        ),
        (
            "UNKNOWN_PURPOSE",
            "purpose",
            gw::TransferRequest {
                purpose: "curiosity".into(),
                ..valid.clone()
            },
        ),
    ];
    for (expected, field, request) in cases {
        let refused = gateway
            .submit_transfer(with_token(request, &token))
            .await
            .expect_err(expected);
        assert_eq!(code(&refused), expected, "{refused:?}");
        assert_eq!(
            cii_kit::grpc::error_field(&refused).as_deref(),
            Some(field),
            "{expected}"
        );
        assert!(!refused.message().contains(PERSON_DIGITS));
    }
    assert_eq!(
        net.audit_size(&orp).await,
        before,
        "refused requests wrote nothing to the log"
    );
    // And the id stays free: the valid request under it is decided normally.
    let decided = gateway
        .submit_transfer(with_token(valid, &token))
        .await
        .expect("valid")
        .into_inner();
    assert_eq!(outcome(&decided), Outcome::Permit);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_held_by_a_crash_is_completed_at_restart_with_exactly_one_entry() {
    held_by_a_crash(Options::default()).await;
}

/// The same with the gateway's operational store and audit log on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_held_by_a_crash_is_completed_at_restart_with_exactly_one_entry_on_postgres() {
    held_by_a_crash(on_postgres().await).await;
}

async fn held_by_a_crash(options: Options) {
    let mut net = Network::start_with(&members(), options).await;
    enrol_everywhere(&net).await;
    net.stop_node(AI).await;
    let queued = send(
        &net,
        ORP,
        report(
            "held-1",
            &["person_informed_before", "incapacity_for_work_or_threatened"],
        ),
    )
    .await
    .expect("send");
    assert_eq!(State::try_from(queued.state), Ok(State::Queued));
    let refused = send(&net, ORP, report("held-2", &[])).await.expect("send");
    assert_eq!(outcome(&refused), Outcome::Deny);

    // Bring the store back to where a crash would have left it: held-1 after its entry
    // was appended (found in the log), held-2 before (its entry, as recorded, is not).
    let root = net.dir.path().to_path_buf();
    let audit = cii_tests::store_url(&root, &net.audit_store);
    let configured = net.gateway_store.clone();
    let entries = cii_tests::audit_entries_at(&audit).await;
    let logged = |id: &str| {
        let mut e = entries.iter().find(|e| e.transfer_id == id).expect("entry").clone();
        e.index = 0;
        e
    };
    let first = cii_audit::entry::encode(&logged("held-1"));
    let mut unlogged = logged("held-2");
    unlogged.time_micros += 1;
    let second = cii_audit::entry::encode(&unlogged);
    let size_before = entries.len();
    net.restart_gateway(move |dir| {
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().expect("runtime").block_on(async {
                let pool = gateway_store(&dir, &configured).await;
                for (id, entry) in [("held-1", first), ("held-2", second)] {
                    sqlx::query("UPDATE transfer SET held = 1, entry = $2, log_size_before = 0 WHERE transfer_id = $1")
                        .bind(id)
                        .bind(entry)
                        .execute(&pool)
                        .await
                        .expect("hold");
                }
                sqlx::query("UPDATE outbox SET held = 1")
                    .execute(&pool)
                    .await
                    .expect("hold");
                pool.close().await;
            })
        })
        .join()
        .expect("store edited");
    })
    .await;
    net.restart_node(AI).await;
    let items = inbox_of_size(&net, AI, 1).await;
    assert_eq!(items[0].transfer_id, "held-1");
    verify_receipt(&net, items[0].receipt.as_ref().expect("receipt"));
    // The sender's retry answers the completed outcome.
    let again = send(&net, ORP, report("held-2", &[])).await.expect("retry");
    assert_eq!(outcome(&again), Outcome::Deny);
    verify_receipt(&net, again.receipt.as_ref().expect("receipt"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbox(&net, AI).await.len(), 1, "delivered once");

    // Held while the gateway keeps running (an append that failed): the sender's retry completes it.
    send(&net, ORP, report("held-3", &[])).await.expect("send");
    let mut third = cii_tests::audit_entries_at(&audit)
        .await
        .into_iter()
        .find(|e| e.transfer_id == "held-3")
        .expect("entry");
    third.index = 0;
    third.time_micros += 1;
    let pool = gateway_store(&root, &net.gateway_store).await;
    sqlx::query("UPDATE transfer SET held = 1, entry = $1, log_size_before = 0 WHERE transfer_id = 'held-3'")
        .bind(cii_audit::entry::encode(&third))
        .execute(&pool)
        .await
        .expect("hold");
    pool.close().await;
    let completed = send(&net, ORP, report("held-3", &[])).await.expect("retry");
    assert_eq!(outcome(&completed), Outcome::Deny);
    verify_receipt(&net, completed.receipt.as_ref().expect("the completed entry's receipt"));

    let _dir = net.stop().await;
    let entries = cii_tests::audit_entries_at(&audit).await;
    let count = |id: &str| entries.iter().filter(|e| e.transfer_id == id).count();
    assert_eq!(
        count("held-3"),
        2,
        "the retry appended the recorded entry (the test changed its time)"
    );
    assert_eq!(count("held-1"), 1, "found in the log, not appended again");
    assert_eq!(
        count("held-2"),
        2,
        "the recorded entry was appended (the test changed its time)"
    );
    // The restart appended its rulebook and registry activations and held-2's entry.
    assert_eq!(entries.len(), size_before + 3 + 2, "and held-3's two");
}

/// A network for senders as fast as they can: above the default transfer limit, which these
/// tests do not test.
async fn flooding_network() -> Network {
    Network::start_with(
        &members(),
        Options {
            limits: Some(cii_tests::NO_LIMITS.into()),
            ..Options::default()
        },
    )
    .await
}

/// A revocation racing transfers that rely on the consent: every transfer sent after the
/// revocation call returned is refused, and every permitted one was decided under the
/// consent's first version (the only one that ever allowed anything), exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_racing_a_revocation_are_refused_once_it_has_returned() {
    let net = flooding_network().await;
    enrol_everywhere(&net).await;
    let consent = record_orp_consent(&net, handover_consent()).await;
    let revoked_at = std::sync::Arc::new(std::sync::OnceLock::<std::time::Instant>::new());
    let mut senders = Vec::new();
    for task in 0..4 {
        let (client, token, revoked_at) = (node(&net, ORP), token(&net, ORP), revoked_at.clone());
        senders.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0..40 {
                let started = std::time::Instant::now();
                let sent_after_revocation = revoked_at.get().is_some_and(|t| *t <= started);
                let id = format!("race-{task}-{n}");
                let answer = client
                    .clone()
                    .send(with_token(handover(&id), &token))
                    .await
                    .expect("send")
                    .into_inner();
                outcomes.push((id, sent_after_revocation, outcome(&answer)));
                if sent_after_revocation && n > 30 {
                    break;
                }
            }
            outcomes
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    node(&net, ORP)
        .revoke_consent(with_token(
            node_pb::RevokeConsentRequest {
                consent_id: consent.consent_id.clone(),
                local_record_id: "ORP-VS-1".into(),
                channel: "letter".into(),
            },
            &token(&net, ORP),
        ))
        .await
        .expect("revoke");
    let _ = revoked_at.set(std::time::Instant::now());
    let mut outcomes = Vec::new();
    for s in senders {
        outcomes.extend(s.await.expect("sender"));
    }
    let after: Vec<_> = outcomes.iter().filter(|(_, after, _)| *after).collect();
    assert!(!after.is_empty(), "some transfers were sent after the revocation");
    for (id, _, o) in &after {
        assert_eq!(*o, Outcome::Deny, "{id} was sent after the revocation returned");
    }
    let permitted: Vec<&str> = outcomes
        .iter()
        .filter(|(_, _, o)| *o == Outcome::Permit)
        .map(|(id, _, _)| id.as_str())
        .collect();
    assert!(
        !permitted.is_empty(),
        "some transfers went through before the revocation"
    );
    let dir = net.stop().await;
    let entries = cii_tests::audit_entries(dir.path()).await;
    let first_version = format!("{}@1", consent.consent_id);
    for id in &permitted {
        let logged: Vec<_> = entries.iter().filter(|e| e.transfer_id == *id).collect();
        assert_eq!(logged.len(), 1, "{id}: one entry");
        assert_eq!(
            logged[0].consents,
            std::slice::from_ref(&first_version),
            "{id} relied on the consent as recorded"
        );
    }
}

/// Microseconds since the epoch, by the clock the registry reads too (same machine).
fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_racing_an_expiry_are_refused_once_it_has_passed() {
    let net = flooding_network().await;
    enrol_everywhere(&net).await;
    // A consent whose period ends in two to three seconds, while four senders rely on it.
    let mut expiring = handover_consent();
    let until = time::OffsetDateTime::now_utc().unix_timestamp() + 3;
    expiring.valid_until = Some(prost_types::Timestamp {
        seconds: until,
        nanos: 0,
    });
    let consent = record_orp_consent(&net, expiring).await;
    let until_micros = until * 1_000_000;
    let mut senders = Vec::new();
    for task in 0..4 {
        let (client, token) = (node(&net, ORP), token(&net, ORP));
        senders.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            // Until a second after the end of the period.
            while now_micros() < until_micros + 1_000_000 {
                let started = now_micros();
                let id = format!("expiry-{task}-{n}");
                let answer = client
                    .clone()
                    .send(with_token(handover(&id), &token))
                    .await
                    .expect("send")
                    .into_inner();
                outcomes.push((id, started, outcome(&answer)));
                n += 1;
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for s in senders {
        outcomes.extend(s.await.expect("sender"));
    }
    // The registry counts `valid_until` itself as inside the period: a lookup that began after
    // it found the consent expired.
    let after: Vec<_> = outcomes
        .iter()
        .filter(|(_, started, _)| *started > until_micros)
        .collect();
    assert!(!after.is_empty(), "some transfers were sent after the expiry");
    for (id, _, o) in &after {
        assert_eq!(*o, Outcome::Deny, "{id} was sent after the consent expired");
    }
    let permitted: Vec<&str> = outcomes
        .iter()
        .filter(|(_, _, o)| *o == Outcome::Permit)
        .map(|(id, _, _)| id.as_str())
        .collect();
    assert!(!permitted.is_empty(), "some transfers went through before the expiry");
    let dir = net.stop().await;
    let entries = cii_tests::audit_entries(dir.path()).await;
    let version = format!("{}@1", consent.consent_id);
    for id in &permitted {
        let logged: Vec<_> = entries.iter().filter(|e| e.transfer_id == *id).collect();
        assert_eq!(logged.len(), 1, "{id}: one entry");
        assert_eq!(logged[0].consents, std::slice::from_ref(&version), "{id}");
    }
}

/// A recipient list (XT-G6) from the social service to the ORP.
fn recipient_list(transfer_id: &str, records: &[&str]) -> node_pb::SendRequest {
    let entries = records
        .iter()
        .map(|_| xt::RecipientListEntry {
            receipt: "social assistance since 2026-03, CHF 2,100 a month".into(),
        })
        .collect();
    node_pb::SendRequest {
        case_reference: "list-2026-11".into(),
        transfer_id: transfer_id.into(),
        recipient: "ORP-VS".into(),
        local_record_id: String::new(),
        trigger: gw::Trigger::MandatoryReport as i32,
        purpose: "integration".into(),
        payload: Some(any("RecipientList", &xt::RecipientList { entries })),
        include_identity: false,
        attested_facts: Vec::new(),
        written_request: String::new(),
        list_record_ids: records.iter().map(|r| (*r).to_owned()).collect(),
    }
}

async fn enrol_second_person_at_the_social_service(net: &Network) {
    node(net, AS)
        .enrol(with_token(
            node_pb::EnrolRequest {
                avs_number: cii_tests::synthetic_avs(41),
                local_record_id: "AS-VS-2".into(),
            },
            &token(net, AS),
        ))
        .await
        .expect("enrol");
}

/// Several persons in one transfer are never "the individual case": under the federal rulebook a
/// recipient list is refused — decided with the real count, logged with every person for the
/// DPOs, delivered nowhere. A list that does not match its entries is refused before anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recipient_list_is_refused_under_the_federal_rulebook() {
    let net = Network::start(&members()).await;
    enrol_everywhere(&net).await;
    enrol_second_person_at_the_social_service(&net).await;
    let refused = send(&net, AS, recipient_list("list-1", &["AS-VS-1", "AS-VS-2"]))
        .await
        .expect("decided");
    assert_eq!(outcome(&refused), Outcome::Deny, "{:?}", refused.decision);
    let entry = cii_tests::audit_entries(net.dir.path())
        .await
        .into_iter()
        .find(|e| e.transfer_id == "list-1")
        .expect("logged");
    assert_eq!(entry.kind, cii_audit::EntryKind::TransferDenied as i32);
    assert_eq!(
        entry.list_audit_pseudonyms.len(),
        2,
        "each person of the list, for the DPOs"
    );
    assert!(entry.audit_pseudonym.is_empty());
    let mut short = recipient_list("list-2", &["AS-VS-1", "AS-VS-2"]);
    short.list_record_ids.pop();
    let mismatch = send(&net, AS, short).await.expect_err("one entry without its person");
    // The gateway cannot read the list: the sender's node counts its entries before sealing it.
    assert_eq!(code(&mismatch), "FIELD_NOT_ALLOWED");
    assert_eq!(
        cii_kit::grpc::error_field(&mismatch).as_deref(),
        Some("list_record_ids")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(inbox(&net, ORP).await.is_empty(), "nothing delivered");
    net.stop().await;
}

/// A canton whose law provides a list exchange adds its basis; the list then arrives matched
/// pseudonymously: the ORP's node finds its own record for each person it knows, none for the
/// others, and never an AVS number.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cantons_list_basis_delivers_the_list_matched_pseudonymously() {
    const CANTON: &str = r#"
[rulebook]
version = "VS-list-test"
extends = "federal"

[[basis]]
id = "LIAS-45-2"
citation = { fr = "LIAS (VS) art. 45 al. 2 (exemple de test)", de = "GES (VS) Art. 45 Abs. 2 (Testbeispiel)" }
status = "verified"
effective_from = "2012-01-01"
from = ["AS"]
to = ["AC_ORP"]
triggers = ["mandatory_report"]
purposes = ["integration"]
categories = ["social_aid_receipt"]
conditions = []
note = "A test basis: a canton's law providing a recipient list."
"#;
    let net = Network::start_with(
        &members(),
        Options {
            rulebook: Some(CANTON.to_owned()),
            ..Options::default()
        },
    )
    .await;
    enrol_everywhere(&net).await;
    enrol_second_person_at_the_social_service(&net).await;
    let permitted = send(&net, AS, recipient_list("list-9", &["AS-VS-1", "AS-VS-2"]))
        .await
        .expect("send");
    assert_eq!(outcome(&permitted), Outcome::Permit, "{:?}", permitted.decision);
    let items = inbox_of_size(&net, ORP, 1).await;
    let item = &items[0];
    assert_eq!(item.transfer_id, "list-9");
    assert_eq!(
        item.list_record_ids,
        ["ORP-VS-1", ""],
        "matched to the ORP's own record, or to none"
    );
    assert!(item.local_record_id.is_empty() && item.avs_number.is_empty());
    let list = xt::RecipientList::decode(item.payload.as_ref().expect("payload").value.as_slice()).expect("decode");
    assert_eq!(list.entries.len(), 2);
    verify_receipt(&net, item.receipt.as_ref().expect("receipt"));
    net.stop().await;
}

/// A jurist replays a changed rulebook on the decisions recorded for their institution
/// (`Policy/Replay`, logged first): the early-detection report would change if LAI 3b al. 2
/// let. i no longer carried health limitations; another institution's jurist sees none of the
/// ORP's decisions; a caseworker may not replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jurist_replays_an_amended_rulebook_on_their_institutions_decisions() {
    use cii_proto::policy::{ReplayRequest, RulebookFile, policy_client::PolicyClient};
    let net = Network::start(&members()).await;
    enrol_everywhere(&net).await;
    let permitted = send(
        &net,
        ORP,
        report("rp-1", &["person_informed_before", "incapacity_for_work_or_threatened"]),
    )
    .await
    .expect("send");
    assert_eq!(outcome(&permitted), Outcome::Permit);
    let amended: Vec<RulebookFile> = cii_policy::federal_sources()
        .into_iter()
        .map(|s| RulebookFile {
            name: s.name.replace("federal/", ""),
            text: s.text.replace(
                "categories = [\"identity\", \"contact\", \"employment_status\", \"health_limitations\", \"incapacity_certificate\"]\nconditions = [\"case_by_case\", \"early_detection_target_group\", \"person_informed_before\"]\nnote = \"Written early-detection report by the AC",
                "categories = [\"identity\", \"contact\", \"employment_status\", \"incapacity_certificate\"]\nconditions = [\"case_by_case\", \"early_detection_target_group\", \"person_informed_before\"]\nnote = \"Written early-detection report by the AC",
            ),
        })
        .collect();
    let client =
        |i: usize| PolicyClient::new(net.gateway_channel_as(&PeerIdentity::Institution(net.node(i).member.id.clone())));
    let request = ReplayRequest {
        files: amended,
        limit: 0,
    };
    let answer = client(ORP)
        .replay(with_token(
            request.clone(),
            &net.token(ORP, "lea.jurist", &[Role::Jurist]),
        ))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!((answer.changed, answer.cannot_replay), (1, 0), "{answer:?}");
    let change = &answer.changes[0];
    assert_eq!(
        (change.transfer_id.as_str(), change.sender.as_str()),
        ("rp-1", "ORP-VS")
    );
    assert!(change.recorded.contains("health_limitations") && !change.replayed.contains("health_limitations"));
    let elsewhere = client(AS)
        .replay(with_token(
            request.clone(),
            &net.token(AS, "max.jurist", &[Role::Jurist]),
        ))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(
        elsewhere.changed + elsewhere.unchanged,
        0,
        "only its own institution's decisions"
    );
    let caseworker = client(ORP)
        .replay(with_token(request, &token(&net, ORP)))
        .await
        .expect_err("a caseworker");
    assert_eq!(caseworker.code(), Code::PermissionDenied);
    let logged = cii_tests::audit_entries(net.dir.path())
        .await
        .into_iter()
        .filter(|e| e.kind == cii_audit::EntryKind::AuditQuery as i32 && e.detail.starts_with("policy-replay"))
        .count();
    assert_eq!(logged, 2, "each replay is logged");
    net.stop().await;
}
