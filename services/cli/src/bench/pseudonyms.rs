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
    Ok(serde_json::json!({ "batch_per_s": batch, "raw_per_s": raw, "ratio": batch / raw }))
}
