//! The registry of stable error codes (`cii_types::codes`) against everything
//! else that names a code: the sources that emit them, the two guides that list
//! them for institutional IT, and the `.proto` comments that are the API
//! reference. A code emitted but not registered, registered but never emitted,
//! or documented differently from the registry fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cii_types::codes::{CODES, Grpc};

use crate::source::{production, root, rust_files};

fn is_code(s: &str) -> bool {
    s.len() >= 3
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The string literal starting at `text` (after optional whitespace), if it is a code.
fn literal_code(text: &str) -> Option<String> {
    let rest = text.trim_start().strip_prefix('"')?;
    let value = &rest[..rest.find('"')?];
    is_code(value).then(|| value.to_owned())
}

/// The codes a source text emits: the first argument of `refusal(` and `invalid(`, and
/// every code literal in the body of a `fn code(`.
fn emitted_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for call in ["refusal(", "invalid("] {
        for (i, _) in text.match_indices(call) {
            if let Some(code) = literal_code(&text[i + call.len()..]) {
                found.insert(code);
            }
        }
    }
    for (i, _) in text.match_indices("fn code(") {
        let Some(open) = text[i..].find('{') else { continue };
        let mut depth = 0;
        let body_start = i + open;
        let mut end = text.len();
        for (j, c) in text[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = body_start + j;
                        break;
                    }
                }
                _ => {}
            }
        }
        for piece in text[body_start..end].split('"').skip(1).step_by(2) {
            if is_code(piece) {
                found.insert(piece.to_owned());
            }
        }
    }
    found
}

/// Every code the services and the libraries whose errors reach the wire emit, with where.
fn emitted() -> BTreeMap<String, BTreeSet<String>> {
    let mut codes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for dir in [
        "proto/types/src",
        "gateway/src",
        "gateway/policy/src",
        "gateway/audit/src",
        "gateway/pseudonym/src",
        "consent/src",
        "services/kit/src",
        "services/node/src",
        "services/transcryptor/src",
    ] {
        for file in rust_files(&root().join(dir)) {
            // The registry itself lists codes; it does not emit them.
            if file.ends_with("proto/types/src/codes.rs") {
                continue;
            }
            let rel = file.strip_prefix(root()).unwrap_or(&file).display().to_string();
            for code in emitted_in(&production(&file)) {
                codes.entry(code).or_default().insert(rel.clone());
            }
        }
    }
    codes
}

/// Values that look like codes but are not errors: decision reasons, consent answers,
/// institution types, and the proto's enum values.
fn not_errors() -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    let decide = production(&root().join("gateway/policy/src/decide.rs"));
    let consent_model = production(&root().join("consent/src/model.rs"));
    let consent_service = production(&root().join("consent/src/service.rs"));
    let institution_types = production(&root().join("proto/types/src/institution.rs"));
    for text in [decide, consent_model, consent_service, institution_types] {
        for piece in text.split('"').skip(1).step_by(2) {
            if is_code(piece) {
                values.insert(piece.to_owned());
            }
        }
    }
    for file in proto_files() {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let line = line.trim();
            if let Some((name, _)) = line.split_once(" = ")
                && is_code(name)
            {
                values.insert(name.to_owned());
            }
        }
    }
    for grpc in [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ] {
        values.insert(grpc.to_owned());
    }
    values
}

fn proto_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("proto/cii")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                out.push(path);
            }
        }
    }
    out
}

fn registered() -> BTreeSet<String> {
    CODES.iter().map(|c| c.code.to_owned()).collect()
}

#[test]
fn every_emitted_code_is_registered_and_every_registered_code_is_emitted() {
    let emitted = emitted();
    let registered = registered();
    let unregistered: Vec<String> = emitted
        .iter()
        .filter(|(code, _)| !registered.contains(*code))
        .map(|(code, files)| format!("{code} ({})", files.iter().cloned().collect::<Vec<_>>().join(", ")))
        .collect();
    assert!(
        unregistered.is_empty(),
        "emitted but not in cii_types::codes:\n{}",
        unregistered.join("\n")
    );
    let silent: Vec<&String> = registered.iter().filter(|c| !emitted.contains_key(*c)).collect();
    assert!(silent.is_empty(), "registered but never emitted: {silent:?}");
}

