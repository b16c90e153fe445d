//! Authentication of every call, before any handler runs: the institution
//! from the client certificate (or, at a node's own API, the node's own
//! institution), then the acting user's JWT issued by that institution.
//!
//! Handlers read the result with [`caller`]; they never look at certificates
//! or tokens themselves.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::clock::Clock;
use crate::jwt::{self, JwtError, User};
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

/// Why a call was not authenticated. Each variant carries its stable code;
/// `crate::status` turns it into a gRPC status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The connection carries no client certificate.
    #[error("client certificate required")]
    ClientCertMissing,
    /// The certificate names no CII identity.
    #[error("client certificate has no identity")]
    ClientCertInvalid,
    /// The certificate's institution is not in the registry.
    #[error("institution is not in the registry")]
    InstitutionUnknown,
    /// The peer is not an institution.
    #[error("only institution nodes may call this api")]
    PeerNotInstitution,
    /// The acting user's token was refused.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// A handler ran without the interceptor (a wiring bug).
    #[error("caller not authenticated")]
    NotAuthenticated,
}

impl AuthError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::ClientCertMissing => "CLIENT_CERT_MISSING",
            AuthError::ClientCertInvalid => "CLIENT_CERT_INVALID",
            AuthError::InstitutionUnknown => "INSTITUTION_UNKNOWN",
            AuthError::PeerNotInstitution => "PEER_NOT_INSTITUTION",
            AuthError::Jwt(e) => e.code(),
            AuthError::NotAuthenticated => "INTERNAL",
        }
    }

    /// The field at fault: the token, for a token refused.
    pub fn field(&self) -> Option<&'static str> {
        matches!(self, AuthError::Jwt(_)).then_some("authorization")
    }
}

/// Whether `code` is one an authentication refusal carries (counted apart, as
/// `auth_refusals`, by the server layer).
pub fn is_authentication_code(code: &str) -> bool {
    code.starts_with("JWT_")
}

/// A tonic interceptor that authenticates callers and stores a [`Caller`] in
/// the request's extensions.
#[derive(Debug, Clone)]
pub struct Authenticate {
    issuer: IssuerSource,
    clock: Arc<dyn Clock>,
}

impl Authenticate {
    /// Creates the interceptor. (Its refusals are counted by the server layer, by code.)
    pub fn new(issuer: IssuerSource, clock: Arc<dyn Clock>) -> Authenticate {
        Authenticate { issuer, clock }
    }

    fn institution<T>(&self, req: &Request<T>) -> Result<Institution, AuthError> {
        match &self.issuer {
            IssuerSource::Fixed(institution) => Ok((**institution).clone()),
            IssuerSource::PeerCertificate(registry) => {
                // The TLS layer already admitted only registry members; this
                // re-reads the identity for the handler.
                let certs = req.peer_certs().ok_or(AuthError::ClientCertMissing)?;
                let leaf = certs.first().ok_or(AuthError::ClientCertMissing)?;
                let info = inspect(leaf).map_err(|_| AuthError::ClientCertInvalid)?;
                match info.identity {
                    PeerIdentity::Institution(id) => registry.get(&id).cloned().ok_or(AuthError::InstitutionUnknown),
                    _ => Err(AuthError::PeerNotInstitution),
                }
            }
        }
    }
}

impl Authenticate {
    /// Authenticates the caller of `req` (certificate, then JWT), for services
    /// that check users in some rpcs only.
    pub fn verify<T>(&self, req: &Request<T>) -> Result<Caller, AuthError> {
        let institution = self.institution(req)?;
        let header = req.metadata().get(jwt::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
        let token = jwt::bearer(header)?;
        let user = jwt::verify(token, &institution, self.clock.now()).inspect_err(|e| {
            tracing::info!(code = e.code(), "call refused");
        })?;
        Ok(Caller { institution, user })
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.verify(&req).map_err(Status::from)?;
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
        .ok_or_else(|| AuthError::NotAuthenticated.into())
}
