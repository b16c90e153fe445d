//! `cii keys init`: each party gets its own material, secrets are 0600, and
//! the gateway's files hold no session key and no global secret.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn cii(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cii"))
        .args(args)
        .output()
        .expect("run cii")
}

fn registry(dir: &Path) -> String {
    let path = dir.join("registry.toml");
    let key = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
    let mut text = String::from("network = \"cii.test\"\nversion = 1\n\n");
    for (id, kind) in [("ORP-VS", "AC_ORP"), ("AI-VS", "AI")] {
        text.push_str(&format!(
            "[[institution]]\nid = \"{id}\"\ntype = \"{kind}\"\ncanton = \"VS\"\nname = \"{id}\"\nendpoint = \"https://localhost:1\"\n\
             [[institution.jwt_keys]]\nkid = \"k\"\npublic_key = \"\"\"{key}\"\"\"\n\n"
        ));
    }
    std::fs::write(&path, text).expect("registry");
    path.to_string_lossy().into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn the_ceremony_gives_each_party_its_own_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let out = cii(&[
        "keys",
        "init",
        "--dir",
        &keys.to_string_lossy(),
        "--registry",
        &registry(dir.path()),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for secret in [
        "gateway/transcryptor.json",
        "consent/session-keys.json",
        "dpo/audit-session-keys.json",
        "institutions/ORP-VS/session-keys.json",
        "institutions/AI-VS/session-keys.json",
    ] {
        assert_eq!(mode(&keys.join(secret)), 0o600, "{secret}");
    }
    // Session keys load as libpep SessionKeys.
    let orp: libpep::prelude::SessionKeys =
        serde_json::from_str(&std::fs::read_to_string(keys.join("institutions/ORP-VS/session-keys.json")).unwrap())
            .expect("session keys");
    let ai: libpep::prelude::SessionKeys =
        serde_json::from_str(&std::fs::read_to_string(keys.join("institutions/AI-VS/session-keys.json")).unwrap())
            .expect("session keys");
    assert_ne!(
        serde_json::to_string(&orp).unwrap(),
        serde_json::to_string(&ai).unwrap()
    );
    // The gateway's file holds exactly its two secrets and the epoch: no session key, no global secret.
    let gateway: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys.join("gateway/transcryptor.json")).unwrap()).expect("json");
    let mut fields: Vec<&str> = gateway.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["epoch", "pseudonymisation_secret", "rekeying_secret"]);
    // No session secret of any party appears in the gateway's directory.
    let gateway_text = std::fs::read_to_string(keys.join("gateway/transcryptor.json")).unwrap();
    for party in [
        "consent/session-keys.json",
        "dpo/audit-session-keys.json",
        "institutions/ORP-VS/session-keys.json",
    ] {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(keys.join(party)).unwrap()).unwrap();
        for secret in [&v["pseudonym"]["secret"], &v["attribute"]["secret"]] {
            let s = secret.as_str().expect("a session secret");
            assert_eq!(s.len(), 64);
            assert!(!gateway_text.contains(s), "{party}'s secret in the gateway's file");
        }
    }
    // The global secret is discarded: nowhere in the directory.
    let all: Vec<_> = walk(&keys);
    assert!(
        all.iter().all(|p| !p.to_string_lossy().contains("global-secret")),
        "{all:?}"
    );
    // A second ceremony in the same folder is refused.
    let again = cii(&[
        "keys",
        "init",
        "--dir",
        &keys.to_string_lossy(),
        "--registry",
        &registry(dir.path()),
    ]);
    assert!(!again.status.success());
}

#[test]
fn the_global_secret_is_kept_only_when_asked_and_outside_the_key_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let offline = dir.path().join("offline/global-secret.json");
    let out = cii(&[
        "keys",
        "init",
        "--dir",
        &keys.to_string_lossy(),
        "--registry",
        &registry(dir.path()),
        "--keep-global-secret",
        &offline.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&offline), 0o600);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&offline).unwrap()).unwrap();
    assert_eq!(v["pseudonym"].as_str().map(str::len), Some(64));
    assert!(
        walk(&keys)
            .iter()
            .all(|p| !p.to_string_lossy().contains("global-secret"))
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
