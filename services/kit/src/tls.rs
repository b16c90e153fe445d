//! Mutual TLS between the parties of the network (rustls on ring, TLS 1.3 only).
//!
//! Both directions verify the chain to the network CA, then the identity the
//! certificate carries ([`PeerIdentity`], a URI subject alternative name) and
//! its serial against the registry's revocation list, all during the
//! handshake: a revoked or foreign certificate never reaches a handler.
//!
//! We terminate TLS ourselves rather than through tonic's `ServerTlsConfig`,
//! which cannot take a custom certificate verifier; tonic still sees the peer
//! certificates through its `TlsConnectInfo` (so `Request::peer_certs` works).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use cii_types::PeerIdentity;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::{ENV_TLS_KEY_PEM, TlsFiles};

/// A TLS handshake that takes longer than this is dropped (slowloris guard).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {file}: {problem}")]
    Pem {
        /// Which file (`CA certificate`, `certificate`, `private key`).
        what: &'static str,
        /// Its path.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The verifier could not be built (e.g. no usable CA certificate).
    #[error("tls verifier: {0}")]
    Verifier(String),
    /// The endpoint URL is not usable.
    #[error("endpoint {0}: expected https://host:port")]
    Endpoint(String),
}

/// The network CA certificates in the PEM file `ca`.
fn load_roots(ca: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let pem_err = |problem: String| TlsError::Pem {
        what: "CA certificate",
        file: ca.display().to_string(),
        problem,
    };
    let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_err(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in ca_certs {
        roots.add(cert).map_err(|e| pem_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(pem_err("no certificate found".to_owned()));
    }
    Ok(roots)
}

/// This party's certificate chain and key, and the network CA.
///
/// Every TLS configuration built from it presents the pair through one shared
/// [`Presented`], so a renewed certificate ([`TlsIdentity::renew`]) is presented at the
/// next handshake, in both directions, without a restart.
#[derive(Clone)]
pub struct TlsIdentity {
    roots: Arc<RootCertStore>,
    presented: Arc<Presented>,
    files: TlsFiles,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // INVARIANT (no-secrets-in-logs): the private key is never printed.
        f.debug_struct("TlsIdentity")
            .field("chain_len", &self.presented.current().cert.len())
            .finish_non_exhaustive()
    }
}

/// The certificate and key presented now, shared by every configuration of one identity.
#[derive(Debug)]
pub struct Presented(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl Presented {
    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        // A poisoned lock still holds the last pair written whole.
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl rustls::server::ResolvesServerCert for Presented {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for Presented {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Reads a certificate chain and its key; the key comes from `CII_TLS_KEY_PEM` when that is set.
fn read_pair(files: &TlsFiles) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let pem_err = |what: &'static str, file: &std::path::Path, problem: String| TlsError::Pem {
        what,
        file: file.display().to_string(),
        problem,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_err("certificate", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err("certificate", &files.cert, "no certificate found".to_owned()));
    }
    let key = match std::env::var(ENV_TLS_KEY_PEM) {
        Ok(pem) => PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
            pem_err(
                "private key",
                std::path::Path::new(ENV_TLS_KEY_PEM),
                "not a PEM private key".to_owned(),
            )
        })?,
        Err(_) => {
            use std::os::unix::fs::PermissionsExt;
            // INVARIANT (secret-files-0600): a key other accounts can read is refused.
            if let Ok(meta) = std::fs::metadata(&files.key)
                && meta.permissions().mode() & 0o077 != 0
            {
                return Err(pem_err(
                    "private key",
                    &files.key,
                    format!(
                        "readable by other accounts (mode {:o}); run chmod 600 on it",
                        meta.permissions().mode() & 0o777
                    ),
                ));
            }
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_err("private key", &files.key, e.to_string()))?
        }
    };
    let pair = rustls::sign::CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        pem_err(
            "private key",
            &files.key,
            format!("does not match the certificate: {e}"),
        )
    })?;
    Ok(pair)
}

impl TlsIdentity {
    /// Loads the files; the key comes from `CII_TLS_KEY_PEM` when that is set.
    pub fn load(files: &TlsFiles) -> Result<TlsIdentity, TlsError> {
        let roots = load_roots(&files.ca)?;
        let pair = read_pair(files)?;
        Ok(TlsIdentity {
            roots: Arc::new(roots),
            presented: Arc::new(Presented(std::sync::RwLock::new(Arc::new(pair)))),
            files: files.clone(),
        })
    }

