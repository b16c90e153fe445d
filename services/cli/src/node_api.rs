//! How the DPO and batch tools reach an institution's node: its API address,
//! the network CA, and the acting user's token (`--node --ca --token-file`).

use std::path::PathBuf;

use anyhow::Context;
use cii_kit::tls::{self, PeerPolicy};
use cii_proto::node::node_client::NodeClient;
use cii_types::PeerIdentity;
use clap::Args;
use tonic::transport::Channel;

/// The node to call and as whom.
#[derive(Debug, Args)]
pub struct NodeApiArgs {
    /// The node's API, `https://host:port`.
    #[arg(long)]
    pub node: String,
    /// The network CA certificate (PEM) the node's certificate chains to.
    #[arg(long)]
    pub ca: PathBuf,
    /// A file holding the acting user's JWT (`cii pki token` in development).
    #[arg(long)]
    pub token_file: PathBuf,
}

impl NodeApiArgs {
    /// A client of the node and the token, read from its file.
    pub fn connect(&self) -> anyhow::Result<(NodeClient<Channel>, String)> {
        let token = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("reading {}", self.token_file.display()))?
            .trim()
            .to_owned();
        let policy = PeerPolicy::new(
            |peer: &PeerIdentity| matches!(peer, PeerIdentity::Institution(_)),
            |_| false,
        );
        let config = tls::api_client_config(&self.ca, policy)?;
        Ok((NodeClient::new(tls::channel(&self.node, config)?), token))
    }
}

/// `message` with the acting user's token as its `authorization` header.
pub fn authorized<T>(token: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let header = format!("Bearer {token}")
        .parse()
        .context("the token is not valid header text")?;
    request.metadata_mut().insert("authorization", header);
    Ok(request)
}

/// Prints a refusal with its stable code; the exit code the tools use for it (2).
pub fn refused(status: &tonic::Status) -> std::process::ExitCode {
    let code = cii_kit::grpc::error_code(status).unwrap_or_else(|| format!("{:?}", status.code()));
    eprintln!("refused: {code}: {}", status.message());
    std::process::ExitCode::from(2)
}
