//! Names of domains and encryption contexts, derived from registry ids.
//! A domain fixes a pseudonym; a context fixes only a key, so rotating a
//! context (a new epoch) keeps every pseudonym.

use cii_types::InstitutionId;
use libpep::prelude::{EncryptionContext, PseudonymizationDomain};

/// The reserved origin domain of enrolment ciphertexts (never a target).
pub const ORIGIN_DOMAIN: &str = "cii/origin/avs";

/// Who a domain belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Party {
    /// An institution (its node).
    Institution(InstitutionId),
    /// The consent registry.
    Registry,
    /// The audit log (decrypted by the network DPO's tools only).
    Audit,
    /// The data-protection officer of one institution: its queries' persons are
    /// rekeyed here at query time, so each institution's DPO key opens its own
    /// entries only, under a pseudonym of its own.
    Dpo(InstitutionId),
}

impl Party {
    /// The party's name in domains and contexts (`institution/ORP-VS`, `registry`, `audit`,
    /// `dpo/ORP-VS`), as the second transcryptor's requests name it.
    pub fn label(&self) -> String {
        match self {
            Party::Institution(id) => format!("institution/{id}"),
            Party::Registry => "registry".to_owned(),
            Party::Audit => "audit".to_owned(),
            Party::Dpo(id) => format!("dpo/{id}"),
        }
    }

    /// The party a [`Party::label`] names (`None` for anything else: the origin is no party).
    pub fn parse(label: &str) -> Option<Party> {
        let id = |s: &str| InstitutionId::parse("party", s).ok();
        match label.split_once('/') {
            None if label == "registry" => Some(Party::Registry),
            None if label == "audit" => Some(Party::Audit),
            Some(("institution", s)) => id(s).map(Party::Institution),
            Some(("dpo", s)) => id(s).map(Party::Dpo),
            _ => None,
        }
    }

    /// The party's pseudonymisation domain.
    pub fn domain(&self) -> PseudonymizationDomain {
        PseudonymizationDomain::from(format!("cii/domain/{}", self.label()).as_str())
    }

    /// The party's encryption context for key epoch `epoch`.
    pub fn context(&self, epoch: u32) -> EncryptionContext {
        EncryptionContext::from(format!("cii/ctx/{}/{epoch}", self.label()).as_str())
    }
}

/// The origin domain.
pub fn origin() -> PseudonymizationDomain {
    PseudonymizationDomain::from(ORIGIN_DOMAIN)
}
