//! The network skeleton: mutual TLS, identities, tokens, health, reflection.

use cii_kit::grpc::error_code;
use cii_proto::gateway::{WhoAmIRequest, gateway_client::GatewayClient};
use cii_proto::node::{PingRequest, StatusRequest, node_client::NodeClient, node_inbound_client::NodeInboundClient};
use cii_tests::{Network, Options, identity_in, member, with_token};
use cii_types::{InstitutionType, PeerIdentity, Role};
use tonic::Code;

fn two_members() -> Vec<cii_tests::Member> {
    vec![
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
    ]
}

/// The call failed in the TLS handshake: no handler ran, no gRPC status code was produced.
fn assert_refused_at_handshake(err: &tonic::Status) {
    assert!(error_code(err).is_none(), "refused before any handler: {err:?}");
    assert_eq!(err.message(), "transport error", "{err:?}");
    assert!(format!("{err:?}").contains("received fatal alert"), "{err:?}");
}

fn party(net: &Network, i: usize) -> PeerIdentity {
    PeerIdentity::Institution(net.node(i).member.id.clone())
}

#[tokio::test]
async fn each_node_completes_an_authenticated_round_trip_with_the_gateway() {
    let net = Network::start(&two_members()).await;
    for i in 0..2 {
        let token = net.token(i, "anna.meier", &[Role::Caseworker]);
        let mut node = NodeClient::new(net.node_api_channel(i));
        let status = node
            .status(with_token(StatusRequest {}, &token))
            .await
            .expect("status")
            .into_inner();
        let seen = status.gateway.expect("gateway answer");
        assert_eq!(status.institution_id, net.node(i).member.id.as_str());
        assert_eq!(
            seen.institution_id,
            net.node(i).member.id.as_str(),
            "gateway derived the institution from the certificate"
        );
        assert_eq!(seen.institution_type, net.node(i).member.kind.as_str());
        assert_eq!(seen.user, "anna.meier");
        assert_eq!(seen.roles, vec!["caseworker".to_owned()]);
        assert!(seen.gateway_time.is_some());
    }
    net.stop().await;
}

#[tokio::test]
async fn health_reports_serving_and_reflection_lists_the_services() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let net = Network::start(&two_members()).await;
    let channel = net.gateway_channel_as(&party(&net, 0));
    // Alone on SQLite, the gateway sequences its log.
    for service in ["", "cii.gateway.v1.Gateway", cii_gateway::SEQUENCER_HEALTH] {
        let answer = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    assert!(
        list_services_v1(channel.clone())
            .await
            .contains(&"cii.gateway.v1.Gateway".to_owned())
    );
    assert!(
        list_services_v1alpha(channel)
            .await
            .contains(&"cii.gateway.v1.Gateway".to_owned())
    );
    assert!(
        list_services_v1(net.node_api_channel(0))
            .await
            .contains(&"cii.node.v1.Node".to_owned())
    );
    net.stop().await;
}

