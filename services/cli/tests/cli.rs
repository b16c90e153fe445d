//! The `cii` binary as users run it: real processes, real config files.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cii_kit::config::TlsFiles;
use cii_kit::tls::{self, PeerPolicy, TlsIdentity};
use cii_proto::node::{StatusRequest, node_client::NodeClient};
use cii_types::{InstitutionId, PeerIdentity};

fn cii(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cii"))
        .args(args)
        .output()
        .expect("run cii")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

const GATEWAY_TOML: &str = "listen = \"127.0.0.1:{GW}\"\n\n[registry]\nfile = \"registry.toml\"\nverification_key = \"pki/registry.pub\"\n\n[tls]\nca = \"pki/ca.pem\"\n\
cert = \"pki/gateway/cert.pem\"\nkey = \"pki/gateway/key.pem\"\n\n[audit]\nstore = \"sqlite:audit.db\"\n\
origin = \"cii.test/audit\"\nsigning_key = \"pki/gateway/audit.key\"\nretention_days = 365\n\n[pseudonym]\n\
transcryptor = \"keys/gateway/transcryptor.json\"\nglobal_public = \"keys/global-public.json\"\n\
enrolment_burst = 5000\n\n[consent]\nurl = \"https://127.0.0.1:{CONSENT}\"\n\n[log]\nlevel = \"debug\"\n";

const CONSENT_TOML: &str = "listen = \"127.0.0.1:{PORT}\"\n\n[registry]\nfile = \"registry.toml\"\nverification_key = \"pki/registry.pub\"\n\n[tls]\nca = \"pki/ca.pem\"\n\
cert = \"pki/consent/cert.pem\"\nkey = \"pki/consent/key.pem\"\n\n[pseudonym]\nglobal_public = \"keys/global-public.json\"\n\
session_keys = \"keys/consent/session-keys.json\"\n\n[store]\ndatabase = \"sqlite:consent/consent.db\"\n\n\
[log]\nlevel = \"debug\"\n";

fn registry(ports: &[(&str, &str, u16)]) -> String {
    "network = \"cii.test\"\nversion = 1\n\n".to_owned()
        + &ports
            .iter()
            .map(|(id, kind, inbound)| {
                // ORP-VS is the network's designated operator here (retention runs).
                let roles = if *id == "ORP-VS" {
                    "roles = [\"caseworker\", \"system\", \"dpo\", \"jurist\", \"operator\"]\n"
                } else {
                    ""
                };
                format!(
                    "[[institution]]\nid = \"{id}\"\ntype = \"{kind}\"\ncanton = \"VS\"\nname = \"{id}\"\n\
                 endpoint = \"https://127.0.0.1:{inbound}\"\n{roles}[[institution.jwt_keys]]\nkid = \"dev-1\"\n\
                 public_key_file = \"pki/institutions/{id}/jwt.pub\"\n\n"
                )
            })
            .collect::<String>()
}

fn node_toml(id: &str, gateway: u16, api: u16, inbound: u16) -> String {
    format!(
        "institution = \"{id}\"\ngateway_url = \"https://127.0.0.1:{gateway}\"\n\
         api_listen = \"127.0.0.1:{api}\"\ninbound_listen = \"127.0.0.1:{inbound}\"\n\n[registry]\nfile = \"registry.toml\"\nverification_key = \"pki/registry.pub\"\n\n[tls]\nca = \"pki/ca.pem\"\n\
         cert = \"pki/institutions/{id}/cert.pem\"\nkey = \"pki/institutions/{id}/key.pem\"\n\n\
         [pseudonym]\nglobal_public = \"keys/global-public.json\"\nsession_keys = \"keys/institutions/{id}/session-keys.json\"\n\n\
         [store]\ndatabase = \"sqlite:nodes/{id}/node.db\"\nkey = \"nodes/{id}/store.key\"\n\n\
         [audit]\nverifier_key_file = \"audit.vkey\"\n\n[log]\nlevel = \"debug\"\n"
    )
}

/// A dev network's files in `dir`: PKI, registry, keys, gateway, consent registry and node configs.
/// Returns (gateway, [(api, inbound)], consent registry).
fn write_network(dir: &Path) -> (u16, Vec<(u16, u16)>, u16) {
    let out = cii(&[
        "pki",
        "init",
        "--dir",
        &dir.join("pki").to_string_lossy(),
        "--institution",
        "ORP-VS",
        "--institution",
        "AI-VS",
    ]);
    assert!(
        out.status.success(),
        "pki init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gateway = free_port();
    let nodes = vec![(free_port(), free_port()), (free_port(), free_port())];
    let reg = registry(&[("ORP-VS", "AC_ORP", nodes[0].1), ("AI-VS", "AI", nodes[1].1)]);
    std::fs::write(dir.join("registry.toml"), reg).expect("registry");
    let out = cii(&[
        "pki",
        "sign-registry",
        "--key",
        &dir.join("pki/registry.key").to_string_lossy(),
        &dir.join("registry.toml").to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "sign-registry: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = dir.join("keys");
    let out = cii(&[
        "keys",
        "init",
        "--dir",
        &keys.to_string_lossy(),
        "--registry",
        &dir.join("registry.toml").to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "keys init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in ["ORP-VS", "AI-VS"] {
        std::fs::create_dir_all(dir.join("nodes").join(id)).expect("mkdir");
        let out = cii(&[
            "keys",
            "store-key",
            "--out",
            &dir.join(format!("nodes/{id}/store.key")).to_string_lossy(),
        ]);
        assert!(
            out.status.success(),
            "store-key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let consent = free_port();
    std::fs::write(
        dir.join("gateway.toml"),
        GATEWAY_TOML
            .replace("{GW}", &gateway.to_string())
            .replace("{CONSENT}", &consent.to_string()),
    )
    .expect("gateway");
    std::fs::write(
        dir.join("consent.toml"),
        CONSENT_TOML.replace("{PORT}", &consent.to_string()),
    )
    .expect("consent");
    let out = cii(&["audit", "vkey", "--config", &dir.join("gateway.toml").to_string_lossy()]);
    assert!(
        out.status.success(),
        "audit vkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("audit.vkey"), &out.stdout).expect("vkey");
    std::fs::write(
        dir.join("node-orp.toml"),
        node_toml("ORP-VS", gateway, nodes[0].0, nodes[0].1),
    )
    .expect("node");
    std::fs::write(
        dir.join("node-ai.toml"),
        node_toml("AI-VS", gateway, nodes[1].0, nodes[1].1),
    )
    .expect("node");
    (gateway, nodes, consent)
}

#[test]
fn a_broken_config_names_the_key_and_exits_without_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_network(dir.path());
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "gateway",
            "gateway.toml",
            "[registry]\nfile = \"registry.toml\"\nverification_key = \"pki/registry.pub\"\n",
            "missing field `registry`",
        ),
        (
            "gateway",
            "gateway.toml",
            "listen = \"127.0.0.1:",
            "listen = \"nowhere:",
        ),
        ("gateway", "gateway.toml", "[tls]\n", "colour = \"blue\"\n[tls]\n"),
        (
            "node",
            "node-orp.toml",
            "institution = \"ORP-VS\"",
            "institution = \"PC-XX\"",
        ),
        (
            "node",
            "node-orp.toml",
            "gateway_url = \"https://",
            "gateway_url = \"http://",
        ),
    ];
    let expected_key = ["registry", "listen", "colour", "institution", "gateway_url"];
    for ((command, file, from, to), key) in cases.into_iter().zip(expected_key) {
        let path = dir.path().join(file);
        let original = std::fs::read_to_string(&path).expect("read");
        let broken = if to.starts_with("missing") {
            original.replace(from, "")
        } else {
            original.replace(from, to)
        };
        assert_ne!(broken, original, "case {key} did not change the file");
        std::fs::write(&path, &broken).expect("write");
        let out = cii(&[command, "--config", &path.to_string_lossy()]);
        std::fs::write(&path, &original).expect("restore");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(file), "{key}: error must name the file: {stderr}");
        assert!(stderr.contains(key), "{key}: error must name the key: {stderr}");
    }
    // A missing file is a configuration error too.
    let out = cii(&["gateway", "--config", "/nonexistent/gateway.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
    }
}

fn start(dir: &Path, command: &str, config: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cii"))
        .args([command, "--config", &dir.join(config).to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

#[tokio::test(flavor = "multi_thread")]
async fn pki_init_then_gateway_and_two_nodes_run_as_processes_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, nodes, _) = write_network(dir.path());
    let mut running = Running(vec![
        start(dir.path(), "gateway", "gateway.toml"),
        start(dir.path(), "node", "node-orp.toml"),
        start(dir.path(), "node", "node-ai.toml"),
    ]);
    let pki = dir.path().join("pki");
    for (i, id) in ["ORP-VS", "AI-VS"].into_iter().enumerate() {
        let out = cii(&[
            "pki",
            "token",
            "--network",
            "cii.test",
            "--dir",
            &pki.to_string_lossy(),
            "--institution",
            id,
            "--user",
            "it-check",
            "--role",
            "caseworker",
        ]);
        assert!(out.status.success(), "token: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).expect("utf8").trim().to_owned();
        let party = PeerIdentity::Institution(InstitutionId::parse("id", id).expect("id"));
        let files = cii_kit::pki::party_files(&pki, &party);
        let identity = TlsIdentity::load(&TlsFiles {
            ca: pki.join("ca.pem"),
            cert: files.cert,
            key: files.key,
        })
        .expect("identity");
        let config = tls::client_config(&identity, PeerPolicy::only(party, |_| false)).expect("config");
        let channel = tls::channel(&format!("https://127.0.0.1:{}", nodes[i].0), config).expect("channel");
        // The processes need a moment to bind; retry until they answer.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            let mut request = tonic::Request::new(StatusRequest {});
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().expect("header"));
            match NodeClient::new(channel.clone()).status(request).await {
                Ok(answer) => break answer.into_inner(),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node {id} never answered: {e:?}"),
            }
        };
        assert_eq!(status.gateway.expect("gateway").institution_id, id);
    }
    // Graceful shutdown: SIGTERM, then a clean exit.
    for child in &running.0 {
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }
    for child in &mut running.0 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "process did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "exit status after SIGTERM: {status}");
    }
    audit_commands_read_the_stopped_gateways_log(dir.path());
}

/// `cii audit …` on the log the gateway left: it holds the rulebook and registry activations.
fn audit_commands_read_the_stopped_gateways_log(dir: &Path) {
    let config = dir.join("gateway.toml").to_string_lossy().into_owned();
    let out = cii(&["audit", "verify", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "verify: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("ok: 2 entries"), "{text}");

    let note = String::from_utf8(cii(&["audit", "checkpoint", "--config", &config]).stdout).expect("utf8");
    assert!(
        note.starts_with("cii.test/audit\n2\n") && note.contains("\n\n\u{2014} cii.test/audit "),
        "{note:?}"
    );
    let vkey = String::from_utf8(cii(&["audit", "vkey", "--config", &config]).stdout).expect("utf8");
    assert!(
        vkey.starts_with("cii.test/audit+") && vkey.trim_end().split('+').count() >= 3,
        "{vkey}"
    );

    let proof: serde_json::Value =
        serde_json::from_slice(&cii(&["audit", "prove", "--config", &config, "--index", "0"]).stdout).expect("json");
    assert_eq!(proof["index"], 0);
    assert_eq!(proof["tree_size"], 2);
    assert_eq!(proof["inclusion_proof"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        proof["leaf_hash"].as_str().map(str::len),
        Some(44),
        "padded standard base64 of 32 bytes"
    );

    // Verification with only the store URL and the published verifier key.
    let url = format!("sqlite:{}", dir.join("audit.db").display());
    let out = cii(&["audit", "verify", "--store", &url, "--vkey", vkey.trim_end()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Starts `cii COMMAND --config CONFIG` with its log (stderr) written to `log`.
fn start_logged(dir: &Path, command: &str, config: &str, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_cii"))
        .args([command, "--config", &dir.join(config).to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn")
}

/// `n` synthetic AVS numbers with valid check digits (deterministic).
fn synthetic_avs(n: usize) -> Vec<String> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let mut first12 = [7u8, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            let mut body = (state >> 20) % 1_000_000_000;
            for digit in first12[3..].iter_mut().rev() {
                *digit = (body % 10) as u8;
                body /= 10;
            }
            let check = cii_types::avs::check_digit(&first12);
            first12
                .iter()
                .chain(std::iter::once(&check))
                .map(|d| char::from(b'0' + d))
                .collect()
        })
        .collect()
}

/// `756.1234.5678.97` from `7561234567897`.
fn dotted(digits: &str) -> String {
    format!(
        "{}.{}.{}.{}",
        &digits[..3],
        &digits[3..7],
        &digits[7..11],
        &digits[11..]
    )
}

/// Whether `haystack` holds one of `needles` as a whole token (no digit right before or after).
/// One pass over the haystack, whatever the number of needles.
fn holds_token(haystack: &[u8], needles: &std::collections::HashSet<Vec<u8>>) -> bool {
    let lengths: std::collections::BTreeSet<usize> = needles.iter().map(Vec::len).collect();
    let firsts: std::collections::HashSet<u8> = needles.iter().filter_map(|n| n.first().copied()).collect();
    (0..haystack.len()).any(|at| {
        firsts.contains(&haystack[at])
            && !at.checked_sub(1).is_some_and(|b| haystack[b].is_ascii_digit())
            && lengths.iter().any(|&len| {
                haystack.get(at..at + len).is_some_and(|w| needles.contains(w))
                    && !haystack.get(at + len).is_some_and(u8::is_ascii_digit)
            })
    })
}

/// Every file under `root`, recursively.
fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                stack.push(entry.path());
            }
        } else {
            out.push(path);
        }
    }
    out
}

/// Acceptance of the pseudonym issue: 1,000 persons enrolled at two nodes through the gateway;
/// nothing the gateway process wrote (databases, debug logs, config and key files) holds any of
/// their AVS numbers, dotted or not, and the nodes' databases hold none in clear either.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_enrolments_leave_no_avs_number_anywhere_the_gateway_writes() {
    use cii_proto::node::EnrolRequest;
    const PERSONS: usize = 1_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, nodes, _) = write_network(dir.path());
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let mut running = Running(vec![
        start_logged(dir.path(), "gateway", "gateway.toml", &logs.join("gateway.log")),
        start_logged(dir.path(), "node", "node-orp.toml", &logs.join("node-orp.log")),
        start_logged(dir.path(), "node", "node-ai.toml", &logs.join("node-ai.log")),
    ]);
    let persons = synthetic_avs(PERSONS);
    let pki = dir.path().join("pki");
    let started = Instant::now();
    let mut pseudonyms: Vec<Vec<String>> = Vec::new();
    for (i, id) in ["ORP-VS", "AI-VS"].into_iter().enumerate() {
        let out = cii(&[
            "pki",
            "token",
            "--network",
            "cii.test",
            "--dir",
            &pki.to_string_lossy(),
            "--institution",
            id,
            "--user",
            "batch",
            "--role",
            "caseworker",
        ]);
        let token = String::from_utf8(out.stdout).expect("utf8").trim().to_owned();
        let party = PeerIdentity::Institution(InstitutionId::parse("id", id).expect("id"));
        let files = cii_kit::pki::party_files(&pki, &party);
        let identity = TlsIdentity::load(&TlsFiles {
            ca: pki.join("ca.pem"),
            cert: files.cert,
            key: files.key,
        })
        .expect("identity");
        let config = tls::client_config(&identity, PeerPolicy::only(party, |_| false)).expect("config");
        let channel = tls::channel(&format!("https://127.0.0.1:{}", nodes[i].0), config).expect("channel");
        let mut tasks = Vec::new();
        for (n, avs) in persons.iter().enumerate() {
            // Half the persons are given with dots, half without.
            let avs = if n % 2 == 0 { dotted(avs) } else { avs.clone() };
            let (channel, token) = (channel.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let mut request = tonic::Request::new(EnrolRequest {
                        avs_number: avs.clone(),
                        local_record_id: format!("{id}-{n:05}"),
                    });
                    request
                        .metadata_mut()
                        .insert("authorization", format!("Bearer {token}").parse().expect("header"));
                    match NodeClient::new(channel.clone()).enrol(request).await {
                        Ok(answer) => break answer.into_inner().pseudonym,
                        // The processes need a moment to bind at first.
                        Err(e) if Instant::now() < deadline && e.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("enrol {n} at {id}: {e:?}"),
                    }
                }
            }));
        }
        let mut here = Vec::new();
        for task in tasks {
            here.push(task.await.expect("enrol task"));
        }
        pseudonyms.push(here);
    }
    eprintln!("{} enrolments in {:?}", 2 * PERSONS, started.elapsed());
    let distinct: std::collections::HashSet<&String> = pseudonyms.iter().flatten().collect();
    assert_eq!(
        distinct.len(),
        2 * PERSONS,
        "every person has a distinct pseudonym per institution"
    );
    for child in &mut running.0 {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
    }

    // Everything the gateway reads or writes: its config, registry, TLS and key files, its
    // audit database (with WAL and shared-memory files), and its debug-level log.
    let root = dir.path();
    let mut gateway_files = vec![
        root.join("gateway.toml"),
        root.join("registry.toml"),
        logs.join("gateway.log"),
    ];
    gateway_files.extend(files_under(&root.join("pki/gateway")));
    gateway_files.extend(files_under(&root.join("keys/gateway")));
    gateway_files.push(root.join("keys/global-public.json"));
    gateway_files.extend(
        std::fs::read_dir(root)
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("audit.db"))
            }),
    );
    let log = std::fs::read_to_string(logs.join("gateway.log")).expect("gateway log");
    assert!(log.contains("DEBUG"), "the gateway logged at debug level");
    assert!(
        gateway_files.iter().any(|p| p.ends_with("audit.db")),
        "{gateway_files:?}"
    );
    // The nodes' databases: the AVS numbers are there only sealed.
    let node_databases: Vec<_> = files_under(&root.join("nodes"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("node.db"))
        })
        .collect();
    assert!(node_databases.len() >= 2, "{node_databases:?}");
    let contents: Vec<(std::path::PathBuf, Vec<u8>)> = gateway_files
        .iter()
        .chain(&node_databases)
        .chain([&logs.join("node-orp.log"), &logs.join("node-ai.log")])
        .map(|p| {
            (
                p.clone(),
                std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
        })
        .collect();
    let forms: std::collections::HashSet<Vec<u8>> = persons
        .iter()
        .flat_map(|avs| [avs.clone().into_bytes(), dotted(avs).into_bytes()])
        .collect();
    for (path, bytes) in &contents {
        assert!(
            !holds_token(bytes, &forms),
            "an AVS number of the test set is in {}",
            path.display()
        );
    }
    // The gateway holds no session key: none of the parties' session secrets is in its files.
    for path in files_under(&root.join("keys")) {
        if path
            .file_name()
            .is_some_and(|n| n == "session-keys.json" || n == "audit-session-keys.json")
        {
            let keys: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            for kind in ["pseudonym", "attribute"] {
                let secret = keys[kind]["secret"].as_str().expect("secret hex");
                let secret = std::collections::HashSet::from([secret.as_bytes().to_vec()]);
                for (file, bytes) in contents.iter().filter(|(p, _)| gateway_files.contains(p)) {
                    assert!(
                        !holds_token(bytes, &secret),
                        "a session secret from {} is in the gateway's {}",
                        path.display(),
                        file.display()
                    );
                }
            }
        }
    }
}

