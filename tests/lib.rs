//! Test harness of CII Exchange: a real gateway and real nodes on loopback,
//! with a freshly generated PKI and config files, started in-process through
//! the same `run` functions `cii gateway` and `cii node` call.

pub mod pg;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cii_kit::clock::{Clock, SystemClock};
use cii_kit::config::TlsFiles;
use cii_kit::tls::{self, PeerPolicy, TlsIdentity};
use cii_types::{InstitutionId, InstitutionType, PeerIdentity, Role};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// An institution of a test network.
#[derive(Debug, Clone)]
pub struct Member {
    /// Registry id.
    pub id: InstitutionId,
    /// Type.
    pub kind: InstitutionType,
}

/// Builds a member.
pub fn member(id: &str, kind: InstitutionType) -> Member {
    Member {
        id: InstitutionId::parse("id", id).expect("valid id"),
        kind,
    }
}

/// A running node.
#[derive(Debug)]
pub struct RunningNode {
    /// The member.
    pub member: Member,
    /// Its IT-facing API.
    pub api: SocketAddr,
    /// Its gateway-facing API.
    pub inbound: SocketAddr,
    /// Its metrics endpoint.
    pub metrics: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Starts the node from its config on the given listeners.
    fn spawn(config_file: &Path, listeners: cii_node::Listeners) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let config = cii_node::NodeConfig::load(config_file).expect("node config");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            cii_node::run(config, listeners, async {
                let _ = stopped.await;
            })
            .await
            .expect("node run");
        });
        (stop, task)
    }
}

/// The independent witness of a test network.
pub const WITNESS: &str = "witness.cii.test";

/// The cosigner name of member `id`'s node in a test network.
pub fn node_witness_name(id: &InstitutionId) -> String {
    format!("{}.node.cii.test", id.as_str().to_lowercase())
}

/// A running independent witness.
#[derive(Debug)]
pub struct RunningWitness {
    /// Its address.
    pub addr: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningWitness {
    fn spawn(config_file: &Path, listener: TcpListener) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let config = cii_node::independent::WitnessConfig::load(config_file).expect("witness config");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            cii_node::independent::run(config, listener, None, async {
                let _ = stopped.await;
            })
            .await
            .expect("witness run");
        });
        (stop, task)
    }
}

/// A running second transcryptor.
#[derive(Debug)]
pub struct RunningTranscryptor {
    /// Its address.
    pub addr: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningTranscryptor {
    fn spawn(config_file: &Path, listener: TcpListener) -> RunningTranscryptor {
        let config = cii_transcryptor::TranscryptorConfig::load(config_file).expect("transcryptor config");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            cii_transcryptor::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("transcryptor run");
        });
        RunningTranscryptor {
            addr,
            config: config_file.to_owned(),
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// A running network: gateway and nodes.
#[derive(Debug)]
pub struct Network {
    /// The members and their inbound ports, as the registry lists them.
    pub registered: Vec<(Member, u16)>,
    /// The independent witness (none when the network runs without witnesses).
    pub witness: Option<RunningWitness>,
    /// The second transcryptor (with `Options::two_transcryptors`).
    pub transcryptor: Option<RunningTranscryptor>,
    /// The temporary folder holding PKI and configs.
    pub dir: tempfile::TempDir,
    /// The gateway's gRPC address.
    pub gateway: SocketAddr,
    /// The gateway's metrics endpoint.
    pub gateway_metrics: SocketAddr,
    /// The nodes.
    pub nodes: Vec<RunningNode>,
    /// The consent registry's gRPC address.
    pub consent: SocketAddr,
    consent_stop: Option<oneshot::Sender<()>>,
    consent_task: Option<tokio::task::JoinHandle<()>>,
    gateway_stop: Option<oneshot::Sender<()>>,
    gateway_task: Option<tokio::task::JoinHandle<()>>,
    gateway_config: PathBuf,
    gateway_clock: Arc<dyn Clock>,
    consent_config: PathBuf,
    /// The gateway's audit store URL (as configured; SQLite paths relative to `dir`).
    pub audit_store: String,
    /// The gateway's operational store URL (as configured; SQLite paths relative to `dir`).
    pub gateway_store: String,
    /// With `Options::external_gateways`: each gateway's config file and gRPC address.
    pub external_gateways: Vec<(PathBuf, SocketAddr)>,
}

/// A second gateway or consent registry process on a network's configuration (see
/// [`Network::start_second_gateway`], [`Network::start_second_consent_on`]).
#[derive(Debug)]
pub struct SecondProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl SecondProcess {
    /// Stops it and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
    }
}

/// Options of a test network.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serials (hex) to list as revoked in the registry, keyed by member index.
    pub revoke_member_certs: Vec<usize>,
    /// The gateway's clock (default: system clock).
    pub gateway_clock: Option<Arc<dyn Clock>>,
    /// Enrolments per minute and burst per institution (default: the gateway's defaults).
    pub enrolment_limit: Option<(u32, u32)>,
    /// The consent registry's database (default: SQLite in the network's folder).
    pub consent_database: Option<String>,
    /// The consent registry's clock (default: system clock).
    pub consent_clock: Option<Arc<dyn Clock>>,
    /// The gateway's audit store (default: SQLite in the network's folder).
    pub audit_store: Option<String>,
    /// Members the registry designates for the network's roles (`network_dpo`, `operator`).
    pub network_roles: Vec<usize>,
    /// Members listed as parties that exchange nothing (`[[party]]`, roles `network_dpo`
    /// and `operator`); their nodes run all the same.
    pub parties: Vec<usize>,
    /// A `[limits]` section for the gateway and the nodes (the defaults if absent).
    pub limits: Option<String>,
    /// A `[store]` section for the gateway (the defaults if absent).
    pub gateway_store: Option<String>,
    /// The gateway's operational store (default: SQLite in the network's folder); with
    /// `gateway_store`, the section's other settings are kept.
    pub gateway_database: Option<String>,
    /// Gateways run as processes of their own by the test (`gateway_configs`, the first on
    /// `gateway`), instead of one in this process; the nodes know them all.
    pub external_gateways: usize,
    /// `[audit] lease_seconds` of the gateways (their default if absent).
    pub lease_seconds: Option<u32>,
    /// Further consent registry replicas the gateway may reach (`https://…` each; see
    /// [`Network::start_second_consent_on`]).
    pub consent_replicas: Vec<String>,
    /// Further gateway replicas the nodes may reach (`https://…` each; see
    /// [`Network::start_second_gateway_on`]).
    pub gateway_replicas: Vec<String>,
    /// A canton's rulebook file (extending the federal one) for the gateway.
    pub rulebook: Option<String>,
    /// No witnesses in the registry: receipts rest on the log's signature alone (the
    /// behaviour of a registry written before witnesses existed).
    pub no_witnesses: bool,
    /// Two transcryptors (issue 24): the keys from a ceremony in shares, and the second
    /// transcryptor run by the independent witness (`Network::transcryptor`).
    pub two_transcryptors: bool,
}

