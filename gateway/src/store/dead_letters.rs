//! Dead letters: deliveries taken out of the outbox so that they block nothing.
//!
//! A delivery the recipient refused for good, or that stayed undeliverable past the
//! retry limit, moves here (still sealed to the recipient) in the same transaction that
//! marks its transfer DEAD_LETTERED and queues the notice to its sender. The operator
//! lists them, puts one back in the outbox or drops it; the audit entry of each step is
//! durable before the step (the caller appends it first).

use cii_types::TransferState;
use sqlx::Row;

use super::{Due, Store, StoreError};

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRow {
    /// The sender (`gateway` for a notice).
    pub sender: String,
    /// The sender's transfer id (or the notice id).
    pub transfer_id: String,
    /// The recipient.
    pub recipient: String,
    /// The last attempt's code.
    pub error_code: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it left the outbox.
    pub dead_micros: i64,
    /// Size of the sealed delivery.
    pub size_bytes: u64,
}

/// The notice a dead letter sends to its sender: its outbox id and encoded delivery.
#[derive(Debug, Clone)]
pub struct SenderNotice {
    /// The notice's id (its transfer id in the sender's inbox).
    pub id: String,
    /// The encoded `node.v1.Delivery` carrying the `DeliveryFailure`.
    pub delivery: Vec<u8>,
}

impl Store {
    /// Moves `due` out of the outbox: the dead letter, its transfer DEAD_LETTERED with
    /// `code`, and the notice to its sender queued, in one transaction.
    pub async fn dead_letter(
        &self,
        due: &Due,
        code: &str,
        now_micros: i64,
        notice: Option<&SenderNotice>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO dead_letter (seq, recipient, sender, transfer_id, delivery, attempts, error_code, dead_micros) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (sender, transfer_id, recipient) DO UPDATE SET \
             seq = excluded.seq, delivery = excluded.delivery, attempts = excluded.attempts, \
             error_code = excluded.error_code, dead_micros = excluded.dead_micros",
        )
        .bind(due.seq)
        .bind(&due.recipient)
        .bind(&due.sender)
        .bind(&due.transfer_id)
        .bind(&due.delivery)
        .bind(i64::from(due.attempts) + 1)
        .bind(code)
        .bind(now_micros)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox WHERE seq = $1")
            .bind(due.seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE transfer SET state = $3, attempts = attempts + 1, last_error = $4 \
             WHERE sender = $1 AND transfer_id = $2 AND state < $5",
        )
        .bind(&due.sender)
        .bind(&due.transfer_id)
        .bind(i64::from(TransferState::DeadLettered.code()))
        .bind(code)
        .bind(i64::from(TransferState::Delivered.code()))
        .execute(&mut *tx)
        .await?;
        if let Some(notice) = notice {
            sqlx::query(
                "INSERT INTO outbox (recipient, sender, transfer_id, delivery, next_attempt_micros, queued_micros) \
                 VALUES ($1, 'gateway', $2, $3, $4, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&due.sender)
            .bind(&notice.id)
            .bind(&notice.delivery)
            .bind(now_micros)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The dead letters, oldest first, at most `limit`.
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT sender, transfer_id, recipient, error_code, attempts, dead_micros, length(delivery) \
             FROM dead_letter ORDER BY dead_micros, seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(dead_letter_row).collect())
    }

    /// The dead letter of (sender, transfer id), if there is one.
    pub async fn dead_letter_of(&self, sender: &str, transfer_id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        let row = sqlx::query(
            "SELECT sender, transfer_id, recipient, error_code, attempts, dead_micros, length(delivery) \
             FROM dead_letter WHERE sender = $1 AND transfer_id = $2",
        )
        .bind(sender)
        .bind(transfer_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(dead_letter_row))
    }

    /// Puts a dead letter back at the end of the outbox, due now; its transfer is QUEUED again.
    pub async fn retry_dead_letter(
        &self,
        sender: &str,
        transfer_id: &str,
        now_micros: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let moved = sqlx::query(
            "INSERT INTO outbox (recipient, sender, transfer_id, delivery, next_attempt_micros, queued_micros) \
             SELECT recipient, sender, transfer_id, delivery, $3, $3 FROM dead_letter WHERE sender = $1 AND transfer_id = $2",
        )
        .bind(sender)
        .bind(transfer_id)
        .bind(now_micros)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM dead_letter WHERE sender = $1 AND transfer_id = $2")
            .bind(sender)
            .bind(transfer_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE transfer SET state = $3 WHERE sender = $1 AND transfer_id = $2 AND state = $4")
            .bind(sender)
            .bind(transfer_id)
            .bind(i64::from(TransferState::Queued.code()))
            .bind(i64::from(TransferState::DeadLettered.code()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(moved > 0)
    }

    /// Removes a dead letter for good (its transfer stays DEAD_LETTERED).
    pub async fn drop_dead_letter(&self, sender: &str, transfer_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM dead_letter WHERE sender = $1 AND transfer_id = $2")
            .bind(sender)
            .bind(transfer_id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(done > 0)
    }
}

fn dead_letter_row(r: sqlx::any::AnyRow) -> DeadLetterRow {
    DeadLetterRow {
        sender: r.get(0),
        transfer_id: r.get(1),
        recipient: r.get(2),
        error_code: r.get(3),
        attempts: u32::try_from(r.get::<i64, _>(4)).unwrap_or(u32::MAX),
        dead_micros: r.get(5),
        size_bytes: u64::try_from(r.get::<i64, _>(6)).unwrap_or(0),
    }
}
