//! Consent changes through the held pattern: the registry records a change held, the gateway
//! logs it, then activates it. A gateway stopped between the registry's commit and the log (a
//! failpoint, compiled for tests only, stops the handler there as a crash would) leaves the
//! change held — a held new consent covers nothing, a held revocation is in force at once —
//! and the restarted gateway completes it: exactly one entry each, also when the entry was
//! written but the activation was not.

use cii_gateway::failpoints::{self, Point};
use cii_proto::consent::{self as registry_pb, consent_registry_client::ConsentRegistryClient};
use cii_proto::node as node_pb;
use cii_tests::with_token;
use cii_types::{PeerIdentity, Role};

use crate::{node, two};

const USER: &str = "consent.officer";

async fn held(net: &cii_tests::Network) -> Vec<registry_pb::HeldChangeRecord> {
    ConsentRegistryClient::new(net.consent_channel_as(&PeerIdentity::Gateway))
        .list_held_changes(registry_pb::ListHeldChangesRequest { limit: 0 })
        .await
        .expect("held changes")
        .into_inner()
        .changes
}

/// The consents of the person as ORP's node lists them.
async fn listed(net: &cii_tests::Network, token: &str) -> Vec<registry_pb::ConsentRecord> {
    node(net, 0)
        .list_consents(with_token(
            node_pb::ListConsentsRequest {
                local_record_id: "ORP-VS-1".into(),
            },
            token,
        ))
        .await
        .expect("list")
        .into_inner()
        .consents
}

/// The entries of `kind` naming `version` (`id@n`) in the log.
async fn entries(net: &cii_tests::Network, kind: cii_audit::EntryKind, version: &str) -> usize {
    cii_tests::audit_entries(net.dir.path())
        .await
        .iter()
        .filter(|e| e.kind == kind as i32 && e.consents == [version.to_owned()])
        .count()
}

/// Records the declaration through ORP's node with `point` armed: the one change left held.
async fn stopped_at(net: &cii_tests::Network, token: &str, point: Point) -> registry_pb::HeldChangeRecord {
    failpoints::arm(point, &format!("{USER}@ORP-VS"));
    node(net, 0)
        .record_consent(with_token(
            node_pb::RecordConsentRequest {
                local_record_id: "ORP-VS-1".into(),
                consent: Some(cii_tests::consent_declaration()),
            },
            token,
        ))
        .await
        .expect_err("stopped at the failpoint");
    let pending = held(net).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    pending.into_iter().next().expect("one held change")
}

/// Restarts the gateway and waits until it has completed every held change.
async fn restart_and_complete(net: &mut cii_tests::Network) {
    net.restart_gateway(|_| {}).await;
    for _ in 0..100 {
        if held(net).await.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("held changes left after the restart: {:?}", held(net).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_stopped_between_the_registry_and_the_log_completes_each_change_once() {
    let mut net = cii_tests::Network::start(&two()).await;
    crate::enrol_both(&net).await;
    let token = net.token(0, USER, &[Role::Caseworker]);
    let acting_user = format!("{USER}@ORP-VS");

    // 1. Stopped after the registry's commit: held, covering nothing, not logged.
    let pending = stopped_at(&net, &token, Point::ConsentAfterRegistry).await;
    let first = format!("{}@{}", pending.consent_id, pending.version);
    assert!(listed(&net, &token).await.is_empty(), "a held consent covers nothing");
    assert_eq!(entries(&net, cii_audit::EntryKind::ConsentRecorded, &first).await, 0);
    restart_and_complete(&mut net).await;
    assert_eq!(entries(&net, cii_audit::EntryKind::ConsentRecorded, &first).await, 1);
    let active = listed(&net, &token).await;
    assert_eq!(active.len(), 1, "activated once logged");
    assert_eq!(active[0].status, registry_pb::ConsentStatus::ConsentActive as i32);

    // 2. Stopped after the log, before the activation: the restart finds the entry, adds none.
    let pending = stopped_at(&net, &token, Point::ConsentAfterLog).await;
    let second = format!("{}@{}", pending.consent_id, pending.version);
    assert_eq!(entries(&net, cii_audit::EntryKind::ConsentRecorded, &second).await, 1);
    restart_and_complete(&mut net).await;
    assert_eq!(
        entries(&net, cii_audit::EntryKind::ConsentRecorded, &second).await,
        1,
        "the restart found the entry: no second one"
    );
    assert_eq!(listed(&net, &token).await.len(), 2);

    // 3. A revocation stopped after the registry's commit is in force at once.
    let consent_id = pending.consent_id.clone();
    failpoints::arm(Point::ConsentAfterRegistry, &acting_user);
    node(&net, 0)
        .revoke_consent(with_token(
            node_pb::RevokeConsentRequest {
                consent_id: consent_id.clone(),
                local_record_id: "ORP-VS-1".into(),
                channel: "in_person".into(),
            },
            &token,
        ))
        .await
        .expect_err("stopped at the failpoint");
    let revoked = format!("{consent_id}@2");
    let status = |list: &[registry_pb::ConsentRecord]| {
        list.iter()
            .find(|c| c.consent_id == consent_id)
            .map(|c| (c.version, c.status))
    };
    assert_eq!(
        status(&listed(&net, &token).await),
        Some((2, registry_pb::ConsentStatus::ConsentRevoked as i32)),
        "a held revocation already counts"
    );
    assert_eq!(entries(&net, cii_audit::EntryKind::ConsentRevoked, &revoked).await, 0);
    restart_and_complete(&mut net).await;
    assert_eq!(entries(&net, cii_audit::EntryKind::ConsentRevoked, &revoked).await, 1);
    // Every change of this test has exactly its one entry, and the log verifies.
    let dir = net.stop().await;
    let report = crate::log::verify(dir.path()).await;
    assert!(report.undecodable.is_empty(), "{report:?}");
}
