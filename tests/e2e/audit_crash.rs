//! Crash test: a process appends under concurrent load and is SIGKILLed at
//! random moments, 20 times per store; after each restart every acknowledged
//! append is present and the log verifies.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cii_audit::note::{Signer, generate_key_pem};
use cii_audit::{Store, entry::decode};

const ORIGIN: &str = "cii.crash/audit";
const KILLS: usize = 20;

/// A small xorshift generator: random kill moments, reproducible from the printed seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

async fn crash_and_check(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("audit.key");
    std::fs::write(&key, generate_key_pem().expect("key")).expect("write key");
    let verifier = Signer::from_pem(ORIGIN, &std::fs::read_to_string(&key).expect("read"))
        .expect("signer")
        .verifier();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed}");
    // Migrated before the first load process starts: a kill during the schema's creation
    // would test the migration runner, not the log (and could come before any append).
    Store::open(url).await.expect("migrate").close().await;
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    for round in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cii-audit-load"))
            .args([url, &key.to_string_lossy(), ORIGIN])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn load");
        let stdout = child.stdout.take().expect("stdout");
        let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        // Once it writes (its first acknowledgement: a loaded machine may take a while to
        // start it), let it write for a random while, then kill it without warning.
        let first = tokio::task::block_in_place(|| line_rx.recv_timeout(Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_millis(next(&mut seed) % 400)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        reader.join().expect("reader");
        let lines: Vec<String> = first.into_iter().chain(line_rx.try_iter()).collect();
        assert!(
            !lines.is_empty() || round > 0,
            "the load process acknowledged nothing in round {round}"
        );
        for line in lines {
            let (index, id) = line.split_once(' ').expect("index id");
            acknowledged.push((index.parse().expect("index"), id.to_owned()));
        }
        // After the crash: every acknowledged append is there, and the log verifies.
        let store = Store::open_read_only(url).await.expect("open");
        let report = cii_audit::verify::verify(&store, &verifier, ORIGIN, |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let stored = store.entries(0, u32::MAX).await.expect("entries");
        for (index, id) in &acknowledged {
            let entry = stored.get(*index as usize).unwrap_or_else(|| {
                panic!(
                    "round {round}: acknowledged entry {index} lost ({} stored)",
                    report.entries
                )
            });
            assert_eq!(
                decode(entry.readable().expect("readable")).expect("decode").transfer_id,
                *id,
                "round {round}: entry {index}"
            );
        }
        store.close().await;
    }
    assert!(
        acknowledged.len() > KILLS,
        "too little load to mean anything: {}",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    crash_and_check(&format!("sqlite:{}", dir.path().join("audit.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_on_postgres() {
    crash_and_check(&cii_tests::pg::fresh_database().await).await;
}
