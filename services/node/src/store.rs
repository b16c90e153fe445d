//! The node's own database (SQLite): the index of enrolled persons, what was sent,
//! received and published, and the witness's checkpoint.
//!
//! INVARIANT (sealed-at-rest): every payload here — sent requests, inbox items, published
//! data — is sealed under the store key like the AVS numbers, bound to its row; sent and
//! received items are forgotten after `[store] keep_days`.
//!
//! Architecture Invariant (avs-at-node-only): the AVS number exists at the
//! node only — in this store sealed with AES-256-GCM under the key from the
//! node's config (bound to the record id by the associated data, so sealed
//! values cannot be swapped between rows), and in the node process's memory.
//! Nothing is indexed by the AVS number or a hash of it: a person is found by
//! the node's domain pseudonym, which enrolment returns deterministically.

use std::str::FromStr;

use cii_pseudonym::node::LocalPseudonym;
use cii_types::AvsNumber;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Associated data prefix of a sealed AVS number (then the record id).
const AAD_PREFIX: &[u8] = b"cii/node/avs/v1\0";

/// The store failed. Messages never contain an AVS number.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("node database: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("node database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A sealed value could not be opened: wrong store key, or the row was tampered with.
    #[error("a sealed value does not open with this store key (wrong key or tampered row)")]
    Unseal,
    /// The system's random generator failed.
    #[error("random generator failed")]
    Random,
}

/// The outcome of recording an enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new person–record pair.
    New,
    /// Exactly this pair was already there.
    Existing,
    /// The record id already holds another person.
    RecordHoldsAnotherPerson,
    /// The person is already enrolled under another record id (given).
    PersonUnderOtherRecord(String),
}

/// A delivery checked and opened, ready to store in the inbox.
#[derive(Clone)]
pub struct Received {
    /// The sender (`gateway` for the gateway's notices).
    pub sender: String,
    /// The sender's transfer id (or the notice id).
    pub transfer_id: String,
    /// The encoded inbox item (sealed with the store key when stored).
    pub item: Vec<u8>,
    /// The AVS number sealed to this node, when released.
    pub identity: Option<Vec<u8>>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // INVARIANT (no-plaintext-in-logs): the item holds the opened payload.
        write!(f, "Received({}/{})", self.sender, self.transfer_id)
    }
}

impl Received {
    /// The log line of a stored delivery (ids only).
    pub fn log(&self) {
        if self.sender == "gateway" {
            tracing::info!(notice = %self.transfer_id, "notice received");
        } else {
            tracing::info!(sender = %self.sender, transfer_id = %self.transfer_id, "delivery received");
        }
    }
}

/// The node's store.
pub struct Store {
    pool: SqlitePool,
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // INVARIANT (no-secrets-in-logs): the store key is never printed.
        f.write_str("Store(..)")
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `url` with the 32-byte store key.
    pub async fn open(url: &str, key: &[u8; 32]) -> Result<Store, StoreError> {
        cii_kit::config::prepare_sqlite_file(url).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Deleted rows (forgotten items, resealed legacy payloads) are overwritten.
            .pragma("secure_delete", "on")
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // Closed rather than reused when handed back inside a transaction (see the
            // gateway's operational store: a statement failed on a full disk).
            .after_release(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| StoreError::Unseal)?;
        let store = Store {
            pool,
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        };
        store.seal_legacy_rows().await?;
        Ok(store)
    }

    fn seal(&self, record: &str, avs: &AvsNumber) -> Result<Vec<u8>, StoreError> {
        self.seal_with(aad(record), avs.expose_digits().into_bytes())
    }

    fn unseal(&self, record: &str, sealed: &[u8]) -> Result<AvsNumber, StoreError> {
        let plain = self.open_with(aad(record), sealed)?;
        let digits = std::str::from_utf8(&plain).map_err(|_| StoreError::Unseal)?;
        AvsNumber::parse(digits).map_err(|_| StoreError::Unseal)
    }

