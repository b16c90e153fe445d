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

    /// The key in `pem` as the witness `vkey` names it: its name from the vkey, and `None`
    /// unless the key is the one the vkey lists (a key file and a registry that disagree).
    pub fn for_vkey(pem: &str, vkey: &str) -> Option<Cosigner> {
        let name = vkey.split('+').next()?;
        Cosigner::from_pem(name, pem)
            .ok()
            .filter(|c| c.verifier().vkey() == vkey)
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

    /// This witness's valid cosignature among `signatures` over `body`, rebuilt as one
    /// well-formed line (what a log appends to its note, never the witness's raw answer).
    pub fn verified_line(&self, body: &str, signatures: &str) -> Option<String> {
        let id = key_id(&self.name, &self.public);
        signatures.lines().find_map(|line| {
            self.verify_line(body, line, &id)?;
            let blob = STANDARD.decode(line.rsplit_once(' ')?.1).ok()?;
            Some(format!("\u{2014} {} {}\n", self.name, STANDARD.encode(blob)))
        })
    }

    /// The timestamp of this witness's valid cosignature among `signatures` (the note's
    /// signature lines) over `body`, if there is one. Other lines are ignored.
    pub fn find(&self, body: &str, signatures: &str) -> Option<u64> {
        let id = key_id(&self.name, &self.public);
        signatures.lines().find_map(|line| self.verify_line(body, line, &id))
    }

    /// The timestamp of `line` if it is this witness's valid cosignature over `body`.
    fn verify_line(&self, body: &str, line: &str, id: &[u8; 4]) -> Option<u64> {
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
        UnparsedPublicKey::new(&ED25519, self.public)
            .verify(signed_message(body, timestamp).as_bytes(), blob.get(12..)?)
            .ok()
            .map(|()| timestamp)
    }
}

/// Not enough witnesses cosigned a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "checkpoint cosigned by {have} of the network's {of} witnesses ({need} needed), \
     {independent_have} of its {independent_of} independent ones ({independent_need} needed)"
)]
pub struct NoQuorum {
    /// Valid cosignatures found.
    pub have: usize,
    /// Needed.
    pub need: usize,
    /// Witnesses of the network.
    pub of: usize,
    /// Valid cosignatures of independent witnesses.
    pub independent_have: usize,
    /// Needed of them.
    pub independent_need: usize,
    /// Independent witnesses of the network.
    pub independent_of: usize,
}

/// The network's witnesses and who must cosign: more than half of them all, and more than half
/// of the independent ones (run by parties other than the gateway's operator and the members).
///
/// Two quorums of a simple majority share only one witness, so one dishonest member cosigning
/// both branches would let a gateway show two histories. Any two quorums here share at least
/// one *independent* witness: a fork needs a dishonest independent witness.
#[derive(Debug, Clone, Default)]
pub struct Quorum {
    /// Each witness with whether it is independent.
    witnesses: Vec<(CosignatureVerifier, bool)>,
    /// Witnesses listed with a key that does not parse, all and independent: counted, never
    /// cosigning (fail closed).
    unusable: (usize, usize),
}

impl Quorum {
    /// The quorum of `witnesses` (verifier, independent); one key counts once, whatever its name.
    pub fn of(mut witnesses: Vec<(CosignatureVerifier, bool)>) -> Quorum {
        witnesses.sort_by_key(|w| w.0.public);
        witnesses.dedup_by(|a, b| a.0.public == b.0.public);
        Quorum {
            witnesses,
            unusable: (0, 0),
        }
    }