#[test]
fn the_scan_finds_what_it_looks_for() {
    // The scan is only worth something if it does find a number where one is.
    let avs = synthetic_avs(1).remove(0);
    let forms = std::collections::HashSet::from([avs.clone().into_bytes(), dotted(&avs).into_bytes()]);
    assert!(holds_token(format!("x {avs} y").as_bytes(), &forms));
    assert!(holds_token(format!("\"{}\"", dotted(&avs)).as_bytes(), &forms));
    assert!(holds_token(avs.as_bytes(), &forms));
    assert!(!holds_token(format!("1{avs}").as_bytes(), &forms));
    assert!(!holds_token(format!("{avs}0").as_bytes(), &forms));
    assert!(cii_types::AvsNumber::parse(&avs).is_ok());
}

/// The consent registry as a process at debug level: after consents, lookups and
/// relationships about 50 persons, neither its database nor its log holds an AVS number
/// or any institution-domain pseudonym of those persons (raw or hex); its log holds no
/// registry-domain pseudonym either (only its database does).
#[tokio::test(flavor = "multi_thread")]
async fn the_consent_registry_holds_no_avs_number_and_no_other_domains_pseudonym() {
    use cii_proto::consent::{self as pb, consent_registry_client::ConsentRegistryClient};
    use cii_pseudonym::names::Party;
    const PERSONS: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, port) = write_network(dir.path());
    let log = dir.path().join("consent.log");
    let _running = Running(vec![start_logged(dir.path(), "consent", "consent.toml", &log)]);

    // What the gateway would do, with the network's key files: origin → registry domain.
    let keys = dir.path().join("keys");
    let read = |f: &str| std::fs::read_to_string(keys.join(f)).expect("key file");
    let gateway =
        cii_pseudonym::gateway::Gateway::from_json(&read("gateway/transcryptor.json"), &read("global-public.json"))
            .expect("transcryptor");
    let node_keys =
        |file: &str| cii_pseudonym::node::NodeKeys::from_json(&read("global-public.json"), &read(file)).expect("keys");
    let (orp, ai, registry_keys) = (
        node_keys("institutions/ORP-VS/session-keys.json"),
        node_keys("institutions/AI-VS/session-keys.json"),
        node_keys("consent/session-keys.json"),
    );
    let party = |id: &str| Party::Institution(InstitutionId::parse("id", id).expect("id"));
    let persons = synthetic_avs(PERSONS);
    let mut forbidden: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let mut registry_pseudonyms: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>().into_bytes();

    let pki = dir.path().join("pki");
    let identity = TlsIdentity::load(&TlsFiles {
        ca: pki.join("ca.pem"),
        cert: pki.join("gateway/cert.pem"),
        key: pki.join("gateway/key.pem"),
    })
    .expect("gateway identity");
    let config = tls::client_config(&identity, PeerPolicy::only(PeerIdentity::Consent, |_| false)).expect("config");
    let mut client =
        ConsentRegistryClient::new(tls::channel(&format!("https://127.0.0.1:{port}"), config).expect("channel"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    for (n, avs) in persons.iter().enumerate() {
        let avs_number = cii_types::AvsNumber::parse(avs).expect("avs");
        let origin = orp.enrolment_ciphertext(&avs_number);
        for (keys, id) in [(&orp, "ORP-VS"), (&ai, "AI-VS")] {
            let local = keys.decrypt(&gateway.enrol(&origin, &party(id))).0;
            forbidden.insert(local.to_vec());
            forbidden.insert(hex(&local));
        }
        let at_registry = gateway.enrol(&origin, &Party::Registry);
        let registry_value = registry_keys.decrypt(&at_registry).0;
        registry_pseudonyms.insert(registry_value.to_vec());
        registry_pseudonyms.insert(hex(&registry_value));
        forbidden.insert(avs.clone().into_bytes());
        forbidden.insert(dotted(avs).into_bytes());
        let person = Some(cii_proto::common::EncryptedPseudonym {
            ciphertext: cii_pseudonym::wire::to_bytes(&at_registry),
        });
        let actor = Some(pb::Actor {
            institution: "ORP-VS".into(),
            user: "anna.meier".into(),
        });
        let consent = pb::ConsentRecord {
            institutions: vec!["ORP-VS".into(), "AI-VS".into()],
            directions: vec![pb::Direction {
                from: "ORP-VS".into(),
                to: "AI-VS".into(),
            }],
            categories: vec!["job_search".into()],
            purposes: vec!["integration".into()],
            valid_from: Some(prost_types::Timestamp {
                seconds: now - 60,
                nanos: 0,
            }),
            valid_until: Some(prost_types::Timestamp {
                seconds: now + 86_400,
                nanos: 0,
            }),
            recurrence: pb::Recurrence::Recurring as i32,
            information_given: "explained".into(),
            language: "de".into(),
            ..pb::ConsentRecord::default()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let request = pb::RecordConsentRequest {
                held: None,
                actor: actor.clone(),
                person: person.clone(),
                consent: Some(consent.clone()),
            };
            match client.record_consent(request).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline && e.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("record {n}: {e:?}"),
            }
        }
        client
            .declare_relationship(pb::RelationshipRequest {
                person: person.clone(),
                actor: actor.clone(),
                capacity: "registered_job_seeker".into(),
                at: None,
            })
            .await
            .expect("declare");
        let answer = client
            .lookup(pb::LookupRequest {
                person,
                sender: "ORP-VS".into(),
                recipient: "AI-VS".into(),
                categories: vec!["job_search".into()],
                purpose: "integration".into(),
                at: None,
                transfer: String::new(),
            })
            .await
            .expect("lookup")
            .into_inner();
        assert_eq!(answer.consents.len(), 1);
        assert!(answer.sender_serves_person && !answer.recipient_serves_person);
    }
    drop(client);
    let mut running = _running;
    for child in &mut running.0 {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
    }
    let log_text = std::fs::read(&log).expect("log");
    assert!(
        String::from_utf8_lossy(&log_text).contains("DEBUG"),
        "logged at debug level"
    );
    let databases: Vec<_> = files_under(&dir.path().join("consent"));
    assert!(databases.iter().any(|p| p.ends_with("consent.db")), "{databases:?}");
    let mut found_registry_pseudonym = false;
    for path in databases.iter().chain(std::iter::once(&log)) {
        let bytes = std::fs::read(path).expect("read");
        assert!(
            !holds_any(&bytes, &forbidden),
            "{} holds an AVS number or another domain's pseudonym",
            path.display()
        );
        found_registry_pseudonym |= holds_any(&bytes, &registry_pseudonyms);
    }
    assert!(
        !holds_any(&log_text, &registry_pseudonyms),
        "the log holds a registry pseudonym"
    );
    assert!(
        found_registry_pseudonym,
        "the scan finds the registry's own pseudonyms in its database"
    );
}

