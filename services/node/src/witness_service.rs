//! `cii.witness.v1.Witness`: the gateway asks this witness to cosign a new
//! checkpoint (C2SP tlog-witness over gRPC). Served on a node's inbound API and
//! by the independent witness (`cii witness serve`); mutual TLS admits the
//! gateway only. The rule is [`LogWitness::add_checkpoint`].

use std::sync::Arc;

use cii_proto::witness::add_checkpoint_response::Outcome;
use cii_proto::witness::witness_server::Witness;
use cii_proto::witness::{AddCheckpointRequest, AddCheckpointResponse};
use tonic::{Request, Response, Status};

use crate::error::NodeError;
use crate::witness::{Cosigning, LogWitness};

/// Most consistency-proof hashes a request may carry (a tree of 2^64 leaves needs < 128).
const MAX_PROOF: usize = 128;
/// Largest checkpoint note accepted (a checkpoint is three short lines and a few signatures).
const MAX_NOTE: usize = 16 * 1024;

/// The witness service.
#[derive(Debug)]
pub struct WitnessService {
    witness: Arc<LogWitness>,
}

impl WitnessService {
    /// Serves `witness`.
    pub fn new(witness: Arc<LogWitness>) -> WitnessService {
        WitnessService { witness }
    }
}

#[tonic::async_trait]
impl Witness for WitnessService {
    async fn add_checkpoint(
        &self,
        request: Request<AddCheckpointRequest>,
    ) -> Result<Response<AddCheckpointResponse>, Status> {
        let AddCheckpointRequest {
            old_size,
            consistency_proof,
            checkpoint,
        } = request.into_inner();
        if consistency_proof.len() > MAX_PROOF || checkpoint.len() > MAX_NOTE {
            return Err(NodeError::from(crate::witness::WitnessFailure::CheckpointInvalid(
                "proof or checkpoint too large".into(),
            ))
            .into());
        }
        let outcome = match self
            .witness
            .add_checkpoint(old_size, &consistency_proof, &checkpoint)
            .await
            .map_err(NodeError::from)?
        {
            Cosigning::Cosigned(line) => Outcome::Cosignature(line),
            Cosigning::WitnessSize(size) => Outcome::WitnessSize(size),
        };
        Ok(Response::new(AddCheckpointResponse { outcome: Some(outcome) }))
    }
}
