//! Pulls the holder reviews: the discloser weighs (issue 21).
//!
//! A pull that no basis with `automatic_answer` carries, while some basis covering it
//! waits for a review, is not decided: it is held (`pending_review`) and offered to the
//! holder's node, and the requester gets PENDING_REVIEW — for the same request again too.
//! The holder's caseworker answers (`Gateway/AnswerReview`): approving, with the facts only
//! the discloser may attest, or refusing with a reason code. Only then does the gateway
//! run the rest of the pipeline for the pull — decide, log (the entry names the reviewer),
//! ask the holder, seal the answer — exactly as the requester's own call would have, and
//! record the outcome under the requester's id, where its next call finds it. A review not
//! answered by its deadline is a logged denial (REVIEW_TIMEOUT).
//!
//! INVARIANT (the-discloser-weighs): in a pull, a fact the rulebook leaves to the discloser
//! is never taken from the requester (`decide::attested_facts`); a basis without an
//! automatic answer carries a pull only once the holder's reviewer has answered.

use cii_kit::auth::Caller;
use cii_kit::jwt::User;
use cii_policy::vocab::Attester;
use cii_proto::common as common_pb;
use cii_proto::gateway as pb;
use cii_proto::node as node_pb;
use cii_pseudonym::names::Party;
use cii_types::{InstitutionId, Role, TransferId};
use prost::Message;

