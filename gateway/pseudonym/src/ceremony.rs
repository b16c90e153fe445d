//! The key ceremony's arithmetic: the global key pair, the gateway's two
//! secrets, and session keys per party. `cii keys init` runs it offline and
//! writes each party's material to its own file; the global secret key is
//! then discarded (or kept offline): `make_session_keys` needs it *and* the
//! rekeying secret, so without it the set of session keys is final.

use libpep::prelude::*;
use rand::RngExt;

use crate::names::Party;

/// Everything the ceremony makes. Holds the global secret: never on the gateway.
pub struct Ceremony {
    /// The network's global public keys (every node and the gateway get them).
    pub global_public: GlobalPublicKeys,
    global_secret: GlobalSecretKeys,
    /// The gateway's pseudonymisation secret.
    pub pseudonymisation_secret: Vec<u8>,
    /// The gateway's rekeying secret.
    pub rekeying_secret: Vec<u8>,
}

impl std::fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // INVARIANT (no-secrets-in-logs).
        f.write_str("Ceremony(..)")
    }
}

impl Ceremony {
    /// A fresh ceremony with random keys and secrets.
    pub fn new() -> Ceremony {
        let mut rng = rand::rng();
        let (global_public, global_secret) = make_global_keys(&mut rng);
        let pseudonymisation_secret: Vec<u8> = (0..32).map(|_| rng.random::<u8>()).collect();
        let rekeying_secret: Vec<u8> = (0..32).map(|_| rng.random::<u8>()).collect();
        Ceremony {
            global_public,
            global_secret,
            pseudonymisation_secret,
            rekeying_secret,
        }
    }

    /// The session keys of `party` for key epoch `epoch`.
    pub fn session_keys(&self, party: &Party, epoch: u32) -> SessionKeys {
        make_session_keys(
            &self.global_secret,
            &party.context(epoch),
            &RekeyingSecret::from(self.rekeying_secret.clone()),
        )
    }
}

impl Ceremony {
    /// The ceremony again, from what a first one kept offline: the global public and secret
    /// keys (`--keep-global-secret`) and the gateway's transcryptor file. A later epoch's
    /// session keys (a rotation) or a new institution's come from it; pseudonyms stay.
    pub fn resume(
        global_public: &str,
        global_secret: &str,
        transcryptor: &str,
    ) -> Result<Ceremony, crate::PseudonymError> {
        use libpep::elgamal::arithmetic::scalars::ScalarNonZero;
        use libpep::keys::{
            AttributeGlobalSecretKey, PseudonymGlobalPublicKey, PseudonymGlobalSecretKey, PublicKey, SecretKey,
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SecretFile {
            pseudonym: String,
            attribute: String,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TranscryptorFile {
            #[allow(dead_code)]
            epoch: u32,
            pseudonymisation_secret: String,
            rekeying_secret: String,
        }
        let key_error = crate::PseudonymError::Key;
        let global_public: GlobalPublicKeys = serde_json::from_str(global_public)
            .map_err(|_| key_error("global public key file is not the ceremony's JSON"))?;
        let secret: SecretFile = serde_json::from_str(global_secret)
            .map_err(|_| key_error("global secret key file is not the ceremony's JSON"))?;
        let scalar =
            |hex: &str| ScalarNonZero::from_hex(hex).ok_or(key_error("global secret key is not a scalar in hex"));
        let global_secret = GlobalSecretKeys {
            pseudonym: PseudonymGlobalSecretKey::from_scalar(scalar(&secret.pseudonym)?),
            attribute: AttributeGlobalSecretKey::from_scalar(scalar(&secret.attribute)?),
        };
        let derived: PseudonymGlobalPublicKey = global_secret.pseudonym.public_key();
        if derived.value() != global_public.pseudonym.value() {
            return Err(key_error(
                "the global secret key does not belong to the global public key",
            ));
        }
        let file: TranscryptorFile = serde_json::from_str(transcryptor)
            .map_err(|_| key_error("transcryptor file is not the ceremony's JSON"))?;
        let bytes = |hex: &str| crate::hex_decode(hex).ok_or(key_error("transcryptor secret is not hex"));
        Ok(Ceremony {
            global_public,
            global_secret,
            pseudonymisation_secret: bytes(&file.pseudonymisation_secret)?,
            rekeying_secret: bytes(&file.rekeying_secret)?,
        })
    }
}

impl Default for Ceremony {
    fn default() -> Ceremony {
        Ceremony::new()
    }
}

/// The ceremony's output as files: (path relative to the key directory, contents, secret?).
/// The global secret key is not among them unless `keep_global_secret`.
pub type KeyFiles = Vec<(String, String, bool)>;

impl Ceremony {
    /// The key files for the gateway, the consent registry, the DPO's audit
    /// context and each institution, for key epoch `epoch`.
    pub fn key_files(
        &self,
        institutions: &[cii_types::InstitutionId],
        epoch: u32,
        keep_global_secret: bool,
    ) -> Result<KeyFiles, crate::PseudonymError> {
        let json = |v: &dyn erased::Json| {
            v.json()
                .map_err(|_| crate::PseudonymError::Key("cannot serialise key material"))
        };
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut files: KeyFiles = Vec::new();
        files.push(("global-public.json".to_owned(), json(&self.global_public)?, false));
        files.push((
            "gateway/transcryptor.json".to_owned(),
            format!(
                "{{\"epoch\":{epoch},\"pseudonymisation_secret\":\"{}\",\"rekeying_secret\":\"{}\"}}",
                hex(&self.pseudonymisation_secret),
                hex(&self.rekeying_secret)
            ),
            true,
        ));
        files.push((
            "consent/session-keys.json".to_owned(),
            json(&self.session_keys(&Party::Registry, epoch))?,
            true,
        ));
        files.push((
            "dpo/audit-session-keys.json".to_owned(),
            json(&self.session_keys(&Party::Audit, epoch))?,
            true,
        ));
        for id in institutions {
            let keys = self.session_keys(&Party::Institution(id.clone()), epoch);
            files.push((format!("institutions/{id}/session-keys.json"), json(&keys)?, true));
            // The institution's DPO opens its own queries' persons only.
            let dpo = self.session_keys(&Party::Dpo(id.clone()), epoch);
            files.push((format!("dpo/{id}/session-keys.json"), json(&dpo)?, true));
        }
        if keep_global_secret {
            files.push((
                "global-secret.json".to_owned(),
                json(&GlobalSecretJson(self.global_secret))?,
                true,
            ));
        }
        Ok(files)
    }
}

struct GlobalSecretJson(GlobalSecretKeys);

pub(crate) mod erased {
    /// Serialises key material to JSON.
    pub trait Json {
        fn json(&self) -> Result<String, serde_json::Error>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Result<String, serde_json::Error> {
            serde_json::to_string(self)
        }
    }
}

impl serde::Serialize for GlobalSecretJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use libpep::elgamal::arithmetic::scalars::ScalarTraits;
        use libpep::keys::traits::SecretKey;
        use serde::ser::SerializeStruct;
        // libpep gives global secret keys no encoding; the scalars are written as hex,
        // to be read back with `SecretKey::from_scalar` by a later ceremony.
        let mut st = s.serialize_struct("GlobalSecretKeys", 2)?;
        st.serialize_field("pseudonym", &self.0.pseudonym.value().to_hex())?;
        st.serialize_field("attribute", &self.0.attribute.value().to_hex())?;
        st.end()
    }
}
