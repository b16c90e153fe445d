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

impl Default for Ceremony {
    fn default() -> Ceremony {
        Ceremony::new()
    }
}