/// What a registry version says, beyond the members.
#[derive(Debug, Clone, Default)]
pub struct RegistrySpec {
    /// The version.
    pub version: u64,
    /// Members whose certificates are revoked.
    pub revoked: Vec<usize>,
    /// Members designated for the network's roles.
    pub network_roles: Vec<usize>,
    /// Members listed as parties that exchange nothing.
    pub parties: Vec<usize>,
    /// Further JWT keys: (member, kid, algorithm, SPKI PEM file).
    pub extra_keys: Vec<(usize, String, String, PathBuf)>,
    /// Members listed with another type than they started with.
    pub retyped: Vec<(usize, InstitutionType)>,
    /// The independent witness's port; none: no witnesses at all (nodes included).
    pub witness_port: Option<u16>,
}

/// A `[limits]` section far above what a test can send (for tests of something else that flood).
pub const NO_LIMITS: &str = "[limits]\ntransfers = { per_minute = 100000000, burst = 1000000 }\n\
consent_changes = { per_minute = 100000000, burst = 1000000 }\nqueries = { per_minute = 100000000, burst = 1000000 }\n\n";

/// The test network's id (the audience of its tokens).
pub const NETWORK_ID: &str = "cii.test";

/// Writes the registry of `members` (their inbound ports given) as `spec` says, and signs
/// it with the network's registry key in `dir/pki`.
pub fn write_registry(dir: &Path, members: &[(Member, u16)], spec: &RegistrySpec) {
    let pki = dir.join("pki");
    let mut registry = format!(
        "# test network registry\nnetwork = \"{NETWORK_ID}\"\nversion = {}\n",
        spec.version
    );
    for (i, (m, port)) in members.iter().enumerate() {
        let kind = spec
            .retyped
            .iter()
            .find(|(member, _)| *member == i)
            .map_or(m.kind, |(_, kind)| *kind);
        let revoked = if spec.revoked.contains(&i) {
            let serial = cert_serial(&cii_kit::pki::party_files(&pki, &PeerIdentity::Institution(m.id.clone())).cert);
            format!("revoked_serials = [\"{serial}\"]\n")
        } else {
            String::new()
        };
        let roles = if spec.network_roles.contains(&i) {
            "roles = [\"caseworker\", \"system\", \"dpo\", \"jurist\", \"network_dpo\", \"operator\"]\n"
        } else {
            ""
        };
        let witness_vkey = match spec.witness_port {
            Some(_) => format!(
                "witness_vkey = \"{}\"\n",
                cosigner_vkey(
                    &pki,
                    &PeerIdentity::Institution(m.id.clone()),
                    &node_witness_name(&m.id)
                )
            ),
            None => String::new(),
        };
        if spec.parties.contains(&i) {
            registry.push_str(&format!(
                "\n[[party]]\nid = \"{id}\"\nname = \"{id} (network operator)\"\n{revoked}\
                 roles = [\"network_dpo\", \"operator\"]\n\n[[party.jwt_keys]]\nkid = \"dev-1\"\n\
                 public_key_file = \"pki/institutions/{id}/jwt.pub\"\n",
                id = m.id,
            ));
            continue;
        }
        registry.push_str(&format!(
            "\n[[institution]]\nid = \"{id}\"\ntype = \"{kind}\"\ncanton = \"VS\"\nname = \"{id} test\"\n\
             endpoint = \"https://127.0.0.1:{port}\"\n{revoked}{roles}{witness_vkey}\n[[institution.jwt_keys]]\nkid = \"dev-1\"\n\
             public_key_file = \"pki/institutions/{id}/jwt.pub\"\n",
            id = m.id,
        ));
        for (_, kid, algorithm, file) in spec.extra_keys.iter().filter(|(member, ..)| *member == i) {
            registry.push_str(&format!(
                "\n[[institution.jwt_keys]]\nkid = \"{kid}\"\nalgorithm = \"{algorithm}\"\npublic_key_file = \"{}\"\n",
                file.display()
            ));
        }
    }
    if let Some(port) = spec.witness_port {
        let name = cii_types::WitnessName::parse("witness", WITNESS).expect("name");
        registry.push_str(&format!(
            "\n[[witness]]\nname = \"{WITNESS}\"\nvkey = \"{}\"\nendpoint = \"https://127.0.0.1:{port}\"\n",
            cosigner_vkey(&pki, &PeerIdentity::Witness(name), WITNESS)
        ));
    }
    let file = dir.join("registry.toml");
    std::fs::write(&file, registry).expect("write registry");
    let key = std::fs::read(cii_kit::pki::registry_signing_key(&pki)).expect("registry key");
    cii_kit::registry::signed::sign(&file, &key).expect("sign registry");
}

/// The vkey of `party`'s cosigning key in the PKI at `pki`, named `name`.
pub fn cosigner_vkey(pki: &Path, party: &PeerIdentity, name: &str) -> String {
    let pem = std::fs::read_to_string(cii_kit::pki::cosigning_key(pki, party)).expect("cosigning key");
    cii_audit::cosignature::Cosigner::from_pem(name, &pem)
        .expect("cosigner")
        .verifier()
        .vkey()
}

/// The `[registry]` section of a config in the network's folder (poll every second).
fn registry_section(prefix: &str) -> String {
    format!(
        "[registry]\nfile = \"{prefix}registry.toml\"\nverification_key = \"{prefix}pki/registry.pub\"\npoll_seconds = 1\n\n"
    )
}

impl Network {
    /// The PKI folder.
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// Writes and signs a new registry version (every process picks it up within a second or
    /// two); the network's witnesses stay listed.
    pub fn publish_registry(&self, spec: &RegistrySpec) {
        let spec = RegistrySpec {
            witness_port: self.witness.as_ref().map(|w| w.addr.port()),
            ..spec.clone()
        };
        write_registry(self.dir.path(), &self.registered, &spec);
    }

