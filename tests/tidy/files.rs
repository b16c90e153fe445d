//! Source-file habits: every Rust file says what it is for in a leading `//!`
//! comment, and library crates do not print (they log, or return values).

use std::path::PathBuf;

use crate::source::{root, rust_files};

fn workspace_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["proto", "gateway", "services", "consent", "tests"] {
        files.extend(rust_files(&root().join(dir)));
    }
    assert!(files.len() > 10, "found too few files: {files:?}");
    files
}

#[test]
fn every_rust_file_starts_with_a_doc_comment() {
    let missing: Vec<String> = workspace_files()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! comment:\n{}",
        missing.join("\n")
    );
}

#[test]
fn library_crates_do_not_print() {
    let offenders: Vec<String> = workspace_files()
        .into_iter()
        .filter(|f| {
            let p = f.to_string_lossy();
            // The cli prints (it is the user interface); tests and build scripts may.
            !(p.contains("/services/cli/") || p.contains("/tests/") || p.ends_with("build.rs"))
        })
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.lines().any(|l| {
                let l = l.trim_start();
                !l.starts_with("//") && (l.contains("println!(") || l.contains("print!(") || l.contains("dbg!("))
            })
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "library code printing to stdout:\n{}",
        offenders.join("\n")
    );
}
