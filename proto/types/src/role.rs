//! Roles of acting users, carried in their JWT.

use std::fmt;

use crate::ParseError;

/// What an acting user may do. A user may hold several roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Handles cases: enrols persons, sends and requests data.
    Caseworker,
    /// A machine client of the institution (publishing, batch enrolment, inbox polling):
    /// the same rpcs as a caseworker, named apart so the log tells people from programs.
    System,
    /// Data-protection officer of their own institution.
    Dpo,
    /// Data-protection officer of the whole network.
    NetworkDpo,
    /// Writes and tests the rulebook.
    Jurist,
    /// Operates the service (retention runs, administration).
    Operator,
}

impl Role {
    /// The roles every member's tokens may carry unless its registry entry says otherwise;
    /// `network_dpo` and `operator` are granted only by name, to the parties the network designates.
    pub const MEMBER: [Role; 4] = [Role::Caseworker, Role::System, Role::Dpo, Role::Jurist];

    /// The roles a party that exchanges nothing (the network's operator, an oversight body)
    /// may be granted: never a caseworker's, a machine client's or an institution's DPO's.
    pub const NETWORK_PARTY: [Role; 3] = [Role::NetworkDpo, Role::Operator, Role::Jurist];
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Caseworker,
        Role::System,
        Role::Dpo,
        Role::NetworkDpo,
        Role::Jurist,
        Role::Operator,
    ];

    /// The name used in JWTs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caseworker => "caseworker",
            Role::System => "system",
            Role::Dpo => "dpo",
            Role::NetworkDpo => "network_dpo",
            Role::Jurist => "jurist",
            Role::Operator => "operator",
        }
    }

    /// Parses a role name, naming `field` in the error.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, ParseError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(ParseError::Unknown {
                field,
                expected: "caseworker, system, dpo, network_dpo, jurist, operator",
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
