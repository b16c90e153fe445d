//! `cii bench pseudonyms`: the gateway's batch transcryption against libpep's own loop on
//! every core, on the same ciphertexts.

use std::time::Duration;

use cii_pseudonym::ceremony::Ceremony;
use cii_pseudonym::names::Party as Domain;
use cii_types::{AvsNumber, InstitutionId};

use super::rate;

const BATCH: usize = 1000;

/// Batch transcription through the gateway's path vs libpep's raw loop, same ciphertexts.
pub(super) fn pseudonyms(phase: Duration) -> anyhow::Result<serde_json::Value> {
    let ceremony = Ceremony::new();
    let gateway = cii_pseudonym::gateway::Gateway::new(
        ceremony.pseudonymisation_secret.clone(),
        ceremony.rekeying_secret.clone(),
        &ceremony.global_public,
        1,
    );
    let orp = Domain::Institution(InstitutionId::parse("id", "ORP-VS")?);
    let ai = Domain::Institution(InstitutionId::parse("id", "AI-VS")?);
    let node = cii_pseudonym::node::NodeKeys::new(ceremony.global_public, ceremony.session_keys(&orp, 1));
    let avs = AvsNumber::parse("756.1234.5678.97")?;
    let local = node.decrypt(&gateway.enrol(&node.enrolment_ciphertext(&avs), &orp));
    let items = (0..BATCH)
        .map(|_| node.encrypt_own(&local))
        .collect::<Result<Vec<_>, _>>()?;
    let batch_items: Vec<cii_pseudonym::gateway::BatchItem> = items.iter().map(|c| (*c, None)).collect();
    let batch = rate(phase, BATCH as u64, || {
        std::hint::black_box(gateway.translate_batch(batch_items.clone(), &orp, &ai));
    });
    let raw = rate(phase, BATCH as u64, || {
        gateway.raw_transcrypt_all_cores(&items, &orp, &ai)
    });
    let (one, two) = second_hop(phase)?;
    Ok(serde_json::json!({
        "batch_per_s": batch,
        "raw_per_s": raw,
        "ratio": batch / raw,
        "one_transcryptor_per_s": one,
        "two_transcryptors_per_s": two,
        "ratio_two_to_one_transcryptor": two / one.max(f64::MIN_POSITIVE),
    }))
}

/// A transfer's person translated by one transcryptor, then by two (the gateway's hop and the
/// second's, in process: the cryptography of the second hop without its network call), one
/// core: translations per second each.
fn second_hop(phase: Duration) -> anyhow::Result<(f64, f64)> {
    use cii_pseudonym::shares::{Ciphertext, Operation, Source, TranscryptorSecrets};
    let orp = Domain::Institution(InstitutionId::parse("id", "ORP-VS")?);
    let ai = Domain::Institution(InstitutionId::parse("id", "AI-VS")?);
    let ids = [
        InstitutionId::parse("id", "ORP-VS")?,
        InstitutionId::parse("id", "AI-VS")?,
    ];
    let mut rates = Vec::new();
    for files in [
        Ceremony::new().key_files(&ids, 1, false)?,
        cii_pseudonym::shares::key_files(&ids, 1)?,
    ] {
        let file = |name: &str| {
            files
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, c, _)| c.clone())
                .unwrap_or_default()
        };
        let gateway = cii_pseudonym::gateway::Gateway::from_json(
            &file("gateway/transcryptor.json"),
            &file("global-public.json"),
        )?;
        let second = match gateway.transcryptors() {
            2 => Some(TranscryptorSecrets::from_json(&file("transcryptor/secrets.json"))?),
            _ => None,
        };
        let node = cii_pseudonym::node::NodeKeys::from_json(
            &file("global-public.json"),
            &file("institutions/ORP-VS/session-keys.json"),
        )?;
        let avs = AvsNumber::parse("756.1234.5678.97")?;
        let op = Operation {
            ciphertext: Ciphertext::Pseudonym(node.enrolment_ciphertext(&avs)),
            from: Source::node(Some(orp.clone())),
            to: ai.clone(),
        };
        let mut failed = None;
        rates.push(rate(phase, 1, || {
            let done = gateway.apply(&op).and_then(|(ciphertext, key)| match &second {
                Some(second) => second.hop().apply(
                    &Operation {
                        ciphertext,
                        ..op.clone()
                    },
                    &key,
                ),
                None => Ok((ciphertext, key)),
            });
            if let Err(e) = done {
                failed = Some(e);
            }
        }));
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    Ok((rates[0], rates[1]))
}
