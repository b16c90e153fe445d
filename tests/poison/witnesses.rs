//! Forks detected by a quorum of witnesses (C2SP tlog-witness, tlog-cosignature): the two
//! nodes and one independent witness cosign each checkpoint only if it extends the last one
//! they cosigned, and a node accepts a receipt only on a checkpoint more than half of them
//! cosigned. A second gateway holding the same signing key but another history (here: the
//! log's store restored from an earlier copy, then grown apart) gets no quorum; the
//! witnesses keep both checkpoints as evidence.

use cii_audit::cosignature::Quorum;
use cii_kit::status::error_code;
use cii_proto::audit::audit_client::AuditClient;
use cii_proto::gateway::gateway_client::GatewayClient;
use cii_tests::with_token;
use cii_types::Role;

use crate::{node, peer, two};

const LOG_FILES: [&str; 3] = ["audit.db", "audit.db-wal", "audit.db-shm"];

/// The network's witnesses, as its registry lists them.
fn quorum(net: &cii_tests::Network) -> Quorum {
    let pki = net.pki();
    let mut vkeys = Vec::new();
    for i in 0..2 {
        let id = &net.node(i).member.id;
        vkeys.push(cii_tests::cosigner_vkey(
            &pki,
            &cii_types::PeerIdentity::Institution(id.clone()),
            &cii_tests::node_witness_name(id),
        ));
    }
    let name = cii_types::WitnessName::parse("w", cii_tests::WITNESS).expect("name");
    vkeys.push(cii_tests::cosigner_vkey(
        &pki,
        &cii_types::PeerIdentity::Witness(name),
        cii_tests::WITNESS,
    ));
    // The nodes, then the independent witness.
    Quorum::from_vkeys(vkeys.iter().enumerate().map(|(i, v)| (v.as_str(), i == 2))).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_history_under_the_same_key_gets_no_quorum_and_the_fork_is_kept_as_evidence() {
    let mut net = cii_tests::Network::start(&two()).await;
    crate::enrol_both(&net).await;
    let caseworker = net.token(0, "caseworker.1", &[Role::Caseworker]);
    let first = node(&net, 0)
        .send(with_token(crate::report("fork-1", "reduced capacity"), &caseworker))
        .await
        .expect("send on the honest log")
        .into_inner();
    // The receipt the node kept is on a checkpoint cosigned by two of the three witnesses.
    let receipt = first.receipt.expect("receipt");
    let quorum = quorum(&net);
    assert_eq!((quorum.len(), quorum.needed(), quorum.needed_independent()), (3, 2, 1));
    assert_eq!(quorum.check(&receipt.checkpoint), Ok(()), "{}", receipt.checkpoint);

    // The operator copies the log as it is, then the honest branch grows on.
    let copy = net.dir.path().join("fork-copy");
    net.restart_gateway(|dir| {
        std::fs::create_dir_all(&copy).expect("mkdir");
        for f in LOG_FILES {
            let _ = std::fs::copy(dir.join("gateway").join(f), copy.join(f));
        }
    })
    .await;
    for n in 2..=4 {
        node(&net, 0)
            .send(with_token(
                crate::report(&format!("fork-{n}"), "reduced capacity"),
                &caseworker,
            ))
            .await
            .expect("send on the honest log");
    }
    let honest_size = net.audit_size(&peer(&net, 0)).await;

    // A second gateway with the same key starts from the copy: another history from there on.
    let honest = net.dir.path().join("honest-branch");
    net.restart_gateway(|dir| {
        std::fs::create_dir_all(&honest).expect("mkdir");
        for f in LOG_FILES {
            let _ = std::fs::rename(dir.join("gateway").join(f), honest.join(f));
            let _ = std::fs::copy(copy.join(f), dir.join("gateway").join(f));
        }
    })
    .await;
    // It grows past the honest branch (enrolments straight at the gateway, as a node would call).
    let mut gateway = GatewayClient::new(net.gateway_channel_as(&peer(&net, 1)));
    let ai = net.token(1, "caseworker.2", &[Role::Caseworker]);
    let mut forked_size = net.audit_size(&peer(&net, 1)).await;
    let mut n = 0u64;
    while forked_size <= honest_size + 1 {
        let enrolled = gateway
            .enrol(with_token(
                cii_proto::gateway::EnrolRequest {
                    origin: Some(net.enrolment_ciphertext(&cii_tests::synthetic_avs(n))),
                },
                &ai,
            ))
            .await;
        n += 1;
        forked_size = net.audit_size(&peer(&net, 1)).await;
        assert!(n < 200, "the forked log does not grow: {enrolled:?}");
    }

    // No checkpoint of the forked branch reaches a quorum: the gateway cannot hand out a
    // receipt a node accepts, and the nodes refuse to exchange.
    let refused = AuditClient::new(net.gateway_channel_as(&peer(&net, 1)))
        .get_witnessed_inclusion(cii_proto::audit::WitnessedInclusionRequest { index: forked_size - 1 })
        .await
        .expect_err("no quorum on the fork");
    assert_eq!(error_code(&refused).as_deref(), Some("AUDIT_NOT_WITNESSED"));
    let blocked = node(&net, 0)
        .send(with_token(crate::report("fork-5", "reduced capacity"), &caseworker))
        .await
        .expect_err("the node does not accept a receipt of the fork");
    let code = error_code(&blocked).unwrap_or_default();
    assert!(
        ["AUDIT_LOG_ALARM", "RECEIPT_NOT_WITNESSED"].contains(&code.as_str()),
        "{code}: {blocked:?}"
    );
    assert!(
        cii_tests::metrics_eventually_contain(net.gateway_metrics, "cii_cosigning_total{code=\"NO_QUORUM\"}").await,
        "the gateway reports rounds without a quorum"
    );

    // The independent witness kept the honest checkpoint and the forked one that contradicted it.
    net.stop_witness().await;
    let witness_db = net.dir.path().join("witness/witness.db");
    let store = cii_node::store::Store::open(&format!("sqlite:{}", witness_db.display()), &[0; 32])
        .await
        .expect("witness store");
    let (held, alarm) = store.witness().await.expect("witness").expect("a checkpoint");
    assert!(alarm, "the independent witness raised its alarm");
    assert_eq!(held.lines().nth(1), Some(honest_size.to_string().as_str()), "{held}");
    let evidence = store.witness_evidence().await.expect("evidence");
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    let (_, kept, conflicting, problem) = &evidence[0];
    assert_eq!(kept, &held);
    assert_ne!(kept, conflicting);
    assert!(problem.contains("inconsistent"), "{problem}");
    store.close().await;
    net.stop().await;
}
