//! Enrolment through node and gateway: each institution gets its own stable
//! pseudonym, every enrolment is an audit entry readable by the DPO only, bad
//! input is refused with a stable code and changes nothing, and the rate is
//! limited per institution.

use cii_kit::grpc::{error_code, error_field};
use cii_proto::audit::{GetCheckpointRequest, audit_client::AuditClient};
use cii_proto::common::EncryptedPseudonym;
use cii_proto::gateway::{self as gw, gateway_client::GatewayClient};
use cii_proto::node::{EnrolRequest, EnrolResponse, node_client::NodeClient};
use cii_pseudonym::names::Party;
use cii_pseudonym::node::{LocalPseudonym, NodeKeys};
use cii_tests::{Network, Options, member, with_token};
use cii_types::{InstitutionType, PeerIdentity, Role};
use tonic::Code;

fn two_members() -> Vec<cii_tests::Member> {
    vec![
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
    ]
}

async fn enrol(net: &Network, i: usize, avs: &str, record: &str) -> Result<EnrolResponse, tonic::Status> {
    let token = net.token(i, "anna.meier", &[Role::Caseworker]);
    NodeClient::new(net.node_api_channel(i))
        .enrol(with_token(
            EnrolRequest {
                avs_number: avs.into(),
                local_record_id: record.into(),
            },
            &token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn log_size(net: &Network) -> u64 {
    let party = PeerIdentity::Institution(net.node(0).member.id.clone());
    let token = net.token(0, "witness", &[Role::Caseworker]);
    AuditClient::new(net.gateway_channel_as(&party))
        .get_checkpoint(with_token(GetCheckpointRequest {}, &token))
        .await
        .expect("checkpoint")
        .into_inner()
        .tree_size
}

fn read(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).expect("read key file")
}

fn local(hex: &str) -> LocalPseudonym {
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    LocalPseudonym(bytes.try_into().expect("32 bytes"))
}

async fn node_store(dir: &std::path::Path, id: &str) -> cii_node::store::Store {
    let key = cii_node::store::parse_key(&read(dir, &format!("keys/institutions/{id}/store.key"))).expect("key");
    cii_node::store::Store::open(
        &format!("sqlite:{}", dir.join(format!("nodes/{id}/node.db")).display()),
        &key,
    )
    .await
    .expect("node store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_institution_gets_its_own_stable_pseudonym_and_every_enrolment_is_logged_for_the_dpo() {
    let net = Network::start(&two_members()).await;
    let before = log_size(&net).await;
    let at_orp = enrol(&net, 0, "756.1234.5678.97", "ORP-2026-0001")
        .await
        .expect("enrol at ORP");
    let at_ai = enrol(&net, 1, "7561234567897", "AI/44-123").await.expect("enrol at AI");
    assert_eq!(at_orp.local_record_id, "ORP-2026-0001");
    assert_eq!(at_orp.pseudonym.len(), 64);
    assert_ne!(at_orp.pseudonym, at_ai.pseudonym, "unlinkable across institutions");
    // The same pair again: the same pseudonym, answered by the node alone.
    let again = enrol(&net, 0, "7561234567897", "ORP-2026-0001")
        .await
        .expect("re-enrol");
    assert_eq!(again.pseudonym, at_orp.pseudonym);
    assert_eq!(log_size(&net).await, before + 2, "two gateway enrolments, two entries");
    // The node reports what it witnessed.
    let status = NodeClient::new(net.node_api_channel(0))
        .status(with_token(
            cii_proto::node::StatusRequest {},
            &net.token(0, "monitor", &[Role::Caseworker]),
        ))
        .await
        .expect("status")
        .into_inner();
    assert!(!status.audit_alarm);
    // ORP, one of the witnesses, may have cosigned a checkpoint after its own enrolment too.
    assert!(
        (before + 1..=before + 2).contains(&status.audit_checkpoint_size),
        "ORP saw the checkpoint of its own enrolment"
    );
    let dir = net.stop().await;

    // The entries: kind, institution, user, and an audit pseudonym that only the DPO key opens —
    // to the same value for the same person, whichever institution enrolled them.
    let entries: Vec<cii_audit::Entry> = cii_tests::audit_entries(dir.path())
        .await
        .into_iter()
        .skip(usize::try_from(before).expect("size"))
        .collect();
    let dpo = NodeKeys::from_json(
        &read(dir.path(), "keys/global-public.json"),
        &read(dir.path(), "keys/dpo/audit-session-keys.json"),
    )
    .expect("dpo keys");
    let mut audit_pseudonyms = Vec::new();
    for (entry, sender) in entries.iter().zip(["ORP-VS", "AI-VS"]) {
        assert_eq!(entry.kind, cii_audit::EntryKind::Enrolment as i32);
        assert_eq!(entry.sender, sender);
        assert_eq!(entry.acting_user, format!("anna.meier@{sender}"));
        let ciphertext = cii_pseudonym::wire::pseudonym(&entry.audit_pseudonym).expect("64-byte ciphertext");
        audit_pseudonyms.push(dpo.decrypt(&ciphertext));
    }
    assert_eq!(audit_pseudonyms.len(), 2);
    assert_eq!(
        audit_pseudonyms[0], audit_pseudonyms[1],
        "the DPO links the person across institutions"
    );
    assert_ne!(
        audit_pseudonyms[0],
        local(&at_orp.pseudonym),
        "the audit domain is its own"
    );

    // A ciphertext that claims the wrong source domain cannot be detected as such: it reaches
    // the recipient as a person it has not enrolled.
    let gateway = cii_pseudonym::gateway::Gateway::from_json(
        &read(dir.path(), "keys/gateway/transcryptor.json"),
        &read(dir.path(), "keys/global-public.json"),
    )
    .expect("transcryptor");
    let keys = |id: &str| {
        NodeKeys::from_json(
            &read(dir.path(), "keys/global-public.json"),
            &read(dir.path(), &format!("keys/institutions/{id}/session-keys.json")),
        )
        .expect("node keys")
    };
    let (orp_keys, ai_keys) = (keys("ORP-VS"), keys("AI-VS"));
    let party = |id: &str| Party::Institution(cii_types::InstitutionId::parse("id", id).expect("id"));
    let sent = orp_keys.encrypt_own(&local(&at_orp.pseudonym)).expect("encrypt");
    let ai_store = node_store(dir.path(), "AI-VS").await;
    let right = ai_keys.decrypt(&gateway.translate(&sent, &party("ORP-VS"), &party("AI-VS")));
    assert_eq!(
        ai_store.by_pseudonym(&right).await.expect("lookup").as_deref(),
        Some("AI/44-123")
    );
    let wrong = ai_keys.decrypt(&gateway.translate(&sent, &party("SUVA"), &party("AI-VS")));
    assert_eq!(
        ai_store.by_pseudonym(&wrong).await.expect("lookup"),
        None,
        "not enrolled"
    );
    ai_store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrolments_get_a_stable_code_and_the_field_and_change_nothing() {
    let net = Network::start(&two_members()).await;
    enrol(&net, 0, "756.9217.0769.85", "R-1")
        .await
        .expect("first enrolment");
    let before = log_size(&net).await;
    let cases = [
        ("756.1234.5678.98", "R-2", "AVS_CHECK_DIGIT", "avs_number"),
        ("756.1234.5678", "R-2", "AVS_FORMAT", "avs_number"),
        ("757.1234.5678.97", "R-2", "AVS_PREFIX", "avs_number"),
        ("756.1234.5678.97", "", "LOCAL_RECORD_ID_INVALID", "local_record_id"),
        ("756.1234.5678.97", "R 2", "LOCAL_RECORD_ID_INVALID", "local_record_id"),
        (
            "756.1234.5678.97",
            &"R".repeat(65),
            "LOCAL_RECORD_ID_INVALID",
            "local_record_id",
        ),
        (
            "756.1234.5678.97",
            "756.1234.5678.97",
            "LOCAL_RECORD_ID_IS_AVS",
            "local_record_id",
        ),
        // R-1 holds another person; this person is already R-1.
        ("756.1234.5678.97", "R-1", "LOCAL_RECORD_ID_TAKEN", "local_record_id"),
    ];
    for (avs, record, code, field) in cases {
        let err = enrol(&net, 0, avs, record).await.expect_err(code);
        assert_eq!(error_code(&err).as_deref(), Some(code), "{avs} {record}: {err:?}");
        assert_eq!(error_field(&err).as_deref(), Some(field), "{code}");
        assert!(
            !err.message().contains("1234"),
            "{code}: the message must not echo the number"
        );
    }
    let err = enrol(&net, 0, "7569217076985", "R-9")
        .await
        .expect_err("same person, other record");
    assert_eq!(error_code(&err).as_deref(), Some("PERSON_ALREADY_ENROLLED"));
    assert!(err.message().contains("R-1"), "{err:?}");
    // That one reached the gateway (the node learns the pseudonym only from it): one entry.
    assert_eq!(log_size(&net).await, before + 1);

    // The gateway's own checks, called directly with ORP's certificate and a user token.
    let party = PeerIdentity::Institution(net.node(0).member.id.clone());
    let token = net.token(0, "anna.meier", &[Role::Caseworker]);
    let mut gateway = GatewayClient::new(net.gateway_channel_as(&party));
    let not_a_point = vec![0xff; 64];
    for (origin, code, field) in [
        (None, "FIELD_REQUIRED", "origin"),
        (Some(vec![1; 63]), "CIPHERTEXT_LENGTH", "origin.ciphertext"),
        (Some(not_a_point), "CIPHERTEXT_INVALID", "origin.ciphertext"),
    ] {
        let request = gw::EnrolRequest {
            origin: origin.map(|ciphertext| EncryptedPseudonym { ciphertext }),
        };
        let err = gateway.enrol(with_token(request, &token)).await.expect_err(code);
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(error_code(&err).as_deref(), Some(code));
        assert_eq!(error_field(&err).as_deref(), Some(field));
    }
    assert_eq!(log_size(&net).await, before + 1, "refused calls wrote nothing");
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    assert!(
        metrics.contains("cii_refusals_total{code=\"CIPHERTEXT_LENGTH\"} 1"),
        "{metrics}"
    );
    let dir = net.stop().await;
    let store = node_store(dir.path(), "ORP-VS").await;
    assert_eq!(store.by_record("R-2").await.expect("lookup"), None, "nothing stored");
    // The node witnessed both receipts (the second through a consistency proof from the gateway).
    let (note, alarm) = store
        .witness()
        .await
        .expect("witness")
        .expect("a checkpoint was accepted");
    assert!(!alarm);
    assert!(
        note.lines().nth(1) == Some(&(before + 1).to_string()),
        "newest checkpoint covers both: {note}"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_is_rate_limited_per_institution() {
    let options = Options {
        enrolment_limit: Some((1, 3)),
        ..Options::default()
    };
    let net = Network::start_with(&two_members(), options).await;
    let people = ["7561234567897", "7569217076985", "7560000000019", "7560000000026"];
    for (n, avs) in people.iter().take(3).enumerate() {
        enrol(&net, 0, avs, &format!("R-{n}")).await.expect("within the burst");
    }
    let err = enrol(&net, 0, people[3], "R-3").await.expect_err("beyond the burst");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(error_code(&err).as_deref(), Some("ENROLMENT_RATE_LIMITED"));
    assert!(err.message().contains("retry in"), "{err:?}");
    // Another institution has its own allowance.
    enrol(&net, 1, people[3], "AI-1").await.expect("AI's own bucket");
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    assert!(
        metrics.contains("cii_refusals_total{code=\"ENROLMENT_RATE_LIMITED\"} 1"),
        "{metrics}"
    );
    // Every accepted enrolment is logged, by the institution that made it; the refused one
    // disclosed nothing and has no entry (it is counted above).
    let dir = net.stop().await;
    let enrolments: Vec<String> = cii_tests::audit_entries(dir.path())
        .await
        .into_iter()
        .filter(|e| e.kind == cii_audit::EntryKind::Enrolment as i32)
        .map(|e| e.sender)
        .collect();
    assert_eq!(enrolments, ["ORP-VS", "ORP-VS", "ORP-VS", "AI-VS"]);
}
