//! Where the log lives: SQLite (embedded default: WAL, `synchronous=FULL`)
//! or PostgreSQL, through sqlx. A database of its own, apart from the
//! gateway's operational tables (nLPD ordinance art. 4).
//!
//! One batch of entries and the checkpoint that covers it are written in one
//! transaction: after a crash the store holds either both or neither.

use std::str::FromStr;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::body;
use crate::merkle::Hash;

/// A storage failure. Retryable from the caller's point of view: nothing was appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL is not `sqlite:…` or `postgres://…`.
    #[error("audit store url must start with sqlite: or postgres://")]
    Url,
    /// The database failed.
    #[error("audit store: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("audit store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row is not well-formed.
    #[error("audit store row at index {0} is malformed")]
    Row(u64),
    /// An entry's period was destroyed by retention: nothing can be sealed under it.
    #[error("audit period {0} has expired: no entry can be written into it")]
    PeriodExpired(String),
    /// The system's random source failed.
    #[error("audit store: no randomness for sealing")]
    Random,
    /// This sequencer's lease is not held (any more): another replica sequences the log, or
    /// may. Nothing was appended.
    #[error("audit store: this gateway no longer holds the sequencer's lease (epoch {0}); nothing was appended")]
    LeaseLost(i64),
    /// Leases are for a PostgreSQL log that several replicas share; SQLite has one process.
    #[error("audit store: a sequencer lease needs PostgreSQL")]
    NoLease,
}

/// An entry to append: canonical bytes, their leaf hash, and the time that picks its period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Index.
    pub index: u64,
    /// SHA-256(0x00 ‖ bytes).
    pub leaf_hash: Hash,
    /// Canonical entry bytes.
    pub bytes: Vec<u8>,
    /// The entry's time (its period's key seals it).
    pub time_micros: i64,
}

/// An entry as written: its body sealed under its period's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntry {
    /// Index.
    pub index: u64,
    /// SHA-256(0x00 ‖ canonical bytes).
    pub leaf_hash: Hash,
    /// `YYYY-MM`.
    pub period: String,
    /// `nonce ‖ ciphertext ‖ tag` (see [`crate::body`]).
    pub body: Vec<u8>,
}

/// A stored entry's body as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The canonical entry bytes (not yet checked against the leaf hash).
    Readable(Vec<u8>),
    /// Retention destroyed the key of this period: only the leaf hash remains.
    Expired {
        /// `YYYY-MM`.
        period: String,
    },
    /// The body cannot be read although it should be: the log is damaged.
    Unreadable(String),
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Index.
    pub index: u64,
    /// Stored leaf hash.
    pub leaf_hash: Vec<u8>,
    /// The body.
    pub body: Body,
}

impl StoredEntry {
    /// The canonical entry bytes, if the body is readable.
    pub fn readable(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Readable(bytes) => Some(bytes),
            Body::Expired { .. } | Body::Unreadable(_) => None,
        }
    }
}

/// A retention period of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// `YYYY-MM`.
    pub period: String,
    /// When its key was destroyed, if it was.
    pub destroyed_micros: Option<i64>,
    /// Entries sealed under it.
    pub entries: u64,
}

/// A stored subtree hash: the perfect subtree `index` at `level` (a multiple of 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Its level (leaves are level 0).
    pub level: u32,
    /// Its index at that level.
    pub index: u64,
    /// Its hash.
    pub hash: Hash,
}

