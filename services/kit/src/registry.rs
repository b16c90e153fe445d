//! The registry: the one file that says who the network's members are.
//!
//! The network's id (the audience of every JWT), a version that only grows,
//! and per institution: id, type, canton, name, node endpoint, certificate
//! identity, revoked certificate serials, the public keys that verify its
//! users' JWTs and the roles those tokens may carry. The rulebook adds legal
//! facts under the same ids; if the two disagree about an id, the gateway
//! refuses to start.
//!
//! The file is signed by the network's offline registry key (a detached
//! Ed25519 signature over its exact bytes, `registry.toml.sig`; see
//! [`signed`]) and every process reloads it when it changes ([`signed::Live`]).

pub mod signed;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use cii_types::{InstitutionId, InstitutionType, PeerIdentity, Role, WitnessName};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::config::{self, ConfigError};

pub use signed::Live;

/// The registry file as written (the config layer; see [`Registry`] for the checked form).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    /// The network's id: the audience every member's tokens must name.
    network: String,
    /// Grows with every change; a process refuses a file older than the one it runs.
    version: u64,
    /// Serials of revoked certificates of the gateway and the consent registry.
    #[serde(default)]
    revoked_serials: Vec<String>,
    #[serde(default)]
    institution: Vec<InstitutionEntry>,
    /// Parties that exchange nothing: the network's operator, an oversight body.
    #[serde(default)]
    party: Vec<PartyEntry>,
    /// Witnesses of the audit log run by parties independent of the gateway's operator.
    #[serde(default)]
    witness: Vec<WitnessEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessEntry {
    /// The witness's name: its certificate names `urn:cii:witness:<name>`, its vkey this name.
    name: String,
    /// The witness's cosigning key as a C2SP vkey (`cii witness vkey` prints it).
    vkey: String,
    /// Where the gateway reaches it (`https://host:port`).
    endpoint: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstitutionEntry {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    canton: String,
    name: String,
    endpoint: String,
    #[serde(default)]
    certificate_identity: Option<String>,
    #[serde(default)]
    revoked_serials: Vec<String>,
    #[serde(default)]
    jwt_keys: Vec<JwtKeyEntry>,
    /// The roles the institution's tokens may carry (default: [`Role::MEMBER`]).
    #[serde(default)]
    roles: Option<Vec<String>>,
    /// The node's cosigning key as a C2SP vkey, if the node witnesses the audit log.
    #[serde(default)]
    witness_vkey: Option<String>,
}

/// A party that exchanges nothing (no type, no canton, never a sender or recipient): it holds a
/// certificate naming `urn:cii:institution:<id>`, its identity provider's keys and only the
/// network's roles; its users reach the gateway through a node of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartyEntry {
    id: String,
    name: String,
    /// Where its node listens, for the record (the gateway delivers nothing to it).
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    revoked_serials: Vec<String>,
    jwt_keys: Vec<JwtKeyEntry>,
    /// Among [`Role::NETWORK_PARTY`]; required.
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtKeyEntry {
    kid: String,
    /// `EdDSA` (default), `ES256` or `RS256`: what the institution's identity provider signs with.
    #[serde(default)]
    algorithm: Option<String>,
    /// The SPKI PEM inline…
    #[serde(default)]
    public_key: Option<String>,
    /// …or in a file, relative to the registry file.
    #[serde(default)]
    public_key_file: Option<std::path::PathBuf>,
}

/// One member of the network.
#[derive(Debug, Clone)]
pub struct Institution {
    /// Registry id.
    pub id: InstitutionId,
    /// Institution type.
    pub kind: InstitutionType,
    /// Two-letter canton code (`VS`), or `CH` for federal bodies.
    pub canton: String,
    /// Human-readable name.
    pub name: String,
    /// Where the gateway reaches the node's inbound API (`https://host:port`).
    pub endpoint: String,
    /// Keys that verify the JWTs of this institution's users.
    pub jwt_keys: Vec<JwtKey>,
    /// The roles its tokens may carry; a token naming another is refused (`ROLE_NOT_GRANTED`).
    pub roles: BTreeSet<Role>,
}

impl Institution {
    /// The identity its node certificate carries.
    pub fn identity(&self) -> PeerIdentity {
        PeerIdentity::Institution(self.id.clone())
    }
}

/// A public key for JWT verification (Ed25519, P-256 or RSA).
#[derive(Clone)]
pub struct JwtKey {
    /// The key id (`kid` header) tokens name.
    pub kid: String,
    /// The one algorithm tokens verified by this key must use.
    pub algorithm: Algorithm,
    /// The verification key.
    pub key: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A witness of the audit log: a node, or a party independent of the gateway's operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// Who it is: `Institution` (the node's inbound API serves the witness) or `Witness`.
    pub identity: PeerIdentity,
    /// Its cosigning key (C2SP vkey, signature type 0x04; parsed by `cii_audit::cosignature`).
    pub vkey: String,
    /// Where the gateway reaches it.
    pub endpoint: String,
}

