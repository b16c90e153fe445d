//! The sequencer's lease, for a PostgreSQL log that several gateway replicas share: exactly one
//! of them appends at a time, the one holding the lease row (`audit_lease`, migration 0007).
//!
//! Why a row and not a session advisory lock: a lock stays with a paused process, which would
//! append its batch when it resumes. The lease expires by the database's own clock (one clock
//! for every replica), each acquisition raises its epoch, and every batch is appended with the
//! epoch it was written under in the same statement ([`crate::Store::append_fenced`]): a
//! sequencer whose lease lapsed or was taken over appends nothing more, and the one taking over
//! reads the log after the last batch the fence let through.
//!
//! Every replica that may sequence holds the checkpoint-signing key (docs/security.md).

use std::time::Duration;

use crate::store::{Store, StoreError};

/// A lease held: by whom, at which epoch, for how long each renewal lasts.
#[derive(Debug, Clone)]
pub struct Lease {
    store: Store,
    holder: String,
    epoch: i64,
    ttl: Duration,
}

/// Who holds the lease now, as the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The holder's name (empty before any acquisition).
    pub holder: String,
    /// The epoch of its acquisition.
    pub epoch: i64,
    /// Whether its time has not run out.
    pub live: bool,
}

impl Lease {
    /// The lease for `holder` (a name unique to this process: a restarted process is another
    /// holder and waits for its predecessor's lease to expire) if nobody holds it; `None` if
    /// another holder's time has not run out.
    pub async fn acquire(store: &Store, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let Store::Postgres(pool) = store else {
            return Err(StoreError::NoLease);
        };
        let epoch: Option<i64> = sqlx::query_scalar("SELECT audit_lease_acquire($1, $2)")
            .bind(holder)
            .bind(ttl.as_secs_f64())
            .fetch_one(pool)
            .await?;
        Ok(epoch.map(|epoch| Lease {
            store: store.clone(),
            holder: holder.to_owned(),
            epoch,
            ttl,
        }))
    }

    /// Prolongs the lease by its time to live; false if it is no longer held (lapsed, or taken
    /// over): the sequencer's next batch would be refused.
    pub async fn renew(&self) -> Result<bool, StoreError> {
        let Store::Postgres(pool) = &self.store else {
            return Err(StoreError::NoLease);
        };
        Ok(sqlx::query_scalar("SELECT audit_lease_renew($1, $2, $3)")
            .bind(&self.holder)
            .bind(self.epoch)
            .bind(self.ttl.as_secs_f64())
            .fetch_one(pool)
            .await?)
    }

    /// Gives the lease up at once (a clean stop), if still held.
    pub async fn release(&self) -> Result<(), StoreError> {
        let Store::Postgres(pool) = &self.store else {
            return Err(StoreError::NoLease);
        };
        sqlx::query("SELECT audit_lease_release($1, $2)")
            .bind(&self.holder)
            .bind(self.epoch)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// The epoch of this acquisition (appends carry it).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// How long a renewal lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Who holds the lease of `store`'s log now.
pub async fn state(store: &Store) -> Result<LeaseState, StoreError> {
    let Store::Postgres(pool) = store else {
        return Err(StoreError::NoLease);
    };
    let (holder, epoch, live): (String, i64, bool) =
        sqlx::query_as("SELECT holder, epoch, expires_at > clock_timestamp() FROM audit_lease WHERE id = 1")
            .fetch_one(pool)
            .await?;
    Ok(LeaseState { holder, epoch, live })
}
