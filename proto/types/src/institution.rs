//! Institutions: their registry ids and their types.

use std::fmt;
use std::str::FromStr;

use crate::ParseError;

/// A registry id such as `ORP-VS` or `AI-VS`: 2–64 characters of upper-case
/// ASCII letters, digits and `-`, starting with a letter. Not personal data,
/// so it may appear in logs, metrics and error messages.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstitutionId(String);

impl InstitutionId {
    /// Longest accepted id.
    pub const MAX_LEN: usize = 64;

    /// Parses an id, naming `field` in the error.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty { field });
        }
        if s.len() > Self::MAX_LEN {
            return Err(ParseError::TooLong {
                field,
                max: Self::MAX_LEN,
            });
        }
        let rule = "institution ids use A-Z, 0-9 and '-', starting with a letter, at least 2 characters";
        let mut chars = s.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_uppercase());
        let rest_ok = chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if !starts_with_letter || !rest_ok || s.len() < 2 || s.ends_with('-') {
            return Err(ParseError::Invalid { field, rule });
        }
        Ok(InstitutionId(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstitutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstitutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstitutionId({})", self.0)
    }
}

/// The kinds of institution in interinstitutional collaboration (CII/IIZ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InstitutionType {
    /// Unemployment insurance: regional employment office (ORP/RAV) or cantonal labour office.
    AcOrp,
    /// Unemployment insurance: unemployment fund.
    AcFund,
    /// Invalidity insurance office.
    Ai,
    /// Social assistance (communal or regional social service).
    As,
    /// Supplementary benefits.
    Pc,
    /// Vocational training and career guidance.
    Fp,
    /// Migration and integration office.
    Mig,
    /// Swiss accident insurance fund.
    Suva,
    /// Any other participant.
    Other,
}

impl InstitutionType {
    /// Every type, in declaration order.
    pub const ALL: [InstitutionType; 9] = [
        InstitutionType::AcOrp,
        InstitutionType::AcFund,
        InstitutionType::Ai,
        InstitutionType::As,
        InstitutionType::Pc,
        InstitutionType::Fp,
        InstitutionType::Mig,
        InstitutionType::Suva,
        InstitutionType::Other,
    ];

    const EXPECTED: &'static str = "AC_ORP, AC_FUND, AI, AS, PC, FP, MIG, SUVA, OTHER";

    /// The name used in files and on the wire (`AC_ORP`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            InstitutionType::AcOrp => "AC_ORP",
            InstitutionType::AcFund => "AC_FUND",
            InstitutionType::Ai => "AI",
            InstitutionType::As => "AS",
            InstitutionType::Pc => "PC",
            InstitutionType::Fp => "FP",
            InstitutionType::Mig => "MIG",
            InstitutionType::Suva => "SUVA",
            InstitutionType::Other => "OTHER",
        }
    }

    /// Parses a type name, naming `field` in the error.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, ParseError> {
        InstitutionType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(ParseError::Unknown {
                field,
                expected: Self::EXPECTED,
            })
    }
}

impl FromStr for InstitutionType {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        InstitutionType::parse("institution type", s)
    }
}

impl fmt::Display for InstitutionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_alphabet() {
        for ok in ["ORP-VS", "AI-VS", "AS-VS-SION", "SUVA", "A1"] {
            assert!(InstitutionId::parse("id", ok).is_ok(), "{ok}");
        }
        for bad in ["", "orp-vs", "-ORP", "ORP-", "ORP VS", "1ORP", "O", "ÖRP"] {
            assert!(InstitutionId::parse("id", bad).is_err(), "{bad}");
        }
        let long = "A".repeat(65);
        assert_eq!(
            InstitutionId::parse("id", &long),
            Err(ParseError::TooLong { field: "id", max: 64 })
        );
    }

    #[test]
    fn types_round_trip_through_their_names() {
        for t in InstitutionType::ALL {
            assert_eq!(InstitutionType::parse("type", t.as_str()), Ok(t));
        }
        let err = InstitutionType::parse("type", "ORP").unwrap_err();
        assert_eq!(err.code(), "UNKNOWN_VALUE");
        assert_eq!(err.field(), "type");
    }
}
