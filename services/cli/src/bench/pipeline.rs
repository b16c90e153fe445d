//! `cii bench pipeline`: full transfers through the consent registry, the
//! gateway and two nodes, each its own process on loopback (mutual TLS, JWT,
//! transcryptions, consent and directory lookup, decision, field filtering,
//! the durable audit entry on SQLite, delivery, receipts witnessed), against
//! two baselines measured in the same run:
//! - a bare mutual-TLS tonic relay forwarding a message of the same size
//!   between the same two parties (client → relay → recipient), same concurrency;
//! - the crypto floor: all cores doing nothing but one transfer's
//!   cryptography (sender encryption, two JWT verifications — node and
//!   gateway —, the three transcryptions — audit, registry, recipient —, the
//!   sealing of the payload at the sender one part per category, the seal
//!   key's rekeying at the gateway, the registry's and the recipient's
//!   decryptions and the opening of the parts).
//!
//! The CPU time each process spent is read from /proc before and after the
//! load, which gives where the time goes per transfer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cii_proto::exchange as xt;
use cii_proto::gateway as gw;
use cii_proto::node::{self as node_pb, node_client::NodeClient, node_inbound_client::NodeInboundClient};
use cii_types::{InstitutionId, PeerIdentity, Role};
use prost::Message;
use tonic::transport::Channel;

use crate::local_network::{Network, Spec, node_dir};
use crate::node_api::authorized;

const MEMBERS: [(&str, &str, &str); 2] = [
    ("ORP-VS", "AC_ORP", "ORP (benchmark)"),
    ("AI-VS", "AI", "AI office (benchmark)"),
];

/// What a load phase measured.
#[derive(Debug, Default)]
pub struct Load {
    pub completed: u64,
    /// Seconds from the first call to the last answer.
    pub elapsed: f64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Failed calls by stable code.
    pub errors: BTreeMap<String, u64>,
}

impl Load {
    /// The phase's figures from its latencies (µs), its length and its failures.
    fn of(mut latencies: Vec<u32>, elapsed: f64, errors: BTreeMap<String, u64>) -> Load {
        latencies.sort_unstable();
        let quantile = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |us| f64::from(*us) / 1000.0)
        };
        Load {
            completed: latencies.len() as u64,
            elapsed,
            per_s: latencies.len() as f64 / elapsed,
            p50_ms: quantile(0.50),
            p99_ms: quantile(0.99),
            errors,
        }
    }
}

/// Runs `call(task, n)` from `concurrency` tasks for `phase`; throughput and latency.
async fn drive<F, Fut>(concurrency: usize, phase: Duration, call: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = 0;
            while start.elapsed() < phase {
                let t = Instant::now();
                match call(task, n).await {
                    Ok(()) => latencies.push(t.elapsed().as_micros() as u32),
                    Err(code) => *errors.entry(code).or_default() += 1,
                }
                n += 1;
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = BTreeMap::new();
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            for (code, count) in e {
                *errors.entry(code).or_default() += count;
            }
        }
    }
    Load::of(latencies, start.elapsed().as_secs_f64(), errors)
}

/// Calls `call(n)` at `rate` per second for `phase`, whether or not earlier calls returned (an
/// open loop: a realistic load, not a saturating one); each latency counts from the moment
/// the call was due, so a stalled system is not hidden by calls it kept from being made.
async fn open_loop<F, Fut>(rate: f64, phase: Duration, call: F) -> Load
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = tokio::task::JoinSet::new();
    let mut n = 0;
    while start.elapsed() < phase {
        let due = ticks.tick().await;
        let future = call(n);
        calls.spawn(async move { (future.await, due.elapsed()) });
        n += 1;
    }
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(done) = calls.join_next().await {
        match done {
            Ok((Ok(()), took)) => latencies.push(took.as_micros() as u32),
            Ok((Err(code), _)) => *errors.entry(code).or_default() += 1,
            Err(_) => *errors.entry("PANICKED".to_owned()).or_default() += 1,
        }
    }
    Load::of(latencies, start.elapsed().as_secs_f64(), errors)
}