    /// Starts a gateway and one node per member.
    pub async fn start(members: &[Member]) -> Network {
        Network::start_with(members, Options::default()).await
    }

    /// Starts a gateway and one node per member, with options.
    pub async fn start_with(members: &[Member], options: Options) -> Network {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        let ids: Vec<InstitutionId> = members.iter().map(|m| m.id.clone()).collect();
        let witness_name = cii_types::WitnessName::parse("witness", WITNESS).expect("name");
        cii_kit::pki::init(
            &pki,
            &ids,
            std::slice::from_ref(&witness_name),
            &["localhost".into(), "127.0.0.1".into()],
        )
        .expect("pki init");
        if options.two_transcryptors {
            write_keys_in_shares(&dir.path().join("keys"), &ids);
        } else {
            write_keys(&dir.path().join("keys"), &ids);
        }
        write_vkey(&pki, "cii.test/audit");

        // Bind every socket first: the registry needs the nodes' addresses.
        let gateway_listener = bind().await;
        let gateway_metrics_listener = bind().await;
        let gateway = gateway_listener.local_addr().expect("addr");
        let gateway_metrics = gateway_metrics_listener.local_addr().expect("addr");
        let consent_listener = bind().await;
        let consent = consent_listener.local_addr().expect("addr");
        let witness_listener = (!options.no_witnesses).then_some(bind().await);
        let witness_port = witness_listener.as_ref().map(|l| l.local_addr().expect("addr").port());
        let mut node_listeners = Vec::new();
        for _ in members {
            node_listeners.push((bind().await, bind().await, bind().await));
        }

        let registered: Vec<(Member, u16)> = members
            .iter()
            .zip(&node_listeners)
            .map(|(m, (_, inbound, _))| (m.clone(), inbound.local_addr().expect("addr").port()))
            .collect();
        write_registry(
            dir.path(),
            &registered,
            &RegistrySpec {
                version: 1,
                revoked: options.revoke_member_certs.clone(),
                network_roles: options.network_roles.clone(),
                parties: options.parties.clone(),
                witness_port,
                ..RegistrySpec::default()
            },
        );
        let witness = witness_listener.map(|listener| {
            let config = dir.path().join("witness.toml");
            std::fs::write(
                &config,
                format!(
                    "name = \"{WITNESS}\"\nlisten = \"{addr}\"\ndatabase = \"sqlite:witness/witness.db\"\n\
                     verifier_key_file = \"pki/gateway/audit.vkey\"\n\
                     cosigning_key_file = \"pki/witnesses/{WITNESS}/cosigning.key\"\n\n{registry}\
                     [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/witnesses/{WITNESS}/cert.pem\"\n\
                     key = \"pki/witnesses/{WITNESS}/key.pem\"\n",
                    addr = listener.local_addr().expect("addr"),
                    registry = registry_section(""),
                ),
            )
            .expect("write witness.toml");
            std::fs::create_dir_all(dir.path().join("witness")).expect("witness dir");
            let addr = listener.local_addr().expect("addr");
            let (stop, task) = RunningWitness::spawn(&config, listener);
            RunningWitness {
                addr,
                config,
                stop: Some(stop),
                task: Some(task),
            }
        });
        let transcryptor = if options.two_transcryptors {
            let listener = bind().await;
            let config = dir.path().join("transcryptor.toml");
            std::fs::write(
                &config,
                format!(
                    "name = \"{WITNESS}\"\nlisten = \"{addr}\"\nsecrets_file = \"keys/transcryptor/secrets.json\"\n\n\
                     [transcriptions]\nstore = \"sqlite:witness/transcriptions.db\"\n\
                     signing_key = \"pki/witnesses/{WITNESS}/transcriptions.key\"\norigin = \"cii.test/transcriptions\"\n\n{registry}\
                     [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/witnesses/{WITNESS}/cert.pem\"\n\
                     key = \"pki/witnesses/{WITNESS}/key.pem\"\n",
                    addr = listener.local_addr().expect("addr"),
                    registry = registry_section(""),
                ),
            )
            .expect("write transcryptor.toml");
            std::fs::create_dir_all(dir.path().join("witness")).expect("witness dir");
            Some(RunningTranscryptor::spawn(&config, listener))
        } else {
            None
        };
        let second_transcryptor = transcryptor
            .as_ref()
            .map(|t| {
                format!(
                    "second_transcryptor = {{ name = \"{WITNESS}\", url = \"https://127.0.0.1:{}\" }}\n",
                    t.addr.port()
                )
            })
            .unwrap_or_default();
        let limits = options.limits.clone().unwrap_or_default();
        let gateway_toml = dir.path().join("gateway.toml");
        std::fs::write(
            &gateway_toml,
            format!(
                "listen = \"{gateway}\"\nmetrics_listen = \"{gateway_metrics}\"\n{rulebook}\n{registry}[tls]\n\
                 ca = \"pki/ca.pem\"\ncert = \"pki/gateway/cert.pem\"\nkey = \"pki/gateway/key.pem\"\n\n\
                 [audit]\nstore = \"{audit_store}\"\norigin = \"cii.test/audit\"\nsigning_key = \"pki/gateway/audit.key\"\nretention_days = 365\nwitness_wait_seconds = 3\n{lease}\n\
                 [pseudonym]\ntranscryptor = \"keys/gateway/transcryptor.json\"\nglobal_public = \"keys/global-public.json\"\n{limit}{second_transcryptor}\n\
                 [consent]\nurl = \"https://127.0.0.1:{consent_port}\"\nreplicas = {consent_replicas:?}\n\n{limits}{store}\
                 [log]\nlevel = \"debug\"\n",
                store = store_section(&options),
                lease = options
                    .lease_seconds
                    .map(|s| format!("lease_seconds = {s}\n"))
                    .unwrap_or_default(),
                rulebook = match &options.rulebook {
                    Some(text) => {
                        let dir = dir.path().join("gateway/rulebook");
                        std::fs::create_dir_all(&dir).expect("rulebook dir");
                        std::fs::write(dir.join("00-canton.toml"), text).expect("rulebook");
                        "rulebook = \"gateway/rulebook\"\n"
                    }
                    None => "",
                },
                consent_port = consent.port(),
                consent_replicas = options.consent_replicas,
                registry = registry_section(""),
                audit_store = options
                    .audit_store
                    .clone()
                    .unwrap_or_else(|| "sqlite:gateway/audit.db".to_owned()),
                limit = options
                    .enrolment_limit
                    .map(|(rate, burst)| format!("enrolments_per_minute = {rate}\nenrolment_burst = {burst}\n"))
                    .unwrap_or_default(),
            ),
        )
        .expect("write gateway.toml");

        let gateway_clock = options.gateway_clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let (gateway_stop, gateway_task, external_gateways) = if options.external_gateways == 0 {
            let (stop, task) = spawn_gateway(
                &gateway_toml,
                cii_gateway::Listeners {
                    grpc: gateway_listener.into(),
                    metrics: Some(gateway_metrics_listener),
                },
                gateway_clock.clone(),
            );
            (Some(stop), Some(task), Vec::new())
        } else {
            drop((gateway_listener, gateway_metrics_listener));
            let external =
                external_gateway_configs(&gateway_toml, (gateway, gateway_metrics), options.external_gateways).await;
            (None, None, external)
        };
        let gateway_replicas: Vec<String> = options
            .gateway_replicas
            .iter()
            .cloned()
            .chain(
                external_gateways
                    .iter()
                    .skip(1)
                    .map(|(_, addr)| format!("https://{addr}")),
            )
            .collect();

        // The consent registry, admitting the gateway only.
        let consent_toml = dir.path().join("consent.toml");
        std::fs::write(
            &consent_toml,
            format!(
                "listen = \"{consent}\"\n\n{registry}[tls]\nca = \"pki/ca.pem\"\n\
                 cert = \"pki/consent/cert.pem\"\nkey = \"pki/consent/key.pem\"\n\n[pseudonym]\n\
                 global_public = \"keys/global-public.json\"\nsession_keys = \"keys/consent/session-keys.json\"\n\n\
                 [store]\ndatabase = \"{database}\"\nexpiry_sweep_seconds = 1\n",
                registry = registry_section(""),
                database = options
                    .consent_database
                    .clone()
                    .unwrap_or_else(|| "sqlite:consent/consent.db".to_owned()),
            ),
        )
        .expect("write consent.toml");
        let consent_config = cii_consent::ConsentConfig::load(&consent_toml).expect("consent config");
        let (consent_stop, consent_stopped) = oneshot::channel::<()>();
        let consent_clock = options.consent_clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let consent_task = tokio::spawn(async move {
            cii_consent::run_with_clock(
                consent_config,
                cii_consent::Listeners {
                    grpc: consent_listener,
                    metrics: None,
                },
                consent_clock,
                async {
                    let _ = consent_stopped.await;
                },
            )
            .await
            .expect("consent run");
        });

        let mut nodes = Vec::new();
        for (m, (api, inbound, metrics)) in members.iter().zip(node_listeners) {
            let (api_addr, inbound_addr, metrics_addr) = (
                api.local_addr().expect("addr"),
                inbound.local_addr().expect("addr"),
                metrics.local_addr().expect("addr"),
            );
            let toml = dir.path().join(format!("node-{}.toml", m.id.as_str().to_lowercase()));
            std::fs::write(
                &toml,
                format!(
                    "institution = \"{id}\"\ngateway_url = \"https://127.0.0.1:{gp}\"\ngateway_replicas = {replicas:?}\n\
                     api_listen = \"{api_addr}\"\ninbound_listen = \"{inbound_addr}\"\nmetrics_listen = \"{metrics_addr}\"\n\n{registry}\
                     [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/institutions/{id}/cert.pem\"\nkey = \"pki/institutions/{id}/key.pem\"\n\n\
                     [pseudonym]\nglobal_public = \"keys/global-public.json\"\nsession_keys = \"keys/institutions/{id}/session-keys.json\"\n\n\
                     [store]\ndatabase = \"sqlite:nodes/{id}/node.db\"\nkey = \"keys/institutions/{id}/store.key\"\n\n\
                     [audit]\nverifier_key_file = \"pki/gateway/audit.vkey\"\n\
                     cosigning_key_file = \"pki/institutions/{id}/cosigning.key\"\n\n{limits}",
                    id = m.id,
                    gp = gateway.port(),
                    replicas = gateway_replicas,
                    registry = registry_section(""),
                ),
            )
            .expect("write node toml");
            let listeners = cii_node::Listeners {
                api,
                inbound,
                metrics: Some(metrics),
            };
            let (stop, task) = RunningNode::spawn(&toml, listeners);
            nodes.push(RunningNode {
                member: m.clone(),
                api: api_addr,
                inbound: inbound_addr,
                metrics: metrics_addr,
                config: toml,
                stop: Some(stop),
                task: Some(task),
            });
        }
        let network = Network {
            registered,
            witness,
            transcryptor,
            dir,
            gateway,
            gateway_metrics,
            nodes,
            consent,
            consent_stop: Some(consent_stop),
            consent_task: Some(consent_task),
            gateway_stop,
            gateway_task,
            external_gateways,
            gateway_config: gateway_toml,
            gateway_clock,
            consent_config: consent_toml,
            audit_store: options
                .audit_store
                .clone()
                .unwrap_or_else(|| "sqlite:gateway/audit.db".to_owned()),
            gateway_store: options
                .gateway_database
                .clone()
                .unwrap_or_else(|| "sqlite:gateway/gateway.db".to_owned()),
        };
        if options.external_gateways == 0 {
            network.wait_until_serving(&options.revoke_member_certs).await;
        }
        network
    }