    /// This party's own identity, read from its certificate.
    pub fn identity(&self) -> Result<PeerIdentity, TlsError> {
        let current = self.presented.current();
        let leaf = current
            .cert
            .first()
            .ok_or_else(|| TlsError::Verifier("empty certificate chain".to_owned()))?;
        inspect(leaf)
            .map(|c| c.identity)
            .map_err(|e| TlsError::Verifier(e.to_string()))
    }

    /// Reads the certificate and key files again and, if they hold a new certificate,
    /// presents it from the next handshake on: `Ok(Some(serial))`. The new pair must
    /// match, chain to the network CA and name the same party (a renewal never changes
    /// who a process is); otherwise the current pair stays and the error says why.
    pub fn renew(&self) -> Result<Option<String>, TlsError> {
        let pair = read_pair(&self.files)?;
        let current = self.presented.current();
        if pair.cert == current.cert {
            return Ok(None);
        }
        let refused = |problem: String| TlsError::Pem {
            what: "certificate",
            file: self.files.cert.display().to_string(),
            problem,
        };
        let leaf = pair
            .cert
            .first()
            .ok_or_else(|| refused("no certificate found".to_owned()))?;
        let info = inspect(leaf).map_err(|e| refused(e.to_string()))?;
        let own = self.identity()?;
        if info.identity != own {
            return Err(refused(format!(
                "names {}, not {own}: a renewal keeps the party",
                info.identity
            )));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        verifier
            .verify_client_cert(leaf, pair.cert.get(1..).unwrap_or_default(), UnixTime::now())
            .map_err(|e| refused(format!("not valid under the network CA: {e}")))?;
        *self
            .presented
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(pair);
        Ok(Some(info.serial.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// Renews every `interval` until `stop` flips (the registry's poll interval): an
    /// operator replaces the files and every process presents the new certificate
    /// within one interval. A refused renewal is logged and counted once per cause.
    pub async fn watch_renewal(
        self,
        interval: Duration,
        metrics: crate::metrics::Metrics,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_refusal = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.renew() {
                Ok(None) => last_refusal = None,
                Ok(Some(serial)) => {
                    last_refusal = None;
                    tracing::info!(serial, "TLS certificate renewed; presented from the next handshake");
                }
                Err(e) => {
                    let cause = e.to_string();
                    if last_refusal.as_ref() != Some(&cause) {
                        tracing::error!(code = "TLS_RENEWAL_REFUSED", error = %e, "renewed TLS files refused; the current certificate stays");
                        metrics.count_refusal("TLS_RENEWAL_REFUSED");
                        last_refusal = Some(cause);
                    }
                }
            }
        }
    }
}

/// Decides whether an identity may connect.
type AdmitFn = dyn Fn(&PeerIdentity) -> bool + Send + Sync;
/// Decides whether a certificate serial is revoked.
type RevokedFn = dyn Fn(&[u8]) -> bool + Send + Sync;

/// Who may connect, decided from the certificate alone.
#[derive(Clone)]
pub struct PeerPolicy {
    admit: Arc<AdmitFn>,
    revoked: Arc<RevokedFn>,
}

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerPolicy")
    }
}

impl PeerPolicy {
    /// Admits identities for which `admit` holds, unless the serial is revoked.
    pub fn new(
        admit: impl Fn(&PeerIdentity) -> bool + Send + Sync + 'static,
        revoked: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
    ) -> PeerPolicy {
        PeerPolicy {
            admit: Arc::new(admit),
            revoked: Arc::new(revoked),
        }
    }

