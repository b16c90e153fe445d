//! The data-protection officer's query of the audit log, through the node:
//! scope by role, persons as DPO-context ciphertexts, every query logged.

use cii_proto::audit::{EntryKind, QueryRequest};
use cii_proto::exchange as xt;
use cii_proto::gateway as gw;
use cii_proto::node::{self as node_pb, node_client::NodeClient};
use cii_tests::{Network, Options, member, with_token};
use cii_types::{InstitutionType, Role};
use prost::Message;
use tokio_stream::StreamExt;

const ANNA: &str = "756.1234.5678.97";
const LUCA: &str = "756.9217.0769.85";

fn node(net: &Network, i: usize) -> NodeClient<tonic::transport::Channel> {
    NodeClient::new(net.node_api_channel(i))
}

async fn query(
    net: &Network,
    i: usize,
    role: Role,
    request: QueryRequest,
) -> Result<Vec<cii_audit::Entry>, tonic::Status> {
    let token = net.token(i, "dpo.1", &[role]);
    let mut stream = node(net, i)
        .query_audit(with_token(request, &token))
        .await?
        .into_inner();
    let mut entries = Vec::new();
    while let Some(item) = stream.next().await {
        entries.push(cii_audit::entry::decode(&item?.body).expect("decode"));
    }
    Ok(entries)
}