/// The audit store.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite file.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// The SQLSTATE `audit_fence` raises when the sequencer's lease is not held (migration 0007).
const FENCE_SQLSTATE: &str = "CIIL1";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the store at `url` and applies migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::connect(url, false).await
    }

    /// Opens an existing store read-only (verification commands).
    pub async fn open_read_only(url: &str) -> Result<Store, StoreError> {
        Store::connect(url, true).await
    }

    async fn connect(url: &str, read_only: bool) -> Result<Store, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest).split('?').next().unwrap_or("");
            if !read_only
                && !path.is_empty()
                && path != ":memory:"
                && let Some(parent) = std::path::Path::new(path)
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
            }
            if !read_only && !path.is_empty() && path != ":memory:" {
                private_file(std::path::Path::new(path)).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(!read_only)
                .read_only(read_only)
                .journal_mode(SqliteJournalMode::Wal)
                // INVARIANT (log-before-deliver): a commit is on disk before it is acknowledged.
                .synchronous(SqliteSynchronous::Full)
                // Destroyed body keys are overwritten in the file, not only unlinked from the tree.
                .pragma("secure_delete", "on")
                .busy_timeout(std::time::Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                // Closed rather than reused when handed back inside a transaction (see the
                // gateway's operational store: a statement failed on a full disk).
                .after_release(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
                .connect_with(options)
                .await?;
            if !read_only {
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            }
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                // A session cut off in the middle of a transaction (a frozen or half-open
                // replica) would keep its locks — among them the fence's hold on the lease row,
                // blocking every takeover —: the server ends it.
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::Executor::execute(&mut *conn, "SET idle_in_transaction_session_timeout = '30s'").await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            if read_only {
                sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                    .execute(&pool)
                    .await?;
            } else {
                let migrator = sqlx::migrate!("migrations/postgres");
                // A service role that may not create tables opens a log its owner migrated.
                if !postgres_migrated(&pool, &migrator).await? {
                    migrator.run(&pool).await?;
                }
            }
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::Url)
        }
    }

    /// Appends a batch and its covering checkpoint in one transaction, each
    /// body sealed under its period's key (created with the period's first entry).
    /// `nodes` are the perfect subtrees the batch completes at the stored levels (see
    /// [`crate::subtrees`]), written in the same transaction.
    pub async fn append(&self, rows: &[NewEntry], nodes: &[Node], checkpoint: (u64, &str)) -> Result<(), StoreError> {
        self.append_fenced(rows, nodes, checkpoint, None, &[]).await
    }

    /// [`Store::append`], on PostgreSQL refused with [`StoreError::LeaseLost`] unless the
    /// sequencer's lease of `epoch` is held while the batch commits (see
    /// [`crate::lease`]). SQLite has no lease (one process). `queued` pairs the rows of the
    /// append queue the batch integrates with their indices ([`crate::queue`]; with a lease
    /// only): they are marked in the same statement, which fails unless each was waiting.
    pub async fn append_fenced(
        &self,
        rows: &[NewEntry],
        nodes: &[Node],
        checkpoint: (u64, &str),
        epoch: Option<i64>,
        queued: &[(i64, u64)],
    ) -> Result<(), StoreError> {
        let mut keys = std::collections::BTreeMap::new();
        for row in rows {
            keys.entry(body::period_of(row.time_micros)).or_insert(None);
        }
        match self {
            Store::Sqlite(_) if !queued.is_empty() => return Err(StoreError::NoLease),
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for (period, key) in &mut keys {
                    *key = Some(sqlite_period_key(&mut tx, period).await?);
                }
                let sealed = seal_all(rows, &keys)?;
                sqlite_insert(&mut tx, &sealed, checkpoint).await?;
                sqlite_nodes(&mut tx, nodes).await?;
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                for (period, key) in &mut keys {
                    *key = Some(postgres_period_key(pool, period).await?);
                }
                let sealed = seal_all(rows, &keys)?;
                postgres_append(pool, &sealed, nodes, checkpoint, (epoch, queued))
                    .await
                    .map_err(|e| match (e, epoch) {
                        (StoreError::Db(sqlx::Error::Database(db)), Some(epoch))
                            if db.code().as_deref() == Some(FENCE_SQLSTATE) =>
                        {
                            StoreError::LeaseLost(epoch)
                        }
                        (e, _) => e,
                    })?;
            }
        }
        Ok(())
    }

    /// Inserts entries already sealed, and a checkpoint, in one transaction:
    /// the bare write that [`Store::append`] adds the keys and the sealing to
    /// (the benchmark's baseline).
    pub async fn insert_sealed(&self, rows: &[SealedEntry], checkpoint: (u64, &str)) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                sqlite_insert(&mut tx, rows, checkpoint).await?;
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                postgres_insert(&mut tx, rows, checkpoint).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Entries with `index >= from`, at most `limit`, in index order, their
    /// bodies opened where their period's key still exists.
    pub async fn entries(&self, from: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        const SELECT: &str = "SELECT e.idx, e.leaf_hash, e.entry, e.period, k.period, k.key \
             FROM audit_entry e LEFT JOIN audit_body_key k ON k.period = e.period";
        type Raw = (i64, Vec<u8>, Vec<u8>, Option<String>, Option<String>, Option<Vec<u8>>);
        let rows: Vec<Raw> = match self {
            Store::Sqlite(pool) => {
                sqlx::query_as(&format!("{SELECT} WHERE e.idx >= ? ORDER BY e.idx LIMIT ?"))
                    .bind(to_i64(from))
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?
            }
            Store::Postgres(pool) => {
                sqlx::query_as(&format!("{SELECT} WHERE e.idx >= $1 ORDER BY e.idx LIMIT $2"))
                    .bind(to_i64(from))
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?
            }
        };
        rows.into_iter()
            .map(|(idx, leaf_hash, stored, period, key_row, key)| {
                let index = u64::try_from(idx).map_err(|_| StoreError::Row(from))?;
                let body = match (period, key_row, key) {
                    // Written before bodies were sealed.
                    (None, _, _) => Body::Readable(stored),
                    (Some(period), None, _) => Body::Unreadable(format!("the key of period {period} is missing")),
                    (Some(period), Some(_), None) => Body::Expired { period },
                    (Some(period), Some(_), Some(key)) => match body::open(&key, &period, index, &stored) {
                        Some(plain) => Body::Readable(plain),
                        None => Body::Unreadable(format!("the body does not open under the key of period {period}")),
                    },
                };
                Ok(StoredEntry { index, leaf_hash, body })
            })
            .collect()
    }

    /// The canonical bytes of the entry at `index`, if stored and readable.
    pub async fn entry_bytes(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .entries(index, 1)
            .await?
            .into_iter()
            .find(|e| e.index == index)
            .and_then(|e| e.readable().map(<[u8]>::to_vec)))
    }

    /// Every stored leaf hash, in index order (to rebuild the tree at start).
    pub async fn leaf_hashes(&self) -> Result<Vec<Hash>, StoreError> {
        let mut out: Vec<Hash> = Vec::new();
        loop {
            let from = to_i64(out.len() as u64);
            let batch: Vec<(i64, Vec<u8>)> = match self {
                Store::Sqlite(pool) => {
                    sqlx::query_as("SELECT idx, leaf_hash FROM audit_entry WHERE idx >= ? ORDER BY idx LIMIT 50000")
                        .bind(from)
                        .fetch_all(pool)
                        .await?
                }
                Store::Postgres(pool) => {
                    sqlx::query_as("SELECT idx, leaf_hash FROM audit_entry WHERE idx >= $1 ORDER BY idx LIMIT 50000")
                        .bind(from)
                        .fetch_all(pool)
                        .await?
                }
            };
            if batch.is_empty() {
                return Ok(out);
            }
            for (idx, leaf) in batch {
                let expected = out.len() as u64;
                if u64::try_from(idx).ok() != Some(expected) {
                    return Err(StoreError::Row(expected));
                }
                out.push(leaf.try_into().map_err(|_| StoreError::Row(expected))?);
            }
        }
    }

    /// The number of entries (one past the highest index; 0 for an empty log).
    pub async fn size(&self) -> Result<u64, StoreError> {
        const SELECT: &str = "SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entry";
        let size: i64 = match self {
            Store::Sqlite(pool) => sqlx::query_scalar(SELECT).fetch_one(pool).await?,
            Store::Postgres(pool) => sqlx::query_scalar(SELECT).fetch_one(pool).await?,
        };
        Ok(u64::try_from(size).unwrap_or(0))
    }

    /// The hashes at `level` of indices `[from, to)`: leaf hashes at level 0, stored subtree
    /// hashes at the stored levels ([`crate::subtrees::STORED_EVERY`]). Every one must exist.
    pub async fn hashes(&self, level: u32, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = match (self, level) {
            (Store::Sqlite(pool), 0) => {
                sqlx::query_as("SELECT idx, leaf_hash FROM audit_entry WHERE idx >= ? AND idx < ? ORDER BY idx")
                    .bind(to_i64(from))
                    .bind(to_i64(to))
                    .fetch_all(pool)
                    .await?
            }
            (Store::Postgres(pool), 0) => {
                sqlx::query_as("SELECT idx, leaf_hash FROM audit_entry WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                    .bind(to_i64(from))
                    .bind(to_i64(to))
                    .fetch_all(pool)
                    .await?
            }
            (Store::Sqlite(pool), level) => {
                sqlx::query_as("SELECT idx, hash FROM audit_node WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx")
                    .bind(i64::from(level))
                    .bind(to_i64(from))
                    .bind(to_i64(to))
                    .fetch_all(pool)
                    .await?
            }
            (Store::Postgres(pool), level) => {
                sqlx::query_as(
                    "SELECT idx, hash FROM audit_node WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
                )
                .bind(i32::try_from(level).unwrap_or(i32::MAX))
                .bind(to_i64(from))
                .bind(to_i64(to))
                .fetch_all(pool)
                .await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for (expected, (idx, hash)) in (from..to).zip(rows.iter()) {
            if u64::try_from(*idx).ok() != Some(expected) {
                return Err(StoreError::Row(expected));
            }
            out.push(hash.clone().try_into().map_err(|_| StoreError::Row(expected))?);
        }
        if out.len() as u64 != to.saturating_sub(from) {
            return Err(StoreError::Row(from + out.len() as u64));
        }
        Ok(out)
    }

    /// How many subtree hashes are stored at `level` (they are written in index order).
    pub async fn node_count(&self, level: u32) -> Result<u64, StoreError> {
        let count: i64 = match self {
            Store::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_node WHERE level = ?")
                    .bind(i64::from(level))
                    .fetch_one(pool)
                    .await?
            }
            Store::Postgres(pool) => {
                sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_node WHERE level = $1")
                    .bind(i32::try_from(level).unwrap_or(i32::MAX))
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Stores subtree hashes a log written before `audit_node` existed lacks (at its start).
    pub async fn insert_nodes(&self, nodes: &[Node]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                sqlite_nodes(&mut tx, nodes).await?;
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                postgres_nodes(&mut tx, nodes).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Every period with its key's state and its number of entries, oldest first.
    pub async fn periods(&self) -> Result<Vec<Period>, StoreError> {
        const SELECT: &str = "SELECT k.period, k.destroyed_micros, \
             (SELECT COUNT(*) FROM audit_entry e WHERE e.period = k.period) \
             FROM audit_body_key k ORDER BY k.period";
        let rows: Vec<(String, Option<i64>, i64)> = match self {
            Store::Sqlite(pool) => sqlx::query_as(SELECT).fetch_all(pool).await?,
            Store::Postgres(pool) => sqlx::query_as(SELECT).fetch_all(pool).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(period, destroyed_micros, entries)| Period {
                period,
                destroyed_micros,
                entries: u64::try_from(entries).unwrap_or(0),
            })
            .collect())
    }

    /// Destroys the keys of `periods` (retention): their bodies become
    /// unreadable for good, their leaf hashes stay. The key bytes are
    /// overwritten where the database allows it (SQLite `secure_delete` and a
    /// WAL truncation; PostgreSQL `VACUUM FULL` of the key table — its WAL
    /// archives and any backup keep them until they age out, see the DPO guide).
    pub async fn destroy_keys(&self, periods: &[String], now_micros: i64) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for period in periods {
                    sqlx::query(
                        "UPDATE audit_body_key SET key = NULL, destroyed_micros = ? WHERE period = ? AND key IS NOT NULL",
                    )
                    .bind(now_micros)
                    .bind(period)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                // Through the owner's function: the service role has no UPDATE on the keys.
                sqlx::query("SELECT audit_destroy_keys($1, $2)")
                    .bind(periods)
                    .bind(now_micros)
                    .execute(pool)
                    .await?;
            }
        }
        self.scrub_destroyed_keys().await
    }

    /// Overwrites the bytes of destroyed keys where the database allows it: SQLite truncates
    /// its WAL (`secure_delete` covers the file); PostgreSQL rewrites the key table, which only
    /// its owner may, so under a restricted service role the owner's maintenance does it.
    async fn scrub_destroyed_keys(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await?;
            }
            Store::Postgres(pool) => {
                if let Err(e) = sqlx::query("VACUUM FULL audit_body_key").execute(pool).await {
                    tracing::warn!(error = %e, "VACUUM FULL audit_body_key not run; the table's owner must run it");
                }
            }
        }
        Ok(())
    }

    /// Whether the table `name` exists (a store of an earlier release, opened read-only and so
    /// not migrated, lacks the newer ones).
    async fn has_table(&self, name: &str) -> Result<bool, StoreError> {
        Ok(match self {
            Store::Sqlite(pool) => {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
                    .bind(name)
                    .fetch_one(pool)
                    .await?;
                n > 0
            }
            Store::Postgres(pool) => {
                sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                    .bind(name)
                    .fetch_one(pool)
                    .await?
            }
        })
    }

    /// Destroys the key of `period` before it is due, recording the logged approval
    /// (`approval_index`, a SHREDDING_APPROVED entry) with it; `verify` checks the log for it.
    pub async fn destroy_early(&self, period: &str, approval_index: u64, now_micros: i64) -> Result<(), StoreError> {
        let approval = i64::try_from(approval_index).unwrap_or(i64::MAX);
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO audit_early_shredding (period, approval_index, at_micros) VALUES (?, ?, ?)")
                    .bind(period)
                    .bind(approval)
                    .bind(now_micros)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE audit_body_key SET key = NULL, destroyed_micros = ? WHERE period = ? AND key IS NOT NULL",
                )
                .bind(now_micros)
                .bind(period)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                sqlx::query("SELECT audit_shred_early($1, $2, $3)")
                    .bind(period)
                    .bind(approval)
                    .bind(now_micros)
                    .execute(pool)
                    .await?;
            }
        }
        self.scrub_destroyed_keys().await
    }

    /// The months shredded early, each with the index of the approval it names (none for a
    /// store of an earlier release, opened read-only and so not migrated).
    pub async fn early_shreddings(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        const SELECT: &str = "SELECT period, approval_index FROM audit_early_shredding";
        if !self.has_table("audit_early_shredding").await? {
            return Ok(Default::default());
        }
        let rows: Vec<(String, i64)> = match self {
            Store::Sqlite(pool) => sqlx::query_as(SELECT).fetch_all(pool).await?,
            Store::Postgres(pool) => sqlx::query_as(SELECT).fetch_all(pool).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(period, index)| (period, u64::try_from(index).unwrap_or(u64::MAX)))
            .collect())
    }

    /// The stored retention limit, if one was set (a store of an earlier release, opened
    /// read-only and so not migrated, has none).
    pub async fn retention_days(&self) -> Result<Option<u32>, StoreError> {
        const SELECT: &str = "SELECT retention_days FROM audit_retention WHERE id = 1";
        if !self.has_table("audit_retention").await? {
            return Ok(None);
        }
        let days: Option<i64> = match self {
            Store::Sqlite(pool) => sqlx::query_scalar(SELECT).fetch_optional(pool).await?,
            Store::Postgres(pool) => sqlx::query_scalar(SELECT).fetch_optional(pool).await?,
        };
        Ok(days.and_then(|d| u32::try_from(d).ok()))
    }

    /// Stores the retention limit, or lengthens the stored one; a shorter limit than the
    /// stored one is refused by the store (months would become due early).
    pub async fn set_retention_days(&self, days: u32) -> Result<(), StoreError> {
        let days = i64::from(days);
        match self {
            Store::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO audit_retention (id, retention_days) VALUES (1, ?) \
                     ON CONFLICT (id) DO UPDATE SET retention_days = excluded.retention_days",
                )
                .bind(days)
                .execute(pool)
                .await?;
            }
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO audit_retention (id, retention_days) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET retention_days = excluded.retention_days",
                )
                .bind(days)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Every checkpoint (tree size, signed note), smallest first.
    pub async fn checkpoints(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let rows: Vec<(i64, String)> = match self {
            Store::Sqlite(pool) => {
                sqlx::query_as("SELECT tree_size, note FROM audit_checkpoint ORDER BY tree_size")
                    .fetch_all(pool)
                    .await?
            }
            Store::Postgres(pool) => {
                sqlx::query_as("SELECT tree_size, note FROM audit_checkpoint ORDER BY tree_size")
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(s, n)| (u64::try_from(s).unwrap_or(0), n))
            .collect())
    }

    /// The newest checkpoint, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let row: Option<(i64, String)> = match self {
            Store::Sqlite(pool) => {
                sqlx::query_as("SELECT tree_size, note FROM audit_checkpoint ORDER BY tree_size DESC LIMIT 1")
                    .fetch_optional(pool)
                    .await?
            }
            Store::Postgres(pool) => {
                sqlx::query_as("SELECT tree_size, note FROM audit_checkpoint ORDER BY tree_size DESC LIMIT 1")
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(row.map(|(s, n)| (u64::try_from(s).unwrap_or(0), n)))
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool) => pool.close().await,
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

