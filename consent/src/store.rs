//! The registry's database, SQLite or PostgreSQL through sqlx's `Any` driver
//! (one set of queries, `$n` placeholders, which both accept; one migration
//! folder per dialect).
//!
//! Consent versions are append-only (the schema's triggers refuse changes);
//! a change or a revocation is a new version. No cache: every lookup reads
//! the committed state, so a revocation holds for every lookup that starts
//! after the revoke call returned.
//!
//! A version may be recorded *held* (`consent_held`): written, but not in
//! force until the gateway has logged it and activates it. Every read sees a
//! consent at its *effective* version — the newest that is not a held new
//! consent or new version; a held revocation is effective at once.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

use crate::model::{Consent, Micros, Revocation};

/// A store operation failed. Messages never contain a pseudonym.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (retryable).
    #[error("consent database: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("consent database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No such consent.
    #[error("no consent with this id")]
    NotFound,
    /// The consent belongs to another person.
    #[error("the consent concerns another person")]
    PersonMismatch,
    /// The consent is revoked or expired: it cannot change any more.
    #[error("the consent is no longer active (revoked or expired); record a new one")]
    NotActive,
    /// Another change of the same consent won the race; retry.
    #[error("the consent was changed concurrently; retry")]
    Conflict,
    /// A stored row does not decode.
    #[error("a stored consent does not decode: {0}")]
    Corrupt(String),
}

/// A revocation or expiry, from the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Feed position.
    pub sequence: u64,
    /// The consent.
    pub consent_id: String,
    /// The version revoked or expired.
    pub version: u32,
    /// `revoked` or `expired`.
    pub kind: String,
    /// When.
    pub at: Micros,
    /// The institutions covered.
    pub institutions: Vec<String>,
}

/// A person as the registry knows them: its own domain pseudonym.
pub type Person = [u8; 32];

/// What the gateway gives with a change it will log before activating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The audit log's size when the gateway asked.
    pub log_size: u64,
    /// The gateway's entry for the change, without the version (opaque here).
    pub entry_draft: Vec<u8>,
}

/// A change still held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldChange {
    /// The consent.
    pub consent_id: String,
    /// The held version.
    pub version: u32,
    /// What the gateway gave.
    pub held: Held,
    /// When it was recorded.
    pub at: Micros,
}

/// The newest version of consent `v.consent_id` that is in force: a held version counts only
/// if it revokes. Used by every read, so a held new consent or new version is invisible.
const EFFECTIVE: &str = "(SELECT MAX(w.version) FROM consent_version w WHERE w.consent_id = v.consent_id \
     AND (w.revoked = 1 OR NOT EXISTS (SELECT 1 FROM consent_held h \
     WHERE h.consent_id = w.consent_id AND h.version = w.version)))";

/// The registry's store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation() || d.message().contains("database is locked"))
}

/// How long after a one-off consent was marked used the same transfer may rely on it again
/// (the gateway's retry after a failure between the mark and its own record).
pub const RETRY_WINDOW_MICROS: Micros = 24 * 3600 * 1_000_000;

/// Whether `transfer` at `now` is a retry of `owner`, which used a one-off consent at `used_at`.
pub fn is_retry_of(owner: &str, used_at: Micros, transfer: &str, now: Micros) -> bool {
    !transfer.is_empty() && owner == transfer && now.saturating_sub(used_at) <= RETRY_WINDOW_MICROS
}

/// The format of a consent version's `body` that this release writes.
const BODY_VERSION: i64 = 1;

/// A consent version as stored: its `body` decoded by the decoder of its `body_version`.
/// INVARIANT (rows-readable-forever): a body version, once written, keeps its decoder.
fn consent_of(row: &sqlx::any::AnyRow) -> Result<Consent, StoreError> {
    let body: String = row.try_get("body")?;
    match row.try_get::<i64, _>("body_version")? {
        1 => serde_json::from_str::<row::ConsentV1>(&body)
            .map(Consent::from)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
        other => Err(StoreError::Corrupt(format!(
            "consent body version {other} is newer than this release"
        ))),
    }
}

