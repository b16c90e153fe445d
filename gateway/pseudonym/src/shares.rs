//! The scheme with two transcryptors run by different parties (libpep's distributed
//! mode), so that no one party holds enough to link persons, open a seal or recover the
//! global key (issue 24).
//!
//! **The ceremony in shares, without a dealer.** libpep's own setup draws the global
//! secret key and blinds it, so whoever runs it knew the key once. Here no one ever does:
//! - [`Setup::start`] draws two public random scalars, the *blinded* global secret keys
//!   `B` (pseudonym and attribute halves), and sets the public keys to `B·G`;
//! - each transcryptor party, offline, draws its own secrets ([`TranscryptorSecrets`]: a
//!   pseudonymisation secret, a rekeying secret and a blinding factor `bᵢ`) and multiplies
//!   the public keys by `bᵢ` ([`TranscryptorSecrets::contribute`]).
//!
//! The global secret key is then `y = B·b₁·b₂`, which nobody computes. A party's session
//! keys for context `c` are `B·∏(kᵢ(c)·bᵢ)`: each transcryptor gives its share
//! `kᵢ(c)·bᵢ` ([`TranscryptorSecrets::session_key_shares`]) and the institution multiplies
//! them into `B` ([`session_keys`]) — `y·k₁(c)·k₂(c)`, the key the two hops address.
//!
//! **Every operation is two hops.** A ciphertext under the global key passes through each
//! transcryptor in turn ([`Hop`]); each applies its own reshuffle and rekey ratios and
//! passes the public key the ciphertext is now under to the next, which rerandomises
//! under it. One hop alone leaves a ciphertext that no session key opens.
//!
//! What one party holds: transcryptor 1 (the gateway) knows `B` (public), `b₁` and its
//! ratios. With an institution's session key `B·k₁(c)b₁·k₂(c)b₂` it can strip `B` and its own
//! share and learn `k₂(c)·b₂` — transcryptor 2's share for that one context, which the
//! institution had anyway — but never `y`, `b₂` or `k₂` alone; so it opens no enrolment
//! value and no other party's ciphertext (the attack test in `tests/distributed.rs` runs
//! it against one transcryptor and against two).

use libpep::keys::distribution::blinding::{
    BlindedAttributeGlobalSecretKey, BlindedGlobalSecretKey, BlindedGlobalSecretKeys, BlindedPseudonymGlobalSecretKey,
    BlindingFactor,
};
use libpep::keys::distribution::shares::SessionKeyShares;
use libpep::keys::{
    AttributeGlobalPublicKey, AttributeGlobalSecretKey, AttributeSessionPublicKey, PseudonymGlobalPublicKey,
    PseudonymGlobalSecretKey, PseudonymSessionPublicKey, PublicKey, SecretKey,
};
use libpep::prelude::*;
use libpep::transcryptor::DistributedTranscryptor;
use rand::RngExt;

use crate::PseudonymError;
use crate::names::{Party, origin};

/// The public half of the ceremony: the blinded global secret keys (public, every
/// institution needs them to assemble its session keys) and the global public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// `B`: the global secret keys divided by every transcryptor's blinding factor.
    pub blinded: BlindedGlobalSecretKeys,
    /// The global public keys, once every transcryptor contributed.
    pub global: GlobalPublicKeys,
    /// How many transcryptors contributed so far.
    pub contributions: u32,
}

impl Setup {
    /// The start of a ceremony in shares: public random blinded keys, no contribution yet.
    pub fn start() -> Setup {
        let mut rng = rand::rng();
        let pseudonym = libpep::elgamal::arithmetic::scalars::ScalarNonZero::random(&mut rng);
        let attribute = libpep::elgamal::arithmetic::scalars::ScalarNonZero::random(&mut rng);
        Setup {
            blinded: BlindedGlobalSecretKeys {
                pseudonym: BlindedPseudonymGlobalSecretKey::from_scalar(pseudonym),
                attribute: BlindedAttributeGlobalSecretKey::from_scalar(attribute),
            },
            global: GlobalPublicKeys {
                pseudonym: PseudonymGlobalSecretKey::from_scalar(pseudonym).public_key(),
                attribute: AttributeGlobalSecretKey::from_scalar(attribute).public_key(),
            },
            contributions: 0,
        }
    }
}

