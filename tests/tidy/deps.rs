//! Architecture invariants on the dependency graph (ARCHITECTURE.md,
//! "Architecture invariants").

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// A dependency graph: crate → the crates it depends on (normal dependencies).
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Crates that must do no I/O: nothing async, no network, no database.
const PURE: &[&str] = &["cii-types", "cii-policy", "cii-pseudonym"];
/// What a pure crate may not reach, even transitively.
const IMPURE: &[&str] = &[
    "tokio",
    "tonic",
    "sqlx",
    "sqlx-core",
    "hyper",
    "mio",
    "tracing-subscriber",
];
/// Crates that run a process; only the cli (and the tests) may depend on them.
const SERVICES: &[&str] = &["cii-gateway", "cii-node", "cii-consent", "cii-transcryptor"];
/// Crypto stacks we never link: one provider, ring.
const BANNED: &[&str] = &[
    "aws-lc-rs",
    "aws-lc-sys",
    "aws-lc-fips-sys",
    "openssl",
    "openssl-sys",
    "native-tls",
];

/// The rules, applied to the workspace's direct edges (`direct`) and to each
/// pure crate's own transitive closure (`closure`, resolved for that crate
/// alone so that workspace feature unification cannot hide or fake an edge).
fn violations(direct: &Graph, closure: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (from, deps) in direct {
        for to in deps {
            if SERVICES.contains(&to.as_str()) && from != "cii" && from != "cii-tests" {
                found.push(format!(
                    "{from} depends on service crate {to}: only cii (cli) and cii-tests may"
                ));
            }
            if to == "cii" && from != "cii-tests" {
                found.push(format!("{from} depends on the cli crate: only cii-tests may"));
            }
            if BANNED.contains(&to.as_str()) {
                found.push(format!("{from} links {to}: ring is the only crypto provider"));
            }
        }
        if from == "cii-proto" && deps.iter().any(|d| d.starts_with("cii-")) {
            found.push("cii-proto depends on a workspace crate: it is layer 0".to_owned());
        }
        if from == "cii-types" && deps.iter().any(|d| d.starts_with("cii-") && d != "cii-proto") {
            found.push("cii-types depends on a workspace crate other than cii-proto".to_owned());
        }
        if from == "cii-policy" && deps.iter().any(|d| d == "cii-pseudonym" || d == "cii-audit") {
            found.push("cii-policy depends on cii-pseudonym or cii-audit: they meet only in cii-gateway".to_owned());
        }
        if from == "cii-kit" && deps.iter().any(|d| d == "cii-policy") {
            found.push("cii-kit depends on cii-policy: plumbing makes no domain decision".to_owned());
        }
    }
    for (pure, reached) in closure {
        for bad in IMPURE {
            if reached.contains(*bad) {
                found.push(format!(
                    "{pure} reaches {bad} (even transitively): pure crates do no I/O"
                ));
            }
        }
    }
    found
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

/// Every crate of the resolved workspace graph with its normal dependencies, by name.
fn workspace_graph() -> Graph {
    let out = cargo()
        .args(["metadata", "--format-version", "1"])
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p["name"].as_str().expect("name")))
        .collect();
    let mut graph = Graph::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve") {
        let from = names[node["id"].as_str().expect("id")].to_owned();
        let deps = graph.entry(from).or_default();
        for dep in node["deps"].as_array().expect("deps") {
            let normal = dep["dep_kinds"]
                .as_array()
                .expect("kinds")
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                deps.insert(names[dep["pkg"].as_str().expect("pkg")].to_owned());
            }
        }
    }
    graph
}

/// The normal-dependency closure of `krate` built on its own (its own features only).
fn closure_of(krate: &str) -> Option<BTreeSet<String>> {
    closure_with(krate, &[])
}

/// [`closure_of`] with extra `cargo tree` arguments (e.g. `--no-default-features`).
fn closure_with(krate: &str, extra: &[&str]) -> Option<BTreeSet<String>> {
    let out = cargo()
        .args(["tree", "--offline", "-p", krate])
        .args(extra)
        .args(["-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .expect("cargo tree");
    if !out.status.success() {
        // The crate does not exist (yet).
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn the_workspace_respects_the_dependency_invariants() {
    let graph = workspace_graph();
    assert!(
        graph.contains_key("cii-types") && graph.contains_key("cii-gateway"),
        "unexpected metadata"
    );
    let mut closure = BTreeMap::new();
    for pure in PURE {
        if let Some(reached) = closure_of(pure) {
            closure.insert((*pure).to_owned(), reached);
        }
    }
    assert!(
        closure.contains_key("cii-types")
            && closure.contains_key("cii-policy")
            && closure.contains_key("cii-pseudonym")
    );
    // The audit log's pure parts (entries, tree, notes, witness) build without its store.
    let audit = closure_with("cii-audit", &["--no-default-features"]).expect("cii-audit");
    closure.insert("cii-audit --no-default-features".to_owned(), audit);
    let found = violations(&graph, &closure);
    assert!(found.is_empty(), "dependency invariants broken:\n{}", found.join("\n"));
}

fn graph(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::new();
    for (from, to) in edges {
        g.entry((*from).to_owned()).or_default().insert((*to).to_owned());
    }
    g
}

fn known_good() -> Graph {
    graph(&[
        ("cii-types", "cii-proto"),
        ("cii-policy", "cii-types"),
        ("cii-kit", "tonic"),
        ("cii-gateway", "cii-kit"),
        ("cii-gateway", "cii-policy"),
        ("cii", "cii-gateway"),
        ("cii", "cii-node"),
        ("cii-tests", "cii-gateway"),
        ("cii-tests", "cii"),
        ("rustls", "ring"),
    ])
}

#[test]
fn a_known_good_edge_set_passes() {
    let closure = BTreeMap::from([(
        "cii-types".to_owned(),
        BTreeSet::from(["cii-proto".to_owned(), "prost".to_owned()]),
    )]);
    assert_eq!(violations(&known_good(), &closure), Vec::<String>::new());
}

#[test]
fn known_bad_edges_are_each_caught() {
    let bad_edges = [
        (("cii-node", "cii-gateway"), "depends on service crate cii-gateway"),
        (("cii-kit", "cii-consent"), "depends on service crate cii-consent"),
        (("cii-gateway", "cii"), "depends on the cli crate"),
        (("rustls", "aws-lc-rs"), "links aws-lc-rs"),
        (("cii-kit", "openssl-sys"), "links openssl-sys"),
        (("cii-proto", "cii-types"), "cii-proto depends on a workspace crate"),
        (("cii-types", "cii-kit"), "cii-types depends on a workspace crate"),
        (
            ("cii-policy", "cii-audit"),
            "cii-policy depends on cii-pseudonym or cii-audit",
        ),
        (("cii-kit", "cii-policy"), "cii-kit depends on cii-policy"),
    ];
    for ((from, to), expected) in bad_edges {
        let mut g = known_good();
        g.entry(from.to_owned()).or_default().insert(to.to_owned());
        let found = violations(&g, &BTreeMap::new());
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "{from} -> {to} not caught: {found:?}"
        );
    }
    // A pure crate reaching tokio through any path.
    let closure = BTreeMap::from([(
        "cii-policy".to_owned(),
        BTreeSet::from(["cii-types".to_owned(), "tokio".to_owned()]),
    )]);
    let found = violations(&known_good(), &closure);
    assert!(
        found.iter().any(|v| v.contains("cii-policy reaches tokio")),
        "{found:?}"
    );
}
