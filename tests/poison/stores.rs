//! Stores nobody else can read: every database a network's processes create is 0600,
//! and a node keeps what it sent and received sealed under its store key.

use cii_proto::gateway as gw;
use cii_tests::{Network, with_token};
use cii_types::Role;

use crate::{node, two};

const HEALTH: &str = "HEALTH-AT-REST-5k";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_are_private_and_payloads_sealed_at_rest() {
    let net = Network::start(&two()).await;
    crate::enrol_both(&net).await;
    let report = crate::report("t-rest", HEALTH);
    let sent = node(&net, 0)
        .send(with_token(report, &net.token(0, "caseworker.1", &[Role::Caseworker])))
        .await
        .expect("send")
        .into_inner();
    assert_eq!(sent.state, gw::transfer_response::State::Delivered as i32, "{sent:?}");
    let dir = net.stop().await;
    let mut databases = Vec::new();
    let mut pending = vec![dir.path().to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().contains(".db") {
                databases.push(path);
            }
        }
    }
    assert!(
        databases.len() >= 4,
        "gateway, audit, consent and node stores: {databases:?}"
    );
    for path in &databases {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
        }
        let bytes = std::fs::read(path).expect("read");
        assert!(
            !bytes.windows(HEALTH.len()).any(|w| w == HEALTH.as_bytes()),
            "the payload in clear in {}",
            path.display()
        );
    }
}