    /// Admits exactly one identity.
    pub fn only(expected: PeerIdentity, revoked: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> PeerPolicy {
        PeerPolicy::new(move |p| *p == expected, revoked)
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let cert = inspect(end_entity).map_err(|e| {
            tracing::info!(reason = %e, "peer certificate refused");
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        })?;
        if (self.revoked)(&cert.serial) {
            tracing::warn!(peer = %cert.identity, "revoked certificate refused");
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        if !(self.admit)(&cert.identity) {
            tracing::warn!(peer = %cert.identity, "certificate identity not admitted here");
            return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        Ok(())
    }
}

/// What we read from a peer certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The identity it names.
    pub identity: PeerIdentity,
    /// Its serial, big-endian.
    pub serial: Vec<u8>,
}

/// Reads identity and serial from a DER certificate (exactly one `urn:cii:` URI SAN).
pub fn inspect(der: &CertificateDer<'_>) -> Result<CertInfo, CertInspectError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|_| CertInspectError::NotX509)?;
    let san = cert.subject_alternative_name().map_err(|_| CertInspectError::NotX509)?;
    let mut identities = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("urn:cii:") => Some(*uri),
            _ => None,
        });
    let uri = identities.next().ok_or(CertInspectError::NoIdentity)?;
    if identities.next().is_some() {
        return Err(CertInspectError::SeveralIdentities);
    }
    let identity = PeerIdentity::parse_uri(uri).map_err(|_| CertInspectError::BadIdentity)?;
    Ok(CertInfo {
        identity,
        serial: cert.raw_serial().to_vec(),
    })
}

/// A certificate without a usable network identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertInspectError {
    /// Not a parsable X.509 certificate.
    #[error("not an X.509 certificate")]
    NotX509,
    /// No `urn:cii:` URI subject alternative name.
    #[error("certificate names no network identity (urn:cii:…)")]
    NoIdentity,
    /// More than one identity.
    #[error("certificate names more than one network identity")]
    SeveralIdentities,
    /// The identity URI is malformed.
    #[error("certificate identity is malformed")]
    BadIdentity,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies client certificates: chain, then revocation and admission.
#[derive(Debug)]
struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: PeerPolicy,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.policy.check(end_entity)?;
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies server certificates: chain and host name, then revocation and the expected identity.
#[derive(Debug)]
struct ServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    policy: PeerPolicy,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        self.policy.check(end_entity)?;
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether a server demands client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Mutual TLS: only peers admitted by the policy complete the handshake.
    Required(PeerPolicy),
    /// Server authentication only (the node's API for its own IT systems,
    /// where users authenticate by JWT).
    None,
}

/// A TLS 1.3 server configuration speaking HTTP/2.
pub fn server_config(id: &TlsIdentity, client_auth: ClientAuth) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder =
        rustls::ServerConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_auth {
        ClientAuth::Required(policy) => {
            let inner = WebPkiClientVerifier::builder_with_provider(id.roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(ClientVerifier { inner, policy }))
        }
        ClientAuth::None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(id.presented.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration presenting our certificate and admitting
/// only servers the policy admits.
pub fn client_config(id: &TlsIdentity, server: PeerPolicy) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let inner = WebPkiServerVerifier::builder_with_provider(id.roots.clone(), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier { inner, policy: server }))
        .with_client_cert_resolver(id.presented.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration for an institution's IT system calling its
/// node's API: it trusts the network CA in `ca`, presents no certificate (users
/// authenticate by JWT), and admits only servers the policy admits.
pub fn api_client_config(ca: &std::path::Path, server: PeerPolicy) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier { inner, policy: server }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections and completes TLS handshakes concurrently, yielding
/// established streams for `tonic`'s `serve_with_incoming*`. A failed
/// handshake is logged (reason only) and counted, and never reaches the server.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    on_failure: impl Fn(&str) + Send + Sync + 'static,
) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let on_failure = Arc::new(on_failure);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server is gone (shut down): stop accepting.
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, on_failure) = (acceptor.clone(), tx.clone(), on_failure.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "tls handshake refused");
                        on_failure(handshake_failure_kind(&e));
                    }
                    Err(_) => {
                        tracing::info!(%peer, "tls handshake timed out");
                        on_failure("timeout");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A metric label for a failed handshake (no peer data).
fn handshake_failure_kind(e: &io::Error) -> &'static str {
    let text = e.to_string();
    if text.contains("Revoked") {
        "revoked"
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        "unknown_ca"
    } else if text.contains("NotValidForName") || text.contains("ApplicationVerificationFailure") {
        "identity"
    } else if text.contains("no certificates") || text.contains("CertificateRequired") {
        "no_certificate"
    } else if text.contains("protocol version") || text.contains("incompatible") {
        // Among them a TLS 1.2 (or older) ClientHello: TLS 1.3 is required.
        "protocol"
    } else {
        "other"
    }
}

/// The deadline of every outbound call (node → gateway, gateway → consent registry and
/// nodes): below the servers' own 30 s, so a peer that hangs never holds a caller longer.
pub const CALL_DEADLINE: Duration = Duration::from_secs(25);

/// A lazily connecting gRPC channel to `url` (`https://host:port`) over our
/// own TLS client configuration, every call bounded by [`CALL_DEADLINE`].
pub fn channel(url: &str, config: Arc<rustls::ClientConfig>) -> Result<Channel, TlsError> {
    channel_with_deadline(url, config, CALL_DEADLINE)
}

/// [`channel`] with another deadline per call.
pub fn channel_with_deadline(
    url: &str,
    config: Arc<rustls::ClientConfig>,
    deadline: Duration,
) -> Result<Channel, TlsError> {
    channel_to_any(&[url.to_owned()], config, deadline)
}