fn report(id: &str, record: &str, facts: &[&str]) -> node_pb::SendRequest {
    node_pb::SendRequest {
        transfer_id: id.into(),
        recipient: "AI-VS".into(),
        local_record_id: record.into(),
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/cii.exchange.v1.EarlyDetectionReport".into(),
            value: xt::EarlyDetectionReport {
                health_limitations: "reduced capacity".into(),
                ..xt::EarlyDetectionReport::default()
            }
            .encode_to_vec(),
        }),
        include_identity: false,
        attested_facts: facts.iter().map(|f| (*f).to_owned()).collect(),
        written_request: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpo_sees_their_institution_a_network_dpo_all_and_every_query_is_logged_on_sqlite() {
    dpo_queries(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpo_sees_their_institution_a_network_dpo_all_and_every_query_is_logged_on_postgres() {
    dpo_queries(Options {
        audit_store: Some(cii_tests::pg::fresh_database().await),
        ..Options::default()
    })
    .await;
}

async fn dpo_queries(options: Options) {
    let net = Network::start_with(
        &[
            member("ORP-VS", InstitutionType::AcOrp),
            member("AI-VS", InstitutionType::Ai),
            member("AS-VS", InstitutionType::As),
        ],
        options,
    )
    .await;
    let caseworker = |i: usize| net.token(i, "caseworker.2", &[Role::Caseworker]);
    for (i, avs, record) in [
        (0, ANNA, "O-ANNA"),
        (0, LUCA, "O-LUCA"),
        (1, ANNA, "A-ANNA"),
        (2, LUCA, "S-LUCA"),
    ] {
        node(&net, i)
            .enrol(with_token(
                node_pb::EnrolRequest {
                    avs_number: avs.into(),
                    local_record_id: record.into(),
                },
                &caseworker(i),
            ))
            .await
            .expect("enrol");
    }
    for request in [
        report("q-1", "O-ANNA", &["person_informed_before"]),
        report("q-2", "O-LUCA", &["person_informed_before"]),
        report("q-3", "O-ANNA", &[]),
    ] {
        node(&net, 0)
            .send(with_token(request, &caseworker(0)))
            .await
            .expect("send");
    }

    // ORP's DPO: every entry names ORP as sender or recipient, and none is missing.
    let orp = query(&net, 0, Role::Dpo, QueryRequest::default()).await.expect("query");
    assert!(orp.iter().all(|e| e.sender == "ORP-VS" || e.recipient == "ORP-VS"));
    let transfers: Vec<&str> = orp
        .iter()
        .filter(|e| !e.transfer_id.is_empty())
        .map(|e| e.transfer_id.as_str())
        .collect();
    assert_eq!(transfers, ["q-1", "q-2", "q-3"]);
    assert!(
        !orp.iter().any(|e| e.sender == "AS-VS"),
        "AS's enrolment is not ORP's business"
    );

    // Filters: refusals only; by basis.
    let denied = query(
        &net,
        0,
        Role::Dpo,
        QueryRequest {
            decision: "deny".into(),
            ..QueryRequest::default()
        },
    )
    .await
    .expect("query");
    assert_eq!(
        denied.iter().map(|e| e.transfer_id.as_str()).collect::<Vec<_>>(),
        ["q-3"]
    );
    let by_basis = query(
        &net,
        1,
        Role::Dpo,
        QueryRequest {
            basis: "LAI-3b-2-i".into(),
            ..QueryRequest::default()
        },
    )
    .await
    .expect("query");
    assert_eq!(by_basis.len(), 2, "the AI office received two permitted reports");

    // By person, on the DPO's side: the audit pseudonyms open with the DPO context key only.
    let read = |f: &str| std::fs::read_to_string(net.dir.path().join("keys").join(f)).expect("key file");
    let dpo =
        cii_pseudonym::node::NodeKeys::from_json(&read("global-public.json"), &read("dpo/audit-session-keys.json"))
            .expect("dpo keys");
    let person = |e: &cii_audit::Entry| {
        dpo.decrypt(&cii_pseudonym::wire::pseudonym(&e.audit_pseudonym).expect("ct"))
            .0
    };
    let anna_at_ai = orp
        .iter()
        .chain(&by_basis)
        .find(|e| e.transfer_id == "q-1")
        .map(person)
        .expect("q-1");
    let about_anna: Vec<&str> = orp
        .iter()
        .filter(|e| e.kind == EntryKind::TransferPermitted as i32 || e.kind == EntryKind::TransferDenied as i32)
        .filter(|e| person(e) == anna_at_ai)
        .map(|e| e.transfer_id.as_str())
        .collect();
    assert_eq!(about_anna, ["q-1", "q-3"], "exactly Anna's transfers, none of Luca's");

    // A subject-access lookup from ORP's own record reaches the same person, and is logged.
    let lookup = node(&net, 0)
        .lookup_person_for_dpo(with_token(
            node_pb::DpoLookupRequest {
                local_record_id: "O-ANNA".into(),
            },
            &net.token(0, "dpo.1", &[Role::Dpo]),
        ))
        .await
        .expect("lookup")
        .into_inner();
    let found =
        dpo.decrypt(&cii_pseudonym::wire::pseudonym(&lookup.audit_person.expect("person").ciphertext).expect("ct"));
    assert_eq!(found.0, anna_at_ai, "the DPO context knows Anna by one pseudonym");
    let refused = node(&net, 0)
        .lookup_person_for_dpo(with_token(
            node_pb::DpoLookupRequest {
                local_record_id: "O-ANNA".into(),
            },
            &caseworker(0),
        ))
        .await
        .expect_err("a caseworker may not");
    assert_eq!(cii_kit::grpc::error_code(&refused).as_deref(), Some("ROLE_REQUIRED"));

    // Scope and role are enforced at the gateway.
    let foreign = query(
        &net,
        1,
        Role::Dpo,
        QueryRequest {
            institution: "ORP-VS".into(),
            ..QueryRequest::default()
        },
    )
    .await
    .expect_err("another institution");
    assert_eq!(cii_kit::grpc::error_code(&foreign).as_deref(), Some("DPO_SCOPE"));
    let not_dpo = query(&net, 0, Role::Caseworker, QueryRequest::default())
        .await
        .expect_err("no role");
    assert_eq!(cii_kit::grpc::error_code(&not_dpo).as_deref(), Some("ROLE_REQUIRED"));
    let network = query(
        &net,
        1,
        Role::NetworkDpo,
        QueryRequest {
            institution: "AS-VS".into(),
            ..QueryRequest::default()
        },
    )
    .await
    .expect("network dpo");
    assert!(
        network
            .iter()
            .any(|e| e.kind == EntryKind::Enrolment as i32 && e.sender == "AS-VS")
    );

    // Every query is an entry, with the DPO and the filters, and no person.
    let store = net.audit_store.clone();
    let dir = net.stop().await;
    let url = match store.strip_prefix("sqlite:") {
        Some(path) => format!("sqlite:{}", dir.path().join(path).display()),
        None => store,
    };
    let logged = cii_tests::audit_entries_at(&url).await;
    let queries: Vec<cii_audit::Entry> = logged
        .iter()
        .filter(|e| e.kind == EntryKind::AuditQuery as i32)
        .cloned()
        .collect();
    assert_eq!(
        queries.len(),
        4,
        "four queries answered, each logged (the two refused are not queries)"
    );
    assert!(
        queries
            .iter()
            .all(|e| e.acting_user.starts_with("dpo.1@") && e.audit_pseudonym.is_empty())
    );
    assert!(queries.iter().any(|e| e.detail.contains("decision=deny")));
    let lookups: Vec<cii_audit::Entry> = logged
        .into_iter()
        .filter(|e| e.kind == EntryKind::DpoLookup as i32)
        .collect();
    assert_eq!(lookups.len(), 1, "the one lookup answered");
    assert_eq!(
        person(&lookups[0]),
        anna_at_ai,
        "the lookup entry names the person for later reports"
    );
}
