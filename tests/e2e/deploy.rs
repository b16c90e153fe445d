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
                .replace("/etc/cii", &to.display().to_string())
                .replace("/run/credentials", &to.join("credentials").display().to_string());
            let target = to.join(path.file_name().expect("name"));
            std::fs::write(&target, text).expect("write");
            copied.push(target);
        }
    }
    copied.sort();
    copied
}

/// The production example's independent witness.
const EXAMPLE_WITNESS: &str = "witness.edoeb.example";

/// The production registry names example vkeys (`+00000000+`): replaced by those of the keys
/// this test's PKI made, as an operator pastes `cii witness vkey`'s output.
fn use_real_witness_keys(dir: &Path, witness: &cii_types::WitnessName) {
    let registry = dir.join("registry.toml");
    let mut text = std::fs::read_to_string(&registry).expect("registry");
    let pki = dir.join("pki");
    let orp = cii_types::PeerIdentity::Institution(InstitutionId::parse("id", "ORP-VS").expect("id"));
    for (party, name) in [
        (orp, "orp-vs.node.cii.vs.example"),
        (cii_types::PeerIdentity::Witness(witness.clone()), EXAMPLE_WITNESS),
    ] {
        let example = format!("{name}+00000000+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        text = text.replace(&example, &cii_tests::cosigner_vkey(&pki, &party, name));
    }
    std::fs::write(&registry, text).expect("registry");
}

fn load_all(dir: &Path, institutions: &[&str]) -> usize {
    let ids: Vec<InstitutionId> = institutions
        .iter()
        .map(|i| InstitutionId::parse("id", i).expect("id"))
        .collect();
    let witness = cii_types::WitnessName::parse("w", EXAMPLE_WITNESS).expect("name");
    cii_kit::pki::init(
        &dir.join("pki"),
        &ids,
        std::slice::from_ref(&witness),
        &["localhost".into()],
    )
    .expect("pki");
    cii_tests::write_keys(&dir.join("keys"), &ids);
    // The second transcryptor's half of a ceremony in shares (its example config reads it).
    std::fs::create_dir_all(dir.join("keys/transcryptor")).expect("mkdir");
    cii_tests::write_file(
        &dir.join("keys/transcryptor/secrets.json"),
        &cii_pseudonym::shares::TranscryptorSecrets::generate(1).to_json(),
        true,
    );
    cii_tests::write_vkey(&dir.join("pki"), "cii.example/audit");
    use_real_witness_keys(dir, &witness);
    // The registry as the network's offline key signs it; its verification key where
    // the production examples read it.
    let registry_key = std::fs::read(cii_kit::pki::registry_signing_key(&dir.join("pki"))).expect("registry key");
    cii_kit::registry::signed::sign(&dir.join("registry.toml"), &registry_key).expect("sign the registry");
    std::fs::copy(
        cii_kit::pki::registry_verification_key(&dir.join("pki")),
        dir.join("registry.pub"),
    )
    .expect("registry.pub");
    std::fs::copy(dir.join("pki/gateway/audit.vkey"), dir.join("audit.vkey")).expect("vkey");
    // The production example keeps the node's store key apart from the ceremony's files.
    std::fs::create_dir_all(dir.join("node")).expect("mkdir");
    cii_tests::write_file(&dir.join("node/store.key"), &"42".repeat(32), true);
    provide_credentials(dir);
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
        } else if name.starts_with("witness") {
            cii_node::independent::WitnessConfig::load(file).unwrap_or_else(|e| panic!("{e}"));
        } else if name.starts_with("transcryptor") {
            cii_transcryptor::TranscryptorConfig::load(file).unwrap_or_else(|e| panic!("{e}"));
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

/// What systemd does for `LoadCredential=NAME:SOURCE`: copies SOURCE (under `dir` for `/etc/cii`)
/// to `dir/credentials/UNIT/NAME`; sources that this test does not create (database password
/// files, tokens) are skipped, and a config that needs one fails to load.
fn provide_credentials(dir: &Path) {
    for (unit, sections) in units() {
        for credential in sections.values("Service", "LoadCredential") {
            let (name, source) = credential.split_once(':').expect("NAME:SOURCE");
            let source = PathBuf::from(source.replace("/etc/cii", &dir.display().to_string()));
            if source.exists() {
                let target = dir.join("credentials").join(&unit).join(name);
                std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
                std::fs::copy(&source, &target).expect("copy credential");
            }
        }
    }
}

/// A systemd unit file: (section, key, value) in order.
struct Unit(Vec<(String, String, String)>);

impl Unit {
    fn parse(text: &str) -> Unit {
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
            entries.push((section.clone(), key.to_owned(), value.to_owned()));
        }
        Unit(entries)
    }

    fn values<'a>(&'a self, section: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    fn value<'a>(&'a self, section: &'a str, key: &'a str) -> Option<&'a str> {
        self.values(section, key).last()
    }
}