/// How long a connection to one of several servers may take (TCP and TLS) before the next is
/// tried: a standby that accepts TCP but never answers TLS (it serves nothing) is passed over.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an outbound connection is pinged, and how long an answer may take before the
/// connection counts as dead.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One server a channel may connect to.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

fn target(url: &str) -> Result<Target, TlsError> {
    let uri: Uri = url.parse().map_err(|_| TlsError::Endpoint(url.to_owned()))?;
    if uri.scheme_str() != Some("https") {
        return Err(TlsError::Endpoint(url.to_owned()));
    }
    let host = uri
        .host()
        .ok_or_else(|| TlsError::Endpoint(url.to_owned()))?
        .trim_matches(['[', ']'])
        .to_owned();
    let server_name = ServerName::try_from(host.clone()).map_err(|_| TlsError::Endpoint(url.to_owned()))?;
    Ok(Target {
        host,
        port: uri.port_u16().unwrap_or(443),
        server_name,
    })
}

/// A lazily connecting gRPC channel to one of `urls` that answers: replicas of one service
/// (`https://host:port` each). The first connection tries them in turn from one picked at
/// random (so that many clients spread over the replicas), each reconnection from the one that
/// answered last; a connection lost (the replica stopped) is made again to the next that
/// answers, and the calls in flight on the lost one fail (`UNAVAILABLE`; the caller retries).
pub fn channel_to_any(
    urls: &[String],
    config: Arc<rustls::ClientConfig>,
    deadline: Duration,
) -> Result<Channel, TlsError> {
    let targets: Arc<Vec<Target>> = Arc::new(urls.iter().map(|url| target(url)).collect::<Result<_, _>>()?);
    let first = targets.first().ok_or_else(|| TlsError::Endpoint(String::new()))?;
    // tonic would try its own TLS on an https URI; we hand it http:// and do TLS in the connector.
    let authority = if first.host.contains(':') {
        format!("http://[{}]:{}", first.host, first.port)
    } else {
        format!("http://{}:{}", first.host, first.port)
    };
    let endpoint = Endpoint::from_shared(authority)
        .map_err(|_| TlsError::Endpoint(urls.join(", ")))?
        .connect_timeout(CONNECT_TIMEOUT * u32::try_from(targets.len()).unwrap_or(u32::MAX))
        .timeout(deadline)
        .tcp_nodelay(true)
        // A server that froze (a paused or cut-off replica) keeps its TCP connection open:
        // HTTP/2 pings find it out, and the next call connects to the next that answers.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let connector = TlsConnector::from(config);
    let mut pick = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut pick);
    let start = usize::try_from(u32::from_be_bytes(pick)).unwrap_or(0) % targets.len();
    let current = Arc::new(std::sync::atomic::AtomicUsize::new(start));
    let connect = tower::service_fn(move |_: Uri| {
        let (connector, targets, current) = (connector.clone(), targets.clone(), current.clone());
        async move {
            let start = current.load(std::sync::atomic::Ordering::Relaxed);
            let mut last = io::Error::new(io::ErrorKind::NotConnected, "no server to connect to");
            for k in 0..targets.len() {
                let i = (start + k) % targets.len();
                let Some(t) = targets.get(i) else { continue };
                let attempt = async {
                    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
                    tcp.set_nodelay(true)?;
                    connector.connect(t.server_name.clone(), tcp).await
                };
                match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                    Ok(Ok(tls)) => {
                        current.store(i, std::sync::atomic::Ordering::Relaxed);
                        return Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls));
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => {
                        last = io::Error::new(io::ErrorKind::TimedOut, format!("{}:{} did not answer", t.host, t.port))
                    }
                }
                if targets.len() > 1 {
                    tracing::info!(host = %t.host, port = t.port, error = %last, "trying the next replica");
                }
            }
            Err(last)
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connect))
}