type Keys = std::collections::BTreeMap<String, Option<[u8; body::KEY_LEN]>>;

fn seal_all(rows: &[NewEntry], keys: &Keys) -> Result<Vec<SealedEntry>, StoreError> {
    rows.iter()
        .map(|row| {
            let period = body::period_of(row.time_micros);
            let key = keys.get(&period).copied().flatten().ok_or(StoreError::Random)?;
            Ok(SealedEntry {
                index: row.index,
                leaf_hash: row.leaf_hash,
                body: body::seal(&key, &period, row.index, &row.bytes).map_err(|_| StoreError::Random)?,
                period,
            })
        })
        .collect()
}

fn key_of(period: &str, stored: Option<Option<Vec<u8>>>) -> Result<Option<[u8; body::KEY_LEN]>, StoreError> {
    match stored {
        None => Ok(None),
        Some(None) => Err(StoreError::PeriodExpired(period.to_owned())),
        Some(Some(key)) => key.try_into().map(Some).map_err(|_| StoreError::Row(0)),
    }
}

/// The key of `period`, created if this is its first entry.
async fn sqlite_period_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    period: &str,
) -> Result<[u8; body::KEY_LEN], StoreError> {
    const SELECT: &str = "SELECT key FROM audit_body_key WHERE period = ?";
    let found: Option<Option<Vec<u8>>> = sqlx::query_scalar(SELECT)
        .bind(period)
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(key) = key_of(period, found)? {
        return Ok(key);
    }
    let key = body::new_key().map_err(|_| StoreError::Random)?;
    sqlx::query("INSERT INTO audit_body_key (period, key) VALUES (?, ?) ON CONFLICT (period) DO NOTHING")
        .bind(period)
        .bind(&key[..])
        .execute(&mut **tx)
        .await?;
    let found = sqlx::query_scalar(SELECT)
        .bind(period)
        .fetch_optional(&mut **tx)
        .await?;
    key_of(period, found)?.ok_or(StoreError::Row(0))
}