/// One transcryptor party's secrets, drawn by that party alone.
pub struct TranscryptorSecrets {
    transcryptor: DistributedTranscryptor,
    epoch: u32,
    /// Transcryption info per (source, target): the same for every call between the same two
    /// parties, and several hash-to-scalar derivations to make.
    infos: Infos,
}

/// A cache of transcryption infos (a poisoned lock only costs the cache, never the answer).
type Infos = std::sync::RwLock<std::collections::HashMap<(Source, Party), libpep::factors::TranscryptionInfo>>;

impl std::fmt::Debug for TranscryptorSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // INVARIANT (no-secrets-in-logs).
        f.write_str("TranscryptorSecrets(..)")
    }
}

impl TranscryptorSecrets {
    /// Fresh secrets for key epoch `epoch`.
    pub fn generate(epoch: u32) -> TranscryptorSecrets {
        let mut rng = rand::rng();
        let secret = |rng: &mut rand::rngs::ThreadRng| (0..32).map(|_| rng.random::<u8>()).collect::<Vec<u8>>();
        let (pseudonymisation, rekeying) = (secret(&mut rng), secret(&mut rng));
        TranscryptorSecrets {
            transcryptor: DistributedTranscryptor::new(
                PseudonymizationSecret::from(pseudonymisation),
                RekeyingSecret::from(rekeying),
                BlindingFactor::random(&mut rng),
            ),
            epoch,
            infos: Infos::default(),
        }
    }

    /// This party's step of the ceremony: the global public keys multiplied by its blinding
    /// factor. The result is public; the factor stays with the party.
    pub fn contribute(&self, setup: &Setup) -> Setup {
        let b = *self.transcryptor.blinding_factor().value();
        Setup {
            blinded: setup.blinded,
            global: GlobalPublicKeys {
                pseudonym: PseudonymGlobalPublicKey::from_point(b * *setup.global.pseudonym.value()),
                attribute: AttributeGlobalPublicKey::from_point(b * *setup.global.attribute.value()),
            },
            contributions: setup.contributions + 1,
        }
    }

    /// This transcryptor's shares of `party`'s session keys for key epoch `epoch`: what the
    /// party multiplies into the blinded keys. Alone, a share reveals nothing of the key.
    pub fn session_key_shares(&self, party: &Party, epoch: u32) -> SessionKeyShares {
        self.transcryptor.session_key_shares(&party.context(epoch))
    }

