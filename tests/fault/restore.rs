//! Backup and restore, as the operator guide's procedure does it ("Backup and restore"): the
//! gateway and the consent registry stopped, each database dumped (`pg_dump --format=custom`)
//! and the key material copied; the cluster destroyed and the keys deleted; a fresh cluster
//! started in its place, the dumps restored and the keys copied back. The log then verifies to
//! the same size and root, the recorded transfers answer as before, and exchanges resume: a new
//! transfer is decided, logged after the restored entries (the nodes' witnessed checkpoints
//! extend: no fork) and delivered once.

use std::time::Duration;

use cii_proto::common::decision::Outcome;
use cii_proto::node as node_pb;
use cii_tests::pg::OwnCluster;
use cii_tests::{Network, Options, member, with_token};
use cii_types::InstitutionType;

use super::{AI, ORP, PERSON, node, report, token};

/// The gateway's and the registry's key material in the network's folder.
const KEYS: [&str; 4] = ["pki/gateway", "pki/consent", "keys/gateway", "keys/consent"];
const DATABASES: [&str; 3] = ["audit", "operations", "consent"];

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

async fn send(net: &Network, id: &str) -> Outcome {
    let answer = node(net, ORP)
        .send(with_token(report(id, true), &token(net, ORP)))
        .await
        .expect("send")
        .into_inner();
    Outcome::try_from(answer.decision.expect("decision").outcome).expect("outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restored_into_a_fresh_cluster_verifies_and_exchanges_resume() {
    let cluster = OwnCluster::start(None);
    let mut urls = Vec::new();
    for name in DATABASES {
        urls.push(cluster.database(name).await);
    }
    let options = Options {
        audit_store: Some(urls[0].clone()),
        gateway_database: Some(urls[1].clone()),
        consent_database: Some(urls[2].clone()),
        ..Options::default()
    };
    let members = [
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
    ];
    let mut net = Network::start_with(&members, options).await;
    for i in [ORP, AI] {
        node(&net, i)
            .enrol(with_token(
                node_pb::EnrolRequest {
                    avs_number: PERSON.into(),
                    local_record_id: format!("{}-1", net.node(i).member.id),
                },
                &token(&net, i),
            ))
            .await
            .expect("enrol");
    }
    for id in ["before-1", "before-2"] {
        assert_eq!(send(&net, id).await, Outcome::Permit);
    }
    net.inbox_of_size(AI, 2).await;

    // Backup: the gateway and the registry stopped, each database dumped, the keys copied.
    net.stop_gateway().await;
    net.stop_consent().await;
    let backup = tempfile::tempdir().expect("backup dir");
    for name in DATABASES {
        cluster.dump(name, &backup.path().join(format!("{name}.dump")));
    }
    for keys in KEYS {
        copy_tree(&net.dir.path().join(keys), &backup.path().join(keys));
    }
    let logged = cii_tests::audit_entries_at(&urls[0]).await;
    let audit = cii_audit::Store::open_read_only(&urls[0]).await.expect("audit");
    let checkpoint_before = audit.latest_checkpoint().await.expect("read").expect("one");
    audit.close().await;

    // Destroyed: the cluster and every file of it, the keys.
    let port = cluster.port();
    cluster.destroy();
    for keys in KEYS {
        std::fs::remove_dir_all(net.dir.path().join(keys)).expect("keys deleted");
    }
    assert!(
        sqlx::PgPool::connect(&urls[0]).await.is_err(),
        "nothing answers where the cluster was"
    );

    // Restored into a fresh cluster in its place.
    let fresh = OwnCluster::start(Some(port));
    for name in DATABASES {
        fresh.database(name).await;
        fresh.restore(name, &backup.path().join(format!("{name}.dump")));
    }
    for keys in KEYS {
        copy_tree(&backup.path().join(keys), &net.dir.path().join(keys));
    }
    let audit = cii_audit::Store::open_read_only(&urls[0])
        .await
        .expect("restored audit");
    assert_eq!(
        audit.latest_checkpoint().await.expect("read"),
        Some(checkpoint_before.clone()),
        "the same newest checkpoint"
    );
    let vkey = std::fs::read_to_string(net.pki().join("gateway/audit.vkey")).expect("vkey restored");
    let verifier = cii_audit::note::Verifier::from_vkey(vkey.trim()).expect("verifier");
    let verified = cii_audit::verify::verify(&audit, &verifier, "cii.test/audit", |_, _| {})
        .await
        .expect("the restored log verifies");
    assert_eq!(verified.entries, logged.len() as u64);

    // Exchanges resume: the recorded answers stand, a new transfer goes through once.
    net.restart_consent().await;
    net.restart_gateway(|_| {}).await;
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(a) = node(&net, ORP)
            .send(with_token(report("before-1", true), &token(&net, ORP)))
            .await
        {
            answer = Some(a.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = answer.expect("the restored gateway answers");
    assert_eq!(
        again.receipt.map(|r| r.leaf_index),
        logged.iter().find(|e| e.transfer_id == "before-1").map(|e| e.index),
        "the recorded transfer answers its recorded receipt"
    );
    assert_eq!(send(&net, "after-1").await, Outcome::Permit);
    let items = net.inbox_of_size(AI, 3).await;
    let ids: Vec<&str> = items.iter().map(|i| i.transfer_id.as_str()).collect();
    assert_eq!(ids, ["before-1", "before-2", "after-1"], "each delivered once");
    let after = cii_tests::audit_entries_at(&urls[0]).await;
    let new = after.iter().find(|e| e.transfer_id == "after-1").expect("logged");
    assert!(new.index >= checkpoint_before.0, "logged after the restored entries");
    let verified = cii_audit::verify::verify(&audit, &verifier, "cii.test/audit", |_, _| {})
        .await
        .expect("the resumed log verifies");
    assert_eq!(verified.entries, after.len() as u64);
    for i in [ORP, AI] {
        let metrics = cii_tests::fetch_metrics(net.node(i).metrics).await;
        assert!(metrics.contains("cii_witness_alarm 0"), "node {i} saw a fork");
    }
    audit.close().await;
    drop(net.stop().await);
}
