//! The adversarial suite: each attack a dishonest member (a valid certificate and
//! its own identity provider) or a hostile client tried on a real network, kept as
//! a test that shows it refused with its stable code and leaving a trace.
//! docs/security.md lists the attacks and names these tests.

use std::time::Duration;

use cii_kit::grpc::error_code;
use cii_proto::audit::{ApplyRetentionRequest, QueryRequest, audit_client::AuditClient};
use cii_proto::gateway::{self as gw, gateway_client::GatewayClient};
use cii_proto::node::{self as pb, node_client::NodeClient};
use cii_tests::{Network, Options, RegistrySpec, member, with_token};
use cii_types::access::{Access, RPCS};
use cii_types::{InstitutionType, PeerIdentity, Role};
use jsonwebtoken::Algorithm;

fn two() -> [cii_tests::Member; 2] {
    [
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
    ]
}

fn node(net: &Network, i: usize) -> NodeClient<tonic::transport::Channel> {
    NodeClient::new(net.node_api_channel(i))
}

fn peer(net: &Network, i: usize) -> PeerIdentity {
    PeerIdentity::Institution(net.node(i).member.id.clone())
}

/// The claims a member's identity provider signs; `edit` changes them.
fn claims(net: &Network, i: usize, edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = serde_json::json!({
        "iss": net.node(i).member.id.as_str(),
        "aud": cii_tests::NETWORK_ID,
        "sub": "mallory",
        "iat": now,
        "exp": now + 300,
        "roles": ["caseworker"],
    });
    edit(&mut claims);
    claims
}

/// A token signed with member `i`'s registered development key.
fn signed(net: &Network, i: usize, claims: &serde_json::Value) -> String {
    let key = std::fs::read(cii_kit::pki::jwt_private_key(&net.pki(), &net.node(i).member.id)).expect("jwt key");
    cii_tests::mint_raw(&key, Algorithm::EdDSA, "dev-1", claims)
}

async fn entries_of_kind(net: &Network, kind: cii_audit::EntryKind) -> Vec<cii_audit::Entry> {
    cii_tests::audit_entries(net.dir.path())
        .await
        .into_iter()
        .filter(|e| e.kind == kind as i32)
        .collect()
}

/// Waits until `ready` holds, up to 10 s (registry reloads poll every second).
async fn eventually<F: std::future::Future<Output = bool>>(mut ready: impl FnMut() -> F) -> bool {
    for _ in 0..100 {
        if ready().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// ORP-VS mints `network_dpo` and `operator` for itself: its own node and the gateway
/// refuse, the gateway counts it and logs it as a refused access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_granted_network_roles_are_refused_counted_and_logged() {
    let net = Network::start(&two()).await;
    let network_dpo = net.token(0, "mallory", &[Role::NetworkDpo]);
    let operator = net.token(0, "mallory", &[Role::Operator]);

    let err = node(&net, 0)
        .apply_audit_retention(with_token(ApplyRetentionRequest { dry_run: true }, &operator))
        .await
        .expect_err("its own node refuses");
    assert_eq!(error_code(&err).as_deref(), Some("ROLE_NOT_GRANTED"));

    // A dishonest member bypasses its node and calls the gateway with its certificate.
    let mut audit = AuditClient::new(net.gateway_channel_as(&peer(&net, 0)));
    let err = audit
        .query(with_token(QueryRequest::default(), &network_dpo))
        .await
        .expect_err("not a network dpo");
    assert_eq!(error_code(&err).as_deref(), Some("ROLE_NOT_GRANTED"));
    let err = audit
        .apply_retention(with_token(ApplyRetentionRequest { dry_run: true }, &operator))
        .await
        .expect_err("not an operator");
    assert_eq!(error_code(&err).as_deref(), Some("ROLE_NOT_GRANTED"));

    assert!(
        eventually(|| async { entries_of_kind(&net, cii_audit::EntryKind::AccessRefused).await.len() == 2 }).await,
        "each refused call is an entry"
    );
    let logged = entries_of_kind(&net, cii_audit::EntryKind::AccessRefused).await;
    assert!(logged.iter().all(|e| e.sender == "ORP-VS"));
    assert!(
        logged[0].detail.contains("/cii.audit.v1.Audit/Query"),
        "{}",
        logged[0].detail
    );
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    assert!(
        metrics.contains("cii_auth_refusals_total{code=\"ROLE_NOT_GRANTED\"} 2"),
        "{metrics}"
    );
    net.stop().await;
}

/// A token with only `jurist` reads no inbox, at the node or at the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jurist_reads_no_inbox() {
    let net = Network::start(&two()).await;
    let jurist = net.token(1, "jurist.1", &[Role::Jurist]);
    let err = node(&net, 1)
        .list_inbox(with_token(pb::ListInboxRequest::default(), &jurist))
        .await
        .expect_err("not a caseworker");
    assert_eq!(error_code(&err).as_deref(), Some("ROLE_REQUIRED"));
    let err = GatewayClient::new(net.gateway_channel_as(&peer(&net, 1)))
        .acknowledge_deliveries(with_token(gw::AcknowledgeDeliveriesRequest::default(), &jurist))
        .await
        .expect_err("not a caseworker");
    assert_eq!(error_code(&err).as_deref(), Some("ROLE_REQUIRED"));
    // The role is checked before the request is even decoded: garbage gets the same answer.
    let err = cii_tests::raw_unary(
        net.node_api_channel(1),
        "/cii.node.v1.Node/ListInbox",
        vec![0xff; 64],
        &jurist,
    )
    .await
    .expect_err("refused");
    assert_eq!(error_code(&err).as_deref(), Some("ROLE_REQUIRED"));
    net.stop().await;
}

