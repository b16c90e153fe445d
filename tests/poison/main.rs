//! Requests that tried to poison the network, on real processes: the audit log that one
//! query could make unreadable, pulls replayed for fresh data, deliveries one item could
//! block, node stores left readable. Each attack is kept as a test that shows it refused
//! or harmless; docs/security.md names them.

mod consent_held;
mod log;
mod outbox;
mod pg_roles;
mod receipts;
mod replay;
mod retention;
mod stores;
mod witnesses;

use cii_proto::node::node_client::NodeClient;
use cii_types::{InstitutionType, PeerIdentity};

fn two() -> [cii_tests::Member; 2] {
    [
        cii_tests::member("ORP-VS", InstitutionType::AcOrp),
        cii_tests::member("AI-VS", InstitutionType::Ai),
    ]
}

fn node(net: &cii_tests::Network, i: usize) -> NodeClient<tonic::transport::Channel> {
    NodeClient::new(net.node_api_channel(i))
}

fn peer(net: &cii_tests::Network, i: usize) -> PeerIdentity {
    PeerIdentity::Institution(net.node(i).member.id.clone())
}

/// Enrols the same person at both members, as `ORP-VS-1` and `AI-VS-1`.
async fn enrol_both(net: &cii_tests::Network) {
    for (i, record) in [(0, "ORP-VS-1"), (1, "AI-VS-1")] {
        node(net, i)
            .enrol(cii_tests::with_token(
                cii_proto::node::EnrolRequest {
                    avs_number: "756.1234.5678.97".into(),
                    local_record_id: record.into(),
                },
                &net.token(i, "caseworker.1", &[cii_types::Role::Caseworker]),
            ))
            .await
            .expect("enrol");
    }
}

/// An early-detection report from ORP-VS to AI-VS about `ORP-VS-1` (permitted: the person
/// was informed before), carrying `health`.
fn report(transfer_id: &str, health: &str) -> cii_proto::node::SendRequest {
    use prost::Message;
    cii_proto::node::SendRequest {
        transfer_id: transfer_id.into(),
        recipient: "AI-VS".into(),
        local_record_id: "ORP-VS-1".into(),
        trigger: cii_proto::gateway::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/cii.exchange.v1.EarlyDetectionReport".into(),
            value: cii_proto::exchange::EarlyDetectionReport {
                health_limitations: health.into(),
                ..cii_proto::exchange::EarlyDetectionReport::default()
            }
            .encode_to_vec(),
        }),
        attested_facts: vec![
            "person_informed_before".into(),
            "incapacity_for_work_or_threatened".into(),
        ],
        case_reference: "case-1".into(),
        ..cii_proto::node::SendRequest::default()
    }
}
