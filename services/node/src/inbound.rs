//! Handlers of `cii.node.v1.NodeInbound`, called by the gateway only (the TLS
//! layer admits no other certificate).

use cii_kit::grpc::not_available;
use cii_proto::node::{self as pb, node_inbound_server::NodeInbound};
use cii_types::InstitutionId;
use tonic::{Request, Response, Status};

/// The gateway-facing rpc handlers.
#[derive(Debug)]
pub struct NodeInboundService {
    institution: InstitutionId,
}

impl NodeInboundService {
    pub fn new(institution: InstitutionId) -> NodeInboundService {
        NodeInboundService { institution }
    }
}

#[tonic::async_trait]
impl NodeInbound for NodeInboundService {
    async fn ping(&self, _: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {
            institution_id: self.institution.to_string(),
        }))
    }

    async fn deliver(&self, _: Request<pb::Delivery>) -> Result<Response<pb::DeliveryAck>, Status> {
        Err(not_available())
    }

    async fn provide(&self, _: Request<pb::ProvideRequest>) -> Result<Response<pb::ProvideResponse>, Status> {
        Err(not_available())
    }
}
