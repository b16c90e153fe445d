//! Audit entry decoding: never panics; whatever decodes is canonical (encodes to the same bytes).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(entry) = cii_audit::entry::decode(bytes) {
        assert_eq!(cii_audit::entry::encode(&entry), bytes);
    }
});
