//! `cii pki …`: the development PKI and test tokens.

use std::path::PathBuf;

use anyhow::Context;
use cii_kit::jwt::{self, TokenSpec};
use cii_types::{InstitutionId, Role, WitnessName};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a development CA and certificates for the gateway, the consent registry, each institution and each independent witness.
    #[command(
        after_help = "Writes DIR/ca.pem, DIR/registry.key and DIR/registry.pub (the network's registry signing key: keep it \
offline), DIR/gateway/, DIR/consent/ and DIR/institutions/<ID>/ (cert.pem, \
key.pem, jwt.key / jwt.pub, the key that signs the institution's user tokens, and cosigning.key, the node's \
key as a witness of the audit log) and DIR/witnesses/<NAME>/ (cert.pem, key.pem, cosigning.key). Private keys get mode 0600.\n\
Run it again with more --institution or --witness flags to add parties: an existing CA and existing files are kept.\n\n\
Example:\n  cii pki init --dir dev/pki --institution ORP-VS --institution AI-VS --witness witness.edoeb.example"
    )]
    Init {
        /// Folder to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Registry id of an institution to certify (repeat the flag for several).
        #[arg(long = "institution", value_name = "ID")]
        institutions: Vec<String>,
        /// Name of an independent witness of the audit log to certify (repeat for several).
        #[arg(long = "witness", value_name = "NAME")]
        witnesses: Vec<String>,
        /// Host names and IP addresses the certificates are valid for (repeat; default localhost, 127.0.0.1, ::1).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Mint a user token (JWT) signed with an institution's development key.
    #[command(after_help = "Prints the token on standard output. Pass it as gRPC metadata:\n  \
authorization: Bearer <token>\n\nExample:\n  \
cii pki token --dir dev/pki --network cii.dev --institution ORP-VS --user anna.meier --role caseworker")]
    Token {
        /// The PKI folder made by `cii pki init`.
        #[arg(long)]
        dir: PathBuf,
        /// The issuing institution's registry id.
        #[arg(long)]
        institution: String,
        /// The user id (`sub` claim).
        #[arg(long)]
        user: String,
        /// The network's id (the registry's `network`, the token's audience).
        #[arg(long)]
        network: String,
        /// A role: caseworker, system, dpo, network_dpo, jurist or operator (repeat for several;
        /// the registry must grant each to the institution).
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
        /// Lifetime in seconds (processes refuse tokens living longer than their maximum, 1 h by default).
        #[arg(long, default_value_t = 900)]
        ttl_secs: i64,
        /// Key id written into the token header (must match the registry's `kid`).
        #[arg(long, default_value = "dev-1")]
        kid: String,
    },
    /// Sign a registry file with the network's registry key (writes FILE.sig).
    #[command(
        after_help = "Every change to the registry is signed, with a higher `version`: the gateway, \
the nodes and the consent registry activate a new file only if its signature verifies with the key their \
config names (`[registry] key`) and its version is higher than the one they run.\n\n\
The same signature with openssl (the key never needs to touch a networked machine):\n  \
openssl pkeyutl -sign -inkey registry.key -rawin -in registry.toml -out registry.toml.sig\n\n\
Example:\n  cii pki sign-registry --key /media/offline/registry.key deploy/config/registry.toml"
    )]
    SignRegistry {
        /// The network's registry signing key (Ed25519, PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// The registry file.
        file: PathBuf,
    },
}

pub fn run(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init {
            dir,
            institutions,
            witnesses,
            hosts,
        } => {
            let ids = institutions
                .iter()
                .map(|s| InstitutionId::parse("--institution", s))
                .collect::<Result<Vec<_>, _>>()?;
            let hosts = if hosts.is_empty() {
                vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
            } else {
                hosts
            };
            let witnesses = witnesses
                .iter()
                .map(|s| WitnessName::parse("--witness", s))
                .collect::<Result<Vec<_>, _>>()?;
            let report = cii_kit::pki::init(&dir, &ids, &witnesses, &hosts)?;
            for path in &report.created {
                eprintln!("created {}", path.display());
            }
            for party in &report.kept {
                eprintln!("kept    {party} (files exist)");
            }
            Ok(())
        }
        PkiCommand::Token {
            dir,
            institution,
            network,
            user,
            roles,
            ttl_secs,
            kid,
        } => {
            let issuer = InstitutionId::parse("--institution", &institution)?;
            let roles = roles
                .iter()
                .map(|r| Role::parse("--role", r))
                .collect::<Result<Vec<_>, _>>()?;
            let key_file = cii_kit::pki::jwt_private_key(&dir, &issuer);
            let pem = std::fs::read(&key_file).with_context(|| format!("reading {}", key_file.display()))?;
            let spec = TokenSpec {
                issuer: &issuer,
                audience: &network,
                subject: &user,
                roles: &roles,
                kid: &kid,
                issued_at: time::OffsetDateTime::now_utc(),
                ttl: time::Duration::seconds(ttl_secs),
            };
            let token = jwt::mint(&pem, &spec)?;
            #[expect(clippy::print_stdout, reason = "the token is the command's output")]
            {
                println!("{token}");
            }
            Ok(())
        }
        PkiCommand::SignRegistry { key, file } => {
            // The file must be a valid registry before it is signed.
            let registry = cii_kit::registry::Registry::load(&file)?;
            let pem = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
            let out = cii_kit::registry::signed::sign(&file, &pem)?;
            eprintln!(
                "signed {} (network {}, version {}) -> {}",
                file.display(),
                registry.network(),
                registry.version(),
                out.display()
            );
            Ok(())
        }
    }
}