    /// The quorum of the witnesses the registry lists (vkey, independent). A key that does not
    /// parse still counts among the witnesses (so a broken entry cannot lower the bar) and is
    /// returned with its problem.
    pub fn from_vkeys<'a>(vkeys: impl IntoIterator<Item = (&'a str, bool)>) -> (Quorum, Vec<(String, NoteError)>) {
        let (mut verifiers, mut problems, mut unusable) = (Vec::new(), Vec::new(), (0, 0));
        for (vkey, independent) in vkeys {
            match CosignatureVerifier::from_vkey(vkey) {
                Ok(v) => verifiers.push((v, independent)),
                Err(e) => {
                    unusable.0 += 1;
                    unusable.1 += usize::from(independent);
                    problems.push((vkey.to_owned(), e));
                }
            }
        }
        let mut quorum = Quorum::of(verifiers);
        quorum.unusable = unusable;
        (quorum, problems)
    }

    /// Whether the network has witnesses at all (without, receipts rest on the log's key alone).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many witnesses the network has.
    pub fn len(&self) -> usize {
        self.witnesses.len() + self.unusable.0
    }

    /// How many of them are independent.
    pub fn independent(&self) -> usize {
        self.witnesses.iter().filter(|(_, i)| *i).count() + self.unusable.1
    }

    /// Cosignatures needed: more than half of the witnesses.
    pub fn needed(&self) -> usize {
        self.len() / 2 + 1
    }

    /// Cosignatures of independent witnesses needed: more than half of them (none if none).
    pub fn needed_independent(&self) -> usize {
        match self.independent() {
            0 => 0,
            n => n / 2 + 1,
        }
    }

    /// The witnesses with a valid cosignature on `note` (a checkpoint signed note), each with
    /// whether it is independent.
    pub fn cosigners<'a>(&'a self, note: &str) -> Vec<(&'a CosignatureVerifier, bool)> {
        let Ok((body, signatures)) = split_note(note) else {
            return Vec::new();
        };
        self.witnesses
            .iter()
            .filter(|(w, _)| w.find(body, signatures).is_some())
            .map(|(w, independent)| (w, *independent))
            .collect()
    }

    /// Checks that more than half of the witnesses, and more than half of the independent
    /// ones, cosigned `note`.
    pub fn check(&self, note: &str) -> Result<(), NoQuorum> {
        let cosigners = self.cosigners(note);
        let no = NoQuorum {
            have: cosigners.len(),
            need: self.needed(),
            of: self.len(),
            independent_have: cosigners.iter().filter(|(_, i)| *i).count(),
            independent_need: self.needed_independent(),
            independent_of: self.independent(),
        };
        if no.have >= no.need && no.independent_have >= no.independent_need {
            Ok(())
        } else {
            Err(no)
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
    fn one_dishonest_member_cannot_get_two_branches_past_the_quorum() {
        // Four nodes and one independent witness; node 3 cosigns whatever it is shown.
        let nodes: Vec<Cosigner> = (0..4).map(|i| cosigner(&format!("n{i}.example"))).collect();
        let independent = cosigner("w.example");
        let mut listed: Vec<(CosignatureVerifier, bool)> = nodes.iter().map(|n| (n.verifier(), false)).collect();
        listed.push((independent.verifier(), true));
        let quorum = Quorum::of(listed);
        assert_eq!((quorum.needed(), quorum.needed_independent()), (3, 1));
        let cosign = |who: &[&Cosigner], note: &str| {
            let body = split_note(note).unwrap().0.to_owned();
            let mut cosigned = note.to_owned();
            for w in who {
                cosigned.push_str(&w.cosign(&body, 1));
            }
            cosigned
        };
        // Branch 1 shown to nodes 0 and 1 (and the dishonest 3), branch 2 to node 2, the
        // independent witness and node 3: a simple majority each, but only the branch the
        // independent witness cosigned passes.
        let one = cosign(&[&nodes[0], &nodes[1], &nodes[3]], &note_of_size(10));
        let two = cosign(&[&nodes[2], &independent, &nodes[3]], &note_of_size(11));
        assert!(matches!(
            quorum.check(&one),
            Err(NoQuorum {
                have: 3,
                independent_have: 0,
                independent_need: 1,
                ..
            })
        ));
        assert_eq!(quorum.check(&two), Ok(()));
        // The log appends a rebuilt line, never the raw answer (a junk line, no final newline).
        let body = split_note(&one).unwrap().0.to_owned();
        let raw = format!("junk\n\n{}", nodes[0].cosign(&body, 7).trim_end());
        assert_eq!(
            nodes[0].verifier().verified_line(&body, &raw),
            Some(nodes[0].cosign(&body, 7))
        );
    }

    #[test]
    fn a_quorum_is_more_than_half_and_counts_each_witness_once() {
        let ws: Vec<Cosigner> = (0..5).map(|i| cosigner(&format!("w{i}.example"))).collect();
        let quorum = Quorum::of(ws.iter().map(|w| (w.verifier(), false)).collect());
        assert_eq!(quorum.needed(), 3);
        let mut cosigned = note();
        let body = split_note(&cosigned).unwrap().0.to_owned();
        for w in &ws[..2] {
            cosigned.push_str(&w.cosign(&body, 1));
        }
        // The same witness twice is still one.
        cosigned.push_str(&ws[1].cosign(&body, 2));
        assert!(matches!(
            quorum.check(&cosigned),
            Err(NoQuorum {
                have: 2,
                need: 3,
                of: 5,
                ..
            })
        ));
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
            Quorum::of(vec![(ws[0].verifier(), false), (ws[0].verifier(), false)]).needed(),
            1
        );
        // A broken key in the registry counts among the witnesses but never cosigns.
        let vkeys: Vec<String> = ws[..2].iter().map(|w| w.verifier().vkey()).collect();
        let listed = vkeys
            .iter()
            .map(|v| (v.as_str(), false))
            .chain([("broken+00+AA==", true)]);
        let (q, problems) = Quorum::from_vkeys(listed);
        assert_eq!((q.len(), q.needed(), problems.len()), (3, 2, 1));
        assert_eq!((q.independent(), q.needed_independent()), (1, 1));
    }
}