    /// This transcryptor's hop of every operation.
    pub fn hop(&self) -> Hop<'_> {
        Hop {
            transcryptor: &self.transcryptor,
            epoch: self.epoch,
            infos: Some(&self.infos),
        }
    }

    /// The key epoch of the contexts this transcryptor targets.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// `key` (a party's context public key as the previous transcryptors made it) times this
    /// transcryptor's rekey factor for `party`'s context of `epoch`: chained by every
    /// transcryptor at the ceremony, the context's public key, which anyone may know (the
    /// gateway needs the audit context's to rerandomise what it reads from the log).
    pub fn context_key(&self, party: &Party, epoch: u32, key: &[u8; 32]) -> Result<[u8; 32], PseudonymError> {
        use libpep::factors::Factor;
        let key: PseudonymSessionPublicKey =
            PseudonymSessionPublicKey::from_bytes(key).ok_or(PseudonymError::NotAPoint)?;
        let factor =
            libpep::factors::make_pseudonym_rekey_factor(self.transcryptor.rekeying_secret(), &party.context(epoch));
        Ok(<PseudonymSessionPublicKey>::from_point(factor.scalar() * *key.value()).to_bytes())
    }

    /// The secrets as the party's key file (JSON).
    pub fn to_json(&self) -> String {
        use libpep::elgamal::arithmetic::scalars::ScalarTraits;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        format!(
            "{{\"epoch\":{},\"pseudonymisation_secret\":\"{}\",\"rekeying_secret\":\"{}\",\"blinding_factor\":\"{}\"}}",
            self.epoch,
            hex(self.transcryptor.pseudonymization_secret().as_bytes()),
            hex(self.transcryptor.rekeying_secret().as_bytes()),
            self.transcryptor.blinding_factor().value().to_hex(),
        )
    }

    /// The secrets from the party's key file.
    pub fn from_json(json: &str) -> Result<TranscryptorSecrets, PseudonymError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            epoch: u32,
            pseudonymisation_secret: String,
            rekeying_secret: String,
            blinding_factor: String,
        }
        let file: File = serde_json::from_str(json)
            .map_err(|_| PseudonymError::Key("transcryptor secrets file is not the ceremony's JSON"))?;
        let secret = |hex: &str| {
            crate::hex_decode(hex)
                .filter(|b| b.len() >= 32)
                .ok_or(PseudonymError::Key(
                    "transcryptor secret must be at least 32 bytes of hex",
                ))
        };
        let blinding = BlindingFactor::from_hex(&file.blinding_factor)
            .ok_or(PseudonymError::Key("blinding factor is not a scalar in hex"))?;
        Ok(TranscryptorSecrets {
            transcryptor: DistributedTranscryptor::new(
                PseudonymizationSecret::from(secret(&file.pseudonymisation_secret)?),
                RekeyingSecret::from(secret(&file.rekeying_secret)?),
                blinding,
            ),
            epoch: file.epoch,
            infos: Infos::default(),
        })
    }
}

/// The whole ceremony in shares for a network run on one machine (development, tests,
/// `cii demo --transcryptors 2`): both transcryptor parties' steps run here in turn, and every
/// party's session keys are assembled from both shares. The files are those of
/// [`crate::ceremony::Ceremony::key_files`], with the gateway's `transcryptor.json` marked
/// `"transcryptors":2` (and the audit context's public key), plus `transcryptor/secrets.json`
/// for the second party. A network whose parties are truly apart runs each step on its own
/// machine and passes only the public values and the shares (docs/security.md).
pub fn key_files(
    institutions: &[cii_types::InstitutionId],
    epoch: u32,
) -> Result<crate::ceremony::KeyFiles, PseudonymError> {
    let (gateway, second) = (
        TranscryptorSecrets::generate(epoch),
        TranscryptorSecrets::generate(epoch),
    );
    let setup = second.contribute(&gateway.contribute(&Setup::start()));
    let keys_of = |party: &Party| {
        let shares = [
            gateway.session_key_shares(party, epoch),
            second.session_key_shares(party, epoch),
        ];
        session_keys(&setup, &shares)
    };
    let json = |v: &dyn crate::ceremony::erased::Json| {
        v.json()
            .map_err(|_| PseudonymError::Key("cannot serialise key material"))
    };
    let global_key = <PseudonymSessionPublicKey>::from_point(*setup.global.pseudonym.value()).to_bytes();
    let audit_key = second.context_key(
        &Party::Audit,
        epoch,
        &gateway.context_key(&Party::Audit, epoch, &global_key)?,
    )?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let gateway_file = gateway.to_json();
    let gateway_file = format!(
        "{},\"transcryptors\":2,\"audit_public_keys\":{{\"{epoch}\":\"{}\"}}}}",
        gateway_file.trim_end_matches('}'),
        hex(&audit_key)
    );
    let mut files: crate::ceremony::KeyFiles = vec![
        ("global-public.json".to_owned(), json(&setup.global)?, false),
        ("gateway/transcryptor.json".to_owned(), gateway_file, true),
        ("transcryptor/secrets.json".to_owned(), second.to_json(), true),
        (
            "consent/session-keys.json".to_owned(),
            json(&keys_of(&Party::Registry)?)?,
            true,
        ),
        (
            "dpo/audit-session-keys.json".to_owned(),
            json(&keys_of(&Party::Audit)?)?,
            true,
        ),
    ];
    for id in institutions {
        let keys = keys_of(&Party::Institution(id.clone()))?;
        files.push((format!("institutions/{id}/session-keys.json"), json(&keys)?, true));
        let dpo = keys_of(&Party::Dpo(id.clone()))?;
        files.push((format!("dpo/{id}/session-keys.json"), json(&dpo)?, true));
    }
    Ok(files)
}