/// The key of `period`, created if this is its first entry (another replica may race: its key wins).
async fn postgres_period_key(pool: &PgPool, period: &str) -> Result<[u8; body::KEY_LEN], StoreError> {
    const SELECT: &str = "SELECT key FROM audit_body_key WHERE period = $1";
    let found: Option<Option<Vec<u8>>> = sqlx::query_scalar(SELECT).bind(period).fetch_optional(pool).await?;
    if let Some(key) = key_of(period, found)? {
        return Ok(key);
    }
    let key = body::new_key().map_err(|_| StoreError::Random)?;
    sqlx::query("INSERT INTO audit_body_key (period, key) VALUES ($1, $2) ON CONFLICT (period) DO NOTHING")
        .bind(period)
        .bind(&key[..])
        .execute(pool)
        .await?;
    let found = sqlx::query_scalar(SELECT).bind(period).fetch_optional(pool).await?;
    key_of(period, found)?.ok_or(StoreError::Row(0))
}

/// Writes a batch, its completed subtrees and its checkpoint in one statement, hence one
/// transaction and one round trip (a transaction of three statements took six: the
/// sequencer waits on each).
async fn postgres_append(
    pool: &PgPool,
    rows: &[SealedEntry],
    nodes: &[Node],
    checkpoint: (u64, &str),
    (epoch, queued): (Option<i64>, &[(i64, u64)]),
) -> Result<(), StoreError> {
    let idx: Vec<i64> = rows.iter().map(|r| to_i64(r.index)).collect();
    let leaves: Vec<&[u8]> = rows.iter().map(|r| &r.leaf_hash[..]).collect();
    let bodies: Vec<&[u8]> = rows.iter().map(|r| &r.body[..]).collect();
    let periods: Vec<&str> = rows.iter().map(|r| r.period.as_str()).collect();
    let levels: Vec<i32> = nodes
        .iter()
        .map(|n| i32::try_from(n.level).unwrap_or(i32::MAX))
        .collect();
    let node_idx: Vec<i64> = nodes.iter().map(|n| to_i64(n.index)).collect();
    let hashes: Vec<&[u8]> = nodes.iter().map(|n| &n.hash[..]).collect();
    // With a lease, every insert reads the fence (computed once, before any of them: the
    // inserts depend on it), which raises unless the lease is held and keeps its row locked
    // until this statement commits.
    const UNFENCED: &str = "WITH entries AS (INSERT INTO audit_entry (idx, leaf_hash, entry, period) \
             SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::text[])), \
         nodes AS (INSERT INTO audit_node (level, idx, hash) \
             SELECT * FROM UNNEST($5::int[], $6::bigint[], $7::bytea[])) \
         INSERT INTO audit_checkpoint (tree_size, note) VALUES ($8, $9)";
    const FENCED: &str = "WITH fence AS MATERIALIZED (SELECT audit_fence($10) AS epoch), \
         entries AS (INSERT INTO audit_entry (idx, leaf_hash, entry, period) \
             SELECT u.* FROM fence, UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::text[]) AS u), \
         nodes AS (INSERT INTO audit_node (level, idx, hash) \
             SELECT u.* FROM fence, UNNEST($5::int[], $6::bigint[], $7::bytea[]) AS u) \
         INSERT INTO audit_checkpoint (tree_size, note) SELECT $8, $9 FROM fence";
    // A batch integrated from the append queue also marks each queued row with its index
    // (failing unless every one was waiting) and tells the replicas following the log of
    // the new size (`NOTIFY`, sent at commit).
    const QUEUED: &str = "WITH fence AS MATERIALIZED (SELECT audit_fence($10) AS epoch), \
         entries AS (INSERT INTO audit_entry (idx, leaf_hash, entry, period) \
             SELECT u.* FROM fence, UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::text[]) AS u), \
         nodes AS (INSERT INTO audit_node (level, idx, hash) \
             SELECT u.* FROM fence, UNNEST($5::int[], $6::bigint[], $7::bytea[]) AS u), \
         marked AS (UPDATE audit_queue q SET idx = u.idx, entry = ''::bytea, integrated_at = clock_timestamp() \
             FROM fence, UNNEST($11::bigint[], $12::bigint[]) AS u(id, idx) \
             WHERE q.id = u.id AND q.idx IS NULL RETURNING 1), \
         checked AS MATERIALIZED (SELECT audit_dequeued((SELECT COUNT(*) FROM marked), $13) \
             AND audit_extends((SELECT COALESCE(MAX(tree_size), 0) FROM audit_checkpoint), $14) AS ok), \
         told AS MATERIALIZED (SELECT pg_notify('cii_audit_size', ($8::bigint)::text) FROM checked) \
         INSERT INTO audit_checkpoint (tree_size, note) SELECT $8, $9 FROM fence, checked, (SELECT COUNT(*) FROM told) t";

    let query = match (epoch, queued.is_empty()) {
        (None, true) => UNFENCED,
        (Some(_), true) => FENCED,
        (Some(_), false) => QUEUED,
        (None, false) => return Err(StoreError::NoLease),
    };
    let query = sqlx::query(query);
    let query = query
        .bind(&idx)
        .bind(&leaves)
        .bind(&bodies)
        .bind(&periods)
        .bind(&levels)
        .bind(&node_idx)
        .bind(&hashes)
        .bind(to_i64(checkpoint.0))
        .bind(checkpoint.1);
    let query = match epoch {
        Some(epoch) => query.bind(epoch),
        None => query,
    };
    let ids: Vec<i64> = queued.iter().map(|(id, _)| *id).collect();
    let marks: Vec<i64> = queued.iter().map(|(_, index)| to_i64(*index)).collect();
    let query = if queued.is_empty() {
        query
    } else {
        let start = rows.first().map_or(0, |r| to_i64(r.index));
        query
            .bind(ids)
            .bind(marks)
            .bind(i64::try_from(queued.len()).unwrap_or(i64::MAX))
            .bind(start)
    };
    query.execute(pool).await?;
    Ok(())
}