#[test]
fn the_scan_finds_codes_where_they_are_emitted() {
    let text = "fn code(&self) -> &'static str {\n match self { A => \"SOME_CODE\", B => \"OTHER\" }\n}\n\
                let e = model::invalid(\n \"SCOPE_X\", \"field\", \"m\");\nrefusal(\"DIRECT_ONE\", m, None)\n\
                let s = \"NOT_A_CODE_HERE\";";
    let found = emitted_in(text);
    let expected: BTreeSet<String> = ["SOME_CODE", "OTHER", "SCOPE_X", "DIRECT_ONE"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(found, expected);
}

fn grpc_name(g: Grpc) -> &'static str {
    match g {
        Grpc::InvalidArgument => "INVALID_ARGUMENT",
        Grpc::NotFound => "NOT_FOUND",
        Grpc::AlreadyExists => "ALREADY_EXISTS",
        Grpc::PermissionDenied => "PERMISSION_DENIED",
        Grpc::Unauthenticated => "UNAUTHENTICATED",
        Grpc::FailedPrecondition => "FAILED_PRECONDITION",
        Grpc::Aborted => "ABORTED",
        Grpc::OutOfRange => "OUT_OF_RANGE",
        Grpc::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Grpc::Unavailable => "UNAVAILABLE",
        Grpc::Internal => "INTERNAL",
    }
}

/// The backticked code-like tokens of `text`.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| is_code(t) && t.contains('_') || CODES.iter().any(|c| c.code == *t))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_integration_guide_lists_every_code_as_the_registry_does() {
    let guide = std::fs::read_to_string(root().join("docs/integration-guide.md")).expect("guide");
    let reference = guide
        .split("## Error code reference")
        .nth(1)
        .expect("docs/integration-guide.md has a section `## Error code reference`");
    let mut rows: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for line in reference.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, code, grpc, retry, meaning, ..] = cells.as_slice() {
            let unquote = |c: &str| c.trim_matches('`').to_owned();
            rows.insert(
                unquote(code),
                (unquote(grpc), (*retry).to_owned(), (*meaning).to_owned()),
            );
        }
    }
    let mut wrong = Vec::new();
    for c in CODES {
        let expected = (
            grpc_name(c.grpc).to_owned(),
            if c.retryable { "yes" } else { "no" }.to_owned(),
            c.meaning.to_owned(),
        );
        match rows.remove(c.code) {
            Some(row) if row == expected => {}
            Some(row) => wrong.push(format!("{}: documented {row:?}, registered {expected:?}", c.code)),
            None => wrong.push(format!("{}: missing from the reference", c.code)),
        }
    }
    wrong.extend(rows.keys().map(|code| format!("{code}: documented but not registered")));
    assert!(
        wrong.is_empty(),
        "docs/integration-guide.md § Error code reference disagrees with cii_types::codes \
         (regenerate the rows from the registry):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_guides_and_the_proto_comments_name_only_registered_codes() {
    let allowed: BTreeSet<String> = registered().union(&not_errors()).cloned().collect();
    let mut unknown = Vec::new();
    for doc in ["docs/integration-guide.md", "docs/exchanges.md"] {
        let text = std::fs::read_to_string(root().join(doc)).expect("doc");
        for line in text.lines().filter(|l| l.starts_with('|')) {
            for code in backticked(line) {
                if !allowed.contains(&code) {
                    unknown.push(format!("{doc}: `{code}`"));
                }
            }
            // "(gRPC `X`)" next to one code: the registry's status.
            let codes: Vec<String> = backticked(line)
                .into_iter()
                .filter(|c| registered().contains(c))
                .collect();
            if let (Some(grpc), [code]) = (line.split("gRPC `").nth(1), codes.as_slice()) {
                let named = grpc.split('`').next().unwrap_or_default();
                let registry = cii_types::codes::lookup(code).map(|c| grpc_name(c.grpc));
                if registry != Some(named) {
                    unknown.push(format!(
                        "{doc}: `{code}` documented as gRPC {named}, registered {registry:?}"
                    ));
                }
            }
        }
    }
    for file in proto_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in text.lines().filter(|l| l.trim_start().starts_with("//")) {
            for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if is_code(word) && word.contains('_') && !allowed.contains(word) {
                    unknown.push(format!("{}: {word}", file.display()));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "codes named in docs or proto comments that nothing emits:\n{}",
        unknown.join("\n")
    );
}
