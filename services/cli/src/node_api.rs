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
