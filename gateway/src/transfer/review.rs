//! Pulls the holder reviews: the discloser weighs (issue 21).
//!
//! A pull that no basis with `automatic_answer` carries, while some basis covering it waits
//! for a review, is not decided: it is held (`pending_review`, the request's hash only), the
//! hold is logged (PULL_HELD_FOR_REVIEW) before the holder's node is told, and the requester
//! gets PENDING_REVIEW — for the same request again too. The holder's caseworker answers
//! (`Gateway/AnswerReview`): approving, with the facts only the discloser may attest, or
//! refusing with a reason code; the answer is logged (PULL_REVIEWED). The requester's next call
//! with the same request runs the rest of the pipeline — decide, log (the entry names the
//! reviewer), ask the holder, seal the answer — so the holder's data leave only when the
//! requester collects them. Past the review period a pull not answered is a logged denial
//! (REVIEW_TIMEOUT) when its requester calls again.
//!
//! INVARIANT (the-discloser-weighs): in a pull, a fact the rulebook leaves to the discloser
//! is never taken from the requester (`decide::attested_facts`); a basis without an
//! automatic answer carries a pull only once the holder's reviewer has answered.

use cii_kit::auth::Caller;
use cii_policy::vocab::Attester;
use cii_proto::common as common_pb;
use cii_proto::gateway as pb;
use cii_proto::node as node_pb;
use cii_pseudonym::names::Party;
use cii_types::TransferId;

use super::{Checked, TransferError, Transfers};
use crate::store::{PendingReview, ReviewAnswer};

/// The refusal reasons a reviewer may give: codes, never free text (they are logged).
const REFUSAL_REASONS: &[&str] = &[
    "overriding_private_interest",
    "not_necessary",
    "request_not_reasoned",
    "not_in_individual_case",
    "no_data",
    "other",
];
const REFUSAL_REASONS_TEXT: &str =
    "overriding_private_interest, not_necessary, request_not_reasoned, not_in_individual_case, no_data, other";
/// Most pulls one requester may have waiting for reviews or for their collection.
const MAX_PENDING_PER_REQUESTER: u64 = 1000;
/// Most facts a reviewer attests at once.
const MAX_REVIEWER_FACTS: usize = 64;
/// How long after its review period a held pull is forgotten (7 days).
const FORGET_AFTER_MICROS: i64 = 7 * 86_400 * 1_000_000;

/// The holder's review of a pull.
#[derive(Debug, Clone)]
pub struct Review {
    /// Who reviewed, `sub@institution` (empty when the review timed out).
    pub(super) reviewer: String,
    /// What came of it.
    pub(super) verdict: Verdict,
}

/// What the review concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The reviewer lets the gateway decide, attesting these discloser facts.
    Approved(Vec<String>),
    /// The reviewer refused, for this reason code.
    Refused(String),
    /// Nobody answered in time.
    TimedOut,
}

impl Review {
    /// The facts the reviewer attested (none unless approved).
    pub(super) fn facts(&self) -> &[String] {
        match &self.verdict {
            Verdict::Approved(facts) => facts,
            Verdict::Refused(_) | Verdict::TimedOut => &[],
        }
    }
}

fn pending_response(transfer_id: &str) -> pb::TransferResponse {
    pb::TransferResponse {
        transfer_id: transfer_id.to_owned(),
        state: pb::transfer_response::State::PendingReview as i32,
        ..pb::TransferResponse::default()
    }
}