impl TlsIdentity {
    /// This identity, trusting `other`'s CA instead of its own (tests of
    /// certificates from a foreign CA).
    pub fn with_roots_of(mut self, other: &TlsIdentity) -> TlsIdentity {
        self.roots = other.roots.clone();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_tls_key_readable_by_other_accounts_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::init(dir.path(), &[], &[], &["localhost".into()]).unwrap();
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("gateway/cert.pem"),
            key: dir.path().join("gateway/key.pem"),
        };
        TlsIdentity::load(&files).expect("0600 is fine");
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = TlsIdentity::load(&files).unwrap_err().to_string();
        assert!(
            err.contains("key.pem") && err.contains("readable by other accounts"),
            "{err}"
        );
    }

    /// The serials a server and a client present to each other on a new connection.
    async fn presented_serials(server: &TlsIdentity, client: &TlsIdentity) -> (Vec<u8>, Vec<u8>) {
        let recorder = || {
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let record = seen.clone();
            let policy = PeerPolicy::new(
                |_| true,
                move |serial| {
                    *record.lock().unwrap() = serial.to_vec();
                    false
                },
            );
            (seen, policy)
        };
        let (client_seen, client_policy) = recorder();
        let (server_seen, server_policy) = recorder();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = TlsAcceptor::from(server_config(server, ClientAuth::Required(client_policy)).unwrap());
        let accepting = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            acceptor.accept(socket).await.map(|_| ())
        });
        let connector = TlsConnector::from(client_config(client, server_policy).unwrap());
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("handshake");
        accepting.await.unwrap().expect("accepted");
        let (server_serial, client_serial) = (server_seen.lock().unwrap().clone(), client_seen.lock().unwrap().clone());
        (server_serial, client_serial)
    }

    /// Re-issued files are presented from the next handshake; files that name another
    /// party, or a key that does not match, are refused and the current pair stays.
    #[tokio::test]
    async fn a_renewed_certificate_is_presented_without_a_restart_and_a_foreign_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let orp = cii_types::InstitutionId::parse("id", "ORP-VS").unwrap();
        let hosts = ["localhost".to_owned()];
        crate::pki::init(dir.path(), std::slice::from_ref(&orp), &[], &hosts).unwrap();
        let files = crate::pki::party_files(dir.path(), &PeerIdentity::Gateway);
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: files.cert,
            key: files.key,
        };
        let gateway = TlsIdentity::load(&files).unwrap();
        let client = TlsIdentity::load(&TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: crate::pki::party_files(dir.path(), &PeerIdentity::Institution(orp.clone())).cert,
            key: crate::pki::party_files(dir.path(), &PeerIdentity::Institution(orp.clone())).key,
        })
        .unwrap();
        let before = presented_serials(&gateway, &client).await.0;
        assert_eq!(gateway.renew().unwrap(), None, "unchanged files renew nothing");

        // Re-issued by the network CA: presented by the configs built before.
        std::fs::remove_file(&files.cert).unwrap();
        std::fs::remove_file(&files.key).unwrap();
        crate::pki::init(dir.path(), std::slice::from_ref(&orp), &[], &hosts).unwrap();
        let serial = gateway.renew().unwrap().expect("renewed");
        let after = presented_serials(&gateway, &client).await.0;
        assert_ne!(after, before);
        assert_eq!(crate::registry::serial_hex(&after), serial);
        // And as a client, to the servers it calls.
        assert_eq!(presented_serials(&client, &gateway).await.1, after);

        // Another party's certificate and key: refused, the renewed pair stays.
        let other = crate::pki::party_files(dir.path(), &PeerIdentity::Institution(orp));
        std::fs::copy(&other.cert, &files.cert).unwrap();
        std::fs::copy(&other.key, &files.key).unwrap();
        let err = gateway.renew().unwrap_err().to_string();
        assert!(err.contains("a renewal keeps the party"), "{err}");
        // A key that does not match the certificate.
        std::fs::remove_file(&files.cert).unwrap();
        std::fs::remove_file(&files.key).unwrap();
        crate::pki::init(dir.path(), &[], &[], &hosts).unwrap();
        std::fs::copy(&other.key, &files.key).unwrap();
        let err = gateway.renew().unwrap_err().to_string();
        assert!(err.contains("does not match the certificate"), "{err}");
        assert_eq!(presented_serials(&gateway, &client).await.0, after);
    }

    /// A peer that accepts the connection and then says nothing does not hold the caller.
    #[tokio::test]
    async fn an_outbound_call_to_a_silent_peer_ends_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::init(dir.path(), &[], &[], &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("gateway/cert.pem"),
            key: dir.path().join("gateway/key.pem"),
        };
        let identity = TlsIdentity::load(&files).unwrap();
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://127.0.0.1:{}", silent.local_addr().unwrap().port());
        // It completes TLS, then never answers a request.
        let acceptor = TlsAcceptor::from(server_config(&identity, ClientAuth::None).unwrap());
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                if let Ok(tls) = acceptor.accept(socket).await {
                    open.push(tls);
                }
            }
        });
        let config = client_config(&identity, PeerPolicy::only(PeerIdentity::Gateway, |_| false)).unwrap();
        let channel = channel_with_deadline(&url, config, Duration::from_millis(300)).unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let started = std::time::Instant::now();
        let answer = health.check(tonic_health::pb::HealthCheckRequest::default()).await;
        let err = answer.expect_err("no answer");
        assert_eq!(err.code(), tonic::Code::Cancelled, "{err:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
}