    /// Waits until the gateway answers (its log opened, its rulebook activation logged): a
    /// test that stops the network at once still finds what a started gateway wrote.
    async fn wait_until_serving(&self, revoked: &[usize]) {
        // A member whose certificate is good (a refusal would count in the test's metrics).
        let Some(node) = self
            .nodes
            .iter()
            .enumerate()
            .find(|(i, _)| !revoked.contains(i))
            .map(|(_, n)| n)
        else {
            return;
        };
        let party = PeerIdentity::Institution(node.member.id.clone());
        for _ in 0..300 {
            let channel = self.gateway_channel_at(self.gateway, &party, std::time::Duration::from_secs(2));
            let asked = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await;
            if asked.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the gateway did not serve within 30 s");
    }

    /// Stops the gateway, lets `meddle` change its files (the network's folder is
    /// given), and starts it again on the same addresses.
    pub async fn restart_gateway(&mut self, meddle: impl FnOnce(&Path)) {
        if let Some(stop) = self.gateway_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.gateway_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
        meddle(self.dir.path());
        let listeners = cii_gateway::Listeners {
            grpc: rebind(self.gateway).await.into(),
            metrics: Some(rebind(self.gateway_metrics).await),
        };
        let (stop, task) = spawn_gateway(&self.gateway_config, listeners, self.gateway_clock.clone());
        self.gateway_stop = Some(stop);
        self.gateway_task = Some(task);
    }

    /// Stops node `i` and waits until it has closed its store and sockets.
    pub async fn stop_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(stop) = node.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = node.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
    }

