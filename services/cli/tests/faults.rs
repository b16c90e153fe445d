//! Fault injection on real processes, on the network of `cii demo --dir D
//! --keep-running` (consent registry, gateway, six nodes as processes), under
//! a load of permitted and refused transfers from the ORP to the AI office:
//! - the gateway killed with SIGKILL at random moments, 20 times, restarted;
//! - the recipient's node killed the same way and restarted;
//! - the gateway's disk full (its file size limit lowered to 0 while it runs);
//! - the audit database locked by another process;
//! - the consent registry killed.
//!
//! Afterwards: every transfer the recipient received has exactly one audit
//! entry, and it is a permit; every permit answered to a sender was delivered
//! exactly once; no refused transfer was delivered; nothing was decided
//! without its entry; the log verifies.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cii_proto::gateway as gw;
use cii_proto::node::{self as node_pb, node_client::NodeClient};
use prost::Message;

const CII: &str = env!("CARGO_BIN_EXE_cii");

/// The demo network, kept running; stopped (SIGINT to the demo, then the processes this test
/// restarted) on drop.
struct Demo {
    demo: Child,
    restarted: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for mut child in self.restarted.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
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

/// A process of the network: what it runs, its config, its log, the port that tells it is up.
struct Process {
    command: &'static str,
    config: PathBuf,
    log: PathBuf,
    ports: Vec<u16>,
}

impl Demo {
    fn gateway(&self) -> Process {
        let config = self.dir.join("gateway.toml");
        Process {
            command: "gateway",
            ports: vec![port_of(&toml_value(&config, "listen"))],
            config,
            log: self.dir.join("gateway/gateway.log"),
        }
    }

    fn node(&self, id: &str) -> Process {
        let folder = self.dir.join("nodes").join(id);
        let config = folder.join("node.toml");
        Process {
            command: "node",
            ports: vec![
                port_of(&toml_value(&config, "api_listen")),
                port_of(&toml_value(&config, "inbound_listen")),
            ],
            config,
            log: folder.join("node.log"),
        }
    }

    /// The process running `process` now (the demo's, or one this test restarted).
    fn pid(&self, process: &Process) -> u32 {
        let out = Command::new("pgrep")
            .arg("-f")
            .arg(format!("{} --config {}$", process.command, process.config.display()))
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{} is running", process.config.display()))
    }

    fn consent_registry(&self) -> Process {
        let config = self.dir.join("consent/consent.toml");
        Process {
            command: "consent",
            ports: vec![port_of(&toml_value(&config, "listen"))],
            config,
            log: self.dir.join("consent/consent.log"),
        }
    }

    /// SIGKILL; returns when its ports are free.
    async fn kill(&mut self, process: &Process) {
        let pid = self.pid(process);
        let killed = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(killed.success());
        if let Some(at) = self.restarted.iter().position(|c| c.id() == pid) {
            let _ = self.restarted.remove(at).wait();
        }
        // Until its ports are free, a restart would fail to bind.
        let freed = Instant::now() + Duration::from_secs(10);
        while process
            .ports
            .iter()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
            && Instant::now() < freed
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts `process` again (same command, same config, its log appended); returns when it listens.
    fn restart(&mut self, process: &Process) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&process.log)
            .expect("log");
        let child = Command::new(CII)
            .args([process.command, "--config"])
            .arg(&process.config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("restart");
        self.restarted.push(child);
        for port in &process.ports {
            wait_for_port(*port);
        }
    }

