//! The gateway half: transcryption between domains, identity rekeying, and
//! the two refusals. It holds the pseudonymisation and rekeying secrets and
//! public keys only: no session key, no global secret, so it cannot decrypt.

use std::collections::HashMap;
use std::sync::RwLock;

use libpep::factors::{Factor, TranscryptionInfo};
use libpep::keys::{AttributeSessionPublicKey, PseudonymSessionPublicKey, PublicKey};
use libpep::prelude::*;

use crate::PseudonymError;
use crate::names::{Party, origin};

/// An identity attribute (the AVS number) in transit. The only thing the
/// gateway ever rekeys: pseudonyms are always transcrypted (reshuffled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity(pub EncryptedAttribute);

/// The gateway's transcryptor.
pub struct Gateway {
    transcryptor: Transcryptor,
    global_pseudonym_key: PseudonymSessionPublicKey,
    global_attribute_key: AttributeSessionPublicKey,
    /// The audit context's public key (the global key times the context's rekey factor):
    /// what the log's persons are encrypted under, needed to rerandomise them.
    audit_pseudonym_key: PseudonymSessionPublicKey,
    epoch: u32,
    /// With two transcryptors, this is the first of them, and the audit context's public key
    /// of each epoch (which it cannot compute alone: both rekey factors are in it) comes
    /// from the ceremony.
    second: Option<std::collections::BTreeMap<u32, [u8; 32]>>,
    /// Transcryption info per (source, target): deriving it costs several hash-to-scalar
    /// and scalar operations, the same for every call between the same two parties.
    /// `None` as the source is the origin domain (enrolment).
    infos: RwLock<HashMap<(Option<Party>, Party), TranscryptionInfo>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // INVARIANT (no-secrets-in-logs): the secrets are never printed.
        f.debug_struct("Gateway")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the transcryptor from its two secrets and the global public keys.
    pub fn new(
        pseudonymisation_secret: Vec<u8>,
        rekeying_secret: Vec<u8>,
        global: &GlobalPublicKeys,
        epoch: u32,
    ) -> Gateway {
        let rekeying_secret = RekeyingSecret::from(rekeying_secret);
        let audit_factor = libpep::factors::make_pseudonym_rekey_factor(&rekeying_secret, &Party::Audit.context(epoch));
        Gateway {
            audit_pseudonym_key: PseudonymSessionPublicKey::from_point(
                audit_factor.scalar() * *global.pseudonym.value(),
            ),
            transcryptor: Transcryptor::new(PseudonymizationSecret::from(pseudonymisation_secret), rekeying_secret),
            global_pseudonym_key: PseudonymSessionPublicKey::from_point(*global.pseudonym.value()),
            global_attribute_key: AttributeSessionPublicKey::from_point(*global.attribute.value()),
            epoch,
            second: None,
            infos: RwLock::new(HashMap::new()),
        }
    }

    /// The first of two transcryptors (see [`crate::shares`]): every operation is only its
    /// hop, to be completed by the second; `audit_keys` are the audit context's public keys
    /// by epoch, as the ceremony chained them.
    pub fn first_of_two(mut self, audit_keys: std::collections::BTreeMap<u32, [u8; 32]>) -> Gateway {
        self.second = Some(audit_keys);
        self
    }

    /// How many transcryptors each operation passes through (1 or 2).
    pub fn transcryptors(&self) -> u32 {
        if self.second.is_some() { 2 } else { 1 }
    }