fn encode(consent: &Consent) -> Result<String, StoreError> {
    serde_json::to_string(&row::ConsentV1::from(consent)).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn new_id() -> Result<String, StoreError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Corrupt("random generator failed".into()))?;
    Ok(format!(
        "c-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

impl Store {
    /// Opens `sqlite:PATH` (created if missing) or `postgres://…`, and migrates it.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = cii_kit::config::any_store_url(url).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            // Closed rather than reused when handed back inside a transaction (see the
            // gateway's operational store: a statement failed on a full disk).
            .after_release(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Durable commits, concurrent readers, and waiting instead of failing on a busy file.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if sqlite {
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        Ok(Store { pool })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Records `consent` for `person`: a new consent (empty id) or the next
    /// version of an active one of the same person. Returns it as stored.
    /// With `held`, the version is recorded held (see the module's documentation).
    pub async fn record(
        &self,
        person: &Person,
        mut consent: Consent,
        now: Micros,
        held: Option<&Held>,
    ) -> Result<Consent, StoreError> {
        let mut tx = self.pool.begin().await?;
        if consent.id.is_empty() {
            consent.id = new_id()?;
            consent.version = 1;
        } else {
            let (owner, latest) = latest_in(&mut tx, &consent.id).await?.ok_or(StoreError::NotFound)?;
            if owner != *person {
                return Err(StoreError::PersonMismatch);
            }
            if latest.revocation.is_some() || now > latest.valid_until {
                return Err(StoreError::NotActive);
            }
            consent.version = next_version(&mut tx, &consent.id).await?;
        }
        consent.recorded_at = now;
        consent.revocation = None;
        insert_version(&mut tx, person, &consent).await?;
        if let Some(held) = held {
            insert_held(&mut tx, &consent, held, now).await?;
        }
        tx.commit().await.map_err(conflict)?;
        Ok(consent)
    }

    /// Revokes the consent `id`: a new version carrying the revocation, and a change in the feed.
    /// With `held`, the revocation is recorded held: in force at once, activated once logged.
    pub async fn revoke(&self, id: &str, revocation: Revocation, held: Option<&Held>) -> Result<Consent, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (person, mut consent) = latest_in(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        if consent.revocation.is_some() {
            return Err(StoreError::NotActive);
        }
        // After every version written, a held one included: a person can revoke while a new
        // version waits to be logged.
        consent.version = next_version(&mut tx, id).await?;
        consent.recorded_at = revocation.at;
        consent.recorded_by = revocation.institution.clone();
        consent.recorded_by_user = revocation.user.clone();
        consent.revocation = Some(revocation);
        insert_version(&mut tx, &person, &consent).await?;
        insert_change(&mut tx, &consent, "revoked", consent.recorded_at).await?;
        if let Some(held) = held {
            let at = consent.recorded_at;
            insert_held(&mut tx, &consent, held, at).await?;
        }
        tx.commit().await.map_err(conflict)?;
        Ok(consent)
    }

    /// Activates a held change; false if it was not held (any more).
    pub async fn activate(&self, id: &str, version: u32) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM consent_held WHERE consent_id = $1 AND version = $2")
            .bind(id)
            .bind(i64::from(version))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The changes still held, oldest first, at most `limit`.
    pub async fn held(&self, limit: u32) -> Result<Vec<HeldChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT consent_id, version, log_size, entry_draft, held_micros FROM consent_held \
             ORDER BY held_micros, consent_id, version LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HeldChange {
                    consent_id: r.try_get("consent_id")?,
                    version: u32::try_from(r.try_get::<i64, _>("version")?).unwrap_or(0),
                    held: Held {
                        log_size: u64::try_from(r.try_get::<i64, _>("log_size")?).unwrap_or(0),
                        entry_draft: r.try_get("entry_draft")?,
                    },
                    at: r.try_get("held_micros")?,
                })
            })
            .collect()
    }

    /// Every version of consent `id`, oldest first, with its person.
    pub async fn history(&self, id: &str) -> Result<Option<(Person, Vec<Consent>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.person, v.body, v.body_version FROM consent_version v WHERE v.consent_id = $1 \
             AND v.version <= COALESCE((SELECT MAX(x.version) FROM consent_version x WHERE x.consent_id = $1 \
             AND (x.revoked = 1 OR NOT EXISTS (SELECT 1 FROM consent_held h \
             WHERE h.consent_id = x.consent_id AND h.version = x.version))), 0) ORDER BY v.version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut person = None;
        let mut versions = Vec::new();
        for row in rows {
            person = Some(person_of(&row)?);
            versions.push(consent_of(&row)?);
        }
        Ok(person.map(|p| (p, versions)))
    }

    /// The newest version of every consent of `person`.
    pub async fn for_person(&self, person: &Person) -> Result<Vec<Consent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT v.body, v.body_version FROM consent_version v WHERE v.person = $1 \
             AND v.version = {EFFECTIVE} \
             ORDER BY v.consent_id"
        ))
        .bind(person.to_vec())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(consent_of).collect()
    }

    /// Of `ids`, the one-off consents already used, each with the transfer
    /// (`sender/transfer_id`) that used it and when.
    pub async fn used(
        &self,
        ids: &[String],
    ) -> Result<std::collections::BTreeMap<String, (String, Micros)>, StoreError> {
        let mut used = std::collections::BTreeMap::new();
        for id in ids {
            let row = sqlx::query("SELECT transfer, used_at_micros FROM consent_used WHERE consent_id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = row {
                used.insert(
                    id.clone(),
                    (row.try_get::<String, _>("transfer")?, row.try_get("used_at_micros")?),
                );
            }
        }
        Ok(used)
    }

    /// Marks the one-off consent `id` (at `version`, its newest, active at `now`) used by
    /// `transfer`. `Ok(false)` if another transfer used it already; marking it again for
    /// the same transfer within [`RETRY_WINDOW_MICROS`] is `Ok(true)`, so the gateway's retry
    /// of a transfer whose record failed after the mark is not refused.
    pub async fn mark_used(&self, id: &str, version: u32, transfer: &str, now: Micros) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (_, latest) = latest_in(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        if latest.version != version
            || latest.status(now) != crate::model::Status::Active
            || latest.recurrence != crate::model::Recurrence::OneOff
        {
            return Err(StoreError::NotActive);
        }
        sqlx::query(
            "INSERT INTO consent_used (consent_id, version, used_at_micros, transfer) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consent_id) DO NOTHING",
        )
        .bind(id)
        .bind(i64::from(version))
        .bind(now)
        .bind(transfer)
        .execute(&mut *tx)
        .await?;
        // INVARIANT (one-off-once): whoever inserted first owns the consent; a retry of the
        // owner is not a second use, but only shortly after the mark: the gateway forgets
        // settled transfers after the retention period, and an id it forgot must not use the
        // consent again.
        let row = sqlx::query("SELECT transfer, used_at_micros FROM consent_used WHERE consent_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let (owner, used_at): (String, Micros) = (row.try_get("transfer")?, row.try_get("used_at_micros")?);
        tx.commit().await.map_err(conflict)?;
        Ok(is_retry_of(&owner, used_at, transfer, now))
    }

    /// The newest versions, not revoked, whose validity ends in `from..=until`.
    pub async fn expiring(&self, from: Micros, until: Micros) -> Result<Vec<Consent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT v.body, v.body_version FROM consent_version v WHERE v.revoked = 0 \
             AND v.valid_until_micros >= $1 AND v.valid_until_micros <= $2 \
             AND v.version = {EFFECTIVE} \
             ORDER BY v.valid_until_micros, v.consent_id"
        ))
        .bind(from)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(consent_of).collect()
    }

    /// Declares that `institution` serves `person` in `capacity` from `since`.
    /// Returns false if that relationship was already open (nothing changes).
    pub async fn declare(
        &self,
        person: &Person,
        institution: &str,
        capacity: &str,
        since: Micros,
        user: &str,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO relationship (person, institution, capacity, since_micros, declared_by_user) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(person.to_vec())
        .bind(institution)
        .bind(capacity)
        .bind(since)
        .bind(user)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends the open relationship; false if there was none.
    pub async fn end(
        &self,
        person: &Person,
        institution: &str,
        capacity: &str,
        until: Micros,
        user: &str,
    ) -> Result<bool, StoreError> {
        let ended = sqlx::query(
            "UPDATE relationship SET until_micros = $1, ended_by_user = $2 \
             WHERE person = $3 AND institution = $4 AND capacity = $5 AND until_micros IS NULL",
        )
        .bind(until)
        .bind(user)
        .bind(person.to_vec())
        .bind(institution)
        .bind(capacity)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(ended > 0)
    }

    /// Whether `institution` serves `person` (in any capacity) at `at`.
    pub async fn serves(&self, person: &Person, institution: &str, at: Micros) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM relationship WHERE person = $1 AND institution = $2 \
             AND since_micros <= $3 AND (until_micros IS NULL OR until_micros > $3) LIMIT 1",
        )
        .bind(person.to_vec())
        .bind(institution)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// The capacities in which `institution` serves `person` at `at`, sorted, each once.
    pub async fn capacities(&self, person: &Person, institution: &str, at: Micros) -> Result<Vec<String>, StoreError> {
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT capacity FROM relationship WHERE person = $1 AND institution = $2 \
             AND since_micros <= $3 AND (until_micros IS NULL OR until_micros > $3) ORDER BY capacity",
        )
        .bind(person.to_vec())
        .bind(institution)
        .bind(at)
        .fetch_all(&self.pool)
        .await?;
        Ok(found)
    }

    /// Puts every consent whose period ended before `now` (and that was not
    /// revoked) into the change feed, once. Returns how many were added.
    pub async fn sweep_expired(&self, now: Micros) -> Result<usize, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT v.body, v.body_version FROM consent_version v WHERE v.revoked = 0 AND v.valid_until_micros < $1 \
             AND v.version = {EFFECTIVE} \
             AND NOT EXISTS (SELECT 1 FROM consent_change c WHERE c.consent_id = v.consent_id AND c.kind = 'expired') \
             AND NOT EXISTS (SELECT 1 FROM consent_held h WHERE h.consent_id = v.consent_id)"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut added = 0;
        for row in rows {
            let consent = consent_of(&row)?;
            let mut tx = self.pool.begin().await?;
            match insert_change(&mut tx, &consent, "expired", consent.valid_until).await {
                Ok(()) => {
                    tx.commit().await.map_err(conflict)?;
                    added += 1;
                }
                // Another sweep got there first.
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(added)
    }

    /// Changes after `after`, oldest first, at most `limit`.
    pub async fn changes(&self, after: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(
            "SELECT sequence, consent_id, version, kind, at_micros, institutions FROM consent_change \
             WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let institutions: String = r.try_get("institutions")?;
                Ok(Change {
                    sequence: u64::try_from(r.try_get::<i64, _>("sequence")?).unwrap_or(0),
                    consent_id: r.try_get("consent_id")?,
                    version: u32::try_from(r.try_get::<i64, _>("version")?).unwrap_or(0),
                    kind: r.try_get("kind")?,
                    at: r.try_get("at_micros")?,
                    institutions: serde_json::from_str(&institutions)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }
}

fn conflict(e: sqlx::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict
    } else {
        StoreError::Db(e)
    }
}

fn person_of(row: &sqlx::any::AnyRow) -> Result<Person, StoreError> {
    let bytes: Vec<u8> = row.try_get("person")?;
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("person is not 32 bytes".into()))
}

/// The number of the next version of consent `id`: after every version written, held or not.
async fn next_version(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: &str) -> Result<u32, StoreError> {
    let row = sqlx::query("SELECT MAX(version) AS newest FROM consent_version WHERE consent_id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    let newest: Option<i64> = row.try_get("newest")?;
    Ok(u32::try_from(newest.unwrap_or(0)).unwrap_or(u32::MAX).saturating_add(1))
}

/// The effective version of consent `id` (a held new version does not count, a held revocation does).
async fn latest_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
) -> Result<Option<(Person, Consent)>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT v.person, v.body, v.body_version FROM consent_version v WHERE v.consent_id = $1 AND v.version = {EFFECTIVE}"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(row) => Ok(Some((person_of(&row)?, consent_of(&row)?))),
        None => Ok(None),
    }
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    person: &Person,
    consent: &Consent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO consent_version (consent_id, version, person, revoked, valid_until_micros, recorded_at_micros, body, body_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&consent.id)
    .bind(i64::from(consent.version))
    .bind(person.to_vec())
    .bind(i64::from(consent.revocation.is_some()))
    .bind(consent.valid_until)
    .bind(consent.recorded_at)
    .bind(encode(consent)?)
    .bind(BODY_VERSION)
    .execute(&mut **tx)
    .await
    .map_err(conflict)?;
    Ok(())
}

