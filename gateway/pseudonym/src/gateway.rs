//! The gateway half: transcryption between domains, identity rekeying, and
//! the two refusals. It holds the pseudonymisation and rekeying secrets and
//! public keys only: no session key, no global secret, so it cannot decrypt.

use libpep::keys::{AttributeSessionPublicKey, PseudonymSessionPublicKey};
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
    epoch: u32,
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
        Gateway {
            transcryptor: Transcryptor::new(
                PseudonymizationSecret::from(pseudonymisation_secret),
                RekeyingSecret::from(rekeying_secret),
            ),
            global_pseudonym_key: PseudonymSessionPublicKey::from_point(*global.pseudonym.value()),
            global_attribute_key: AttributeSessionPublicKey::from_point(*global.attribute.value()),
            epoch,
        }
    }

    fn transcrypt_to(
        &self,
        from: &PseudonymizationDomain,
        ciphertext: &EncryptedPseudonym,
        to: &Party,
    ) -> EncryptedPseudonym {
        let info = self.transcryptor.transcryption_info(
            from,
            &to.domain(),
            &EncryptionContext::global(),
            &to.context(self.epoch),
        );
        self.transcryptor
            .transcrypt(ciphertext, &info, &self.global_pseudonym_key, &mut rand::rng())
    }

    /// Enrolment: from the origin domain into `to`'s domain and context.
    pub fn enrol(&self, ciphertext: &EncryptedPseudonym, to: &Party) -> EncryptedPseudonym {
        self.transcrypt_to(&origin(), ciphertext, to)
    }

    /// A transfer: from `caller`'s domain (its certificate identity) into `to`'s.
    pub fn translate(&self, ciphertext: &EncryptedPseudonym, caller: &Party, to: &Party) -> EncryptedPseudonym {
        self.transcrypt_to(&caller.domain(), ciphertext, to)
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

    /// Rekeys an identity attribute to `to` — only when the basis releases `identity.avs`.
    pub fn rekey_identity(&self, identity: &Identity, to: &Party) -> Identity {
        let info = self
            .transcryptor
            .attribute_rekey_info(&EncryptionContext::global(), &to.context(self.epoch));
        Identity(
            self.transcryptor
                .rekey(&identity.0, &info, &self.global_attribute_key, &mut rand::rng()),
        )
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
        let info = self.transcryptor.transcryption_info(
            &caller.domain(),
            &to.domain(),
            &EncryptionContext::global(),
            &to.context(self.epoch),
        );
        let attribute_info = self
            .transcryptor
            .attribute_rekey_info(&EncryptionContext::global(), &to.context(self.epoch));
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
