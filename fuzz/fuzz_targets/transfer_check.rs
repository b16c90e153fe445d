//! The gateway's own checks of a transfer request, as a whole (`cii_gateway::check_request`: ids,
//! direction, trigger, facts, ciphertexts, the payload against the contract and its categories),
//! on arbitrary bytes decoded as a `TransferRequest` from one of the members. Never panics; every
//! refusal carries a stable code and the field at fault.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::OnceLock;

const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAjvQJoKQWyJVAHdL1HH12FIo38C8HiRw18D/AajEk4NA=\n-----END PUBLIC KEY-----\n";
const MEMBERS: [(&str, &str); 4] = [("ORP-VS", "AC_ORP"), ("AI-VS", "AI"), ("AS-VS", "AS"), ("SUVA", "SUVA")];

fn registry() -> &'static cii_kit::registry::Registry {
    static REGISTRY: OnceLock<cii_kit::registry::Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let text: String = MEMBERS
            .iter()
            .map(|(id, kind)| {
                format!(
                    "[[institution]]\nid = \"{id}\"\ntype = \"{kind}\"\ncanton = \"VS\"\nname = \"{id}\"\n\
                     endpoint = \"https://127.0.0.1:1\"\n[[institution.jwt_keys]]\nkid = \"k\"\npublic_key = \"\"\"\n{KEY}\"\"\"\n\n"
                )
            })
            .collect();
        let text = format!("network = \"cii.fuzz\"\nversion = 1\n\n{text}");
        cii_kit::registry::Registry::parse(std::path::Path::new("registry.toml"), &text).expect("the registry parses")
    })
}

fn catalogue() -> &'static cii_types::exchange::Catalogue {
    static CATALOGUE: OnceLock<cii_types::exchange::Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| cii_types::exchange::Catalogue::load().expect("the catalogue loads"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let Ok(request) = cii_proto::gateway::TransferRequest::decode(bytes) else {
        return;
    };
    let (caller, _) = MEMBERS[usize::from(selector) % MEMBERS.len()];
    let caller = cii_types::InstitutionId::parse("caller", caller).expect("a member id");
    if let Err(e) = cii_gateway::check_request(registry(), catalogue(), &caller, &request) {
        assert!(cii_types::codes::lookup(e.code()).is_some(), "unregistered code: {e:?}");
        assert!(e.field().is_some(), "no field: {e:?}");
    }
});
