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
        let item = item?;
        let mut entry = cii_audit::entry::decode(&item.body).expect("decode");
        // The person as the caller's DPO key opens it: an institution's DPO gets it rekeyed
        // into its own context beside the entry; the network DPO reads the entry's own.
        if !item.dpo_person.is_empty() {
            entry.audit_pseudonym = item.dpo_person;
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn report(id: &str, record: &str, facts: &[&str]) -> node_pb::SendRequest {
    node_pb::SendRequest {
        list_record_ids: Vec::new(),
        case_reference: "case-1".into(),
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

/// The same with two transcryptors: every person of the log rekeyed into a DPO's context
/// passes through both (the audit context's public key from the ceremony in shares).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpo_sees_their_institution_through_two_transcryptors() {
    dpo_queries(Options {
        two_transcryptors: true,
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
        // The registry designates AI-VS for the network DPO.
        Options {
            network_roles: vec![1],
            ..options
        },
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
        report(
            "q-1",
            "O-ANNA",
            &["person_informed_before", "incapacity_for_work_or_threatened"],
        ),
        report(
            "q-2",
            "O-LUCA",
            &["person_informed_before", "incapacity_for_work_or_threatened"],
        ),
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
    // ORP's DPO key opens the persons of ORP's queries (rekeyed into its context at query time).
    let read = |f: &str| std::fs::read_to_string(net.dir.path().join("keys").join(f)).expect("key file");
    let keys_of = |file: &str| {
        cii_pseudonym::node::NodeKeys::from_json(&read("global-public.json"), &read(file)).expect("dpo keys")
    };
    let (dpo, ai_dpo, network_dpo) = (
        keys_of("dpo/ORP-VS/session-keys.json"),
        keys_of("dpo/AI-VS/session-keys.json"),
        keys_of("dpo/audit-session-keys.json"),
    );
    let open_with = |keys: &cii_pseudonym::node::NodeKeys, e: &cii_audit::Entry| {
        keys.decrypt(&cii_pseudonym::wire::pseudonym(&e.audit_pseudonym).expect("ct"))
            .0
    };
    let person = |e: &cii_audit::Entry| open_with(&dpo, e);
    let anna_at_ai = orp.iter().find(|e| e.transfer_id == "q-1").map(person).expect("q-1");
    // The same entry seen by AI's DPO opens with AI's key only, under another pseudonym; the
    // network DPO reads the entry's own audit context, under a third.
    let q1_at_ai = by_basis.iter().find(|e| e.transfer_id == "q-1").expect("q-1 at AI");
    assert_ne!(
        open_with(&ai_dpo, q1_at_ai),
        anna_at_ai,
        "each institution's DPO has its own pseudonym"
    );
    assert_ne!(
        open_with(&dpo, q1_at_ai),
        open_with(&ai_dpo, q1_at_ai),
        "ORP's key does not open AI's answer"
    );
    let q1_in_log = orp.iter().find(|e| e.transfer_id == "q-1").expect("q-1");
    assert_ne!(
        open_with(&ai_dpo, q1_in_log),
        anna_at_ai,
        "AI's key does not open ORP's answer"
    );
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
    // The log itself keeps the audit context: the network DPO's key opens it.
    let anna_in_log = logged
        .iter()
        .find(|e| e.transfer_id == "q-1" && e.kind == EntryKind::TransferPermitted as i32)
        .map(|e| open_with(&network_dpo, e))
        .expect("q-1 in the log");
    let lookups: Vec<cii_audit::Entry> = logged
        .into_iter()
        .filter(|e| e.kind == EntryKind::DpoLookup as i32)
        .collect();
    assert_eq!(lookups.len(), 1, "the one lookup answered");
    assert_eq!(
        open_with(&network_dpo, &lookups[0]),
        anna_in_log,
        "the lookup entry names the person for later reports"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_shreds_expired_months_and_the_log_still_verifies_on_sqlite() {
    retention(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_shreds_expired_months_and_the_log_still_verifies_on_postgres() {
    retention(Options {
        audit_store: Some(cii_tests::pg::fresh_database().await),
        ..Options::default()
    })
    .await;
}

/// Transfers now; a dry run (through the node) destroys nothing; then, with
/// the gateway's clock two years ahead, the operator's run shreds this month:
/// its bodies are unreadable, the tree verifies, the run's entry is there.
async fn retention(options: Options) {
    use cii_proto::audit::{ApplyRetentionRequest, audit_client::AuditClient};
    let clock = cii_kit::clock::SkewedClock::default();
    let net = Network::start_with(
        &[
            member("ORP-VS", InstitutionType::AcOrp),
            member("AI-VS", InstitutionType::Ai),
        ],
        Options {
            gateway_clock: Some(std::sync::Arc::new(clock.clone())),
            // The registry designates ORP-VS as the network's operator.
            network_roles: vec![0],
            ..options
        },
    )
    .await;
    let caseworker = net.token(0, "caseworker.2", &[Role::Caseworker]);
    for (i, record) in [(0, "O-ANNA"), (1, "A-ANNA")] {
        node(&net, i)
            .enrol(with_token(
                node_pb::EnrolRequest {
                    avs_number: ANNA.into(),
                    local_record_id: record.into(),
                },
                &net.token(i, "caseworker.2", &[Role::Caseworker]),
            ))
            .await
            .expect("enrol");
    }
    for request in [
        report(
            "r-1",
            "O-ANNA",
            &["person_informed_before", "incapacity_for_work_or_threatened"],
        ),
        report("r-2", "O-ANNA", &[]),
    ] {
        node(&net, 0)
            .send(with_token(request, &caseworker))
            .await
            .expect("send");
    }
    let this_month = cii_audit::body::period_of(time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000);

    // Only an operator may, and a dry run destroys nothing (through the node, as the CLI calls it).
    let dry = ApplyRetentionRequest { dry_run: true };
    let refused = node(&net, 0)
        .apply_audit_retention(with_token(dry, &net.token(0, "dpo.1", &[Role::Dpo])))
        .await
        .expect_err("a dpo may not");
    assert_eq!(cii_kit::grpc::error_code(&refused).as_deref(), Some("ROLE_REQUIRED"));
    let now = node(&net, 0)
        .apply_audit_retention(with_token(dry, &net.token(0, "ops.1", &[Role::Operator])))
        .await
        .expect("dry run")
        .into_inner();
    assert!(
        now.dry_run && now.destroyed.is_empty() && now.transfers_forgotten == 0,
        "{now:?}"
    );
    assert_eq!(now.retention_days, 365);

    // Two years and two months on, this month is past the limit.
    let ahead = (365 * 2 + 62) * 86_400;
    clock.set_offset(ahead);
    let operator = net.token_with(
        0,
        0,
        "ops.1",
        &[Role::Operator],
        time::OffsetDateTime::now_utc() + time::Duration::seconds(ahead),
        300,
    );
    let mut audit =
        AuditClient::new(net.gateway_channel_as(&cii_types::PeerIdentity::Institution(net.node(0).member.id.clone())));
    let run = audit
        .apply_retention(with_token(ApplyRetentionRequest { dry_run: false }, &operator))
        .await
        .expect("retention")
        .into_inner();
    let destroyed: Vec<&str> = run.destroyed.iter().map(|p| p.period.as_str()).collect();
    assert!(destroyed.contains(&this_month.as_str()), "{destroyed:?}");
    assert_eq!(run.transfers_forgotten, 2, "r-1 and r-2's idempotency records");
    let shredded: u64 = run.destroyed.iter().map(|p| p.entries).sum();

    let store = net.audit_store.clone();
    let dir = net.stop().await;
    let url = match store.strip_prefix("sqlite:") {
        Some(path) => format!("sqlite:{}", dir.path().join(path).display()),
        None => store,
    };
    let audit_store = cii_audit::Store::open_read_only(&url).await.expect("store");
    let stored = audit_store.entries(0, 1000).await.expect("entries");
    let run_entry = stored
        .iter()
        .find(|e| e.index == run.run_index)
        .and_then(|e| e.readable())
        .map(|b| cii_audit::entry::decode(b).expect("decode"))
        .expect("the run's own entry is readable");
    assert_eq!(run_entry.kind, EntryKind::RetentionRun as i32);
    assert_eq!(run_entry.acting_user, "ops.1@ORP-VS");
    assert!(run_entry.detail.contains(&format!("periods={this_month}")) || run_entry.detail.contains(&this_month));
    assert!(run_entry.detail.starts_with("retention_days=365 "));
    // Everything before the run is unreadable now: transfers, enrolments, the dry run.
    for e in stored.iter().filter(|e| e.index < run.run_index) {
        assert!(e.readable().is_none(), "entry {} still readable", e.index);
    }
    assert_eq!(shredded, run.run_index, "every earlier entry was in a destroyed month");
    let key = std::fs::read_to_string(cii_kit::pki::audit_signing_key(&dir.path().join("pki"))).expect("key");
    let verifier = cii_audit::note::Signer::from_pem("cii.test/audit", &key)
        .expect("signer")
        .verifier();
    let report = cii_audit::verify::verify(&audit_store, &verifier, "cii.test/audit", |_, _| {})
        .await
        .expect("the tree still verifies after retention");
    assert_eq!(report.expired, run.run_index);
    assert_eq!(report.entries, stored.len() as u64);
    audit_store.close().await;
}

/// A rotation of the pseudonym keys (a new ceremony epoch: the gateway's transcryptor moves
/// to epoch 2, each DPO gets its epoch-2 key): entries written before it still open for the
/// institution's new DPO key, to the same person as before, entries written after it too;
/// the old key no longer opens what the gateway answers; every entry says its epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_dpo_key_opens_the_persons_of_entries_written_before_and_after() {
    let mut net = Network::start(&[
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
    ])
    .await;
    node(&net, 0)
        .enrol(with_token(
            node_pb::EnrolRequest {
                avs_number: ANNA.into(),
                local_record_id: "O-ANNA".into(),
            },
            &net.token(0, "caseworker.2", &[Role::Caseworker]),
        ))
        .await
        .expect("enrol");
    let read = |net: &Network, f: &str| std::fs::read_to_string(net.dir.path().join("keys").join(f)).expect("key file");
    let key = |net: &Network, file: &str| {
        cii_pseudonym::node::NodeKeys::from_json(&read(net, "global-public.json"), &read(net, file)).expect("dpo keys")
    };
    let (old_key, new_key) = (
        key(&net, "dpo/ORP-VS/session-keys.json"),
        key(&net, "epoch-2/dpo/ORP-VS/session-keys.json"),
    );
    let open = |keys: &cii_pseudonym::node::NodeKeys, e: &cii_audit::Entry| {
        keys.decrypt(&cii_pseudonym::wire::pseudonym(&e.audit_pseudonym).expect("ct"))
            .0
    };
    let enrolment = |entries: Vec<cii_audit::Entry>| {
        entries
            .into_iter()
            .find(|e| e.kind == EntryKind::Enrolment as i32)
            .expect("the enrolment")
    };
    let before = enrolment(query(&net, 0, Role::Dpo, QueryRequest::default()).await.expect("query"));
    assert_eq!(before.key_epoch, 1, "the entry says its epoch");
    let anna = open(&old_key, &before);

    // The rotation: the gateway's transcryptor moves to epoch 2 (same secrets).
    net.restart_gateway(|dir| {
        let file = dir.join("keys/gateway/transcryptor.json");
        let text = std::fs::read_to_string(&file).expect("transcryptor");
        cii_tests::write_file(&file, &text.replace("\"epoch\":1", "\"epoch\":2"), true);
    })
    .await;
    let entries = query(&net, 0, Role::Dpo, QueryRequest::default()).await.expect("query");
    let after = enrolment(entries);
    assert_eq!(open(&new_key, &after), anna, "the same person under the new key");
    assert_ne!(open(&old_key, &after), anna, "the old key opens nothing new");
    // A subject-access lookup after the rotation is written in epoch 2, and opens the same.
    node(&net, 0)
        .lookup_person_for_dpo(with_token(
            node_pb::DpoLookupRequest {
                local_record_id: "O-ANNA".into(),
            },
            &net.token(0, "dpo.1", &[Role::Dpo]),
        ))
        .await
        .expect("lookup");
    let entries = query(&net, 0, Role::Dpo, QueryRequest::default()).await.expect("query");
    let lookup = entries
        .iter()
        .rfind(|e| !e.audit_pseudonym.is_empty() && e.kind != EntryKind::Enrolment as i32)
        .expect("the lookup's entry");
    assert_eq!(lookup.key_epoch, 2);
    assert_eq!(open(&new_key, lookup), anna);
    net.stop().await;
}