    async fn kill_and_restart(&mut self, process: &Process) {
        self.kill(process).await;
        self.restart(process);
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

/// Starts `cii demo --keep-running` in a new folder under `parent`. The tests of this file start
/// their networks one at a time (fewer processes starting at once on two cores), and a start
/// that fails is tried again in a fresh folder: each network's ports are chosen free before its
/// processes bind them, and another test's connections may take one in between.
fn start_demo(parent: &Path) -> Demo {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut failures = Vec::new();
    for attempt in 0..3 {
        let dir = parent.join(format!("net-{attempt}"));
        let stderr = parent.join(format!("demo-{attempt}.err"));
        let mut demo = Command::new(CII)
            .args(["demo", "--keep-running", "--dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
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
        if rx.recv_timeout(Duration::from_secs(60)).is_ok() {
            return Demo {
                demo,
                restarted: Vec::new(),
                dir: dir.canonicalize().expect("dir"),
            };
        }
        let _ = demo.kill();
        let _ = demo.wait();
        failures.push(std::fs::read_to_string(&stderr).unwrap_or_default());
    }
    panic!(
        "the demo network did not start three times:\n{}",
        failures.join("\n---\n")
    );
}

type NodeApi = NodeClient<tonic::transport::Channel>;

async fn node(dir: &Path, id: &str) -> (NodeApi, String) {
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

/// An early-detection report ORP → AI; without the person informed beforehand, LAI art. 3b refuses.
fn report(id: &str, permitted: bool) -> node_pb::SendRequest {
    node_pb::SendRequest {
        list_record_ids: Vec::new(),
        case_reference: "case-1".into(),
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
        attested_facts: if permitted {
            vec![
                "person_informed_before".into(),
                "incapacity_for_work_or_threatened".into(),
            ]
        } else {
            Vec::new()
        },
        written_request: String::new(),
    }
}

/// Sends `report(id)` until it has a decision (the node resends the same bytes; the gateway
/// answers the recorded outcome); whether it was permitted.
async fn send_until_decided(orp: &NodeApi, token: &str, id: &str, permitted: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match orp.clone().send(with_token(report(id, permitted), token)).await {
            Ok(answer) => {
                let decision = answer.into_inner().decision.expect("decision");
                let permit = decision.outcome == cii_proto::common::decision::Outcome::Permit as i32;
                assert_eq!(permit, permitted, "{id}");
                return permit;
            }
            Err(status) => {
                assert!(Instant::now() < deadline, "{id}: no answer for 60 s: {status:?}");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    }
}

/// Four senders, each sending its transfers in turn (one in three to be refused) until `stop`;
/// every transfer's outcome by id (`prefix`, task, number).
fn load(
    orp: &NodeApi,
    token: &str,
    prefix: &'static str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<BTreeMap<String, bool>>> {
    (0..4)
        .map(|task| {
            let (orp, token, stop) = (orp.clone(), token.to_owned(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes = BTreeMap::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("{prefix}{task}-{n}");
                    let permit = send_until_decided(&orp, &token, &id, n % 3 != 0).await;
                    outcomes.insert(id, permit);
                    n += 1;
                }
                outcomes
            })
        })
        .collect()
}

async fn outcomes_of(senders: Vec<tokio::task::JoinHandle<BTreeMap<String, bool>>>) -> BTreeMap<String, bool> {
    let mut outcomes = BTreeMap::new();
    for s in senders {
        outcomes.extend(s.await.expect("sender"));
    }
    outcomes
}

/// The transfer ids starting with `prefix` the AI office received, in order, until `expected`
/// of them came or `wait` passed (ListInbox answers 100 items at most: read, acknowledge, read on).
async fn received(dir: &Path, prefix: &str, expected: usize, wait: Duration) -> Vec<String> {
    let (ai, token) = node(dir, "AI-VS").await;
    let deadline = Instant::now() + wait;
    let mut delivered: Vec<String> = Vec::new();
    while delivered.len() < expected && Instant::now() < deadline {
        let items = match ai
            .clone()
            .list_inbox(with_token(node_pb::ListInboxRequest { limit: 100 }, &token))
            .await
        {
            Ok(answer) => answer.into_inner().items,
            // Just restarted: not listening yet.
            Err(_) => Vec::new(),
        };
        if items.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let ids = items.iter().map(|i| i.id.clone()).collect();
        delivered.extend(
            items
                .into_iter()
                .filter(|i| i.transfer_id.starts_with(prefix))
                .map(|i| i.transfer_id),
        );
        ai.clone()
            .acknowledge(with_token(node_pb::AcknowledgeRequest { ids }, &token))
            .await
            .expect("acknowledge");
    }
    delivered
}

/// Every permit delivered exactly once, nothing else delivered.
fn assert_delivered_once(delivered: &[String], outcomes: &BTreeMap<String, bool>) {
    let permitted: BTreeSet<&str> = outcomes
        .iter()
        .filter(|(_, p)| **p)
        .map(|(id, _)| id.as_str())
        .collect();
    let unique: BTreeSet<&str> = delivered.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), delivered.len(), "a transfer was delivered twice");
    assert_eq!(
        unique, permitted,
        "delivered = permitted, nothing lost, nothing refused let through"
    );
}

/// The kinds of the audit entries of every transfer whose id starts with `prefix`.
async fn logged(dir: &Path, prefix: &str) -> BTreeMap<String, Vec<i32>> {
    let store = cii_audit::Store::open_read_only(&format!("sqlite:{}", dir.join("gateway/audit.db").display()))
        .await
        .expect("store");
    let stored = store.entries(0, 1_000_000).await.expect("entries");
    store.close().await;
    let mut per_transfer: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for e in stored {
        let entry = cii_audit::entry::decode(e.readable().expect("readable")).expect("decode");
        if entry.transfer_id.starts_with(prefix) {
            per_transfer.entry(entry.transfer_id).or_default().push(entry.kind);
        }
    }
    per_transfer
}

/// Exactly one entry per answered transfer, of the decision answered.
async fn assert_one_entry_each(dir: &Path, prefix: &str, outcomes: &BTreeMap<String, bool>) {
    let per_transfer = logged(dir, prefix).await;
    for (id, permit) in outcomes {
        let kinds = per_transfer.get(id).unwrap_or_else(|| panic!("{id} has no entry"));
        let expected = if *permit {
            cii_audit::EntryKind::TransferPermitted
        } else {
            cii_audit::EntryKind::TransferDenied
        } as i32;
        assert_eq!(kinds, &[expected], "{id}: exactly one entry, of the decision answered");
    }
    assert_eq!(
        per_transfer.len(),
        outcomes.len(),
        "no entry for a transfer nobody was answered"
    );
}

fn assert_log_verifies(dir: &Path) {
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

/// Waits 100–500 ms, at a moment drawn from `seed`.
async fn random_pause(seed: &mut u64) {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    tokio::time::sleep(Duration::from_millis(100 + (*seed >> 33) % 400)).await;
}

/// Runs the load on a fresh demo network while `victim` is SIGKILLed `kills` times at random
/// moments and restarted; then checks that nothing was lost, duplicated or let through.
async fn kill_under_load(victim: fn(&Demo) -> Process, kills: usize, prefix: &'static str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut demo = start_demo(tmp.path());
    let dir = demo.dir.clone();
    let (orp, token) = node(&dir, "ORP-VS").await;
    let stop = Arc::new(AtomicBool::new(false));
    let senders = load(&orp, &token, prefix, &stop);

    let process = victim(&demo);
    let mut seed = u64::from(std::process::id()) ^ kills as u64;
    for _ in 0..kills {
        random_pause(&mut seed).await;
        demo.kill_and_restart(&process).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = outcomes_of(senders).await;
    let permits = outcomes.values().filter(|p| **p).count();
    assert!(permits >= 20, "the load ran: {} transfers", outcomes.len());

    // Whatever was queued when a process died is delivered after the restarts.
    assert_delivered_once(
        &received(&dir, prefix, permits, Duration::from_secs(60)).await,
        &outcomes,
    );
    assert_one_entry_each(&dir, prefix, &outcomes).await;
    assert_log_verifies(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_gateway_twenty_times_loses_nothing_and_duplicates_nothing() {
    kill_under_load(Demo::gateway, 20, "gwkill").await;
}

/// The AI office's node dies (mid-delivery, sometimes) and comes back; its IT does not read the
/// inbox meanwhile, so every delivery it stored must still be there afterwards, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_recipients_node_ten_times_delays_deliveries_but_loses_and_duplicates_none() {
    kill_under_load(|demo| demo.node("AI-VS"), 10, "aikill").await;
}

/// Sends once; the stable code of the refusal (a transfer that cannot be logged must not be
/// decided, let alone delivered).
async fn refused_code(orp: &NodeApi, token: &str, id: &str, permitted: bool) -> (tonic::Code, String) {
    let status = orp
        .clone()
        .send(with_token(report(id, permitted), token))
        .await
        .expect_err("refused while the gateway cannot write");
    (
        status.code(),
        cii_kit::grpc::error_code(&status).unwrap_or_else(|| format!("no cii code: {status:?}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_the_gateway_refuses_retryably_and_delivers_nothing_then_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let demo = start_demo(tmp.path());
    let dir = demo.dir.clone();
    let (orp, token) = node(&dir, "ORP-VS").await;
    let gateway = demo.pid(&demo.gateway());
    let limit = |value: &str| {
        let set = Command::new("prlimit")
            .arg("--pid")
            .arg(gateway.to_string())
            .arg(format!("--fsize={value}"))
            .status()
            .expect("prlimit");
        assert!(set.success(), "prlimit --fsize={value}");
    };

    // No file of the gateway can grow any more: every write past byte 0 fails (EFBIG), as on a
    // full disk. The gateway must stay up and refuse, permits and denials alike, retryably.
    limit("0:unlimited");
    let attempts = [
        ("disk0", true),
        ("disk1", false),
        ("disk2", true),
        ("disk3", true),
        ("disk4", false),
        ("disk5", true),
    ];
    for (id, permitted) in attempts {
        let (code, cii_code) = refused_code(&orp, &token, id, permitted).await;
        assert_eq!(code, tonic::Code::Unavailable, "{id}: {cii_code}");
        assert!(
            ["GATEWAY_STORE_UNAVAILABLE", "AUDIT_UNAVAILABLE"].contains(&cii_code.as_str()),
            "{id}: {cii_code}"
        );
    }
    assert!(logged(&dir, "disk").await.is_empty(), "nothing logged");
    assert!(
        received(&dir, "disk", 1, Duration::from_secs(2)).await.is_empty(),
        "nothing delivered"
    );

    // Space again: the same transfers, retried, are decided, logged once and delivered once.
    limit("unlimited");
    let mut outcomes = BTreeMap::new();
    for (id, permitted) in attempts {
        outcomes.insert(id.to_owned(), send_until_decided(&orp, &token, id, permitted).await);
    }
    assert_delivered_once(&received(&dir, "disk", 4, Duration::from_secs(60)).await, &outcomes);
    assert_one_entry_each(&dir, "disk", &outcomes).await;
    assert_log_verifies(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_audit_database_locked_the_gateway_refuses_retryably_and_delivers_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let demo = start_demo(tmp.path());
    let dir = demo.dir.clone();
    let (orp, token) = node(&dir, "ORP-VS").await;

    // Another process (a stuck maintenance session, a backup tool) holds the write lock of the
    // audit database longer than the gateway waits for it (10 s).
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("gateway/audit.db"));
    let mut locker = sqlx::ConnectOptions::connect(&options).await.expect("open");
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut locker).await.expect("lock");
    let (code, cii_code) = refused_code(&orp, &token, "lock0", true).await;
    assert_eq!(
        (code, cii_code.as_str()),
        (tonic::Code::Unavailable, "AUDIT_UNAVAILABLE")
    );
    assert!(
        received(&dir, "lock", 1, Duration::from_secs(2)).await.is_empty(),
        "nothing delivered"
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.expect("unlock");
    assert!(logged(&dir, "lock").await.is_empty(), "nothing logged");

    let outcomes = BTreeMap::from([(
        "lock0".to_owned(),
        send_until_decided(&orp, &token, "lock0", true).await,
    )]);
    assert_delivered_once(&received(&dir, "lock", 1, Duration::from_secs(60)).await, &outcomes);
    assert_one_entry_each(&dir, "lock", &outcomes).await;
    assert_log_verifies(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_consent_registry_transfers_are_refused_retryably_then_go_through() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut demo = start_demo(tmp.path());
    let dir = demo.dir.clone();
    let (orp, token) = node(&dir, "ORP-VS").await;

    // Every transfer about a person needs the registry's answer (consents, who serves the
    // person): without it nothing is decided, nothing logged, nothing delivered.
    let registry = demo.consent_registry();
    demo.kill(&registry).await;
    let (code, cii_code) = refused_code(&orp, &token, "registry0", true).await;
    assert_eq!(
        (code, cii_code.as_str()),
        (tonic::Code::Unavailable, "CONSENT_REGISTRY_UNAVAILABLE")
    );
    assert!(logged(&dir, "registry").await.is_empty(), "nothing logged");
    assert!(
        received(&dir, "registry", 1, Duration::from_secs(2)).await.is_empty(),
        "nothing delivered"
    );

    // Back (its database survived the SIGKILL): the retry is decided, logged and delivered once.
    demo.restart(&registry);
    let outcomes = BTreeMap::from([(
        "registry0".to_owned(),
        send_until_decided(&orp, &token, "registry0", true).await,
    )]);
    assert_delivered_once(&received(&dir, "registry", 1, Duration::from_secs(60)).await, &outcomes);
    assert_one_entry_each(&dir, "registry", &outcomes).await;
    assert_log_verifies(&dir);
}

/// The processes whose command line names a file under `dir` (the network's processes are
/// started with `--config DIR/...`).
fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .map_while(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(&needle))
        })
        .collect()
}

/// An operator (or systemd, or a container runtime) stops `cii demo --keep-running` with
/// SIGTERM: its whole network stops with it, as on Ctrl-C.
#[test]
fn sigterm_to_the_kept_demo_stops_every_process_of_its_network() {
    let parent = tempfile::tempdir().expect("tempdir");
    let mut demo = start_demo(parent.path());
    let running = processes_under(&demo.dir);
    // Registry, gateway and six nodes (the demo itself names the folder too).
    assert!(running.len() >= 8, "the network's processes: {running:?}");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(demo.demo.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && matches!(demo.demo.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        demo.demo.try_wait().expect("wait").is_some(),
        "the demo stopped on SIGTERM"
    );
    let left = processes_under(&demo.dir);
    assert!(left.is_empty(), "processes of the network left running: {left:?}");
}