    /// Starts node `i` again on its former addresses.
    pub async fn restart_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let listeners = cii_node::Listeners {
            api: rebind(node.api).await,
            inbound: rebind(node.inbound).await,
            metrics: Some(rebind(node.metrics).await),
        };
        let (stop, task) = RunningNode::spawn(&node.config, listeners);
        node.stop = Some(stop);
        node.task = Some(task);
    }

    /// The TLS identity of a party of this network.
    pub fn identity(&self, party: &PeerIdentity) -> TlsIdentity {
        identity_in(&self.pki(), party)
    }

    /// The node of member `i`.
    pub fn node(&self, i: usize) -> &RunningNode {
        &self.nodes[i]
    }

    /// The audit log's size now, as `party` reads it from the gateway's checkpoint.
    pub async fn audit_size(&self, party: &PeerIdentity) -> u64 {
        cii_proto::audit::audit_client::AuditClient::new(self.gateway_channel_as(party))
            .get_checkpoint(cii_proto::audit::GetCheckpointRequest {})
            .await
            .expect("checkpoint")
            .into_inner()
            .tree_size
    }

    /// A channel to the gateway presenting `party`'s certificate.
    pub fn gateway_channel_as(&self, party: &PeerIdentity) -> Channel {
        self.gateway_channel_at(self.gateway, party, tls::CALL_DEADLINE)
    }

    /// A channel to a gateway at `addr` (this network's, or a second one on its stores)
    /// presenting `party`'s certificate, every call bounded by `deadline`.
    pub fn gateway_channel_at(&self, addr: SocketAddr, party: &PeerIdentity, deadline: std::time::Duration) -> Channel {
        let config = tls::client_config(
            &self.identity(party),
            PeerPolicy::only(PeerIdentity::Gateway, |_| false),
        )
        .expect("client config");
        tls::channel_with_deadline(&format!("https://127.0.0.1:{}", addr.port()), config, deadline).expect("channel")
    }

    /// A channel to any of the gateways at `addrs` presenting `party`'s certificate, as a node
    /// with `gateway_replicas` has (`cii_kit::tls::channel_to_any`).
    pub fn gateway_channel_to_any(&self, addrs: &[SocketAddr], party: &PeerIdentity) -> Channel {
        let config = tls::client_config(
            &self.identity(party),
            PeerPolicy::only(PeerIdentity::Gateway, |_| false),
        )
        .expect("client config");
        let urls: Vec<String> = addrs
            .iter()
            .map(|a| format!("https://127.0.0.1:{}", a.port()))
            .collect();
        tls::channel_to_any(&urls, config, tls::CALL_DEADLINE).expect("channel")
    }

    /// Starts a second gateway process on this network's configuration (the same stores,
    /// keys and registry) on a port of its own.
    pub async fn start_second_gateway(&self) -> SecondProcess {
        self.start_second_gateway_on(bind().await)
    }

    /// [`Network::start_second_gateway`] on `listener` (bound before the network started, so
    /// that the nodes' configurations could name it in `gateway_replicas`).
    pub fn start_second_gateway_on(&self, listener: TcpListener) -> SecondProcess {
        let addr = listener.local_addr().expect("addr");
        let listeners = cii_gateway::Listeners {
            grpc: listener.into(),
            metrics: None,
        };
        let (stop, task) = spawn_gateway(&self.gateway_config, listeners, self.gateway_clock.clone());
        SecondProcess { addr, stop, task }
    }

    /// How the gateway's run ended, if it ended within `within`: its panic message (the run's
    /// error), or empty for a clean end; `None` if it still runs.
    pub async fn gateway_exit(&mut self, within: std::time::Duration) -> Option<String> {
        let mut task = self.gateway_task.take()?;
        match tokio::time::timeout(within, &mut task).await {
            Ok(Ok(())) => Some(String::new()),
            Ok(Err(e)) if e.is_panic() => {
                let payload = e.into_panic();
                Some(
                    payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default(),
                )
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => {
                self.gateway_task = Some(task);
                None
            }
        }
    }

    /// Starts a second consent registry on this network's configuration (the same database)
    /// on `listener`.
    pub fn start_second_consent_on(&self, listener: TcpListener) -> SecondProcess {
        let addr = listener.local_addr().expect("addr");
        let config = cii_consent::ConsentConfig::load(&self.consent_config).expect("consent config");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            cii_consent::run_with_clock(
                config,
                cii_consent::Listeners {
                    grpc: listener,
                    metrics: None,
                },
                Arc::new(SystemClock),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("second consent registry run");
        });
        SecondProcess { addr, stop, task }
    }

    /// Node `i`'s inbox (up to 100 items), read by a caseworker.
    pub async fn inbox(&self, i: usize) -> Vec<cii_proto::node::InboxItem> {
        let token = self.token(i, "caseworker.1", &[cii_types::Role::Caseworker]);
        cii_proto::node::node_client::NodeClient::new(self.node_api_channel(i))
            .list_inbox(with_token(cii_proto::node::ListInboxRequest { limit: 100 }, &token))
            .await
            .expect("inbox")
            .into_inner()
            .items
    }

    /// Waits until node `i`'s inbox holds `n` items (deliveries are asynchronous when queued).
    pub async fn inbox_of_size(&self, i: usize, n: usize) -> Vec<cii_proto::node::InboxItem> {
        for _ in 0..200 {
            let items = self.inbox(i).await;
            if items.len() >= n {
                return items;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("inbox of node {i} never reached {n} items");
    }

    /// Starts the consent registry again on its former address (after [`Network::stop_consent`]).
    pub async fn restart_consent(&mut self) {
        let second = self.start_second_consent_on(rebind(self.consent).await);
        self.consent_stop = Some(second.stop);
        self.consent_task = Some(second.task);
    }

    /// Stops the consent registry and waits for it.
    pub async fn stop_consent(&mut self) {
        if let Some(stop) = self.consent_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.consent_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
    }

    /// Stops the gateway (cleanly: it drains and hands its lease over) and waits for it.
    pub async fn stop_gateway(&mut self) {
        if let Some(stop) = self.gateway_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.gateway_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
    }

    /// A channel to the consent registry presenting `party`'s certificate.
    pub fn consent_channel_as(&self, party: &PeerIdentity) -> Channel {
        let config = tls::client_config(
            &self.identity(party),
            PeerPolicy::only(PeerIdentity::Consent, |_| false),
        )
        .expect("client config");
        tls::channel(&format!("https://127.0.0.1:{}", self.consent.port()), config).expect("channel")
    }

    /// What the gateway sends the consent registry for the person with `avs`: the origin
    /// ciphertext a node makes, transcrypted into the registry's domain with this network's
    /// key files (in-process, as the gateway's transfer pipeline will).
    pub fn registry_ciphertext(&self, avs: &str) -> cii_proto::common::EncryptedPseudonym {
        self.ciphertext_for(avs, &cii_pseudonym::names::Party::Registry)
    }

    /// The person with `avs`, encrypted for `party`'s domain and key (see [`Network::registry_ciphertext`]).
    pub fn ciphertext_for(
        &self,
        avs: &str,
        party: &cii_pseudonym::names::Party,
    ) -> cii_proto::common::EncryptedPseudonym {
        let keys = self.dir.path().join("keys");
        let read = |f: &str| std::fs::read_to_string(keys.join(f)).expect("key file");
        let gateway =
            cii_pseudonym::gateway::Gateway::from_json(&read("gateway/transcryptor.json"), &read("global-public.json"))
                .expect("transcryptor");
        let avs = cii_types::AvsNumber::parse(avs).expect("avs");
        use cii_pseudonym::shares::{Ciphertext, Operation, Source, TranscryptorSecrets};
        let op = Operation {
            ciphertext: Ciphertext::Pseudonym(self.first_node_keys().enrolment_ciphertext(&avs)),
            from: Source::node(None),
            to: party.clone(),
        };
        let (mut ciphertext, key) = gateway.apply(&op).expect("first hop");
        if gateway.transcryptors() == 2 {
            let second = TranscryptorSecrets::from_json(&read("transcryptor/secrets.json")).expect("secrets");
            ciphertext = second
                .hop()
                .apply(&Operation { ciphertext, ..op }, &key)
                .expect("second hop")
                .0;
        }
        let Ciphertext::Pseudonym(ciphertext) = ciphertext else {
            panic!("a pseudonym")
        };
        cii_proto::common::EncryptedPseudonym {
            ciphertext: cii_pseudonym::wire::to_bytes(&ciphertext),
        }
    }

    /// What a node sends the gateway to enrol the person with `avs` (`Gateway/Enrol`'s origin).
    pub fn enrolment_ciphertext(&self, avs: &str) -> cii_proto::common::EncryptedPseudonym {
        let avs = cii_types::AvsNumber::parse(avs).expect("avs");
        cii_proto::common::EncryptedPseudonym {
            ciphertext: cii_pseudonym::wire::to_bytes(&self.first_node_keys().enrolment_ciphertext(&avs)),
        }
    }

    /// What `origin`'s node would seal for a transfer's counterparty (`cii_node::sealed`): the
    /// payload one part per category, the written request; and the written request's SHA-256.
    pub fn sealed_as(
        &self,
        origin: &str,
        transfer_id: &str,
        payload: Option<&prost_types::Any>,
        written_request: &str,
    ) -> (cii_proto::common::SealedParts, Vec<u8>) {
        let outgoing = cii_node::sealed::Outgoing {
            origin,
            transfer_id,
            payload,
            only: None,
            written_request,
        };
        cii_node::sealed::seal(&self.first_node_keys(), &outgoing).expect("sealed")
    }

    /// The pseudonym keys of member `i`'s node (what only that institution holds).
    pub fn node_keys(&self, i: usize) -> cii_pseudonym::node::NodeKeys {
        let keys = self.dir.path().join("keys");
        let read = |f: &str| std::fs::read_to_string(keys.join(f)).expect("key file");
        let id = &self.nodes[i].member.id;
        cii_pseudonym::node::NodeKeys::from_json(
            &read("global-public.json"),
            &read(&format!("institutions/{id}/session-keys.json")),
        )
        .expect("node keys")
    }

    /// The pseudonym keys of the first member's node.
    fn first_node_keys(&self) -> cii_pseudonym::node::NodeKeys {
        self.node_keys(0)
    }

    /// A channel to node `i`'s IT-facing API, as the institution's IT system.
    pub fn node_api_channel(&self, i: usize) -> Channel {
        let node = self.node(i);
        let party = PeerIdentity::Institution(node.member.id.clone());
        let config =
            tls::client_config(&self.identity(&party), PeerPolicy::only(party, |_| false)).expect("client config");
        tls::channel(&format!("https://127.0.0.1:{}", node.api.port()), config).expect("channel")
    }

    /// A channel to node `i`'s inbound API presenting `party`'s certificate.
    pub fn node_inbound_channel_as(&self, i: usize, party: &PeerIdentity) -> Channel {
        let node = self.node(i);
        let expected = PeerIdentity::Institution(node.member.id.clone());
        let config =
            tls::client_config(&self.identity(party), PeerPolicy::only(expected, |_| false)).expect("client config");
        tls::channel(&format!("https://127.0.0.1:{}", node.inbound.port()), config).expect("channel")
    }

    /// A token for a user of member `i`, signed with that member's key.
    pub fn token(&self, i: usize, user: &str, roles: &[Role]) -> String {
        self.token_with(i, i, user, roles, time::OffsetDateTime::now_utc(), 300)
    }

    /// A token claiming issuer `claimed`, signed with `signer`'s key, issued at `iat`.
    pub fn token_with(
        &self,
        claimed: usize,
        signer: usize,
        user: &str,
        roles: &[Role],
        iat: time::OffsetDateTime,
        ttl: i64,
    ) -> String {
        let key =
            std::fs::read(cii_kit::pki::jwt_private_key(&self.pki(), &self.node(signer).member.id)).expect("jwt key");
        let spec = cii_kit::jwt::TokenSpec {
            issuer: &self.node(claimed).member.id,
            audience: NETWORK_ID,
            subject: user,
            roles,
            kid: "dev-1",
            issued_at: iat,
            ttl: time::Duration::seconds(ttl),
        };
        cii_kit::jwt::mint(&key, &spec).expect("mint")
    }

    /// Stops everything, waits for the gateway to finish, and hands back the
    /// folder (PKI, configs, stores) for inspection.
    pub async fn stop(mut self) -> tempfile::TempDir {
        for node in &mut self.nodes {
            if let Some(stop) = node.stop.take() {
                let _ = stop.send(());
            }
        }
        if let Some(stop) = self.gateway_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.gateway_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
        if let Some(stop) = self.consent_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.consent_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
        self.stop_witness().await;
        self.stop_transcryptor().await;
        self.dir
    }

    /// Stops the second transcryptor (with `Options::two_transcryptors`) and waits until it has.
    pub async fn stop_transcryptor(&mut self) {
        if let Some(transcryptor) = &mut self.transcryptor {
            if let Some(stop) = transcryptor.stop.take() {
                let _ = stop.send(());
            }
            if let Some(task) = transcryptor.task.take() {
                let _ = task.await;
            }
        }
    }

    /// Starts the second transcryptor again on its address.
    pub async fn restart_transcryptor(&mut self) {
        self.stop_transcryptor().await;
        if let Some(old) = self.transcryptor.take() {
            let listener = rebind(old.addr).await;
            self.transcryptor = Some(RunningTranscryptor::spawn(&old.config, listener));
        }
    }

    /// Stops the independent witness and waits until it has closed its store.
    pub async fn stop_witness(&mut self) {
        if let Some(witness) = &mut self.witness {
            if let Some(stop) = witness.stop.take() {
                let _ = stop.send(());
            }
            if let Some(task) = witness.task.take() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
            }
        }
    }
}

