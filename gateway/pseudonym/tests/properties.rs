//! The properties the design relies on (DESIGN §3), on real libpep
//! cryptography: unlinkable per domain, exact translation, rerandomised
//! outputs, wrong recipients read nothing, and the gateway's refusals.

use cii_pseudonym::PseudonymError;
use cii_pseudonym::ceremony::Ceremony;
use cii_pseudonym::gateway::{Gateway, Identity};
use cii_pseudonym::names::{Party, origin};
use cii_pseudonym::node::NodeKeys;
use cii_types::{AvsNumber, InstitutionId};
use libpep::data::elgamal::ElGamalEncrypted;
use proptest::prelude::*;
use std::sync::OnceLock;

struct World {
    gateway: Gateway,
    orp: NodeKeys,
    ai: NodeKeys,
    orp_party: Party,
    ai_party: Party,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let c = Ceremony::new();
        let orp_party = Party::Institution(InstitutionId::parse("id", "ORP-VS").unwrap());
        let ai_party = Party::Institution(InstitutionId::parse("id", "AI-VS").unwrap());
        World {
            gateway: Gateway::new(
                c.pseudonymisation_secret.clone(),
                c.rekeying_secret.clone(),
                &c.global_public,
                1,
            ),
            orp: NodeKeys::new(c.global_public, c.session_keys(&orp_party, 1)),
            ai: NodeKeys::new(c.global_public, c.session_keys(&ai_party, 1)),
            orp_party,
            ai_party,
        }
    })
}

