//! The audit log on both stores: receipts, tamper detection, and verification
//! by an independent verifier written here from RFC 6962 and the C2SP texts.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cii_audit::merkle::{Hash, leaf_hash};
use cii_audit::note::{Signer, Verifier, generate_key_pem};
use cii_audit::verify::{VerifyError, verify};
use cii_audit::{Entry, EntryKind, Log, Store};

const ORIGIN: &str = "cii.test/audit";

async fn stores() -> Vec<(&'static str, String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite:{}", dir.path().join("audit.db").display());
    vec![
        ("sqlite", sqlite, Some(dir)),
        ("postgres", cii_tests::pg::fresh_database().await, None),
    ]
}

fn entry(i: u64) -> Entry {
    Entry {
        kind: if i.is_multiple_of(3) {
            EntryKind::TransferDenied
        } else {
            EntryKind::TransferPermitted
        } as i32,
        time_micros: 1_790_000_000_000_000 + i as i64,
        transfer_id: format!("t-{i}"),
        sender: "ORP-VS".into(),
        recipient: "AI-VS".into(),
        acting_user: "anna".into(),
        audit_pseudonym: vec![(i % 251) as u8; 64],
        ..Entry::default()
    }
}

/// Fills a log with `n` entries from concurrent writers; returns the signer and receipts.
async fn filled(url: &str, n: u64) -> (Verifier, Vec<cii_audit::Receipt>) {
    let pem = generate_key_pem().expect("key");
    let signer = Signer::from_pem(ORIGIN, &pem).expect("signer");
    let verifier = signer.verifier();
    let store = Store::open(url).await.expect("open");
    let (log, task) = Log::open(store.clone(), std::sync::Arc::new(signer), ORIGIN.into())
        .await
        .expect("log");
    let mut handles = Vec::new();
    for i in 0..n {
        let log = log.clone();
        handles.push(tokio::spawn(async move { log.append(entry(i)).await.expect("append") }));
    }
    let mut receipts = Vec::new();
    for h in handles {
        receipts.push(h.await.expect("join"));
    }
    drop(log);
    let stats = task.await.expect("sequencer");
    assert_eq!(stats.entries, n);
    assert!(
        stats.batches < n,
        "concurrent appends were grouped into fewer commits ({} batches for {n})",
        stats.batches
    );
    store.close().await;
    (verifier, receipts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_durable_and_their_receipts_verify_independently() {
    for (name, url, _dir) in stores().await {
        let (verifier, receipts) = filled(&url, 300).await;
        let mut indices: Vec<u64> = receipts.iter().map(|r| r.index).collect();
        indices.sort();
        assert_eq!(indices, (0..300).collect::<Vec<_>>(), "{name}: contiguous indices");
        for r in &receipts {
            // The independent verifier: C2SP signed note + RFC 6962 inclusion.
            let (size, root) =
                independent::open_checkpoint(&r.checkpoint, &verifier.vkey(), ORIGIN).expect("checkpoint");
            assert_eq!(size, r.tree_size);
            assert!(r.index < size);
            assert!(
                independent::inclusion(&r.leaf_hash, r.index, size, &r.inclusion_proof, &root),
                "{name}: receipt {}",
                r.index
            );
        }
        let store = Store::open_read_only(&url).await.expect("open");
        let report = verify(&store, &verifier, ORIGIN, |_, _| {})
            .await
            .expect("untouched log verifies");
        assert_eq!(report.entries, 300);
        // Stored entries hash to what the receipts said.
        let stored = store.entries(0, 1000).await.expect("entries");
        for r in &receipts {
            assert_eq!(
                leaf_hash(stored[r.index as usize].readable().expect("readable")),
                r.leaf_hash
            );
        }
        // Consistency between every pair of checkpoints, checked independently from the entries.
        let leaves: Vec<Hash> = stored
            .iter()
            .map(|e| leaf_hash(e.readable().expect("readable")))
            .collect();
        let mut tree = cii_audit::merkle::Tree::new();
        for l in &leaves {
            tree.push(*l);
        }
        let checkpoints = store.checkpoints().await.expect("checkpoints");
        for pair in checkpoints.windows(2) {
            let (old, new) = (pair[0].0, pair[1].0);
            let (_, old_root) = independent::open_checkpoint(&pair[0].1, &verifier.vkey(), ORIGIN).expect("old");
            let (_, new_root) = independent::open_checkpoint(&pair[1].1, &verifier.vkey(), ORIGIN).expect("new");
            assert_eq!(independent::mth(&leaves[..old as usize]), old_root);
            let proof = tree.consistency_proof(old, new).expect("proof");
            assert!(
                independent::consistency(old, new, &old_root, &new_root, &proof),
                "{name}: {old} -> {new}"
            );
        }
        store.close().await;
    }
}

/// Runs raw SQL against the store, bypassing the append-only triggers as an attacker with database access would.
async fn tamper(url: &str, statements: &[&str]) {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("connect");
        for s in [
            "DROP TRIGGER audit_entry_no_update",
            "DROP TRIGGER audit_entry_no_delete",
            "DROP TRIGGER audit_checkpoint_no_update",
            "DROP TRIGGER audit_checkpoint_no_delete",
            "DROP TRIGGER audit_body_key_no_delete",
            "DROP TRIGGER audit_body_key_destroy_only",
        ] {
            sqlx::query(s).execute(&pool).await.expect("drop trigger");
        }
        for s in statements {
            sqlx::query(s)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
        sqlx::query("ALTER TABLE audit_entry DISABLE TRIGGER ALL")
            .execute(&pool)
            .await
            .expect("disable");
        for table in ["audit_checkpoint", "audit_body_key"] {
            sqlx::query(&format!("ALTER TABLE {table} DISABLE TRIGGER ALL"))
                .execute(&pool)
                .await
                .expect("disable");
        }
        for s in statements {
            let s = s
                .replace("X'ff'", "'\\xff'::bytea")
                .replace("X'00'", "'\\x00'::bytea")
                .replace("X'", "'\\x")
                .replace("randomblob(1)", "'\\x00'::bytea");
            sqlx::query(&s)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_tampering_is_caught_and_named() {
    // (what, statements, expected first bad index, text in the problem)
    let cases: Vec<(&str, Vec<String>, u64, &str)> = vec![
        // The byte is changed whatever it was (a random nonce byte is 0xff once in 256 runs).
        ("one byte of one entry", vec!["UPDATE audit_entry SET entry = substr(entry, 1, 10) || CASE WHEN substr(entry, 11, 1) = X'ff' THEN X'00' ELSE X'ff' END || substr(entry, 12) WHERE idx = 37".into()], 37, ""),
        ("an entry deleted", vec!["DELETE FROM audit_entry WHERE idx = 50".into()], 50, "missing"),
        ("two entries reordered", vec![
            "UPDATE audit_entry SET idx = -1 WHERE idx = 20".into(),
            "UPDATE audit_entry SET idx = 20 WHERE idx = 21".into(),
            "UPDATE audit_entry SET idx = 21 WHERE idx = -1".into(),
        ], 20, "does not open"),
        ("the tail truncated", vec!["DELETE FROM audit_entry WHERE idx >= 90".into()], 90, "truncated"),
        ("a body key deleted", vec!["DELETE FROM audit_body_key".into()], 0, "key of period 2026-09 is missing"),
        ("a body moved to another entry", vec!["UPDATE audit_entry SET entry = (SELECT entry FROM audit_entry WHERE idx = 12) WHERE idx = 13".into()], 13, "does not open"),
        ("a checkpoint replaced", vec!["UPDATE audit_checkpoint SET note = replace(note, 'cii.test/audit', 'cii.test/audit2') WHERE tree_size = (SELECT MIN(tree_size) FROM audit_checkpoint)".into()], 0, "checkpoint"),
    ];
    for (store_name, _, _) in stores().await {
        for (what, statements, index, needle) in &cases {
            let (url, _dir) = match store_name {
                "sqlite" => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    (format!("sqlite:{}", dir.path().join("audit.db").display()), Some(dir))
                }
                _ => (cii_tests::pg::fresh_database().await, None),
            };
            let (verifier, _) = filled(&url, 100).await;
            let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
            tamper(&url, &statements).await;
            let store = Store::open_read_only(&url).await.expect("open");
            match verify(&store, &verifier, ORIGIN, |_, _| {}).await {
                Err(VerifyError::Bad { index: found, problem }) => {
                    assert_eq!(found, *index, "{store_name}, {what}: {problem}");
                    assert!(problem.contains(needle), "{store_name}, {what}: {problem}");
                }
                other => panic!("{store_name}, {what}: tampering not caught: {other:?}"),
            }
            store.close().await;
        }
    }
}

#[tokio::test]
async fn the_store_refuses_updates_and_deletes() {
    for (name, url, _dir) in stores().await {
        filled(&url, 5).await;
        let result = if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
            sqlx::query("DELETE FROM audit_entry WHERE idx = 1")
                .execute(&pool)
                .await
                .map(|_| ())
        } else {
            let pool = sqlx::PgPool::connect(&url).await.expect("connect");
            sqlx::query("UPDATE audit_entry SET entry = entry WHERE idx = 1")
                .execute(&pool)
                .await
                .map(|_| ())
        };
        let err = result.expect_err("append-only");
        assert!(err.to_string().contains("append-only"), "{name}: {err}");
    }
}

/// A verifier written from RFC 6962 §2.1 and the C2SP signed-note and
/// tlog-checkpoint texts, sharing no code with cii-audit's verifier.
mod independent {
    use super::*;
    use ring::digest::{SHA256, digest};
    use ring::signature::{ED25519, UnparsedPublicKey};

    fn h(parts: &[&[u8]]) -> Hash {
        let mut all = Vec::new();
        for p in parts {
            all.extend_from_slice(p);
        }
        digest(&SHA256, &all).as_ref().try_into().expect("32 bytes")
    }

    fn k(n: u64) -> u64 {
        // The largest power of two smaller than n.
        1 << (63 - (n - 1).leading_zeros())
    }

    /// MTH(D[n]) from the definition.
    pub fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => h(&[]),
            1 => leaves[0],
            n => {
                let k = k(n as u64) as usize;
                h(&[&[1], &mth(&leaves[..k]), &mth(&leaves[k..])])
            }
        }
    }

    /// Rebuilds the root from PATH(m, D[n]) (siblings listed bottom-up, outermost last).
    fn root_from_path(m: u64, n: u64, leaf: &Hash, path: &[Hash]) -> Option<Hash> {
        if n == 1 {
            return path.is_empty().then_some(*leaf);
        }
        let (last, rest) = path.split_last()?;
        let k = k(n);
        Some(if m < k {
            h(&[&[1], &root_from_path(m, k, leaf, rest)?, last])
        } else {
            h(&[&[1], last, &root_from_path(m - k, n - k, leaf, rest)?])
        })
    }

    pub fn inclusion(leaf: &Hash, m: u64, n: u64, path: &[Hash], root: &Hash) -> bool {
        m < n && root_from_path(m, n, leaf, path).as_ref() == Some(root)
    }

    /// Rebuilds (old subtree hash, new subtree hash) from SUBPROOF(m, D[n], b).
    fn sub(m: u64, n: u64, b: bool, old_root: &Hash, proof: &[Hash]) -> Option<(Hash, Hash)> {
        if m == n {
            return if b {
                proof.is_empty().then_some((*old_root, *old_root))
            } else {
                match proof {
                    [only] => Some((*only, *only)),
                    _ => None,
                }
            };
        }
        let (last, rest) = proof.split_last()?;
        let k = k(n);
        if m <= k {
            let (o, l) = sub(m, k, b, old_root, rest)?;
            Some((o, h(&[&[1], &l, last])))
        } else {
            let (o, r) = sub(m - k, n - k, false, old_root, rest)?;
            Some((h(&[&[1], last, &o]), h(&[&[1], last, &r])))
        }
    }

    pub fn consistency(m: u64, n: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> bool {
        0 < m && m < n && sub(m, n, true, old_root, proof) == Some((*old_root, *new_root))
    }

    /// Opens a C2SP signed checkpoint with a vkey `<name>+<hex id>+<base64(0x01‖key)>`.
    pub fn open_checkpoint(note: &str, vkey: &str, origin: &str) -> Option<(u64, Hash)> {
        let mut parts = vkey.splitn(3, '+');
        let (name, id_hex, key_b64) = (parts.next()?, parts.next()?, parts.next()?);
        let typed = STANDARD.decode(key_b64).ok()?;
        if typed.first() != Some(&1) || typed.len() != 33 {
            return None;
        }
        let key = &typed[1..];
        let id = &h(&[name.as_bytes(), b"\n", &[1], key])[..4];
        if id.iter().map(|b| format!("{b:02x}")).collect::<String>() != id_hex {
            return None;
        }
        let (text, signatures) = note.split_at(note.rfind("\n\n")? + 1);
        let signatures = &signatures[1..];
        let ok = signatures.lines().any(|line| {
            let Some(rest) = line.strip_prefix("— ") else {
                return false;
            };
            let Some((signer, b64)) = rest.split_once(' ') else {
                return false;
            };
            let Ok(blob) = STANDARD.decode(b64) else { return false };
            signer == name
                && blob.len() == 68
                && &blob[..4] == id
                && UnparsedPublicKey::new(&ED25519, key)
                    .verify(text.as_bytes(), &blob[4..])
                    .is_ok()
        });
        if !ok {
            return None;
        }
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() < 3 || lines[0] != origin {
            return None;
        }
        let size = lines[1].parse().ok()?;
        let root: Hash = STANDARD.decode(lines[2]).ok()?.try_into().ok()?;
        Some((size, root))
    }
}

#[tokio::test]
async fn the_gateway_records_its_rulebook_and_serves_checkpoints_and_proofs_to_witnesses() {
    use cii_proto::audit::{
        ConsistencyProofRequest, GetCheckpointRequest, InclusionProofRequest, audit_client::AuditClient,
    };
    let net = cii_tests::Network::start(&[cii_tests::member("AI-VS", cii_types::InstitutionType::Ai)]).await;
    let party = cii_types::PeerIdentity::Institution(net.node(0).member.id.clone());
    let token = net.token(0, "it-witness", &[cii_types::Role::Caseworker]);
    let mut client = AuditClient::new(net.gateway_channel_as(&party));
    let checkpoint = client
        .get_checkpoint(cii_tests::with_token(GetCheckpointRequest {}, &token))
        .await
        .expect("checkpoint")
        .into_inner();
    assert_eq!(
        checkpoint.tree_size, 2,
        "the rulebook and the registry activations are the first entries"
    );
    let key = std::fs::read_to_string(cii_kit::pki::audit_signing_key(&net.pki())).expect("key");
    let vkey = Signer::from_pem("cii.test/audit", &key)
        .expect("signer")
        .verifier()
        .vkey();
    let (size, root) =
        independent::open_checkpoint(&checkpoint.note, &vkey, "cii.test/audit").expect("signed checkpoint");
    let proof = client
        .get_inclusion_proof(cii_tests::with_token(
            InclusionProofRequest { index: 0, tree_size: 0 },
            &token,
        ))
        .await
        .expect("proof")
        .into_inner();
    let leaf: Hash = proof.leaf_hash.clone().try_into().expect("32 bytes");
    let hashes: Vec<Hash> = proof
        .hashes
        .iter()
        .map(|h| h.clone().try_into().expect("32 bytes"))
        .collect();
    assert!(independent::inclusion(&leaf, 0, size, &hashes, &root));
    let err = client
        .get_consistency_proof(cii_tests::with_token(
            ConsistencyProofRequest {
                old_size: 5,
                tree_size: 0,
            },
            &token,
        ))
        .await
        .expect_err("beyond the log");
    assert_eq!(cii_kit::grpc::error_code(&err).as_deref(), Some("PROOF_OUT_OF_RANGE"));
    // The entry is the activation of the running rulebook, with its hash.
    let federal =
        cii_policy::load(&cii_policy::federal_sources(), time::OffsetDateTime::now_utc().date()).expect("federal");
    let dir = net.stop().await;
    let url = format!("sqlite:{}", dir.path().join("gateway/audit.db").display());
    let store = Store::open_read_only(&url).await.expect("store");
    let entries = store.entries(0, 10).await.expect("entries");
    let entry = decode_entry(entries[0].readable().expect("readable"));
    assert_eq!(entry.kind, EntryKind::RulebookActivated as i32);
    assert_eq!(entry.rulebook_hash, federal.hash);
    assert_eq!(entry.detail, federal.version);
}

/// Retention destroys the key of a period: its bodies become unreadable for
/// good (the key's bytes are gone from the SQLite file), its leaf hashes stay,
/// the whole log still verifies, and nothing can be written into it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_shreds_a_period_and_the_log_still_verifies() {
    // 2024-01, 2024-02 and 2026-09 (the entries of `entry`).
    let times = [1_704_200_000_000_000_i64, 1_707_000_000_000_000, 1_790_000_000_000_000];
    for (name, url, dir) in stores().await {
        let signer = std::sync::Arc::new(Signer::from_pem(ORIGIN, &generate_key_pem().expect("key")).expect("signer"));
        let verifier = signer.verifier();
        let store = Store::open(&url).await.expect("open");
        let (log, task) = Log::open(store.clone(), signer.clone(), ORIGIN.into())
            .await
            .expect("log");
        for i in 0..30u64 {
            let time_micros = times[(i / 10) as usize] + i as i64;
            log.append(Entry {
                time_micros,
                ..entry(i)
            })
            .await
            .expect("append");
        }
        let january_key: Vec<u8> = if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
            let key = sqlx::query_scalar("SELECT key FROM audit_body_key WHERE period = '2024-01'")
                .fetch_one(&pool)
                .await
                .expect("key");
            pool.close().await;
            key
        } else {
            Vec::new()
        };
        // The run is logged first, naming the month (what `verify` checks a destruction against).
        log.append(Entry {
            kind: EntryKind::RetentionRun as i32,
            time_micros: 1_800_000_000_000_000,
            detail: "retention_days=365 cutoff=2026-01-15 periods=2024-01".into(),
            ..Entry::default()
        })
        .await
        .expect("retention run logged");
        store
            .destroy_keys(&["2024-01".to_owned()], 1_800_000_000_000_000)
            .await
            .expect("destroy");
        // Nothing can be sealed into a destroyed period again: refused, nothing appended.
        let err = log
            .append(Entry {
                time_micros: times[0],
                ..entry(99)
            })
            .await
            .expect_err("expired period");
        assert!(err.to_string().contains("2024-01"), "{name}: {err}");
        log.append(entry(30)).await.expect("the log goes on");
        drop(log);
        task.await.expect("sequencer");

        let stored = store.entries(0, 100).await.expect("entries");
        assert_eq!(stored.len(), 32, "{name}");
        for e in &stored {
            let expired = matches!(&e.body, cii_audit::store::Body::Expired { period } if period == "2024-01");
            assert_eq!(expired, e.index < 10, "{name}: entry {}", e.index);
            assert_eq!(e.readable().is_some(), e.index >= 10, "{name}: entry {}", e.index);
        }
        let report = verify(&store, &verifier, ORIGIN, |_, _| {})
            .await
            .expect("the tree still verifies");
        assert_eq!((report.entries, report.expired), (32, 10), "{name}");
        assert_eq!(report.expired_periods, ["2024-01"], "{name}");
        let periods = store.periods().await.expect("periods");
        let summary: Vec<(&str, bool, u64)> = periods
            .iter()
            .map(|p| (p.period.as_str(), p.destroyed_micros.is_some(), p.entries))
            .collect();
        assert_eq!(
            summary,
            [
                ("2024-01", true, 10),
                ("2024-02", false, 10),
                ("2026-09", false, 11),
                ("2027-01", false, 1)
            ],
            "{name}"
        );
        // A log that restarts after retention rebuilds its tree from the leaf hashes.
        let (log, _task) = Log::open(store.clone(), signer, ORIGIN.into()).await.expect("reopen");
        assert_eq!(log.checkpoint().0, 32, "{name}");
        store.close().await;
        if let Some(dir) = &dir {
            // Crypto-shredding: the destroyed key's bytes are nowhere in the database files.
            assert_eq!(january_key.len(), 32);
            for file in std::fs::read_dir(dir.path()).expect("dir") {
                // The -wal and -shm files go away when the last connection closes.
                let Ok(bytes) = std::fs::read(file.expect("file").path()) else {
                    continue;
                };
                assert!(
                    !bytes.windows(32).any(|w| w == january_key.as_slice()),
                    "{name}: the destroyed key is still in the file"
                );
            }
        }
    }
}

