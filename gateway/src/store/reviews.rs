//! Pulls held for their holder's review (the discloser weighs). A row means nothing was decided
//! for the pull yet; it keeps the request's hash (the requester's node resends the request
//! itself), whether the hold is logged and offered, and the reviewer's answer once given.

use sqlx::Row;

use super::{Store, StoreError};

/// A pull waiting for its holder's review, or for its requester to collect the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReview {
    /// The requester's registry id.
    pub requester: String,
    /// The pull's transfer id.
    pub transfer_id: String,
    /// The holder's registry id (who reviews).
    pub holder: String,
    /// The requesting user's subject (`sub` of its token).
    pub subject: String,
    /// SHA-256 of the request's bytes: the answer applies to this request only.
    pub request_sha256: Vec<u8>,
    /// When it was held.
    pub created_micros: i64,
    /// When its review period ends.
    pub deadline_micros: i64,
    /// The index of its PULL_HELD_FOR_REVIEW entry, once logged.
    pub held_entry: Option<u64>,
    /// The holder's node has it.
    pub offered: bool,
    /// The reviewer's answer, once given.
    pub answer: Option<ReviewAnswer>,
}

/// What the holder's caseworker answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewAnswer {
    /// `sub@holder`.
    pub reviewer: String,
    /// Approved (with `facts`) or refused (with `refusal_reason`).
    pub approved: bool,
    /// The facts attested as the discloser.
    pub facts: Vec<String>,
    /// The refusal's reason code.
    pub refusal_reason: String,
}

impl Store {
    /// Holds a pull for review; false if the same pull is held already.
    pub async fn hold_for_review(&self, p: &PendingReview) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO pending_review (requester, transfer_id, holder, subject, request_sha256, created_micros, \
             deadline_micros) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (requester, transfer_id) DO NOTHING",
        )
        .bind(&p.requester)
        .bind(&p.transfer_id)
        .bind(&p.holder)
        .bind(&p.subject)
        .bind(&p.request_sha256)
        .bind(p.created_micros)
        .bind(p.deadline_micros)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// How many pulls of `requester` wait for a review or for their collection.
    pub async fn pending_reviews_of(&self, requester: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_review WHERE requester = $1")
            .bind(requester)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The pull `transfer_id` of `requester` held for review, if any.
    pub async fn pending_review(
        &self,
        requester: &str,
        transfer_id: &str,
    ) -> Result<Option<PendingReview>, StoreError> {
        let row = sqlx::query(
            "SELECT requester, transfer_id, holder, subject, request_sha256, created_micros, deadline_micros, \
             held_entry, offered, reviewer, approved, reviewer_facts, refusal_reason \
             FROM pending_review WHERE requester = $1 AND transfer_id = $2",
        )
        .bind(requester)
        .bind(transfer_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            let held: i64 = r.get(7);
            let reviewer: Option<String> = r.get(9);
            let approved: Option<i64> = r.get(10);
            let facts: String = r.get(11);
            PendingReview {
                requester: r.get(0),
                transfer_id: r.get(1),
                holder: r.get(2),
                subject: r.get(3),
                request_sha256: r.get(4),
                created_micros: r.get(5),
                deadline_micros: r.get(6),
                held_entry: u64::try_from(held).ok(),
                offered: r.get::<i64, _>(8) != 0,
                answer: reviewer.zip(approved).map(|(reviewer, approved)| ReviewAnswer {
                    reviewer,
                    approved: approved != 0,
                    facts: facts.split(' ').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
                    refusal_reason: r.get(12),
                }),
            }
        }))
    }

    /// The hold is logged as entry `index`.
    pub async fn review_held(&self, requester: &str, transfer_id: &str, index: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE pending_review SET held_entry = $3 WHERE requester = $1 AND transfer_id = $2")
            .bind(requester)
            .bind(transfer_id)
            .bind(i64::try_from(index).unwrap_or(i64::MAX))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The holder's node has the review.
    pub async fn review_offered(&self, requester: &str, transfer_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE pending_review SET offered = 1 WHERE requester = $1 AND transfer_id = $2")
            .bind(requester)
            .bind(transfer_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Keeps the holder's answer, if the pull still waits for one at `now` and `holder` holds it;
    /// false otherwise (answered already, its period over, or another institution's).
    pub async fn answer_review(
        &self,
        requester: &str,
        transfer_id: &str,
        holder: &str,
        answer: &ReviewAnswer,
        now_micros: i64,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE pending_review SET reviewer = $4, approved = $5, reviewer_facts = $6, refusal_reason = $7 \
             WHERE requester = $1 AND transfer_id = $2 AND holder = $3 AND reviewer IS NULL AND deadline_micros > $8",
        )
        .bind(requester)
        .bind(transfer_id)
        .bind(holder)
        .bind(&answer.reviewer)
        .bind(i64::from(answer.approved))
        .bind(answer.facts.join(" "))
        .bind(&answer.refusal_reason)
        .bind(now_micros)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// The pull is decided (its entry logged and its record written): the row goes.
    pub async fn review_concluded(&self, requester: &str, transfer_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pending_review WHERE requester = $1 AND transfer_id = $2")
            .bind(requester)
            .bind(transfer_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Forgets held pulls whose review period ended before `before` (their hold and any answer
    /// are logged; a requester calling again after that starts over). How many.
    pub async fn forget_reviews_before(&self, before_micros: i64) -> Result<u64, StoreError> {
        let gone = sqlx::query("DELETE FROM pending_review WHERE deadline_micros < $1")
            .bind(before_micros)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(gone)
    }
}
