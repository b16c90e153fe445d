//! The AVS number parser: never panics; what it accepts prints back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(avs) = cii_types::AvsNumber::parse(text) {
        let again = cii_types::AvsNumber::parse(&avs.expose_digits()).expect("a parsed number parses again");
        assert_eq!(again, avs);
    }
});