/// The key table only lets a key be destroyed: never replaced, revived or deleted.
#[tokio::test]
async fn body_keys_can_only_be_destroyed() {
    for (name, url, _dir) in stores().await {
        filled(&url, 3).await;
        let attempts = [
            "UPDATE audit_body_key SET key = key",
            "DELETE FROM audit_body_key",
            "UPDATE audit_body_key SET key = NULL, destroyed_micros = NULL",
        ];
        for sql in attempts {
            let result = if url.starts_with("sqlite:") {
                let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
                sqlx::query(sql).execute(&pool).await.map(|_| ())
            } else {
                let pool = sqlx::PgPool::connect(&url).await.expect("connect");
                sqlx::query(sql).execute(&pool).await.map(|_| ())
            };
            let err = result.expect_err(sql);
            assert!(err.to_string().contains("audit body key"), "{name}: {sql}: {err}");
        }
    }
}

fn decode_entry(bytes: &[u8]) -> Entry {
    cii_audit::entry::decode(bytes).expect("canonical entry")
}

/// A DPO may verify the log while the gateway appends to it: the verifier
/// reads checkpoints and entries in separate queries, so it must not call
/// entries committed between them "not covered".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_succeeds_while_the_log_is_being_appended_to() {
    for (name, url, _dir) in stores().await {
        let pem = generate_key_pem().expect("key");
        let signer = Signer::from_pem(ORIGIN, &pem).expect("signer");
        let verifier = signer.verifier();
        let store = Store::open(&url).await.expect("open");
        let (log, task) = Log::open(store.clone(), std::sync::Arc::new(signer), ORIGIN.into())
            .await
            .expect("log");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..8u64 {
            let (log, stop) = (log.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut i = w;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    log.append(entry(i)).await.expect("append");
                    i += 8;
                }
            }));
        }
        let reader = Store::open_read_only(&url).await.expect("open read-only");
        let mut verified = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            let report = verify(&reader, &verifier, ORIGIN, |_, _| {})
                .await
                .unwrap_or_else(|e| panic!("{name}: verification during appends: {e}"));
            verified = verified.max(report.entries);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer");
        }
        drop(log);
        task.await.expect("sequencer");
        assert!(verified > 0, "{name}: the log grew while verified");
        reader.close().await;
        store.close().await;
    }
}

