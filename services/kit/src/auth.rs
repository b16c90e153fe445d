//! Authentication of every call, before any handler runs: the institution
//! from the client certificate (or, at a node's own API, the node's own
//! institution), then the acting user's JWT issued by that institution.
//!
//! Handlers read the result with [`caller`]; they never look at certificates
//! or tokens themselves.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Code, Request, Status};

use crate::clock::Clock;
use crate::grpc::error;
use crate::jwt::{self, JwtError, User};
use crate::metrics::{CodeLabels, Metrics};
use crate::registry::{Institution, Registry};
use crate::tls::inspect;
use cii_types::PeerIdentity;

/// The authenticated caller of an rpc.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The calling institution (from its certificate, never from the request).
    pub institution: Institution,
    /// The acting user (from the JWT the institution issued).
    pub user: User,
}

/// Where the institution that must have issued the JWT comes from.
#[derive(Debug, Clone)]
pub enum IssuerSource {
    /// The institution named in the client certificate (the gateway).
    PeerCertificate(Arc<Registry>),
    /// A fixed institution (a node's API for its own IT systems).
    Fixed(Box<Institution>),
}

/// A tonic interceptor that authenticates callers and stores a [`Caller`] in
/// the request's extensions.
#[derive(Debug, Clone)]
pub struct Authenticate {
    issuer: IssuerSource,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

impl Authenticate {
    /// Creates the interceptor.
    pub fn new(issuer: IssuerSource, clock: Arc<dyn Clock>, metrics: Metrics) -> Authenticate {
        Authenticate { issuer, clock, metrics }
    }

    fn institution<T>(&self, req: &Request<T>) -> Result<Institution, Status> {
        match &self.issuer {
            IssuerSource::Fixed(institution) => Ok((**institution).clone()),
            IssuerSource::PeerCertificate(registry) => {
                // The TLS layer already admitted only registry members; this
                // re-reads the identity for the handler.
                let certs = req.peer_certs().ok_or_else(|| {
                    error(
                        Code::Unauthenticated,
                        "CLIENT_CERT_MISSING",
                        "client certificate required",
                        None,
                    )
                })?;
                let leaf = certs.first().ok_or_else(|| {
                    error(
                        Code::Unauthenticated,
                        "CLIENT_CERT_MISSING",
                        "client certificate required",
                        None,
                    )
                })?;
                let info = inspect(leaf).map_err(|_| {
                    error(
                        Code::Unauthenticated,
                        "CLIENT_CERT_INVALID",
                        "client certificate has no identity",
                        None,
                    )
                })?;
                match info.identity {
                    PeerIdentity::Institution(id) => registry.get(&id).cloned().ok_or_else(|| {
                        error(
                            Code::PermissionDenied,
                            "INSTITUTION_UNKNOWN",
                            "institution is not in the registry",
                            None,
                        )
                    }),
                    _ => Err(error(
                        Code::PermissionDenied,
                        "PEER_NOT_INSTITUTION",
                        "only institution nodes may call this api",
                        None,
                    )),
                }
            }
        }
    }

    fn refuse(&self, e: JwtError) -> Status {
        self.metrics
            .auth_refusals
            .get_or_create(&CodeLabels {
                code: e.code().to_owned(),
            })
            .inc();
        tracing::info!(code = e.code(), "call refused");
        let code = match e {
            JwtError::IssuerMismatch => Code::PermissionDenied,
            _ => Code::Unauthenticated,
        };
        error(code, e.code(), e.to_string(), Some("authorization"))
    }
}

impl Authenticate {
    /// Authenticates the caller of `req` (certificate, then JWT), for services
    /// that check users in some rpcs only.
    pub fn verify<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let institution = self.institution(req)?;
        let header = req.metadata().get(jwt::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
        let token = jwt::bearer(header).map_err(|e| self.refuse(e))?;
        let user = jwt::verify(token, &institution, self.clock.now()).map_err(|e| self.refuse(e))?;
        Ok(Caller { institution, user })
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.verify(&req)?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

impl Caller {
    /// The acting user as the audit log names them: `sub@institution`.
    pub fn acting_user(&self) -> String {
        format!("{}@{}", self.user.subject, self.institution.id)
    }
}

/// The authenticated caller of `req` (set by [`Authenticate`]).
pub fn caller<T>(req: &Request<T>) -> Result<&Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .ok_or_else(|| error(Code::Internal, "INTERNAL", "caller not authenticated", None))
}
