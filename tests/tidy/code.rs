//! Shape of the code itself: short functions in the gateway, no cycle among a
//! crate's modules, statuses built in one place per service, and the domain
//! rules that must not be written twice living in `cii-types` only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::source::{production, root, rust_files};

/// The source folders of the workspace's crates (tests and benches excluded).
fn crate_sources() -> Vec<PathBuf> {
    [
        "proto/src",
        "proto/types/src",
        "gateway/src",
        "gateway/policy/src",
        "gateway/audit/src",
        "gateway/pseudonym/src",
        "consent/src",
        "services/kit/src",
        "services/node/src",
        "services/cli/src",
    ]
    .iter()
    .map(|d| root().join(d))
    .collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// (name, first line, length in lines) of every `fn` with a body in `text`.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let Some(at) = code.find("fn ") else { continue };
        let before = &code[..at];
        let item = before.is_empty()
            || before
                .split_whitespace()
                .all(|w| ["pub", "pub(crate)", "pub(super)", "async", "const", "unsafe", "extern"].contains(&w));
        if !item {
            continue;
        }
        let name: String = code[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The body: from the first `{` after the signature to its matching `}`.
        let mut depth = 0usize;
        let mut opened = false;
        let mut end = None;
        'scan: for (j, l) in lines.iter().enumerate().skip(i) {
            let mut in_str = false;
            for c in l.chars() {
                match c {
                    '"' => in_str = !in_str,
                    ';' if !opened && !in_str && depth == 0 => break 'scan,
                    '{' if !in_str => {
                        depth += 1;
                        opened = true;
                    }
                    '}' if !in_str => {
                        depth = depth.saturating_sub(1);
                        if opened && depth == 0 {
                            end = Some(j);
                            break 'scan;
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(end) = end {
            found.push((name, i + 1, end - i + 1));
        }
    }
    found
}

#[test]
fn no_function_in_the_gateway_is_longer_than_60_lines() {
    let mut long = Vec::new();
    for file in rust_files(&root().join("gateway/src")) {
        for (name, line, length) in functions(&production(&file)) {
            if length > 60 {
                long.push(format!("{}:{line} fn {name}: {length} lines", relative(&file)));
            }
        }
    }
    assert!(long.is_empty(), "functions over 60 lines:\n{}", long.join("\n"));
}

#[test]
fn the_function_measure_sees_bodies_and_skips_declarations() {
    let text = "pub async fn a() {\n    if x { y }\n}\nfn b();\nfn c(s: &str) -> u8 {\n    let _ = \"}\";\n    1\n}\n";
    assert_eq!(functions(text), vec![("a".to_owned(), 1, 3), ("c".to_owned(), 5, 4)]);
}

/// The module a source file belongs to, as the first segment of its path in the crate
/// (`lib` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    let first = first.trim_end_matches(".rs").to_owned();
    if first == "main" { "lib".to_owned() } else { first }
}

/// `module → modules it names through crate::`, names re-exported by lib.rs resolved to
/// the module that defines them.
fn use_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(src);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    for line in lib.lines().filter(|l| l.trim_start().starts_with("pub use ")) {
        let path = line.trim_start().trim_start_matches("pub use ").trim_end_matches(';');
        let module = path.split("::").next().unwrap_or_default().to_owned();
        let names = path.rsplit("::").next().unwrap_or_default();
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            reexports.insert(name.trim().to_owned(), module.clone());
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(src, file);
        // Code only: a doc comment may name another module without depending on it.
        let text: String = production(file)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + 7..];
            let mut names: Vec<String> = Vec::new();
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                names.extend(
                    inner
                        .split(',')
                        .map(|n| n.trim().split("::").next().unwrap_or_default().to_owned()),
                );
            } else {
                names.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
            for name in names {
                let to = if modules.contains(&name) {
                    name
                } else if let Some(m) = reexports.get(&name) {
                    m.clone()
                } else {
                    continue;
                };
                if to != from {
                    graph.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    graph
}

/// A cycle in `graph`, if any, as the modules along it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_cycle_among_its_modules() {
    let mut cycles = Vec::new();
    for src in crate_sources() {
        if let Some(found) = cycle(&use_graph(&src)) {
            cycles.push(format!("{}: {}", relative(&src), found.join(" → ")));
        }
    }
    assert!(cycles.is_empty(), "use crate::… cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle_and_passes_a_chain() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).to_owned()).or_default().insert((*b).to_owned());
        }
        g
    };
    assert_eq!(cycle(&graph(&[("service", "transfer"), ("transfer", "store")])), None);
    assert_eq!(
        cycle(&graph(&[("service", "transfer"), ("transfer", "service")])),
        Some(vec!["service".to_owned(), "transfer".to_owned(), "service".to_owned()])
    );
}

/// What builds a `tonic::Status` by hand.
const STATUS_BUILDERS: &[&str] = &[
    "Status::new(",
    "Status::with_",
    "Status::internal(",
    "Status::unavailable(",
    "Status::invalid_argument(",
    "Status::not_found(",
    "Status::permission_denied(",
    "Status::unauthenticated(",
    "Status::failed_precondition(",
    "Status::aborted(",
    "Status::already_exists(",
    "Status::resource_exhausted(",
    "Status::out_of_range(",
    "Status::unimplemented(",
    "Status::unknown(",
    "Status::cancelled(",
    "::refusal(",
    " refusal(",
    "error(Code::",
    "error(tonic::Code::",
];

#[test]
fn statuses_are_built_only_in_each_services_status_rs() {
    let mut offenders = Vec::new();
    // The services; the cli is a client (its benchmark relay answers nobody but itself).
    for dir in ["gateway/src", "services/node/src", "consent/src", "services/kit/src"] {
        for file in rust_files(&root().join(dir)) {
            if file.file_name().is_some_and(|n| n == "status.rs") {
                continue;
            }
            for (n, line) in production(&file).lines().enumerate() {
                let code = line.trim_start();
                if !code.starts_with("//") && STATUS_BUILDERS.iter().any(|b| code.contains(b)) {
                    offenders.push(format!("{}:{}: {}", relative(&file), n + 1, code));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "statuses built outside status.rs:\n{}",
        offenders.join("\n")
    );
}

/// Domain rules with one home in cii-types, and the text that gives away a second copy.
const ONE_HOME: &[(&str, &[&str])] = &[
    (
        "the AVS look-alike rule (cii_types::avs::looks_like_avs)",
        &["\"756\"", "b\"756\""],
    ),
    (
        "microsecond time conversion (cii_types::time)",
        &[
            "unix_timestamp_nanos() / 1000",
            "div_euclid(1_000_000)",
            "rem_euclid(1_000_000)",
            "saturating_mul(1_000_000)",
            "from_unix_timestamp_nanos(i128::from(",
            "unix_timestamp() * 1_000_000",
        ],
    ),
    (
        "the seal's associated data (cii_types::transfer::seal_associated_data)",
        &["aad = format!(", "let aad = format!"],
    ),
];

#[test]
fn domain_rules_are_written_once_in_cii_types() {
    let mut copies = Vec::new();
    for src in crate_sources() {
        if src.ends_with("proto/types/src") {
            continue;
        }
        for file in rust_files(&src) {
            for (n, line) in production(&file).lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for (rule, marks) in ONE_HOME {
                    if marks.iter().any(|m| code.contains(m)) {
                        copies.push(format!("{}:{}: {rule}: {code}", relative(&file), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        copies.is_empty(),
        "domain rules outside cii-types:\n{}",
        copies.join("\n")
    );
}