#[tokio::test]
async fn the_writer_refuses_an_entry_the_reader_would_refuse_and_appends_nothing() {
    for (name, url, _dir) in stores().await {
        let signer = std::sync::Arc::new(Signer::from_pem(ORIGIN, &generate_key_pem().expect("key")).expect("signer"));
        let store = Store::open(&url).await.expect("open");
        let (log, task) = Log::open(store.clone(), signer, ORIGIN.into()).await.expect("log");
        log.append(entry(0)).await.expect("an ordinary entry");
        for (field, bad) in [
            (
                "detail",
                Entry {
                    detail: "x".repeat(70_000),
                    ..entry(1)
                },
            ),
            (
                "acting_user",
                Entry {
                    acting_user: "756.1234.5678.97".into(),
                    ..entry(1)
                },
            ),
            (
                "transfer_id",
                Entry {
                    transfer_id: "t\u{7}".into(),
                    ..entry(1)
                },
            ),
        ] {
            match log.append(bad).await {
                Err(cii_audit::LogError::Refused(r)) => assert_eq!(r.field, field, "{name}"),
                other => panic!("{name}: {field} not refused: {other:?}"),
            }
        }
        assert_eq!(log.checkpoint().0, 1, "{name}: nothing appended");
        let receipt = log.append(entry(2)).await.expect("the log goes on");
        assert_eq!(receipt.index, 1);
        drop(log);
        task.await.expect("sequencer");
        store.close().await;
    }
}
