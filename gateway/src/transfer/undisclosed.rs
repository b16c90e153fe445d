//! What a sender is told of a decision that turns on the recipient's relationship with
//! the person.
//!
//! Some bases hold only if the recipient serves the person: LAI art. 68bis al. 5 (the
//! decision copy, to the institution whose benefits it touches and that serves the
//! person), LPGA art. 32 al. 2bis (to the insurer paying the benefit concerned), LAI
//! art. 66a al. 1 let. cbis (to the person's treating doctor). Only the reference
//! directory knows whether it does, and the sender may not learn it: a sender pushing
//! and reading the answer would learn which institutions serve a person. So before a
//! push is answered, the engine decides it under every combination of the directory's
//! facts (`cii_policy::decide::disclosure`):
//!
//! - the same decision whatever they are: told as decided;
//! - denied whatever they are: the denial as if the recipient served the person (it
//!   names no directory fact), the receipt without its entry (the entry names them);
//! - otherwise **UNDISCLOSED**: the same answer whether permitted or denied, the data
//!   delivered only if permitted, the receipt without its entry; the sender's later
//!   reads (`GetTransfer`, a retry) say the same, a dead letter is not noticed to it, and
//!   it is held to no obligation only a permit would create.
//!
//! INVARIANT (no-relationship-oracle): nothing the gateway sends a sender depends on
//! whether the recipient serves the person. The full decision is in the audit log, for
//! the DPOs. Each push that could be such a probe takes a token of the sender's
//! `relationship_pushes` limit before anything is decided or used up (`RATE_LIMITED`),
//! and is counted by sender and outcome (`cii_undisclosed_decisions_total`), which the
//! alert `CiiRelationshipProbing` watches.

use std::time::Instant;

use cii_kit::auth::Caller;
use cii_kit::metrics::UndisclosedLabels;
use cii_policy::decide::{self, Disclosure};
use cii_proto::common as common_pb;
use cii_proto::gateway as pb;
use cii_types::TransferState;

use super::decide::Consulted;
use super::{Decided, TransferError, Transfers};

/// The reason code of a decision not told.
pub const DECISION_UNDISCLOSED: &str = "DECISION_UNDISCLOSED";

/// What the sender is told.
#[derive(Debug)]
pub(super) struct Told {
    /// The decision as told.
    pub(super) decision: common_pb::Decision,
    /// The state as told.
    pub(super) state: i32,
    /// Whether the receipt goes without its entry.
    pub(super) entry_withheld: bool,
}

impl Transfers {
    /// What the sender of `transfer` may be told; a push that could probe for a
    /// relationship takes a token of the sender's limit first.
    pub(super) fn disclosure(
        &self,
        caller: &Caller,
        consulted: &Consulted<'_>,
        transfer: &decide::Transfer,
    ) -> Result<Disclosure, TransferError> {
        // A pull's requester is the recipient, which knows whom it serves; without one
        // person the directory was not asked.
        if consulted.checked.is_pull() || consulted.checked.person.is_none() {
            return Ok(Disclosure::Decided);
        }
        let disclosure =
            decide::disclosure(&self.rulebook, transfer, &self.hidden_facts).map_err(TransferError::Undecidable)?;
        if disclosure != Disclosure::Decided
            && let Err(wait) = self.relationship_pushes.take(&caller.institution.id, Instant::now())
        {
            tracing::warn!(institution = %caller.institution.id, "relationship_pushes rate limit reached");
            return Err(TransferError::RelationshipPushesLimited {
                wait_ms: wait.as_millis().max(1),
            });
        }
        Ok(disclosure)
    }

    /// What the sender of `decided` is told.
    pub(super) fn told(&self, decided: &Decided<'_>) -> Told {
        let permit = decided.decision.is_permit();
        let state = if permit {
            TransferState::Queued
        } else {
            TransferState::Denied
        };
        let (decision, state) = match &decided.disclosure {
            Disclosure::Decided => {
                return Told {
                    decision: decided.wire.clone(),
                    state: state.code(),
                    entry_withheld: false,
                };
            }
            Disclosure::DeniedAnyway(denied) => (crate::wire::decision(&self.rulebook, denied), state.code()),
            Disclosure::Undisclosed => (
                undisclosed(&self.rulebook.hash),
                pb::transfer_response::State::Undisclosed as i32,
            ),
        };
        let outcome = if permit { "PERMIT" } else { "DENY" };
        self.metrics
            .undisclosed
            .get_or_create(&UndisclosedLabels {
                sender: decided.consulted.from.id.to_string(),
                outcome: outcome.to_owned(),
            })
            .inc();
        Told {
            decision,
            state,
            entry_withheld: true,
        }
    }
}

/// The decision told when it is not: no outcome, no basis, no category; one reason.
fn undisclosed(rulebook_hash: &str) -> common_pb::Decision {
    common_pb::Decision {
        outcome: common_pb::decision::Outcome::Unspecified as i32,
        reasons: vec![common_pb::Reason {
            code: DECISION_UNDISCLOSED.to_owned(),
            basis: None,
            category: String::new(),
            text_fr: "La décision dépend de ce que le destinataire suit ou non la personne, ce que \
                      l'expéditeur ne peut apprendre : elle est au journal d'audit, et les données ne \
                      sont remises que si elle le permet."
                .to_owned(),
            text_de: "Der Entscheid hängt davon ab, ob die Empfängerin die Person betreut, was der \
                      Absender nicht erfahren darf: er steht im Audit-Journal, und die Daten werden nur \
                      zugestellt, wenn er es erlaubt."
                .to_owned(),
            text_en: "The decision turns on whether the recipient serves the person, which the sender \
                      may not learn: it is in the audit log, and the data are delivered only if it permits."
                .to_owned(),
        }],
        rulebook_hash: rulebook_hash.to_owned(),
        ..common_pb::Decision::default()
    }
}

/// A recorded answer as its sender may read it again: an undisclosed one keeps its state
/// and tells nothing of the delivery.
pub(crate) fn as_told(response: &mut pb::TransferResponse, state: i32, attempts: u32, last_error: String) {
    if response.state == pb::transfer_response::State::Undisclosed as i32 {
        return;
    }
    response.state = state;
    response.delivery_attempts = attempts;
    response.last_delivery_error = last_error;
}
