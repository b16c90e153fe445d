//! The acting user: JWTs issued by each institution's identity provider for its users.
//!
//! Claims: `iss` = institution id, `aud` = the network's id, `sub` = user (letters,
//! digits and `._-~+=`, so it cannot pose as `user@institution`), `iat` and `exp`
//! no further apart than the maximum lifetime, `roles` ⊆ the roles the registry
//! grants the issuer; 60 s leeway on time. A token is verified against the keys
//! the registry lists for its issuer, each with its one algorithm (EdDSA, ES256,
//! RS256: what Entra ID, ADFS and Keycloak sign with), and the issuer must be the
//! institution the caller's certificate names.

use std::collections::BTreeSet;

use cii_types::{InstitutionId, Role};
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::registry::Institution;

/// Clock difference tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 60;

/// The longest token lifetime (`exp - iat`) accepted unless configured otherwise.
pub const DEFAULT_MAX_LIFETIME_SECS: i64 = 3600;

/// The longest `sub` accepted.
pub const SUBJECT_MAX: usize = 128;

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
    /// Not signed with the algorithm of one of the issuer's registered keys.
    #[error("token algorithm is not the one of the issuer's registered key")]
    WrongAlgorithm,
    /// `aud` does not name this network.
    #[error("token audience is not this network")]
    Audience,
    /// `exp - iat` exceeds the maximum lifetime, or `iat` is missing.
    #[error("token lifetime exceeds the maximum of {0} s (or `iat` is missing)")]
    Lifetime(i64),
    /// A role the registry does not grant the issuer.
    #[error("token claims a role the registry does not grant its institution")]
    RoleNotGranted,
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
            JwtError::Audience => "JWT_AUDIENCE",
            JwtError::Lifetime(_) => "JWT_LIFETIME",
            JwtError::RoleNotGranted => "ROLE_NOT_GRANTED",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    sub: String,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(default)]
    roles: Vec<String>,
}

/// `aud`: one value or several (RFC 7519 §4.1.3).
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn names(&self, network: &str) -> bool {
        match self {
            Audience::One(a) => a == network,
            Audience::Many(all) => all.iter().any(|a| a == network),
        }
    }
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The network's id, which `aud` must name.
    pub audience: String,
    /// The longest `exp - iat` accepted, in seconds.
    pub max_lifetime_secs: i64,
}