async fn sqlite_insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    rows: &[SealedEntry],
    checkpoint: (u64, &str),
) -> Result<(), StoreError> {
    // SQLite allows 32766 variables per statement: 4 per row, in chunks.
    for chunk in rows.chunks(1000) {
        let mut sql = String::from("INSERT INTO audit_entry (idx, leaf_hash, entry, period) VALUES ");
        sql.push_str(&vec!["(?, ?, ?, ?)"; chunk.len()].join(", "));
        let mut q = sqlx::query(&sql);
        for row in chunk {
            q = q
                .bind(to_i64(row.index))
                .bind(&row.leaf_hash[..])
                .bind(&row.body[..])
                .bind(&row.period);
        }
        q.execute(&mut **tx).await?;
    }
    sqlx::query("INSERT INTO audit_checkpoint (tree_size, note) VALUES (?, ?)")
        .bind(to_i64(checkpoint.0))
        .bind(checkpoint.1)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn sqlite_nodes(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, nodes: &[Node]) -> Result<(), StoreError> {
    for chunk in nodes.chunks(1000) {
        let mut sql = String::from("INSERT INTO audit_node (level, idx, hash) VALUES ");
        sql.push_str(&vec!["(?, ?, ?)"; chunk.len()].join(", "));
        let mut q = sqlx::query(&sql);
        for node in chunk {
            q = q
                .bind(i64::from(node.level))
                .bind(to_i64(node.index))
                .bind(&node.hash[..]);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn postgres_nodes(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, nodes: &[Node]) -> Result<(), StoreError> {
    if nodes.is_empty() {
        return Ok(());
    }
    let levels: Vec<i32> = nodes
        .iter()
        .map(|n| i32::try_from(n.level).unwrap_or(i32::MAX))
        .collect();
    let idx: Vec<i64> = nodes.iter().map(|n| to_i64(n.index)).collect();
    let hashes: Vec<Vec<u8>> = nodes.iter().map(|n| n.hash.to_vec()).collect();
    sqlx::query("INSERT INTO audit_node (level, idx, hash) SELECT * FROM UNNEST($1::int[], $2::bigint[], $3::bytea[])")
        .bind(&levels)
        .bind(&idx)
        .bind(&hashes)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn postgres_insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[SealedEntry],
    checkpoint: (u64, &str),
) -> Result<(), StoreError> {
    let idx: Vec<i64> = rows.iter().map(|r| to_i64(r.index)).collect();
    let leaves: Vec<Vec<u8>> = rows.iter().map(|r| r.leaf_hash.to_vec()).collect();
    let bodies: Vec<&[u8]> = rows.iter().map(|r| &r.body[..]).collect();
    let periods: Vec<&str> = rows.iter().map(|r| r.period.as_str()).collect();
    sqlx::query(
        "INSERT INTO audit_entry (idx, leaf_hash, entry, period) \
         SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::text[])",
    )
    .bind(&idx)
    .bind(&leaves)
    .bind(&bodies)
    .bind(&periods)
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO audit_checkpoint (tree_size, note) VALUES ($1, $2)")
        .bind(to_i64(checkpoint.0))
        .bind(checkpoint.1)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether every migration of this release is applied (then nothing needs DDL rights).
async fn postgres_migrated(pool: &PgPool, migrator: &sqlx::migrate::Migrator) -> Result<bool, StoreError> {
    let table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !table {
        return Ok(false);
    }
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await?;
    Ok(migrator.iter().all(|m| applied.contains(&m.version)))
}

/// Creates the log's file readable by this account only (0600), whatever the umask; SQLite
/// gives its `-wal` and `-shm` files the same mode. (The services' other stores get the
/// same from `cii_kit::config::prepare_sqlite_file`; this crate does not depend on the kit.)
#[cfg(unix)]
fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_file(_: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}