    /// `nonce ‖ AES-256-GCM(plain)` under the store key.
    fn seal_with(&self, aad: Aad<Vec<u8>>, mut data: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| StoreError::Random)?;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad, &mut data)
            .map_err(|_| StoreError::Random)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(sealed)
    }

    fn open_with(&self, aad: Aad<Vec<u8>>, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (nonce, body) = sealed.split_at_checked(NONCE_LEN).ok_or(StoreError::Unseal)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| StoreError::Unseal)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, aad, &mut body)
            .map_err(|_| StoreError::Unseal)?;
        Ok(plain.to_vec())
    }

    /// A stored payload, opened. Rows of earlier releases were sealed when the store opened,
    /// so a row in clear now was written behind the node's back: refused, like a row that
    /// does not open.
    fn read_payload(&self, aad: Aad<Vec<u8>>, stored: Vec<u8>, sealed: bool) -> Result<Vec<u8>, StoreError> {
        if sealed {
            self.open_with(aad, &stored)
        } else {
            Err(StoreError::Unseal)
        }
    }

    /// Seals the payloads that earlier releases stored in clear (once, at open).
    async fn seal_legacy_rows(&self) -> Result<(), StoreError> {
        let rows = sqlx::query("SELECT transfer_id, request FROM outgoing WHERE sealed = 0")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let id: String = r.get(0);
            let sealed = self.seal_with(row_aad("outgoing", &id), r.get(1))?;
            sqlx::query("UPDATE outgoing SET request = ?, sealed = 1 WHERE transfer_id = ? AND sealed = 0")
                .bind(sealed)
                .bind(&id)
                .execute(&self.pool)
                .await?;
        }
        let rows = sqlx::query("SELECT id, sender, transfer_id, item FROM inbox WHERE sealed = 0")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let (id, sender, transfer_id): (i64, String, String) = (r.get(0), r.get(1), r.get(2));
            let sealed = self.seal_with(row_aad("inbox", &format!("{sender}/{transfer_id}")), r.get(3))?;
            sqlx::query("UPDATE inbox SET item = ?, sealed = 1 WHERE id = ? AND sealed = 0")
                .bind(sealed)
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        let rows = sqlx::query("SELECT local_record_id, data FROM published WHERE sealed = 0")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let record: String = r.get(0);
            let sealed = self.seal_with(row_aad("published", &record), r.get(1))?;
            sqlx::query("UPDATE published SET data = ?, sealed = 1 WHERE local_record_id = ? AND sealed = 0")
                .bind(sealed)
                .bind(&record)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Forgets sent requests and processed inbox items older than `cutoff_micros`
    /// (unprocessed items stay until acknowledged). How many rows went.
    pub async fn forget_before(&self, cutoff_micros: i64) -> Result<u64, StoreError> {
        let sent = sqlx::query("DELETE FROM outgoing WHERE saved_micros < ?")
            .bind(cutoff_micros)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let received = sqlx::query("DELETE FROM inbox WHERE acknowledged = 1 AND received_micros < ?")
            .bind(cutoff_micros)
            .execute(&self.pool)
            .await?
            .rows_affected();
        // Reviews answered, or whose review period ended, before the cutoff.
        let reviews =
            sqlx::query("DELETE FROM review WHERE (answered = 1 AND offered_micros < ?1) OR deadline_micros < ?1")
                .bind(cutoff_micros)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(sent + received + reviews)
    }

    /// The person under `record`: pseudonym and AVS number.
    pub async fn by_record(&self, record: &str) -> Result<Option<(LocalPseudonym, AvsNumber)>, StoreError> {
        let row = sqlx::query("SELECT pseudonym, avs_sealed FROM persons WHERE local_record_id = ?")
            .bind(record)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let pseudonym: Vec<u8> = row.try_get("pseudonym")?;
        let sealed: Vec<u8> = row.try_get("avs_sealed")?;
        let pseudonym = LocalPseudonym(pseudonym.try_into().map_err(|_| StoreError::Unseal)?);
        Ok(Some((pseudonym, self.unseal(record, &sealed)?)))
    }

    /// The record id of the person with this pseudonym, if enrolled.
    pub async fn by_pseudonym(&self, pseudonym: &LocalPseudonym) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT local_record_id FROM persons WHERE pseudonym = ?")
                .bind(pseudonym.0.as_slice())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records that `record` is the person with `pseudonym` and `avs`.
    pub async fn record(
        &self,
        record: &str,
        pseudonym: &LocalPseudonym,
        avs: &AvsNumber,
        at_micros: i64,
    ) -> Result<Recorded, StoreError> {
        let sealed = self.seal(record, avs)?;
        let inserted = sqlx::query(
            "INSERT INTO persons (local_record_id, pseudonym, avs_sealed, enrolled_at_micros) VALUES (?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(record)
        .bind(pseudonym.0.as_slice())
        .bind(sealed)
        .bind(at_micros)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Recorded::New);
        }
        if let Some((existing, _)) = self.by_record(record).await? {
            return Ok(if existing == *pseudonym {
                Recorded::Existing
            } else {
                Recorded::RecordHoldsAnotherPerson
            });
        }
        match self.by_pseudonym(pseudonym).await? {
            Some(other) => Ok(Recorded::PersonUnderOtherRecord(other)),
            // Both conflicts vanished in between (a concurrent delete): report as taken.
            None => Ok(Recorded::RecordHoldsAnotherPerson),
        }
    }

    /// The newest audit checkpoint this node accepted, and whether it raised the alarm.
    pub async fn witness(&self) -> Result<Option<(String, bool)>, StoreError> {
        let row = sqlx::query("SELECT note, alarm FROM witness WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some((row.try_get("note")?, row.try_get::<i64, _>("alarm")? != 0))),
            None => Ok(None),
        }
    }

    /// Remembers `note` (of tree size `size`) as the newest accepted checkpoint.
    pub async fn save_checkpoint(&self, size: u64, note: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO witness (id, size, note, alarm) VALUES (1, ?, ?, 0) \
             ON CONFLICT (id) DO UPDATE SET size = excluded.size, note = excluded.note WHERE excluded.size > witness.size",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(note)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the witnessed checkpoint and lowers the alarm (an operator's decision after an
    /// investigation, with the node stopped): the next receipt becomes the new anchor. The
    /// evidence stays, and the clearing is recorded with `reason`. Returns what was there:
    /// (size, alarm).
    pub async fn clear_witness(&self, reason: &str, now_micros: i64) -> Result<Option<(u64, bool)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("DELETE FROM witness WHERE id = 1 RETURNING size, alarm")
            .fetch_optional(&mut *tx)
            .await?;
        let cleared = row.map(|r| (u64::try_from(r.get::<i64, _>(0)).unwrap_or(0), r.get::<i64, _>(1) != 0));
        if let Some((size, _)) = cleared {
            sqlx::query("INSERT INTO witness_clearance (cleared_micros, held_size, reason) VALUES (?, ?, ?)")
                .bind(now_micros)
                .bind(i64::try_from(size).unwrap_or(i64::MAX))
                .bind(reason)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(cleared)
    }

    /// The evidence of every alarm, oldest first: (seen at, held note, conflicting note, problem).
    pub async fn witness_evidence(&self) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT seen_micros, held_note, conflicting_note, problem FROM witness_evidence ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Every clearing of the alarm, oldest first: (cleared at, size forgotten, reason).
    pub async fn witness_clearances(&self) -> Result<Vec<(i64, i64, String)>, StoreError> {
        let rows = sqlx::query("SELECT cleared_micros, held_size, reason FROM witness_clearance ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Records that the log was seen rewritten, with the evidence: the checkpoint held and
    /// the one that contradicts it. Kept across restarts and clearings.
    pub async fn raise_alarm(&self, conflicting_note: &str, problem: &str, now_micros: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO witness_evidence (seen_micros, held_note, conflicting_note, problem) \
             SELECT ?, COALESCE((SELECT note FROM witness WHERE id = 1), ''), ?, ?",
        )
        .bind(now_micros)
        .bind(conflicting_note)
        .bind(problem)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE witness SET alarm = 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The request sent under `transfer_id`: (SHA-256 of the Send/Request call, request bytes).
    pub async fn outgoing(&self, transfer_id: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
        let row = sqlx::query("SELECT send_sha256, request, sealed FROM outgoing WHERE transfer_id = ?")
            .bind(transfer_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let request = self.read_payload(row_aad("outgoing", transfer_id), r.get(1), r.get::<i64, _>(2) != 0)?;
        Ok(Some((r.get(0), request)))
    }

    /// Keeps the exact request sent under `transfer_id` (before it is sent).
    pub async fn save_outgoing(&self, transfer_id: &str, send_sha256: &[u8], request: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal_with(row_aad("outgoing", transfer_id), request.to_vec())?;
        let now = cii_types::time::micros(time::OffsetDateTime::now_utc());
        sqlx::query(
            "INSERT OR IGNORE INTO outgoing (transfer_id, send_sha256, request, sealed, saved_micros) VALUES (?, ?, ?, 1, ?)",
        )
        .bind(transfer_id)
        .bind(send_sha256)
        .bind(sealed)
        .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores delivered items in one transaction, each once: a delivery sent again (the
    /// gateway retries until it knows it was stored) is ignored.
    pub async fn receive(&self, items: &[Received], at_micros: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for received in items {
            let aad = row_aad("inbox", &format!("{}/{}", received.sender, received.transfer_id));
            let sealed = self.seal_with(aad, received.item.clone())?;
            sqlx::query(
                "INSERT OR IGNORE INTO inbox (sender, transfer_id, item, identity, received_micros, sealed) \
                 VALUES (?, ?, ?, ?, ?, 1)",
            )
            .bind(&received.sender)
            .bind(&received.transfer_id)
            .bind(sealed)
            .bind(received.identity.as_deref())
            .bind(at_micros)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Unacknowledged inbox items, oldest first: (id, item, identity ciphertext).
    pub async fn inbox(&self, limit: u32) -> Result<Vec<(i64, Vec<u8>, Option<Vec<u8>>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, item, identity, sender, transfer_id, sealed FROM inbox WHERE acknowledged = 0 ORDER BY id LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let (sender, transfer_id): (String, String) = (r.get(3), r.get(4));
                let aad = row_aad("inbox", &format!("{sender}/{transfer_id}"));
                let item = self.read_payload(aad, r.get(1), r.get::<i64, _>(5) != 0)?;
                Ok((r.get(0), item, r.get(2)))
            })
            .collect()
    }

    /// Marks an inbox item processed; its (sender, transfer id) if it was not already.
    pub async fn acknowledge(&self, id: i64) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "UPDATE inbox SET acknowledged = 1 WHERE id = ? AND acknowledged = 0 RETURNING sender, transfer_id",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Stores what this institution holds about `record` (replacing the previous).
    pub async fn publish(&self, record: &str, data: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal_with(row_aad("published", record), data.to_vec())?;
        sqlx::query(
            "INSERT INTO published (local_record_id, data, sealed) VALUES (?, ?, 1) \
             ON CONFLICT (local_record_id) DO UPDATE SET data = excluded.data, sealed = 1",
        )
        .bind(record)
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What this institution published about `record`.
    pub async fn published(&self, record: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT data, sealed FROM published WHERE local_record_id = ?")
            .bind(record)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| self.read_payload(row_aad("published", record), r.get(0), r.get::<i64, _>(1) != 0))
            .transpose()
    }

    /// Keeps a pull offered for this institution's review; the same offer again changes nothing.
    pub async fn offer_review(&self, review: &OfferedReview) -> Result<(), StoreError> {
        let key = format!("{}/{}", review.requester, review.transfer_id);
        let sealed = self.seal_with(row_aad("review", &key), review.offer.clone())?;
        sqlx::query(
            "INSERT INTO review (requester, transfer_id, offer, local_record_id, offered_micros, deadline_micros) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (requester, transfer_id) DO NOTHING",
        )
        .bind(&review.requester)
        .bind(&review.transfer_id)
        .bind(sealed)
        .bind(&review.local_record_id)
        .bind(review.offered_micros)
        .bind(review.deadline_micros)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reviews not answered whose deadline is after `now`, oldest first, at most `limit`.
    pub async fn reviews(&self, now: i64, limit: u32) -> Result<Vec<OfferedReview>, StoreError> {
        let rows = sqlx::query(
            "SELECT requester, transfer_id, offer, local_record_id, offered_micros, deadline_micros FROM review \
             WHERE answered = 0 AND deadline_micros > ? ORDER BY offered_micros, requester, transfer_id LIMIT ?",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let (requester, transfer_id): (String, String) = (r.get(0), r.get(1));
                let key = format!("{requester}/{transfer_id}");
                let offer = self.open_with(row_aad("review", &key), r.get::<Vec<u8>, _>(2).as_slice())?;
                Ok(OfferedReview {
                    requester,
                    transfer_id,
                    offer,
                    local_record_id: r.get(3),
                    offered_micros: r.get(4),
                    deadline_micros: r.get(5),
                })
            })
            .collect()
    }

    /// A caseworker answered the review.
    pub async fn review_answered(&self, requester: &str, transfer_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE review SET answered = 1 WHERE requester = ? AND transfer_id = ?")
            .bind(requester)
            .bind(transfer_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn aad(record: &str) -> Aad<Vec<u8>> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(record.as_bytes());
    Aad::from(aad)
}

/// Associated data of a sealed payload: its table and its row's key, so a sealed value
/// moved to another row or table does not open.
fn row_aad(table: &str, key: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("cii/node/{table}/v1\0{key}").into_bytes())
}

/// Parses a store key file's content: 64 hex digits (32 bytes), surrounding whitespace ignored.
pub fn parse_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &tempfile::TempDir, key: [u8; 32]) -> Store {
        Store::open(&format!("sqlite:{}", dir.path().join("node.db").display()), &key)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn enrolments_are_indexed_by_pseudonym_and_the_avs_number_is_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, [7; 32]).await;
        let avs = AvsNumber::parse("756.1234.5678.97").unwrap();
        let other = AvsNumber::parse("7569217076985").unwrap();
        let p = LocalPseudonym([1; 32]);
        let q = LocalPseudonym([2; 32]);
        assert_eq!(store.record("R-1", &p, &avs, 1).await.unwrap(), Recorded::New);
        assert_eq!(store.record("R-1", &p, &avs, 2).await.unwrap(), Recorded::Existing);
        assert_eq!(
            store.record("R-1", &q, &other, 3).await.unwrap(),
            Recorded::RecordHoldsAnotherPerson
        );
        assert_eq!(
            store.record("R-2", &p, &avs, 4).await.unwrap(),
            Recorded::PersonUnderOtherRecord("R-1".into())
        );
        assert_eq!(store.by_pseudonym(&p).await.unwrap().as_deref(), Some("R-1"));
        assert_eq!(store.by_pseudonym(&q).await.unwrap(), None);
        let (found, found_avs) = store.by_record("R-1").await.unwrap().unwrap();
        assert_eq!(found, p);
        assert_eq!(found_avs.expose_digits(), avs.expose_digits());
        store.close().await;
        // The file holds no AVS number in clear.
        let bytes = std::fs::read(dir.path().join("node.db")).unwrap();
        let wal = std::fs::read(dir.path().join("node.db-wal")).unwrap_or_default();
        for haystack in [&bytes, &wal] {
            assert!(!haystack.windows(13).any(|w| w == b"7561234567897"));
        }
        // Another key cannot open what was sealed.
        let wrong = open(&dir, [8; 32]).await;
        assert!(matches!(wrong.by_record("R-1").await, Err(StoreError::Unseal)));
    }

    #[tokio::test]
    async fn a_sealed_number_moved_to_another_row_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, [7; 32]).await;
        let a = AvsNumber::parse("756.1234.5678.97").unwrap();
        let b = AvsNumber::parse("7569217076985").unwrap();
        store.record("R-1", &LocalPseudonym([1; 32]), &a, 1).await.unwrap();
        store.record("R-2", &LocalPseudonym([2; 32]), &b, 1).await.unwrap();
        sqlx::query("UPDATE persons SET avs_sealed = (SELECT avs_sealed FROM persons WHERE local_record_id = 'R-1') WHERE local_record_id = 'R-2'")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(matches!(store.by_record("R-2").await, Err(StoreError::Unseal)));
    }

    #[tokio::test]
    async fn payloads_are_sealed_at_rest_bound_to_their_row_and_forgotten_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, [7; 32]).await;
        store.save_outgoing("t-1", &[1; 32], b"SENT-PLAINTEXT-1").await.unwrap();
        store
            .receive(
                &[Received {
                    sender: "AI-VS".into(),
                    transfer_id: "t-9".into(),
                    item: b"RECEIVED-PLAINTEXT-9".to_vec(),
                    identity: None,
                }],
                5,
            )
            .await
            .unwrap();
        store.publish("R-1", b"PUBLISHED-PLAINTEXT-1").await.unwrap();
        // An item of an earlier release, stored in clear: read, then sealed at the next open.
        sqlx::query("INSERT INTO inbox (sender, transfer_id, item, received_micros) VALUES ('AS-VS', 't-0', ?, 1)")
            .bind(b"LEGACY-PLAINTEXT-0".as_slice())
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(store.outgoing("t-1").await.unwrap().unwrap().1, b"SENT-PLAINTEXT-1");
        assert_eq!(store.published("R-1").await.unwrap().unwrap(), b"PUBLISHED-PLAINTEXT-1");
        // A row in clear appearing while the store is open was written behind its back.
        assert!(matches!(store.inbox(10).await, Err(StoreError::Unseal)));
        store.close().await;
        // An earlier release's row: sealed when the store opens, then read.
        let store = open(&dir, [7; 32]).await;
        let items: Vec<Vec<u8>> = store
            .inbox(10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, item, _)| item)
            .collect();
        assert_eq!(
            items,
            [b"RECEIVED-PLAINTEXT-9".to_vec(), b"LEGACY-PLAINTEXT-0".to_vec()]
        );
        // Moved to another row, a sealed payload does not open.
        sqlx::query("INSERT INTO published (local_record_id, data, sealed) SELECT 'R-2', data, 1 FROM published")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(matches!(store.published("R-2").await, Err(StoreError::Unseal)));
        sqlx::query("DELETE FROM published WHERE local_record_id = 'R-2'")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        // One connection, every WAL frame written back: what the files hold at rest.
        {
            use sqlx::Connection;
            let url = format!("sqlite:{}", dir.path().join("node.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            for pragma in [
                "PRAGMA wal_checkpoint(TRUNCATE)",
                "VACUUM",
                "PRAGMA wal_checkpoint(TRUNCATE)",
            ] {
                sqlx::query(pragma).execute(&mut conn).await.unwrap();
            }
            conn.close().await.unwrap();
        }
        for file in ["node.db", "node.db-wal"] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
            let found = bytes.windows(9).position(|w| w == b"PLAINTEXT");
            let context = found.map(|i| String::from_utf8_lossy(&bytes[i.saturating_sub(12)..i + 12]).into_owned());
            assert_eq!(context, None, "plaintext in {file}");
        }
        // Retention: sent requests and processed items older than the cutoff go.
        let store = open(&dir, [7; 32]).await;
        let (first, _, _) = store.inbox(1).await.unwrap().remove(0);
        store.acknowledge(first).await.unwrap();
        let forgotten = store.forget_before(i64::MAX).await.unwrap();
        assert_eq!(forgotten, 2, "the sent request and the processed item");
        assert!(store.outgoing("t-1").await.unwrap().is_none());
        assert_eq!(store.inbox(10).await.unwrap().len(), 1, "the unprocessed item stays");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_store_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, [7; 32]).await;
        store.publish("R-1", b"x").await.unwrap();
        store.close().await;
        for file in ["node.db", "node.db-wal", "node.db-shm"] {
            if let Ok(meta) = std::fs::metadata(dir.path().join(file)) {
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
            }
        }
    }

    #[test]
    fn store_keys_are_64_hex_digits() {
        assert_eq!(parse_key(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_key(&format!("  {}\n", "00".repeat(32))), Some([0; 32]));
        assert_eq!(parse_key(&"ab".repeat(31)), None);
        assert_eq!(parse_key(&"zz".repeat(32)), None);
    }
}

/// A pull offered for this institution's review, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedReview {
    /// The requester's registry id.
    pub requester: String,
    /// The pull's transfer id.
    pub transfer_id: String,
    /// The encoded `node.v1.OfferReviewRequest` (opened).
    pub offer: Vec<u8>,
    /// This institution's record of the person ('' if not enrolled here).
    pub local_record_id: String,
    /// When it was offered.
    pub offered_micros: i64,
    /// When the review ends.
    pub deadline_micros: i64,
}