pub(super) fn code_of(status: &tonic::Status) -> String {
    cii_kit::grpc::error_code(status).unwrap_or_else(|| format!("{:?}", status.code()))
}

/// A synthetic AVS number with a valid EAN-13 check digit.
pub(super) fn synthetic_avs(i: u64) -> String {
    let digits = format!("756{:09}", 100_000_000 + i);
    let sum: u32 = digits
        .chars()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(k, d)| if k % 2 == 0 { d } else { 3 * d })
        .sum();
    let check = (10 - sum % 10) % 10;
    format!(
        "{}.{}.{}.{}{check}",
        &digits[..3],
        &digits[3..7],
        &digits[7..11],
        &digits[11..]
    )
}

/// Limits far above what the machine can do: the bench measures the pipeline.
const UNLIMITED: &str = "[limits]\ntransfers = { per_minute = 100000000, burst = 1000000 }\n\
consent_changes = { per_minute = 100000000, burst = 1000000 }\nqueries = { per_minute = 100000000, burst = 1000000 }\n\n";

/// The ORP's and the AI office's nodes, the gateways and the consent registry as processes, in
/// a temporary folder named `prefix…` (removed when the folder handle is dropped).
pub(super) fn two_node_network(
    prefix: &str,
    gateways: crate::local_network::Gateways<'_>,
    transcryptors: u32,
) -> anyhow::Result<(tempfile::TempDir, Network)> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let spec = Spec {
        institutions: &MEMBERS,
        rulebook: None,
        log_level: "warn",
        limits: Some(UNLIMITED),
        gateways,
        transcryptors,
    };
    let network = Network::start(&dir.path().join("net"), &spec)?;
    Ok((dir, network))
}

/// Where the gateways' outbox is: their SQLite file, or the operational store on PostgreSQL.
pub(super) fn outbox_of(net_dir: &Path, gateways: crate::local_network::Gateways<'_>) -> String {
    match gateways.postgres {
        Some((_, operations)) => operations.to_owned(),
        None => format!("sqlite:{}", net_dir.join("gateway/gateway.db").display()),
    }
}

/// A node's API client and a caseworker's token for it.
pub(super) type Caseworker = (NodeClient<Channel>, String);

/// Clients of the ORP's and the AI office's nodes, with `persons` synthetic persons enrolled at
/// both (`O-i` at the ORP, `A-i` at the AI office).
pub(super) async fn connect_and_enrol(network: &Network, persons: u64) -> anyhow::Result<(Caseworker, Caseworker)> {
    let connect = |id: &str| -> anyhow::Result<Caseworker> {
        let file = network.token_file(
            id,
            "bench.caseworker",
            &[Role::Caseworker],
            &network.dir.join(format!("{id}.token")),
        )?;
        crate::node_api::NodeApiArgs {
            node: network.api(id)?,
            ca: network.dir.join("ca.pem"),
            token_file: file,
        }
        .connect()
    };
    let (orp, ai) = (connect("ORP-VS")?, connect("AI-VS")?);
    for i in 0..persons {
        for ((client, token), prefix) in [(&orp, "O"), (&ai, "A")] {
            let request = node_pb::EnrolRequest {
                avs_number: synthetic_avs(i),
                local_record_id: format!("{prefix}-{i}"),
            };
            client
                .clone()
                .enrol(authorized(token, request)?)
                .await
                .context("enrolment")?;
        }
    }
    Ok((orp, ai))
}