fn avs() -> impl Strategy<Value = AvsNumber> {
    proptest::array::uniform9(0u8..10).prop_map(|body| {
        let mut first12 = [7u8, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        first12[3..].copy_from_slice(&body);
        let check = cii_types::avs::check_digit(&first12);
        let digits: String = first12
            .iter()
            .chain(std::iter::once(&check))
            .map(|d| char::from(b'0' + d))
            .collect();
        AvsNumber::parse(&digits).unwrap()
    })
}

fn enrol(node: &NodeKeys, party: &Party, person: &AvsNumber) -> cii_pseudonym::node::LocalPseudonym {
    let w = world();
    node.decrypt(&w.gateway.enrol(&node.enrolment_ciphertext(person), party))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn pseudonyms_differ_per_domain_and_are_stable(person in avs()) {
        let w = world();
        let at_orp = enrol(&w.orp, &w.orp_party, &person);
        let at_ai = enrol(&w.ai, &w.ai_party, &person);
        prop_assert_ne!(at_orp, at_ai);
        prop_assert_eq!(at_orp, enrol(&w.orp, &w.orp_party, &person), "re-enrolment gives the same pseudonym");
    }

    #[test]
    fn translation_gives_exactly_the_recipients_enrolment_pseudonym(person in avs()) {
        let w = world();
        let at_orp = enrol(&w.orp, &w.orp_party, &person);
        let at_ai = enrol(&w.ai, &w.ai_party, &person);
        let sent = w.orp.encrypt_own(&at_orp).unwrap();
        let first = w.gateway.translate(&sent, &w.orp_party, &w.ai_party);
        let second = w.gateway.translate(&sent, &w.orp_party, &w.ai_party);
        prop_assert_eq!(w.ai.decrypt(&first), at_ai);
        // Rerandomised: two transcriptions differ as bytes, decrypt to the same value.
        prop_assert_ne!(first.to_bytes(), second.to_bytes());
        prop_assert_eq!(w.ai.decrypt(&second), at_ai);
        // What is addressed to AI reads as a different value at ORP.
        prop_assert_ne!(w.orp.decrypt(&first), at_orp);
        prop_assert_ne!(w.orp.decrypt(&first), at_ai);
    }

    #[test]
    fn an_identity_addressed_to_ai_is_unreadable_at_orp(person in avs()) {
        let w = world();
        let sent = Identity(w.orp.encrypt_identity(&person).unwrap());
        let to_ai = w.gateway.rekey_identity(&sent, &w.ai_party);
        prop_assert_eq!(w.ai.decrypt_identity(&to_ai.0).unwrap(), person);
        prop_assert_eq!(w.orp.decrypt_identity(&to_ai.0), Err(PseudonymError::NotAnIdentity));
    }
}

#[test]
fn a_translation_claiming_the_wrong_source_domain_reads_as_not_enrolled() {
    // The gateway takes the source domain from the certificate. If a node's
    // ciphertext were translated as coming from another domain, the result
    // matches nobody enrolled at the recipient.
    let w = world();
    let person = AvsNumber::parse("756.1234.5678.97").unwrap();
    let at_orp = enrol(&w.orp, &w.orp_party, &person);
    let at_ai = enrol(&w.ai, &w.ai_party, &person);
    let sent = w.orp.encrypt_own(&at_orp).unwrap();
    let wrong = w.gateway.translate(&sent, &Party::Registry, &w.ai_party);
    assert_ne!(w.ai.decrypt(&wrong), at_ai);
}

#[test]
fn the_gateway_refuses_the_origin_domain_as_target() {
    let w = world();
    let person = AvsNumber::parse("756.1234.5678.97").unwrap();
    let ct = w.orp.enrolment_ciphertext(&person);
    let err = w
        .gateway
        .translate_to_domain(
            &ct,
            &w.orp_party,
            &origin(),
            &libpep::prelude::EncryptionContext::global(),
        )
        .unwrap_err();
    assert_eq!(err, PseudonymError::OriginTarget);
    assert_eq!(err.code(), "ORIGIN_TARGET_REFUSED");
}

#[test]
fn malformed_ciphertexts_get_clear_errors() {
    assert_eq!(
        cii_pseudonym::wire::pseudonym(&[0u8; 63]).unwrap_err(),
        PseudonymError::Length
    );
    assert_eq!(
        cii_pseudonym::wire::pseudonym(&[0xffu8; 64]).unwrap_err(),
        PseudonymError::NotAPoint
    );
    assert_eq!(
        cii_pseudonym::wire::attribute(&[1u8; 65]).unwrap_err(),
        PseudonymError::Length
    );
    let w = world();
    let ct = w
        .orp
        .enrolment_ciphertext(&AvsNumber::parse("756.1234.5678.97").unwrap());
    assert!(cii_pseudonym::wire::pseudonym(&ct.to_bytes()).is_ok());
}

#[test]
fn a_pseudonym_passed_off_as_an_identity_reveals_nothing() {
    // The only rekey operation takes an Identity; relabelling an enrolment
    // ciphertext as an attribute and rekeying it yields garbage, not the AVS number.
    let w = world();
    let person = AvsNumber::parse("756.1234.5678.97").unwrap();
    let bytes = w.orp.enrolment_ciphertext(&person).to_bytes();
    let relabelled = Identity(cii_pseudonym::wire::attribute(&bytes).unwrap());
    let to_ai = w.gateway.rekey_identity(&relabelled, &w.ai_party);
    assert!(w.ai.decrypt_identity(&to_ai.0).is_err());
}

#[test]
fn a_batch_keeps_each_identity_with_its_person_and_translates_exactly() {
    let w = world();
    let people: Vec<AvsNumber> = [
        "756.1234.5678.97",
        "756.9217.0769.85",
        "756.3047.5009.62",
        "756.0000.0000.02",
    ]
    .iter()
    .filter_map(|s| AvsNumber::parse(s).ok())
    .collect();
    assert!(people.len() >= 3, "test data: {}", people.len());
    let items: Vec<_> = people
        .iter()
        .map(|p| {
            (
                w.orp.encrypt_own(&enrol(&w.orp, &w.orp_party, p)).unwrap(),
                Some(Identity(w.orp.encrypt_identity(p).unwrap())),
            )
        })
        .collect();
    let out = w.gateway.translate_batch(items, &w.orp_party, &w.ai_party);
    assert_eq!(out.len(), people.len());
    let mut seen = Vec::new();
    for (pseudonym, identity) in &out {
        let person =
            w.ai.decrypt_identity(&identity.expect("identity travels").0)
                .expect("readable at AI");
        assert_eq!(
            w.ai.decrypt(pseudonym),
            enrol(&w.ai, &w.ai_party, &person),
            "the identity stayed with its person"
        );
        seen.push(person.expose_digits());
    }
    seen.sort();
    let mut expected: Vec<String> = people.iter().map(|p| p.expose_digits()).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

/// The ceremony's files are what the gateway and the nodes load: a
/// round trip through them gives working, agreeing keys.
#[test]
fn the_ceremonys_key_files_load_into_a_working_gateway_and_nodes() {
    let c = Ceremony::new();
    let orp = InstitutionId::parse("id", "ORP-VS").unwrap();
    let ai = InstitutionId::parse("id", "AI-VS").unwrap();
    let files = c.key_files(&[orp.clone(), ai.clone()], 7, false).unwrap();
    let file = |name: &str| files.iter().find(|f| f.0 == name).unwrap().1.clone();
    let gateway = Gateway::from_json(&file("gateway/transcryptor.json"), &file("global-public.json")).unwrap();
    assert_eq!(gateway.epoch(), 7);
    let node = |id: &InstitutionId| {
        NodeKeys::from_json(
            &file("global-public.json"),
            &file(&format!("institutions/{id}/session-keys.json")),
        )
        .unwrap()
    };
    let (orp_keys, ai_keys) = (node(&orp), node(&ai));
    let person = AvsNumber::parse("756.1234.5678.97").unwrap();
    let (orp_party, ai_party) = (Party::Institution(orp), Party::Institution(ai));
    let at_orp = orp_keys.decrypt(&gateway.enrol(&orp_keys.enrolment_ciphertext(&person), &orp_party));
    let at_ai = ai_keys.decrypt(&gateway.enrol(&ai_keys.enrolment_ciphertext(&person), &ai_party));
    let sent = orp_keys.encrypt_own(&at_orp).unwrap();
    assert_eq!(ai_keys.decrypt(&gateway.translate(&sent, &orp_party, &ai_party)), at_ai);
    // Bad files are refused with the key-material code, without echoing their content.
    for (transcryptor, public) in [
        ("{}", file("global-public.json")),
        (
            "{\"epoch\":1,\"pseudonymisation_secret\":\"zz\",\"rekeying_secret\":\"00\"}",
            file("global-public.json"),
        ),
        (file("gateway/transcryptor.json").as_str(), "not json".to_owned()),
    ] {
        let err = Gateway::from_json(transcryptor, &public).unwrap_err();
        assert_eq!(err.code(), "KEY_MATERIAL");
    }
    assert_eq!(
        NodeKeys::from_json(&file("global-public.json"), "{}")
            .unwrap_err()
            .code(),
        "KEY_MATERIAL"
    );
}

#[test]
fn a_sealed_payload_opens_only_for_its_recipient_with_the_same_associated_data() {
    let w = world();
    let sealed = w.gateway.seal(&w.ai_party, b"ORP-VS/t-1", b"payload bytes").unwrap();
    assert_eq!(w.ai.open(&sealed, b"ORP-VS/t-1").unwrap(), b"payload bytes");
    assert_eq!(
        w.ai.open(&sealed, b"ORP-VS/t-2").unwrap_err(),
        PseudonymError::Unsealed,
        "other associated data"
    );
    assert_eq!(
        w.orp.open(&sealed, b"ORP-VS/t-1").unwrap_err(),
        PseudonymError::Unsealed,
        "another party"
    );
    let mut altered = sealed.clone();
    altered.ciphertext[0] ^= 1;
    assert_eq!(
        w.ai.open(&altered, b"ORP-VS/t-1").unwrap_err(),
        PseudonymError::Unsealed
    );
    assert!(
        !sealed.ciphertext.windows(7).any(|x| x == b"payload"),
        "plaintext not visible"
    );
    let again = w.gateway.seal(&w.ai_party, b"ORP-VS/t-1", b"payload bytes").unwrap();
    assert_ne!(again.ciphertext, sealed.ciphertext, "a fresh key every time");
}

/// Sealed at the originating node: the gateway only rekeys the key element, and the parts open
/// for the addressee alone, each only under its own associated data. The element under the
/// global key opens for no session key, and the key rekeyed to one party for no other.
#[test]
fn content_sealed_at_the_sender_opens_only_at_the_party_the_gateway_rekeyed_it_to() {
    let w = world();
    let sealer = w.orp.sealer().unwrap();
    let (nonce, ciphertext) = sealer.seal(b"ORP-VS/t-1\ncontact", b"contact bytes").unwrap();
    let (other_nonce, other) = sealer.seal(b"ORP-VS/t-1\nidentity", b"identity bytes").unwrap();
    assert_ne!(nonce, other_nonce, "a nonce per part");
    let for_ai = w.gateway.rekey_seal_key(&sealer.key, &w.ai_party);
    let opener = w.ai.opener(&for_ai).unwrap();
    assert_eq!(
        opener.open(nonce, b"ORP-VS/t-1\ncontact", &ciphertext).unwrap(),
        b"contact bytes"
    );
    assert_eq!(
        opener.open(other_nonce, b"ORP-VS/t-1\nidentity", &other).unwrap(),
        b"identity bytes"
    );
    assert_eq!(
        opener.open(nonce, b"ORP-VS/t-1\nidentity", &ciphertext).unwrap_err(),
        PseudonymError::Unsealed,
        "a part relabelled does not open"
    );
    for (keys, key, why) in [
        (&w.orp, &for_ai, "the sender, with the key rekeyed to the recipient"),
        (&w.ai, &sealer.key, "the recipient, with the key not rekeyed"),
        (
            &w.orp,
            &sealer.key,
            "the sender's session key, with the key under the global key",
        ),
    ] {
        let opener = keys.opener(key).unwrap();
        assert_eq!(
            opener.open(nonce, b"ORP-VS/t-1\ncontact", &ciphertext).unwrap_err(),
            PseudonymError::Unsealed,
            "{why}"
        );
    }
    assert!(!ciphertext.windows(7).any(|x| x == b"contact"), "plaintext not visible");
}

/// An institution's DPO reads the log's persons rekeyed from the audit context into its own:
/// one stable pseudonym per person under its key, another under another institution's key.
#[test]
fn persons_rekeyed_from_the_audit_context_open_for_that_institutions_dpo_only() {
    let c = Ceremony::new();
    let gateway = Gateway::new(
        c.pseudonymisation_secret.clone(),
        c.rekeying_secret.clone(),
        &c.global_public,
        1,
    );
    let orp = Party::Institution(InstitutionId::parse("id", "ORP-VS").unwrap());
    let orp_node = NodeKeys::new(c.global_public, c.session_keys(&orp, 1));
    let dpo_of = |id: &str| {
        let party = Party::Dpo(InstitutionId::parse("id", id).unwrap());
        (NodeKeys::new(c.global_public, c.session_keys(&party, 1)), party)
    };
    let ((orp_dpo, orp_dpo_party), (ai_dpo, _)) = (dpo_of("ORP-VS"), dpo_of("AI-VS"));
    let anna = AvsNumber::parse("756.1234.5678.97").unwrap();
    let local = orp_node.decrypt(&gateway.enrol(&orp_node.enrolment_ciphertext(&anna), &orp));
    // Two log entries about Anna, as the pipeline writes them.
    let logged = || gateway.translate(&orp_node.encrypt_own(&local).unwrap(), &orp, &Party::Audit);
    let (first, second) = (logged(), logged());
    let seen = |e| orp_dpo.decrypt(&gateway.from_audit_context(e, 1, &orp_dpo_party).unwrap());
    assert_eq!(seen(&first), seen(&second), "one pseudonym per person for ORP's DPO");
    // ORP's own lookup (from its record) reaches the same value.
    let lookup = gateway.translate(&orp_node.encrypt_own(&local).unwrap(), &orp, &orp_dpo_party);
    assert_eq!(orp_dpo.decrypt(&lookup), seen(&first));
    // AI's DPO key does not open what was rekeyed for ORP's.
    assert_ne!(
        ai_dpo.decrypt(&gateway.from_audit_context(&first, 1, &orp_dpo_party).unwrap()),
        seen(&first)
    );
}

/// A rotation: the gateway moves to key epoch 2 (same secrets, new contexts) and the
/// ceremony issues epoch-2 DPO keys. An entry written in epoch 1 still opens for ORP's
/// epoch-2 DPO key, to the same pseudonym as an entry written in epoch 2 and as before the
/// rotation; the epoch-1 DPO key no longer opens what the gateway answers now; and reading
/// an epoch-1 entry as if it were of epoch 2 gives another value (so the entry must say).
#[test]
fn a_rotated_dpo_key_opens_entries_of_both_epochs_and_the_old_key_stops() {
    let c = Ceremony::new();
    let at = |epoch| {
        Gateway::new(
            c.pseudonymisation_secret.clone(),
            c.rekeying_secret.clone(),
            &c.global_public,
            epoch,
        )
    };
    let (before, after) = (at(1), at(2));
    let orp = Party::Institution(InstitutionId::parse("id", "ORP-VS").unwrap());
    let dpo = Party::Dpo(InstitutionId::parse("id", "ORP-VS").unwrap());
    let node = |epoch| NodeKeys::new(c.global_public, c.session_keys(&orp, epoch));
    let dpo_key = |epoch| NodeKeys::new(c.global_public, c.session_keys(&dpo, epoch));
    let anna = AvsNumber::parse("756.1234.5678.97").unwrap();
    let local = node(1).decrypt(&before.enrol(&node(1).enrolment_ciphertext(&anna), &orp));
    let old_entry = before.translate(&node(1).encrypt_own(&local).unwrap(), &orp, &Party::Audit);
    let new_entry = after.translate(&node(2).encrypt_own(&local).unwrap(), &orp, &Party::Audit);
    let before_rotation = dpo_key(1).decrypt(&before.from_audit_context(&old_entry, 1, &dpo).unwrap());
    let old_now = dpo_key(2).decrypt(&after.from_audit_context(&old_entry, 1, &dpo).unwrap());
    let new_now = dpo_key(2).decrypt(&after.from_audit_context(&new_entry, 2, &dpo).unwrap());
    assert_eq!(old_now, new_now, "one pseudonym across the rotation");
    assert_eq!(old_now, before_rotation, "the same as before it");
    assert_ne!(
        dpo_key(1).decrypt(&after.from_audit_context(&new_entry, 2, &dpo).unwrap()),
        new_now
    );
    assert_ne!(
        dpo_key(2).decrypt(&after.from_audit_context(&old_entry, 2, &dpo).unwrap()),
        new_now
    );
}

/// A rotation's keys come from what the first ceremony kept offline: resumed from the global
/// keys and the transcryptor file, the ceremony issues the same session keys for epoch 2 as
/// the first one would have; a global secret of another ceremony is refused.
#[test]
fn a_resumed_ceremony_issues_the_next_epochs_keys() {
    let c = Ceremony::new();
    let orp = InstitutionId::parse("id", "ORP-VS").unwrap();
    let files = c.key_files(std::slice::from_ref(&orp), 1, true).unwrap();
    let file = |name: &str| {
        files
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, text, _)| text.clone())
            .unwrap()
    };
    let (public, secret, transcryptor) = (
        file("global-public.json"),
        file("global-secret.json"),
        file("gateway/transcryptor.json"),
    );
    let resumed = Ceremony::resume(&public, &secret, &transcryptor).unwrap();
    let of = |c: &Ceremony| {
        let next = c.key_files(std::slice::from_ref(&orp), 2, false).unwrap();
        next.into_iter().map(|(n, text, _)| (n, text)).collect::<Vec<_>>()
    };
    assert_eq!(of(&resumed), of(&c), "the same epoch-2 files");
    assert_ne!(
        of(&c),
        c.key_files(std::slice::from_ref(&orp), 1, false)
            .unwrap()
            .into_iter()
            .map(|(n, t, _)| (n, t))
            .collect::<Vec<_>>()
    );
    let other = Ceremony::new().key_files(&[], 1, true).unwrap();
    let other_secret = other
        .iter()
        .find(|(n, ..)| n == "global-secret.json")
        .unwrap()
        .1
        .clone();
    assert!(Ceremony::resume(&public, &other_secret, &transcryptor).is_err());
}
