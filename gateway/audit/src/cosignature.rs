//! C2SP `tlog-cosignature` (v1, Ed25519): a witness's statement that a checkpoint
//! is the largest consistent tree head it has observed for the log, and the
//! quorum a client needs before it trusts a checkpoint.
//!
//! A cosignature is a signed-note signature line `— <name> base64(key id ‖
//! timestamp ‖ signature)`: the key id is SHA-256(name ‖ "\n" ‖ 0x04 ‖ public
//! key)\[:4\], the timestamp 8 bytes big-endian (POSIX seconds), the signature an
//! Ed25519 signature over `cosignature/v1\ntime <timestamp>\n` followed by the
//! checkpoint's note body. The witness's verifier key is the vkey
//! `<name>+<hex key id>+base64(0x04 ‖ public key)`.
//!
//! A quorum is more than half of the network's witnesses: two checkpoints that
//! are not consistent with each other cannot both reach it, because each
//! witness cosigns only trees consistent with the last one it cosigned.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::note::{self, NoteError};

/// Signature type byte of Ed25519 cosignatures (tlog-cosignature v1).
const COSIGNATURE_V1_TYPE: u8 = 0x04;

/// Key id of a cosigner.
fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    note::key_id(name, COSIGNATURE_V1_TYPE, public)
}

/// The message a cosignature signs.
fn signed_message(body: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{body}")
}

/// Splits a signed note into its body (with its final newline) and its signature lines.
pub fn split_note(note: &str) -> Result<(&str, &str), NoteError> {
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Format("no blank line before the signatures"))?;
    Ok((note.get(..=split).unwrap_or(""), note.get(split + 2..).unwrap_or("")))
}

/// A witness's cosigning key.
pub struct Cosigner {
    name: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // INVARIANT (no-secrets-in-logs): only the public side is shown.
        f.debug_struct("Cosigner")
            .field("vkey", &self.verifier().vkey())
            .finish()
    }
}

impl Cosigner {
    /// Loads a PKCS#8 PEM Ed25519 key; `name` is the cosigner's name (e.g. `witness.edoeb.example`).
    pub fn from_pem(name: &str, pem: &str) -> Result<Cosigner, NoteError> {
        note::check_key_name(name)?;
        Ok(Cosigner {
            name: name.to_owned(),
            key: note::key_pair_from_pem(pem)?,
        })
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CosignatureVerifier {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.key.public_key().as_ref());
        CosignatureVerifier {
            name: self.name.clone(),
            public,
        }
    }