/// Whether `haystack` contains any of `needles` anywhere (binary values have no token boundaries).
fn holds_any(haystack: &[u8], needles: &std::collections::HashSet<Vec<u8>>) -> bool {
    let lengths: std::collections::BTreeSet<usize> = needles.iter().map(Vec::len).collect();
    (0..haystack.len()).any(|at| {
        lengths
            .iter()
            .any(|&len| haystack.get(at..at + len).is_some_and(|w| needles.contains(w)))
    })
}

/// `cii enrol`: a caseload from CSV through the node, with a report by line and code that never
/// shows an AVS number.
/// A development token for `user` of `institution` with `role` (`cii pki token`), written to `file`.
fn write_token(dir: &Path, institution: &str, user: &str, role: &str, file: &str) {
    let token = cii(&[
        "pki",
        "token",
        "--network",
        "cii.test",
        "--dir",
        &dir.join("pki").to_string_lossy(),
        "--institution",
        institution,
        "--user",
        user,
        "--role",
        role,
    ]);
    assert!(token.status.success(), "pki token");
    std::fs::write(dir.join(file), &token.stdout).expect("token");
}

#[test]
fn batch_enrolment_from_csv_reports_refused_lines_by_number_and_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, nodes, _) = write_network(dir.path());
    let _running = Running(vec![
        start(dir.path(), "gateway", "gateway.toml"),
        start(dir.path(), "node", "node-orp.toml"),
    ]);
    let persons = synthetic_avs(60);
    let mut csv = String::from("avs_number,local_record_id\n");
    for (n, avs) in persons.iter().enumerate() {
        csv.push_str(&format!(
            "{},ORP-{n:04}\n",
            if n % 2 == 0 { dotted(avs) } else { avs.clone() }
        ));
    }
    let bad_check_digit = "756.1234.5678.98";
    csv.push_str(&format!("{bad_check_digit},ORP-9001\n")); // line 62
    csv.push_str(&format!("{},{}\n", persons[0], persons[0])); // line 63: record id is an AVS number
    std::fs::write(dir.path().join("caseload.csv"), &csv).expect("csv");
    write_token(dir.path(), "ORP-VS", "batch", "caseworker", "token");
    // Wait for the node to serve.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", nodes[0].0)).is_err() {
        assert!(Instant::now() < deadline, "node never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let enrol = |file: &str| {
        cii(&[
            "enrol",
            "--node",
            &format!("https://127.0.0.1:{}", nodes[0].0),
            "--ca",
            &dir.path().join("pki/ca.pem").to_string_lossy(),
            "--token-file",
            &dir.path().join("token").to_string_lossy(),
            "--csv",
            &dir.path().join(file).to_string_lossy(),
        ])
    };
    let out = enrol("caseload.csv");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("line 62: AVS_CHECK_DIGIT (avs_number)"), "{report}");
    assert!(
        report.contains("line 63: LOCAL_RECORD_ID_IS_AVS (local_record_id)"),
        "{report}"
    );
    assert!(report.contains("60 enrolled, 2 refused"), "{report}");
    // A person already enrolled under another record id is refused (a separate run: within one
    // file, which of two such lines wins is a race); the same file again changes nothing.
    std::fs::write(dir.path().join("again.csv"), format!("{},ORP-9003\n", persons[1])).expect("csv");
    let again = enrol("again.csv");
    let again_report = String::from_utf8_lossy(&again.stdout);
    assert!(
        again_report.contains("line 1: PERSON_ALREADY_ENROLLED (avs_number)"),
        "{again_report}"
    );
    let rerun = enrol("caseload.csv");
    assert!(String::from_utf8_lossy(&rerun.stdout).contains("60 enrolled, 2 refused"));
    let all_output = format!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !all_output.contains("1234.5678") && !all_output.contains(&persons[0]),
        "{all_output}"
    );

    // The DPO asks the log through the node: every enrolment, persons opened with the DPO key.
    write_token(dir.path(), "ORP-VS", "dpo", "dpo", "dpo.token");
    let path = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
    let node = format!("https://127.0.0.1:{}", nodes[0].0);
    let (ca, token, keys, global) = (
        path("pki/ca.pem"),
        path("dpo.token"),
        path("keys/dpo/ORP-VS/session-keys.json"),
        path("keys/global-public.json"),
    );
    // `cii audit <command>` as ORP's DPO; `dpo` adds ORP's DPO key (the gateway rekeys its answers into it).
    let plain = |command: &str, extra: &[&str]| {
        let mut args = vec!["audit", command, "--node", &node, "--ca", &ca, "--token-file", &token];
        args.extend_from_slice(extra);
        cii(&args)
    };
    let dpo = |command: &str, extra: &[&str]| {
        let mut args = vec!["--dpo-keys", keys.as_str(), "--global-public", global.as_str()];
        args.extend_from_slice(extra);
        plain(command, &args)
    };
    let query = |extra: &[&str]| dpo("query", extra);
    let csv = query(&["--format", "csv"]);
    let text = String::from_utf8_lossy(&csv.stdout).into_owned();
    assert!(csv.status.success(), "{text}{}", String::from_utf8_lossy(&csv.stderr));
    let rows: Vec<&str> = text.lines().filter(|l| l.contains(",ENROLMENT,")).collect();
    // 60 enrolled, and the refused re-enrolment, which reached the gateway before the node refused it.
    assert_eq!(rows.len(), 61, "{text}");
    let persons_seen: Vec<&str> = rows.iter().filter_map(|r| r.rsplit(',').next()).collect();
    let person = *persons_seen
        .iter()
        .find(|p| persons_seen.iter().filter(|q| q == p).count() == 1)
        .expect("a person enrolled once");
    assert_eq!(person.len(), 64, "a DPO-context pseudonym: {person}");
    let one = query(&["--person", person, "--format", "jsonl"]);
    let lines: Vec<String> = String::from_utf8_lossy(&one.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "exactly that person's entry: {lines:?}");
    assert!(lines[0].contains("\"kind\":\"ENROLMENT\""), "{lines:?}");
    let table = query(&["--limit", "3"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("3 entries"));
    let caseworker = cii(&[
        "audit",
        "query",
        "--node",
        &node,
        "--ca",
        &path("pki/ca.pem"),
        "--token-file",
        &path("token"),
    ]);
    assert_eq!(caseworker.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&caseworker.stderr).contains("ROLE_REQUIRED"));

    // A subject-access report from ORP's record, in German, with its HTML page.
    let report = dpo(
        "subject-report",
        &["--record", "ORP-0001", "--lang", "de", "--out", &path("reports")],
    );
    let text = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(
        report.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        text.starts_with("Auskunft über Personendaten (revDSG Art. 25)"),
        "{text}"
    );
    assert!(text.contains("keine Bekanntgabe"), "{text}");
    assert!(!text.contains(&persons[1]), "no AVS number in the report");
    let page = std::fs::read_to_string(dir.path().join("reports/subject-report-orp-0001-de.html")).expect("html");
    assert!(page.contains("<html lang=\"de\">"));

    // The month's usage report: HTML and CSV files, a summary line.
    let month = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!("[year]-[month]"))
        .expect("month");
    let usage = plain("usage-report", &["--month", &month, "--out", &path("reports")]);
    let summary = String::from_utf8_lossy(&usage.stdout).into_owned();
    assert!(
        usage.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&usage.stderr)
    );
    assert!(
        summary.contains("0 permitted, 0 refused; obligations: 0 open, 0 overdue"),
        "{summary}"
    );
    let csv = std::fs::read_to_string(dir.path().join(format!("reports/usage-ORP-VS-{month}.csv"))).expect("csv");
    assert!(
        csv.starts_with("section,key,permitted,refused\ntotal,all,0,0\n"),
        "{csv}"
    );
    assert!(dir.path().join(format!("reports/usage-ORP-VS-{month}.html")).exists());

    // An export with proofs, checked offline with the published verifier key; an altered line fails.
    let export = plain("export", &[]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let exported = String::from_utf8_lossy(&export.stdout).into_owned();
    assert!(exported.lines().count() >= 61, "{exported}");
    std::fs::write(dir.path().join("export.jsonl"), &exported).expect("export file");
    let vkey = cii(&["audit", "vkey", "--config", &path("gateway.toml")]);
    let vkey = String::from_utf8_lossy(&vkey.stdout).trim().to_owned();
    let check = |file: &str| cii(&["audit", "check-export", "--vkey", &vkey, &path(file)]);
    let ok = check("export.jsonl");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: "));
    let mut lines: Vec<serde_json::Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let other = lines[3]["entry"].clone();
    lines[2]["entry"] = other;
    let altered: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("altered.jsonl"), altered).expect("altered file");
    let bad = check("altered.jsonl");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("FAILED: line 3"),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );

    // Retention: the DPO may not; an operator's dry run reports and destroys nothing.
    let refused = plain("retention", &["--dry-run"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ROLE_REQUIRED"));
    write_token(dir.path(), "ORP-VS", "ops", "operator", "operator.token");
    let operator = path("operator.token");
    let dry = cii(&[
        "audit",
        "retention",
        "--node",
        &node,
        "--ca",
        &ca,
        "--token-file",
        &operator,
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(dry.status.success(), "{text}{}", String::from_utf8_lossy(&dry.stderr));
    assert!(text.starts_with("retention: 365 days, cutoff "), "{text}");
    assert!(text.contains("no month has passed the limit"), "{text}");
    assert!(text.contains("logged as entry "), "{text}");
    let verify = cii(&["audit", "verify", "--config", &path("gateway.toml")]);
    assert!(String::from_utf8_lossy(&verify.stdout).starts_with("ok: "));
}

#[test]
fn bench_prints_its_headline_and_a_json_last_line() {
    let out = cii(&["bench", "policy", "--seconds", "1", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("policy.decisions_per_s"), "{text}");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a last line")).expect("json");
    assert!(last["policy"]["decisions_per_s"].as_f64().expect("a number") > 0.0);
    assert!(last.get("pseudonyms").is_none(), "a section not run is absent");
    let audit = cii(&["bench", "audit", "--concurrency", "8", "--json"]);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    let text = String::from_utf8_lossy(&audit.stdout).into_owned();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a last line")).expect("json");
    assert!(last["audit"]["sqlite_ratio"].as_f64().expect("a ratio") > 0.0, "{text}");
    // The whole pipeline, briefly: processes started, transfers delivered, both baselines, RSS.
    let pipeline = cii(&["bench", "pipeline", "--seconds", "1", "--concurrency", "4", "--json"]);
    let text = String::from_utf8_lossy(&pipeline.stdout).into_owned();
    assert!(
        pipeline.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&pipeline.stderr)
    );
    assert!(text.contains("pipeline.crypto_floor_ratio"), "{text}");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a last line")).expect("json");
    for key in [
        "throughput_per_s",
        "p50_ms",
        "p99_ms",
        "crypto_floor_ratio",
        "relay_ratio",
    ] {
        assert!(last["pipeline"][key].as_f64().expect(key) > 0.0, "{key}: {text}");
    }
    assert!(
        last["pipeline"]["errors"].as_object().expect("errors").is_empty(),
        "{text}"
    );
    // The open loop: half the answered rate offered, its latencies measured from each call's due time.
    let open = &last["pipeline"]["open_loop"];
    let answered = last["pipeline"]["answered_per_s"].as_f64().expect("answered");
    let offered = open["offered_per_s"].as_f64().expect("offered");
    assert!(((answered / 2.0).max(1.0) - offered).abs() < 1e-6, "{text}");
    assert!(open["p99_ms"].as_f64().expect("p99") > 0.0, "{text}");
    assert_eq!(open["failed"].as_u64(), Some(0), "{text}");
    assert!(last["gateway"]["peak_rss_mb"].as_f64().expect("rss") > 1.0, "{text}");
    for key in ["rss_start_mb", "rss_end_mb"] {
        assert!(last["gateway"][key].as_f64().expect(key) > 1.0, "{key}: {text}");
    }
    assert!(last["gateway"]["entries"].as_u64().expect("entries") > 0, "{text}");
}

/// `cii bench pipeline --gateways 2 --postgres URL`, briefly: one gateway, then two sharing
/// their stores on a real PostgreSQL, each node knowing both; the ratio between them reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_bench_runs_several_gateways_on_postgres() {
    let url = cii_tests::pg::fresh_database().await;
    let refused = cii(&["bench", "pipeline", "--gateways", "2"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--postgres"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let run = tokio::task::spawn_blocking(move || {
        cii(&[
            "bench",
            "pipeline",
            "--seconds",
            "1",
            "--concurrency",
            "4",
            "--gateways",
            "2",
            "--postgres",
            &url,
            "--json",
        ])
    })
    .await
    .expect("bench");
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{text}{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        text.contains("gateway-2"),
        "the second gateway's CPU is in the table: {text}"
    );
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a last line")).expect("json");
    let pipeline = &last["pipeline"];
    assert_eq!(pipeline["gateways"].as_u64(), Some(2), "{text}");
    for key in ["throughput_per_s", "one_gateway_per_s", "ratio_to_one_gateway"] {
        assert!(pipeline[key].as_f64().expect(key) > 0.0, "{key}: {text}");
    }
    assert!(pipeline["errors"].as_object().expect("errors").is_empty(), "{text}");
    assert_eq!(pipeline["backlog"].as_u64(), Some(0), "{text}");
}

/// `cii bench pipeline --transcryptors 2` and `cii bench pseudonyms`, briefly: the pipeline with
/// one transcryptor and then two (the second a process, its CPU in the table), and the second
/// hop's cryptography, each as a ratio to one transcryptor measured in the same run.
#[test]
fn the_benches_report_the_cost_of_the_second_transcryptor() {
    let run = cii(&[
        "bench",
        "pipeline",
        "--seconds",
        "1",
        "--concurrency",
        "4",
        "--transcryptors",
        "2",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{text}{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        text.contains("transcryptor"),
        "the second transcryptor's CPU is in the table: {text}"
    );
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a last line")).expect("json");
    let pipeline = &last["pipeline"];
    assert_eq!(pipeline["transcryptors"].as_u64(), Some(2), "{text}");
    for key in [
        "throughput_per_s",
        "one_transcryptor_per_s",
        "ratio_to_one_transcryptor",
    ] {
        assert!(pipeline[key].as_f64().expect(key) > 0.0, "{key}: {text}");
    }
    assert!(pipeline["errors"].as_object().expect("errors").is_empty(), "{text}");
    let run = cii(&["bench", "pseudonyms", "--seconds", "1", "--json"]);
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{text}{}", String::from_utf8_lossy(&run.stderr));
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a last line")).expect("json");
    let ratio = last["pseudonyms"]["ratio_two_to_one_transcryptor"]
        .as_f64()
        .expect("ratio");
    assert!(ratio > 0.0 && ratio < 1.0, "a second hop costs something: {text}");
}

/// `cii soak`, briefly: the mixed load answered as each kind must be, the books balanced (every
/// permit delivered once, every decision logged once), the log verified, RSS sampled.
#[test]
fn the_soak_balances_its_books() {
    let soak = cii(&["soak", "--minutes", "0.1", "--concurrency", "4", "--json"]);
    let text = String::from_utf8_lossy(&soak.stdout).into_owned();
    assert!(soak.status.success(), "{text}{}", String::from_utf8_lossy(&soak.stderr));
    assert!(text.contains("books: balanced"), "{text}");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a last line")).expect("json");
    for code in ["PERMIT", "DENY", "TRANSFER_ID_INVALID"] {
        assert!(last["answers"][code].as_u64().expect(code) > 0, "{code}: {text}");
    }
    assert_eq!(last["delivered"], last["answers"]["PERMIT"], "{text}");
    assert_eq!(last["log_verified"], true, "{text}");
    assert!(!last["gateway_rss_mb"].as_array().expect("rss").is_empty(), "{text}");
}

/// `cii demo` plays the Valais story to the end; its printed table and the
/// audit log agree row by row; no AVS number is printed; the folder has the
/// documented layout and `cii audit verify --config DIR/gateway.toml` works on it.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_plays_its_story_and_its_table_agrees_with_the_audit_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo_dir = dir.path().join("vs");
    let out = cii(&["demo", "--dir", &demo_dir.to_string_lossy()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("every step behaved as the story says"), "{text}");
    for avs in ["756.1234.5678.97", "756.9217.0769.85", "7561234567897", "7569217076985"] {
        assert!(!text.contains(avs), "an AVS number in the output");
    }
    for path in [
        "gateway.toml",
        "gateway/audit.db",
        "gateway/gateway.db",
        "gateway/audit.key",
        "gateway/gateway.log",
        "consent/consent.db",
        "nodes/ORP-VS/node.db",
        "nodes/SUVA/node.toml",
        "dpo/audit-session-keys.json",
        "dpo/ORP-VS/session-keys.json",
        "dpo/subject-report-orp-2026-0417-fr.html",
        "matrix.html",
    ] {
        assert!(demo_dir.join(path).exists(), "{path} is missing");
    }
    let report = std::fs::read_to_string(demo_dir.join("dpo/subject-report-orp-2026-0417-fr.txt")).expect("report");
    assert!(report.contains("demo-01") && !report.contains("756."), "{report}");

    // The table: `# | step | from → to | exchange | decision | released | withheld | basis or reason | id`.
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()) && l.contains(" | "))
        .map(|l| l.split(" | ").map(|c| c.trim().to_owned()).collect())
        .collect();
    assert_eq!(rows.len(), 9, "{text}");
    let decisions: Vec<&str> = rows.iter().map(|r| r[4].as_str()).collect();
    assert_eq!(
        decisions,
        [
            "PERMIT", "recorded", "PERMIT", "DENY", "PERMIT", "recorded", "PERMIT", "revoked", "DENY"
        ]
    );
    let entries = {
        let url = format!("sqlite:{}", demo_dir.join("gateway/audit.db").display());
        let store = cii_audit::Store::open_read_only(&url).await.expect("store");
        let stored = store.entries(0, 1000).await.expect("entries");
        store.close().await;
        stored
            .iter()
            .map(|e| cii_audit::entry::decode(e.readable().expect("readable")).expect("decode"))
            .collect::<Vec<_>>()
    };
    let list = |cell: &str| -> Vec<String> {
        if cell == "—" {
            Vec::new()
        } else {
            cell.split(", ").map(str::to_owned).collect()
        }
    };
    for row in &rows {
        let (decision, id) = (row[4].as_str(), row[8].as_str());
        match decision {
            "PERMIT" | "DENY" => {
                let logged: Vec<_> = entries.iter().filter(|e| e.transfer_id == id).collect();
                assert_eq!(logged.len(), 1, "{id}: one entry");
                let kind = if decision == "PERMIT" {
                    cii_audit::EntryKind::TransferPermitted
                } else {
                    cii_audit::EntryKind::TransferDenied
                };
                assert_eq!(logged[0].kind, kind as i32, "{id}");
                let (from, to) = row[2].split_once(" → ").expect("from → to");
                assert_eq!(
                    (logged[0].sender.as_str(), logged[0].recipient.as_str()),
                    (from, to),
                    "{id}"
                );
                assert_eq!(logged[0].released, list(&row[5]), "{id}: released");
                let withheld: Vec<String> = logged[0]
                    .withheld
                    .iter()
                    .map(|w| w.split(':').next().unwrap_or_default().to_owned())
                    .collect();
                assert_eq!(withheld, list(&row[6]), "{id}: withheld");
                assert_eq!(
                    logged[0].exchange_type.rsplit('.').next(),
                    Some(row[3].as_str()),
                    "{id}"
                );
            }
            "recorded" | "revoked" => {
                let kind = if decision == "recorded" {
                    cii_audit::EntryKind::ConsentRecorded
                } else {
                    cii_audit::EntryKind::ConsentRevoked
                };
                assert!(
                    entries
                        .iter()
                        .any(|e| e.kind == kind as i32 && e.consents.iter().any(|c| c.starts_with(&format!("{id}@")))),
                    "{id}: {decision} is logged"
                );
            }
            other => panic!("unexpected decision {other}"),
        }
    }
    let verify = cii(&[
        "audit",
        "verify",
        "--config",
        &demo_dir.join("gateway.toml").to_string_lossy(),
    ]);
    assert!(
        String::from_utf8_lossy(&verify.stdout).starts_with("ok: "),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // A jurist replays an amended rulebook on the demo's log: LAI 3b al. 2 let. i no longer
    // carries health limitations, so the early-detection report of step 1 would change.
    let log = format!("sqlite:{}", demo_dir.join("gateway/audit.db").display());
    let registry = demo_dir.join("registry.toml");
    let replay = |rulebook: &std::path::Path| {
        cii(&[
            "policy",
            "replay",
            "--log",
            &log,
            "--registry",
            &registry.to_string_lossy(),
            "--rulebook",
            &rulebook.to_string_lossy(),
        ])
    };
    let unchanged = replay(&demo_dir.join("rulebook"));
    let text = String::from_utf8_lossy(&unchanged.stdout).into_owned();
    assert!(
        unchanged.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&unchanged.stderr)
    );
    assert!(
        text.contains(" 0 changed, 0 cannot be replayed"),
        "the rulebook that decided replays the same: {text}"
    );
    let amended = dir.path().join("amended");
    std::fs::create_dir_all(&amended).expect("dir");
    let federal = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway/policy/rulebook/federal");
    for file in std::fs::read_dir(&federal)
        .expect("federal")
        .flatten()
        .filter(|f| f.path().is_file())
    {
        let text = std::fs::read_to_string(file.path()).expect("read").replace(
            "categories = [\"identity\", \"contact\", \"employment_status\", \"health_limitations\", \"incapacity_certificate\"]\nconditions = [\"case_by_case\", \"early_detection_target_group\", \"person_informed_before\"]\nnote = \"Written early-detection report by the AC",
            "categories = [\"identity\", \"contact\", \"employment_status\", \"incapacity_certificate\"]\nconditions = [\"case_by_case\", \"early_detection_target_group\", \"person_informed_before\"]\nnote = \"Written early-detection report by the AC",
        );
        std::fs::write(amended.join(file.file_name()), text).expect("write");
    }
    let valais = std::fs::read_to_string(demo_dir.join("rulebook/00-canton.toml")).expect("vs");
    std::fs::write(
        amended.join("60-vs.toml"),
        valais.replace("extends = \"federal\"\n", ""),
    )
    .expect("write");
    let changed = replay(&amended);
    let text = String::from_utf8_lossy(&changed.stdout).into_owned();
    assert_eq!(
        changed.status.code(),
        Some(2),
        "{text}{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("≠ ") && l.contains("demo-01 ORP-VS → AI-VS") && l.contains("health_limitations")),
        "{text}"
    );
    assert!(text.contains(" 1 changed, 0 cannot be replayed"), "{text}");
    // Everything was stopped: the demo's folder can be reused by nobody else's process.
    let again = cii(&["demo", "--dir", &demo_dir.to_string_lossy()]);
    assert!(!again.status.success(), "a non-empty folder is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}

/// `cii demo --transcryptors 2`: the same story with the key ceremony in shares and the second
/// transcryptor a process of the independent witness's; every step behaves as with one, the
/// DPO's subject-access report included (persons rekeyed from the log through both).
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_plays_its_story_through_two_transcryptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo_dir = dir.path().join("vs");
    let out = cii(&["demo", "--transcryptors", "2", "--dir", &demo_dir.to_string_lossy()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("every step behaved as the story says"), "{text}");
    let gateway = std::fs::read_to_string(demo_dir.join("gateway.toml")).expect("gateway.toml");
    assert!(gateway.contains("second_transcryptor"), "{gateway}");
    let log = std::fs::read_to_string(demo_dir.join("witness/transcryptor.log")).expect("its log");
    assert!(log.contains("transcryptor serving"), "{log}");
    let report = std::fs::read_to_string(demo_dir.join("dpo/subject-report-orp-2026-0417-fr.txt")).expect("report");
    assert!(report.contains("demo-01"), "{report}");
    assert!(!demo_dir.join("global-secret.json").exists());
}

/// The Valais rulebook's scenarios (the jurist guide's example) pass.
#[test]
fn the_valais_scenarios_pass() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rulebook");
    let out = cii(&[
        "policy",
        "test",
        "--rulebook",
        &deploy.join("vs").to_string_lossy(),
        "--scenarios",
        &deploy.join("vs-scenarios.toml").to_string_lossy(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().last(), Some("14 passed, 0 failed"), "{text}");
}

/// An entry that does not decode, planted in the store under a validly signed checkpoint
/// (the gateway's writer refuses such entries): `verify` lists it, checks the rest, exits 3.
#[tokio::test(flavor = "multi_thread")]
async fn verify_lists_an_undecodable_entry_checks_the_rest_and_exits_3() {
    use cii_audit::merkle::{Tree, leaf_hash};
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("audit.db").display());
    let origin = "cii.test/audit";
    let signer =
        cii_audit::note::Signer::from_pem(origin, &cii_audit::note::generate_key_pem().expect("key")).expect("signer");
    let vkey = signer.verifier().vkey();
    let entry = |index: u64, detail: String| {
        cii_audit::entry::encode(&cii_audit::Entry {
            index,
            time_micros: 1_790_000_000_000_000,
            kind: cii_audit::EntryKind::AdminAction as i32,
            detail,
            ..cii_audit::Entry::default()
        })
    };
    let store = cii_audit::Store::open(&url).await.expect("store");
    let mut tree = Tree::new();
    for (index, bytes) in [
        (0, entry(0, "before".into())),
        (1, entry(1, "x".repeat(100_000))),
        (2, entry(2, "after".into())),
    ] {
        let leaf = leaf_hash(&bytes);
        tree.push(leaf);
        let row = cii_audit::store::NewEntry {
            index,
            leaf_hash: leaf,
            bytes,
            time_micros: 1_790_000_000_000_000,
        };
        let note = signer.sign(
            &cii_audit::note::Checkpoint {
                origin: origin.into(),
                size: tree.size(),
                root: tree.root(),
            }
            .body(),
        );
        store.append(&[row], &[], (tree.size(), &note)).await.expect("append");
    }
    store.close().await;
    let out = cii(&["audit", "verify", "--store", &url, "--vkey", &vkey]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.starts_with("ok: 3 entries, 3 signed checkpoints"), "{text}");
    assert!(
        text.contains("UNDECODABLE: entry 1: entry larger than 65536 bytes"),
        "{text}"
    );
}

/// A rotation from what `keys init --keep-global-secret` kept: every file for the new epoch,
/// the gateway's secrets unchanged (pseudonyms stay), new session and DPO keys; an epoch that
/// does not move forward is refused.
#[test]
fn keys_rotate_issues_the_next_epoch_from_the_kept_global_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    let dir = dir.path();
    let pki = dir.join("pki").to_string_lossy().into_owned();
    let out = cii(&[
        "pki",
        "init",
        "--dir",
        &pki,
        "--institution",
        "ORP-VS",
        "--institution",
        "AI-VS",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(
        dir.join("registry.toml"),
        registry(&[("ORP-VS", "AC_ORP", 1), ("AI-VS", "AI", 2)]),
    )
    .expect("registry");
    let (first, second, secret) = (dir.join("keys-1"), dir.join("keys-2"), dir.join("global-secret.json"));
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let out = cii(&[
        "keys",
        "init",
        "--dir",
        &s(&first),
        "--registry",
        &s(&dir.join("registry.toml")),
        "--keep-global-secret",
        &s(&secret),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rotate = |epoch: &str| {
        cii(&[
            "keys",
            "rotate",
            "--from",
            &s(&first),
            "--global-secret",
            &s(&secret),
            "--registry",
            &s(&dir.join("registry.toml")),
            "--epoch",
            epoch,
            "--dir",
            &s(&second),
        ])
    };
    let refused = rotate("1");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("moves forward"));
    let out = rotate("2");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).expect("file");
    let json = |p: std::path::PathBuf| serde_json::from_str::<serde_json::Value>(&read(p)).expect("json");
    let (old, new) = (
        json(first.join("gateway/transcryptor.json")),
        json(second.join("gateway/transcryptor.json")),
    );
    assert_eq!(new["epoch"], 2);
    assert_eq!(new["rekeying_secret"], old["rekeying_secret"]);
    assert_eq!(new["pseudonymisation_secret"], old["pseudonymisation_secret"]);
    assert_eq!(
        read(second.join("global-public.json")),
        read(first.join("global-public.json"))
    );
    for file in [
        "dpo/ORP-VS/session-keys.json",
        "institutions/AI-VS/session-keys.json",
        "dpo/audit-session-keys.json",
    ] {
        assert_ne!(read(second.join(file)), read(first.join(file)), "{file} changes");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(second.join(file)).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{file} is secret");
    }
    assert!(
        !second.join("global-secret.json").exists(),
        "the global secret stays offline"
    );
}

/// `cii transcryptor compare`: the second transcryptor's own log against the gateway's audit
/// log, both verified first. After enrolments and a transfer through two transcryptors: no
/// difference. A transcription planted in its log (one the gateway never logged) is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_transcryptors_log_matches_the_gateways_and_a_planted_difference_is_reported() {
    use cii_proto::gateway as gw;
    use cii_proto::node as node_pb;
    let members = [
        cii_tests::member("ORP-VS", cii_types::InstitutionType::AcOrp),
        cii_tests::member("AI-VS", cii_types::InstitutionType::Ai),
    ];
    let options = cii_tests::Options {
        two_transcryptors: true,
        ..cii_tests::Options::default()
    };
    let mut net = cii_tests::Network::start_with(&members, options).await;
    let token = |i: usize| net.token(i, "caseworker.1", &[cii_types::Role::Caseworker]);
    for i in [0, 1] {
        let enrol = node_pb::EnrolRequest {
            avs_number: "756.1234.5678.97".into(),
            local_record_id: format!("R-{i}"),
        };
        NodeClient::new(net.node_api_channel(i))
            .enrol(cii_tests::with_token(enrol, &token(i)))
            .await
            .expect("enrol");
    }
    let report = cii_proto::exchange::EarlyDetectionReport {
        health_limitations: "no heavy loads".into(),
        ..Default::default()
    };
    let send = node_pb::SendRequest {
        transfer_id: "t-1".into(),
        recipient: "AI-VS".into(),
        local_record_id: "R-0".into(),
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        case_reference: "case-1".into(),
        payload: Some(prost_types::Any {
            type_url: "type.googleapis.com/cii.exchange.v1.EarlyDetectionReport".into(),
            value: prost::Message::encode_to_vec(&report),
        }),
        attested_facts: vec![
            "person_informed_before".into(),
            "incapacity_for_work_or_threatened".into(),
        ],
        ..node_pb::SendRequest::default()
    };
    NodeClient::new(net.node_api_channel(0))
        .send(cii_tests::with_token(send, &token(0)))
        .await
        .expect("sent");
    net.stop_transcryptor().await;
    let dir = net.dir.path().to_owned();
    let vkey = std::fs::read_to_string(dir.join("pki/gateway/audit.vkey")).expect("vkey");
    let compare = || {
        cii(&[
            "transcryptor",
            "compare",
            "--config",
            dir.join("transcryptor.toml").to_str().expect("path"),
            "--audit-store",
            &format!("sqlite:{}", dir.join("gateway/audit.db").display()),
            "--audit-vkey",
            vkey.trim(),
        ])
    };
    let out = compare();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(": 0 difference(s)"), "{text}");
    // Two enrolments, and the push's two stages (consult, then the recipient's keys).
    assert!(text.starts_with("4 transcriptions,"), "{text}");

    // Planted: a transcription its log records that the gateway never logged.
    {
        let config = cii_transcryptor::TranscryptorConfig::load(&dir.join("transcryptor.toml")).expect("config");
        let (url, signer) = config.transcriptions.clone();
        let store = cii_audit::Store::open(&url).await.expect("store");
        let (log, sequencer) = cii_audit::Log::open(store.clone(), signer, config.file.transcriptions.origin.clone())
            .await
            .expect("log");
        log.append(cii_audit::Entry {
            kind: cii_audit::EntryKind::Transcribed as i32,
            time_micros: 1,
            sender: "ORP-VS".into(),
            recipient: "AI-VS".into(),
            transfer_id: "never-logged".into(),
            detail: "purpose=transfer operations=1".into(),
            ..cii_audit::Entry::default()
        })
        .await
        .expect("planted");
        drop(log);
        let _ = sequencer.await;
        store.close().await;
    }
    let out = compare();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<&str> = text.lines().filter(|l| l.starts_with("DIFFERENCE: ")).collect();
    assert_eq!(
        listed,
        ["DIFFERENCE: transcribed, not in the gateway's log: transfer AI-VS ↔ ORP-VS never-logged (1×)"],
        "{text}"
    );
    net.stop().await;
}
