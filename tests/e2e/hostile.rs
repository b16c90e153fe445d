//! Hostile peers at the gateway's door: no client certificate, a TLS 1.2
//! downgrade, an oversized message. Each is refused with a stable, countable
//! reason, and nothing is stored or delivered. (Other hostile inputs have
//! their tests beside the feature: foreign and revoked certificates and
//! another institution's name in foundation.rs, ciphertexts that are not
//! curve points, reused transfer ids and unknown payload fields in
//! exchanges.rs, enrolment floods in enrolment.rs.)

use cii_proto::gateway::{self as gw, gateway_client::GatewayClient};
use cii_tests::{Network, member, with_token};
use cii_types::{InstitutionType, PeerIdentity, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn members() -> Vec<cii_tests::Member> {
    vec![
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_at_the_handshake() {
    let net = Network::start(&members()).await;
    let policy = cii_kit::tls::PeerPolicy::only(PeerIdentity::Gateway, |_| false);
    // Trusts the network's CA but presents no certificate of its own.
    let config = cii_kit::tls::api_client_config(&net.pki().join("ca.pem"), policy).expect("config");
    let channel = cii_kit::tls::channel(&format!("https://{}", net.gateway), config).expect("channel");
    let err = GatewayClient::new(channel)
        .who_am_i(gw::WhoAmIRequest {})
        .await
        .expect_err("no certificate, no call");
    // In TLS 1.3 the client may finish its side of the handshake before the server's alert
    // arrives: it then sees the alert, the connection closing or a broken pipe under its
    // request — a transport error in every case, never an answer of ours (no code).
    assert!(std::error::Error::source(&err).is_some(), "a transport error: {err:?}");
    assert_eq!(cii_kit::grpc::error_code(&err), None, "{err:?}");
    // The server's count is the proof that the handshake, not a handler, refused it.
    assert!(
        cii_tests::metrics_eventually_contain(net.gateway_metrics, "cii_tls_refusals_total{code=\"no_certificate\"} 1")
            .await,
        "the refusal is counted as no_certificate"
    );
    net.stop().await;
}

/// A TLS 1.2 ClientHello (no `supported_versions` extension): a TLS 1.3-only
/// server must answer with a fatal `protocol_version` alert.
fn tls12_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x03]; // client_version TLS 1.2
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2f, 0xc0, 0x2b]); // ECDHE-RSA/ECDSA-AES128-GCM-SHA256
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut extensions = Vec::new();
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]); // supported_groups: x25519
    extensions.extend_from_slice(&[0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]); // signature_algorithms: ecdsa_secp256r1_sha256
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls12_downgrade_gets_a_protocol_version_alert() {
    let net = Network::start(&members()).await;
    let inbound = net.node(0).inbound;
    for addr in [net.gateway, inbound] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&tls12_client_hello()).await.expect("hello");
        let mut answer = [0u8; 7];
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_exact(&mut answer))
            .await
            .expect("an answer")
            .expect("read");
        // Alert record, fatal (2), protocol_version (70).
        assert_eq!(answer[0], 0x15, "{addr}: an alert record: {answer:?}");
        assert_eq!(&answer[5..], &[2, 70], "{addr}: fatal protocol_version: {answer:?}");
    }
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    assert!(
        metrics.contains("cii_tls_refusals_total{code=\"protocol\"} 1"),
        "{metrics}"
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_transfer_is_refused_and_nothing_is_stored() {
    let net = Network::start(&members()).await;
    let orp = PeerIdentity::Institution(net.node(0).member.id.clone());
    let token = net.token(0, "caseworker.1", &[Role::Caseworker]);
    let before = net.audit_size(&orp).await;
    let request = gw::TransferRequest {
        transfer_id: "big-1".into(),
        counterparty: "AI-VS".into(),
        direction: gw::transfer_request::Direction::Push as i32,
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/cii.exchange.v1.EarlyDetectionReport".into(),
            // A 5 MiB string field (health_limitations, number 4).
            value: {
                let text = vec![b'a'; 5 << 20];
                let mut v = vec![0x22];
                let mut n = text.len();
                while n >= 0x80 {
                    v.push((n as u8 & 0x7f) | 0x80);
                    n >>= 7;
                }
                v.push(n as u8);
                v.extend_from_slice(&text);
                v
            },
        }),
        attested_facts: vec![
            "person_informed_before".into(),
            "incapacity_for_work_or_threatened".into(),
        ],
        ..gw::TransferRequest::default()
    };
    let err = GatewayClient::new(net.gateway_channel_as(&orp))
        .max_encoding_message_size(16 << 20)
        .submit_transfer(with_token(request, &token))
        .await
        .expect_err("too large");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert_eq!(
        cii_kit::grpc::error_code(&err).as_deref(),
        Some("MESSAGE_TOO_LARGE"),
        "{err:?}"
    );
    let metrics = cii_tests::fetch_metrics(net.gateway_metrics).await;
    assert!(
        metrics.contains("cii_refusals_total{code=\"MESSAGE_TOO_LARGE\"} 1"),
        "{metrics}"
    );
    assert_eq!(net.audit_size(&orp).await, before, "nothing was logged");
    // The transfer id is not taken: the gateway never saw the request.
    let answer = GatewayClient::new(net.gateway_channel_as(&orp))
        .get_transfer(with_token(
            gw::GetTransferRequest {
                transfer_id: "big-1".into(),
            },
            &token,
        ))
        .await
        .expect_err("unknown transfer");
    assert_eq!(
        cii_kit::grpc::error_code(&answer).as_deref(),
        Some("TRANSFER_NOT_FOUND")
    );
    net.stop().await;
}
