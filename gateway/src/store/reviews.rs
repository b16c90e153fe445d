//! Pulls held for their holder's review (the discloser weighs): stored as the requester
//! sent them until the holder's caseworker answers or the review times out. A row here
//! means nothing was decided or logged for the pull yet.

use sqlx::Row;

use super::{Store, StoreError};

/// A pull waiting for its holder's review.
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
    /// The encoded `gateway.v1.TransferRequest` as sent.
    pub request: Vec<u8>,
    /// Its SHA-256: the same id with other bytes is another request.
    pub request_sha256: Vec<u8>,
    /// When it was held.
    pub created_micros: i64,
    /// When it times out.
    pub deadline_micros: i64,
    /// The holder's node has it.
    pub offered: bool,
}

impl Store {
    /// Holds a pull for review; the same pull again changes nothing.
    pub async fn hold_for_review(&self, p: &PendingReview) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pending_review (requester, transfer_id, holder, subject, request, request_sha256, \
             created_micros, deadline_micros, offered) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (requester, transfer_id) DO NOTHING",
        )
        .bind(&p.requester)
        .bind(&p.transfer_id)
        .bind(&p.holder)
        .bind(&p.subject)
        .bind(&p.request)
        .bind(&p.request_sha256)
        .bind(p.created_micros)
        .bind(p.deadline_micros)
        .bind(i64::from(p.offered))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The pull `transfer_id` of `requester` waiting for review, if any.
    pub async fn pending_review(
        &self,
        requester: &str,
        transfer_id: &str,
    ) -> Result<Option<PendingReview>, StoreError> {
        let row = sqlx::query(
            "SELECT requester, transfer_id, holder, subject, request, request_sha256, created_micros, \
             deadline_micros, offered FROM pending_review WHERE requester = ?1 AND transfer_id = ?2",
        )
        .bind(requester)
        .bind(transfer_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| PendingReview {
            requester: r.get(0),
            transfer_id: r.get(1),
            holder: r.get(2),
            subject: r.get(3),
            request: r.get(4),
            request_sha256: r.get(5),
            created_micros: r.get(6),
            deadline_micros: r.get(7),
            offered: r.get::<i64, _>(8) != 0,
        }))
    }

    /// The holder's node has the review.
    pub async fn review_offered(&self, requester: &str, transfer_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE pending_review SET offered = 1 WHERE requester = ?1 AND transfer_id = ?2")
            .bind(requester)
            .bind(transfer_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The review is concluded (its decision logged and recorded): the row goes.
    pub async fn review_concluded(&self, requester: &str, transfer_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pending_review WHERE requester = ?1 AND transfer_id = ?2")
            .bind(requester)
            .bind(transfer_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
