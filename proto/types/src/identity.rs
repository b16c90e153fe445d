//! The identity a certificate carries.
//!
//! Every certificate of the network names exactly one party in a URI subject
//! alternative name: `urn:cii:institution:<ID>`, `urn:cii:gateway`,
//! `urn:cii:consent` or `urn:cii:witness:<NAME>` (a witness of the audit log run
//! by a party independent of the gateway's operator). The gateway derives the calling institution from this
//! alone, never from a claim in a request.

use std::fmt;

use crate::{InstitutionId, ParseError};

/// Prefix of an institution's certificate identity.
pub const INSTITUTION_URI_PREFIX: &str = "urn:cii:institution:";
/// The gateway's certificate identity.
pub const GATEWAY_URI: &str = "urn:cii:gateway";
/// The consent registry's certificate identity.
pub const CONSENT_URI: &str = "urn:cii:consent";
/// Prefix of an independent witness's certificate identity.
pub const WITNESS_URI_PREFIX: &str = "urn:cii:witness:";

/// A party of the network as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// An institution's node.
    Institution(InstitutionId),
    /// The gateway.
    Gateway,
    /// The consent registry.
    Consent,
    /// An independent witness of the audit log, by its name.
    Witness(WitnessName),
}

/// The name of an independent witness: 1–64 lower-case letters, digits, `.` and `-`
/// (conventionally a host name of the party that runs it, e.g. `witness.edoeb.example`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WitnessName(String);

impl WitnessName {
    /// Parses a witness name; `field` is named in the error.
    pub fn parse(field: &'static str, s: &str) -> Result<WitnessName, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && !s.starts_with(['.', '-']);
        if ok {
            Ok(WitnessName(s.to_owned()))
        } else {
            Err(ParseError::Invalid {
                field,
                rule: "1-64 lower-case letters, digits, '.' and '-', e.g. witness.edoeb.example",
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WitnessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PeerIdentity {
    /// Parses the URI form.
    pub fn parse_uri(s: &str) -> Result<Self, ParseError> {
        match s {
            GATEWAY_URI => Ok(PeerIdentity::Gateway),
            CONSENT_URI => Ok(PeerIdentity::Consent),
            _ => {
                if let Some(id) = s.strip_prefix(INSTITUTION_URI_PREFIX) {
                    Ok(PeerIdentity::Institution(InstitutionId::parse(
                        "certificate identity",
                        id,
                    )?))
                } else if let Some(name) = s.strip_prefix(WITNESS_URI_PREFIX) {
                    Ok(PeerIdentity::Witness(WitnessName::parse("certificate identity", name)?))
                } else {
                    Err(ParseError::Invalid {
                        field: "certificate identity",
                        rule: "expected urn:cii:institution:<ID>, urn:cii:gateway, urn:cii:consent or urn:cii:witness:<NAME>",
                    })
                }
            }
        }
    }

    /// The URI form, as written into certificates.
    pub fn to_uri(&self) -> String {
        match self {
            PeerIdentity::Institution(id) => format!("{INSTITUTION_URI_PREFIX}{id}"),
            PeerIdentity::Gateway => GATEWAY_URI.to_owned(),
            PeerIdentity::Consent => CONSENT_URI.to_owned(),
            PeerIdentity::Witness(name) => format!("{WITNESS_URI_PREFIX}{name}"),
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
            PeerIdentity::Witness(WitnessName::parse("name", "witness.edoeb.example").unwrap()),
        ] {
            assert_eq!(PeerIdentity::parse_uri(&p.to_uri()), Ok(p));
        }
        assert!(PeerIdentity::parse_uri("urn:cii:institution:orp").is_err());
        assert!(PeerIdentity::parse_uri("https://orp.example").is_err());
        assert!(PeerIdentity::parse_uri("urn:cii:witness:Witness").is_err());
        assert!(PeerIdentity::parse_uri("urn:cii:witness:").is_err());
    }
}
