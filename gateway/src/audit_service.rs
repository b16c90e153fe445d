//! Handlers of `cii.audit.v1.Audit`: checkpoints and proofs for the
//! institutions that witness the log. They are hashes and signed notes, like a
//! public transparency log's, so mutual TLS (a registry member) is enough: a
//! node checks a delivery's receipt without any user token. Queries for DPOs
//! (the DPO-tools issue) carry personal metadata and must verify the caller's
//! JWT and role inside their handler.

use cii_audit::Log;
use cii_kit::grpc::{error, not_available};
use cii_proto::audit::{self as pb, audit_server::Audit};
use tonic::{Code, Request, Response, Status};

/// The log-reading rpc handlers.
#[derive(Debug)]
pub struct AuditService {
    log: Log,
}

impl AuditService {
    pub fn new(log: Log) -> AuditService {
        AuditService { log }
    }
}

fn proof_error(e: cii_audit::merkle::ProofError) -> Status {
    error(Code::OutOfRange, "PROOF_OUT_OF_RANGE", e.to_string(), None)
}

#[tonic::async_trait]
impl Audit for AuditService {
    type QueryStream = tokio_stream::Empty<Result<pb::Entry, Status>>;

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let _ = &request;
        let (tree_size, note) = self.log.checkpoint();
        Ok(Response::new(pb::Checkpoint { note, tree_size }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        let _ = &request;
        let pb::InclusionProofRequest { index, tree_size } = request.into_inner();
        let (tree_size, leaf, proof) = self.log.inclusion_proof(index, tree_size).map_err(proof_error)?;
        Ok(Response::new(pb::InclusionProof {
            index,
            tree_size,
            leaf_hash: leaf.to_vec(),
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let _ = &request;
        let pb::ConsistencyProofRequest { old_size, tree_size } = request.into_inner();
        let (tree_size, proof) = self.log.consistency_proof(old_size, tree_size).map_err(proof_error)?;
        Ok(Response::new(pb::ConsistencyProof {
            old_size,
            tree_size,
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn query(&self, _: Request<pb::QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        Err(not_available())
    }
}
