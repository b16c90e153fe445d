//! gRPC plumbing shared by the services: health, reflection, the shared
//! server builder and its layer that names and counts refusals (errors
//! themselves are built in [`crate::status`]).

use tonic::Status;
use tower::layer::util::{Identity, Stack};

use tonic_health::ServingStatus;
/// Reflection could not be built from the descriptors.
pub use tonic_reflection::server::Error as ReflectionError;

pub use crate::status::{CODE_TRAILER, ERROR_DOMAIN, FIELD_TRAILER, error_code, error_field};

/// Reports a service (or a role, such as the gateway's sequencer) as serving or not.
pub type HealthReporter = tonic_health::server::HealthReporter;

/// Sets `name`'s status on the health service.
pub async fn set_serving(reporter: &HealthReporter, name: &str, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status(name, status).await;
}

/// gRPC health (reporting SERVING for `services` and the server as a whole)
/// and reflection v1 and v1alpha listing exactly `services`.
pub async fn health_and_reflection(
    services: &[&str],
) -> Result<
    (
        tonic_health::server::HealthReporter,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    for name in services {
        reporter.set_service_status(*name, ServingStatus::Serving).await;
    }
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cii_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc.Status and ErrorInfo: generic tools (grpcurl, grpcio's reflection
            // client) decode our errors' details only if reflection serves their descriptors.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in services {
            b = b.with_service_name(*name);
        }
        b
    };
    // grpcurl 1.8 only speaks v1alpha; current tools speak v1.
    let v1 = builder().build_v1()?;
    let v1alpha = builder().build_v1alpha()?;
    Ok((reporter, health, v1, v1alpha))
}

/// How long a server keeps a connection before asking its client to reconnect.
pub const MAX_CONNECTION_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// A tonic server with the settings every service shares: request spans that
/// carry the rpc name only, per-rpc call counts, limits, and stable codes on
/// requests refused before any handler (oversized, undecodable).
pub fn server(metrics: &crate::metrics::Metrics) -> tonic::transport::Server<Layers> {
    let calls = metrics.rpc_calls.clone();
    tonic::transport::Server::builder()
        .trace_fn(move |req: &http::Request<()>| {
            // INVARIANT (bounded-labels): the label is a path of the access table or
            // `unlisted`, never the path a caller sent: any client that reaches the
            // port could otherwise grow the metric families without bound.
            let rpc = cii_types::access::rpc(req.uri().path()).map_or("unlisted", |row| row.path);
            calls
                .get_or_create(&crate::metrics::RpcLabels { rpc: rpc.to_owned() })
                .inc();
            tracing::info_span!("rpc", rpc)
        })
        .timeout(std::time::Duration::from_secs(30))
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        // Every connection is re-established within this age (a graceful GOAWAY; clients
        // reconnect on their next call): a client's renewed certificate is then presented
        // everywhere, and the old one can be revoked without cutting anyone off.
        .max_connection_age(MAX_CONNECTION_AGE)
        .layer(NameCodecRefusals(std::sync::Arc::new(metrics.clone())))
}

/// The layers of [`server`].
pub type Layers = Stack<NameCodecRefusals, Identity>;

type GrpcResponse = http::Response<tonic::body::Body>;

/// The layer that marks each request with its row of the access table, and gives tonic's codec refusals (oversized, undecodable requests) our stable
/// codes `MESSAGE_TOO_LARGE` and `MESSAGE_MALFORMED`, and counts them.
#[derive(Clone)]
pub struct NameCodecRefusals(std::sync::Arc<crate::metrics::Metrics>);

impl<S> tower::Layer<S> for NameCodecRefusals {
    type Service = NameCodecRefusalsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NameCodecRefusalsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`NameCodecRefusals`].
#[derive(Clone)]
pub struct NameCodecRefusalsService<S> {
    inner: S,
    /// Shared: cloned for every call (one reference count, not one per metric family).
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for NameCodecRefusalsService<S>
where
    S: tower::Service<http::Request<B>, Response = GrpcResponse>,
    S::Future: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<GrpcResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The access table's row for this path, read by the `Authenticate`
        // interceptor before anything else (an unlisted path gets none and is refused).
        if let Some(row) = cii_types::access::rpc(request.uri().path()) {
            request.extensions_mut().insert(row);
        }
        let (response, metrics) = (self.inner.call(request), self.metrics.clone());
        Box::pin(async move { Ok(name_codec_refusal(&metrics, response.await?)) })
    }
}

/// The largest request a service decodes (tonic's default decoding limit).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// Counts every refusal by its code (see the INVARIANT below). Also, tonic refuses, before any handler runs, a request above its decoding limit
/// (a bare `OUT_OF_RANGE`) and one that does not decode (`INTERNAL`, as gRPC's
/// status code table prescribes for request parse errors: bad wire types,
/// truncated fields, nesting beyond prost's recursion limit). This gives them
/// our stable codes `MESSAGE_TOO_LARGE` and `MESSAGE_MALFORMED` and counts
/// them, so callers and dashboards see them like every other refusal. Nothing
/// was decoded, so nothing was done.
fn name_codec_refusal(metrics: &crate::metrics::Metrics, mut response: GrpcResponse) -> GrpcResponse {
    let headers = response.headers_mut();
    // INVARIANT (refusals-counted-once): every refusal a handler returns travels as a
    // trailers-only response whose headers carry our code; it is counted here, and
    // handlers never count their own.
    if let Some(code) = headers.get(CODE_TRAILER).and_then(|c| c.to_str().ok()) {
        if crate::auth::is_authentication_code(code) {
            metrics.count_auth_refusal(code);
        } else {
            metrics.count_refusal(code);
        }
        return response;
    }
    let named = match Status::from_header_map(headers) {
        Some(s) if s.code() == tonic::Code::OutOfRange && s.message().contains("decoded message length too large") => {
            crate::status::message_too_large(MAX_REQUEST_BYTES)
        }
        // prost's text names the message and field path, never the bytes.
        Some(s)
            if s.code() == tonic::Code::Internal && s.message().starts_with("failed to decode Protobuf message") =>
        {
            crate::status::message_malformed(s.message())
        }
        _ => return response,
    };
    if let Some(code) = error_code(&named) {
        metrics.count_refusal(&code);
    }
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    // Our own status always encodes (an ASCII code, a plain message).
    let _ = named.add_header(headers);
    response
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub async fn serve_tls(
    router: tonic::transport::server::Router<Layers>,
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    metrics: &crate::metrics::Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let m = metrics.clone();
    let incoming = crate::tls::incoming(listener, tls, move |reason| m.tls_refused(reason));
    router.serve_with_incoming_shutdown(incoming, shutdown).await
}