async fn insert_held(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    consent: &Consent,
    held: &Held,
    at: Micros,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO consent_held (consent_id, version, log_size, entry_draft, held_micros) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&consent.id)
    .bind(i64::from(consent.version))
    .bind(i64::try_from(held.log_size).unwrap_or(i64::MAX))
    .bind(held.entry_draft.clone())
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(conflict)?;
    Ok(())
}

/// The change feed's lock on PostgreSQL (`pg_advisory_xact_lock`): "ciifeed".
///
/// A feed row's number is taken when it is inserted and the row becomes visible when its
/// transaction commits; two writers (two connections of one registry, or two replicas) could
/// commit out of order, and a reader (the gateway, `after` its last position) that saw the
/// later number first would never read the earlier one — a revocation notice lost. Each writer
/// takes this lock before its number and keeps it until its commit, so numbers become visible
/// in order. SQLite has one writer at a time.
pub const FEED_LOCK: i64 = 0x0063_6969_6665_6564;

async fn insert_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    consent: &Consent,
    kind: &str,
    at: Micros,
) -> Result<(), StoreError> {
    if tx.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock($1)) AS feed_lock")
            .bind(FEED_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    let institutions: Vec<&String> = consent.institutions.iter().collect();
    sqlx::query(
        "INSERT INTO consent_change (consent_id, version, kind, at_micros, institutions) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&consent.id)
    .bind(i64::from(consent.version))
    .bind(kind)
    .bind(at)
    .bind(serde_json::to_string(&institutions).map_err(|e| StoreError::Corrupt(e.to_string()))?)
    .execute(&mut **tx)
    .await
    .map_err(conflict)?;
    Ok(())
}

/// The stored form of a consent version's body (serde at the boundary; the domain
/// [`Consent`] is not serialisable). Field names and layout are the JSON that release 0.1
/// wrote: a change of the format is a new `ConsentV2`, never an edit of this one.
mod row {
    use std::collections::BTreeSet;

    use serde::{Deserialize, Serialize};

    use crate::model::{Consent, Micros, Recurrence, Revocation};

    #[derive(Serialize, Deserialize)]
    pub(super) struct ConsentV1 {
        id: String,
        version: u32,
        recorded_by: String,
        recorded_by_user: String,
        recorded_at: Micros,
        institutions: BTreeSet<String>,
        directions: BTreeSet<(String, String)>,
        categories: BTreeSet<String>,
        purposes: BTreeSet<String>,
        valid_from: Micros,
        valid_until: Micros,
        written: bool,
        evidence_sha256: Vec<u8>,
        evidence_reference: String,
        recurrence: RecurrenceV1,
        onward_transfer_allowed: bool,
        information_given: String,
        representative: String,
        language: String,
        revocation: Option<RevocationV1>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum RecurrenceV1 {
        OneOff,
        Recurring,
    }

    #[derive(Serialize, Deserialize)]
    struct RevocationV1 {
        at: Micros,
        institution: String,
        user: String,
        channel: String,
    }

    impl From<&Consent> for ConsentV1 {
        fn from(c: &Consent) -> ConsentV1 {
            let Consent {
                id,
                version,
                recorded_by,
                recorded_by_user,
                recorded_at,
                institutions,
                directions,
                categories,
                purposes,
                valid_from,
                valid_until,
                written,
                evidence_sha256,
                evidence_reference,
                recurrence,
                onward_transfer_allowed,
                information_given,
                representative,
                language,
                revocation,
            } = c.clone();
            ConsentV1 {
                id,
                version,
                recorded_by,
                recorded_by_user,
                recorded_at,
                institutions,
                directions,
                categories,
                purposes,
                valid_from,
                valid_until,
                written,
                evidence_sha256,
                evidence_reference,
                recurrence: match recurrence {
                    Recurrence::OneOff => RecurrenceV1::OneOff,
                    Recurrence::Recurring => RecurrenceV1::Recurring,
                },
                onward_transfer_allowed,
                information_given,
                representative,
                language,
                revocation: revocation.map(|r| RevocationV1 {
                    at: r.at,
                    institution: r.institution,
                    user: r.user,
                    channel: r.channel,
                }),
            }
        }
    }

    impl From<ConsentV1> for Consent {
        fn from(c: ConsentV1) -> Consent {
            let ConsentV1 {
                id,
                version,
                recorded_by,
                recorded_by_user,
                recorded_at,
                institutions,
                directions,
                categories,
                purposes,
                valid_from,
                valid_until,
                written,
                evidence_sha256,
                evidence_reference,
                recurrence,
                onward_transfer_allowed,
                information_given,
                representative,
                language,
                revocation,
            } = c;
            Consent {
                id,
                version,
                recorded_by,
                recorded_by_user,
                recorded_at,
                institutions,
                directions,
                categories,
                purposes,
                valid_from,
                valid_until,
                written,
                evidence_sha256,
                evidence_reference,
                recurrence: match recurrence {
                    RecurrenceV1::OneOff => Recurrence::OneOff,
                    RecurrenceV1::Recurring => Recurrence::Recurring,
                },
                onward_transfer_allowed,
                information_given,
                representative,
                language,
                revocation: revocation.map(|r| Revocation {
                    at: r.at,
                    institution: r.institution,
                    user: r.user,
                    channel: r.channel,
                }),
            }
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn only_the_same_transfer_shortly_after_is_a_retry() {
        let at = 1_000_000_000;
        assert!(is_retry_of("ORP-VS/t-1", at, "ORP-VS/t-1", at + 60_000_000));
        assert!(is_retry_of("ORP-VS/t-1", at, "ORP-VS/t-1", at + RETRY_WINDOW_MICROS));
        // Another transfer, an empty reference, or the same id long after (the gateway
        // forgot it after the retention period) is a second use.
        assert!(!is_retry_of("ORP-VS/t-1", at, "ORP-VS/t-2", at + 1));
        assert!(!is_retry_of("ORP-VS/t-1", at, "", at + 1));
        assert!(!is_retry_of(
            "ORP-VS/t-1",
            at,
            "ORP-VS/t-1",
            at + RETRY_WINDOW_MICROS + 1
        ));
    }
}
