//! Data already written survives every release. `tests/fixtures/release-0.1/` holds what
//! release 0.1 (commit e68c5ca) wrote running `cii demo`: the gateway's operational store and
//! audit log, the consent registry's store, six nodes' stores; `expected.toml` there says what
//! that release had written and answered, read from the files without this build. This build
//! opens copies (its migrations run on the copies), answers the same questions and verifies
//! the log. A later change of a stored format adds its own fixture beside this one; this test
//! stays green.

use std::path::{Path, PathBuf};

use cii_proto::common::decision::Outcome;
use cii_types::TransferState;
use prost::Message;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/release-0.1")
}

fn expected() -> toml::Value {
    let text = std::fs::read_to_string(fixture().join("expected.toml")).expect("expected.toml");
    toml::from_str(&text).expect("expected.toml parses")
}

fn str_of<'a>(v: &'a toml::Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{key} in {v:?}"))
}

fn int_of(v: &toml::Value, key: &str) -> i64 {
    v.get(key)
        .and_then(toml::Value::as_integer)
        .unwrap_or_else(|| panic!("{key} in {v:?}"))
}

fn table<'a>(v: &'a toml::Value, key: &str) -> &'a [toml::Value] {
    v.get(key).and_then(toml::Value::as_array).map_or(&[], Vec::as_slice)
}

/// A copy of the fixture (stores are opened read-write and migrated: never the checked-in files).
fn copy() -> tempfile::TempDir {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture(), dir.path());
    dir
}

fn sqlite(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

#[tokio::test]
async fn the_audit_log_written_by_release_0_1_verifies_the_same() {
    let expected = expected();
    let audit = expected.get("audit").expect("[audit]");
    let dir = copy();
    let store = cii_audit::Store::open_read_only(&sqlite(&dir.path().join("gateway/audit.db")))
        .await
        .expect("open the audit store");
    let vkey = std::fs::read_to_string(dir.path().join("gateway/audit.vkey")).expect("vkey");
    let verifier = cii_audit::note::Verifier::from_vkey(vkey.trim()).expect("vkey parses");
    let report = cii_audit::verify::verify(&store, &verifier, str_of(audit, "origin"), |_, _| {})
        .await
        .expect("the log verifies");
    assert_eq!(report.entries, int_of(audit, "entries") as u64);
    assert_eq!(report.checkpoints, int_of(audit, "checkpoints") as u64);
    let newest = report.newest.expect("a checkpoint");
    let note = str_of(audit, "newest_checkpoint");
    let written = verifier.open_checkpoint(note, verifier.name()).expect("the note opens");
    assert_eq!((newest.size, newest.root), (written.size, written.root));
    // Every body decodes with this build's decoder for its version.
    let entries = store.entries(0, 1000).await.expect("entries");
    assert_eq!(entries.len() as i64, int_of(audit, "entries"));
    for stored in &entries {
        let body = stored.readable().expect("no month destroyed");
        cii_audit::entry::decode(body).expect("a version-1 entry decodes");
    }
    store.close().await;
}

#[tokio::test]
async fn the_gateway_store_written_by_release_0_1_answers_the_same() {
    let expected = expected();
    let dir = copy();
    let store = cii_gateway::store::Store::open(&sqlite(&dir.path().join("gateway/gateway.db")))
        .await
        .expect("open and migrate the gateway's store");
    let transfers = table(&expected, "transfer");
    assert_eq!(transfers.len(), 6);
    for t in transfers {
        let id = str_of(t, "id");
        let row = store
            .transfer(str_of(t, "caller"), id)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("{id} recorded"));
        assert_eq!(i64::from(row.state.code()), int_of(t, "state"), "{id}");
        assert_eq!(
            row.state,
            TransferState::from_code(int_of(t, "state")).expect("a state")
        );
        assert_eq!(
            row.pull,
            t.get("pull").and_then(toml::Value::as_bool) == Some(true),
            "{id}"
        );
        assert!(!row.held, "{id}");
        let response = cii_proto::gateway::TransferResponse::decode(row.response.as_slice()).expect("decodes");
        let outcome = response.decision.expect("a decision").outcome;
        let outcome = Outcome::try_from(outcome).expect("an outcome");
        assert_eq!(outcome.as_str_name(), str_of(t, "decision"), "{id}");
        assert!(response.receipt.is_some(), "{id}: the receipt is kept");
    }
    for o in table(&expected, "obligation") {
        let owner = str_of(o, "owner");
        let listed = store.obligations(owner, true).await.expect("obligations");
        assert!(listed.iter().any(|row| {
            cii_proto::common::Obligation::decode(row.wire.as_slice()).is_ok_and(|w| w.id == str_of(o, "id"))
        }));
    }
    store.close().await;
}

#[tokio::test]
async fn the_consent_store_written_by_release_0_1_answers_the_same() {
    let expected = expected();
    let dir = copy();
    let store = cii_consent::store::Store::open(&sqlite(&dir.path().join("consent/consent.db")))
        .await
        .expect("open and migrate the registry's store");
    let consents = table(&expected, "consent");
    assert_eq!(consents.len(), 2);
    for c in consents {
        let id = str_of(c, "id");
        let (_, versions) = store.history(id).await.expect("read").unwrap_or_else(|| panic!("{id}"));
        assert_eq!(versions.len() as i64, int_of(c, "versions"), "{id}");
        let newest = versions.last().expect("a version");
        let revoked = c.get("revoked").and_then(toml::Value::as_bool) == Some(true);
        assert_eq!(newest.revocation.is_some(), revoked, "{id}");
        assert_eq!(newest.id, id);
    }
}

#[tokio::test]
async fn the_node_stores_written_by_release_0_1_answer_the_same() {
    let expected = expected();
    let dir = copy();
    let nodes = table(&expected, "node");
    assert_eq!(nodes.len(), 6);
    for node in nodes {
        let id = str_of(node, "id");
        let folder = dir.path().join("nodes").join(id);
        let key = std::fs::read_to_string(folder.join("store.key")).expect("store key");
        let key = cii_node::store::parse_key(&key).expect("64 hex digits");
        let store = cii_node::store::Store::open(&sqlite(&folder.join("node.db")), &key)
            .await
            .expect("open and migrate the node's store");
        for person in table(node, "person") {
            let record = str_of(person, "record");
            let (pseudonym, avs) = store
                .by_record(record)
                .await
                .expect("the AVS number unseals with the store key")
                .unwrap_or_else(|| panic!("{id}: {record} enrolled"));
            let hex: String = pseudonym.0.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, str_of(person, "pseudonym"), "{id}: {record}");
            let written = cii_types::AvsNumber::parse(str_of(person, "avs")).expect("synthetic AVS");
            assert!(avs.expose_digits() == written.expose_digits(), "{id}: {record}");
        }
        let inbox = store.inbox(100).await.expect("inbox");
        assert_eq!(inbox.len() as i64, int_of(node, "inbox"), "{id}");
        for item in &inbox {
            cii_proto::node::InboxItem::decode(item.1.as_slice()).expect("an inbox item decodes");
        }
        for transfer in table(node, "outgoing") {
            let transfer = transfer.as_str().expect("an id");
            assert!(
                store.outgoing(transfer).await.expect("read").is_some(),
                "{id}: {transfer}"
            );
        }
        store.close().await;
    }
}
