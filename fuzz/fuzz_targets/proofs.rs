//! RFC 6962 proof verification on arbitrary sizes, indices and hashes: never panics, and
//! rejects what a real tree does not prove.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let word = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().expect("8 bytes")) % 4096;
    let (a, b, c) = (word(0), word(8), word(16));
    let hashes: Vec<cii_audit::merkle::Hash> = data[24..]
        .chunks_exact(32)
        .map(|h| h.try_into().expect("32 bytes"))
        .collect();
    let (first, rest) = match hashes.split_first() {
        Some((f, r)) => (*f, r.to_vec()),
        None => ([0; 32], Vec::new()),
    };
    let _ = cii_audit::merkle::verify_inclusion(&first, a, b, &rest, &first);
    let _ = cii_audit::merkle::verify_consistency(a, c, &first, &first, &rest);
    // A real tree of `b` leaves: its own proofs verify, altered ones do not.
    let mut tree = cii_audit::merkle::Tree::new();
    for i in 0..b.max(1) {
        tree.push(cii_audit::merkle::leaf_hash(&i.to_le_bytes()));
    }
    let size = tree.size();
    let index = a % size;
    let proof = tree.inclusion_proof(index, size).expect("in range");
    let leaf = tree.leaf(index).expect("leaf");
    assert!(cii_audit::merkle::verify_inclusion(
        &leaf,
        index,
        size,
        &proof,
        &tree.root()
    ));
    if !rest.is_empty() && rest != proof {
        assert!(!cii_audit::merkle::verify_inclusion(
            &leaf,
            index,
            size,
            &rest,
            &tree.root()
        ));
    }
});