impl Witness {
    /// Whether it is run by a party other than the gateway's operator and the members (a
    /// quorum needs more than half of these as well).
    pub fn is_independent(&self) -> bool {
        matches!(self.identity, PeerIdentity::Witness(_))
    }
}

/// The checked registry.
#[derive(Debug, Clone)]
pub struct Registry {
    network: String,
    version: u64,
    institutions: BTreeMap<InstitutionId, Institution>,
    /// Parties that exchange nothing: callers, never senders or recipients.
    parties: BTreeMap<InstitutionId, Institution>,
    revoked_serials: HashSet<Vec<u8>>,
    witnesses: Vec<Witness>,
}

/// Checks the shape of a cosigner vkey (`name+8 hex digits+base64(0x04 ‖ 32 bytes)`); the key id
/// is checked where the key is used (`cii_audit::cosignature`). Returns the key's name.
fn vkey_name(vkey: &str) -> Result<&str, &'static str> {
    use base64::Engine;
    const SHAPE: &str = "expected a cosigner vkey: name+8 hex digits+base64 of 0x04 and the 32-byte Ed25519 key \
(`cii witness vkey` prints it)";
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SHAPE);
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| SHAPE)?;
    let ok = !name.is_empty()
        && !name.contains([' ', '\n'])
        && id.len() == 8
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && key.len() == 33
        && key.first() == Some(&0x04);
    if ok { Ok(name) } else { Err(SHAPE) }
}

/// The largest network id (the JWT audience).
const NETWORK_MAX: usize = 128;

impl Registry {
    /// Loads and checks a registry file.
    pub fn load(file: &Path) -> Result<Registry, ConfigError> {
        let raw: RegistryFile = config::load(file)?;
        Registry::from_file(file, raw)
    }

    /// Parses and checks registry text (`file` is named in errors).
    pub fn parse(file: &Path, text: &str) -> Result<Registry, ConfigError> {
        Registry::from_file(file, config::parse(file, text)?)
    }

