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

const GATEWAY_TOML: &str = "listen = \"127.0.0.1:{GW}\"\nregistry = \"registry.toml\"\n\n[tls]\nca = \"pki/ca.pem\"\n\
cert = \"pki/gateway/cert.pem\"\nkey = \"pki/gateway/key.pem\"\n\n[audit]\nstore = \"sqlite:audit.db\"\n\
origin = \"cii.test/audit\"\nsigning_key = \"pki/gateway/audit.key\"\n\n[pseudonym]\n\
transcryptor = \"keys/gateway/transcryptor.json\"\nglobal_public = \"keys/global-public.json\"\n\
enrolment_burst = 5000\n\n[log]\nlevel = \"debug\"\n";

fn registry(ports: &[(&str, &str, u16)]) -> String {
    ports
        .iter()
        .map(|(id, kind, inbound)| {
            format!(
                "[[institution]]\nid = \"{id}\"\ntype = \"{kind}\"\ncanton = \"VS\"\nname = \"{id}\"\n\
                 endpoint = \"https://127.0.0.1:{inbound}\"\n[[institution.jwt_keys]]\nkid = \"dev-1\"\n\
                 public_key_file = \"pki/institutions/{id}/jwt.pub\"\n\n"
            )
        })
        .collect()
}

fn node_toml(id: &str, gateway: u16, api: u16, inbound: u16) -> String {
    format!(
        "institution = \"{id}\"\nregistry = \"registry.toml\"\ngateway_url = \"https://127.0.0.1:{gateway}\"\n\
         api_listen = \"127.0.0.1:{api}\"\ninbound_listen = \"127.0.0.1:{inbound}\"\n\n[tls]\nca = \"pki/ca.pem\"\n\
         cert = \"pki/institutions/{id}/cert.pem\"\nkey = \"pki/institutions/{id}/key.pem\"\n\n\
         [pseudonym]\nglobal_public = \"keys/global-public.json\"\nsession_keys = \"keys/institutions/{id}/session-keys.json\"\n\n\
         [store]\ndatabase = \"sqlite:nodes/{id}/node.db\"\nkey = \"nodes/{id}/store.key\"\n\n[log]\nlevel = \"debug\"\n"
    )
}

/// A dev network's files in `dir`: PKI, registry, gateway and node configs. Returns (gateway, [(api, inbound)]).
fn write_network(dir: &Path) -> (u16, Vec<(u16, u16)>) {
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
    std::fs::write(
        dir.join("gateway.toml"),
        GATEWAY_TOML.replace("{GW}", &gateway.to_string()),
    )
    .expect("gateway");
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
    (gateway, nodes)
}

#[test]
fn a_broken_config_names_the_key_and_exits_without_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_network(dir.path());
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "gateway",
            "gateway.toml",
            "registry = \"registry.toml\"\n",
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
    let (_, nodes) = write_network(dir.path());
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

/// `cii audit …` on the log the gateway left: it holds the rulebook activation.
fn audit_commands_read_the_stopped_gateways_log(dir: &Path) {
    let config = dir.join("gateway.toml").to_string_lossy().into_owned();
    let out = cii(&["audit", "verify", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "verify: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("ok: 1 entries"), "{text}");

    let note = String::from_utf8(cii(&["audit", "checkpoint", "--config", &config]).stdout).expect("utf8");
    assert!(
        note.starts_with("cii.test/audit\n1\n") && note.contains("\n\n\u{2014} cii.test/audit "),
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
    assert_eq!(proof["tree_size"], 1);
    assert_eq!(proof["inclusion_proof"].as_array().map(Vec::len), Some(0));
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
