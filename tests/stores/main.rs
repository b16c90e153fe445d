//! The stores' behaviour, the same on both databases: each scenario runs on SQLite (a file of
//! its own) and on a real PostgreSQL (a database of its own in the throwaway cluster of
//! `cii_tests::pg`). A statement one database accepts and the other refuses, or reads
//! differently, fails here.

mod consent_feed;
mod lease;
mod queue;

use cii_gateway::store::{
    ObligationRecord, PendingReview, ReviewAnswer, SenderNotice, Store, StoreError, TransferRecord,
};
use cii_types::TransferState;

/// `scenario` on a fresh SQLite store and on a fresh PostgreSQL store.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let url = format!("sqlite:{}", dir.path().join("gateway.db").display());
                    let store = cii_gateway::store::Store::open(&url).await.expect("open");
                    super::$scenario(store, url).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let url = cii_tests::pg::fresh_database().await;
                    let store = cii_gateway::store::Store::open(&url).await.expect("open");
                    super::$scenario(store, url).await;
                }
            )*
        }
    };
}

on_both!(
    writes_committed_as_a_group_fail_alone,
    a_waiting_delivery_holds_back_only_its_own_sender,
    a_sender_holding_back_more_rows_than_a_run_takes_blocks_nobody_else,
    a_run_keeps_the_order_and_stops_at_a_held_or_waiting_delivery,
    every_other_statement_reads_back_what_it_wrote,
    pulls_held_for_review_read_back_alike,
    the_same_transfer_recorded_through_two_handles_at_once_is_recorded_once,
);

/// Records a permitted push ORP → AI, held until `release`.
async fn record(store: &Store, id: &str) {
    record_from(store, "ORP-VS", id).await;
}

async fn record_from(store: &Store, caller: &str, id: &str) {
    try_record(store, caller, id, &format!("{caller}:{id}:0"))
        .await
        .expect("record");
}

async fn try_record(store: &Store, caller: &str, id: &str, obligation: &str) -> Result<(), StoreError> {
    let obligations = [ObligationRecord {
        id: obligation.to_owned(),
        owner: "AI-VS".into(),
        due_micros: 5,
        wire: b"obligation".to_vec(),
    }];
    store
        .record(&TransferRecord {
            caller,
            transfer_id: id,
            acting_user: "anna@ORP-VS",
            request_sha256: &[0; 32],
            counterparty: "AI-VS",
            pull: false,
            response: b"answer",
            state: TransferState::Queued,
            delivery: Some(b"sealed"),
            obligations: &obligations,
            consents: &[],
            now_micros: 0,
            entry: b"entry",
            log_size_before: 0,
        })
        .await
}

/// Writes queued together commit together; one that fails is undone alone (its transfer
/// and outbox rows with it, though they were written before the failing statement), and
/// the others are all there.
async fn writes_committed_as_a_group_fail_alone(store: Store, url: String) {
    record(&store, "t0").await;
    let writes: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                // In the middle of the group, a write whose last statement fails: t0's obligation id.
                let id = format!("g{i}");
                let obligation = if i == 16 {
                    "ORP-VS:t0:0".to_owned()
                } else {
                    format!("ORP-VS:{id}:0")
                };
                try_record(&store, "ORP-VS", &id, &obligation).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for write in writes {
        results.push(write.await.expect("task").is_ok());
    }
    assert_eq!(results.iter().filter(|ok| !**ok).count(), 1, "{results:?}");
    assert!(!results[16], "the duplicate obligation fails");
    for i in 0..32 {
        let row = store.transfer("ORP-VS", &format!("g{i}")).await.expect("read");
        assert_eq!(row.is_some(), i != 16, "g{i}");
    }
    let look = sqlx::AnyPool::connect(&url).await.expect("connect");
    let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE transfer_id = 'g16'")
        .fetch_one(&look)
        .await
        .expect("count");
    let obligations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM obligation")
        .fetch_one(&look)
        .await
        .expect("count");
    look.close().await;
    assert_eq!((outbox, obligations), (0, 32), "nothing of the failed write stays");
}

async fn release(store: &Store, id: &str) {
    release_from(store, "ORP-VS", id).await;
}

async fn release_from(store: &Store, caller: &str, id: &str) {
    store
        .release(caller, id, b"answer", Some(b"sealed"))
        .await
        .expect("release");
}