    fn from_file(file: &Path, raw: RegistryFile) -> Result<Registry, ConfigError> {
        if raw.network.is_empty()
            || raw.network.len() > NETWORK_MAX
            || !raw
                .network
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c))
        {
            return Err(ConfigError::invalid(
                file,
                "network",
                "expected the network's id, e.g. cii.vs (letters, digits and . _ - : /, at most 128)",
            ));
        }
        if raw.version == 0 {
            return Err(ConfigError::invalid(
                file,
                "version",
                "starts at 1 and grows with every change",
            ));
        }
        let mut revoked_serials = HashSet::new();
        for (i, s) in raw.revoked_serials.iter().enumerate() {
            revoked_serials
                .insert(parse_serial(s).map_err(|p| ConfigError::invalid(file, format!("revoked_serials[{i}]"), p))?);
        }
        let mut institutions = BTreeMap::new();
        let mut witnesses = Vec::new();
        for (i, entry) in raw.institution.into_iter().enumerate() {
            let at = |key: &str| format!("institution[{i}].{key}");
            let invalid = |key: &str, e: &dyn fmt::Display| ConfigError::invalid(file, at(key), e.to_string());
            let id = InstitutionId::parse("id", &entry.id).map_err(|e| invalid("id", &e))?;
            let kind = InstitutionType::parse("type", &entry.kind).map_err(|e| invalid("type", &e))?;
            if !(entry.canton.len() == 2 && entry.canton.chars().all(|c| c.is_ascii_uppercase())) {
                return Err(invalid(
                    "canton",
                    &"expected a two-letter upper-case code such as VS (CH for federal bodies)",
                ));
            }
            if entry.name.trim().is_empty() {
                return Err(invalid("name", &"must not be empty"));
            }
            if !entry.endpoint.starts_with("https://") {
                return Err(invalid(
                    "endpoint",
                    &"must be an https:// URL (nodes are reached over mutual TLS)",
                ));
            }
            let expected = PeerIdentity::Institution(id.clone()).to_uri();
            if let Some(identity) = &entry.certificate_identity
                && *identity != expected
            {
                return Err(invalid(
                    "certificate_identity",
                    &format!("must be {expected} for id {id}"),
                ));
            }
            for (j, s) in entry.revoked_serials.iter().enumerate() {
                let serial = parse_serial(s).map_err(|p| invalid(&format!("revoked_serials[{j}]"), &p))?;
                revoked_serials.insert(serial);
            }
            let jwt_keys = jwt_keys(file, &at, entry.jwt_keys)?;
            let roles = match entry.roles {
                None => Role::MEMBER.into_iter().collect(),
                Some(names) => roles(file, &at, &names, &Role::ALL)?,
            };
            if let Some(vkey) = entry.witness_vkey {
                vkey_name(&vkey).map_err(|e| invalid("witness_vkey", &e))?;
                witnesses.push(Witness {
                    identity: PeerIdentity::Institution(id.clone()),
                    vkey,
                    endpoint: entry.endpoint.clone(),
                });
            }
            let institution = Institution {
                id: id.clone(),
                kind,
                canton: entry.canton,
                name: entry.name,
                endpoint: entry.endpoint,
                jwt_keys,
                roles,
            };
            if institutions.insert(id.clone(), institution).is_some() {
                return Err(invalid("id", &format!("duplicate institution id {id}")));
            }
        }
        let mut parties = BTreeMap::new();
        for (i, entry) in raw.party.into_iter().enumerate() {
            let party = party(file, i, entry, &mut revoked_serials)?;
            if institutions.contains_key(&party.id) || parties.contains_key(&party.id) {
                return Err(ConfigError::invalid(
                    file,
                    format!("party[{i}].id"),
                    format!("duplicate id {}", party.id),
                ));
            }
            parties.insert(party.id.clone(), party);
        }
        for (i, entry) in raw.witness.into_iter().enumerate() {
            let at = |key: &str| format!("witness[{i}].{key}");
            let name = WitnessName::parse("name", &entry.name)
                .map_err(|e| ConfigError::invalid(file, at("name"), e.to_string()))?;
            let key_name = vkey_name(&entry.vkey).map_err(|e| ConfigError::invalid(file, at("vkey"), e))?;
            if key_name != name.as_str() {
                return Err(ConfigError::invalid(
                    file,
                    at("vkey"),
                    format!("the key is named {key_name}, not {name}"),
                ));
            }
            if !entry.endpoint.starts_with("https://") {
                return Err(ConfigError::invalid(
                    file,
                    at("endpoint"),
                    "must be an https:// URL (witnesses are reached over mutual TLS)",
                ));
            }
            witnesses.push(Witness {
                identity: PeerIdentity::Witness(name),
                vkey: entry.vkey,
                endpoint: entry.endpoint,
            });
        }
        let (mut names, mut keys) = (BTreeSet::new(), BTreeSet::new());
        for (i, w) in witnesses.iter().enumerate() {
            let name = vkey_name(&w.vkey).unwrap_or_default();
            if !names.insert(name.to_owned()) || witnesses.iter().take(i).any(|o| o.identity == w.identity) {
                return Err(ConfigError::invalid(
                    file,
                    "witness",
                    format!("two witnesses named {name}: every witness's key has its own name"),
                ));
            }
            // A cosignature does not sign the witness's name: one key under two names would count twice.
            if !keys.insert(w.vkey.splitn(3, '+').nth(2).unwrap_or_default().to_owned()) {
                return Err(ConfigError::invalid(
                    file,
                    "witness",
                    format!("the key of witness {name} is listed for another witness too"),
                ));
            }
        }
        Ok(Registry {
            network: raw.network,
            version: raw.version,
            institutions,
            parties,
            revoked_serials,
            witnesses,
        })
    }

    /// The network's id: the audience every token must name.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The file's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The member with this id: an institution that exchanges (never a party).
    pub fn get(&self, id: &InstitutionId) -> Option<&Institution> {
        self.institutions.get(id)
    }

    /// Whoever may call with this id: a member, or a party that exchanges nothing.
    pub fn caller(&self, id: &InstitutionId) -> Option<&Institution> {
        self.institutions.get(id).or_else(|| self.parties.get(id))
    }

    /// Whether `id` is a party that exchanges nothing.
    pub fn is_party(&self, id: &InstitutionId) -> bool {
        self.parties.contains_key(id)
    }

    /// Every institution, ordered by id.
    pub fn institutions(&self) -> impl Iterator<Item = &Institution> {
        self.institutions.values()
    }

    /// The witnesses of the audit log (nodes first, then independent witnesses). A receipt
    /// counts only on a checkpoint cosigned by more than half of them; with none, on the
    /// log's signature alone.
    pub fn witnesses(&self) -> &[Witness] {
        &self.witnesses
    }

    /// Whether a certificate serial (big-endian bytes, leading zeros stripped) is revoked.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revoked_serials.contains(strip_leading_zeros(serial))
    }

    /// Whether `identity` is a member allowed to hold a certificate.
    pub fn knows(&self, identity: &PeerIdentity) -> bool {
        match identity {
            PeerIdentity::Institution(id) => self.institutions.contains_key(id) || self.parties.contains_key(id),
            PeerIdentity::Gateway | PeerIdentity::Consent => true,
            PeerIdentity::Witness(_) => self.witnesses.iter().any(|w| w.identity == *identity),
        }
    }
}