/// Tokens a careless or dishonest identity provider could issue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_from_a_members_own_provider_are_refused() {
    let net = Network::start(&two()).await;
    let cases = [
        (
            "a ten-year token",
            claims(&net, 0, |c| {
                c["exp"] = (c["iat"].as_i64().unwrap() + 10 * 365 * 86_400).into()
            }),
            "JWT_LIFETIME",
        ),
        (
            "no iat, so no lifetime",
            claims(&net, 0, |c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            "JWT_LIFETIME",
        ),
        (
            "a sub posing as another institution's user",
            claims(&net, 0, |c| c["sub"] = "anna.meier@AI-VS".into()),
            "JWT_CLAIM_INVALID",
        ),
        (
            "another network's audience",
            claims(&net, 0, |c| c["aud"] = "cii.other".into()),
            "JWT_AUDIENCE",
        ),
        (
            "no audience",
            claims(&net, 0, |c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "JWT_AUDIENCE",
        ),
    ];
    for (what, claims, code) in cases {
        let token = signed(&net, 0, &claims);
        let at_node = node(&net, 0)
            .status(with_token(pb::StatusRequest {}, &token))
            .await
            .expect_err(what);
        assert_eq!(error_code(&at_node).as_deref(), Some(code), "{what} at the node");
        let at_gateway = GatewayClient::new(net.gateway_channel_as(&peer(&net, 0)))
            .who_am_i(with_token(gw::WhoAmIRequest {}, &token))
            .await
            .expect_err(what);
        assert_eq!(error_code(&at_gateway).as_deref(), Some(code), "{what} at the gateway");
    }
    // The audience as a list naming this network is accepted (RFC 7519 §4.1.3).
    let listed = signed(
        &net,
        0,
        &claims(&net, 0, |c| {
            c["aud"] = serde_json::json!(["cii.other", cii_tests::NETWORK_ID])
        }),
    );
    node(&net, 0)
        .status(with_token(pb::StatusRequest {}, &listed))
        .await
        .expect("an audience list naming the network");
    net.stop().await;
}

/// The identity providers cantons run sign RS256 (Entra ID, ADFS) or ES256 (Keycloak):
/// registered per key, accepted; the algorithm cannot be switched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_from_registered_keys_are_accepted() {
    let net = Network::start(&two()).await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/jwt");
    net.publish_registry(&RegistrySpec {
        version: 2,
        extra_keys: vec![
            (0, "entra-1".into(), "RS256".into(), fixtures.join("rs256.pub")),
            (0, "keycloak-1".into(), "ES256".into(), fixtures.join("es256.pub")),
        ],
        ..RegistrySpec::default()
    });
    let claims = claims(&net, 0, |_| {});
    let rs = cii_tests::mint_raw(
        &std::fs::read(fixtures.join("rs256.key")).unwrap(),
        Algorithm::RS256,
        "entra-1",
        &claims,
    );
    let es = cii_tests::mint_raw(
        &std::fs::read(fixtures.join("es256.key")).unwrap(),
        Algorithm::ES256,
        "keycloak-1",
        &claims,
    );
    let accepted = |token: String| {
        let mut client = node(&net, 0);
        async move { client.status(with_token(pb::StatusRequest {}, &token)).await.is_ok() }
    };
    assert!(
        eventually(|| accepted(rs.clone())).await,
        "RS256 accepted once registered"
    );
    assert!(accepted(es.clone()).await, "ES256 accepted");
    // An RS256 token presented under the ES256 key's id, and the public key used as an
    // HMAC secret (the classic confusion): refused.
    let swapped = cii_tests::mint_raw(
        &std::fs::read(fixtures.join("rs256.key")).unwrap(),
        Algorithm::RS256,
        "keycloak-1",
        &claims,
    );
    let err = node(&net, 0)
        .status(with_token(pb::StatusRequest {}, &swapped))
        .await
        .expect_err("wrong key for the algorithm");
    assert_eq!(error_code(&err).as_deref(), Some("JWT_BAD_SIGNATURE"));
    let hmac = cii_tests::mint_raw(
        &std::fs::read(fixtures.join("rs256.pub")).unwrap(),
        Algorithm::HS256,
        "entra-1",
        &claims,
    );
    let err = node(&net, 0)
        .status(with_token(pb::StatusRequest {}, &hmac))
        .await
        .expect_err("HS256 is never accepted");
    assert_eq!(error_code(&err).as_deref(), Some("JWT_ALGORITHM"));
    net.stop().await;
}

