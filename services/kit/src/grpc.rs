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
/// carry the rpc name only, per-rpc call counts, and limits.
pub fn server(metrics: &crate::metrics::Metrics) -> tonic::transport::Server {
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
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub async fn serve_tls(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    metrics: &crate::metrics::Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let m = metrics.clone();
    let incoming = crate::tls::incoming(listener, tls, move |reason| m.tls_refused(reason));
    router.serve_with_incoming_shutdown(incoming, shutdown).await
}