/// The type every party that exchanges nothing carries: no rulebook declares it, so no
/// basis ever names it.
pub const PARTY_TYPE: &str = "NETWORK_PARTY";

/// A party that exchanges nothing, checked.
fn party(
    file: &Path,
    i: usize,
    entry: PartyEntry,
    revoked_serials: &mut HashSet<Vec<u8>>,
) -> Result<Institution, ConfigError> {
    let at = |key: &str| format!("party[{i}].{key}");
    let invalid = |key: &str, e: &dyn fmt::Display| ConfigError::invalid(file, at(key), e.to_string());
    let id = InstitutionId::parse("id", &entry.id).map_err(|e| invalid("id", &e))?;
    if entry.name.trim().is_empty() {
        return Err(invalid("name", &"must not be empty"));
    }
    if entry.endpoint.as_ref().is_some_and(|e| !e.starts_with("https://")) {
        return Err(invalid("endpoint", &"must be an https:// URL"));
    }
    for (j, s) in entry.revoked_serials.iter().enumerate() {
        revoked_serials.insert(parse_serial(s).map_err(|p| invalid(&format!("revoked_serials[{j}]"), &p))?);
    }
    if entry.roles.is_empty() {
        return Err(invalid(
            "roles",
            &"name the network roles the party holds (network_dpo, operator, jurist)",
        ));
    }
    Ok(Institution {
        id,
        kind: InstitutionType::parse("type", PARTY_TYPE).map_err(|e| invalid("id", &e))?,
        canton: "CH".to_owned(),
        name: entry.name,
        endpoint: entry.endpoint.unwrap_or_default(),
        jwt_keys: jwt_keys(file, &at, entry.jwt_keys)?,
        roles: roles(file, &at, &entry.roles, &Role::NETWORK_PARTY)?,
    })
}

