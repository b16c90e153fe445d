//! The gateway's operational store (SQLite, or PostgreSQL through sqlx's `Any` driver: one
//! set of statements, written in the SQL both accept): transfers by id (idempotency and
//! state), the outbox, obligations, and which transfers relied on which consent.
//!
//! Architecture Invariant (no-plaintext-at-gateway): nothing here is personal
//! in clear. Outbox rows hold `node.v1.Delivery` messages whose content is
//! sealed to the recipient and whose person is a ciphertext for the recipient.
//! On SQLite `secure_delete` overwrites a row's bytes when it is deleted; on
//! PostgreSQL a deleted row stays in the table until VACUUM, and in the WAL and
//! backups — sealed all the same.

mod dead_letters;
mod group;
mod reviews;

pub use dead_letters::{DeadLetterRow, SenderNotice};
pub use reviews::{PendingReview, ReviewAnswer};

use std::str::FromStr;

use cii_types::TransferState;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

/// The store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("gateway database: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("gateway database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value this release cannot read.
    #[error("gateway database: {0} holds a value this release does not know")]
    Corrupt(&'static str),
    /// The group commit carrying a write failed (the database's error, shared by the group).
    #[error("gateway database: {0}")]
    Group(String),
    /// The transfer is recorded already: the same (sender, transfer id) decided by another
    /// call, on this gateway or another replica on the same database. The database's unique
    /// keys are the arbiter across replicas; the caller's retry gets the recorded outcome.
    #[error("gateway database: this sender's transfer id is recorded already")]
    Duplicate,
}

impl StoreError {
    /// A unique key refused the write.
    fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// A transfer as recorded.
#[derive(Debug, Clone)]
pub struct TransferRow {
    /// SHA-256 of the request as first submitted.
    pub request_sha256: Vec<u8>,
    /// The encoded `TransferResponse` (without provided data).
    pub response: Vec<u8>,
    /// Where it stands.
    pub state: TransferState,
    /// Delivery attempts.
    pub attempts: u32,
    /// Last delivery error code.
    pub last_error: String,
    /// A pull.
    pub pull: bool,
    /// Its audit entry is not known to be durable yet.
    pub held: bool,
    /// The user who sent it (`user@INSTITUTION`; empty if recorded by an earlier release).
    pub acting_user: String,
    /// When it was decided.
    pub created_micros: i64,
    /// A permitted pull's answer (sealed to the requester) while kept.
    pub answer: Option<Vec<u8>>,
    /// Until when the answer is kept.
    pub answer_until_micros: i64,
}

/// A transfer whose audit entry is not known to be durable (see [`Store::held`]).
#[derive(Debug, Clone)]
pub struct Held {
    /// The caller.
    pub caller: String,
    /// The transfer id.
    pub transfer_id: String,
    /// The encoded audit entry.
    pub entry: Vec<u8>,
    /// The log's size before the entry was appended.
    pub log_size_before: u64,
    /// The encoded response (without receipt).
    pub response: Vec<u8>,
    /// The encoded delivery (without receipt), for a permitted push.
    pub delivery: Option<Vec<u8>>,
}

/// What a decided transfer leaves in the store, written in one transaction.
#[derive(Debug)]
pub struct TransferRecord<'a> {
    /// The caller (the sender of a push, the requester of a pull).
    pub caller: &'a str,
    /// The caller's transfer id.
    pub transfer_id: &'a str,
    /// The acting user (`user@INSTITUTION`): the id is theirs.
    pub acting_user: &'a str,
    /// SHA-256 of the request bytes.
    pub request_sha256: &'a [u8],
    /// The counterparty.
    pub counterparty: &'a str,
    /// A pull.
    pub pull: bool,
    /// The encoded response.
    pub response: &'a [u8],
    /// Its state.
    pub state: TransferState,
    /// For a permitted push: the encoded delivery (sealed) for the outbox.
    pub delivery: Option<&'a [u8]>,
    /// The obligations the decision created.
    pub obligations: &'a [ObligationRecord],
    /// Consent ids relied on.
    pub consents: &'a [String],
    /// Now.
    pub now_micros: i64,
    /// The encoded audit entry about to be appended.
    pub entry: &'a [u8],
    /// The log's size before the append.
    pub log_size_before: u64,
}