async fn a_waiting_delivery_holds_back_only_its_own_sender(store: Store, _url: String) {
    record(&store, "o1").await;
    record(&store, "o2").await;
    record_from(&store, "AS-VS", "s1").await;
    for (caller, id) in [("ORP-VS", "o2"), ("AS-VS", "s1")] {
        release_from(&store, caller, id).await;
    }
    // o1 is held: o2 waits behind it, AS-VS's s1 to the same recipient goes.
    assert_eq!(run(&store, 64).await, ["s1"]);
    // A dead letter leaves the outbox and frees its pair.
    release(&store, "o1").await;
    let runs = store.due_runs(&["AI-VS".to_owned()], 1_000, 64).await.expect("runs");
    let head = runs
        .into_iter()
        .flatten()
        .find(|d| d.transfer_id == "o1")
        .expect("o1 is its pair's head");
    store
        .dead_letter(&head, "MESSAGE_TOO_LARGE", 10, None)
        .await
        .expect("dead letter");
    assert_eq!(run(&store, 64).await, ["o2", "s1"]);
    let dead = store.dead_letters(10).await.expect("list");
    assert_eq!((dead.len(), dead[0].transfer_id.as_str()), (1, "o1"));
    let row = store.transfer("ORP-VS", "o1").await.expect("read").expect("o1");
    assert_eq!(row.state, TransferState::DeadLettered);
    assert!(store.retry_dead_letter("ORP-VS", "o1", 20).await.expect("retry"));
    assert_eq!(
        run(&store, 64).await,
        ["o2", "s1", "o1"],
        "back in the outbox, behind its pair"
    );
    let row = store.transfer("ORP-VS", "o1").await.expect("read").expect("o1");
    assert_eq!(row.state, TransferState::Queued);
    assert!(
        !store.drop_dead_letter("ORP-VS", "o1").await.expect("drop"),
        "no longer a dead letter"
    );
}

async fn a_sender_holding_back_more_rows_than_a_run_takes_blocks_nobody_else(store: Store, _url: String) {
    record(&store, "held").await; // never released: held
    for i in 0..70 {
        let id = format!("o{i}");
        record(&store, &id).await;
        release(&store, &id).await;
    }
    record_from(&store, "AS-VS", "s1").await;
    release_from(&store, "AS-VS", "s1").await;
    assert_eq!(
        run(&store, 64).await,
        ["s1"],
        "70 rows behind a held one, and AS-VS still goes"
    );
}

async fn run(store: &Store, limit: u32) -> Vec<String> {
    let runs = store.due_runs(&["AI-VS".to_owned()], 1_000, limit).await.expect("runs");
    runs.into_iter().flatten().map(|d| d.transfer_id).collect()
}

async fn a_run_keeps_the_order_and_stops_at_a_held_or_waiting_delivery(store: Store, _url: String) {
    for id in ["t1", "t2", "t3", "t4"] {
        record(&store, id).await;
    }
    for id in ["t1", "t2", "t4"] {
        release(&store, id).await;
    }
    // t3 is not logged yet: t4 must not overtake it.
    assert_eq!(run(&store, 64).await, ["t1", "t2"]);
    assert_eq!(run(&store, 1).await, ["t1"]);
    let due = store.due_runs(&["AI-VS".to_owned()], 1_000, 64).await.expect("runs");
    store.delivered(&due.concat()).await.expect("delivered");
    assert_eq!(run(&store, 64).await, Vec::<String>::new(), "t3 is held");
    release(&store, "t3").await;
    assert_eq!(run(&store, 64).await, ["t3", "t4"]);
    // t3 failed and waits for its retry: nothing behind it goes either.
    let due = store
        .due_runs(&["AI-VS".to_owned()], 1_000, 1)
        .await
        .expect("runs")
        .concat();
    store
        .attempt_failed(due.first().expect("t3"), "UNAVAILABLE", 5_000)
        .await
        .expect("failed");
    assert_eq!(run(&store, 64).await, Vec::<String>::new(), "t3 waits until 5000");
    assert_eq!(
        store
            .due_runs(&["AI-VS".to_owned()], 5_000, 64)
            .await
            .expect("runs")
            .concat()
            .len(),
        2
    );
    for id in ["t1", "t2"] {
        let row = store.transfer("ORP-VS", id).await.expect("read").expect(id);
        assert_eq!(
            (row.state, row.attempts),
            (TransferState::Delivered, 1),
            "{id} marked delivered"
        );
    }
    let t3 = store.transfer("ORP-VS", "t3").await.expect("read").expect("t3");
    assert_eq!(t3.state, TransferState::Queued, "not among those delivered");
}

