//! C2SP checkpoints (`tlog-checkpoint`) signed as C2SP signed notes with Ed25519.
//!
//! Body: `<origin>\n<tree size>\n<base64 root hash>\n`. A signed note is the
//! body, a blank line, then one line per signature:
//! `— <key name> <base64(key id ‖ signature)>\n`, where the key id is the
//! first four bytes of SHA-256(key name ‖ "\n" ‖ 0x01 ‖ public key).
//! The verifier key is `<name>+<8 hex digits of the key id>+<base64(0x01 ‖ public key)>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::merkle::Hash;

/// Signature type byte of Ed25519 in signed notes.
const ED25519_TYPE: u8 = 0x01;

/// A checkpoint could not be made, parsed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The key material is unusable.
    #[error("signing key: {0}")]
    Key(&'static str),
    /// The text is not a signed note.
    #[error("not a signed note: {0}")]
    Format(&'static str),
    /// The body is not a checkpoint.
    #[error("not a checkpoint: {0}")]
    Checkpoint(&'static str),
    /// No signature by the expected key verifies.
    #[error("no valid signature by {0}")]
    Signature(String),
    /// The origin is not the expected one.
    #[error("checkpoint origin `{found}` is not `{expected}`")]
    Origin {
        /// The log's origin.
        expected: String,
        /// The checkpoint's.
        found: String,
    },
}

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (e.g. `cii.vs.example/audit`).
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

impl Checkpoint {
    /// The body text.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root))
    }

    /// Parses a body (extension lines after the root are allowed and ignored).
    pub fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = body.split_terminator('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(NoteError::Checkpoint("missing origin"))?;
        let size_text = lines.next().ok_or(NoteError::Checkpoint("missing tree size"))?;
        if size_text.is_empty()
            || !size_text.bytes().all(|b| b.is_ascii_digit())
            || (size_text.len() > 1 && size_text.starts_with('0'))
        {
            return Err(NoteError::Checkpoint("tree size is not a decimal number"));
        }
        let size = size_text
            .parse()
            .map_err(|_| NoteError::Checkpoint("tree size out of range"))?;
        let root_text = lines.next().ok_or(NoteError::Checkpoint("missing root hash"))?;
        let root: Hash = STANDARD
            .decode(root_text)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(NoteError::Checkpoint("root hash is not 32 bytes of base64"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// The log's signing key (Ed25519).
pub struct Signer {
    name: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // INVARIANT (no-secrets-in-logs): only the public side is shown.
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("vkey", &self.verifier().vkey())
            .finish()
    }
}

/// A new Ed25519 key in PKCS#8 PEM, for the log's key file.
pub fn generate_key_pem() -> Result<String, NoteError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| NoteError::Key("cannot generate"))?;
    let b64 = STANDARD.encode(pkcs8.as_ref());
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        body.join("\n")
    ))
}

impl Signer {
    /// Loads a PKCS#8 PEM Ed25519 key; `name` is the key name (conventionally the origin).
    pub fn from_pem(name: &str, pem: &str) -> Result<Signer, NoteError> {
        check_key_name(name)?;
        Ok(Signer {
            name: name.to_owned(),
            key: key_pair_from_pem(pem)?,
        })
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.key.public_key().as_ref());
        Verifier {
            name: self.name.clone(),
            public,
        }
    }

    /// Signs `body` as a signed note.
    pub fn sign(&self, body: &str) -> String {
        let signature = self.key.sign(body.as_bytes());
        let mut blob = key_id(&self.name, ED25519_TYPE, &self.verifier().public).to_vec();
        blob.extend_from_slice(signature.as_ref());
        format!("{body}\n\u{2014} {} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// A verifier key of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    public: [u8; 32],
}

/// An Ed25519 key pair from PKCS#8 PEM.
pub(crate) fn key_pair_from_pem(pem: &str) -> Result<Ed25519KeyPair, NoteError> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64.trim()).map_err(|_| NoteError::Key("not PEM"))?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| NoteError::Key("not an Ed25519 PKCS#8 key"))
}

/// The signed-note key id: the first 4 bytes of SHA-256(name ‖ "\n" ‖ signature type ‖ public key).
pub(crate) fn key_id(name: &str, kind: u8, public: &[u8; 32]) -> [u8; 4] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[kind]);
    ctx.update(public);
    let digest = ctx.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(digest.as_ref().get(..4).unwrap_or(&[0; 4]));
    id
}

/// `<name>+<hex key id>+<base64(signature type ‖ public key)>`.
pub(crate) fn encode_vkey(name: &str, kind: u8, public: &[u8; 32]) -> String {
    let id = key_id(name, kind, public);
    let mut typed = vec![kind];
    typed.extend_from_slice(public);
    format!(
        "{name}+{}+{}",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        STANDARD.encode(typed)
    )
}