/// A party's session keys, assembled from the public blinded keys and one share per
/// transcryptor (in any order).
pub fn session_keys(setup: &Setup, shares: &[SessionKeyShares]) -> Result<SessionKeys, PseudonymError> {
    if shares.is_empty() || u32::try_from(shares.len()).ok() != Some(setup.contributions) {
        return Err(PseudonymError::Key("one session key share per transcryptor is needed"));
    }
    Ok(libpep::client::distributed::make_session_keys_distributed(
        setup.blinded,
        shares,
    ))
}

/// Where a ciphertext is: its pseudonymisation domain (`None`: the origin domain of
/// enrolment) and the encryption context it is under (`None`: the global key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// The domain, `None` for the origin domain.
    pub domain: Option<Party>,
    /// The context, `None` for the global key; else the party and epoch.
    pub context: Option<(Party, u32)>,
}

impl Source {
    /// A node's ciphertext: its own domain (or the origin), under the global key.
    pub fn node(domain: Option<Party>) -> Source {
        Source { domain, context: None }
    }

    /// A person as the audit log stores it: the audit domain, the audit context of `epoch`.
    pub fn audit(epoch: u32) -> Source {
        Source {
            domain: Some(Party::Audit),
            context: Some((Party::Audit, epoch)),
        }
    }
}

/// A ciphertext a transcryptor works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ciphertext {
    /// A pseudonym: reshuffled into the target's domain and rekeyed.
    Pseudonym(EncryptedPseudonym),
    /// An attribute (an identity, a seal key): rekeyed only.
    Attribute(EncryptedAttribute),
}

/// One libpep operation: a ciphertext from where it is to a party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The ciphertext.
    pub ciphertext: Ciphertext,
    /// Where it is.
    pub from: Source,
    /// The party it goes to (never the origin: [`Party`] has no origin variant).
    pub to: Party,
}

/// One transcryptor's share of the work: its reshuffle and rekey ratios, applied to a
/// ciphertext under `key`, with the key it is under afterwards (for the next hop).
#[derive(Clone, Copy)]
pub struct Hop<'a> {
    transcryptor: &'a Transcryptor,
    epoch: u32,
    infos: Option<&'a Infos>,
}