/// A revocation in a new registry reaches a connection opened before it; replaying the
/// older registry (validly signed) does not undo it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_open_connections_and_an_older_registry_is_refused() {
    let net = Network::start(&two()).await;
    let token = net.token(1, "caseworker.1", &[Role::Caseworker]);
    // One channel, one HTTP/2 connection, opened and used before the revocation.
    let mut open = GatewayClient::new(net.gateway_channel_as(&peer(&net, 1)));
    open.who_am_i(with_token(gw::WhoAmIRequest {}, &token))
        .await
        .expect("before the revocation");
    net.publish_registry(&RegistrySpec {
        version: 2,
        revoked: vec![1],
        ..RegistrySpec::default()
    });
    let refused = |mut client: GatewayClient<tonic::transport::Channel>, token: String| async move {
        match client.who_am_i(with_token(gw::WhoAmIRequest {}, &token)).await {
            Err(e) => error_code(&e).as_deref() == Some("CLIENT_CERT_REVOKED"),
            Ok(_) => false,
        }
    };
    assert!(
        eventually(|| refused(open.clone(), token.clone())).await,
        "the open connection is refused within the poll interval"
    );
    // The activation is on record.
    let activations = entries_of_kind(&net, cii_audit::EntryKind::RegistryActivated).await;
    assert!(
        activations.iter().any(|e| e.detail.ends_with("version=2")),
        "{activations:?}"
    );

    // The old file, validly signed, replayed: refused, the revocation holds.
    net.publish_registry(&RegistrySpec {
        version: 1,
        ..RegistrySpec::default()
    });
    assert!(
        cii_tests::metrics_eventually_contain(
            net.gateway_metrics,
            "cii_refusals_total{code=\"REGISTRY_VERSION_LOWER\"} 1"
        )
        .await,
        "the lower version is refused and counted"
    );
    assert!(refused(open.clone(), token.clone()).await, "still revoked");
    // A registry signed by anybody but the network's key is refused too.
    std::fs::write(
        cii_kit::registry::signed::signature_file(&net.dir.path().join("registry.toml")),
        [0u8; 64],
    )
    .unwrap();
    assert!(
        cii_tests::metrics_eventually_contain(
            net.gateway_metrics,
            "cii_refusals_total{code=\"REGISTRY_SIGNATURE_INVALID\"} 1"
        )
        .await
    );
    net.stop().await;
}

