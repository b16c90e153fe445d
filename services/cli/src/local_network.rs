//! A network on one machine, for `cii demo` and `cii bench pipeline`: files
//! in the documented layout, then the consent registry, the gateway and one
//! node per institution as real processes of this same binary, on loopback
//! ports the system chose.
//!
//! Layout of DIR: `gateway.toml` and `gateway/` (databases, keys, log),
//! `consent/`, `witness/` (the independent witness), `nodes/<ID>/`, `dpo/`
//! (the DPO context key and reports), and
//! beside them the network's public files: `ca.pem`, `registry.toml`,
//! `global-public.json`, `rulebook/`. Secrets are files (mode 0600); the
//! development CA's private key is deleted once every certificate is issued.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cii_types::{InstitutionId, Role};

use crate::keys::write;

/// The audit log's origin of a local network.
pub const ORIGIN: &str = "cii.local/audit";

/// The independent witness of a local network (in production: run by a party other than the
/// gateway's operator). With the nodes it makes the witnesses, more than half of whom must
/// cosign a checkpoint before a node accepts a receipt on it.
pub const WITNESS: &str = "witness.cii.local";

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// Members: (registry id, registry type, name).
    pub institutions: &'a [(&'a str, &'a str, &'a str)],
    /// A canton's rulebook file (added to the federal one); the federal rulebook alone if absent.
    pub rulebook: Option<&'a str>,
    /// `[log] level` of every process.
    pub log_level: &'a str,
    /// A `[limits]` section for the gateway and the nodes (the defaults if absent):
    /// the bench lifts them, since it measures the pipeline, not the limits.
    pub limits: Option<&'a str>,
    /// How many gateway processes, on which stores.
    pub gateways: Gateways<'a>,
    /// 1, or 2: the key ceremony in shares, and the second transcryptor run by the independent
    /// witness's party (`witness/transcryptor.toml`).
    pub transcryptors: u32,
}

/// The gateway processes of a local network and their stores.
#[derive(Debug, Clone, Copy)]
pub struct Gateways<'a> {
    /// Processes; more than one share the stores, which must then be on PostgreSQL. Each
    /// node knows them all (`gateway_replicas`).
    pub count: usize,
    /// (the audit log's URL, the operational store's URL) on PostgreSQL; SQLite files in the
    /// network's folder if absent.
    pub postgres: Option<(&'a str, &'a str)>,
}

impl Gateways<'_> {
    /// One gateway, its stores SQLite files.
    pub const ONE: Gateways<'static> = Gateways {
        count: 1,
        postgres: None,
    };
}

/// One node's addresses.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    pub api: u16,
    pub inbound: u16,
}

/// The running network; dropping it stops every process.
#[derive(Debug)]
pub struct Network {
    pub dir: PathBuf,
    pub gateway_port: u16,
    pub nodes: Vec<(InstitutionId, NodePorts)>,
    /// (log file, process), in start order: consent, the gateways, witness, nodes.
    children: Vec<(String, Child)>,
}

/// Ports handed to the network's processes: below Linux's ephemeral range (32768–60999), so
/// that between our check and the process's bind no outgoing connection of this machine takes
/// the port as its own (port 0 would give an ephemeral one).
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The ports this process handed out.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A free loopback port of [`PORTS`], chosen at random and checked by binding it (then
/// released for the process to bind).
fn free_port() -> anyhow::Result<u16> {
    use ring::rand::SecureRandom;
    let random = ring::rand::SystemRandom::new();
    for _ in 0..200 {
        let mut bytes = [0u8; 2];
        random.fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let port = PORTS.start + u16::from_be_bytes(bytes) % (PORTS.end - PORTS.start);
        // Never the same port twice from this process (the ports are released until used).
        let mut handed = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port in {}..{}", PORTS.start, PORTS.end)
}

fn move_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(from, to).with_context(|| format!("moving {} to {}", from.display(), to.display()))
}

/// The demo network's id (the audience of its tokens).
pub const NETWORK: &str = "cii.demo";

/// The demo's tokens last a working day (8 h), longer than the 1 h default.
const DEMO_TOKENS: &str = "max_token_lifetime_seconds = 28800 # the demo's tokens last a working day\n";

/// Where institution `id`'s files live.
pub fn node_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join("nodes").join(id)
}