impl std::fmt::Debug for Hop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hop")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<'a> Hop<'a> {
    /// The hop of `transcryptor`, targeting contexts of key epoch `epoch`.
    pub fn new(transcryptor: &'a Transcryptor, epoch: u32) -> Hop<'a> {
        Hop {
            transcryptor,
            epoch,
            infos: None,
        }
    }

    /// The transcryption info from `from` into `to`'s domain and current context.
    pub fn info(&self, from: &Source, to: &Party) -> libpep::factors::TranscryptionInfo {
        let key = (from.clone(), to.clone());
        if let Some(info) = self.infos.and_then(|i| i.read().ok()?.get(&key).copied()) {
            return info;
        }
        let info = self.derive(from, to);
        if let Some(mut infos) = self.infos.and_then(|i| i.write().ok()) {
            infos.insert(key, info);
        }
        info
    }

    fn derive(&self, from: &Source, to: &Party) -> libpep::factors::TranscryptionInfo {
        let from_domain = from.domain.as_ref().map_or_else(origin, Party::domain);
        let from_context = from
            .context
            .as_ref()
            .map_or_else(EncryptionContext::global, |(p, epoch)| p.context(*epoch));
        self.transcryptor
            .transcryption_info(&from_domain, &to.domain(), &from_context, &to.context(self.epoch))
    }

    /// Applies this hop to `op`, whose ciphertext is under the public key `key` (32 bytes):
    /// the ciphertext after it, and the key it is under now.
    pub fn apply(&self, op: &Operation, key: &[u8]) -> Result<(Ciphertext, [u8; 32]), PseudonymError> {
        apply_with(self.transcryptor, &self.info(&op.from, &op.to), op, key)
    }
}