/// Every unit of deploy/systemd, by file name.
fn units() -> Vec<(String, Unit)> {
    let mut units: Vec<(String, Unit)> = std::fs::read_dir(deploy().join("systemd"))
        .expect("deploy/systemd")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (
                name,
                Unit::parse(&std::fs::read_to_string(e.path()).expect("read unit")),
            )
        })
        .collect();
    units.sort_by(|a, b| a.0.cmp(&b.0));
    units
}

/// Every string value of a TOML document with its dotted key.
fn toml_strings(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                toml_strings(&key, v, out);
            }
        }
        toml::Value::Array(items) => {
            for v in items {
                toml_strings(prefix, v, out);
            }
        }
        _ => {}
    }
}

/// The service units run `cii` hardened, on a config of deploy/config, whose secrets are
/// exactly the unit's credentials and whose databases are in the unit's state directory.
#[test]
fn the_systemd_units_are_hardened_and_match_their_configs() {
    let units = units();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "cii-audit-retention.service",
            "cii-audit-retention.timer",
            "cii-consent.service",
            "cii-gateway.service",
            "cii-node.service",
            "cii-transcryptor.service",
            "cii-witness.service"
        ]
    );
    for (name, unit) in &units {
        if name.ends_with(".timer") {
            assert!(unit.value("Timer", "OnCalendar").is_some(), "{name}");
            continue;
        }
        for (key, value) in [
            ("DynamicUser", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("NoNewPrivileges", "yes"),
            ("CapabilityBoundingSet", ""),
            ("RestrictNamespaces", "yes"),
            ("MemoryDenyWriteExecute", "yes"),
            ("SystemCallArchitectures", "native"),
            ("UMask", "0077"),
        ] {
            assert_eq!(unit.value("Service", key), Some(value), "{name}: {key}");
        }
        let exec = unit.value("Service", "ExecStart").expect("ExecStart");
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(args[0], "/usr/local/bin/cii", "{name}");
        let credentials: Vec<&str> = unit
            .values("Service", "LoadCredential")
            .map(|c| c.split_once(':').expect("NAME:SOURCE").0)
            .collect();
        for (_, source) in unit
            .values("Service", "LoadCredential")
            .map(|c| c.split_once(':').expect("pair"))
        {
            assert!(
                source.starts_with("/etc/cii/"),
                "{name}: credentials come from /etc/cii: {source}"
            );
        }
        if args[1] == "audit" {
            assert!(exec.contains("${CREDENTIALS_DIRECTORY}/operator-token"), "{name}");
            assert!(credentials.contains(&"operator-token"), "{name}");
            continue;
        }
        let at = args.iter().position(|a| *a == "--config").expect("--config");
        let config = deploy()
            .join("config")
            .join(args[at + 1].strip_prefix("/etc/cii/").expect("/etc/cii/"));
        let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{name}: {}: {e}", config.display()));
        let mut strings = Vec::new();
        toml_strings(
            "",
            &toml::Value::Table(toml::from_str(&text).expect("toml")),
            &mut strings,
        );
        let state = format!(
            "/var/lib/{}/",
            unit.value("Service", "StateDirectory").expect("StateDirectory")
        );
        for (key, value) in &strings {
            if let Some(credential) = value.strip_prefix(&format!("/run/credentials/{name}/")) {
                assert!(
                    credentials.contains(&credential),
                    "{name}: {key} needs LoadCredential={credential}"
                );
            } else if value.starts_with("/run/credentials/") {
                panic!("{name}: {key} names another unit's credential: {value}");
            }
            if let Some(path) = value.strip_prefix("sqlite:") {
                assert!(path.starts_with(&state), "{name}: {key} must be in {state}: {path}");
            }
            if value.starts_with("postgres") {
                let pgpass = unit
                    .values("Service", "Environment")
                    .find_map(|e| e.strip_prefix("PGPASSFILE=%d/"))
                    .unwrap_or_else(|| panic!("{name}: {key} needs PGPASSFILE from a credential"));
                assert!(credentials.contains(&pgpass), "{name}");
                let user_info = value
                    .split("://")
                    .nth(1)
                    .and_then(|rest| rest.split_once('@'))
                    .map(|(u, _)| u);
                assert!(
                    !user_info.unwrap_or_default().contains(':'),
                    "{name}: no password in the URL"
                );
            }
        }
        // The secrets a service reads are credentials, never readable files of /etc/cii.
        for (key, value) in &strings {
            if key.ends_with(".key")
                || key.ends_with("session_keys")
                || key.ends_with("transcryptor")
                || key.ends_with("signing_key")
                || key.ends_with("cosigning_key_file")
            {
                assert!(
                    value.starts_with("/run/credentials/"),
                    "{name}: {key} = {value} is a secret"
                );
            }
        }
    }
}

