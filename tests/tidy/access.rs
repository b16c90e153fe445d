//! The access table covers the contract exactly: every rpc of every service in the
//! file descriptor set has a row (a new rpc cannot go live open to all or to none by
//! accident), and every row names an rpc that exists.

use std::collections::BTreeSet;

use prost::Message;

fn rpcs_of_the_contract() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(cii_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut paths = BTreeSet::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                paths.insert(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    paths
}

#[test]
fn every_rpc_of_the_contract_has_exactly_one_row_of_the_access_table() {
    let contract = rpcs_of_the_contract();
    assert!(contract.len() > 50, "{contract:?}");
    let table: BTreeSet<String> = cii_types::access::RPCS.iter().map(|r| r.path.to_owned()).collect();
    assert_eq!(table.len(), cii_types::access::RPCS.len(), "a path twice in the table");
    let missing: Vec<&String> = contract.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "rpcs without a row (nobody may call them): {missing:?}"
    );
    let stale: Vec<&String> = table.difference(&contract).collect();
    assert!(stale.is_empty(), "rows for rpcs the contract no longer has: {stale:?}");
    for path in &contract {
        assert!(cii_types::access::rpc(path).is_some(), "{path}");
    }
}

/// docs/security.md prints the table; it must say what the code says.
#[test]
fn the_security_guide_prints_the_access_table() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md")).expect("docs/security.md");
    for cii_types::access::Row { path, access, family } in cii_types::access::RPCS {
        let who = match access {
            cii_types::access::Access::Public => "anyone admitted".to_owned(),
            cii_types::access::Access::Peer => "peer certificate".to_owned(),
            cii_types::access::Access::Users(roles) => roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        };
        let limit = family.map_or("—", |f| f.as_str());
        let row = format!("| `{path}` | {who} | {limit} |");
        assert!(doc.contains(&row), "docs/security.md lacks the row {row}");
    }
}
