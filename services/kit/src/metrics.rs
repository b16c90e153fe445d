//! Prometheus metrics, served as text on `GET /metrics`.
//!
//! INVARIANT (no-pii-in-metrics): label values are rpc names, institution ids
//! and stable error codes; never a person, a user or a payload.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Labels of an rpc counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/package.Service/Method`.
    pub rpc: String,
}

/// Labels of a refusal counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// Stable error code (e.g. `JWT_EXPIRED`).
    pub code: String,
}

/// Labels of the permits counted per legal basis and pair of institutions: registry ids and
/// rulebook ids only, so the label set is bounded by the configuration, never by requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BasisLabels {
    /// The basis that carried the permit.
    pub basis: String,
    /// The institution that disclosed.
    pub sender: String,
    /// The institution that received.
    pub recipient: String,
}

/// Labels of the decisions a sender was not told (they turned on the recipient's
/// relationship with the person): registry ids and the outcome only.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UndisclosedLabels {
    /// The institution that pushed.
    pub sender: String,
    /// `PERMIT` or `DENY`, as logged.
    pub outcome: String,
}

/// The metrics of one service process.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Authenticated rpc calls.
    pub rpc_calls: Family<RpcLabels, Counter>,
    /// Calls refused before reaching a handler, by code.
    pub auth_refusals: Family<CodeLabels, Counter>,
    /// TLS handshakes refused, by reason.
    pub tls_refusals: Family<CodeLabels, Counter>,
    /// Requests a handler refused (bad input, rate limits, policy), by code.
    pub refusals: Family<CodeLabels, Counter>,
    /// Transfer decisions, by outcome (`PERMIT`, `DENY`).
    pub decisions: Family<CodeLabels, Counter>,
    /// Permits by basis, sender and recipient: "in the individual case" watched in volume.
    pub permits_by_basis: Family<BasisLabels, Counter>,
    /// Pushes whose decision turned on the recipient's relationship with the person, by sender
    /// and outcome: many denials from one sender look like probing for relationships.
    pub undisclosed: Family<UndisclosedLabels, Counter>,
    /// Delivery attempts, by result (`DELIVERED`, `DEAD_LETTERED` or the error code).
    pub deliveries: Family<CodeLabels, Counter>,
    /// DPO queries of the audit log, by scope (`institution`, `network`).
    pub audit_queries: Family<CodeLabels, Counter>,
    /// 1 while this node's witness alarm is raised (nodes only; 0 elsewhere).
    pub witness_alarm: Gauge,
    /// Cosigning rounds of the gateway, by outcome (`QUORUM`, `NO_QUORUM`, `WITNESS_AHEAD`).
    pub cosigning: Family<CodeLabels, Counter>,
    /// The tree size of the newest checkpoint cosigned by a quorum of witnesses (gateway only).
    pub cosigned_size: Gauge,
}

impl Metrics {
    /// Creates the metrics of a service named `service` (`gateway`, `node`, …).
    pub fn new(service: &str) -> Metrics {
        let mut registry = Registry::with_prefix("cii");
        let rpc_calls = Family::<RpcLabels, Counter>::default();
        let auth_refusals = Family::<CodeLabels, Counter>::default();
        let tls_refusals = Family::<CodeLabels, Counter>::default();
        let refusals = Family::<CodeLabels, Counter>::default();
        let decisions = Family::<CodeLabels, Counter>::default();
        let permits_by_basis = Family::<BasisLabels, Counter>::default();
        let deliveries = Family::<CodeLabels, Counter>::default();
        let undisclosed = Family::<UndisclosedLabels, Counter>::default();
        let audit_queries = Family::<CodeLabels, Counter>::default();
        let witness_alarm = Gauge::default();
        let cosigning = Family::<CodeLabels, Counter>::default();
        let cosigned_size = Gauge::default();
        registry.register(
            "cosigning",
            "Rounds of asking the witnesses to cosign a checkpoint, by outcome (QUORUM, NO_QUORUM, WITNESS_AHEAD)",
            cosigning.clone(),
        );
        registry.register(
            "cosigned_size",
            "Tree size of the newest audit checkpoint cosigned by more than half of the witnesses",
            cosigned_size.clone(),
        );
        registry.register(
            "audit_queries",
            "DPO queries of the audit log, by scope (institution, network)",
            audit_queries.clone(),
        );
        registry.register(
            "witness_alarm",
            "1 while this node's witness saw the audit log rewritten (it exchanges nothing until cleared)",
            witness_alarm.clone(),
        );
        registry.register("decisions", "Transfer decisions, by outcome", decisions.clone());
        registry.register(
            "permits_by_basis",
            "Permitted transfers by legal basis, sender and recipient (the volume of individual cases)",
            permits_by_basis.clone(),
        );
        registry.register(
            "undisclosed_decisions",
            "Pushes whose decision turned on the recipient's relationship with the person (the sender was not told), by sender and outcome",
            undisclosed.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts to nodes, by result",
            deliveries.clone(),
        );
        registry.register(
            "rpc_calls",
            format!("Authenticated rpc calls handled by the {service}"),
            rpc_calls.clone(),
        );
        registry.register(
            "auth_refusals",
            "Calls refused by authentication, by code",
            auth_refusals.clone(),
        );
        registry.register(
            "tls_refusals",
            "TLS handshakes refused, by reason",
            tls_refusals.clone(),
        );
        registry.register(
            "refusals",
            format!("Requests the {service} refused after authentication, by code"),
            refusals.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            rpc_calls,
            auth_refusals,
            tls_refusals,
            refusals,
            decisions,
            permits_by_basis,
            undisclosed,
            deliveries,
            audit_queries,
            witness_alarm,
            cosigning,
            cosigned_size,
        }
    }

    /// Counts one event under `code` in `family`.
    pub fn count(family: &Family<CodeLabels, Counter>, code: &str) {
        family.get_or_create(&CodeLabels { code: code.to_owned() }).inc();
    }

    /// Counts a refused TLS handshake.
    pub fn tls_refused(&self, reason: &str) {
        self.tls_refusals
            .get_or_create(&CodeLabels {
                code: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a call refused by authentication (the token), by its code.
    pub fn count_auth_refusal(&self, code: &str) {
        self.auth_refusals
            .get_or_create(&CodeLabels { code: code.to_owned() })
            .inc();
    }

    /// Counts a refused call by its stable code (the server layer does, for every response
    /// that carries one).
    pub fn count_refusal(&self, code: &str) {
        self.refusals.get_or_create(&CodeLabels { code: code.to_owned() }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
            () = &mut shutdown => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let response = if req.uri().path() == "/metrics" {
                        Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(metrics.encode())))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found\n")))
                    };
                    Ok::<_, hyper::http::Error>(response.unwrap_or_default())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}
