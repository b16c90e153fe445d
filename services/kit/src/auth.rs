//! Authentication of every call, before any handler runs: the institution
//! from the client certificate (or, at a node's own API, the node's own
//! institution), then the acting user's JWT issued by that institution.
//!
//! Handlers read the result with [`caller`]; they never look at certificates
//! or tokens themselves.

use std::sync::Arc;

use cii_types::access::{Access, Row};
use cii_types::{InstitutionId, PeerIdentity};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::clock::Clock;
use crate::jwt::{self, JwtError, User};
use crate::registry::{Institution, Live};
use crate::tls::inspect;

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
    PeerCertificate,
    /// A fixed institution (a node's API for its own IT systems, no client certificate).
    Fixed(InstitutionId),
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
    /// The certificate was revoked after the connection was opened.
    #[error("client certificate is revoked")]
    ClientCertRevoked,
    /// The certificate's institution is not in the registry.
    #[error("institution is not in the registry")]
    InstitutionUnknown,
    /// The peer is not an institution.
    #[error("only institution nodes may call this api")]
    PeerNotInstitution,
    /// The peer may not call this service.
    #[error("this peer may not call this service")]
    PeerNotAdmitted,
    /// The acting user's token was refused.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// The acting user holds none of the roles the rpc needs.
    #[error("this rpc needs one of the roles: {0}")]
    RoleRequired(String),
    /// The institution calls this rpc family faster than its limit.
    #[error("the {family} rate limit of the institution is reached; retry in {wait_ms} ms")]
    RateLimited {
        /// The family (`transfers`, …).
        family: &'static str,
        /// How long until a call is free.
        wait_ms: u128,
    },
    /// The rpc has no row in the access table: nobody may call it.
    #[error("this rpc is not open to anybody")]
    RpcNotListed,
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
            AuthError::ClientCertRevoked => "CLIENT_CERT_REVOKED",
            AuthError::InstitutionUnknown => "INSTITUTION_UNKNOWN",
            AuthError::PeerNotInstitution => "PEER_NOT_INSTITUTION",
            AuthError::PeerNotAdmitted => "PEER_NOT_ADMITTED",
            AuthError::Jwt(e) => e.code(),
            AuthError::RoleRequired(_) => "ROLE_REQUIRED",
            AuthError::RateLimited { .. } => "RATE_LIMITED",
            AuthError::RpcNotListed => "RPC_NOT_LISTED",
            AuthError::NotAuthenticated => "INTERNAL",
        }
    }

    /// The field at fault: the token, for a token refused.
    pub fn field(&self) -> Option<&'static str> {
        matches!(self, AuthError::Jwt(_) | AuthError::RoleRequired(_)).then_some("authorization")
    }
}

/// Whether `code` is one an authentication refusal carries (counted apart, as
/// `auth_refusals`, by the server layer).
pub fn is_authentication_code(code: &str) -> bool {
    code.starts_with("JWT_") || code.starts_with("CLIENT_CERT_") || code == "ROLE_NOT_GRANTED"
}

/// A token that names a role its institution was not granted: the institution's
/// own identity provider signed it, so it is evidence of a member overstepping
/// (the gateway logs it).
#[derive(Debug, Clone)]
pub struct RoleNotGranted {
    /// The institution whose key signed the token.
    pub institution: InstitutionId,
    /// The rpc it was presented to.
    pub rpc: &'static str,
}

/// Whom the server admits to `Peer` rpcs (besides "not revoked").
pub type AdmitPeer = Arc<dyn Fn(&PeerIdentity) -> bool + Send + Sync>;

/// A tonic interceptor that checks, on every call and before the request is
/// decoded: the rpc's row in the access table, the peer certificate against the
/// registry active now (so a revocation reaches open connections), the acting
/// user's token and roles; it stores a [`Caller`] in the request's extensions.
#[derive(Clone)]
pub struct Authenticate {
    issuer: IssuerSource,
    registry: Live,
    max_lifetime_secs: i64,
    clock: Arc<dyn Clock>,
    admit: AdmitPeer,
    overstepped: Option<tokio::sync::mpsc::Sender<RoleNotGranted>>,
    limits: Option<Arc<crate::rate_limit::Limits>>,
    /// Tokens verified under the active registry version (shared by the clones tonic makes).
    verified: Arc<jwt::Verified>,
}

