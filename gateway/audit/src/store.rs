//! Where the log lives: SQLite (embedded default: WAL, `synchronous=FULL`)
//! or PostgreSQL, through sqlx. A database of its own, apart from the
//! gateway's operational tables (nLPD ordinance art. 4).
//!
//! One batch of entries and the checkpoint that covers it are written in one
//! transaction: after a crash the store holds either both or neither.

use std::str::FromStr;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

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
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Index.
    pub index: u64,
    /// Stored leaf hash.
    pub leaf_hash: Vec<u8>,
    /// Canonical entry bytes.
    pub entry: Vec<u8>,
}

/// The audit store.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite file.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

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
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(!read_only)
                .read_only(read_only)
                .journal_mode(SqliteJournalMode::Wal)
                // INVARIANT (log-before-deliver): a commit is on disk before it is acknowledged.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(std::time::Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?;
            if !read_only {
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            }
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
            if read_only {
                sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                    .execute(&pool)
                    .await?;
            } else {
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
            }
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::Url)
        }
    }

    /// Appends a batch and its covering checkpoint in one transaction.
    pub async fn append(&self, rows: &[(u64, Hash, Vec<u8>)], checkpoint: (u64, &str)) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                // SQLite allows 32766 variables per statement: 3 per row, in chunks.
                for chunk in rows.chunks(1000) {
                    let mut sql = String::from("INSERT INTO audit_entry (idx, leaf_hash, entry) VALUES ");
                    sql.push_str(&vec!["(?, ?, ?)"; chunk.len()].join(", "));
                    let mut q = sqlx::query(&sql);
                    for (idx, leaf, entry) in chunk {
                        q = q.bind(to_i64(*idx)).bind(&leaf[..]).bind(&entry[..]);
                    }
                    q.execute(&mut *tx).await?;
                }
                sqlx::query("INSERT INTO audit_checkpoint (tree_size, note) VALUES (?, ?)")
                    .bind(to_i64(checkpoint.0))
                    .bind(checkpoint.1)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let idx: Vec<i64> = rows.iter().map(|r| to_i64(r.0)).collect();
                let leaves: Vec<Vec<u8>> = rows.iter().map(|r| r.1.to_vec()).collect();
                let entries: Vec<Vec<u8>> = rows.iter().map(|r| r.2.clone()).collect();
                sqlx::query("INSERT INTO audit_entry (idx, leaf_hash, entry) SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[])")
                    .bind(&idx)
                    .bind(&leaves)
                    .bind(&entries)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO audit_checkpoint (tree_size, note) VALUES ($1, $2)")
                    .bind(to_i64(checkpoint.0))
                    .bind(checkpoint.1)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Entries with `index >= from`, at most `limit`, in index order.
    pub async fn entries(&self, from: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        let rows = match self {
            Store::Sqlite(pool) => {
                sqlx::query("SELECT idx, leaf_hash, entry FROM audit_entry WHERE idx >= ? ORDER BY idx LIMIT ?")
                    .bind(to_i64(from))
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .map(|r| {
                        (
                            r.try_get::<i64, _>(0),
                            r.try_get::<Vec<u8>, _>(1),
                            r.try_get::<Vec<u8>, _>(2),
                        )
                    })
                    .collect::<Vec<_>>()
            }
            Store::Postgres(pool) => {
                sqlx::query("SELECT idx, leaf_hash, entry FROM audit_entry WHERE idx >= $1 ORDER BY idx LIMIT $2")
                    .bind(to_i64(from))
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .map(|r| {
                        (
                            r.try_get::<i64, _>(0),
                            r.try_get::<Vec<u8>, _>(1),
                            r.try_get::<Vec<u8>, _>(2),
                        )
                    })
                    .collect()
            }
        };
        rows.into_iter()
            .map(|(idx, leaf, entry)| {
                let index = u64::try_from(idx?).map_err(|_| StoreError::Row(from))?;
                Ok(StoredEntry {
                    index,
                    leaf_hash: leaf?,
                    entry: entry?,
                })
            })
            .collect()
    }

    /// Every stored leaf hash, in index order (to rebuild the tree at start).
    pub async fn leaf_hashes(&self) -> Result<Vec<Hash>, StoreError> {
        let mut out = Vec::new();
        loop {
            let batch = self.entries(out.len() as u64, 50_000).await?;
            if batch.is_empty() {
                return Ok(out);
            }
            for e in batch {
                if e.index != out.len() as u64 {
                    return Err(StoreError::Row(out.len() as u64));
                }
                out.push(e.leaf_hash.try_into().map_err(|_| StoreError::Row(e.index))?);
            }
        }
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