    /// The cosignature line (with its final newline) over the checkpoint `body` at `timestamp`.
    pub fn cosign(&self, body: &str, timestamp: u64) -> String {
        let signature = self.key.sign(signed_message(body, timestamp).as_bytes());
        let mut blob = key_id(&self.name, &self.verifier().public).to_vec();
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(signature.as_ref());
        format!("\u{2014} {} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// A witness's public key, as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    public: [u8; 32],
}

impl CosignatureVerifier {
    /// The cosigner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>+<hex key id>+<base64(0x04 ‖ public key)>`.
    pub fn vkey(&self) -> String {
        note::encode_vkey(&self.name, COSIGNATURE_V1_TYPE, &self.public)
    }

    /// Parses a cosigner vkey (signature type 0x04).
    pub fn from_vkey(vkey: &str) -> Result<CosignatureVerifier, NoteError> {
        let (name, public) = note::decode_vkey(vkey, COSIGNATURE_V1_TYPE)?;
        Ok(CosignatureVerifier { name, public })
    }

    /// The timestamp of this witness's valid cosignature among `signatures` (the note's
    /// signature lines) over `body`, if there is one. Other lines are ignored.
    pub fn find(&self, body: &str, signatures: &str) -> Option<u64> {
        let id = key_id(&self.name, &self.public);
        let key = UnparsedPublicKey::new(&ED25519, self.public);
        signatures.lines().find_map(|line| {
            let (name, b64) = line.strip_prefix("\u{2014} ")?.rsplit_once(' ')?;
            if name != self.name {
                return None;
            }
            let blob = STANDARD.decode(b64).ok()?;
            if blob.len() != 4 + 8 + 64 || blob.get(..4) != Some(&id[..]) {
                return None;
            }
            let timestamp = u64::from_be_bytes(blob.get(4..12)?.try_into().ok()?);
            if timestamp > i64::MAX as u64 {
                return None;
            }
            key.verify(signed_message(body, timestamp).as_bytes(), blob.get(12..)?)
                .ok()
                .map(|()| timestamp)
        })
    }
}

/// Not enough witnesses cosigned a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint cosigned by {have} of the network's {of} witnesses; {need} are needed")]
pub struct NoQuorum {
    /// Valid cosignatures found.
    pub have: usize,
    /// Needed.
    pub need: usize,
    /// Witnesses of the network.
    pub of: usize,
}

/// The network's witnesses and how many must cosign: more than half.
#[derive(Debug, Clone, Default)]
pub struct Quorum {
    witnesses: Vec<CosignatureVerifier>,
    /// Witnesses listed with a key that does not parse: counted, never cosigning (fail closed).
    unusable: usize,
}

impl Quorum {
    /// The quorum of `witnesses` (duplicates by name count once).
    pub fn majority_of(mut witnesses: Vec<CosignatureVerifier>) -> Quorum {
        witnesses.sort_by(|a, b| a.name.cmp(&b.name));
        witnesses.dedup_by(|a, b| a.name == b.name);
        Quorum { witnesses, unusable: 0 }
    }

    /// The quorum of the witnesses whose vkeys the registry lists. A key that does not parse
    /// still counts among the witnesses (so a broken entry cannot lower the bar) and is returned
    /// with its problem.
    pub fn from_vkeys<'a>(vkeys: impl IntoIterator<Item = &'a str>) -> (Quorum, Vec<(String, NoteError)>) {
        let (mut verifiers, mut problems) = (Vec::new(), Vec::new());
        for vkey in vkeys {
            match CosignatureVerifier::from_vkey(vkey) {
                Ok(v) => verifiers.push(v),
                Err(e) => problems.push((vkey.to_owned(), e)),
            }
        }
        let mut quorum = Quorum::majority_of(verifiers);
        quorum.unusable = problems.len();
        (quorum, problems)
    }

    /// The witnesses.
    pub fn witnesses(&self) -> &[CosignatureVerifier] {
        &self.witnesses
    }

    /// Whether the network has witnesses at all (without, receipts rest on the log's key alone).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many witnesses the network has.
    pub fn len(&self) -> usize {
        self.witnesses.len() + self.unusable
    }

    /// Cosignatures needed: more than half of the witnesses.
    pub fn needed(&self) -> usize {
        self.len() / 2 + 1
    }

    /// The witnesses with a valid cosignature on `note` (a checkpoint signed note).
    pub fn cosigners<'a>(&'a self, note: &str) -> Vec<&'a CosignatureVerifier> {
        let Ok((body, signatures)) = split_note(note) else {
            return Vec::new();
        };
        self.witnesses
            .iter()
            .filter(|w| w.find(body, signatures).is_some())
            .collect()
    }

    /// Checks that more than half of the witnesses cosigned `note`.
    pub fn check(&self, note: &str) -> Result<(), NoQuorum> {
        let have = self.cosigners(note).len();
        if have >= self.needed() {
            Ok(())
        } else {
            Err(NoQuorum {
                have,
                need: self.needed(),
                of: self.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Checkpoint, Signer, generate_key_pem};

    fn cosigner(name: &str) -> Cosigner {
        Cosigner::from_pem(name, &generate_key_pem().unwrap()).unwrap()
    }

    fn note() -> String {
        note_of_size(20852163)
    }

    fn note_of_size(size: u64) -> String {
        let log = Signer::from_pem("cii.test/audit", &generate_key_pem().unwrap()).unwrap();
        log.sign(
            &Checkpoint {
                origin: "cii.test/audit".into(),
                size,
                root: [9; 32],
            }
            .body(),
        )
    }

    #[test]
    fn a_cosignature_has_the_c2sp_shape_and_verifies_only_on_its_checkpoint() {
        let w = cosigner("witness.example");
        let note = note();
        let (body, _) = split_note(&note).unwrap();
        let line = w.cosign(body, 1679315147);
        let b64 = line.strip_prefix("\u{2014} witness.example ").unwrap().trim_end();
        let blob = STANDARD.decode(b64).unwrap();
        assert_eq!(blob.len(), 76, "key id, timestamp, Ed25519 signature");
        assert_eq!(&blob[4..12], &1679315147u64.to_be_bytes());
        // The message signed is the one tlog-cosignature spells out.
        let message = format!("cosignature/v1\ntime 1679315147\n{body}");
        UnparsedPublicKey::new(&ED25519, w.verifier().public)
            .verify(message.as_bytes(), &blob[12..])
            .unwrap();
        assert_eq!(w.verifier().find(body, &line), Some(1679315147));
        assert_eq!(w.verifier().find(&body.replace("20852163", "20852164"), &line), None);
        assert_eq!(cosigner("witness.example").verifier().find(body, &line), None);
        let vkey = w.verifier().vkey();
        assert_eq!(CosignatureVerifier::from_vkey(&vkey), Ok(w.verifier()));
        // A log vkey (type 0x01) is not a cosigner vkey.
        let log = Signer::from_pem("witness.example", &generate_key_pem().unwrap()).unwrap();
        assert!(CosignatureVerifier::from_vkey(&log.verifier().vkey()).is_err());
    }

    #[test]
    fn a_quorum_is_more_than_half_and_counts_each_witness_once() {
        let ws: Vec<Cosigner> = (0..5).map(|i| cosigner(&format!("w{i}.example"))).collect();
        let quorum = Quorum::majority_of(ws.iter().map(Cosigner::verifier).collect());
        assert_eq!(quorum.needed(), 3);
        let mut cosigned = note();
        let body = split_note(&cosigned).unwrap().0.to_owned();
        for w in &ws[..2] {
            cosigned.push_str(&w.cosign(&body, 1));
        }
        // The same witness twice is still one.
        cosigned.push_str(&ws[1].cosign(&body, 2));
        assert_eq!(
            quorum.check(&cosigned),
            Err(NoQuorum {
                have: 2,
                need: 3,
                of: 5
            })
        );
        cosigned.push_str(&ws[4].cosign(&body, 3));
        assert_eq!(quorum.check(&cosigned), Ok(()));
        // A cosignature copied onto another checkpoint does not count there.
        let other = note_of_size(7);
        let mut moved = other.clone();
        for line in cosigned.lines().filter(|l| l.starts_with("\u{2014} w")) {
            moved.push_str(line);
            moved.push('\n');
        }
        assert_eq!(quorum.cosigners(&moved).len(), 0);
        assert_eq!(
            Quorum::majority_of(vec![ws[0].verifier(), ws[0].verifier()]).needed(),
            1
        );
        // A broken key in the registry counts among the witnesses but never cosigns.
        let vkeys: Vec<String> = ws[..2].iter().map(|w| w.verifier().vkey()).collect();
        let (q, problems) = Quorum::from_vkeys(vkeys.iter().map(String::as_str).chain(["broken+00+AA=="]));
        assert_eq!((q.len(), q.needed(), problems.len()), (3, 2, 1));
    }
}
