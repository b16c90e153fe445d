//! Checkpoint bodies, signed notes and verifier keys: parsing never panics, and no forged
//! note opens under the fixed key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn verifier() -> &'static cii_audit::note::Verifier {
    static VERIFIER: OnceLock<cii_audit::note::Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let pem = cii_audit::note::generate_key_pem().expect("key");
        cii_audit::note::Signer::from_pem("fuzz/audit", &pem)
            .expect("signer")
            .verifier()
    })
}

fuzz_target!(|text: &str| {
    let _ = cii_audit::note::Checkpoint::parse_body(text);
    let _ = cii_audit::note::Verifier::from_vkey(text);
    // A random key is fresh per run: no input can carry its signature.
    assert!(verifier().open_checkpoint(text, "fuzz/audit").is_err());
});