/// The Kubernetes manifests parse, hold the expected kinds, and agree with each other and with
/// the gateway's config schema: files under mounts, secrets documented, ports and selectors.
#[test]
fn the_kubernetes_manifests_agree_with_the_gateway_config() {
    use yaml_rust2::{Yaml, YamlLoader};
    let mut docs = Vec::new();
    for file in ["gateway.yaml", "postgres.yaml"] {
        let text = std::fs::read_to_string(deploy().join("kubernetes").join(file)).expect("manifest");
        docs.extend(YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}")));
    }
    let kind_of = |d: &Yaml| d["kind"].as_str().unwrap_or_default().to_owned();
    let mut kinds: Vec<String> = docs.iter().map(kind_of).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Cluster",
            "Cluster",
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Job",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service"
        ]
    );
    let find = |kind: &str| docs.iter().find(|d| kind_of(d) == kind).expect(kind);
    let named = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| kind_of(d) == kind && d["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{kind} {name}"))
    };
    let (deployment, config_map, cluster) = (
        find("Deployment"),
        named("ConfigMap", "cii-gateway-config"),
        named("Cluster", "cii-audit"),
    );
    let operations = named("Cluster", "cii-operations");
    for c in [cluster, operations] {
        assert_eq!(c["apiVersion"].as_str(), Some("postgresql.cnpg.io/v1"));
        assert_eq!(c["spec"]["instances"].as_i64(), Some(3), "three instances");
        assert_eq!(
            c["spec"]["minSyncReplicas"].as_i64(),
            Some(1),
            "synchronous replication"
        );
    }
    // Three replicas, one replaced at a time; a drain leaves two serving.
    let replicas = deployment["spec"]["replicas"].as_i64().expect("replicas");
    assert_eq!(replicas, 3);
    assert_eq!(deployment["spec"]["strategy"]["type"].as_str(), Some("RollingUpdate"));
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_i64(),
        Some(1)
    );
    let budget = find("PodDisruptionBudget")["spec"]["minAvailable"]
        .as_i64()
        .expect("minAvailable");
    assert!(
        (1..replicas).contains(&budget),
        "a drain can proceed and leaves {budget} serving"
    );

    // The config: the gateway's own schema (unknown keys refused), with a lawful retention.
    let toml_text = config_map["data"]["gateway.toml"].as_str().expect("gateway.toml");
    let file: cii_gateway::config::GatewayFile = toml::from_str(toml_text).expect("the gateway's config schema");
    assert!(file.audit.retention_days >= cii_gateway::config::MIN_RETENTION_DAYS);
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let mounts: Vec<(&str, &str)> = container["volumeMounts"]
        .as_vec()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("name"),
                m["mountPath"].as_str().expect("path"),
            )
        })
        .collect();
    let under_mount = |path: &str| {
        mounts
            .iter()
            .find(|(_, m)| path.starts_with(&format!("{m}/")) || path == *m)
    };
    assert_eq!(args[..2], ["gateway", "--config"]);
    let (config_mount, _) = under_mount(args[2]).expect("the config file is mounted");
    let volumes = pod["spec"]["volumes"].as_vec().expect("volumes");
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    assert_eq!(
        volume(config_mount)["configMap"]["name"].as_str(),
        config_map["metadata"]["name"].as_str()
    );
    let mut strings = Vec::new();
    toml_strings(
        "",
        &toml::Value::Table(toml::from_str(toml_text).expect("toml")),
        &mut strings,
    );
    for (key, value) in &strings {
        let path = value.strip_prefix("sqlite:").unwrap_or(value);
        if path.starts_with('/') {
            let (name, _) = under_mount(path).unwrap_or_else(|| panic!("{key} = {path} is on no mounted volume"));
            let source = volume(name);
            if key.ends_with(".key") || key.ends_with("signing_key") || key.ends_with("transcryptor") {
                assert!(
                    source["secret"]["secretName"].as_str().is_some(),
                    "{key} must come from a Secret"
                );
                // Mounted so that the process's check of the key's mode passes (no group or
                // other bits). Kubernetes reads `0400` as YAML 1.1 octal; yaml-rust2 as decimal.
                let written = source["secret"]["defaultMode"].as_i64().unwrap_or(644);
                let mode = i64::from_str_radix(&written.to_string(), 8).expect("an octal mode");
                assert_eq!(
                    mode & 0o077,
                    0,
                    "{key}: the Secret's defaultMode {mode:o} lets others read it"
                );
            }
        }
    }
    // Every mount has its volume; every Secret is documented or made by the database operator.
    let checklist = std::fs::read_to_string(deploy().join("../docs/production-checklist.md")).expect("checklist");
    let cluster_name = cluster["metadata"]["name"].as_str().expect("cluster name");
    for (name, _) in &mounts {
        let v = volume(name);
        if let Some(secret) = v["secret"]["secretName"].as_str() {
            assert!(
                checklist.contains(&format!("`{secret}`")),
                "secret {secret} is not in docs/production-checklist.md"
            );
            if secret.starts_with(cluster_name) {
                assert_eq!(secret, format!("{cluster_name}-ca"), "replicas use the service role");
            }
        }
        if let Some(cm) = v["configMap"]["name"].as_str() {
            assert!(
                checklist.contains(&format!("`{cm}`")),
                "ConfigMap {cm} is not in docs/production-checklist.md"
            );
        }
    }
    // Each store is its Cluster's read-write service and database, reached by the replicas with
    // the service role the roles script makes and by the migration Job with the owner; the
    // password file is mounted, each server's CA too.
    let role_of = |script: &str| {
        let text = std::fs::read_to_string(deploy().join("postgres").join(script)).expect("roles script");
        text.split("CREATE ROLE ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("CREATE ROLE")
            .to_owned()
    };
    let job = find("Job");
    let job_config = &named("ConfigMap", "cii-gateway-migrate-config")["data"]["gateway.toml"];
    let owners: cii_gateway::config::GatewayFile =
        toml::from_str(job_config.as_str().expect("the Job's gateway.toml")).expect("the Job's config schema");
    let job_args: Vec<&str> = job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(job_args.last(), Some(&"--migrate"));
    for (c, script, served, migrated) in [
        (cluster, "audit-roles.sql", &file.audit.store, &owners.audit.store),
        (
            operations,
            "operations-roles.sql",
            &file.store.database,
            &owners.store.database,
        ),
    ] {
        let name = c["metadata"]["name"].as_str().expect("cluster name");
        let owner = c["spec"]["bootstrap"]["initdb"]["owner"].as_str().expect("owner");
        let database = c["spec"]["bootstrap"]["initdb"]["database"].as_str().expect("database");
        let at = format!("@{name}-rw:5432/{database}?");
        let service = role_of(script);
        assert!(served.starts_with(&format!("postgres://{service}{at}")), "{served}");
        assert!(migrated.starts_with(&format!("postgres://{owner}{at}")), "{migrated}");
        let root_cert = served
            .split("sslrootcert=")
            .nth(1)
            .expect("sslrootcert")
            .split('&')
            .next()
            .unwrap_or_default();
        let (ca, _) = under_mount(root_cert).expect("the server's CA is mounted");
        assert_eq!(
            volume(ca)["secret"]["secretName"].as_str(),
            Some(format!("{name}-ca").as_str())
        );
    }
    let env = container["env"].as_vec().expect("env");
    let pgpass = env
        .iter()
        .find(|e| e["name"].as_str() == Some("PGPASSFILE"))
        .and_then(|e| e["value"].as_str())
        .expect("PGPASSFILE");
    let (name, _) = under_mount(pgpass).expect("PGPASSFILE is mounted");
    assert_eq!(volume(name)["secret"]["secretName"].as_str(), Some("cii-gateway-db"));

    // Ports: the config's listen ports are the container's, the Service's and the policy's.
    let port_of = |addr: &std::net::SocketAddr| i64::from(addr.port());
    let ports: Vec<(&str, i64)> = container["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name"),
                p["containerPort"].as_i64().expect("port"),
            )
        })
        .collect();
    assert!(ports.contains(&("grpc", port_of(&file.listen))), "{ports:?}");
    let metrics = file.metrics_listen.expect("metrics_listen");
    assert!(ports.contains(&("metrics", port_of(&metrics))), "{ports:?}");
    let service = find("Service");
    for p in service["spec"]["ports"].as_vec().expect("service ports") {
        let target = p["targetPort"].as_str().expect("named targetPort");
        assert!(ports.iter().any(|(n, _)| *n == target), "Service targets {target}");
    }
    let policy = find("NetworkPolicy");
    let allowed: Vec<i64> = policy["spec"]["ingress"]
        .as_vec()
        .expect("ingress")
        .iter()
        .flat_map(|r| r["ports"].as_vec().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert!(
        allowed.contains(&port_of(&file.listen)) && allowed.contains(&port_of(&metrics)),
        "{allowed:?}"
    );
    // Selectors: the Service, the budget and the policy select the gateway's pods.
    let labels = &pod["metadata"]["labels"];
    let selects = |selector: &Yaml| {
        selector
            .as_hash()
            .expect("selector")
            .iter()
            .all(|(k, v)| labels[k.as_str().expect("key")] == *v)
    };
    assert!(selects(&service["spec"]["selector"]));
    assert!(selects(&find("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]));
    assert!(selects(&policy["spec"]["podSelector"]["matchLabels"]));
    assert!(selects(&deployment["spec"]["selector"]["matchLabels"]));
    let reachable: Vec<String> = policy["spec"]["egress"]
        .as_vec()
        .expect("egress")
        .iter()
        .flat_map(|r| r["to"].as_vec().cloned().unwrap_or_default())
        .filter_map(|to| {
            to["podSelector"]["matchLabels"]["cnpg.io/cluster"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    for c in [cluster, operations] {
        let name = c["metadata"]["name"].as_str().expect("name");
        assert!(
            reachable.iter().any(|r| r == name),
            "the policy lets the gateway reach {name}"
        );
    }
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
    assert_eq!(loaded, 6);
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

/// The sequencer's lease must be short enough that a takeover comes within the minute an append
/// of another replica waits for a sequencer.
#[test]
fn a_lease_longer_than_an_append_can_wait_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_configs(&deploy().join("dev"), dir.path());
    load_all(dir.path(), &["ORP-VS", "AI-VS"]);
    let path = dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&path).expect("read");
    for (seconds, accepted) in [(2, true), (30, true), (31, false), (1, false)] {
        let changed = text.replacen("[audit]\n", &format!("[audit]\nlease_seconds = {seconds}\n"), 1);
        assert_ne!(changed, text, "the dev config has an [audit] section");
        std::fs::write(&path, changed).expect("write");
        match cii_gateway::GatewayConfig::load(&path) {
            Ok(_) => assert!(accepted, "{seconds} s accepted"),
            Err(e) => {
                assert!(!accepted, "{seconds} s refused: {e}");
                assert!(e.to_string().contains("audit.lease_seconds"), "{e}");
            }
        }
    }
}

/// A network has one transcryptor or two from its first ceremony: the gateway refuses a second
/// transcryptor with a key file of one (moving changes every pseudonym: a new network), requires
/// it with a key file of a ceremony in shares, and requires it to be a registry witness.
#[test]
fn a_gateway_has_a_second_transcryptor_exactly_when_its_ceremony_was_in_shares() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_configs(&deploy().join("config"), dir.path());
    load_all(
        dir.path(),
        &["ORP-VS", "AS-VS", "FP-VS", "AI-VS", "ADDICTION-VS", "SUVA"],
    );
    let path = dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&path).expect("read");
    let with_second = |name: &str| {
        text.replacen(
            "[pseudonym]\n",
            &format!("[pseudonym]\nsecond_transcryptor = {{ name = \"{name}\", url = \"https://t.example:7460\" }}\n"),
            1,
        )
    };
    let refused = |config: String, key: &str, says: &str| {
        std::fs::write(&path, config).expect("write");
        let err = cii_gateway::GatewayConfig::load(&path)
            .expect_err("refused")
            .to_string();
        assert!(err.contains(key) && err.contains(says), "{err}");
    };
    refused(
        with_second(EXAMPLE_WITNESS),
        "pseudonym.second_transcryptor",
        "new ceremony",
    );
    // The files of a ceremony in shares where the example reads the gateway's.
    let ids: Vec<InstitutionId> = ["ORP-VS", "AI-VS"]
        .iter()
        .map(|i| InstitutionId::parse("id", i).expect("id"))
        .collect();
    for (name, contents, _) in cii_pseudonym::shares::key_files(&ids, 1).expect("files") {
        match name.as_str() {
            "gateway/transcryptor.json" => {
                cii_tests::write_file(
                    &dir.path().join("credentials/cii-gateway.service/transcryptor"),
                    &contents,
                    true,
                );
            }
            "global-public.json" => {
                cii_tests::write_file(&dir.path().join("keys/global-public.json"), &contents, false)
            }
            _ => {}
        }
    }
    refused(text.clone(), "pseudonym.second_transcryptor", "first of two");
    refused(
        with_second("nobody.example"),
        "pseudonym.second_transcryptor.name",
        "[[witness]]",
    );
    std::fs::write(&path, with_second(EXAMPLE_WITNESS)).expect("write");
    let config = cii_gateway::GatewayConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.second_transcryptor.is_some());
}
