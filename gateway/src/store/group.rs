//! Group commit for the writes every transfer makes (its held record, its release): each
//! caller hands its statements to one committer and waits for the commit that carries them;
//! the writes queued while one transaction commits go together in the next. Under load one
//! durable commit (one WAL sync: SQLite `synchronous=FULL`, PostgreSQL's WAL flush) serves many transfers,
//! as the audit log's own batches do.
//!
//! A write that fails is undone alone and its caller alone gets the error; the others
//! commit (the group is then done again write by write: see `commit`).

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Most writes in one transaction (a bound on how long the first caller waits).
const GROUP_LIMIT: usize = 256;

/// A value bound to a statement (owned: it crosses to the committer's task).
#[derive(Debug)]
pub(super) enum Value {
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// One statement of a write.
#[derive(Debug)]
pub(super) struct Statement {
    pub sql: &'static str,
    pub values: Vec<Value>,
}

impl Statement {
    pub fn new(sql: &'static str, values: Vec<Value>) -> Statement {
        Statement { sql, values }
    }
}

/// A write: its statements, applied together or not at all.
struct Job {
    statements: Vec<Statement>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue to the committer.
#[derive(Debug, Clone)]
pub(super) struct Committer {
    queue: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the committer on `writer` (the store's one writing connection).
    pub fn start(writer: AnyPool) -> Committer {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(writer, jobs));
        Committer { queue }
    }

    /// Applies `statements` in the next group; returns once they are durable.
    pub async fn write(&self, statements: Vec<Statement>) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        self.queue
            .send(Job { statements, done })
            .map_err(|_| StoreError::Group("the store is closed".to_owned()))?;
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Group("the store is closed".to_owned())))
    }
}

async fn run(writer: AnyPool, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_LIMIT {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let results = commit(&writer, &jobs).await;
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.done.send(result);
        }
    }
}

/// One transaction for `jobs`; the result of each. If a statement fails, the transaction
/// is rolled back and each write is done again in its own transaction, so that only the
/// failing one fails (rare: a write that breaks a constraint, a full disk).
async fn commit(writer: &AnyPool, jobs: &[Job]) -> Vec<Result<(), StoreError>> {
    let together = async {
        let mut tx = writer.begin().await?;
        for job in jobs {
            apply(&mut tx, &job.statements).await?;
        }
        tx.commit().await
    };
    match together.await {
        Ok(()) => jobs.iter().map(|_| Ok(())).collect(),
        Err(_) if jobs.len() > 1 => {
            let mut results = Vec::with_capacity(jobs.len());
            for job in jobs {
                results.push(alone(writer, &job.statements).await);
            }
            results
        }
        Err(e) => vec![Err(StoreError::Db(e))],
    }
}

/// One write in its own transaction.
async fn alone(writer: &AnyPool, statements: &[Statement]) -> Result<(), StoreError> {
    let mut tx = writer.begin().await?;
    apply(&mut tx, statements).await?;
    tx.commit().await?;
    Ok(())
}

/// A write's statements, in `tx`.
async fn apply(tx: &mut sqlx::Transaction<'_, sqlx::Any>, statements: &[Statement]) -> Result<(), sqlx::Error> {
    for statement in statements {
        let mut query = sqlx::query(statement.sql);
        for value in &statement.values {
            query = match value {
                Value::Int(v) => query.bind(*v),
                Value::Text(v) => query.bind(v.as_str()),
                Value::Blob(v) => query.bind(v.as_slice()),
            };
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
