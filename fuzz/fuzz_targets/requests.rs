//! Wire → domain for request messages: arbitrary bytes decoded as each request the gateway and
//! the nodes accept, then the domain parsers those handlers apply to their fields. Nothing panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn parse_ids(values: &[&str]) {
    for v in values {
        let _ = cii_types::InstitutionId::parse("field", v);
        let _ = cii_types::AvsNumber::parse(v);
        let _ = cii_types::Role::parse("field", v);
        let _ = cii_types::PeerIdentity::parse_uri(v);
        let _ = cii_policy::parse_date(v);
    }
}

/// The federal rulebook, whose facts an attested fact id is looked up in.
fn federal() -> &'static cii_policy::Rulebook {
    static RULEBOOK: std::sync::OnceLock<cii_policy::Rulebook> = std::sync::OnceLock::new();
    RULEBOOK.get_or_init(|| {
        cii_policy::load(&cii_policy::federal_sources(), time::macros::date!(2026 - 11 - 28))
            .unwrap_or_else(|e| panic!("the federal rulebook: {e:?}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            if let Ok(r) = cii_proto::gateway::TransferRequest::decode(bytes) {
                parse_ids(&[&r.transfer_id, &r.counterparty, &r.purpose]);
                if let Some(p) = &r.person {
                    let _ = cii_pseudonym::wire::pseudonym(&p.ciphertext);
                }
                for f in &r.attested_facts {
                    let _ = federal().fact_index(f);
                }
                let _ = cii_types::avs::hides_avs(&r.case_reference);
                for p in &r.list_persons {
                    let _ = cii_pseudonym::wire::pseudonym(&p.ciphertext);
                }
            }
        }
        1 => {
            if let Ok(r) = cii_proto::gateway::EnrolRequest::decode(bytes) {
                if let Some(p) = &r.origin {
                    let _ = cii_pseudonym::wire::pseudonym(&p.ciphertext);
                }
            }
        }
        2 => {
            if let Ok(r) = cii_proto::node::SendRequest::decode(bytes) {
                parse_ids(&[&r.transfer_id, &r.recipient, &r.local_record_id, &r.purpose]);
            }
        }
        3 => {
            if let Ok(r) = cii_proto::node::EnrolRequest::decode(bytes) {
                parse_ids(&[&r.avs_number, &r.local_record_id]);
            }
        }
        4 => {
            if let Ok(r) = cii_proto::consent::RecordConsentRequest::decode(bytes) {
                if let Some(c) = &r.consent {
                    for i in &c.institutions {
                        parse_ids(&[i]);
                    }
                }
                if let Some(p) = &r.person {
                    let _ = cii_pseudonym::wire::pseudonym(&p.ciphertext);
                }
            }
        }
        _ => {
            if let Ok(r) = cii_proto::audit::QueryRequest::decode(bytes) {
                parse_ids(&[&r.institution, &r.basis, &r.acting_user, &r.exchange_type]);
            }
        }
    }
});