impl Transfers {
    /// A pull the rulebook leaves to its holder: held, logged, offered to the holder, answered
    /// PENDING_REVIEW. Nothing is decided.
    pub(super) async fn hold_for_review(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
    ) -> Result<pb::TransferResponse, TransferError> {
        let requester = caller.institution.id.to_string();
        let now = cii_types::time::micros(self.clock.now());
        // Pulls whose review period ended a week ago are forgotten: their hold and any answer
        // are logged, and a requester calling again after that starts over.
        self.store
            .forget_reviews_before(now.saturating_sub(FORGET_AFTER_MICROS))
            .await?;
        if self.store.pending_reviews_of(&requester).await? >= MAX_PENDING_PER_REQUESTER {
            return Err(TransferError::ReviewQueueFull(MAX_PENDING_PER_REQUESTER));
        }
        let wait = i64::try_from(self.review_timeout.as_micros()).unwrap_or(i64::MAX);
        let pending = PendingReview {
            requester,
            transfer_id: checked.id.to_string(),
            holder: checked.counterparty.id.to_string(),
            subject: caller.user.subject.clone(),
            request_sha256: checked.request_sha256.clone(),
            created_micros: now,
            deadline_micros: now.saturating_add(wait),
            held_entry: None,
            offered: false,
            answer: None,
        };
        self.store.hold_for_review(&pending).await?;
        self.announce(caller, checked, &pending).await?;
        tracing::info!(transfer_id = %checked.id, holder = %checked.counterparty.id, "pull held for the holder's review");
        Ok(pending_response(checked.id.as_str()))
    }

    /// The same pull again: PENDING_REVIEW while it waits (logged and offered if that did not
    /// happen yet); decided once the holder answered, or once its review period is over.
    pub(super) async fn pending(&self, caller: &Caller, checked: &Checked<'_>) -> Result<Held, TransferError> {
        let requester = caller.institution.id.to_string();
        let Some(pending) = self.store.pending_review(&requester, checked.id.as_str()).await? else {
            return Ok(Held::No);
        };
        if pending.request_sha256 != checked.request_sha256 || pending.subject != caller.user.subject {
            return Err(TransferError::IdReused);
        }
        if let Some(answer) = pending.answer {
            let verdict = if answer.approved {
                Verdict::Approved(answer.facts)
            } else {
                Verdict::Refused(answer.refusal_reason)
            };
            return Ok(Held::Reviewed(Review {
                reviewer: answer.reviewer,
                verdict,
            }));
        }
        if cii_types::time::micros(self.clock.now()) >= pending.deadline_micros {
            return Ok(Held::Reviewed(Review {
                reviewer: String::new(),
                verdict: Verdict::TimedOut,
            }));
        }
        self.announce(caller, checked, &pending).await?;
        Ok(Held::Waiting(Box::new(pending_response(checked.id.as_str()))))
    }

    /// Logs the hold (before anyone is told) and offers it to the holder's node, each once.
    async fn announce(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
        pending: &PendingReview,
    ) -> Result<(), TransferError> {
        if pending.held_entry.is_none() {
            let entry = self.held_entry(caller, checked, pending).await?;
            let receipt = self.audit.append(entry).await?;
            self.store
                .review_held(&pending.requester, &pending.transfer_id, receipt.index)
                .await?;
        }
        if !pending.offered {
            self.offer(caller, checked, pending).await;
        }
        Ok(())
    }

    /// PULL_HELD_FOR_REVIEW: what reached the holder, before it does.
    async fn held_entry(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
        pending: &PendingReview,
    ) -> Result<cii_audit::Entry, TransferError> {
        let audit_person = match &checked.person {
            Some(p) => {
                let from = Party::Institution(caller.institution.id.clone());
                let purpose = checked.purpose(caller);
                cii_pseudonym::wire::to_bytes(&self.pseudonyms.translate(p, &from, &Party::Audit, &purpose).await?)
            }
            None => Vec::new(),
        };
        Ok(cii_audit::Entry {
            kind: cii_audit::EntryKind::PullHeldForReview as i32,
            time_micros: pending.created_micros,
            transfer_id: pending.transfer_id.clone(),
            sender: pending.holder.clone(),
            recipient: pending.requester.clone(),
            acting_user: caller.acting_user(),
            purpose: checked.purpose.clone(),
            trigger: checked.trigger.to_string(),
            withheld: checked
                .categories
                .iter()
                .map(|c| format!("{c}:REVIEW_REQUIRED"))
                .collect(),
            attestations: checked.attested.clone(),
            case_reference: checked.case_reference.clone().unwrap_or_default(),
            audit_pseudonym: audit_person,
            key_epoch: self.pseudonyms.epoch(),
            written_request_sha256: checked.written_request_sha256.clone(),
            rulebook_hash: self.rulebook.hash.clone(),
            detail: format!("deadline={}", pending.deadline_micros),
            ..cii_audit::Entry::default()
        })
    }