impl std::fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticate")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Authenticate {
    /// Creates the interceptor. (Its refusals are counted by the server layer, by code.)
    pub fn new(issuer: IssuerSource, registry: Live, clock: Arc<dyn Clock>) -> Authenticate {
        Authenticate {
            issuer,
            registry,
            max_lifetime_secs: jwt::DEFAULT_MAX_LIFETIME_SECS,
            clock,
            admit: Arc::new(|_| true),
            overstepped: None,
            limits: None,
            verified: Arc::new(jwt::Verified::default()),
        }
    }

    /// Per-institution limits on the rpc families, taken after the role check.
    pub fn limits(mut self, limits: Arc<crate::rate_limit::Limits>) -> Authenticate {
        self.limits = Some(limits);
        self
    }

    /// The longest token lifetime accepted (`exp - iat`).
    pub fn max_lifetime(mut self, seconds: i64) -> Authenticate {
        self.max_lifetime_secs = seconds;
        self
    }

    /// Which certificate identities may call this server's `Peer` rpcs.
    pub fn admit(mut self, admit: AdmitPeer) -> Authenticate {
        self.admit = admit;
        self
    }

    /// Where tokens with roles not granted are reported (the gateway logs them).
    /// Reports beyond the channel's capacity are dropped: they are counted anyway.
    pub fn report_overstepping(mut self, to: tokio::sync::mpsc::Sender<RoleNotGranted>) -> Authenticate {
        self.overstepped = Some(to);
        self
    }

    /// The peer's certificate, checked against the active registry.
    fn peer<T>(&self, req: &Request<T>, registry: &crate::registry::Registry) -> Result<PeerIdentity, AuthError> {
        let certs = req.peer_certs().ok_or(AuthError::ClientCertMissing)?;
        let leaf = certs.first().ok_or(AuthError::ClientCertMissing)?;
        let info = inspect(leaf).map_err(|_| AuthError::ClientCertInvalid)?;
        if registry.is_revoked(&info.serial) {
            return Err(AuthError::ClientCertRevoked);
        }
        if !registry.knows(&info.identity) {
            return Err(AuthError::InstitutionUnknown);
        }
        Ok(info.identity)
    }

    /// Authenticates and authorizes the call `req` is for.
    pub fn check<T>(&self, req: &Request<T>) -> Result<Option<Caller>, AuthError> {
        // The row the server layer put on the request from the matched path (`grpc::server`).
        let rpc = *req.extensions().get::<Row>().ok_or(AuthError::RpcNotListed)?;
        let registry = self.registry.current();
        let institution = match &self.issuer {
            IssuerSource::PeerCertificate => match self.peer(req, &registry)? {
                PeerIdentity::Institution(id) => Some(id),
                other if rpc.access == Access::Peer || rpc.access == Access::Public => {
                    return if (self.admit)(&other) {
                        Ok(None)
                    } else {
                        Err(AuthError::PeerNotAdmitted)
                    };
                }
                _ => return Err(AuthError::PeerNotInstitution),
            },
            IssuerSource::Fixed(id) => Some(id.clone()),
        };
        let Access::Users(needed) = rpc.access else {
            if let Some(id) = &institution
                && !(self.admit)(&PeerIdentity::Institution(id.clone()))
            {
                return Err(AuthError::PeerNotAdmitted);
            }
            return Ok(None);
        };
        let institution = institution
            .and_then(|id| registry.caller(&id).cloned())
            .ok_or(AuthError::InstitutionUnknown)?;
        let header = req.metadata().get(jwt::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
        let token = jwt::bearer(header)?;
        let rules = jwt::Rules {
            audience: registry.network().to_owned(),
            max_lifetime_secs: self.max_lifetime_secs,
        };
        let user = match self
            .verified
            .verify(token, &institution, &rules, self.clock.now(), registry.version())
        {
            Ok(user) => user,
            Err(JwtError::RoleNotGranted) => {
                tracing::warn!(institution = %institution.id, rpc = rpc.path, "token claims a role not granted to its institution");
                if let Some(to) = &self.overstepped {
                    let _ = to.try_send(RoleNotGranted {
                        institution: institution.id.clone(),
                        rpc: rpc.path,
                    });
                }
                return Err(JwtError::RoleNotGranted.into());
            }
            Err(e) => {
                tracing::info!(code = e.code(), "call refused");
                return Err(e.into());
            }
        };
        if !rpc.access.admits(&user.roles) {
            let names: Vec<&str> = needed.iter().map(|r| r.as_str()).collect();
            return Err(AuthError::RoleRequired(names.join(", ")));
        }
        if let (Some(limits), Some(family)) = (&self.limits, rpc.family)
            && let Err(wait) = limits.take(family, &institution.id, std::time::Instant::now())
        {
            tracing::warn!(institution = %institution.id, family = family.as_str(), "rate limit reached");
            return Err(AuthError::RateLimited {
                family: family.as_str(),
                wait_ms: wait.as_millis().max(1),
            });
        }
        Ok(Some(Caller { institution, user }))
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(caller) = self.check(&req).map_err(Status::from)? {
            req.extensions_mut().insert(caller);
        }
        Ok(req)
    }
}

impl Caller {
    /// The acting user as the audit log names them: `sub@institution` (the
    /// subject's syntax has no `@`, so this cannot be spoofed).
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