/// A written, recurring consent of a person to ORP-VS passing identity and job-search data to
/// AI-VS for integration, valid from yesterday for a year.
pub fn consent_declaration() -> cii_proto::consent::ConsentRecord {
    use cii_proto::consent as pb;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let at = |days: i64| {
        Some(prost_types::Timestamp {
            seconds: now + days * 86_400,
            nanos: 0,
        })
    };
    pb::ConsentRecord {
        institutions: vec!["ORP-VS".into(), "AI-VS".into()],
        directions: vec![pb::Direction {
            from: "ORP-VS".into(),
            to: "AI-VS".into(),
        }],
        categories: vec!["identity".into(), "job_search".into()],
        purposes: vec!["integration".into()],
        valid_from: at(-1),
        valid_until: at(365),
        written: true,
        evidence_sha256: vec![9; 32],
        evidence_reference: "dms://orp-vs/consents/2026-0042".into(),
        recurrence: pb::Recurrence::Recurring as i32,
        information_given: "Purpose, institutions, data and the right to revoke explained; leaflet handed over.".into(),
        language: "fr".into(),
        ..pb::ConsentRecord::default()
    }
}

/// A valid AVS number (check digit computed), distinct for each `n`.
pub fn synthetic_avs(n: u64) -> String {
    let mut digits = [7u8, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut rest = n + 1;
    for d in digits.iter_mut().rev().take(8) {
        *d = u8::try_from(rest % 10).expect("digit");
        rest /= 10;
    }
    let check = cii_types::avs::check_digit(&digits);
    digits
        .iter()
        .chain(std::iter::once(&check))
        .map(|d| char::from(b'0' + d))
        .collect()
}

/// The TLS identity of `party` in the PKI at `pki`.
pub fn identity_in(pki: &Path, party: &PeerIdentity) -> TlsIdentity {
    let files = cii_kit::pki::party_files(pki, party);
    TlsIdentity::load(&TlsFiles {
        ca: pki.join("ca.pem"),
        cert: files.cert,
        key: files.key,
    })
    .expect("tls identity")
}

/// The serial (hex) of the certificate in `cert_pem`.
pub fn cert_serial(cert_pem: &Path) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(cert_pem).expect("cert");
    cii_kit::registry::serial_hex(&cii_kit::tls::inspect(&der).expect("inspect").serial)
}

