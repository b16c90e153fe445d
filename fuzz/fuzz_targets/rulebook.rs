//! The rulebook loader on an arbitrary canton file added to the federal rulebook: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut sources = cii_policy::federal_sources();
    sources.push(cii_policy::Source {
        name: "99-fuzz.toml".into(),
        text: text.to_owned(),
    });
    let _ = cii_policy::load(&sources, time::macros::date!(2026 - 11 - 28));
});