/// `op` transcrypted with `info` by `transcryptor`, from under `key`; the key after it.
pub(crate) fn apply_with(
    transcryptor: &Transcryptor,
    info: &libpep::factors::TranscryptionInfo,
    op: &Operation,
    key: &[u8],
) -> Result<(Ciphertext, [u8; 32]), PseudonymError> {
    use libpep::factors::RekeyPublicKey;
    let mut rng = rand::rng();
    Ok(match &op.ciphertext {
        Ciphertext::Pseudonym(c) => {
            let key: PseudonymSessionPublicKey =
                PseudonymSessionPublicKey::from_slice(key).ok_or(PseudonymError::NotAPoint)?;
            let out = transcryptor.transcrypt(c, info, &key, &mut rng);
            (
                Ciphertext::Pseudonym(out),
                info.pseudonym.rekey_public_key(&key).to_bytes(),
            )
        }
        Ciphertext::Attribute(c) => {
            let key: AttributeSessionPublicKey =
                AttributeSessionPublicKey::from_slice(key).ok_or(PseudonymError::NotAPoint)?;
            let out = transcryptor.rekey(c, &info.attribute, &key, &mut rng);
            (
                Ciphertext::Attribute(out),
                info.attribute.rekey_public_key(&key).to_bytes(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use cii_types::{AvsNumber, InstitutionId};
    use libpep::elgamal::arithmetic::scalars::ScalarNonZero;
    use libpep::factors::Factor;

    use super::*;
    use crate::ceremony::Ceremony;
    use crate::gateway::Gateway;
    use crate::node::NodeKeys;

    /// The global keys as the key a node's ciphertext is under, for the first hop.
    fn global_session_keys(global: &GlobalPublicKeys) -> (PseudonymSessionPublicKey, AttributeSessionPublicKey) {
        (
            PseudonymSessionPublicKey::from_point(*global.pseudonym.value()),
            AttributeSessionPublicKey::from_point(*global.attribute.value()),
        )
    }

    /// Two parties' ceremony in shares: each draws its secrets and contributes in turn.
    struct Network {
        setup: Setup,
        gateway: TranscryptorSecrets,
        second: TranscryptorSecrets,
    }

    fn network() -> Network {
        let (gateway, second) = (TranscryptorSecrets::generate(1), TranscryptorSecrets::generate(1));
        let setup = second.contribute(&gateway.contribute(&Setup::start()));
        Network { setup, gateway, second }
    }

    fn institution(id: &str) -> Party {
        Party::Institution(InstitutionId::parse("id", id).unwrap())
    }

    impl Network {
        fn keys(&self, party: &Party) -> NodeKeys {
            let shares = [
                self.gateway.session_key_shares(party, 1),
                self.second.session_key_shares(party, 1),
            ];
            NodeKeys::new(self.setup.global, session_keys(&self.setup, &shares).unwrap())
        }

        /// An operation through both hops (or the gateway's alone).
        fn run(&self, ciphertext: Ciphertext, from: &Source, to: &Party, both: bool) -> Ciphertext {
            let (pseudonym_key, attribute_key) = global_session_keys(&self.setup.global);
            let key = match ciphertext {
                Ciphertext::Pseudonym(_) => pseudonym_key.to_bytes(),
                Ciphertext::Attribute(_) => attribute_key.to_bytes(),
            };
            let op = Operation {
                ciphertext,
                from: from.clone(),
                to: to.clone(),
            };
            let (once, key) = self.gateway.hop().apply(&op, &key).unwrap();
            if !both {
                return once;
            }
            let op = Operation { ciphertext: once, ..op };
            self.second.hop().apply(&op, &key).unwrap().0
        }

        fn pseudonym(
            &self,
            ciphertext: &EncryptedPseudonym,
            from: &Source,
            to: &Party,
            both: bool,
        ) -> EncryptedPseudonym {
            match self.run(Ciphertext::Pseudonym(*ciphertext), from, to, both) {
                Ciphertext::Pseudonym(c) => c,
                Ciphertext::Attribute(_) => unreachable!(),
            }
        }

        fn attribute(&self, ciphertext: &EncryptedAttribute, to: &Party, both: bool) -> EncryptedAttribute {
            match self.run(Ciphertext::Attribute(*ciphertext), &Source::node(None), to, both) {
                Ciphertext::Attribute(c) => c,
                Ciphertext::Pseudonym(_) => unreachable!(),
            }
        }
    }

    fn avs(n: u64) -> AvsNumber {
        let body = format!("756{n:09}");
        let digits: Vec<u8> = body.bytes().map(|b| b - b'0').collect();
        let check = cii_types::avs::check_digit(&digits.try_into().unwrap());
        AvsNumber::parse(&format!("{body}{check}")).unwrap()
    }

    #[test]
    fn through_both_hops_every_operation_gives_what_one_transcryptor_gave() {
        let net = network();
        let (orp, ai) = (institution("ORP-VS"), institution("AI-VS"));
        let (orp_keys, ai_keys) = (net.keys(&orp), net.keys(&ai));
        let person = avs(42);
        let enrol = |keys: &NodeKeys, party: &Party| {
            keys.decrypt(&net.pseudonym(&keys.enrolment_ciphertext(&person), &Source::node(None), party, true))
        };
        let (p_orp, p_ai) = (enrol(&orp_keys, &orp), enrol(&ai_keys, &ai));
        assert_eq!(enrol(&orp_keys, &orp), p_orp, "stable");
        assert_ne!(p_orp, p_ai, "one pseudonym per domain");
        // A transfer ORP → AI: the AI office's own pseudonym of the person.
        let sent = orp_keys.encrypt_own(&p_orp).unwrap();
        let from = Source::node(Some(orp.clone()));
        assert_eq!(ai_keys.decrypt(&net.pseudonym(&sent, &from, &ai, true)), p_ai);
        // The gateway's hop alone leaves nothing the recipient can read.
        assert_ne!(ai_keys.decrypt(&net.pseudonym(&sent, &from, &ai, false)), p_ai);
        // The identity, and a seal key, rekeyed through both hops open for the recipient only.
        let identity = orp_keys.encrypt_identity(&person).unwrap();
        let rekeyed = net.attribute(&identity, &ai, true);
        assert_eq!(
            ai_keys.decrypt_identity(&rekeyed).unwrap().expose_digits(),
            person.expose_digits()
        );
        assert!(orp_keys.decrypt_identity(&rekeyed).is_err());
        assert!(ai_keys.decrypt_identity(&net.attribute(&identity, &ai, false)).is_err());
        let sealer = orp_keys.sealer().unwrap();
        let (nonce, ciphertext) = sealer.seal(b"aad", b"payload").unwrap();
        let key = net.attribute(&sealer.key, &ai, true);
        assert_eq!(
            ai_keys.opener(&key).unwrap().open(nonce, b"aad", &ciphertext).unwrap(),
            b"payload"
        );
        let half = net.attribute(&sealer.key, &ai, false);
        assert!(ai_keys.opener(&half).unwrap().open(nonce, b"aad", &ciphertext).is_err());
        // Shares of one transcryptor only do not make a session key.
        assert!(session_keys(&net.setup, &[net.gateway.session_key_shares(&ai, 1)]).is_err());
    }

    /// The files of the ceremony in shares, loaded as each party loads its own: the gateway's
    /// hop and the second transcryptor's complete every operation, the audit context's public
    /// key included (a DPO's look-up from the log).
    #[test]
    fn the_key_files_of_a_ceremony_in_shares_work_as_loaded_by_each_party() {
        let (orp_id, ai_id) = (
            InstitutionId::parse("id", "ORP-VS").unwrap(),
            InstitutionId::parse("id", "AI-VS").unwrap(),
        );
        let files = key_files(&[orp_id.clone(), ai_id.clone()], 1).unwrap();
        let file = |name: &str| files.iter().find(|(n, _, _)| n == name).unwrap().1.clone();
        let gateway = Gateway::from_json(&file("gateway/transcryptor.json"), &file("global-public.json")).unwrap();
        assert_eq!(gateway.transcryptors(), 2);
        let second = TranscryptorSecrets::from_json(&file("transcryptor/secrets.json")).unwrap();
        let node = |path: &str| NodeKeys::from_json(&file("global-public.json"), &file(path)).unwrap();
        let (orp_keys, ai_keys) = (
            node("institutions/ORP-VS/session-keys.json"),
            node("institutions/AI-VS/session-keys.json"),
        );
        let dpo = node("dpo/ORP-VS/session-keys.json");
        let run = |ciphertext: Ciphertext, from: Source, to: Party| {
            let op = Operation { ciphertext, from, to };
            let (once, key) = gateway.apply(&op).unwrap();
            second
                .hop()
                .apply(&Operation { ciphertext: once, ..op }, &key)
                .unwrap()
                .0
        };
        let pseudonym = |c: Ciphertext| match c {
            Ciphertext::Pseudonym(p) => p,
            Ciphertext::Attribute(_) => unreachable!(),
        };
        let (orp, ai) = (Party::Institution(orp_id.clone()), Party::Institution(ai_id));
        let person = avs(7);
        let enrolment = Ciphertext::Pseudonym(orp_keys.enrolment_ciphertext(&person));
        let p_orp = orp_keys.decrypt(&pseudonym(run(enrolment, Source::node(None), orp.clone())));
        let p_ai = ai_keys.decrypt(&pseudonym(run(enrolment, Source::node(None), ai.clone())));
        let sent = Ciphertext::Pseudonym(orp_keys.encrypt_own(&p_orp).unwrap());
        assert_eq!(
            ai_keys.decrypt(&pseudonym(run(sent, Source::node(Some(orp.clone())), ai))),
            p_ai
        );
        // The log's person, then the DPO's look-up of it from the audit context.
        let logged = pseudonym(run(sent, Source::node(Some(orp.clone())), Party::Audit));
        let for_dpo = pseudonym(run(
            Ciphertext::Pseudonym(logged),
            Source::audit(1),
            Party::Dpo(orp_id.clone()),
        ));
        let direct = pseudonym(run(enrolment, Source::node(None), Party::Dpo(orp_id)));
        assert_eq!(
            dpo.decrypt(&for_dpo),
            dpo.decrypt(&direct),
            "the DPO's pseudonym of the person"
        );
        // The gateway's hop alone is not enough.
        let (once, _) = gateway
            .apply(&Operation {
                ciphertext: enrolment,
                from: Source::node(None),
                to: orp,
            })
            .unwrap();
        assert_ne!(orp_keys.decrypt(&pseudonym(once)), p_orp);
    }

    /// The enrolment value of the person numbered `secret` (from a small space of 200),
    /// found by whoever holds the pseudonym global secret key `y`: decrypt, then enumerate.
    fn enumerate(y: &ScalarNonZero, enrolment: &EncryptedPseudonym, keys: &NodeKeys) -> Option<u64> {
        let key = libpep::keys::PseudonymSessionSecretKey::from_scalar(*y);
        let open = |c: &EncryptedPseudonym| -> Pseudonym { decrypt(c, &key) };
        let target = open(enrolment);
        (0..200).find(|n| open(&keys.enrolment_ciphertext(&avs(*n))) == target)
    }

    /// The attack of ARCHITECTURE's residual risk, run: with one transcryptor, the gateway's
    /// secrets and one institution's session key give the global secret key, and with it the
    /// AVS number behind any enrolment value (here by enumeration of a small test space). With
    /// two, the same holdings of the gateway — its secrets, its blinding factor, the public
    /// blinded keys and an institution's session key — give no key that opens it.
    #[test]
    fn the_gateway_and_one_institution_recover_avs_numbers_with_one_transcryptor_and_not_with_two() {
        let (orp, ai) = (institution("ORP-VS"), institution("AI-VS"));
        let secret_person = 137;

        // One transcryptor (today's ceremony; the global secret key discarded).
        let ceremony = Ceremony::new();
        let gateway = Gateway::new(
            ceremony.pseudonymisation_secret.clone(),
            ceremony.rekeying_secret.clone(),
            &ceremony.global_public,
            1,
        );
        let orp_keys = NodeKeys::new(ceremony.global_public, ceremony.session_keys(&orp, 1));
        let ai_keys = NodeKeys::new(ceremony.global_public, ceremony.session_keys(&ai, 1));
        let enrolment = ai_keys.enrolment_ciphertext(&avs(secret_person));
        let _ = gateway.enrol(&enrolment, &ai);
        let k = libpep::factors::make_pseudonym_rekey_factor(
            &RekeyingSecret::from(ceremony.rekeying_secret.clone()),
            &orp.context(1),
        );
        let session = *ceremony.session_keys(&orp, 1).pseudonym.secret.value();
        let y = session * k.scalar().invert();
        assert_eq!(
            enumerate(&y, &enrolment, &orp_keys),
            Some(secret_person),
            "found with one"
        );

        // Two transcryptors: the gateway's holdings, every key it can derive from them.
        let net = network();
        let orp_keys = net.keys(&orp);
        let enrolment = net.keys(&ai).enrolment_ciphertext(&avs(secret_person));
        let shares = net.gateway.session_key_shares(&orp, 1);
        let session = *session_keys(&net.setup, &[shares, net.second.session_key_shares(&orp, 1)])
            .unwrap()
            .pseudonym
            .secret
            .value();
        let k1 =
            libpep::factors::make_pseudonym_rekey_factor(net.gateway.transcryptor.rekeying_secret(), &orp.context(1));
        let b1 = *net.gateway.transcryptor.blinding_factor().value();
        let blinded = *net.setup.blinded.pseudonym.value();
        let candidates = [
            session * k1.scalar().invert(),                       // as with one transcryptor
            blinded * b1,                                         // the blinded key unblinded by its own factor
            session * (k1.scalar() * b1).invert(),                // the institution's key without its share
            session * (k1.scalar() * b1).invert() * blinded * b1, // ... and with the blinded key
        ];
        for y in candidates {
            assert_eq!(enumerate(&y, &enrolment, &orp_keys), None, "found with two");
        }
        // The control: the global secret key, which only both parties together could make,
        // does open it (so the search above could have succeeded).
        let b2 = *net.second.transcryptor.blinding_factor().value();
        assert_eq!(
            enumerate(&(blinded * b1 * b2), &enrolment, &orp_keys),
            Some(secret_person)
        );
    }
}