use super::{Checked, TransferError, Transfers, check_request};
use crate::store::PendingReview;

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
    /// Stage 3½ of a pull the rulebook leaves to its holder: held, offered to the holder,
    /// answered PENDING_REVIEW. Nothing is decided or logged.
    pub(super) async fn hold_for_review(
        &self,
        caller: &Caller,
        request: &pb::TransferRequest,
        checked: &Checked<'_>,
    ) -> Result<pb::TransferResponse, TransferError> {
        let now = cii_types::time::micros(self.clock.now());
        let wait = i64::try_from(self.review_timeout.as_micros()).unwrap_or(i64::MAX);
        let pending = PendingReview {
            requester: caller.institution.id.to_string(),
            transfer_id: checked.id.to_string(),
            holder: checked.counterparty.id.to_string(),
            subject: caller.user.subject.clone(),
            request: request.encode_to_vec(),
            request_sha256: checked.request_sha256.clone(),
            created_micros: now,
            deadline_micros: now.saturating_add(wait),
            offered: false,
        };
        self.store.hold_for_review(&pending).await?;
        self.offer(caller, checked, &pending).await;
        tracing::info!(transfer_id = %checked.id, holder = %checked.counterparty.id, "pull held for the holder's review");
        Ok(pending_response(checked.id.as_str()))
    }

    /// The same pull again while it waits: PENDING_REVIEW (offered again if the holder's node
    /// did not have it), or — past the deadline — its logged denial.
    pub(super) async fn pending(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
    ) -> Result<Option<pb::TransferResponse>, TransferError> {
        let caller_id = caller.institution.id.to_string();
        let Some(pending) = self.store.pending_review(&caller_id, checked.id.as_str()).await? else {
            return Ok(None);
        };
        if pending.request_sha256 != checked.request_sha256 || pending.subject != caller.user.subject {
            return Err(TransferError::IdReused);
        }
        if cii_types::time::micros(self.clock.now()) >= pending.deadline_micros {
            let review = Review {
                reviewer: String::new(),
                verdict: Verdict::TimedOut,
            };
            return self.conclude(caller, &pending, review).await.map(Some);
        }
        if !pending.offered {
            self.offer(caller, checked, &pending).await;
        }
        Ok(Some(pending_response(checked.id.as_str())))
    }

    /// The holder's node gets the review (best effort: the requester's next call offers it
    /// again until the node has it).
    async fn offer(&self, caller: &Caller, checked: &Checked<'_>, pending: &PendingReview) {
        let holder = &checked.counterparty.id;
        let person = checked.person.as_ref().map(|p| {
            let back = self.pseudonyms.translate(
                p,
                &Party::Institution(caller.institution.id.clone()),
                &Party::Institution(holder.clone()),
            );
            common_pb::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&back),
            }
        });
        let discloser_facts = self
            .rulebook
            .facts
            .iter()
            .filter(|f| f.attested_by == Attester::Discloser)
            .map(|f| f.id.clone())
            .collect();
        let offer = node_pb::OfferReviewRequest {
            requester: pending.requester.clone(),
            transfer_id: pending.transfer_id.clone(),
            person,
            purpose: checked.purpose.clone(),
            categories: checked.categories.clone(),
            trigger: checked.trigger.to_string(),
            written_request: checked.written_request.clone(),
            case_reference: checked.case_reference.clone().unwrap_or_default(),
            requester_facts: checked.attested.clone(),
            discloser_facts,
            deadline: Some(cii_types::time::timestamp_of_micros(pending.deadline_micros)),
        };
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

    /// The holder's caseworker answers a review.
    pub async fn answer_review(
        &self,
        reviewer: &Caller,
        answer: &pb::AnswerReviewRequest,
    ) -> Result<pb::AnswerReviewResponse, TransferError> {
        let id = TransferId::parse(&answer.transfer_id)?;
        let not_found = || TransferError::ReviewNotFound(id.to_string());
        let pending = self
            .store
            .pending_review(&answer.requester, id.as_str())
            .await?
            .filter(|p| p.holder == reviewer.institution.id.as_str())
            .ok_or_else(not_found)?;
        let verdict = if answer.approve {
            Verdict::Approved(answer.attested_facts.clone())
        } else if REFUSAL_REASONS.contains(&answer.refusal_reason.as_str()) {
            Verdict::Refused(answer.refusal_reason.clone())
        } else {
            return Err(TransferError::RefusalReasonInvalid(REFUSAL_REASONS_TEXT));
        };
        let requester = self.requester(&pending)?;
        // The requester's own call for the same pull waits for this one (and then finds it concluded).
        let _slot = self.claim(&requester, &id)?;
        let expired = cii_types::time::micros(self.clock.now()) >= pending.deadline_micros;
        let review = if expired {
            Review {
                reviewer: String::new(),
                verdict: Verdict::TimedOut,
            }
        } else {
            Review {
                reviewer: reviewer.acting_user(),
                verdict,
            }
        };
        let response = self.conclude(&requester, &pending, review).await?;
        if expired {
            return Err(TransferError::ReviewExpired(id.to_string()));
        }
        Ok(pb::AnswerReviewResponse {
            state: response.state,
            decision: response.decision,
            receipt: response.receipt,
        })
    }

    /// The requester as it called: its institution from the registry, its user from the
    /// held row (a caseworker: only caseworkers submit pulls).
    fn requester(&self, pending: &PendingReview) -> Result<Caller, TransferError> {
        let id = InstitutionId::parse("requester", &pending.requester).map_err(TransferError::Counterparty)?;
        let institution = self
            .registry
            .current()
            .get(&id)
            .cloned()
            .ok_or(TransferError::CounterpartyUnknown(id.clone()))?;
        Ok(Caller {
            institution,
            user: User {
                institution: id,
                subject: pending.subject.clone(),
                roles: [Role::Caseworker].into_iter().collect(),
            },
        })
    }

    /// The rest of the pipeline for a reviewed (or timed-out) pull, under the requester's
    /// name: decide, log, ask the holder; recorded where the requester's next call finds it.
    /// The caller holds the pull's in-flight slot.
    async fn conclude(
        &self,
        requester: &Caller,
        pending: &PendingReview,
        review: Review,
    ) -> Result<pb::TransferResponse, TransferError> {
        let request = pb::TransferRequest::decode(pending.request.as_slice())
            .map_err(|_| TransferError::StoreCorrupt("a held pull does not decode"))?;
        let registry = self.registry.current();
        let mut checked = check_request(&registry, &self.catalogue, &requester.institution.id, &request)?;
        checked.review = Some(review);
        // Concluded already (the row outlived its entry after a crash): the recorded outcome.
        if let Some(done) = self.replay(requester, &checked).await? {
            self.store
                .review_concluded(&pending.requester, &pending.transfer_id)
                .await?;
            return Ok(done);
        }
        let consulted = self.consult(requester, checked).await?;
        let decided = self.decide(requester, consulted).await?;
        let sealed = self.seal(requester, &decided)?;
        let entry = super::entry::transfer_entry(requester, &decided, &sealed);
        let logged = self.log(requester, &decided, sealed, entry).await?;
        // Logged and recorded: from here on the requester's call finds the transfer row.
        self.store
            .review_concluded(&pending.requester, &pending.transfer_id)
            .await?;
        self.deliver(requester, &decided, logged).await
    }
}
