//! Fault injection on real processes: the gateway is killed with SIGKILL at
//! random moments under a load of permitted and refused transfers, and
//! restarted each time. Afterwards: every transfer the recipient received has
//! exactly one audit entry, and it is a permit; every permit answered to a
//! sender was delivered exactly once; no refused transfer was delivered; the
//! log verifies.
//!
//! The network is `cii demo --dir D --keep-running` (consent registry, gateway,
//! six nodes as processes); this test kills and restarts its gateway.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cii_proto::gateway as gw;
use cii_proto::node::{self as node_pb, node_client::NodeClient};
use prost::Message;

const CII: &str = env!("CARGO_BIN_EXE_cii");

/// The demo network, kept running; stopped (SIGINT, then the gateway we restarted) on drop.
struct Demo {
    demo: Child,
    gateway: Option<Child>,
    dir: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut g) = self.gateway.take() {
            let _ = g.kill();
            let _ = g.wait();
        }
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.demo.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.demo.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.demo.kill();
        let _ = self.demo.wait();
    }
}

fn toml_value(file: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(file).expect("config");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{key} in {}", file.display()))
        .to_owned()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gateway process the demo started (found by its config path).
fn demo_gateway_pid(dir: &Path) -> u32 {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(format!("gateway --config {}", dir.join("gateway.toml").display()))
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the demo's gateway is running")
}

fn start_demo(dir: &Path) -> Demo {
    let mut demo = Command::new(CII)
        .args(["demo", "--keep-running", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cii demo");
    let stdout = demo.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Press Ctrl-C") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the demo network is up");
    Demo {
        demo,
        gateway: None,
        dir: dir.canonicalize().expect("dir"),
    }
}

async fn node(dir: &Path, id: &str) -> (NodeClient<tonic::transport::Channel>, String) {
    let api = toml_value(&dir.join("nodes").join(id).join("node.toml"), "api_listen");
    let token = std::fs::read_to_string(dir.join("nodes").join(id).join("caseworker.token")).expect("token");
    let policy = cii_kit::tls::PeerPolicy::new(
        |peer: &cii_types::PeerIdentity| matches!(peer, cii_types::PeerIdentity::Institution(_)),
        |_| false,
    );
    let config = cii_kit::tls::api_client_config(&dir.join("ca.pem"), policy).expect("tls");
    let channel = cii_kit::tls::channel(&format!("https://127.0.0.1:{}", port_of(&api)), config).expect("channel");
    (NodeClient::new(channel), token.trim().to_owned())
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

fn report(id: &str, permitted: bool) -> node_pb::SendRequest {
    node_pb::SendRequest {
        transfer_id: id.into(),
        recipient: "AI-VS".into(),
        local_record_id: "ORP-2026-0417".into(),
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/cii.exchange.v1.EarlyDetectionReport".into(),
            value: cii_proto::exchange::EarlyDetectionReport {
                health_limitations: "reduced capacity".into(),
                ..cii_proto::exchange::EarlyDetectionReport::default()
            }
            .encode_to_vec(),
        }),
        include_identity: false,
        // Without the person informed beforehand, LAI art. 3b refuses.
        attested_facts: if permitted {
            vec!["person_informed_before".into()]
        } else {
            Vec::new()
        },
        written_request: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_gateway_twenty_times_loses_nothing_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut demo = start_demo(&tmp.path().join("net"));
    let dir = demo.dir.clone();
    let gateway_port = port_of(&toml_value(&dir.join("gateway.toml"), "listen"));
    let (orp, token) = node(&dir, "ORP-VS").await;

    // Senders: 4 tasks, each sends its transfers in turn and retries the same id until it has
    // a decision (the node resends the same bytes; the gateway answers the recorded outcome).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for task in 0..4 {
        let (orp, token, stop) = (orp.clone(), token.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<String, bool> = BTreeMap::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("f{task}-{n}");
                let permitted = n % 3 != 0;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match orp.clone().send(with_token(report(&id, permitted), &token)).await {
                        Ok(answer) => {
                            let decision = answer.into_inner().decision.expect("decision");
                            let permit = decision.outcome == cii_proto::common::decision::Outcome::Permit as i32;
                            assert_eq!(permit, permitted, "{id}");
                            outcomes.insert(id.clone(), permit);
                            break;
                        }
                        Err(status) => {
                            assert!(Instant::now() < deadline, "{id}: no answer for 60 s: {status:?}");
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                    }
                }
                n += 1;
            }
            outcomes
        }));
    }

    // The killer: 20 SIGKILLs at random moments, each followed by a restart.
    let mut pid = demo_gateway_pid(&dir);
    let mut seed = std::process::id() as u64;
    for _ in 0..20 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(100 + (seed >> 33) % 400)).await;
        let killed = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(killed.success());
        if let Some(mut old) = demo.gateway.take() {
            let _ = old.wait();
        }
        // Until the port is free again, a restart would fail to bind.
        let freed = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", gateway_port)).is_ok() && Instant::now() < freed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("gateway/gateway.log"))
            .expect("log");
        let child = Command::new(CII)
            .args(["gateway", "--config"])
            .arg(dir.join("gateway.toml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("restart the gateway");
        pid = child.id();
        demo.gateway = Some(child);
        wait_for_port(gateway_port);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut outcomes = BTreeMap::new();
    for s in senders {
        outcomes.extend(s.await.expect("sender"));
    }
    let permitted: BTreeSet<&str> = outcomes
        .iter()
        .filter(|(_, p)| **p)
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(permitted.len() >= 20, "the load ran: {} transfers", outcomes.len());

    // Every permitted transfer reaches the AI office exactly once (the outbox delivers after restarts).
    let (ai, ai_token) = node(&dir, "AI-VS").await;
    // ListInbox answers 100 items at most: read, acknowledge, read on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered: Vec<String> = Vec::new();
    while delivered.len() < permitted.len() && Instant::now() < deadline {
        let items = ai
            .clone()
            .list_inbox(with_token(node_pb::ListInboxRequest { limit: 100 }, &ai_token))
            .await
            .expect("inbox")
            .into_inner()
            .items;
        if items.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let ids = items.iter().map(|i| i.id.clone()).collect();
        delivered.extend(
            items
                .into_iter()
                .filter(|i| i.transfer_id.starts_with('f'))
                .map(|i| i.transfer_id),
        );
        ai.clone()
            .acknowledge(with_token(node_pb::AcknowledgeRequest { ids }, &ai_token))
            .await
            .expect("acknowledge");
    }
    let unique: BTreeSet<&str> = delivered.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), delivered.len(), "a transfer was delivered twice");
    assert_eq!(
        unique, permitted,
        "delivered = permitted, nothing lost, nothing refused let through"
    );

    // The log: exactly one entry per answered transfer, permits for the delivered ones.
    let store = cii_audit::Store::open_read_only(&format!("sqlite:{}", dir.join("gateway/audit.db").display()))
        .await
        .expect("store");
    let entries: Vec<cii_audit::Entry> = store
        .entries(0, 1_000_000)
        .await
        .expect("entries")
        .iter()
        .map(|e| cii_audit::entry::decode(e.readable().expect("readable")).expect("decode"))
        .collect();
    store.close().await;
    let mut per_transfer: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.transfer_id.starts_with('f')) {
        per_transfer.entry(e.transfer_id.as_str()).or_default().push(e.kind);
    }
    for (id, permit) in &outcomes {
        let kinds = per_transfer
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} has no entry"));
        let expected = if *permit {
            cii_audit::EntryKind::TransferPermitted
        } else {
            cii_audit::EntryKind::TransferDenied
        } as i32;
        assert_eq!(kinds, &[expected], "{id}: exactly one entry, of the decision answered");
    }
    let verify = Command::new(CII)
        .args(["audit", "verify", "--config"])
        .arg(dir.join("gateway.toml"))
        .output()
        .expect("verify");
    assert!(
        String::from_utf8_lossy(&verify.stdout).starts_with("ok: "),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