/// The JWT keys of a registry entry (`at` names its keys in errors).
fn jwt_keys(file: &Path, at: &dyn Fn(&str) -> String, entries: Vec<JwtKeyEntry>) -> Result<Vec<JwtKey>, ConfigError> {
    let invalid = |key: &str, e: &dyn fmt::Display| ConfigError::invalid(file, at(key), e.to_string());
    if entries.is_empty() {
        return Err(invalid(
            "jwt_keys",
            &"at least one key is needed to verify the institution's users",
        ));
    }
    let mut jwt_keys = Vec::new();
    for (j, k) in entries.into_iter().enumerate() {
        if k.kid.is_empty() {
            return Err(invalid(&format!("jwt_keys[{j}].kid"), &"must not be empty"));
        }
        let (key_name, pem) = match (k.public_key, k.public_key_file) {
            (Some(pem), None) => ("public_key", pem),
            (None, Some(path)) => {
                let path = config::resolve(file, &path);
                let pem = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        &format!("jwt_keys[{j}].public_key_file"),
                        &format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                ("public_key_file", pem)
            }
            _ => {
                return Err(invalid(
                    &format!("jwt_keys[{j}]"),
                    &"give exactly one of public_key and public_key_file",
                ));
            }
        };
        let algorithm = match k.algorithm.as_deref() {
            None | Some("EdDSA") => Algorithm::EdDSA,
            Some("ES256") => Algorithm::ES256,
            Some("RS256") => Algorithm::RS256,
            Some(_) => {
                return Err(invalid(
                    &format!("jwt_keys[{j}].algorithm"),
                    &"expected EdDSA, ES256 or RS256",
                ));
            }
        };
        let key = match algorithm {
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
            _ => DecodingKey::from_ed_pem(pem.as_bytes()),
        }
        .map_err(|_| {
            invalid(
                &format!("jwt_keys[{j}].{key_name}"),
                &format!("not a {algorithm:?} public key in PEM (SubjectPublicKeyInfo)"),
            )
        })?;
        jwt_keys.push(JwtKey {
            kid: k.kid,
            algorithm,
            key,
        });
    }
    Ok(jwt_keys)
}

/// The roles of a registry entry, each among `allowed`.
fn roles(
    file: &Path,
    at: &dyn Fn(&str) -> String,
    names: &[String],
    allowed: &[Role],
) -> Result<BTreeSet<Role>, ConfigError> {
    let mut roles = BTreeSet::new();
    for (j, name) in names.iter().enumerate() {
        let at = at(&format!("roles[{j}]"));
        let role = Role::parse("roles", name).map_err(|e| ConfigError::invalid(file, at.clone(), e.to_string()))?;
        if !allowed.contains(&role) {
            let allowed: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            return Err(ConfigError::invalid(
                file,
                at,
                format!("{role} is not for this kind of party; allowed: {}", allowed.join(", ")),
            ));
        }
        roles.insert(role);
    }
    Ok(roles)
}

/// Parses a serial written in hex, with optional `:` separators (as `openssl x509 -serial` prints it).
fn parse_serial(s: &str) -> Result<Vec<u8>, String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("expected a certificate serial in hex, e.g. 4F:1A:09 or 4f1a09".to_owned());
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0))
        .collect();
    Ok(strip_leading_zeros(&bytes).to_vec())
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