/// An obligation created by a decision, to track until its owner fulfils it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObligationRecord {
    /// `caller:transfer_id:n`.
    pub id: String,
    /// The institution that must fulfil it.
    pub owner: String,
    /// Due, in microseconds.
    pub due_micros: i64,
    /// The encoded `common.v1.Obligation`.
    pub wire: Vec<u8>,
}

/// A delivery due for an attempt.
#[derive(Debug, Clone)]
pub struct Due {
    /// Outbox position (the order of a sender–recipient pair).
    pub seq: i64,
    /// Recipient id.
    pub recipient: String,
    /// Sender id.
    pub sender: String,
    /// Transfer id.
    pub transfer_id: String,
    /// The encoded delivery.
    pub delivery: Vec<u8>,
    /// Attempts so far.
    pub attempts: u32,
    /// When it entered the outbox (0 if queued by an earlier release and never failed since).
    pub queued_micros: i64,
}

/// An obligation as stored.
#[derive(Debug, Clone)]
pub struct ObligationRow {
    /// Encoded `common.v1.Obligation`.
    pub wire: Vec<u8>,
    /// The transfer's sender.
    pub sender: String,
    /// The transfer's recipient.
    pub recipient: String,
    /// The transfer id.
    pub transfer_id: String,
    /// Due.
    pub due_micros: i64,
    /// Fulfilled at.
    pub fulfilled_micros: Option<i64>,
}

/// The gateway's operational store.
#[derive(Debug, Clone)]
pub struct Store {
    /// Reads (SQLite in WAL mode and PostgreSQL: they never wait for the writer).
    pool: AnyPool,
    /// Every write, on one connection: writers queue here, in order, instead of
    /// contending for SQLite's lock, whose busy handler sleeps and retries and can
    /// starve one writer (the outbox worker) behind many (the senders' transfers).
    writer: AnyPool,
    /// The transfers' own writes, committed in groups on `writer`.
    group: group::Committer,
}

/// The statements recording a transfer's obligations and the consents it relied on.
fn obligations_and_consents(d: &TransferRecord<'_>) -> Vec<group::Statement> {
    use group::{Statement, Value};
    let text = |v: &str| Value::Text(v.to_owned());
    let mut out = Vec::new();
    let (sender, recipient) = if d.pull {
        (d.counterparty, d.caller)
    } else {
        (d.caller, d.counterparty)
    };
    for o in d.obligations {
        out.push(Statement::new(
            "INSERT INTO obligation (id, owner, sender, recipient, transfer_id, due_micros, wire) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                text(&o.id),
                text(&o.owner),
                text(sender),
                text(recipient),
                text(d.transfer_id),
                Value::Int(o.due_micros),
                Value::Blob(o.wire.clone()),
            ],
        ));
    }
    for consent in d.consents {
        out.push(Statement::new(
            "INSERT INTO consent_use (consent_id, sender, transfer_id, recipient) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            vec![text(consent), text(d.caller), text(d.transfer_id), text(recipient)],
        ));
    }
    out
}

