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

/// `--transcryptors 2`: a ceremony in shares — the gateway's file is the first of two, the
/// second transcryptor's secrets are a file of their own (0600), no global secret can be kept,
/// and `keys rotate` refuses it rather than misreading it.
#[test]
fn a_ceremony_in_shares_gives_the_second_transcryptor_its_own_half() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let registry = registry(dir.path());
    let init = |extra: &[&str]| {
        let mut args = vec!["keys", "init", "--dir", keys.to_str().unwrap(), "--registry", &registry];
        args.extend_from_slice(extra);
        cii(&args)
    };
    let kept = init(&["--transcryptors", "2", "--keep-global-secret", "/tmp/nowhere.json"]);
    assert!(!kept.status.success());
    assert!(String::from_utf8_lossy(&kept.stderr).contains("no global secret key"));
    let out = init(&["--transcryptors", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&keys.join("transcryptor/secrets.json")), 0o600);
    let gateway: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys.join("gateway/transcryptor.json")).unwrap()).unwrap();
    assert_eq!(gateway["transcryptors"], 2);
    let read = |p: &str| std::fs::read_to_string(keys.join(p)).unwrap();
    let first =
        cii_pseudonym::gateway::Gateway::from_json(&read("gateway/transcryptor.json"), &read("global-public.json"))
            .expect("the gateway's half");
    assert_eq!(first.transcryptors(), 2);
    cii_pseudonym::shares::TranscryptorSecrets::from_json(&read("transcryptor/secrets.json")).expect("the second half");
    let rotate = cii(&[
        "keys",
        "rotate",
        "--from",
        keys.to_str().unwrap(),
        "--global-secret",
        "/tmp/nowhere.json",
        "--registry",
        &registry,
        "--epoch",
        "2",
        "--dir",
        dir.path().join("next").to_str().unwrap(),
    ]);
    assert!(!rotate.status.success());
    assert!(
        String::from_utf8_lossy(&rotate.stderr).contains("ceremony in shares"),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
}