/// Paths nobody routes do not become metric labels (which would grow memory without bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_from_unknown_paths_stay_bounded() {
    let net = Network::start(&two()).await;
    let token = net.token(0, "mallory", &[Role::Caseworker]);
    for i in 0..50 {
        let path: &'static str = Box::leak(format!("/cii.node.v1.Node/Probe{i}").into_boxed_str());
        let err = cii_tests::raw_unary(net.node_api_channel(0), path, Vec::new(), &token)
            .await
            .expect_err("no such rpc");
        assert_eq!(error_code(&err).as_deref(), Some("RPC_NOT_LISTED"));
    }
    let metrics = cii_tests::fetch_metrics(net.node(0).metrics).await;
    assert!(!metrics.contains("Probe"), "{metrics}");
    assert!(metrics.contains("rpc=\"unlisted\"} 50"), "{metrics}");
    net.stop().await;
}

/// A flood on Send hits the institution's transfer limit, with the delay to wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_send_is_rate_limited() {
    let net = Network::start_with(
        &two(),
        Options {
            limits: Some("[limits]\ntransfers = { per_minute = 6, burst = 5 }\n\n".into()),
            ..Options::default()
        },
    )
    .await;
    let token = net.token(0, "mallory", &[Role::Caseworker]);
    let mut limited = Vec::new();
    for _ in 0..20 {
        // Empty requests: the limit is taken before decoding, so garbage counts too.
        if let Err(e) = node(&net, 0).send(with_token(pb::SendRequest::default(), &token)).await
            && error_code(&e).as_deref() == Some("RATE_LIMITED")
        {
            limited.push(e);
        }
    }
    assert_eq!(limited.len(), 15, "the burst of 5 passes, the rest waits");
    let wait: u64 = limited[0]
        .metadata()
        .get(cii_kit::status::RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms");
    assert!(wait > 0 && wait <= 10_000, "{wait}");
    // The gateway's own limit holds for a member that bypasses its node.
    let mut gateway = GatewayClient::new(net.gateway_channel_as(&peer(&net, 1)));
    let codes: Vec<Option<String>> = futures_codes(&mut gateway, &net.token(1, "mallory", &[Role::Caseworker])).await;
    assert_eq!(
        codes.iter().filter(|c| c.as_deref() == Some("RATE_LIMITED")).count(),
        15
    );
    net.stop().await;
}

async fn futures_codes(gateway: &mut GatewayClient<tonic::transport::Channel>, token: &str) -> Vec<Option<String>> {
    let mut codes = Vec::new();
    for _ in 0..20 {
        let answer = gateway
            .submit_transfer(with_token(gw::TransferRequest::default(), token))
            .await;
        codes.push(answer.err().and_then(|e| error_code(&e)));
    }
    codes
}

