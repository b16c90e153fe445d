//! The identity a certificate carries.
//!
//! Every certificate of the network names exactly one party in a URI subject
//! alternative name: `urn:cii:institution:<ID>`, `urn:cii:gateway` or
//! `urn:cii:consent`. The gateway derives the calling institution from this
//! alone, never from a claim in a request.

use std::fmt;

use crate::{InstitutionId, ParseError};

/// Prefix of an institution's certificate identity.
pub const INSTITUTION_URI_PREFIX: &str = "urn:cii:institution:";
/// The gateway's certificate identity.
pub const GATEWAY_URI: &str = "urn:cii:gateway";
/// The consent registry's certificate identity.
pub const CONSENT_URI: &str = "urn:cii:consent";

/// A party of the network as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// An institution's node.
    Institution(InstitutionId),
    /// The gateway.
    Gateway,
    /// The consent registry.
    Consent,
}

impl PeerIdentity {
    /// Parses the URI form.
    pub fn parse_uri(s: &str) -> Result<Self, ParseError> {
        match s {
            GATEWAY_URI => Ok(PeerIdentity::Gateway),
            CONSENT_URI => Ok(PeerIdentity::Consent),
            _ => match s.strip_prefix(INSTITUTION_URI_PREFIX) {
                Some(id) => Ok(PeerIdentity::Institution(InstitutionId::parse(
                    "certificate identity",
                    id,
                )?)),
                None => Err(ParseError::Invalid {
                    field: "certificate identity",
                    rule: "expected urn:cii:institution:<ID>, urn:cii:gateway or urn:cii:consent",
                }),
            },
        }
    }

    /// The URI form, as written into certificates.
    pub fn to_uri(&self) -> String {
        match self {
            PeerIdentity::Institution(id) => format!("{INSTITUTION_URI_PREFIX}{id}"),
            PeerIdentity::Gateway => GATEWAY_URI.to_owned(),
            PeerIdentity::Consent => CONSENT_URI.to_owned(),
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let id = InstitutionId::parse("id", "ORP-VS").unwrap();
        for p in [
            PeerIdentity::Institution(id),
            PeerIdentity::Gateway,
            PeerIdentity::Consent,
        ] {
            assert_eq!(PeerIdentity::parse_uri(&p.to_uri()), Ok(p));
        }
        assert!(PeerIdentity::parse_uri("urn:cii:institution:orp").is_err());
        assert!(PeerIdentity::parse_uri("https://orp.example").is_err());
    }
}