    /// The holder's node gets the review (best effort: the requester's next call offers it
    /// again until the node has it).
    async fn offer(&self, caller: &Caller, checked: &Checked<'_>, pending: &PendingReview) {
        let holder = &checked.counterparty.id;
        match self.offer_request(caller, checked, pending).await {
            Ok(offer) => self.send_offer(holder, pending, offer).await,
            Err(e) => {
                tracing::warn!(%holder, code = %e.code(), "review not offered yet; offered again on the next call")
            }
        }
    }

    /// What the holder's node is offered: the person and the written request for it.
    async fn offer_request(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
        pending: &PendingReview,
    ) -> Result<node_pb::OfferReviewRequest, TransferError> {
        let holder = Party::Institution(checked.counterparty.id.clone());
        let purpose = checked.purpose(caller);
        let person = match &checked.person {
            Some(p) => {
                let caller = Party::Institution(caller.institution.id.clone());
                let back = self.pseudonyms.translate(p, &caller, &holder, &purpose).await?;
                Some(common_pb::EncryptedPseudonym {
                    ciphertext: cii_pseudonym::wire::to_bytes(&back),
                })
            }
            None => None,
        };
        let discloser_facts = self
            .rulebook
            .facts
            .iter()
            .filter(|f| f.attested_by == Attester::Discloser)
            .map(|f| f.id.clone())
            .collect();
        Ok(node_pb::OfferReviewRequest {
            requester: pending.requester.clone(),
            transfer_id: pending.transfer_id.clone(),
            person,
            purpose: checked.purpose.clone(),
            categories: checked.categories.clone(),
            trigger: checked.trigger.to_string(),
            written_request: String::new(),
            case_reference: checked.case_reference.clone().unwrap_or_default(),
            requester_facts: checked.attested.clone(),
            discloser_facts,
            deadline: Some(cii_types::time::timestamp_of_micros(pending.deadline_micros)),
            sealed_written_request: self.forward_sealed(caller, checked, &holder).await?,
            written_request_sha256: checked.written_request_sha256.clone(),
        })
    }

    async fn send_offer(
        &self,
        holder: &cii_types::InstitutionId,
        pending: &PendingReview,
        offer: node_pb::OfferReviewRequest,
    ) {
        match self.nodes.offer_review(holder, offer).await {
            Ok(()) => {
                if let Err(e) = self
                    .store
                    .review_offered(&pending.requester, &pending.transfer_id)
                    .await
                {
                    tracing::warn!(error = %e, "review offered but not marked");
                }
            }
            Err(e) => {
                tracing::warn!(%holder, code = %e.code(), "review not offered yet; offered again on the next call")
            }
        }
    }

