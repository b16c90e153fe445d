//! Every libpep operation of the gateway — enrolment, a transfer's persons, the identity
//! and seal keys rekeyed, a DPO's look-up from the log — through this gateway's
//! transcryptor and, on a network with two transcryptors (issue 24), the second's hop,
//! called over mutual TLS. With two, neither holds enough to link persons, open a seal or
//! recover the global key; the second is asked before anything is written, so when it does
//! not answer nothing is half-done (`TRANSCRYPTOR_UNAVAILABLE`, retryable).

use std::sync::Arc;

pub use cii_proto::transcryptor::Purpose;
use cii_proto::transcryptor::{self as pb, transcryptor_client::TranscryptorClient};
use cii_pseudonym::gateway::Gateway;
use cii_pseudonym::names::Party;
use cii_pseudonym::shares::{Ciphertext, Operation, Source};
use cii_pseudonym::{EncryptedAttribute, EncryptedPseudonym};
use tonic::transport::Channel;

/// The gateway's transcryption: its own hop, and the second transcryptor's if configured.
#[derive(Clone)]
pub struct Pseudonyms {
    local: Arc<Gateway>,
    second: Option<TranscryptorClient<Channel>>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonyms")
            .field("transcryptors", &(1 + u32::from(self.second.is_some())))
            .finish_non_exhaustive()
    }
}

/// An operation that could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum PseudonymsError {
    /// The second transcryptor did not answer (or answered with a transport error).
    #[error("the second transcryptor did not answer ({0}); nothing was done, retry")]
    Unavailable(String),
    /// The second transcryptor refused, or answered something unusable: a bug or a tampered
    /// channel, never the caller's fault.
    #[error("the second transcryptor's answer is unusable: {0}")]
    Invalid(String),
    /// This gateway's own hop failed (key material).
    #[error(transparent)]
    Local(#[from] cii_pseudonym::PseudonymError),
}

impl PseudonymsError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            PseudonymsError::Unavailable(_) => "TRANSCRYPTOR_UNAVAILABLE",
            PseudonymsError::Invalid(_) => "INTERNAL",
            PseudonymsError::Local(e) => e.code(),
        }
    }
}

impl Pseudonyms {
    /// `local` alone (one transcryptor), or with the second transcryptor on `second`.
    /// The key file decides: a gateway whose key file says two transcryptors is given the
    /// second's channel (the config check refuses one without the other).
    pub fn new(local: Arc<Gateway>, second: Option<Channel>) -> Pseudonyms {
        Pseudonyms {
            local,
            second: second.map(TranscryptorClient::new),
        }
    }

    /// The key epoch of the contexts operations target.
    pub fn epoch(&self) -> u32 {
        self.local.epoch()
    }

    /// The local transcryptor (for the benches' baselines).
    pub fn local(&self) -> &Gateway {
        &self.local
    }

    /// Runs `operations` (for `purpose`) through both hops; one result per operation, in order.
    pub async fn run(&self, operations: Vec<Operation>, purpose: &Purpose) -> Result<Vec<Ciphertext>, PseudonymsError> {
        let mut first = Vec::with_capacity(operations.len());
        for op in &operations {
            first.push(self.local.apply(op)?);
        }
        // Nothing to transcrypt (a denied transfer of anonymised statistics): nothing to ask or log.
        let Some(second) = self.second.as_ref().filter(|_| !operations.is_empty()) else {
            return Ok(first.into_iter().map(|(ciphertext, _)| ciphertext).collect());
        };
        let wire = operations
            .iter()
            .zip(&first)
            .map(|(op, (ciphertext, key))| {
                let after_first = Operation {
                    ciphertext: *ciphertext,
                    ..op.clone()
                };
                cii_pseudonym::wire::hop::to_wire(&after_first, key)
            })
            .collect();
        let answer = second
            .clone()
            .transcrypt(pb::TranscryptRequest {
                operations: wire,
                purpose: Some(purpose.clone()),
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::InvalidArgument | tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                    PseudonymsError::Invalid(
                        cii_kit::status::error_code(&status).unwrap_or_else(|| status.code().to_string()),
                    )
                }
                code => PseudonymsError::Unavailable(code.to_string()),
            })?
            .into_inner();
        if answer.results.len() != operations.len() {
            return Err(PseudonymsError::Invalid("not one result per operation".to_owned()));
        }
        operations
            .iter()
            .zip(&answer.results)
            .map(|(op, result)| {
                cii_pseudonym::wire::hop::result_from_wire(&op.ciphertext, result)
                    .map_err(|e| PseudonymsError::Invalid(e.code().to_owned()))
            })
            .collect()
    }

    /// Pseudonym operations in one round: each `(ciphertext, from, to)`.
    pub async fn pseudonyms(
        &self,
        items: Vec<(EncryptedPseudonym, Source, Party)>,
        purpose: &Purpose,
    ) -> Result<Vec<EncryptedPseudonym>, PseudonymsError> {
        let ops = items
            .into_iter()
            .map(|(ciphertext, from, to)| Operation {
                ciphertext: Ciphertext::Pseudonym(ciphertext),
                from,
                to,
            })
            .collect();
        self.run(ops, purpose)
            .await?
            .into_iter()
            .map(|c| match c {
                Ciphertext::Pseudonym(c) => Ok(c),
                Ciphertext::Attribute(_) => Err(PseudonymsError::Invalid("not a pseudonym".to_owned())),
            })
            .collect()
    }

    /// A person from `caller`'s domain (its certificate identity) into `to`'s.
    pub async fn translate(
        &self,
        ciphertext: &EncryptedPseudonym,
        caller: &Party,
        to: &Party,
        purpose: &Purpose,
    ) -> Result<EncryptedPseudonym, PseudonymsError> {
        self.pseudonyms(
            vec![(*ciphertext, Source::node(Some(caller.clone())), to.clone())],
            purpose,
        )
        .await?
        .pop()
        .ok_or_else(|| PseudonymsError::Invalid("no result".to_owned()))
    }

    /// An attribute a node encrypted under the global key (an identity, a seal key),
    /// rekeyed to `to`.
    pub async fn rekey(
        &self,
        ciphertext: &EncryptedAttribute,
        to: &Party,
        purpose: &Purpose,
    ) -> Result<EncryptedAttribute, PseudonymsError> {
        let op = Operation {
            ciphertext: Ciphertext::Attribute(*ciphertext),
            from: Source::node(None),
            to: to.clone(),
        };
        match self.run(vec![op], purpose).await?.pop() {
            Some(Ciphertext::Attribute(c)) => Ok(c),
            _ => Err(PseudonymsError::Invalid("not an attribute".to_owned())),
        }
    }
}

/// What a transfer's operations are for: `caller`'s transfer `transfer_id` with `counterparty`.
pub fn transfer(caller: &str, counterparty: &str, transfer_id: &str) -> Purpose {
    Purpose {
        kind: "transfer".to_owned(),
        institution: caller.to_owned(),
        counterparty: counterparty.to_owned(),
        reference: transfer_id.to_owned(),
    }
}

/// What an institution's own operations are for (`enrolment`, `consent`, `consent_read`,
/// `dpo_lookup`), or a
/// DPO's query (`dpo_query`, its entry's index as the reference).
pub fn of(kind: &str, institution: &str, reference: &str) -> Purpose {
    Purpose {
        kind: kind.to_owned(),
        institution: institution.to_owned(),
        counterparty: String::new(),
        reference: reference.to_owned(),
    }
}