/// Every rpc of the table refuses a user exactly when the table says their role is not
/// among its roles, at the node and at the gateway (a member granted every role, one
/// role per token, requests that are empty or garbage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_exactly_the_roles_the_table_excludes() {
    let net = Network::start_with(
        &two(),
        Options {
            network_roles: vec![0],
            ..Options::default()
        },
    )
    .await;
    let mut checked = 0;
    for cii_types::access::Row { path, access, .. } in RPCS {
        let Access::Users(needed) = access else {
            continue;
        };
        let channel = if path.starts_with("/cii.node.v1.Node/") {
            net.node_api_channel(0)
        } else if path.starts_with("/cii.consent.") || path.starts_with("/cii.node.v1.NodeInbound/") {
            continue; // peers only (the gateway's certificate): no user rows
        } else {
            net.gateway_channel_as(&peer(&net, 0))
        };
        for role in Role::ALL {
            let token = net.token(0, "probe", &[role]);
            let answer = cii_tests::raw_unary(channel.clone(), path, vec![0xff; 8], &token).await;
            let code = answer.err().and_then(|e| error_code(&e));
            let refused = code.as_deref() == Some("ROLE_REQUIRED");
            assert_eq!(refused, !needed.contains(&role), "{path} as {role}: {code:?}");
            assert!(
                !matches!(code.as_deref(), Some(c) if c.starts_with("JWT_") || c == "ROLE_NOT_GRANTED"),
                "{path} as {role}: {code:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked}");
    net.stop().await;
}

/// The AI office's decision copy (LAI art. 68bis al. 5) goes only to an institution that
/// serves the person. Pushed for a person the social service serves and for one it does
/// not, the AI office is told the same thing both times, at once and later; only the
/// served person's copy arrives; the log holds the truth; the denial is counted for the
/// DPOs' alert; and a sender pushing such copies too fast is stopped before anything is
/// decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_push_answers_the_same_whether_or_not_the_recipient_serves_the_person() {
    use cii_proto::exchange as xt;
    use gw::transfer_response::State;
    use prost::Message;
    let members = [
        member("AI-VS", InstitutionType::Ai),
        member("AS-VS", InstitutionType::As),
    ];
    let net = Network::start_with(
        &members,
        Options {
            limits: Some("[limits]\nrelationship_pushes = { per_minute = 1, burst = 3 }\n\n".into()),
            ..Options::default()
        },
    )
    .await;
    let (ai, social) = (0, 1);
    let token = |i: usize| net.token(i, "caseworker.1", &[Role::Caseworker]);
    let persons = [cii_tests::synthetic_avs(1), cii_tests::synthetic_avs(2)];
    for (n, avs) in persons.iter().enumerate() {
        for i in [ai, social] {
            node(&net, i)
                .enrol(with_token(
                    pb::EnrolRequest {
                        avs_number: avs.clone(),
                        local_record_id: format!("p{n}"),
                    },
                    &token(i),
                ))
                .await
                .expect("enrol");
        }
    }
    // The social service serves the first person only (the reference directory says so).
    node(&net, social)
        .declare_relationship(with_token(
            pb::RelationshipRequest {
                local_record_id: "p0".into(),
                capacity: "social_aid".into(),
                at: None,
            },
            &token(social),
        ))
        .await
        .expect("relationship");
    let copy = prost_types::Any {
        type_url: "type.googleapis.com/cii.exchange.v1.DecisionCopy".into(),
        value: xt::DecisionCopy {
            person: None,
            decision: "quarter pension from 2026-10".into(),
        }
        .encode_to_vec(),
    };
    let send = |n: usize, id: &str| {
        with_token(
            pb::SendRequest {
                transfer_id: id.into(),
                recipient: "AS-VS".into(),
                local_record_id: format!("p{n}"),
                case_reference: "case-1".into(),
                trigger: gw::Trigger::MandatoryReport as i32,
                purpose: "benefit_coordination".into(),
                payload: Some(copy.clone()),
                attested_facts: vec!["decision_affects_recipient_benefits".into()],
                ..pb::SendRequest::default()
            },
            &token(ai),
        )
    };
    // What the sender may compare: everything but the id and the receipt's place.
    let seen = |mut answer: gw::TransferResponse| {
        let receipt = answer.receipt.take().expect("receipt");
        assert!(
            receipt.entry.is_empty() && !receipt.leaf_hash.is_empty(),
            "the entry is withheld"
        );
        answer.transfer_id.clear();
        answer
    };
    let served = node(&net, ai).send(send(0, "copy-0")).await.expect("push").into_inner();
    let unserved = node(&net, ai).send(send(1, "copy-1")).await.expect("push").into_inner();
    assert_eq!(State::try_from(served.state), Ok(State::Undisclosed));
    assert!(served.entry_withheld);
    let told = seen(served.clone());
    assert_eq!(told, seen(unserved.clone()), "the same answer served or not");
    let reasons = &told.decision.as_ref().expect("decision").reasons;
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].code, "DECISION_UNDISCLOSED");

    // Only the served person's copy arrives.
    let inbox = || async {
        node(&net, social)
            .list_inbox(with_token(pb::ListInboxRequest { limit: 10 }, &token(social)))
            .await
            .expect("inbox")
            .into_inner()
            .items
    };
    assert!(
        eventually(|| async { !inbox().await.is_empty() }).await,
        "the copy arrives"
    );
    let items = inbox().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].local_record_id, "p0");

    // Read again, delivered or not, and retried: the same.
    let get = |id: &str| with_token(gw::GetTransferRequest { transfer_id: id.into() }, &token(ai));
    let again = node(&net, ai)
        .get_transfer(get("copy-0"))
        .await
        .expect("get")
        .into_inner();
    let other = node(&net, ai)
        .get_transfer(get("copy-1"))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(seen(again), seen(other.clone()));
    assert_eq!(State::try_from(other.state), Ok(State::Undisclosed));
    let retried = node(&net, ai)
        .send(send(0, "copy-0"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(seen(retried), told);
    // No obligation a permit alone would create is put on the sender.
    let obligations = node(&net, ai)
        .list_obligations(with_token(gw::ListObligationsRequest::default(), &token(ai)))
        .await
        .expect("obligations")
        .into_inner()
        .obligations;
    assert!(obligations.is_empty(), "{obligations:?}");

    // The log holds the truth, for the DPOs.
    let permitted = entries_of_kind(&net, cii_audit::EntryKind::TransferPermitted).await;
    let denied = entries_of_kind(&net, cii_audit::EntryKind::TransferDenied).await;
    assert!(permitted.iter().any(|e| e.transfer_id == "copy-0"));
    assert!(denied.iter().any(|e| e.transfer_id == "copy-1"));
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    for outcome in ["PERMIT", "DENY"] {
        let line = format!("cii_undisclosed_decisions_total{{sender=\"AI-VS\",outcome=\"{outcome}\"}} 1");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // Two of the burst of three are spent (the retry answered from the record, deciding
    // nothing): a third copy passes, the fourth waits, and nothing of it is logged.
    node(&net, ai).send(send(1, "copy-2")).await.expect("third");
    let size = net.audit_size(&peer(&net, ai)).await;
    let err = node(&net, ai).send(send(1, "copy-3")).await.expect_err("limited");
    assert_eq!(error_code(&err).as_deref(), Some("RATE_LIMITED"));
    assert!(err.metadata().get(cii_kit::status::RETRY_AFTER_MS).is_some());
    assert_eq!(
        net.audit_size(&peer(&net, ai)).await,
        size,
        "a refused probe logs nothing"
    );
    net.stop().await;
}

/// An institution's certificate is re-issued (`cii pki init` after removing the old pair):
/// its running node presents the new one to the next connection within the poll interval,
/// without a restart, and exchanges go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_presented_without_a_restart() {
    let net = Network::start(&two()).await;
    let orp = peer(&net, 0);
    let presented = || async {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let record = seen.clone();
        let policy = cii_kit::tls::PeerPolicy::new(
            |_| true,
            move |serial| {
                *record.lock().expect("lock") = cii_kit::registry::serial_hex(serial);
                false
            },
        );
        let config = cii_kit::tls::client_config(&net.identity(&PeerIdentity::Gateway), policy).expect("config");
        let tcp = tokio::net::TcpStream::connect(net.node(0).inbound)
            .await
            .expect("connect");
        tokio_rustls::TlsConnector::from(config)
            .connect(rustls::pki_types::ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake");
        seen.lock().expect("lock").clone()
    };
    let files = cii_kit::pki::party_files(&net.pki(), &orp);
    let old = cii_tests::cert_serial(&files.cert);
    assert_eq!(presented().await, old);
    std::fs::remove_file(&files.cert).expect("remove");
    std::fs::remove_file(&files.key).expect("remove");
    let PeerIdentity::Institution(id) = &orp else {
        unreachable!()
    };
    cii_kit::pki::init(
        &net.pki(),
        std::slice::from_ref(id),
        &[],
        &["localhost".into(), "127.0.0.1".into()],
    )
    .expect("re-issued");
    let new = cii_tests::cert_serial(&files.cert);
    assert_ne!(new, old);
    let renewed = || async { presented().await == new };
    assert!(eventually(renewed).await, "the new certificate is presented");
    // The node still exchanges: its IT's call goes through the gateway.
    let token = net.token(0, "caseworker.1", &[Role::Caseworker]);
    node(&net, 0)
        .enrol(with_token(
            pb::EnrolRequest {
                avs_number: cii_tests::synthetic_avs(7),
                local_record_id: "r7".into(),
            },
            &token,
        ))
        .await
        .expect("enrol after the renewal");
    net.stop().await;
}

/// The network's operator is a party that exchanges nothing: its own certificate, identity
/// provider and node, only the network's roles. Its network DPO reads the whole log and its
/// operator lists dead letters; a token of it claiming a member's role is refused and logged;
/// nobody can send it anything, and it can send nobody anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_that_exchanges_nothing_holds_only_the_network_roles() {
    use tokio_stream::StreamExt;
    let members = [
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
        member("OPS-VS", InstitutionType::Other),
    ];
    let net = Network::start_with(
        &members,
        Options {
            parties: vec![2],
            ..Options::default()
        },
    )
    .await;
    let ops = 2;
    // Its network DPO reads every entry, its operator the dead letters.
    let dpo = net.token(ops, "dpo.1", &[Role::NetworkDpo]);
    let mut stream = node(&net, ops)
        .query_audit(with_token(QueryRequest::default(), &dpo))
        .await
        .expect("network query")
        .into_inner();
    let mut entries = 0;
    while let Some(item) = stream.next().await {
        item.expect("entry");
        entries += 1;
    }
    assert!(entries >= 2, "the registry activation and more: {entries}");
    let operator = net.token(ops, "ops.1", &[Role::Operator]);
    node(&net, ops)
        .list_dead_letters(with_token(gw::ListDeadLettersRequest::default(), &operator))
        .await
        .expect("dead letters");
    // A member's role is never granted to it: refused and logged as a refused access.
    let caseworker = net.token(ops, "mallory", &[Role::Caseworker]);
    let err = node(&net, ops)
        .send(with_token(pb::SendRequest::default(), &caseworker))
        .await
        .expect_err("no caseworker");
    assert_eq!(error_code(&err).as_deref(), Some("ROLE_NOT_GRANTED"));
    let mut gateway = GatewayClient::new(net.gateway_channel_as(&peer(&net, ops)));
    let err = gateway
        .submit_transfer(with_token(gw::TransferRequest::default(), &caseworker))
        .await
        .expect_err("no caseworker at the gateway either");
    assert_eq!(error_code(&err).as_deref(), Some("ROLE_NOT_GRANTED"));
    assert!(
        eventually(|| async {
            entries_of_kind(&net, cii_audit::EntryKind::AccessRefused)
                .await
                .iter()
                .any(|e| e.detail.contains("OPS-VS") || e.sender == "OPS-VS")
        })
        .await,
        "the refused access is on record"
    );
    // Nothing goes to it: it is no counterparty.
    let token = net.token(0, "caseworker.1", &[Role::Caseworker]);
    let mut orp = GatewayClient::new(net.gateway_channel_as(&peer(&net, 0)));
    let err = orp
        .submit_transfer(with_token(
            gw::TransferRequest {
                transfer_id: "to-ops".into(),
                counterparty: "OPS-VS".into(),
                direction: gw::transfer_request::Direction::Push as i32,
                ..gw::TransferRequest::default()
            },
            &token,
        ))
        .await
        .expect_err("no such recipient");
    assert_eq!(error_code(&err).as_deref(), Some("COUNTERPARTY_UNKNOWN"), "{err:?}");
    net.stop().await;
}