    /// The holder's caseworker answers a review: the answer is checked, logged (PULL_REVIEWED)
    /// and kept for the requester's next call, which decides.
    pub async fn answer_review(
        &self,
        reviewer: &Caller,
        answer: &pb::AnswerReviewRequest,
    ) -> Result<pb::AnswerReviewResponse, TransferError> {
        let id = TransferId::parse(&answer.transfer_id)?;
        let holder = reviewer.institution.id.to_string();
        let not_found = || TransferError::ReviewNotFound(id.to_string());
        // The same answer for an unknown pull, another institution's, or one answered already.
        let pending = self
            .store
            .pending_review(&answer.requester, id.as_str())
            .await?
            .filter(|p| p.holder == holder && p.answer.is_none())
            .ok_or_else(not_found)?;
        let kept = ReviewAnswer {
            reviewer: reviewer.acting_user(),
            approved: answer.approve,
            facts: if answer.approve {
                self.reviewer_facts(&answer.attested_facts)?
            } else {
                Vec::new()
            },
            refusal_reason: if answer.approve {
                String::new()
            } else if REFUSAL_REASONS.contains(&answer.refusal_reason.as_str()) {
                answer.refusal_reason.clone()
            } else {
                return Err(TransferError::RefusalReasonInvalid(REFUSAL_REASONS_TEXT));
            },
        };
        let now = cii_types::time::micros(self.clock.now());
        if now >= pending.deadline_micros {
            return Err(not_found());
        }
        let entry = reviewed_entry(&pending, &kept, now, &self.rulebook.hash);
        // Logged first: an answer the log could not record is not kept (the caseworker retries).
        let receipt = self.audit.append(entry).await?;
        if !self
            .store
            .answer_review(&pending.requester, id.as_str(), &holder, &kept, now)
            .await?
        {
            // Answered meanwhile by another caseworker, or its period ended just now.
            return Err(not_found());
        }
        Ok(pb::AnswerReviewResponse {
            state: pb::transfer_response::State::PendingReview as i32,
            decision: None,
            receipt: Some(super::receipt_to_wire(&receipt)),
        })
    }

    /// The facts a reviewer attests: declared by the rulebook, the discloser's, each once, at
    /// most 64 (the log refuses an entry with too many; the consent would be spent first).
    fn reviewer_facts(&self, ids: &[String]) -> Result<Vec<String>, TransferError> {
        let mut facts: Vec<String> = Vec::new();
        for id in ids {
            let fact = self
                .rulebook
                .facts
                .iter()
                .find(|f| f.id == *id)
                .ok_or_else(|| TransferError::FactUnknown(id.chars().take(64).collect()))?;
            if fact.attested_by != Attester::Discloser {
                return Err(TransferError::FactNotAssertable {
                    fact: fact.id.clone(),
                    attester: fact.attested_by.as_str(),
                    why: "the holder's reviewer attests only the facts the discloser weighs",
                });
            }
            if !facts.contains(&fact.id) {
                facts.push(fact.id.clone());
            }
        }
        if facts.len() > MAX_REVIEWER_FACTS {
            return Err(TransferError::FactUnknown("more than 64 facts".to_owned()));
        }
        Ok(facts)
    }
}

/// PULL_REVIEWED: the holder's answer, naming the reviewer.
fn reviewed_entry(pending: &PendingReview, answer: &ReviewAnswer, now: i64, rulebook_hash: &str) -> cii_audit::Entry {
    cii_audit::Entry {
        kind: cii_audit::EntryKind::PullReviewed as i32,
        time_micros: now,
        transfer_id: pending.transfer_id.clone(),
        sender: pending.holder.clone(),
        recipient: pending.requester.clone(),
        acting_user: format!("{}@{}", pending.subject, pending.requester),
        reviewer: answer.reviewer.clone(),
        reviewer_attestations: answer.facts.clone(),
        rulebook_hash: rulebook_hash.to_owned(),
        detail: if answer.approved {
            "review=approved".to_owned()
        } else {
            format!("review=refused reason={}", answer.refusal_reason)
        },
        ..cii_audit::Entry::default()
    }
}

/// Where a pull stands with its holder's review.
#[derive(Debug)]
pub enum Held {
    /// Not held: decide it now.
    No,
    /// Still waiting: PENDING_REVIEW.
    Waiting(Box<pb::TransferResponse>),
    /// Reviewed (or its period over): decide it with this review.
    Reviewed(Review),
}