    /// Builds the transcryptor from its key files: `transcryptor.json` (written
    /// by the ceremony for the gateway) and `global-public.json`.
    pub fn from_json(transcryptor: &str, global_public: &str) -> Result<Gateway, PseudonymError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TranscryptorFile {
            epoch: u32,
            pseudonymisation_secret: String,
            rekeying_secret: String,
            /// Two transcryptors: this one's blinding factor (for issuing shares at a later
            /// ceremony; unused at run time).
            #[serde(default)]
            #[allow(dead_code)]
            blinding_factor: Option<String>,
            /// 1 (absent) or 2.
            #[serde(default)]
            transcryptors: Option<u32>,
            /// Two transcryptors: the audit context's public key by epoch, in hex.
            #[serde(default)]
            audit_public_keys: std::collections::BTreeMap<u32, String>,
        }
        let file: TranscryptorFile = serde_json::from_str(transcryptor)
            .map_err(|_| PseudonymError::Key("transcryptor file is not the ceremony's JSON"))?;
        let secret = |hex: &str| {
            crate::hex_decode(hex)
                .filter(|b| b.len() >= 32)
                .ok_or(PseudonymError::Key(
                    "transcryptor secret must be at least 32 bytes of hex",
                ))
        };
        let global: GlobalPublicKeys = serde_json::from_str(global_public)
            .map_err(|_| PseudonymError::Key("global public key file is not the ceremony's JSON"))?;
        let gateway = Gateway::new(
            secret(&file.pseudonymisation_secret)?,
            secret(&file.rekeying_secret)?,
            &global,
            file.epoch,
        );
        match file.transcryptors.unwrap_or(1) {
            1 => Ok(gateway),
            2 => {
                let mut keys = std::collections::BTreeMap::new();
                for (epoch, hex) in &file.audit_public_keys {
                    let key = crate::hex_decode(hex)
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or(PseudonymError::Key("an audit public key is not 32 bytes of hex"))?;
                    keys.insert(*epoch, key);
                }
                if !keys.contains_key(&file.epoch) {
                    return Err(PseudonymError::Key(
                        "the audit public key of the current epoch is missing",
                    ));
                }
                Ok(gateway.first_of_two(keys))
            }
            _ => Err(PseudonymError::Key("transcryptors is 1 or 2")),
        }
    }

    /// Applies this gateway's transcryption to `op` (the whole operation with one
    /// transcryptor; the first hop with two): the ciphertext after it and the public key it is
    /// under now (for the second transcryptor).
    pub fn apply(
        &self,
        op: &crate::shares::Operation,
    ) -> Result<(crate::shares::Ciphertext, [u8; 32]), PseudonymError> {
        use crate::shares::Ciphertext;
        let key = match (&op.from.context, &op.ciphertext) {
            (None, Ciphertext::Pseudonym(_)) => self.global_pseudonym_key.to_bytes(),
            (None, Ciphertext::Attribute(_)) => self.global_attribute_key.to_bytes(),
            (Some((Party::Audit, written_in)), Ciphertext::Pseudonym(_)) => self.audit_key(*written_in)?.to_bytes(),
            _ => return Err(PseudonymError::Key("no operation starts from this context")),
        };
        let info = match (&op.from.context, &op.from.domain) {
            (None, Some(from)) => self.info(Some(from), &op.to),
            (None, None) => self.info(None, &op.to),
            _ => crate::shares::Hop::new(&self.transcryptor, self.epoch).info(&op.from, &op.to),
        };
        crate::shares::apply_with(&self.transcryptor, &info, op, &key)
    }

    /// The audit context's public key of epoch `epoch`.
    fn audit_key(&self, epoch: u32) -> Result<PseudonymSessionPublicKey, PseudonymError> {
        match &self.second {
            Some(keys) => keys
                .get(&epoch)
                .and_then(PseudonymSessionPublicKey::from_bytes)
                .ok_or(PseudonymError::Key("no audit public key for this epoch")),
            None if epoch == self.epoch => Ok(self.audit_pseudonym_key),
            None => {
                let factor = libpep::factors::make_pseudonym_rekey_factor(
                    self.transcryptor.rekeying_secret(),
                    &Party::Audit.context(epoch),
                );
                Ok(PseudonymSessionPublicKey::from_point(
                    factor.scalar() * *self.global_pseudonym_key.value(),
                ))
            }
        }
    }

    /// The key epoch of the encryption contexts this transcryptor targets.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    fn info(&self, from: Option<&Party>, to: &Party) -> TranscryptionInfo {
        let key = (from.cloned(), to.clone());
        if let Some(info) = self.infos.read().ok().and_then(|m| m.get(&key).copied()) {
            return info;
        }
        let from_domain = from.map_or_else(origin, Party::domain);
        let info = self.transcryptor.transcryption_info(
            &from_domain,
            &to.domain(),
            &EncryptionContext::global(),
            &to.context(self.epoch),
        );
        // A poisoned lock only costs the cache, never the answer.
        if let Ok(mut infos) = self.infos.write() {
            infos.insert(key, info);
        }
        info
    }

    fn transcrypt_with(&self, info: &TranscryptionInfo, ciphertext: &EncryptedPseudonym) -> EncryptedPseudonym {
        self.transcryptor
            .transcrypt(ciphertext, info, &self.global_pseudonym_key, &mut rand::rng())
    }

    /// Enrolment: from the origin domain into `to`'s domain and context.
    pub fn enrol(&self, ciphertext: &EncryptedPseudonym, to: &Party) -> EncryptedPseudonym {
        self.transcrypt_with(&self.info(None, to), ciphertext)
    }

    /// A person as the audit log stores it (the audit domain, encrypted for the audit
    /// context of `written_in`, the epoch of the entry) into `to`'s domain and the context
    /// of the current epoch: an institution's DPO reads its query answers under its own key
    /// and pseudonym, entries written before a rotation included.
    pub fn from_audit_context(
        &self,
        ciphertext: &EncryptedPseudonym,
        written_in: u32,
        to: &Party,
    ) -> Result<EncryptedPseudonym, PseudonymError> {
        // The same path as the gateway's hop (`apply`), which knows the audit context's keys.
        let op = crate::shares::Operation {
            ciphertext: crate::shares::Ciphertext::Pseudonym(*ciphertext),
            from: crate::shares::Source::audit(written_in),
            to: to.clone(),
        };
        match self.apply(&op)?.0 {
            crate::shares::Ciphertext::Pseudonym(p) => Ok(p),
            crate::shares::Ciphertext::Attribute(_) => Err(PseudonymError::Key("not a pseudonym")),
        }
    }

    /// A transfer: from `caller`'s domain (its certificate identity) into `to`'s.
    pub fn translate(&self, ciphertext: &EncryptedPseudonym, caller: &Party, to: &Party) -> EncryptedPseudonym {
        self.transcrypt_with(&self.info(Some(caller), to), ciphertext)
    }

    /// Refuses any transcription into the origin domain (it would hand out
    /// the AVS-derived value). Callers name targets as [`Party`], which has no
    /// origin variant; this guards the raw-domain entry point.
    pub fn translate_to_domain(
        &self,
        ciphertext: &EncryptedPseudonym,
        caller: &Party,
        domain: &PseudonymizationDomain,
        context: &EncryptionContext,
    ) -> Result<EncryptedPseudonym, PseudonymError> {
        if *domain == origin() {
            return Err(PseudonymError::OriginTarget);
        }
        let info =
            self.transcryptor
                .transcryption_info(&caller.domain(), domain, &EncryptionContext::global(), context);
        Ok(self
            .transcryptor
            .transcrypt(ciphertext, &info, &self.global_pseudonym_key, &mut rand::rng()))
    }

    /// Encrypts an attribute under the global attribute key (for sealing).
    pub(crate) fn encrypt_attribute(&self, attribute: &Attribute) -> EncryptedAttribute {
        attribute.encrypt(&self.global_attribute_key, &mut rand::rng())
    }

    /// Rekeys an identity attribute to `to` — only when the basis releases `identity.avs`.
    pub fn rekey_identity(&self, identity: &Identity, to: &Party) -> Identity {
        // The attribute half of any info into `to` is the same: it depends on the contexts only.
        let info = self.info(None, to).attribute;
        Identity(
            self.transcryptor
                .rekey(&identity.0, &info, &self.global_attribute_key, &mut rand::rng()),
        )
    }
}

