//! gRPC plumbing shared by the services: health, reflection and errors with
//! stable codes.
//!
//! Every caller-facing error carries a stable machine code in
//! `google.rpc.ErrorInfo.reason` (domain `cii.exchange`) and, for grpcurl and
//! simple clients, in the `cii-error-code` trailer; the field at fault, if
//! any, in ErrorInfo metadata `field` and the `cii-error-field` trailer. The
//! message is generic and never holds personal data.

use std::collections::HashMap;

use tonic::Status;
use tower::layer::util::{Identity, Stack};

use tonic_health::ServingStatus;
/// Reflection could not be built from the descriptors.
pub use tonic_reflection::server::Error as ReflectionError;
use tonic_types::{ErrorDetails, StatusExt};

/// The ErrorInfo domain of our codes.
pub const ERROR_DOMAIN: &str = "cii.exchange";
/// Trailer carrying the stable code.
pub const CODE_TRAILER: &str = "cii-error-code";
/// Trailer carrying the field at fault.
pub const FIELD_TRAILER: &str = "cii-error-field";

/// A caller-facing error with a stable `reason` code.
pub fn error(code: tonic::Code, reason: &str, message: impl Into<String>, field: Option<&str>) -> Status {
    let mut metadata = HashMap::new();
    if let Some(field) = field {
        metadata.insert("field".to_owned(), field.to_owned());
    }
    let mut status = Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    );
    if let Ok(value) = reason.parse() {
        status.metadata_mut().insert(CODE_TRAILER, value);
    }
    if let Some(value) = field.and_then(|f| f.parse().ok()) {
        status.metadata_mut().insert(FIELD_TRAILER, value);
    }
    status
}

/// The stable code of a status, if it carries one.
pub fn error_code(status: &Status) -> Option<String> {
    status.get_error_details().error_info().map(|info| info.reason.clone())
}

/// The field at fault named by a status, if any.
pub fn error_field(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get("field").cloned())
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

/// A tonic server with the settings every service shares: request spans that
/// carry the rpc name only, per-rpc call counts, limits, and stable codes on
/// requests refused before any handler (oversized, undecodable).
pub fn server(metrics: &crate::metrics::Metrics) -> tonic::transport::Server<Layers> {
    let calls = metrics.rpc_calls.clone();
    tonic::transport::Server::builder()
        .trace_fn(move |req: &http::Request<()>| {
            let rpc = req.uri().path();
            calls
                .get_or_create(&crate::metrics::RpcLabels { rpc: rpc.to_owned() })
                .inc();
            tracing::info_span!("rpc", rpc)
        })
        .timeout(std::time::Duration::from_secs(30))
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .layer(NameCodecRefusals(metrics.clone()))
}

/// The layers of [`server`].
pub type Layers = Stack<NameCodecRefusals, Identity>;

type GrpcResponse = http::Response<tonic::body::Body>;

/// The layer that gives tonic's codec refusals (oversized, undecodable requests) our stable
/// codes `MESSAGE_TOO_LARGE` and `MESSAGE_MALFORMED`, and counts them.
#[derive(Clone)]
pub struct NameCodecRefusals(crate::metrics::Metrics);

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
    metrics: crate::metrics::Metrics,
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (response, metrics) = (self.inner.call(request), self.metrics.clone());
        Box::pin(async move { Ok(name_codec_refusal(&metrics, response.await?)) })
    }
}

/// The largest request a service decodes (tonic's default decoding limit).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// tonic refuses, before any handler runs, a request above its decoding limit
/// (a bare `OUT_OF_RANGE`) and one that does not decode (`INTERNAL`, as gRPC's
/// status code table prescribes for request parse errors: bad wire types,
/// truncated fields, nesting beyond prost's recursion limit). This gives them
/// our stable codes `MESSAGE_TOO_LARGE` and `MESSAGE_MALFORMED` and counts
/// them, so callers and dashboards see them like every other refusal. Nothing
/// was decoded, so nothing was done.
fn name_codec_refusal(metrics: &crate::metrics::Metrics, mut response: GrpcResponse) -> GrpcResponse {
    let headers = response.headers_mut();
    if headers.contains_key(CODE_TRAILER) {
        return response;
    }
    let named = match Status::from_header_map(headers) {
        Some(s) if s.code() == tonic::Code::OutOfRange && s.message().contains("decoded message length too large") => {
            error(
                tonic::Code::OutOfRange,
                "MESSAGE_TOO_LARGE",
                format!("the request is larger than {MAX_REQUEST_BYTES} bytes; nothing was done"),
                None,
            )
        }
        // prost's text names the message and field path, never the bytes.
        Some(s)
            if s.code() == tonic::Code::Internal && s.message().starts_with("failed to decode Protobuf message") =>
        {
            error(
                tonic::Code::Internal,
                "MESSAGE_MALFORMED",
                format!("the request does not decode ({}); nothing was done", s.message()),
                None,
            )
        }
        _ => return response,
    };
    let named = metrics.refused(named);
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
