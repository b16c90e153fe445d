//! The invariant loader on an arbitrary invariant file: never panics, and what it accepts
//! names only what the rulebook declares (the space can be counted for it).
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
    let rb = rulebook();
    if let Ok(invariants) = cii_policy::prove::load(rb, &[("fuzz.toml".to_owned(), text.to_owned())]) {
        let _ = cii_policy::prove::size(rb, &invariants, time::macros::date!(2026 - 11 - 28));
    }
});