impl Gateway {
    /// The baseline of `cii bench pseudonyms`: libpep's own `transcrypt` called in a
    /// loop on `items`, one loop per core, with the same transcryption info as
    /// [`Gateway::translate_batch`] — what the hardware and libpep allow.
    pub fn raw_transcrypt_all_cores(&self, items: &[EncryptedPseudonym], caller: &Party, to: &Party) {
        let info = self.info(Some(caller), to);
        let threads = std::thread::available_parallelism().map_or(1, usize::from).max(1);
        std::thread::scope(|scope| {
            for part in items.chunks(items.len().div_ceil(threads).max(1)) {
                let info = &info;
                scope.spawn(move || {
                    let mut rng = rand::rng();
                    for ct in part {
                        std::hint::black_box(self.transcryptor.transcrypt(
                            ct,
                            info,
                            &self.global_pseudonym_key,
                            &mut rng,
                        ));
                    }
                });
            }
        });
    }
}

/// One person in a batch: the pseudonym, and the identity if it travels.
pub type BatchItem = (EncryptedPseudonym, Option<Identity>);

impl Gateway {
    /// Translates a batch from `caller` to `to` on every core. The whole batch
    /// is shuffled once first (so output order says nothing about input order),
    /// then chunks are transcrypted in parallel; each person's identity stays
    /// with its pseudonym. (libpep's `transcrypt_batch` runs on one thread, and
    /// calling it per chunk would shuffle only within each chunk.)
    pub fn translate_batch(&self, mut items: Vec<BatchItem>, caller: &Party, to: &Party) -> Vec<BatchItem> {
        use rand::seq::SliceRandom;
        items.shuffle(&mut rand::rng());
        let info = self.info(Some(caller), to);
        let attribute_info = info.attribute;
        let threads = std::thread::available_parallelism().map_or(1, usize::from).max(1);
        let chunk = items.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for part in items.chunks_mut(chunk) {
                scope.spawn(|| {
                    let mut rng = rand::rng();
                    for (pseudonym, identity) in part.iter_mut() {
                        *pseudonym =
                            self.transcryptor
                                .transcrypt(pseudonym, &info, &self.global_pseudonym_key, &mut rng);
                        if let Some(id) = identity {
                            *id = Identity(self.transcryptor.rekey(
                                &id.0,
                                &attribute_info,
                                &self.global_attribute_key,
                                &mut rng,
                            ));
                        }
                    }
                });
            }
        });
        items
    }
}