/// A stored state; a value this release does not know is a corrupt row.
fn state(value: i64) -> Result<TransferState, StoreError> {
    TransferState::from_code(value).ok_or(StoreError::Corrupt("transfer.state"))
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `sqlite:PATH`, or the PostgreSQL
    /// database at `postgres://…`, and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = cii_kit::config::any_store_url(url).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        let options = AnyConnectOptions::from_str(&url)?;
        let pool_of = |connections| {
            AnyPoolOptions::new()
                .max_connections(connections)
                // A transaction whose statement failed on a full disk may have been rolled back
                // by SQLite itself; sqlx's own rollback then fails and the connection would carry
                // a transaction sqlx still counts (later transactions become savepoints of it,
                // reads see an old snapshot). A connection handed back inside a transaction is
                // closed instead (also one merely rolling back after an error: the pool opens a
                // fresh one).
                .after_release(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if !sqlite {
                            // A gateway that froze mid-transaction (paused, cut off) must not hold
                            // its row locks for ever against the gateway that took over.
                            sqlx::query("SET idle_in_transaction_session_timeout = '30s'")
                                .execute(&mut *conn)
                                .await?;
                        }
                        if sqlite {
                            // Durable commits, concurrent readers, deleted outbox rows
                            // overwritten (not left in free pages), waiting on a busy file.
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = FULL",
                                "PRAGMA secure_delete = ON",
                                "PRAGMA busy_timeout = 10000",
                            ] {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                        }
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let writer = pool_of(1).await?;
        if sqlite {
            sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        } else {
            let migrator = sqlx::migrate!("migrations/postgres");
            // A service role that may not create tables opens a store its owner migrated
            // (`cii gateway --migrate` in a Job, deploy/kubernetes/gateway.yaml).
            if !postgres_migrated(&writer, &migrator).await? {
                migrator.run(&writer).await?;
            }
        }
        let pool = pool_of(if sqlite { 4 } else { 8 }).await?;
        let group = group::Committer::start(writer.clone());
        Ok(Store { pool, writer, group })
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// The transfer `transfer_id` of `caller`, if recorded.
    pub async fn transfer(&self, caller: &str, transfer_id: &str) -> Result<Option<TransferRow>, StoreError> {
        let row = sqlx::query(
            "SELECT request_sha256, response, state, attempts, last_error, pull, held, acting_user, created_micros, \
             answer, answer_until_micros FROM transfer WHERE sender = $1 AND transfer_id = $2",
        )
        .bind(caller)
        .bind(transfer_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TransferRow {
                request_sha256: r.get(0),
                response: r.get(1),
                state: state(r.get(2))?,
                attempts: count(r.get(3)),
                last_error: r.get(4),
                pull: r.get::<i64, _>(5) != 0,
                held: r.get::<i64, _>(6) != 0,
                acting_user: r.get(7),
                created_micros: r.get(8),
                answer: r.get(9),
                answer_until_micros: r.get(10),
            })
        })
        .transpose()
    }

    /// Transfers held for their audit entry (after a crash between decision and log).
    pub async fn held(&self) -> Result<Vec<Held>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.sender, t.transfer_id, t.entry, t.log_size_before, t.response, o.delivery FROM transfer t \
             LEFT JOIN outbox o ON o.sender = t.sender AND o.transfer_id = t.transfer_id \
             WHERE t.held = 1 ORDER BY t.created_micros",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Held {
                caller: r.get(0),
                transfer_id: r.get(1),
                entry: r.get::<Option<Vec<u8>>, _>(2).unwrap_or_default(),
                log_size_before: u64::try_from(r.get::<i64, _>(3)).unwrap_or(0),
                response: r.get(4),
                delivery: r.get(5),
            })
            .collect())
    }

    /// The audit entry is durable: the transfer (with its receipt) is released for delivery.
    pub async fn release(
        &self,
        caller: &str,
        transfer_id: &str,
        response: &[u8],
        delivery: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        use group::{Statement, Value};
        let key_and = |bytes: &[u8]| {
            vec![
                Value::Text(caller.to_owned()),
                Value::Text(transfer_id.to_owned()),
                Value::Blob(bytes.to_vec()),
            ]
        };
        let mut statements = vec![Statement::new(
            "UPDATE transfer SET held = 0, entry = NULL, response = $3 WHERE sender = $1 AND transfer_id = $2",
            key_and(response),
        )];
        if let Some(delivery) = delivery {
            statements.push(Statement::new(
                "UPDATE outbox SET held = 0, delivery = $3 WHERE sender = $1 AND transfer_id = $2",
                key_and(delivery),
            ));
        }
        self.group.write(statements).await
    }

    /// Records a decided transfer with its outbox row, obligations and consent uses;
    /// [`StoreError::Duplicate`] if this sender's transfer id is recorded already.
    pub async fn record(&self, d: &TransferRecord<'_>) -> Result<(), StoreError> {
        use group::{Statement, Value};
        let text = |v: &str| Value::Text(v.to_owned());
        let mut statements = vec![Statement::new(
            "INSERT INTO transfer (sender, transfer_id, request_sha256, recipient, pull, response, state, created_micros, \
             held, entry, log_size_before, acting_user) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $11)",
            vec![
                text(d.caller),
                text(d.transfer_id),
                Value::Blob(d.request_sha256.to_vec()),
                text(d.counterparty),
                Value::Int(i64::from(d.pull)),
                Value::Blob(d.response.to_vec()),
                Value::Int(i64::from(d.state.code())),
                Value::Int(d.now_micros),
                Value::Blob(d.entry.to_vec()),
                Value::Int(i64::try_from(d.log_size_before).unwrap_or(i64::MAX)),
                text(d.acting_user),
            ],
        )];
        if let Some(delivery) = d.delivery {
            statements.push(Statement::new(
                "INSERT INTO outbox (recipient, sender, transfer_id, delivery, next_attempt_micros, held, queued_micros) \
                 VALUES ($1, $2, $3, $4, $5, 1, $5)",
                vec![
                    text(d.counterparty),
                    text(d.caller),
                    text(d.transfer_id),
                    Value::Blob(delivery.to_vec()),
                    Value::Int(d.now_micros),
                ],
            ));
        }
        statements.extend(obligations_and_consents(d));
        match self.group.write(statements).await {
            // A duplicate only if this sender's transfer id is recorded (another key, e.g. an
            // obligation id outliving its forgotten transfer, is the database's error).
            Err(e) if e.is_unique_violation() && self.transfer(d.caller, d.transfer_id).await?.is_some() => {
                Err(StoreError::Duplicate)
            }
            other => other,
        }
    }

    /// For each recipient, its due deliveries in order, at most `limit`. Order is kept per
    /// (sender, recipient) pair: a delivery is due only if no earlier one of its pair is held
    /// (not yet logged) or waiting for a retry, so a later one never overtakes it, while other
    /// senders' deliveries to the same recipient go on. The filter is in the query, before the
    /// limit: however many rows one sender holds back, the others' still come. One indexed
    /// lookup per recipient (`outbox_pair_seq`).
    pub async fn due_runs(
        &self,
        recipients: &[String],
        now_micros: i64,
        limit: u32,
    ) -> Result<Vec<Vec<Due>>, StoreError> {
        let mut runs = Vec::new();
        for recipient in recipients {
            let rows = sqlx::query(
                "SELECT seq, recipient, sender, transfer_id, delivery, attempts, queued_micros FROM outbox o \
                 WHERE recipient = $1 AND held = 0 AND next_attempt_micros <= $2 \
                 AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.recipient = o.recipient AND b.sender = o.sender \
                     AND b.seq < o.seq AND (b.held = 1 OR b.next_attempt_micros > $2)) \
                 ORDER BY seq LIMIT $3",
            )
            .bind(recipient)
            .bind(now_micros)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            let run: Vec<Due> = rows.into_iter().map(due_row).collect();
            if !run.is_empty() {
                runs.push(run);
            }
        }
        runs.sort_by_key(|run| run.first().map(|d| d.seq));
        Ok(runs)
    }

    /// A permitted pull was answered: the answer (sealed to the requester) is kept until
    /// `until_micros`, for the same request's retries.
    pub async fn provided(
        &self,
        caller: &str,
        transfer_id: &str,
        answer: &[u8],
        until_micros: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE transfer SET state = CASE WHEN state > $3 THEN state ELSE $3 END, answer = $4, answer_until_micros = $5 \
             WHERE sender = $1 AND transfer_id = $2",
        )
        .bind(caller)
        .bind(transfer_id)
        .bind(i64::from(TransferState::Delivered.code()))
        .bind(answer)
        .bind(until_micros)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Rewrites a queued delivery's bytes (a notice of an earlier release given its receipt).
    pub async fn replace_delivery(&self, seq: i64, delivery: &[u8]) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET delivery = $2 WHERE seq = $1")
            .bind(seq)
            .bind(delivery)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Forgets the pull answer kept for `sender`'s `transfer_id` (its requester has it); false
    /// if none was kept any more.
    pub async fn forget_answer(&self, sender: &str, transfer_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE transfer SET answer = NULL, answer_until_micros = 0 \
             WHERE sender = $1 AND transfer_id = $2 AND answer IS NOT NULL",
        )
        .bind(sender)
        .bind(transfer_id)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets the pull answers kept past their time (overwritten: `secure_delete`).
    pub async fn forget_answers(&self, now_micros: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE transfer SET answer = NULL WHERE answer IS NOT NULL AND answer_until_micros <= $1")
                .bind(now_micros)
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected())
    }

    /// The recipient stored these deliveries: their outbox rows go, their transfers become
    /// delivered. One transaction for all: under load the store's writes queue behind
    /// the senders', and one write per delivery would leave the outbox a small share of them.
    pub async fn delivered(&self, deliveries: &[Due]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        // Two statements per chunk, not two per delivery (each is a round trip to the
        // database); 3 variables per row stay far below SQLite's and PostgreSQL's limits.
        for chunk in deliveries.chunks(256) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let marks = marks.join(", ");
            let delete = format!("DELETE FROM outbox WHERE seq IN ({marks})");
            let mut query = sqlx::query(&delete);
            for due in chunk {
                query = query.bind(due.seq);
            }
            query.execute(&mut *tx).await?;
            let pairs: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 2, 2 * i + 3))
                .collect();
            let pairs = pairs.join(", ");
            let update = format!(
                "UPDATE transfer SET state = $1, attempts = attempts + 1, last_error = '' \
                 FROM (VALUES {pairs}) AS d \
                 WHERE transfer.sender = d.column1 AND transfer.transfer_id = d.column2 AND transfer.state < $1"
            );
            let mut query = sqlx::query(&update).bind(i64::from(TransferState::Delivered.code()));
            for due in chunk {
                query = query.bind(&due.sender).bind(&due.transfer_id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An attempt failed: try again at `next_micros`.
    pub async fn attempt_failed(&self, due: &Due, error_code: &str, next_micros: i64) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_micros = $2, \
             queued_micros = CASE WHEN queued_micros = 0 THEN $3 ELSE queued_micros END WHERE seq = $1",
        )
        .bind(due.seq)
        .bind(next_micros)
        .bind(cii_types::time::micros(time::OffsetDateTime::now_utc()))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE transfer SET attempts = attempts + 1, last_error = $3 WHERE sender = $1 AND transfer_id = $2",
        )
        .bind(&due.sender)
        .bind(&due.transfer_id)
        .bind(error_code)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The recipient acknowledged that it processed (sender, transfer id): ACKNOWLEDGED.
    pub async fn acknowledge(&self, recipient: &str, sender: &str, transfer_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE transfer SET state = $4 WHERE sender = $1 AND transfer_id = $2 AND recipient = $3 \
             AND pull = 0 AND state < $4 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.sender = $1 AND o.transfer_id = $2)",
        )
        .bind(sender)
        .bind(transfer_id)
        .bind(recipient)
        .bind(i64::from(TransferState::Acknowledged.code()))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The obligations of `owner`, oldest due first.
    pub async fn obligations(&self, owner: &str, include_fulfilled: bool) -> Result<Vec<ObligationRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT wire, sender, recipient, transfer_id, due_micros, fulfilled_micros FROM obligation \
             WHERE owner = $1 AND ($2 OR fulfilled_micros IS NULL) ORDER BY due_micros, id",
        )
        .bind(owner)
        .bind(include_fulfilled)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(obligation_row).collect())
    }

    /// The obligation `id` if `owner` owns it.
    pub async fn obligation(&self, owner: &str, id: &str) -> Result<Option<ObligationRow>, StoreError> {
        let row = sqlx::query(
            "SELECT wire, sender, recipient, transfer_id, due_micros, fulfilled_micros FROM obligation \
             WHERE owner = $1 AND id = $2",
        )
        .bind(owner)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(obligation_row))
    }

    /// Marks an obligation fulfilled; false if it already was.
    pub async fn fulfil(&self, owner: &str, id: &str, now_micros: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE obligation SET fulfilled_micros = $3 WHERE owner = $1 AND id = $2 AND fulfilled_micros IS NULL",
        )
        .bind(owner)
        .bind(id)
        .bind(now_micros)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Retention: the transfers created before `cutoff_micros` that are settled
    /// (not held, nothing left in the outbox) and the obligations fulfilled
    /// before it — counted, and deleted unless `dry_run`. The consent uses stay:
    /// a revocation must still reach whoever received data under the consent.
    pub async fn forget_before(&self, cutoff_micros: i64, dry_run: bool) -> Result<(u64, u64), StoreError> {
        const SETTLED: &str = "FROM transfer WHERE created_micros < $1 AND held = 0 AND NOT EXISTS \
             (SELECT 1 FROM outbox o WHERE o.sender = transfer.sender AND o.transfer_id = transfer.transfer_id)";
        const FULFILLED: &str = "FROM obligation WHERE fulfilled_micros IS NOT NULL AND fulfilled_micros < $1";
        let mut tx = self.writer.begin().await?;
        let mut counts = [0u64; 2];
        for (count, from) in counts.iter_mut().zip([SETTLED, FULFILLED]) {
            let sql = if dry_run {
                format!("SELECT COUNT(*) {from}")
            } else {
                format!("DELETE {from}")
            };
            *count = if dry_run {
                let n: i64 = sqlx::query_scalar(&sql).bind(cutoff_micros).fetch_one(&mut *tx).await?;
                u64::try_from(n).unwrap_or(0)
            } else {
                sqlx::query(&sql)
                    .bind(cutoff_micros)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            };
        }
        tx.commit().await?;
        Ok((counts[0], counts[1]))
    }

    /// The position in the consent registry's change feed already handled.
    pub async fn consent_feed(&self) -> Result<u64, StoreError> {
        let after: i64 = sqlx::query_scalar("SELECT after FROM consent_feed WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(after).unwrap_or(0))
    }

    /// The recipients and transfers that relied on `consent_id`, by recipient.
    pub async fn consent_uses(&self, consent_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT recipient, transfer_id FROM consent_use WHERE consent_id = $1 ORDER BY recipient, transfer_id",
        )
        .bind(consent_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Queues notices and advances the feed position, in one transaction.
    pub async fn notices(
        &self,
        notices: &[(String, String, Vec<u8>)],
        after: u64,
        now_micros: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for (recipient, id, delivery) in notices {
            sqlx::query(
                "INSERT INTO outbox (recipient, sender, transfer_id, delivery, next_attempt_micros, queued_micros) \
                 VALUES ($1, 'gateway', $2, $3, $4, $4) ON CONFLICT DO NOTHING",
            )
            .bind(recipient)
            .bind(id)
            .bind(delivery)
            .bind(now_micros)
            .execute(&mut *tx)
            .await?;
        }
        // Never backwards (a gateway that lost its lease may still finish a round).
        sqlx::query("UPDATE consent_feed SET after = CASE WHEN after < $1 THEN $1 ELSE after END WHERE id = 1")
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn due_row(r: sqlx::any::AnyRow) -> Due {
    Due {
        seq: r.get(0),
        recipient: r.get(1),
        sender: r.get(2),
        transfer_id: r.get(3),
        delivery: r.get(4),
        attempts: count(r.get(5)),
        queued_micros: r.get(6),
    }
}

fn obligation_row(r: sqlx::any::AnyRow) -> ObligationRow {
    ObligationRow {
        wire: r.get(0),
        sender: r.get(1),
        recipient: r.get(2),
        transfer_id: r.get(3),
        due_micros: r.get(4),
        fulfilled_micros: r.get(5),
    }
}

/// Whether every migration of this release is applied to a PostgreSQL store (then nothing
/// needs DDL rights).
async fn postgres_migrated(pool: &AnyPool, migrator: &sqlx::migrate::Migrator) -> Result<bool, StoreError> {
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