/// Every statement the scenarios above do not run, each read back: pull answers kept and
/// forgotten, held records, rewritten deliveries, acknowledgements, obligations, retention,
/// consent uses and notices, and dead letters with their sender's notice.
async fn every_other_statement_reads_back_what_it_wrote(store: Store, _url: String) {
    let ai = ["AI-VS".to_owned()];
    // A permitted pull's answer, kept sealed for the requester's retries, then forgotten.
    let pull = TransferRecord {
        caller: "AI-VS",
        transfer_id: "p1",
        acting_user: "bea@AI-VS",
        request_sha256: &[7; 32],
        counterparty: "ORP-VS",
        pull: true,
        response: b"decided",
        state: TransferState::Queued,
        delivery: None,
        obligations: &[],
        consents: &["c-1".to_owned()],
        now_micros: 100,
        entry: b"entry",
        log_size_before: 41,
    };
    store.record(&pull).await.expect("record");
    let held = store.held().await.expect("held");
    assert_eq!(held.len(), 1);
    assert_eq!(
        (
            held[0].transfer_id.as_str(),
            held[0].log_size_before,
            held[0].delivery.is_none()
        ),
        ("p1", 41, true)
    );
    assert_eq!(held[0].entry, b"entry");
    store
        .release("AI-VS", "p1", b"decided+receipt", None)
        .await
        .expect("release");
    assert!(store.held().await.expect("held").is_empty());
    store
        .provided("AI-VS", "p1", b"sealed answer", 5_000)
        .await
        .expect("provided");
    let row = store.transfer("AI-VS", "p1").await.expect("read").expect("p1");
    assert_eq!(
        (
            row.state,
            row.pull,
            row.held,
            row.answer.as_deref(),
            row.answer_until_micros,
            row.response.as_slice()
        ),
        (
            TransferState::Delivered,
            true,
            false,
            Some(&b"sealed answer"[..]),
            5_000,
            &b"decided+receipt"[..]
        )
    );
    assert_eq!(
        (row.acting_user.as_str(), row.created_micros, row.request_sha256),
        ("bea@AI-VS", 100, vec![7; 32])
    );
    assert!(store.forget_answer("AI-VS", "p1").await.expect("forget"));
    assert!(
        !store.forget_answer("AI-VS", "p1").await.expect("forget"),
        "nothing kept any more"
    );
    store
        .provided("AI-VS", "p1", b"sealed answer", 5_000)
        .await
        .expect("provided");
    assert_eq!(store.forget_answers(4_999).await.expect("sweep"), 0);
    assert_eq!(store.forget_answers(5_000).await.expect("sweep"), 1);
    assert_eq!(
        store.consent_uses("c-1").await.expect("uses"),
        [("AI-VS".to_owned(), "p1".to_owned())]
    );

    // A push: its delivery rewritten in the outbox, delivered, acknowledged once.
    record(&store, "t1").await;
    release(&store, "t1").await;
    let due = store.due_runs(&ai, 1_000, 64).await.expect("runs").concat();
    store.replace_delivery(due[0].seq, b"resealed").await.expect("replace");
    let due = store.due_runs(&ai, 1_000, 64).await.expect("runs").concat();
    assert_eq!(
        (due.len(), due[0].delivery.as_slice(), due[0].attempts),
        (1, &b"resealed"[..], 0)
    );
    assert!(
        !store.acknowledge("AI-VS", "ORP-VS", "t1").await.expect("ack"),
        "still in the outbox"
    );
    store.delivered(&due).await.expect("delivered");
    assert!(
        !store.acknowledge("AS-VS", "ORP-VS", "t1").await.expect("ack"),
        "not its recipient"
    );
    assert!(store.acknowledge("AI-VS", "ORP-VS", "t1").await.expect("ack"));
    assert!(!store.acknowledge("AI-VS", "ORP-VS", "t1").await.expect("ack"), "once");
    let row = store.transfer("ORP-VS", "t1").await.expect("read").expect("t1");
    assert_eq!((row.state, row.attempts), (TransferState::Acknowledged, 1));

    // Obligations: listed, fulfilled once, then listed only with the fulfilled ones.
    assert_eq!(store.obligations("AI-VS", false).await.expect("list").len(), 1);
    let one = store
        .obligation("AI-VS", "ORP-VS:t1:0")
        .await
        .expect("read")
        .expect("obligation");
    assert_eq!(
        (one.wire.as_slice(), one.due_micros, one.fulfilled_micros),
        (&b"obligation"[..], 5, None)
    );
    assert!(
        store.obligation("ORP-VS", "ORP-VS:t1:0").await.expect("read").is_none(),
        "not its owner"
    );
    assert!(store.fulfil("AI-VS", "ORP-VS:t1:0", 700).await.expect("fulfil"));
    assert!(
        !store.fulfil("AI-VS", "ORP-VS:t1:0", 800).await.expect("fulfil"),
        "once"
    );
    assert!(store.obligations("AI-VS", false).await.expect("list").is_empty());
    let all = store.obligations("AI-VS", true).await.expect("list");
    assert_eq!(all.iter().map(|o| o.fulfilled_micros).collect::<Vec<_>>(), [Some(700)]);

    // Consent notices queued and the feed's position moved in one transaction; a notice
    // queued twice is there once.
    let notice = ("AI-VS".to_owned(), "notice-1".to_owned(), b"notice".to_vec());
    store
        .notices(&[notice.clone(), notice], 9, 1_000)
        .await
        .expect("notices");
    assert_eq!(store.consent_feed().await.expect("feed"), 9);
    let due = store.due_runs(&ai, 1_000, 64).await.expect("runs").concat();
    assert_eq!(
        due.iter()
            .map(|d| (d.sender.as_str(), d.transfer_id.as_str()))
            .collect::<Vec<_>>(),
        [("gateway", "notice-1")]
    );
    store.delivered(&due).await.expect("delivered");

    // A dead letter with its sender's notice, retried, dead again, dropped.
    record(&store, "t2").await;
    release(&store, "t2").await;
    let due = store.due_runs(&ai, 1_000, 64).await.expect("runs").concat();
    let sender_notice = SenderNotice {
        id: "failure-t2".into(),
        delivery: b"failure".to_vec(),
    };
    store
        .dead_letter(&due[0], "RECIPIENT_REFUSED", 2_000, Some(&sender_notice))
        .await
        .expect("dead");
    let dead = store.dead_letter_of("ORP-VS", "t2").await.expect("read").expect("t2");
    assert_eq!(
        (
            dead.error_code.as_str(),
            dead.attempts,
            dead.dead_micros,
            dead.size_bytes
        ),
        ("RECIPIENT_REFUSED", 1, 2_000, 6)
    );
    let to_sender = store
        .due_runs(&["ORP-VS".to_owned()], 2_000, 64)
        .await
        .expect("runs")
        .concat();
    assert_eq!(
        to_sender.iter().map(|d| d.transfer_id.as_str()).collect::<Vec<_>>(),
        ["failure-t2"]
    );
    assert!(store.retry_dead_letter("ORP-VS", "t2", 3_000).await.expect("retry"));
    assert!(store.dead_letter_of("ORP-VS", "t2").await.expect("read").is_none());
    let due = store.due_runs(&ai, 3_000, 64).await.expect("runs").concat();
    store
        .dead_letter(&due[0], "DELIVERY_GAVE_UP", 4_000, None)
        .await
        .expect("dead again");
    assert_eq!(store.dead_letters(10).await.expect("list").len(), 1);
    assert!(store.drop_dead_letter("ORP-VS", "t2").await.expect("drop"));
    assert!(store.dead_letters(10).await.expect("list").is_empty());

    // Retention: settled transfers and fulfilled obligations before the cutoff, counted
    // first, then deleted; the consent uses stay.
    assert_eq!(
        store.forget_before(10_000, true).await.expect("count"),
        (3, 1),
        "p1, t1 and t2"
    );
    assert!(
        store.transfer("ORP-VS", "t1").await.expect("read").is_some(),
        "a dry run deletes nothing"
    );
    assert_eq!(store.forget_before(10_000, false).await.expect("delete"), (3, 1));
    assert!(store.transfer("ORP-VS", "t1").await.expect("read").is_none());
    assert_eq!(store.consent_uses("c-1").await.expect("uses").len(), 1);
}