/// Formats a serial as lower-case hex, the way registry files write it.
pub fn serial_hex(serial: &[u8]) -> String {
    strip_leading_zeros(serial).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    fn entry(id: &str, extra: &str) -> String {
        format!(
            "network = \"cii.test\"\nversion = 1\n[[institution]]\nid = \"{id}\"\ntype = \"AC_ORP\"\ncanton = \"VS\"\nname = \"ORP\"\nendpoint = \"https://localhost:1\"\n{extra}\n[[institution.jwt_keys]]\nkid = \"k1\"\npublic_key = \"\"\"{KEY}\"\"\"\n"
        )
    }

    /// A cosigner vkey named `witness.example` (type 0x04).
    const VKEY: &str = "witness.example+1a2b3c4d+BBm/RAlphM3+hUG6wWfcO5bIUIaqMLa2ywxcOK1wMWbh";
    /// Another key, named `orp-vs.node`.
    const OTHER_VKEY: &str = "orp-vs.node+5e6f7a8b+BBm/RAlphM3+hUG6wWfcO5bIUIaqMLa2ywxcOK1wMWbi";

    fn party(id: &str, roles: &str) -> String {
        format!(
            "\n[[party]]\nid = \"{id}\"\nname = \"Network operator\"\nroles = [{roles}]\n[[party.jwt_keys]]\nkid = \"k1\"\npublic_key = \"\"\"{KEY}\"\"\"\n"
        )
    }

    /// A party calls (its certificate is known, its users verified) but is no member: no
    /// transfer names it, and it holds only the network's roles.
    #[test]
    fn a_party_calls_but_exchanges_nothing() {
        let file = Path::new("registry.toml");
        let text = format!(
            "{}{}",
            entry("ORP-VS", ""),
            party("OPS-VS", "\"network_dpo\", \"operator\"")
        );
        let reg = Registry::parse(file, &text).unwrap();
        let ops = InstitutionId::parse("id", "OPS-VS").unwrap();
        assert!(reg.knows(&PeerIdentity::Institution(ops.clone())));
        assert!(reg.get(&ops).is_none() && reg.is_party(&ops));
        let caller = reg.caller(&ops).expect("a caller");
        assert_eq!(caller.roles, [Role::NetworkDpo, Role::Operator].into_iter().collect());
        assert_eq!(reg.institutions().count(), 1, "not among the members");
        for (roles, problem) in [
            ("\"caseworker\"", "party[0].roles[0]"),
            ("\"network_dpo\", \"dpo\"", "party[0].roles[1]"),
            ("", "party[0].roles"),
        ] {
            let text = format!("{}{}", entry("ORP-VS", ""), party("OPS-VS", roles));
            let err = Registry::parse(file, &text).unwrap_err().to_string();
            assert!(err.contains(problem), "{roles}: {err}");
        }
        let twice = format!("{}{}", entry("ORP-VS", ""), party("ORP-VS", "\"operator\""));
        let err = Registry::parse(file, &twice).unwrap_err().to_string();
        assert!(err.contains("duplicate id"), "{err}");
    }

    #[test]
    fn witnesses_are_listed_nodes_first() {
        let text = format!(
            "{}[[witness]]\nname = \"witness.example\"\nvkey = \"{VKEY}\"\nendpoint = \"https://w:1\"\n",
            entry("ORP-VS", &format!("witness_vkey = \"{OTHER_VKEY}\""))
        );
        let reg = Registry::parse(Path::new("registry.toml"), &text).unwrap();
        let ids: Vec<String> = reg.witnesses().iter().map(|w| w.identity.to_uri()).collect();
        assert_eq!(ids, ["urn:cii:institution:ORP-VS", "urn:cii:witness:witness.example"]);
        assert_eq!(reg.witnesses()[0].endpoint, "https://localhost:1");
        let name = WitnessName::parse("name", "witness.example").unwrap();
        assert!(reg.knows(&PeerIdentity::Witness(name)));
        assert!(!reg.knows(&PeerIdentity::Witness(
            WitnessName::parse("name", "other.example").unwrap()
        )));
    }

    #[test]
    fn a_valid_registry_loads() {
        let text = entry("ORP-VS", "revoked_serials = [\"00:4F:1a\"]");
        let reg = Registry::parse(Path::new("registry.toml"), &text).unwrap();
        let id = InstitutionId::parse("id", "ORP-VS").unwrap();
        assert_eq!(reg.get(&id).unwrap().kind, InstitutionType::AcOrp);
        assert!(reg.is_revoked(&[0x4f, 0x1a]));
        assert!(reg.is_revoked(&[0, 0x4f, 0x1a]));
        assert!(!reg.is_revoked(&[0x4f]));
        // Without a `roles` list, the member roles and never the network's.
        let roles = &reg.get(&id).unwrap().roles;
        assert!(roles.contains(&Role::Caseworker) && roles.contains(&Role::System));
        assert!(!roles.contains(&Role::NetworkDpo) && !roles.contains(&Role::Operator));
        assert_eq!((reg.network(), reg.version()), ("cii.test", 1));
    }

    #[test]
    fn problems_name_the_key() {
        let cases = [
            (entry("orp", ""), "institution[0].id"),
            (
                entry("ORP-VS", "certificate_identity = \"urn:cii:institution:AI-VS\""),
                "institution[0].certificate_identity",
            ),
            (
                entry("ORP-VS", "revoked_serials = [\"xyz\"]"),
                "institution[0].revoked_serials[0]",
            ),
            (entry("ORP-VS", "").replace("AC_ORP", "ac-orp"), "institution[0].type"),
            (
                entry("ORP-VS", "").replace("https://", "http://"),
                "institution[0].endpoint",
            ),
            (
                entry("ORP-VS", "").replace("MCowBQ", "xxxxxx"),
                "institution[0].jwt_keys[0].public_key",
            ),
            (
                format!(
                    "{}{}",
                    entry("ORP-VS", ""),
                    entry("ORP-VS", "").replace("network = \"cii.test\"\nversion = 1\n", "")
                ),
                "institution[1].id",
            ),
            (
                entry("ORP-VS", "roles = [\"caseworker\", \"king\"]"),
                "institution[0].roles[1]",
            ),
            (
                entry("ORP-VS", "").replace("kid = \"k1\"", "kid = \"k1\"\nalgorithm = \"HS256\""),
                "institution[0].jwt_keys[0].algorithm",
            ),
            (
                entry("ORP-VS", "").replace("kid = \"k1\"", "kid = \"k1\"\nalgorithm = \"RS256\""),
                "institution[0].jwt_keys[0].public_key",
            ),
            (entry("ORP-VS", "").replace("version = 1", "version = 0"), "version"),
            (entry("ORP-VS", "").replace("cii.test", "cii test"), "network"),
            (
                entry("ORP-VS", "witness_vkey = \"orp+0011aabb+AQ==\""),
                "institution[0].witness_vkey",
            ),
            (
                format!(
                    "{}[[witness]]\nname = \"w.example\"\nvkey = \"{VKEY}\"\nendpoint = \"https://w:1\"\n",
                    entry("ORP-VS", "")
                ),
                "witness[0].vkey",
            ),
            (
                format!(
                    "{}[[witness]]\nname = \"W\"\nvkey = \"{VKEY}\"\nendpoint = \"https://w:1\"\n",
                    entry("ORP-VS", "")
                ),
                "witness[0].name",
            ),
            (
                format!(
                    "{}[[witness]]\nname = \"witness.example\"\nvkey = \"{VKEY}\"\nendpoint = \"http://w:1\"\n",
                    entry("ORP-VS", "")
                ),
                "witness[0].endpoint",
            ),
            (
                format!(
                    "{}[[witness]]\nname = \"witness.example\"\nvkey = \"{VKEY}\"\nendpoint = \"https://w:1\"\n",
                    entry("ORP-VS", &format!("witness_vkey = \"{VKEY}\""))
                ),
                "witness",
            ),
            (
                format!(
                    "{}[[witness]]\nname = \"witness.example\"\nvkey = \"{VKEY}\"\nendpoint = \"https://w:1\"\n",
                    entry(
                        "ORP-VS",
                        &format!(
                            "witness_vkey = \"{}\"",
                            VKEY.replace("witness.example+1a2b3c4d", "orp.node+0a0b0c0d")
                        )
                    )
                ),
                "witness",
            ),
        ];
        for (text, key) in cases {
            let err = Registry::parse(Path::new("registry.toml"), &text).unwrap_err();
            assert!(
                err.to_string().contains(&format!("key `{key}`")),
                "expected {key}: {err}"
            );
        }
    }
}
