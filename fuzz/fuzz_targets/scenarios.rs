//! The scenario loader and runner on an arbitrary scenario file: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn rulebook() -> &'static cii_policy::Rulebook {
    static RULEBOOK: OnceLock<cii_policy::Rulebook> = OnceLock::new();
    RULEBOOK.get_or_init(|| {
        cii_policy::load(&cii_policy::federal_sources(), time::macros::date!(2026 - 11 - 28))
            .expect("the federal rulebook loads")
    })
}

fuzz_target!(|text: &str| {
    let _ = cii_policy::scenario::run_file(rulebook(), "fuzz.toml", text, time::macros::date!(2026 - 11 - 28));
});