pub(super) fn report_payload() -> prost_types::Any {
    prost_types::Any {
        type_url: "type.googleapis.com/cii.exchange.v1.EarlyDetectionReport".into(),
        value: xt::EarlyDetectionReport {
            person: Some(xt::PersonDetails {
                family_name: "Exemple".into(),
                given_names: "Anna".into(),
                birth_date: "1979-04-12".into(),
            }),
            employment_situation: "unemployed since 2025-09, 14 months".into(),
            health_limitations: "back problems limit work as a warehouse clerk".into(),
            ..xt::EarlyDetectionReport::default()
        }
        .encode_to_vec(),
    }
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/PID/status` value in MiB (`VmRSS`, `VmHWM`).
pub(super) fn memory_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The bare relay: client → relay (gateway's identity) → recipient (AI's identity), mutual TLS,
/// in this process. The relay forwards the `Deliver` call and its answer, nothing else.
mod relay {
    use cii_proto::node::node_inbound_client::NodeInboundClient;
    use cii_proto::node::node_inbound_server::NodeInbound;
    use cii_proto::node::{self as pb};
    use tonic::transport::Channel;
    use tonic::{Request, Response, Status};

    pub struct Sink;
    pub struct Relay(pub NodeInboundClient<Channel>);

    #[tonic::async_trait]
    impl NodeInbound for Sink {
        async fn ping(&self, _: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
            Err(Status::unimplemented("relay benchmark"))
        }
        async fn deliver(&self, request: Request<pb::Delivery>) -> Result<Response<pb::DeliveryAck>, Status> {
            Ok(Response::new(pb::DeliveryAck {
                transfer_id: request.into_inner().transfer_id,
            }))
        }
        async fn provide(&self, _: Request<pb::ProvideRequest>) -> Result<Response<pb::ProvideResponse>, Status> {
            Err(Status::unimplemented("relay benchmark"))
        }
        async fn deliver_batch(&self, _: Request<pb::DeliveryBatch>) -> Result<Response<pb::DeliveryBatchAck>, Status> {
            Err(Status::unimplemented("relay benchmark"))
        }
        async fn offer_review(
            &self,
            _: Request<pb::OfferReviewRequest>,
        ) -> Result<Response<pb::OfferReviewResponse>, Status> {
            Err(Status::unimplemented("relay benchmark"))
        }
    }

    #[tonic::async_trait]
    impl NodeInbound for Relay {
        async fn ping(&self, _: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
            Err(Status::unimplemented("relay benchmark"))
        }
        async fn deliver(&self, request: Request<pb::Delivery>) -> Result<Response<pb::DeliveryAck>, Status> {
            self.0.clone().deliver(request.into_inner()).await
        }
        async fn provide(&self, _: Request<pb::ProvideRequest>) -> Result<Response<pb::ProvideResponse>, Status> {
            Err(Status::unimplemented("relay benchmark"))
        }
        async fn deliver_batch(&self, _: Request<pb::DeliveryBatch>) -> Result<Response<pb::DeliveryBatchAck>, Status> {
            Err(Status::unimplemented("relay benchmark"))
        }
        async fn offer_review(
            &self,
            _: Request<pb::OfferReviewRequest>,
        ) -> Result<Response<pb::OfferReviewResponse>, Status> {
            Err(Status::unimplemented("relay benchmark"))
        }
    }
}

fn identity(dir: &Path, folder: &str) -> anyhow::Result<cii_kit::tls::TlsIdentity> {
    let files = cii_kit::config::TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(folder).join("cert.pem"),
        key: dir.join(folder).join("key.pem"),
    };
    Ok(cii_kit::tls::TlsIdentity::load(&files)?)
}

async fn serve<S>(service: S, identity: &cii_kit::tls::TlsIdentity, admit: PeerIdentity) -> anyhow::Result<u16>
where
    S: cii_proto::node::node_inbound_server::NodeInbound,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let policy = cii_kit::tls::PeerPolicy::new(move |peer: &PeerIdentity| *peer == admit, |_| false);
    let config = cii_kit::tls::server_config(identity, cii_kit::tls::ClientAuth::Required(policy))?;
    let incoming = cii_kit::tls::incoming(listener, config, |_| {});
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(cii_proto::node::node_inbound_server::NodeInboundServer::new(service))
            .serve_with_incoming(incoming),
    );
    Ok(port)
}

fn client(
    identity: &cii_kit::tls::TlsIdentity,
    port: u16,
    server: PeerIdentity,
) -> anyhow::Result<NodeInboundClient<Channel>> {
    let config = cii_kit::tls::client_config(identity, cii_kit::tls::PeerPolicy::only(server, |_| false))?;
    Ok(NodeInboundClient::new(cii_kit::tls::channel(
        &format!("https://127.0.0.1:{port}"),
        config,
    )?))
}

/// The relay phase: same concurrency, a Delivery carrying as many bytes as a transfer's request.
async fn relay_load(dir: &Path, concurrency: usize, phase: Duration, message_bytes: usize) -> anyhow::Result<Load> {
    let orp = PeerIdentity::Institution(InstitutionId::parse("id", "ORP-VS")?);
    let ai = PeerIdentity::Institution(InstitutionId::parse("id", "AI-VS")?);
    let (gateway_id, ai_id, orp_id) = (
        identity(dir, "gateway")?,
        identity(dir, "nodes/AI-VS")?,
        identity(dir, "nodes/ORP-VS")?,
    );
    let sink_port = serve(relay::Sink, &ai_id, PeerIdentity::Gateway).await?;
    let onward = client(&gateway_id, sink_port, ai)?;
    let relay_port = serve(relay::Relay(onward), &gateway_id, orp).await?;
    let to_relay = client(&orp_id, relay_port, PeerIdentity::Gateway)?;
    let message = node_pb::Delivery {
        transfer_id: "relay".into(),
        sender: "ORP-VS".into(),
        payload: Some(node_pb::SealedPayload {
            ciphertext: vec![7; message_bytes],
            ..node_pb::SealedPayload::default()
        }),
        ..node_pb::Delivery::default()
    };
    // Warm the connections.
    to_relay
        .clone()
        .deliver(message.clone())
        .await
        .context("relay warm-up")?;
    Ok(drive(concurrency, phase, move |task, n| {
        let (mut c, mut m) = (to_relay.clone(), message.clone());
        m.transfer_id = format!("r{task}-{n}");
        async move { c.deliver(m).await.map(|_| ()).map_err(|s| code_of(&s)) }
    })
    .await)
}

/// One transfer's cryptography on every core, for `phase`: transfers per second.
fn crypto_floor(dir: &Path, phase: Duration) -> anyhow::Result<f64> {
    use cii_pseudonym::names::Party;
    let ceremony = cii_pseudonym::ceremony::Ceremony::new();
    let gateway = Arc::new(cii_pseudonym::gateway::Gateway::new(
        ceremony.pseudonymisation_secret.clone(),
        ceremony.rekeying_secret.clone(),
        &ceremony.global_public,
        1,
    ));
    let (orp_id, ai_id) = (
        InstitutionId::parse("id", "ORP-VS")?,
        InstitutionId::parse("id", "AI-VS")?,
    );
    let (orp, ai) = (Party::Institution(orp_id.clone()), Party::Institution(ai_id));
    let keys = |p: &Party| cii_pseudonym::node::NodeKeys::new(ceremony.global_public, ceremony.session_keys(p, 1));
    let (sender, recipient, registry) = (
        Arc::new(keys(&orp)),
        Arc::new(keys(&ai)),
        Arc::new(keys(&Party::Registry)),
    );
    let avs = cii_types::AvsNumber::parse(&synthetic_avs(1))?;
    let local = sender.decrypt(&gateway.enrol(&sender.enrolment_ciphertext(&avs), &orp));
    // The network's own registry and JWT key: the same verification as the node's and gateway's.
    let members = Arc::new(cii_kit::registry::Registry::load(&dir.join("registry.toml"))?);
    let token = cii_kit::jwt::mint(
        &std::fs::read(node_dir(dir, "ORP-VS").join("jwt.key"))?,
        &cii_kit::jwt::TokenSpec {
            issuer: &orp_id,
            audience: members.network(),
            subject: "bench.caseworker",
            roles: &[Role::Caseworker],
            kid: "demo-1",
            issued_at: time::OffsetDateTime::now_utc(),
            ttl: time::Duration::hours(1),
        },
    )?;
    // The report cut per category as the sender's node cuts it (not cryptography: outside the loop).
    let report = report_payload();
    let payload: Vec<(String, Vec<u8>)> =
        cii_types::exchange::Catalogue::load()?.split(&report.type_url, &report.value)?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (gateway, sender, recipient, registry, members, token, payload, orp, ai, orp_id) = (
                gateway.clone(),
                sender.clone(),
                recipient.clone(),
                registry.clone(),
                members.clone(),
                token.clone(),
                payload.clone(),
                orp.clone(),
                ai.clone(),
                orp_id.clone(),
            );
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let issuer = members.get(&orp_id).context("ORP-VS in the registry")?;
                let rules = cii_kit::jwt::Rules {
                    audience: members.network().to_owned(),
                    max_lifetime_secs: cii_kit::jwt::DEFAULT_MAX_LIFETIME_SECS,
                };
                let mut done = 0u64;
                while start.elapsed() < phase {
                    let person = sender.encrypt_own(&local)?;
                    for _ in 0..2 {
                        std::hint::black_box(cii_kit::jwt::verify(
                            &token,
                            issuer,
                            &rules,
                            time::OffsetDateTime::now_utc(),
                        )?);
                    }
                    std::hint::black_box(gateway.translate(&person, &orp, &Party::Audit));
                    let for_registry = gateway.translate(&person, &orp, &Party::Registry);
                    let for_recipient = gateway.translate(&person, &orp, &ai);
                    // Sealed per category at the sender, the key rekeyed by the gateway, opened by the recipient.
                    let sealer = sender.sealer()?;
                    let mut parts = Vec::with_capacity(payload.len());
                    for (label, bytes) in &payload {
                        parts.push((label, sealer.seal(label.as_bytes(), bytes)?));
                    }
                    let key = gateway.rekey_seal_key(&sealer.key, &ai);
                    std::hint::black_box(registry.decrypt(&for_registry));
                    std::hint::black_box(recipient.decrypt(&for_recipient));
                    let opener = recipient.opener(&key)?;
                    for (label, (nonce, ciphertext)) in &parts {
                        std::hint::black_box(opener.open(*nonce, label.as_bytes(), ciphertext)?);
                    }
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| anyhow::anyhow!("a crypto thread panicked"))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Runs the section; its JSON object.
#[expect(clippy::print_stdout, reason = "the section's table")]
pub fn run(
    load_phase: Duration,
    phase: Duration,
    concurrency: usize,
    (gateways, transcryptors): (crate::local_network::Gateways<'_>, u32),
) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (_dir, network) = two_node_network("cii-bench-", gateways, transcryptors)?;
    let net_dir = network.dir.clone();
    let outbox = outbox_of(&net_dir, gateways);
    let load = runtime.block_on(async {
        let persons = concurrency.max(16) as u64;
        let ((orp, token), _) = connect_and_enrol(&network, persons).await?;
        let payload = report_payload();
        let send = move |client: NodeClient<Channel>, token: String, id: String, person: u64| {
            let request = node_pb::SendRequest {
                list_record_ids: Vec::new(),
                transfer_id: id,
                recipient: "AI-VS".into(),
                local_record_id: format!("O-{person}"),
                trigger: gw::Trigger::SpontaneousReport as i32,
                purpose: "early_detection".into(),
                payload: Some(payload.clone()),
                include_identity: false,
                attested_facts: vec![
                    "person_informed_before".into(),
                    "incapacity_for_work_or_threatened".into(),
                ],
                written_request: String::new(),
                case_reference: "bench-case".into(),
            };
            let size = request.encoded_len();
            let call = async move {
                let answer = client
                    .clone()
                    .send(authorized(&token, request).map_err(|e| e.to_string())?)
                    .await
                    .map_err(|s| code_of(&s))?
                    .into_inner();
                // Permitted and durably logged: delivered at once, or queued behind earlier
                // deliveries to the same recipient (the outbox keeps each recipient's order).
                match gw::transfer_response::State::try_from(answer.state) {
                    Ok(gw::transfer_response::State::Delivered | gw::transfer_response::State::Queued) => Ok(()),
                    Ok(other) => Err(format!("{other:?}")),
                    Err(_) => Err("STATE_UNKNOWN".to_owned()),
                }
            };
            (size, call)
        };
        // Warm-up: connections, caches, the first SQLite pages.
        let (size, first) = send(orp.clone(), token.clone(), "warm-0".into(), 0);
        first
            .await
            .map_err(|code| anyhow::anyhow!("the first transfer failed: {code}"))?;
        let pids = network.pids();
        let cpu_before: Vec<f64> = pids.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
        let own_before = cpu_seconds(std::process::id());
        let gateway_pid = network.gateway_pid().context("the gateway's pid")?;
        let sampler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = sampler_stop.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let start = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    samples.push((start.elapsed().as_secs_f64(), memory_mb(gateway_pid, "VmRSS:")));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                samples
            })
        };
        let (orp_open, token_open, send_open) = (orp.clone(), token.clone(), send.clone());
        let pipeline = drive(concurrency, load_phase, move |task, n| {
            let (_, call) = send(
                orp.clone(),
                token.clone(),
                format!("b{task}-{n}"),
                (task as u64 * 7 + n) % persons,
            );
            call
        })
        .await;
        // A transfer is done when the recipient's node stored it: wait for the outbox to drain.
        let (drained, backlog) = outbox_drained(&outbox).await?;
        sampler_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rss = sampler.await.unwrap_or_default();
        let cpu: Vec<(String, f64)> = pids
            .iter()
            .zip(cpu_before)
            .map(|((name, pid), before)| (name.clone(), cpu_seconds(*pid) - before))
            .chain(std::iter::once((
                "bench client".to_owned(),
                cpu_seconds(std::process::id()) - own_before,
            )))
            .collect();
        let peak_rss = memory_mb(gateway_pid, "VmHWM:");
        // Then (outside the CPU figures above) a realistic load: half the rate the senders were answered at, offered at a
        // steady pace (today's saturation p99 is mostly queueing).
        let offered = (pipeline.per_s / 2.0).max(1.0);
        let (client, bearer) = (orp_open.clone(), token_open.clone());
        // (For `--seconds`, as the baselines: a soak's long load is for memory, not latency.)
        let open = open_loop(offered, phase, move |n| {
            send_open(client.clone(), bearer.clone(), format!("o-{n}"), n % persons).1
        })
        .await;
        outbox_drained(&outbox).await?;
        let relay = relay_load(&net_dir, concurrency, phase, size).await?;
        anyhow::Ok((pipeline, drained, backlog, relay, cpu, rss, peak_rss, (offered, open)))
    })?;
    let (mut pipeline, drained, backlog, relay, cpu, rss, peak_rss, (offered, open)) = load;
    let answered_per_s = pipeline.per_s;
    let delivered = pipeline.completed.saturating_sub(backlog);
    pipeline.per_s = delivered as f64 / (pipeline.elapsed + drained);
    drop(network);
    let floor = crypto_floor(&net_dir, phase)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;

    let stores = match gateways.postgres {
        Some(_) => format!("{} gateway(s) on PostgreSQL stores", gateways.count),
        None => "one gateway, SQLite stores".to_owned(),
    };
    println!("\npipeline (consent registry, {stores} and two nodes as processes; {concurrency} in flight)");
    if backlog == 0 {
        println!(
            "  transfers delivered  {:>12.0} /s   ({delivered} in {:.1} s, the outbox drained {drained:.1} s after the last answer)",
            pipeline.per_s,
            pipeline.elapsed + drained,
        );
    } else {
        println!(
            "  transfers delivered  {:>12.0} /s   ({delivered} in {:.1} s; {backlog} still queued {drained:.0} s after the last answer)",
            pipeline.per_s,
            pipeline.elapsed + drained,
        );
    }
    println!(
        "  senders answered     {answered_per_s:>12.0} /s   p50 {:.1} ms   p99 {:.1} ms   (decided, logged, delivered or queued)",
        pipeline.p50_ms, pipeline.p99_ms
    );
    for (code, count) in &pipeline.errors {
        println!("  failed: {code:<24} {count}");
    }
    println!(
        "  open loop            {offered:>12.0} /s offered (half the answered rate): p50 {:.1} ms   p99 {:.1} ms   ({} answered, {} failed)",
        open.p50_ms,
        open.p99_ms,
        open.completed,
        open.errors.values().sum::<u64>()
    );
    println!(
        "  bare mTLS relay      {:>12.0} /s   p50 {:.1} ms   p99 {:.1} ms",
        relay.per_s, relay.p50_ms, relay.p99_ms
    );
    println!("  crypto floor         {floor:>12.0} /s   (all {cores} cores, one transfer's cryptography)");
    println!(
        "  gateway RSS          {peak_rss:>12.1} MB peak (VmHWM); during the load: {}",
        rss_summary(&rss)
    );
    if delivered > 0 {
        println!("  CPU per delivered transfer, by process (µs):");
        let per = |s: f64| s * 1e6 / delivered as f64;
        for (name, seconds) in &cpu {
            println!("    {name:<20} {:>8.0}", per(*seconds));
        }
        let total: f64 = cpu.iter().map(|(_, s)| per(*s)).sum();
        println!(
            "    {:<20} {:>8.0}   of which the crypto floor is {:.0}",
            "all",
            total,
            cores * 1e6 / floor
        );
    }
    let ratio = pipeline.per_s / floor;
    let relay_ratio = pipeline.per_s / relay.per_s;
    println!("pipeline.crypto_floor_ratio {ratio:.2} (relay ratio {relay_ratio:.2})");
    let errors: serde_json::Map<String, serde_json::Value> =
        pipeline.errors.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
    Ok(serde_json::json!({
        "gateways": gateways.count,
        "throughput_per_s": pipeline.per_s,
        "p50_ms": pipeline.p50_ms,
        "p99_ms": pipeline.p99_ms,
        "crypto_floor_per_s": floor,
        "crypto_floor_ratio": ratio,
        "relay_per_s": relay.per_s,
        "relay_ratio": relay_ratio,
        "delivered": delivered,
        "answered": pipeline.completed,
        "backlog": backlog,
        "answered_per_s": answered_per_s,
        "outbox_drain_s": drained,
        "errors": errors,
        "open_loop": {
            "offered_per_s": offered,
            "answered_per_s": open.per_s,
            "p50_ms": open.p50_ms,
            "p99_ms": open.p99_ms,
            "failed": open.errors.values().sum::<u64>(),
        },
        "gateway_peak_rss_mb": peak_rss,
        "gateway_rss_mb_samples": rss.iter().map(|(_, mb)| *mb).collect::<Vec<_>>(),
    }))
}

/// Seconds until the gateways' outbox is empty (a read-only look at its store: `sqlite:PATH` or
/// a PostgreSQL URL), and how many deliveries were still queued when the wait ended (after 5
/// minutes at most).
pub(super) async fn outbox_drained(store: &str) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    sqlx::any::install_default_drivers();
    let url = match store.strip_prefix("sqlite:") {
        Some(path) => format!("sqlite:{path}?mode=ro"),
        None => store.to_owned(),
    };
    let pool = sqlx::AnyPool::connect(&url).await?;
    loop {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&pool)
            .await?;
        if left == 0 || start.elapsed() > Duration::from_secs(300) {
            pool.close().await;
            return Ok((start.elapsed().as_secs_f64(), u64::try_from(left).unwrap_or(0)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rss_summary(samples: &[(f64, f64)]) -> String {
    match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => {
            let max = samples.iter().map(|(_, mb)| *mb).fold(0.0, f64::max);
            format!(
                "{:.1} MB at {:.0} s, {:.1} MB at {:.0} s, max {max:.1} MB",
                first.1, first.0, last.1, last.0
            )
        }
        _ => "no sample".to_owned(),
    }
}
