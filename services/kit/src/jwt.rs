//! The acting user: EdDSA JWTs issued by each institution for its users.
//!
//! Claims: `iss` = institution id, `sub` = user, `exp`, `roles` ⊆ {caseworker,
//! dpo, network_dpo, jurist, operator}, with 60 s leeway. A token is verified
//! against the keys the registry lists for its issuer, and the issuer must be
//! the institution the caller's certificate names.

use std::collections::BTreeSet;

use cii_types::{InstitutionId, Role};
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::registry::Institution;

/// Clock difference tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 60;

/// The metadata key carrying the token (`Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// An authenticated acting user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The institution that issued the token.
    pub institution: InstitutionId,
    /// The user id (`sub`), an institution-internal account name.
    pub subject: String,
    /// The roles the token grants.
    pub roles: BTreeSet<Role>,
}

impl User {
    /// Whether the user holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Why a token was refused. Each variant has a stable [`JwtError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// No `authorization` metadata.
    #[error("missing bearer token in `authorization` metadata")]
    Missing,
    /// Not `Bearer <jwt>`, or not a decodable JWT.
    #[error("malformed bearer token")]
    Malformed,
    /// Not signed with EdDSA.
    #[error("token must be signed with EdDSA")]
    WrongAlgorithm,
    /// The issuer is not the institution of the caller's certificate.
    #[error("token issuer is not the calling institution")]
    IssuerMismatch,
    /// No registered key of the issuer verifies the signature.
    #[error("token signature does not verify with the issuer's registered keys")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway): the clocks disagree.
    #[error("token not yet valid: check the clocks of the issuing system")]
    NotYetValid,
    /// A claim is missing or invalid.
    #[error("token claim `{0}` is missing or invalid")]
    Claim(&'static str),
}

impl JwtError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Missing => "JWT_MISSING",
            JwtError::Malformed => "JWT_MALFORMED",
            JwtError::WrongAlgorithm => "JWT_ALGORITHM",
            JwtError::IssuerMismatch => "JWT_ISSUER_MISMATCH",
            JwtError::BadSignature => "JWT_BAD_SIGNATURE",
            JwtError::Expired => "JWT_EXPIRED",
            JwtError::NotYetValid => "JWT_NOT_YET_VALID",
            JwtError::Claim(_) => "JWT_CLAIM_INVALID",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(default)]
    roles: Vec<String>,
}

/// Extracts the token from an `authorization` value.
pub fn bearer(value: Option<&str>) -> Result<&str, JwtError> {
    let value = value.ok_or(JwtError::Missing)?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(JwtError::Malformed)
}

/// Verifies `token` as issued by `issuer` (the institution the certificate names) at time `now`.
pub fn verify(token: &str, issuer: &Institution, now: OffsetDateTime) -> Result<User, JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(JwtError::WrongAlgorithm);
    }
    // The issuer is compared before any signature check, so that a genuine
    // token of another institution is reported as what it is. Nothing else is
    // read from the unverified claims.
    #[derive(Deserialize)]
    struct IssuerOnly {
        iss: Option<String>,
    }
    let claimed: IssuerOnly =
        jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| JwtError::Malformed)?;
    if claimed.iss.as_deref() != Some(issuer.id.as_str()) {
        return Err(JwtError::IssuerMismatch);
    }
    // Time is checked below against the injected clock, not jsonwebtoken's.
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let keys = issuer
        .jwt_keys
        .iter()
        .filter(|k| header.kid.as_deref().is_none_or(|kid| kid == k.kid));
    let mut claims = None;
    let mut signature_error = JwtError::BadSignature;
    for key in keys {
        match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => {
                if let jsonwebtoken::errors::ErrorKind::Json(_) = e.kind() {
                    signature_error = JwtError::Claim("claims");
                }
            }
        }
    }
    let claims = claims.ok_or(signature_error)?;
    if claims.iss != issuer.id.as_str() {
        return Err(JwtError::IssuerMismatch);
    }
    let now = now.unix_timestamp();
    if claims.exp + LEEWAY_SECS < now {
        return Err(JwtError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_SECS > now) || claims.iat.is_some_and(|iat| iat - LEEWAY_SECS > now) {
        return Err(JwtError::NotYetValid);
    }
    if claims.sub.is_empty() || claims.sub.len() > 128 || claims.sub.chars().any(char::is_control) {
        return Err(JwtError::Claim("sub"));
    }
    let mut roles = BTreeSet::new();
    for r in &claims.roles {
        roles.insert(Role::parse("roles", r).map_err(|_| JwtError::Claim("roles"))?);
    }
    if roles.is_empty() {
        return Err(JwtError::Claim("roles"));
    }
    Ok(User {
        institution: issuer.id.clone(),
        subject: claims.sub,
        roles,
    })
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    /// Issuing institution.
    pub issuer: &'a InstitutionId,
    /// User id.
    pub subject: &'a str,
    /// Roles.
    pub roles: &'a [Role],
    /// Key id of the signing key.
    pub kid: &'a str,
    /// Issued at.
    pub issued_at: OffsetDateTime,
    /// Lifetime.
    pub ttl: time::Duration,
}

/// Signs a token with an Ed25519 private key in PKCS#8 PEM (an institution's
/// identity provider does this in production; `cii pki token` for development).
pub fn mint(private_key_pem: &[u8], spec: &TokenSpec<'_>) -> Result<String, JwtError> {
    let key = EncodingKey::from_ed_pem(private_key_pem).map_err(|_| JwtError::Malformed)?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(spec.kid.to_owned());
    let iat = spec.issued_at.unix_timestamp();
    let claims = Claims {
        iss: spec.issuer.to_string(),
        sub: spec.subject.to_owned(),
        exp: iat + spec.ttl.whole_seconds(),
        nbf: None,
        iat: Some(iat),
        roles: spec.roles.iter().map(|r| r.as_str().to_owned()).collect(),
    };
    jsonwebtoken::encode(&header, &claims, &key).map_err(|_| JwtError::Malformed)
}