/// Writes a file; a secret one with mode 0600, as `cii keys` does (services refuse others).
pub fn write_file(path: &Path, contents: &str, secret: bool) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).expect("write key file");
    if secret {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    }
}

/// Writes `pki/gateway/audit.vkey`, the verifier key of the log signed with
/// `pki/gateway/audit.key` under `origin` (what `cii audit vkey` prints).
pub fn write_vkey(pki: &Path, origin: &str) {
    let pem = std::fs::read_to_string(pki.join("gateway/audit.key")).expect("audit key");
    let vkey = cii_audit::note::Signer::from_pem(origin, &pem)
        .expect("signer")
        .verifier()
        .vkey();
    std::fs::write(pki.join("gateway/audit.vkey"), format!("{vkey}\n")).expect("write vkey");
}

/// The key files of a ceremony in shares (two transcryptors), plus a store key per institution.
pub fn write_keys_in_shares(dir: &Path, institutions: &[InstitutionId]) {
    for (name, contents, secret) in cii_pseudonym::shares::key_files(institutions, 1).expect("key files") {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        write_file(&path, &contents, secret);
    }
    write_store_keys(dir, institutions);
}

/// A store key per institution (as `cii keys store-key` does on each node).
fn write_store_keys(dir: &Path, institutions: &[InstitutionId]) {
    for id in institutions {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut bytes).expect("random");
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_file(&dir.join(format!("institutions/{id}/store.key")), &key, true);
    }
}

/// The key ceremony's files under `dir` (as `cii keys init` writes them), plus a
/// store key per institution (as `cii keys store-key` does on each node).
pub fn write_keys(dir: &Path, institutions: &[InstitutionId]) {
    let ceremony = cii_pseudonym::ceremony::Ceremony::new();
    // Epoch 1 in use; epoch 2 of the same ceremony under `epoch-2/`, for rotation tests.
    for (epoch, folder) in [(1, dir.to_owned()), (2, dir.join("epoch-2"))] {
        for (name, contents, secret) in ceremony.key_files(institutions, epoch, false).expect("key files") {
            let path = folder.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            write_file(&path, &contents, secret);
        }
    }
    write_store_keys(dir, institutions);
}

fn spawn_gateway(
    config_file: &Path,
    listeners: cii_gateway::Listeners,
    clock: Arc<dyn Clock>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let config = cii_gateway::GatewayConfig::load(config_file).expect("gateway config");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        cii_gateway::run_with_clock(config, listeners, clock, async {
            let _ = stopped.await;
        })
        .await
        .expect("gateway run");
    });
    (stop, task)
}