/// Parses a vkey of signature type `kind`: its name and public key.
pub(crate) fn decode_vkey(vkey: &str, kind: u8) -> Result<(String, [u8; 32]), NoteError> {
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::Key("vkey is name+id+key"));
    };
    check_key_name(name)?;
    let typed = STANDARD
        .decode(key)
        .map_err(|_| NoteError::Key("vkey key is not base64"))?;
    let (&found, public) = typed.split_first().ok_or(NoteError::Key("vkey key is empty"))?;
    if found != kind {
        return Err(NoteError::Key("the vkey's signature type is not the one expected here"));
    }
    let public: [u8; 32] = public
        .try_into()
        .map_err(|_| NoteError::Key("Ed25519 public keys are 32 bytes"))?;
    let expected: String = key_id(name, kind, &public).iter().map(|b| format!("{b:02x}")).collect();
    if expected != id {
        return Err(NoteError::Key("vkey id does not match its key"));
    }
    Ok((name.to_owned(), public))
}

/// A key name: non-empty, without `+`, spaces or newlines.
pub(crate) fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(['+', ' ', '\n']) {
        return Err(NoteError::Key(
            "key name must be non-empty, without '+', spaces or newlines",
        ));
    }
    Ok(())
}

impl Verifier {
    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
    pub fn vkey(&self) -> String {
        encode_vkey(&self.name, ED25519_TYPE, &self.public)
    }

    /// Parses a vkey string.
    pub fn from_vkey(vkey: &str) -> Result<Verifier, NoteError> {
        let (name, public) = decode_vkey(vkey, ED25519_TYPE)?;
        Ok(Verifier { name, public })
    }

    /// Verifies a signed note and returns its body. Signatures by other keys
    /// are ignored (witness cosignatures may be present).
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Format("no blank line before the signatures"))?;
        let (body, sigs) = (note.get(..=split).unwrap_or(""), note.get(split + 2..).unwrap_or(""));
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Format("signature lines must end with a newline"));
        }
        let id = key_id(&self.name, ED25519_TYPE, &self.public);
        let key = UnparsedPublicKey::new(&ED25519, self.public);
        for line in sigs.lines() {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or(NoteError::Format("signature line must start with an em dash"))?;
            let (name, b64) = rest
                .rsplit_once(' ')
                .ok_or(NoteError::Format("signature line is `— name signature`"))?;
            if name != self.name {
                continue;
            }
            let Ok(blob) = STANDARD.decode(b64) else { continue };
            if blob.len() == 68
                && blob.get(..4) == Some(&id[..])
                && key.verify(body.as_bytes(), blob.get(4..).unwrap_or(&[])).is_ok()
            {
                return Ok(body);
            }
        }
        Err(NoteError::Signature(self.name.clone()))
    }

    /// Verifies a signed checkpoint of `origin` and parses it.
    pub fn open_checkpoint(&self, note: &str, origin: &str) -> Result<Checkpoint, NoteError> {
        let checkpoint = Checkpoint::parse_body(self.open(note)?)?;
        if checkpoint.origin != origin {
            return Err(NoteError::Origin {
                expected: origin.to_owned(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::from_pem("cii.test/audit", &generate_key_pem().unwrap()).unwrap()
    }

    #[test]
    fn signed_checkpoints_verify_and_tampering_is_caught() {
        let s = signer();
        let cp = Checkpoint {
            origin: "cii.test/audit".into(),
            size: 42,
            root: [7; 32],
        };
        let note = s.sign(&cp.body());
        assert!(note.starts_with("cii.test/audit\n42\nBwcH"));
        let v = s.verifier();
        assert_eq!(v.open_checkpoint(&note, "cii.test/audit"), Ok(cp));
        assert!(
            v.open_checkpoint(&note.replace("\n42\n", "\n43\n"), "cii.test/audit")
                .is_err()
        );
        assert!(matches!(
            v.open_checkpoint(&note, "other/audit"),
            Err(NoteError::Origin { .. })
        ));
        assert!(matches!(signer().verifier().open(&note), Err(NoteError::Signature(_))));
        // A cosignature by another key is ignored.
        let cosigned = format!("{note}\u{2014} witness.example AAAAAAAA\n");
        assert!(v.open(&cosigned).is_ok());
    }

    #[test]
    fn vkeys_round_trip() {
        let v = signer().verifier();
        let vkey = v.vkey();
        assert!(vkey.starts_with("cii.test/audit+"));
        assert_eq!(Verifier::from_vkey(&vkey), Ok(v));
        let mut bad = vkey.clone();
        bad.replace_range(15..16, if &vkey[15..16] == "0" { "1" } else { "0" });
        assert!(Verifier::from_vkey(&bad).is_err());
    }
}