/// Whether `sub` is a safe account name: it is shown as `sub@institution`, so it
/// must not carry `@`, spaces, slashes or control characters.
pub fn subject_is_safe(sub: &str) -> bool {
    !sub.is_empty()
        && sub.len() <= SUBJECT_MAX
        && sub.chars().all(|c| c.is_ascii_alphanumeric() || "._-~+=".contains(c))
        // It is logged with every act: an AVS number as account name would reach the log.
        && !cii_types::avs::contains_avs(sub)
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
pub fn verify(token: &str, issuer: &Institution, rules: &Rules, now: OffsetDateTime) -> Result<User, JwtError> {
    verify_until(token, issuer, rules, now).map(|(user, _)| user)
}

/// [`verify`], with the token's `exp`.
fn verify_until(
    token: &str,
    issuer: &Institution,
    rules: &Rules,
    now: OffsetDateTime,
) -> Result<(User, i64), JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
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
    // Each key verifies with its one registered algorithm: the header's `alg`
    // selects among the keys, never the other way round (no RS/HS confusion).
    let keys: Vec<_> = issuer
        .jwt_keys
        .iter()
        .filter(|k| header.kid.as_deref().is_none_or(|kid| kid == k.kid))
        .filter(|k| k.algorithm == header.alg)
        .collect();
    if keys.is_empty() {
        return Err(if issuer.jwt_keys.iter().any(|k| k.algorithm == header.alg) {
            JwtError::BadSignature
        } else {
            JwtError::WrongAlgorithm
        });
    }
    let mut claims = None;
    let mut signature_error = JwtError::BadSignature;
    for key in keys {
        // Time and audience are checked below against the injected clock and the registry.
        let mut validation = Validation::new(key.algorithm);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
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
    if !claims.aud.as_ref().is_some_and(|a| a.names(&rules.audience)) {
        return Err(JwtError::Audience);
    }
    let now = now.unix_timestamp();
    if claims.exp + LEEWAY_SECS < now {
        return Err(JwtError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_SECS > now) || claims.iat.is_some_and(|iat| iat - LEEWAY_SECS > now) {
        return Err(JwtError::NotYetValid);
    }
    // A token lives at most the maximum lifetime from its issue, and cannot
    // claim an earlier issue to look short-lived while expiring far ahead.
    let lifetime_ok = claims.iat.is_some_and(|iat| {
        claims.exp - iat <= rules.max_lifetime_secs && claims.exp - now <= rules.max_lifetime_secs + LEEWAY_SECS
    });
    if !lifetime_ok {
        return Err(JwtError::Lifetime(rules.max_lifetime_secs));
    }
    if !subject_is_safe(&claims.sub) {
        return Err(JwtError::Claim("sub"));
    }
    let mut roles = BTreeSet::new();
    for r in &claims.roles {
        roles.insert(Role::parse("roles", r).map_err(|_| JwtError::Claim("roles"))?);
    }
    if roles.is_empty() {
        return Err(JwtError::Claim("roles"));
    }
    if !roles.is_subset(&issuer.roles) {
        return Err(JwtError::RoleNotGranted);
    }
    Ok((
        User {
            institution: issuer.id.clone(),
            subject: claims.sub,
            roles,
        },
        claims.exp,
    ))
}

/// The most tokens [`Verified`] remembers; beyond, it starts again empty.
pub const CACHE_MAX: usize = 10_000;

/// Tokens already verified, by (the institution that must have issued them, SHA-256 of the
/// token): a user's next call with the same token skips the signature (a node's IT sends
/// many calls with one token). `exp` is still checked on every use; everything is
/// forgotten when another registry version is active (keys, roles or the network may have
/// changed) and when the cache is full. Only successes are kept.
#[derive(Debug, Default)]
pub struct Verified {
    cache: std::sync::Mutex<VerifiedCache>,
}

#[derive(Debug, Default)]
struct VerifiedCache {
    registry_version: u64,
    tokens: std::collections::HashMap<(InstitutionId, [u8; 32]), (User, i64)>,
    hits: u64,
}

impl Verified {
    /// [`verify`], or the same answer remembered for this token under this registry version.
    pub fn verify(
        &self,
        token: &str,
        issuer: &Institution,
        rules: &Rules,
        now: OffsetDateTime,
        registry_version: u64,
    ) -> Result<User, JwtError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        let key = (issuer.id.clone(), hash);
        {
            let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.registry_version != registry_version {
                cache.tokens.clear();
                cache.registry_version = registry_version;
            }
            if let Some((user, exp)) = cache.tokens.get(&key).cloned() {
                if exp + LEEWAY_SECS < now.unix_timestamp() {
                    cache.tokens.remove(&key);
                    return Err(JwtError::Expired);
                }
                cache.hits += 1;
                return Ok(user);
            }
        }
        let (user, exp) = verify_until(token, issuer, rules, now)?;
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.registry_version == registry_version {
            if cache.tokens.len() >= CACHE_MAX {
                cache.tokens.clear();
            }
            cache.tokens.insert(key, (user.clone(), exp));
        }
        Ok(user)
    }

    /// How many calls were answered from the cache.
    pub fn hits(&self) -> u64 {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hits
    }
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    /// Issuing institution.
    pub issuer: &'a InstitutionId,
    /// The network's id (`aud`).
    pub audience: &'a str,
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
        aud: Some(Audience::One(spec.audience.to_owned())),
        sub: spec.subject.to_owned(),
        exp: iat + spec.ttl.whole_seconds(),
        nbf: None,
        iat: Some(iat),
        roles: spec.roles.iter().map(|r| r.as_str().to_owned()).collect(),
    };
    jsonwebtoken::encode(&header, &claims, &key).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn institution(roles: &[Role]) -> (Institution, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let id = InstitutionId::parse("id", "ORP-VS").unwrap();
        let institution = Institution {
            id,
            kind: cii_types::InstitutionType::AcOrp,
            canton: "VS".into(),
            name: "ORP".into(),
            endpoint: "https://localhost:1".into(),
            jwt_keys: vec![crate::registry::JwtKey {
                kid: "k1".into(),
                algorithm: Algorithm::EdDSA,
                key: jsonwebtoken::DecodingKey::from_ed_pem(key.public_key_pem().as_bytes()).unwrap(),
            }],
            roles: roles.iter().copied().collect(),
        };
        (institution, key.serialize_pem().into_bytes())
    }

    /// The same token again is answered from the cache, but never past its `exp`, never
    /// under another registry version (where its role may be gone), never for another
    /// institution's certificate.
    #[test]
    fn a_verified_token_is_remembered_until_it_expires_or_the_registry_changes() {
        let (orp, pem) = institution(&[Role::Caseworker]);
        let now = OffsetDateTime::now_utc();
        let token = mint(
            &pem,
            &TokenSpec {
                issuer: &orp.id,
                audience: "cii.test",
                subject: "anna",
                roles: &[Role::Caseworker],
                kid: "k1",
                issued_at: now,
                ttl: time::Duration::minutes(10),
            },
        )
        .unwrap();
        let rules = Rules {
            audience: "cii.test".into(),
            max_lifetime_secs: 3600,
        };
        let cache = Verified::default();
        assert_eq!(cache.verify(&token, &orp, &rules, now, 1).unwrap().subject, "anna");
        assert_eq!(cache.hits(), 0);
        cache.verify(&token, &orp, &rules, now, 1).unwrap();
        assert_eq!(cache.hits(), 1, "the second call skips the signature");
        // Past exp (and the leeway): refused although remembered.
        let later = now + time::Duration::minutes(12);
        assert_eq!(cache.verify(&token, &orp, &rules, later, 1), Err(JwtError::Expired));
        // A new registry version that no longer grants the role: verified again, refused.
        let (mut demoted, _) = institution(&[Role::Jurist]);
        demoted.jwt_keys = orp.jwt_keys.clone();
        cache.verify(&token, &orp, &rules, now, 1).unwrap();
        assert_eq!(
            cache.verify(&token, &demoted, &rules, now, 2),
            Err(JwtError::RoleNotGranted)
        );
        // Another institution presenting the same token misses the cache (and fails on iss).
        let mut other = orp.clone();
        other.id = InstitutionId::parse("id", "AI-VS").unwrap();
        assert_eq!(
            cache.verify(&token, &other, &rules, now, 2),
            Err(JwtError::IssuerMismatch)
        );
    }
}
