//! Transcryptions per second: single, the gateway's parallel batch path, and
//! libpep's own `transcrypt` in a loop on all cores (the raw rate), beside the
//! raw variable-base scalar multiplication (a transcryption is about four), and
//! the DPO-side decryption a person query makes per audit entry.
//! Run: `cargo bench -p cii-pseudonym --bench transcrypt` (state the RUSTFLAGS used).

use std::hint::black_box;

use cii_pseudonym::ceremony::Ceremony;
use cii_pseudonym::gateway::{BatchItem, Gateway};
use cii_pseudonym::names::Party;
use cii_pseudonym::node::NodeKeys;
use cii_types::{AvsNumber, InstitutionId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::scalar::Scalar;
use libpep::prelude::*;

const BATCH: usize = 1000;

fn bench(c: &mut Criterion) {
    // The figures depend on the code generation: say which.
    eprintln!(
        "RUSTFLAGS={:?} (empty: portable x86-64 baseline)",
        std::env::var("RUSTFLAGS").unwrap_or_default()
    );
    let ceremony = Ceremony::new();
    let orp = Party::Institution(InstitutionId::parse("id", "ORP-VS").expect("id"));
    let ai = Party::Institution(InstitutionId::parse("id", "AI-VS").expect("id"));
    let gateway = Gateway::new(
        ceremony.pseudonymisation_secret.clone(),
        ceremony.rekeying_secret.clone(),
        &ceremony.global_public,
        1,
    );
    let node = NodeKeys::new(ceremony.global_public, ceremony.session_keys(&orp, 1));
    let avs = AvsNumber::parse("756.1234.5678.97").expect("avs");
    let local = node.decrypt(&gateway.enrol(&node.enrolment_ciphertext(&avs), &orp));
    let sent = node.encrypt_own(&local).expect("encrypt");
    let items: Vec<BatchItem> = (0..BATCH)
        .map(|_| (node.encrypt_own(&local).expect("encrypt"), None))
        .collect();

    let mut group = c.benchmark_group("pseudonyms");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function("transcrypt_single", |b| {
        b.iter(|| gateway.translate(black_box(&sent), &orp, &ai))
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_parallel", |b| {
        b.iter(|| gateway.translate_batch(black_box(items.clone()), &orp, &ai))
    });
    // The raw rate: libpep's own transcrypt on the same ciphertexts, one loop per core.
    let transcryptor = Transcryptor::new(
        PseudonymizationSecret::from(ceremony.pseudonymisation_secret.clone()),
        RekeyingSecret::from(ceremony.rekeying_secret.clone()),
    );
    let info = transcryptor.transcryption_info(
        &orp.domain(),
        &ai.domain(),
        &EncryptionContext::global(),
        &ai.context(1),
    );
    let key = libpep::keys::PseudonymSessionPublicKey::from_point(*ceremony.global_public.pseudonym.value());
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    group.bench_function("raw_libpep_all_cores", |b| {
        b.iter(|| {
            std::thread::scope(|scope| {
                for part in items.chunks(BATCH.div_ceil(threads)) {
                    let (transcryptor, info, key) = (&transcryptor, &info, &key);
                    scope.spawn(move || {
                        let mut rng = rand::rng();
                        for (ct, _) in part {
                            black_box(transcryptor.transcrypt(ct, info, key, &mut rng));
                        }
                    });
                }
            })
        })
    });
    group.throughput(Throughput::Elements(1));
    // A DPO's person query opens every entry's audit pseudonym on one core: this is its rate.
    let dpo = NodeKeys::new(ceremony.global_public, ceremony.session_keys(&Party::Audit, 1));
    let logged = gateway.translate(&sent, &orp, &Party::Audit);
    group.bench_function("dpo_decrypt_one_core", |b| b.iter(|| dpo.decrypt(black_box(&logged))));
    let s = Scalar::from_bytes_mod_order([7u8; 32]);
    let p = RISTRETTO_BASEPOINT_POINT * Scalar::from_bytes_mod_order([3u8; 32]);
    group.bench_function("raw_scalar_mult_one_core", |b| b.iter(|| black_box(p) * black_box(s)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
