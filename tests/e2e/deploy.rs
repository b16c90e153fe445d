//! Every config file under deploy/ loads: the dev quickstart as it is, the
//! production examples with /etc/cii/ mapped to a temporary folder.

use std::path::{Path, PathBuf};

use cii_types::InstitutionId;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Copies the `.toml` files of `from` into `to`, replacing `/etc/cii` by `to`.
fn copy_configs(from: &Path, to: &Path) -> Vec<PathBuf> {
    let mut copied = Vec::new();
    for entry in std::fs::read_dir(from).expect("read deploy dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path)
                .expect("read")
                .replace("/etc/cii", &to.display().to_string());
            let target = to.join(path.file_name().expect("name"));
            std::fs::write(&target, text).expect("write");
            copied.push(target);
        }
    }
    copied.sort();
    copied
}

fn load_all(dir: &Path, institutions: &[&str]) -> usize {
    let ids: Vec<InstitutionId> = institutions
        .iter()
        .map(|i| InstitutionId::parse("id", i).expect("id"))
        .collect();
    cii_kit::pki::init(&dir.join("pki"), &ids, &["localhost".into()]).expect("pki");
    cii_tests::write_keys(&dir.join("keys"), &ids);
    cii_tests::write_vkey(&dir.join("pki"), "cii.example/audit");
    std::fs::copy(dir.join("pki/gateway/audit.vkey"), dir.join("audit.vkey")).expect("vkey");
    // The production example keeps the node's store key apart from the ceremony's files.
    std::fs::create_dir_all(dir.join("node")).expect("mkdir");
    cii_tests::write_file(&dir.join("node/store.key"), &"42".repeat(32), true);
    let files = copy_configs_in_place(dir);
    let mut loaded = 0;
    for file in &files {
        let name = file.file_name().expect("name").to_string_lossy().into_owned();
        if name.starts_with("gateway") {
            cii_gateway::GatewayConfig::load(file).unwrap_or_else(|e| panic!("{e}"));
        } else if name.starts_with("consent") {
            cii_consent::ConsentConfig::load(file).unwrap_or_else(|e| panic!("{e}"));
        } else if name.starts_with("node-") {
            cii_node::NodeConfig::load(file).unwrap_or_else(|e| panic!("{e}"));
        } else if name == "registry.toml" {
            cii_kit::registry::Registry::load(file).unwrap_or_else(|e| panic!("{e}"));
        } else {
            panic!("{name}: no test knows this config file; add it to tests/e2e/deploy.rs");
        }
        loaded += 1;
    }
    loaded
}

fn copy_configs_in_place(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_dev_quickstart_configs_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_configs(&deploy().join("dev"), dir.path());
    assert_eq!(load_all(dir.path(), &["ORP-VS", "AI-VS"]), 5);
}

#[test]
fn the_production_examples_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_configs(&deploy().join("config"), dir.path());
    let loaded = load_all(
        dir.path(),
        &["ORP-VS", "AS-VS", "FP-VS", "AI-VS", "ADDICTION-VS", "SUVA"],
    );
    assert_eq!(loaded, 4);
}

/// The retention limit is required and at least a year (nLPD ordinance art. 4 al. 5).
#[test]
fn a_gateway_without_a_lawful_retention_limit_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_configs(&deploy().join("dev"), dir.path());
    load_all(dir.path(), &["ORP-VS", "AI-VS"]);
    let path = dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains("retention_days = 400\n"));
    for (changed, expected) in [
        (
            text.replace("retention_days = 400\n", "retention_days = 364\n"),
            "audit.retention_days",
        ),
        (text.replace("retention_days = 400\n", ""), "retention_days"),
    ] {
        std::fs::write(&path, changed).expect("write");
        let err = cii_gateway::GatewayConfig::load(&path)
            .expect_err("refused")
            .to_string();
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("gateway.toml"), "{err}");
    }
}