/// Binds `addr` again, waiting for a stopped server's tasks to let go of it.
async fn rebind(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{addr} stayed in use");
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// A request carrying `token` as its bearer token.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    request
}

/// Signs arbitrary `claims` with `key_pem` (PKCS#8) under `algorithm` and `kid`: the tokens an
/// identity provider (or a dishonest member's) could issue, well-formed or not.
pub fn mint_raw(key_pem: &[u8], algorithm: jsonwebtoken::Algorithm, kid: &str, claims: &serde_json::Value) -> String {
    use jsonwebtoken::{EncodingKey, Header};
    let key = match algorithm {
        jsonwebtoken::Algorithm::RS256 => EncodingKey::from_rsa_pem(key_pem),
        jsonwebtoken::Algorithm::ES256 => EncodingKey::from_ec_pem(key_pem),
        jsonwebtoken::Algorithm::HS256 => Ok(EncodingKey::from_secret(key_pem)),
        _ => EncodingKey::from_ed_pem(key_pem),
    }
    .expect("signing key");
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// Whether the metrics at `addr` come to contain `line` within 10 s: counters are written
/// after the answer goes out, and registry reloads poll every second.
pub async fn metrics_eventually_contain(addr: SocketAddr, line: &str) -> bool {
    for _ in 0..100 {
        if fetch_metrics(addr).await.contains(line) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// Fetches a metrics endpoint's text (plain HTTP/1.1 GET).
pub async fn fetch_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text
}

/// `n` gateway configs beside `template` (`gateway-I.toml`), alike but for their addresses:
/// the first on `first` (gRPC, metrics), the others on free ports.
async fn external_gateway_configs(
    template: &Path,
    first: (SocketAddr, SocketAddr),
    n: usize,
) -> Vec<(PathBuf, SocketAddr)> {
    let text = std::fs::read_to_string(template).expect("gateway.toml");
    let mut out = Vec::new();
    for i in 0..n {
        let (grpc, metrics) = if i == 0 {
            first
        } else {
            let (a, b) = (bind().await, bind().await);
            (a.local_addr().expect("addr"), b.local_addr().expect("addr"))
        };
        let own = text
            .replacen(&format!("listen = \"{}\"", first.0), &format!("listen = \"{grpc}\""), 1)
            .replacen(
                &format!("metrics_listen = \"{}\"", first.1),
                &format!("metrics_listen = \"{metrics}\""),
                1,
            );
        let path = template.with_file_name(format!("gateway-{i}.toml"));
        std::fs::write(&path, own).expect("gateway-I.toml");
        out.push((path, grpc));
    }
    out
}

/// The gateway's `[store]` section of `options`.
fn store_section(options: &Options) -> String {
    let section = options.gateway_store.clone().unwrap_or_default();
    match &options.gateway_database {
        Some(url) => {
            let rest: Vec<&str> = section.lines().filter(|l| l.trim() != "[store]").collect();
            format!("[store]\ndatabase = \"{url}\"\n{}\n", rest.join("\n"))
        }
        None => section,
    }
}

/// A store URL as configured, with a relative SQLite path resolved in the network folder `dir`.
pub fn store_url(dir: &Path, configured: &str) -> String {
    match configured.strip_prefix("sqlite:") {
        Some(path) => format!("sqlite:{}", dir.join(path).display()),
        None => configured.to_owned(),
    }
}

/// The entries of the audit log of the network folder `dir` (SQLite), in order, decoded.
pub async fn audit_entries(dir: &Path) -> Vec<cii_audit::Entry> {
    audit_entries_at(&format!("sqlite:{}", dir.join("gateway/audit.db").display())).await
}

/// The entries of the audit log at `url` that retention left readable, in order, decoded.
pub async fn audit_entries_at(url: &str) -> Vec<cii_audit::Entry> {
    let store = cii_audit::Store::open_read_only(url).await.expect("audit store");
    let entries = store
        .entries(0, 100_000)
        .await
        .expect("entries")
        .iter()
        .filter(|e| !matches!(e.body, cii_audit::store::Body::Expired { .. }))
        .map(|e| cii_audit::entry::decode(e.readable().expect("readable body")).expect("decode"))
        .collect();
    store.close().await;
    entries
}

/// Passes bytes through untouched: for requests no generated client would send.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = prost::bytes::Buf::copy_to_bytes(src, prost::bytes::Buf::remaining(src));
        Ok(Some(bytes.to_vec()))
    }
}

/// Calls the unary rpc `path` (e.g. `/cii.gateway.v1.Gateway/SubmitTransfer`) with `body` as the
/// request message's bytes, whatever they are; the answer's bytes.
pub async fn raw_unary(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
    token: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    Ok(grpc.unary(with_token(body, token), path, RawCodec).await?.into_inner())
}

/// Writes `entries` (any bytes) straight into the audit store at `url` after its last
/// entry, under a checkpoint signed with the log's key (`signing_key_pem`): what a bug of
/// an earlier release, or someone holding the store and the key, could leave behind.
/// Returns the first planted index.
pub async fn plant_audit_entries(url: &str, signing_key_pem: &str, entries: &[Vec<u8>]) -> u64 {
    use cii_audit::merkle::{Tree, leaf_hash};
    let store = cii_audit::Store::open(url).await.expect("audit store");
    let mut tree = Tree::new();
    for leaf in store.leaf_hashes().await.expect("leaf hashes") {
        tree.push(leaf);
    }
    let first = tree.size();
    let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
    let rows: Vec<cii_audit::store::NewEntry> = (first..)
        .zip(entries)
        .map(|(index, bytes)| {
            let leaf = leaf_hash(bytes);
            tree.push(leaf);
            cii_audit::store::NewEntry {
                index,
                leaf_hash: leaf,
                bytes: bytes.clone(),
                time_micros: now,
            }
        })
        .collect();
    let origin = "cii.test/audit";
    let signer = cii_audit::note::Signer::from_pem(origin, signing_key_pem).expect("signer");
    let checkpoint = cii_audit::note::Checkpoint {
        origin: origin.to_owned(),
        size: tree.size(),
        root: tree.root(),
    };
    store
        .append(&rows, &[], (tree.size(), &signer.sign(&checkpoint.body())))
        .await
        .expect("plant");
    store.close().await;
    first
}