async fn list_services_v1(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    match stream
        .message()
        .await
        .expect("message")
        .and_then(|m| m.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn list_services_v1alpha(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    match stream
        .message()
        .await
        .expect("message")
        .and_then(|m| m.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let net = Network::start(&two_members()).await;
    let other = tempfile::tempdir().expect("tempdir");
    let orp = net.node(0).member.id.clone();
    cii_kit::pki::init(other.path(), std::slice::from_ref(&orp), &[], &["127.0.0.1".into()]).expect("other pki");
    // A client trusting our CA for the server, but presenting a certificate of the other CA.
    let foreign =
        identity_in(other.path(), &PeerIdentity::Institution(orp)).with_roots_of(&net.identity(&PeerIdentity::Gateway));
    let config = cii_kit::tls::client_config(
        &foreign,
        cii_kit::tls::PeerPolicy::only(PeerIdentity::Gateway, |_| false),
    )
    .expect("config");
    let channel = cii_kit::tls::channel(&format!("https://127.0.0.1:{}", net.gateway.port()), config).expect("channel");
    let token = net.token(0, "anna.meier", &[Role::Caseworker]);
    let err = GatewayClient::new(channel)
        .who_am_i(with_token(WhoAmIRequest {}, &token))
        .await
        .expect_err("must be refused");
    assert_refused_at_handshake(&err);
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    assert!(
        metrics.contains("cii_tls_refusals_total{code=\"unknown_ca\"} 1"),
        "{metrics}"
    );
    net.stop().await;
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_at_the_handshake() {
    let options = Options {
        revoke_member_certs: vec![0],
        ..Options::default()
    };
    let net = Network::start_with(&two_members(), options).await;
    let token = net.token(0, "anna.meier", &[Role::Caseworker]);
    let err = GatewayClient::new(net.gateway_channel_as(&party(&net, 0)))
        .who_am_i(with_token(WhoAmIRequest {}, &token))
        .await
        .expect_err("revoked");
    assert_refused_at_handshake(&err);
    assert!(format!("{err:?}").contains("CertificateRevoked"), "{err:?}");
    // The other member is unaffected.
    let token = net.token(1, "beat.kunz", &[Role::Caseworker]);
    GatewayClient::new(net.gateway_channel_as(&party(&net, 1)))
        .who_am_i(with_token(WhoAmIRequest {}, &token))
        .await
        .expect("not revoked");
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    assert!(
        metrics.contains("cii_tls_refusals_total{code=\"revoked\"} 1"),
        "{metrics}"
    );
    net.stop().await;
}

#[tokio::test]
async fn a_node_cannot_act_as_another_institution() {
    let net = Network::start(&two_members()).await;
    // ORP's certificate, with a token that AI really issued (signed with AI's key).
    let ai_token = net.token(1, "beat.kunz", &[Role::Caseworker]);
    let err = GatewayClient::new(net.gateway_channel_as(&party(&net, 0)))
        .who_am_i(with_token(WhoAmIRequest {}, &ai_token))
        .await
        .expect_err("impersonation");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(error_code(&err).as_deref(), Some("JWT_ISSUER_MISMATCH"));
    // The same through ORP's node API.
    let err = NodeClient::new(net.node_api_channel(0))
        .status(with_token(StatusRequest {}, &ai_token))
        .await
        .expect_err("impersonation via node");
    assert_eq!(error_code(&err).as_deref(), Some("JWT_ISSUER_MISMATCH"));
    net.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_clear_codes() {
    let net = Network::start(&two_members()).await;
    let now = time::OffsetDateTime::now_utc();
    let cases = [
        (
            "expired",
            Some(net.token_with(0, 0, "anna", &[Role::Caseworker], now - time::Duration::hours(1), 300)),
            "JWT_EXPIRED",
        ),
        (
            "wrongly signed",
            Some(net.token_with(0, 1, "anna", &[Role::Caseworker], now, 300)),
            "JWT_BAD_SIGNATURE",
        ),
        (
            "foreign issuer",
            Some(net.token(1, "anna", &[Role::Caseworker])),
            "JWT_ISSUER_MISMATCH",
        ),
        ("missing", None, "JWT_MISSING"),
        ("garbage", Some("not.a.jwt".to_owned()), "JWT_MALFORMED"),
        ("no roles", Some(net.token(0, "anna", &[])), "JWT_CLAIM_INVALID"),
    ];
    for (name, token, code) in cases {
        let request = match &token {
            Some(t) => with_token(WhoAmIRequest {}, t),
            None => tonic::Request::new(WhoAmIRequest {}),
        };
        let err = GatewayClient::new(net.gateway_channel_as(&party(&net, 0)))
            .who_am_i(request)
            .await
            .expect_err(name);
        assert_eq!(error_code(&err).as_deref(), Some(code), "{name}: {err:?}");
        assert!(
            matches!(err.code(), Code::Unauthenticated | Code::PermissionDenied),
            "{name}"
        );
        assert_eq!(cii_kit::grpc::error_field(&err).as_deref(), Some("authorization"));
        // The node's API refuses the same tokens before calling the gateway.
        let request = match &token {
            Some(t) => with_token(StatusRequest {}, t),
            None => tonic::Request::new(StatusRequest {}),
        };
        let err = NodeClient::new(net.node_api_channel(0))
            .status(request)
            .await
            .expect_err(name);
        assert_eq!(error_code(&err).as_deref(), Some(code), "node, {name}: {err:?}");
    }
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    assert!(
        metrics.contains("cii_auth_refusals_total{code=\"JWT_EXPIRED\"} 1"),
        "{metrics}"
    );
    net.stop().await;
}

#[tokio::test]
async fn clock_skew_beyond_the_leeway_is_refused() {
    let clock = cii_kit::clock::SkewedClock::default();
    let options = Options {
        gateway_clock: Some(std::sync::Arc::new(clock.clone())),
        ..Options::default()
    };
    let net = Network::start_with(&two_members(), options).await;
    let token = net.token_with(0, 0, "anna", &[Role::Caseworker], time::OffsetDateTime::now_utc(), 120);
    let call = || async {
        GatewayClient::new(net.gateway_channel_as(&party(&net, 0)))
            .who_am_i(with_token(WhoAmIRequest {}, &token))
            .await
    };
    clock.set_offset(150); // within 120 s lifetime + 60 s leeway
    call().await.expect("within leeway");
    clock.set_offset(200); // gateway runs ahead: the token looks expired
    assert_eq!(
        error_code(&call().await.expect_err("ahead")).as_deref(),
        Some("JWT_EXPIRED")
    );
    clock.set_offset(-90); // gateway runs behind: the token looks issued in the future
    assert_eq!(
        error_code(&call().await.expect_err("behind")).as_deref(),
        Some("JWT_NOT_YET_VALID")
    );
    net.stop().await;
}

#[tokio::test]
async fn the_inbound_api_admits_the_gateway_only() {
    let net = Network::start(&two_members()).await;
    let answer = NodeInboundClient::new(net.node_inbound_channel_as(0, &PeerIdentity::Gateway))
        .ping(PingRequest {})
        .await
        .expect("gateway may call")
        .into_inner();
    assert_eq!(answer.institution_id, "ORP-VS");
    // Another institution's valid certificate does not get through the handshake.
    let err = NodeInboundClient::new(net.node_inbound_channel_as(0, &party(&net, 1)))
        .ping(PingRequest {})
        .await
        .expect_err("institution may not call");
    assert_refused_at_handshake(&err);
    let metrics = cii_tests::fetch_metrics(net.node(0).metrics).await;
    assert!(
        metrics.contains("cii_tls_refusals_total{code=\"identity\"} 1"),
        "{metrics}"
    );
    net.stop().await;
}
