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

/// The kind of an institution, e.g. `AI` or `AC_ORP`: the name a rulebook
/// declares under `[[institution_type]]` and the registry gives each member.
///
/// The list is open: a canton's rulebook may declare types of its own (an
/// integration institution, a private body with a delegated public task)
/// without a code change. A name is 2–32 characters of `A-Z`, `0-9` and `_`,
/// starting with a letter. Names are interned so that the type stays `Copy`;
/// they come only from configuration files (registry, rulebook), never from
/// a request, so the interned set is bounded by what operators write.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstitutionType(&'static str);

#[allow(non_upper_case_globals)] // kept as the former enum's variant names, so existing code reads the same
impl InstitutionType {
    /// Unemployment insurance: regional employment office (ORP/RAV) or cantonal labour office.
    pub const AcOrp: InstitutionType = InstitutionType("AC_ORP");
    /// Unemployment insurance: unemployment fund.
    pub const AcFund: InstitutionType = InstitutionType("AC_FUND");
    /// Invalidity insurance office.
    pub const Ai: InstitutionType = InstitutionType("AI");
    /// Social assistance (communal or regional social service).
    pub const As: InstitutionType = InstitutionType("AS");
    /// Supplementary benefits.
    pub const Pc: InstitutionType = InstitutionType("PC");
    /// Vocational training and career guidance.
    pub const Fp: InstitutionType = InstitutionType("FP");
    /// Migration authority (LEI 97 al. 1).
    pub const Mig: InstitutionType = InstitutionType("MIG");
    /// Swiss accident insurance fund.
    pub const Suva: InstitutionType = InstitutionType("SUVA");
    /// Any other participant.
    pub const Other: InstitutionType = InstitutionType("OTHER");

    /// The types of the first release, which every rulebook since declares.
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

    /// Longest accepted name.
    pub const MAX_LEN: usize = 32;

    /// The name used in files and on the wire (`AC_ORP`, …).
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// Parses a type name, naming `field` in the error. Only for names read
    /// from configuration files: a new name is interned for the process's life.
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
        let mut chars = s.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_uppercase());
        let rest_ok = chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !starts_with_letter || !rest_ok || s.len() < 2 || s.ends_with('_') {
            return Err(ParseError::Invalid {
                field,
                rule: "institution types use A-Z, 0-9 and '_', starting with a letter, 2-32 characters (e.g. AC_ORP)",
            });
        }
        Ok(InstitutionType(intern(s)))
    }
}

/// The one copy of each type name ever parsed.
fn intern(s: &str) -> &'static str {
    use std::collections::BTreeSet;
    use std::sync::{Mutex, PoisonError};
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    if let Some(known) = InstitutionType::ALL.iter().find(|t| t.0 == s) {
        return known.0;
    }
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(s) {
        return known;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

impl FromStr for InstitutionType {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        InstitutionType::parse("institution type", s)
    }
}

impl fmt::Display for InstitutionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for InstitutionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstitutionType({})", self.0)
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
        // Open list: a canton's own type parses, and parses to the same value twice.
        let integration = InstitutionType::parse("type", "INTEGRATION").unwrap();
        assert_eq!(integration, InstitutionType::parse("type", "INTEGRATION").unwrap());
        assert_eq!(integration.as_str(), "INTEGRATION");
        for bad in ["", "ai", "1AI", "A", "AI_", "A-I", "AÏ", &"A".repeat(33)] {
            let err = InstitutionType::parse("type", bad).unwrap_err();
            assert_eq!(err.field(), "type", "{bad:?}");
        }
    }
}
