//! A development PKI: a network CA, TLS certificates for the gateway, the
//! consent registry and each institution's node, and each institution's JWT
//! signing key.
//!
//! Production networks use their own CA (see docs/operator-guide.md); this
//! module exists so that a newcomer and the tests get a real, working mutual-TLS
//! setup with one command. Every certificate is valid for TLS server and client
//! use and names its party in a `urn:cii:` URI subject alternative name.
//!
//! Layout of DIR:
//! ```text
//! ca.pem  ca.key
//! registry.key  registry.pub (the network's registry signing key; offline in production)
//! gateway/cert.pem  gateway/key.pem  gateway/audit.key (checkpoint signing key)
//! consent/cert.pem  consent/key.pem
//! institutions/<ID>/cert.pem  key.pem  jwt.key  jwt.pub
//! ```
//! An existing CA in DIR is reused, and parties that already have files are
//! left alone, so institutions can be added later.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cii_types::{InstitutionId, PeerIdentity, WitnessName};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

/// PKI files could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// A host name is not usable in a certificate.
    #[error("host `{0}` is not a DNS name or IP address")]
    Host(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What was created or reused, for printing.
#[derive(Debug, Default)]
pub struct PkiReport {
    /// Files written.
    pub created: Vec<PathBuf>,
    /// Parties whose files already existed.
    pub kept: Vec<String>,
}

/// Paths of one party's files under the PKI directory.
#[derive(Debug, Clone)]
pub struct PartyFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// TLS private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// Where a party's files live under `dir`.
pub fn party_files(dir: &Path, party: &PeerIdentity) -> PartyFiles {
    let folder = party_dir(dir, party);
    PartyFiles {
        cert: folder.join("cert.pem"),
        key: folder.join("key.pem"),
    }
}

fn party_dir(dir: &Path, party: &PeerIdentity) -> PathBuf {
    match party {
        PeerIdentity::Gateway => dir.join("gateway"),
        PeerIdentity::Consent => dir.join("consent"),
        PeerIdentity::Institution(id) => dir.join("institutions").join(id.as_str()),
        PeerIdentity::Witness(name) => dir.join("witnesses").join(name.as_str()),
    }
}

/// The gateway's audit-log checkpoint signing key (Ed25519, PKCS#8 PEM).
pub fn audit_signing_key(dir: &Path) -> PathBuf {
    dir.join("gateway").join("audit.key")
}

/// The network's registry signing key (Ed25519, PKCS#8 PEM): signs `registry.toml`.
pub fn registry_signing_key(dir: &Path) -> PathBuf {
    dir.join("registry.key")
}

/// The network's registry verification key (SPKI PEM), named by every process's config.
pub fn registry_verification_key(dir: &Path) -> PathBuf {
    dir.join("registry.pub")
}

/// The JWT signing key (PKCS#8 PEM) of an institution.
pub fn jwt_private_key(dir: &Path, id: &InstitutionId) -> PathBuf {
    party_dir(dir, &PeerIdentity::Institution(id.clone())).join("jwt.key")
}

/// The JWT verification key (SPKI PEM) of an institution, as the registry references it.
pub fn jwt_public_key(dir: &Path, id: &InstitutionId) -> PathBuf {
    party_dir(dir, &PeerIdentity::Institution(id.clone())).join("jwt.pub")
}

/// The signing key (Ed25519, PKCS#8 PEM) of the log a witness's party keeps when it runs the
/// second transcryptor (`cii transcryptor serve`).
pub fn transcriptions_signing_key(dir: &Path, party: &PeerIdentity) -> PathBuf {
    party_dir(dir, party).join("transcriptions.key")
}

/// The cosigning key (Ed25519, PKCS#8 PEM) of a witness of the audit log: an institution's node
/// or an independent witness.
pub fn cosigning_key(dir: &Path, party: &PeerIdentity) -> PathBuf {
    party_dir(dir, party).join("cosigning.key")
}

/// Creates (or completes) a development PKI in `dir` for the gateway, the
/// consent registry, `institutions` and the independent `witnesses`, with
/// certificates valid for `hosts`.
pub fn init(
    dir: &Path,
    institutions: &[InstitutionId],
    witnesses: &[WitnessName],
    hosts: &[String],
) -> Result<PkiReport, PkiError> {
    let mut report = PkiReport::default();
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let (ca_cert_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let now = OffsetDateTime::now_utc();
    let issuer = if ca_cert_path.exists() && ca_key_path.exists() {
        report.kept.push("ca".to_owned());
        let key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
        let cert_pem = fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?;
        Issuer::from_ca_cert_pem(&cert_pem, KeyPair::from_pem(&key_pem)?)?
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("CII Exchange development CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        write_file(&ca_cert_path, cert.pem().as_bytes(), false)?;
        write_file(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
        report.created.extend([ca_cert_path, ca_key_path]);
        Issuer::new(params, key)
    };

    let (registry_key, registry_pub) = (registry_signing_key(dir), registry_verification_key(dir));
    if !registry_key.exists() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        write_file(&registry_key, key.serialize_pem().as_bytes(), true)?;
        write_file(&registry_pub, key.public_key_pem().as_bytes(), false)?;
        report.created.extend([registry_key, registry_pub]);
    }
    let mut parties = vec![PeerIdentity::Gateway, PeerIdentity::Consent];
    parties.extend(institutions.iter().cloned().map(PeerIdentity::Institution));
    parties.extend(witnesses.iter().cloned().map(PeerIdentity::Witness));
    for party in parties {
        let files = party_files(dir, &party);
        if files.cert.exists() && files.key.exists() {
            report.kept.push(party.to_string());
        } else {
            let folder = party_dir(dir, &party);
            fs::create_dir_all(&folder).map_err(io_err(&folder))?;
            let key = KeyPair::generate()?;
            let cert = leaf_params(&party, hosts, now)?.signed_by(&key, &issuer)?;
            write_file(&files.cert, cert.pem().as_bytes(), false)?;
            write_file(&files.key, key.serialize_pem().as_bytes(), true)?;
            report.created.extend([files.cert, files.key]);
        }
        if party == PeerIdentity::Gateway {
            let path = audit_signing_key(dir);
            if !path.exists() {
                let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
                write_file(&path, key.serialize_pem().as_bytes(), true)?;
                report.created.push(path);
            }
        }
        if matches!(party, PeerIdentity::Witness(_)) {
            // Should the witness's party run a second transcryptor: the key of its own log.
            let path = transcriptions_signing_key(dir, &party);
            if !path.exists() {
                let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
                write_file(&path, key.serialize_pem().as_bytes(), true)?;
                report.created.push(path);
            }
        }
        if matches!(party, PeerIdentity::Institution(_) | PeerIdentity::Witness(_)) {
            let path = cosigning_key(dir, &party);
            if !path.exists() {
                let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
                write_file(&path, key.serialize_pem().as_bytes(), true)?;
                report.created.push(path);
            }
        }
        if let PeerIdentity::Institution(id) = &party {
            let (private, public) = (jwt_private_key(dir, id), jwt_public_key(dir, id));
            if !private.exists() {
                let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
                write_file(&private, key.serialize_pem().as_bytes(), true)?;
                write_file(&public, key.public_key_pem().as_bytes(), false)?;
                report.created.extend([private, public]);
            }
        }
    }
    Ok(report)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "CII Exchange (development)");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf_params(party: &PeerIdentity, hosts: &[String], now: OffsetDateTime) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&party.to_string());
    params.subject_alt_names.push(SanType::URI(party.to_uri().try_into()?));
    for host in hosts {
        params.subject_alt_names.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into().map_err(|_| PkiError::Host(host.clone()))?),
        });
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(825);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A random positive 128-bit serial (RFC 5280 §4.1.2.2).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A failing system RNG leaves zeros; the first byte is forced non-zero so
    // the serial stays positive and full-length either way.
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        // INVARIANT (secret-files-0600): private keys are readable by their owner only.
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(contents).map_err(io_err(path))
}