/// Writes keys, certificates and configs into `dir`.
fn write_files(
    dir: &Path,
    spec: &Spec<'_>,
    (gateway_ports, consent_port, witness_port, transcryptor_port): (&[u16], u16, u16, u16),
    nodes: &[(InstitutionId, NodePorts)],
) -> anyhow::Result<()> {
    let gateway_port = gateway_ports.first().copied().context("a gateway")?;
    let ids: Vec<InstitutionId> = nodes.iter().map(|(id, _)| id.clone()).collect();
    // The development PKI, issued in a staging folder, then each party's files moved to its folder.
    let staging = dir.join(".pki");
    let witness = cii_types::WitnessName::parse("witness", WITNESS)?;
    cii_kit::pki::init(
        &staging,
        &ids,
        std::slice::from_ref(&witness),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .context("the development PKI")?;
    move_file(&staging.join("ca.pem"), &dir.join("ca.pem"))?;
    for (from, to) in [("gateway", dir.join("gateway")), ("consent", dir.join("consent"))] {
        for file in ["cert.pem", "key.pem"] {
            move_file(&staging.join(from).join(file), &to.join(file))?;
        }
    }
    move_file(&staging.join("gateway/audit.key"), &dir.join("gateway/audit.key"))?;
    for file in ["cert.pem", "key.pem", "cosigning.key", "transcriptions.key"] {
        move_file(
            &staging.join("witnesses").join(WITNESS).join(file),
            &dir.join("witness").join(file),
        )?;
    }
    // The registry's signing key would be offline in production; the demo keeps it
    // apart so that a registry change can be tried (`cii pki sign-registry`).
    move_file(&staging.join("registry.key"), &dir.join("offline/registry.key"))?;
    move_file(&staging.join("registry.pub"), &dir.join("registry.pub"))?;
    for id in &ids {
        for file in ["cert.pem", "key.pem", "jwt.key", "jwt.pub", "cosigning.key"] {
            move_file(
                &staging.join("institutions").join(id.as_str()).join(file),
                &node_dir(dir, id.as_str()).join(file),
            )?;
        }
    }
    // The CA's private key is not needed once everything is issued.
    std::fs::remove_dir_all(&staging)?;

    // The key ceremony: each file to its party (the second transcryptor's to the witness's).
    let files = if spec.transcryptors == 2 {
        cii_pseudonym::shares::key_files(&ids, 1)?
    } else {
        cii_pseudonym::ceremony::Ceremony::new().key_files(&ids, 1, false)?
    };
    for (name, contents, secret) in files {
        let target = if let Some(rest) = name.strip_prefix("institutions/") {
            dir.join("nodes").join(rest)
        } else if name == "transcryptor/secrets.json" {
            dir.join("witness/transcryptor-secrets.json")
        } else {
            dir.join(&name)
        };
        write(&target, &contents, secret)?;
    }
    for id in &ids {
        write(
            &node_dir(dir, id.as_str()).join("store.key"),
            &crate::keys::new_store_key()?,
            true,
        )?;
    }
    let signer = cii_audit::note::Signer::from_pem(ORIGIN, &std::fs::read_to_string(dir.join("gateway/audit.key"))?)?;
    write(&dir.join("gateway/audit.vkey"), &signer.verifier().vkey(), false)?;
    let rulebook = match spec.rulebook {
        Some(text) => {
            write(&dir.join("rulebook/00-canton.toml"), text, false)?;
            "rulebook = \"rulebook\"\n"
        }
        None => "",
    };
    let level = spec.log_level;
    let limits = spec.limits.unwrap_or_default();

    let mut registry = format!(
        "# The Valais CII network of `cii demo` (loopback).\nnetwork = \"{NETWORK}\"\nversion = 1\nrevoked_serials = []\n"
    );
    for (id, ports) in nodes {
        let (_, kind, name) = spec
            .institutions
            .iter()
            .find(|(i, _, _)| *i == id.as_str())
            .context("a member")?;
        let witness_vkey = vkey(
            &node_dir(dir, id.as_str()).join("cosigning.key"),
            &format!("{}.node.cii.local", id.as_str().to_lowercase()),
        )?;
        registry.push_str(&format!(
            "\n[[institution]]\nid = \"{id}\"\ntype = \"{kind}\"\ncanton = \"VS\"\nname = \"{name}\"\n\
             endpoint = \"https://127.0.0.1:{}\"\nwitness_vkey = \"{witness_vkey}\"\n\n\
             [[institution.jwt_keys]]\nkid = \"demo-1\"\npublic_key_file = \"nodes/{id}/jwt.pub\"\n",
            ports.inbound
        ));
    }
    registry.push_str(&format!(
        "\n# Run by a party independent of the gateway's operator.\n[[witness]]\nname = \"{WITNESS}\"\n\
         vkey = \"{}\"\nendpoint = \"https://127.0.0.1:{witness_port}\"\n",
        vkey(&dir.join("witness/cosigning.key"), WITNESS)?
    ));
    write(&dir.join("registry.toml"), &registry, false)?;
    cii_kit::registry::signed::sign(
        &dir.join("registry.toml"),
        &std::fs::read(dir.join("offline/registry.key"))?,
    )?;
    let (audit_store, operations) = match spec.gateways.postgres {
        Some((audit, operations)) => (audit.to_owned(), operations.to_owned()),
        None => (
            "sqlite:gateway/audit.db".to_owned(),
            "sqlite:gateway/gateway.db".to_owned(),
        ),
    };
    let second = if spec.transcryptors == 2 {
        write(
            &dir.join("witness/transcryptor.toml"),
            &format!(
                "# The demo's second transcryptor, run by the independent witness's party.
name = \"{WITNESS}\"\n\
                 listen = \"127.0.0.1:{transcryptor_port}\"\nsecrets_file = \"transcryptor-secrets.json\"\n\n\
                 [transcriptions]\nstore = \"sqlite:transcriptions.db\"\nsigning_key = \"transcriptions.key\"\n\
                 origin = \"cii.demo/transcriptions\"\n\n\
                 [registry]\nfile = \"../registry.toml\"\nverification_key = \"../registry.pub\"\n\n\
                 [tls]\nca = \"../ca.pem\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n[log]\nlevel = \"{level}\"\n"
            ),
            false,
        )?;
        format!("second_transcryptor = {{ name = \"{WITNESS}\", url = \"https://127.0.0.1:{transcryptor_port}\" }}\n")
    } else {
        String::new()
    };
    for (k, port) in gateway_ports.iter().enumerate() {
        // The first is `gateway.toml`; the replicas sharing its stores `gateway-2.toml`, …
        let file = if k == 0 {
            "gateway.toml".to_owned()
        } else {
            format!("gateway-{}.toml", k + 1)
        };
        write(
            &dir.join(file),
            &format!(
                "# The demo's gateway. `cii audit verify --config gateway.toml` checks its log.\n\
                 listen = \"127.0.0.1:{port}\"\n{rulebook}\n\
                 [registry]\nfile = \"registry.toml\"\nverification_key = \"registry.pub\"\n{DEMO_TOKENS}\n\
                 [tls]\nca = \"ca.pem\"\ncert = \"gateway/cert.pem\"\nkey = \"gateway/key.pem\"\n\n\
                 [store]\ndatabase = \"{operations}\"\n\n\
                 [audit]\nstore = \"{audit_store}\"\norigin = \"{ORIGIN}\"\nsigning_key = \"gateway/audit.key\"\n\
                 retention_days = 365\n\n\
                 [pseudonym]\ntranscryptor = \"gateway/transcryptor.json\"\nglobal_public = \"global-public.json\"\n{second}\n\
                 [consent]\nurl = \"https://127.0.0.1:{consent_port}\"\n\n{limits}[log]\nlevel = \"{level}\"\n"
            ),
            false,
        )?;
    }
    let replicas: Vec<String> = gateway_ports
        .iter()
        .skip(1)
        .map(|port| format!("\"https://127.0.0.1:{port}\""))
        .collect();
    let replicas = if replicas.is_empty() {
        String::new()
    } else {
        format!("gateway_replicas = [{}]\n", replicas.join(", "))
    };
    write(
        &dir.join("consent/consent.toml"),
        &format!(
            "listen = \"127.0.0.1:{consent_port}\"\n{consent_rulebook}\n\
             [registry]\nfile = \"../registry.toml\"\nverification_key = \"../registry.pub\"\n\n\
             [tls]\nca = \"../ca.pem\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n\
             [pseudonym]\nglobal_public = \"../global-public.json\"\nsession_keys = \"session-keys.json\"\n\n\
             [store]\ndatabase = \"sqlite:consent.db\"\n\n[log]\nlevel = \"{level}\"\n",
            consent_rulebook = if spec.rulebook.is_some() {
                "rulebook = \"../rulebook\"\n"
            } else {
                ""
            },
        ),
        false,
    )?;
    write(
        &dir.join("witness/witness.toml"),
        &format!(
            "# The demo's independent witness of the audit log.\nname = \"{WITNESS}\"\n\
             listen = \"127.0.0.1:{witness_port}\"\ndatabase = \"sqlite:witness.db\"\n\
             verifier_key_file = \"../gateway/audit.vkey\"\ncosigning_key_file = \"cosigning.key\"\n\n\
             [registry]\nfile = \"../registry.toml\"\nverification_key = \"../registry.pub\"\n\n\
             [tls]\nca = \"../ca.pem\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n[log]\nlevel = \"{level}\"\n"
        ),
        false,
    )?;
    for (id, ports) in nodes {
        write(
            &node_dir(dir, id.as_str()).join("node.toml"),
            &format!(
                "institution = \"{id}\"\n\
                 gateway_url = \"https://127.0.0.1:{gateway_port}\"\n{replicas}\
                 api_listen = \"127.0.0.1:{}\"\ninbound_listen = \"127.0.0.1:{}\"\n\n\
                 [registry]\nfile = \"../../registry.toml\"\nverification_key = \"../../registry.pub\"\n{DEMO_TOKENS}\n\
                 [tls]\nca = \"../../ca.pem\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n\
                 [pseudonym]\nglobal_public = \"../../global-public.json\"\nsession_keys = \"session-keys.json\"\n\n\
                 [store]\ndatabase = \"sqlite:node.db\"\nkey = \"store.key\"\n\n\
                 [audit]\nverifier_key_file = \"../../gateway/audit.vkey\"\ncosigning_key_file = \"cosigning.key\"\n\n\
                 {limits}[log]\nlevel = \"{level}\"\n",
                ports.api, ports.inbound
            ),
            false,
        )?;
    }
    Ok(())
}

/// A process's name from its log file: the folder it runs in (`gateway`, `ORP-VS`, …), or the
/// log's own name when its party runs two processes there (the witness's `transcryptor`).
fn process_name(log: &str) -> String {
    let log = Path::new(log);
    let stem = log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem == "transcryptor" {
        return stem;
    }
    log.parent()
        .and_then(Path::file_name)
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The C2SP vkey of the cosigning key in `key`, named `name`.
fn vkey(key: &Path, name: &str) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    Ok(cii_audit::cosignature::Cosigner::from_pem(name, &pem)?
        .verifier()
        .vkey())
}

impl Network {
    /// Writes the files into `dir` (which must be empty or new) and starts every process.
    pub fn start(dir: &Path, spec: &Spec<'_>) -> anyhow::Result<Network> {
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            bail!("{} is not empty: give a new or empty folder", dir.display());
        }
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        if spec.gateways.count > 1 && spec.gateways.postgres.is_none() {
            bail!("several gateways share their stores: they need PostgreSQL");
        }
        let gateway_ports = (0..spec.gateways.count.max(1))
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<u16>>>()?;
        let (gateway_port, consent_port, witness_port, transcryptor_port) = (
            gateway_ports.first().copied().context("a gateway")?,
            free_port()?,
            free_port()?,
            free_port()?,
        );
        let mut nodes = Vec::new();
        for (id, _, _) in spec.institutions {
            nodes.push((
                InstitutionId::parse("institution", id)?,
                NodePorts {
                    api: free_port()?,
                    inbound: free_port()?,
                },
            ));
        }
        write_files(
            &dir,
            spec,
            (&gateway_ports, consent_port, witness_port, transcryptor_port),
            &nodes,
        )?;
        let mut network = Network {
            dir: dir.clone(),
            gateway_port,
            nodes,
            children: Vec::new(),
        };
        network.spawn(
            "consent",
            &dir.join("consent/consent.toml"),
            &dir.join("consent/consent.log"),
        )?;
        network.wait_for(consent_port, "consent")?;
        if spec.transcryptors == 2 {
            network.spawn(
                "transcryptor serve",
                &dir.join("witness/transcryptor.toml"),
                &dir.join("witness/transcryptor.log"),
            )?;
            network.wait_for(transcryptor_port, "transcryptor")?;
        }
        network.spawn("gateway", &dir.join("gateway.toml"), &dir.join("gateway/gateway.log"))?;
        network.wait_for(gateway_port, "gateway")?;
        for (k, port) in gateway_ports.iter().enumerate().skip(1) {
            let name = format!("gateway-{}", k + 1);
            let log = dir.join(&name).join("gateway.log");
            std::fs::create_dir_all(dir.join(&name))?;
            network.spawn("gateway", &dir.join(format!("{name}.toml")), &log)?;
            network.wait_for(*port, &name)?;
        }
        network.spawn_witness(&dir)?;
        network.wait_for(witness_port, "witness")?;
        for (id, ports) in network.nodes.clone() {
            let folder = node_dir(&dir, id.as_str());
            network.spawn("node", &folder.join("node.toml"), &folder.join("node.log"))?;
            network.wait_for(ports.api, id.as_str())?;
            network.wait_for(ports.inbound, id.as_str())?;
        }
        Ok(network)
    }

    fn spawn_witness(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.spawn(
            "witness serve",
            &dir.join("witness/witness.toml"),
            &dir.join("witness/witness.log"),
        )
    }

    fn spawn(&mut self, command: &str, config: &Path, log: &Path) -> anyhow::Result<()> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(std::env::current_exe()?)
            .args(command.split(' '))
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {command}"))?;
        self.children.push((log.display().to_string(), child));
        Ok(())
    }

    /// Waits until `port` accepts connections; fails with the log's tail if the last process died.
    fn wait_for(&mut self, port: u16, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Some((log, child)) = self.children.last_mut()
                && let Some(status) = child.try_wait()?
            {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let tail: Vec<&str> = text
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                bail!("{what} exited ({status}) while starting; {log}:\n{}", tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{what} did not listen on port {port} within 30 s")
    }

    /// Mints a token for `user` of institution `id` (its JWT key is in its folder), written to a file.
    pub fn token_file(&self, id: &str, user: &str, roles: &[Role], file: &Path) -> anyhow::Result<PathBuf> {
        let key = std::fs::read(node_dir(&self.dir, id).join("jwt.key"))?;
        let issuer = InstitutionId::parse("institution", id)?;
        let token = cii_kit::jwt::mint(
            &key,
            &cii_kit::jwt::TokenSpec {
                issuer: &issuer,
                audience: NETWORK,
                subject: user,
                roles,
                kid: "demo-1",
                issued_at: time::OffsetDateTime::now_utc(),
                ttl: time::Duration::hours(8),
            },
        )?;
        write(file, &token, true)?;
        Ok(file.to_path_buf())
    }

    /// The API address of institution `id`'s node.
    pub fn api(&self, id: &str) -> anyhow::Result<String> {
        let (_, ports) = self.nodes.iter().find(|(i, _)| i.as_str() == id).context("a member")?;
        Ok(format!("https://127.0.0.1:{}", ports.api))
    }

    /// Every process: (its folder's name — consent, gateway, gateway-2, … or the institution —, pid).
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .map(|(log, child)| (process_name(log), child.id()))
            .collect()
    }

    /// The (first) gateway's process id.
    pub fn gateway_pid(&self) -> Option<u32> {
        self.children
            .iter()
            .find(|(log, _)| process_name(log) == "gateway")
            .map(|(_, child)| child.id())
    }

    /// Stops every process (SIGTERM, so they finish cleanly; SIGKILL after 10 s).
    pub fn stop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, child) in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop();
    }
}