/// A pull held for the holder's review: held once, its log index and offer noted, answered
/// once before its deadline, concluded, and swept after it.
async fn pulls_held_for_review_read_back_alike(store: Store, _url: String) {
    let review = PendingReview {
        requester: "AS-VS".into(),
        transfer_id: "r1".into(),
        holder: "AI-VS".into(),
        subject: "abc".into(),
        request_sha256: vec![1; 32],
        created_micros: 10,
        deadline_micros: 1_000,
        held_entry: None,
        offered: false,
        answer: None,
    };
    assert!(store.hold_for_review(&review).await.expect("hold"));
    assert!(!store.hold_for_review(&review).await.expect("hold"), "held once");
    assert_eq!(store.pending_reviews_of("AS-VS").await.expect("count"), 1);
    store.review_held("AS-VS", "r1", 12).await.expect("held entry");
    store.review_offered("AS-VS", "r1").await.expect("offered");
    let answer = ReviewAnswer {
        reviewer: "carl@AI-VS".into(),
        approved: true,
        facts: vec!["a".into(), "b".into()],
        refusal_reason: String::new(),
    };
    assert!(
        !store
            .answer_review("AS-VS", "r1", "ORP-VS", &answer, 20)
            .await
            .expect("answer"),
        "not the holder"
    );
    assert!(
        !store
            .answer_review("AS-VS", "r1", "AI-VS", &answer, 1_000)
            .await
            .expect("answer"),
        "past the deadline"
    );
    assert!(
        store
            .answer_review("AS-VS", "r1", "AI-VS", &answer, 20)
            .await
            .expect("answer")
    );
    assert!(
        !store
            .answer_review("AS-VS", "r1", "AI-VS", &answer, 21)
            .await
            .expect("answer"),
        "answered once"
    );
    let read = store.pending_review("AS-VS", "r1").await.expect("read").expect("r1");
    assert_eq!(
        (
            read.held_entry,
            read.offered,
            read.request_sha256.clone(),
            read.deadline_micros
        ),
        (Some(12), true, vec![1; 32], 1_000)
    );
    let got = read.answer.expect("answered");
    assert_eq!(
        (got.reviewer.as_str(), got.approved, got.facts),
        ("carl@AI-VS", true, vec!["a".to_owned(), "b".to_owned()])
    );
    store.review_concluded("AS-VS", "r1").await.expect("concluded");
    assert!(store.pending_review("AS-VS", "r1").await.expect("read").is_none());
    assert!(
        store
            .hold_for_review(&PendingReview {
                transfer_id: "r2".into(),
                ..review
            })
            .await
            .expect("hold")
    );
    assert_eq!(store.forget_reviews_before(1_000).await.expect("sweep"), 0);
    assert_eq!(store.forget_reviews_before(1_001).await.expect("sweep"), 1);
}

/// Two gateway processes on one database (two handles here), the same sender's transfer id
/// recorded by both at once: one record, the other told it is a duplicate (which the pipeline
/// answers TRANSFER_IN_PROGRESS, appending nothing) — the database's keys are the arbiter, not
/// a process's memory.
async fn the_same_transfer_recorded_through_two_handles_at_once_is_recorded_once(store: Store, url: String) {
    let other = Store::open(&url).await.expect("a second handle");
    for round in 0..8 {
        let id = format!("twice-{round}");
        let obligation = format!("ORP-VS:{id}:0");
        let (a, b) = tokio::join!(
            try_record(&store, "ORP-VS", &id, &obligation),
            try_record(&other, "ORP-VS", &id, &obligation),
        );
        let outcomes = [a, b];
        assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
        assert!(
            outcomes.iter().any(|r| matches!(r, Err(StoreError::Duplicate))),
            "{outcomes:?}"
        );
        let again = try_record(&other, "ORP-VS", &id, &obligation).await;
        assert!(matches!(again, Err(StoreError::Duplicate)), "{again:?}");
    }
    let due = store.held().await.expect("held");
    assert_eq!(due.len(), 8, "one held record per id");
    other.close().await;
}
