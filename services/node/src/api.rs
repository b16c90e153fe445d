//! Handlers of `cii.node.v1.Node`, the API for the institution's IT systems.

use std::time::Instant;

use cii_kit::auth::caller;
use cii_kit::grpc::not_available;
use cii_kit::jwt::AUTHORIZATION;
use cii_proto::gateway::{self as gw, gateway_client::GatewayClient};
use cii_proto::node::{self as pb, node_server::Node};
use cii_types::InstitutionId;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The IT-facing rpc handlers.
#[derive(Debug)]
pub struct NodeApi {
    institution: InstitutionId,
    gateway: GatewayClient<Channel>,
}

impl NodeApi {
    pub fn new(institution: InstitutionId, gateway: GatewayClient<Channel>) -> NodeApi {
        NodeApi { institution, gateway }
    }

    /// A request to the gateway carrying the caller's own token: the gateway
    /// verifies the acting user again, against the same institution's keys.
    fn onward<T, U>(incoming: &Request<T>, message: U) -> Request<U> {
        let mut request = Request::new(message);
        if let Some(token) = incoming.metadata().get(AUTHORIZATION) {
            request.metadata_mut().insert(AUTHORIZATION, token.clone());
        }
        request
    }
}

#[tonic::async_trait]
impl Node for NodeApi {
    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        caller(&request)?;
        let started = Instant::now();
        let answer = self
            .gateway
            .clone()
            .who_am_i(Self::onward(&request, gw::WhoAmIRequest {}))
            .await
            .inspect_err(|status| {
                tracing::warn!(code = ?status.code(), "gateway refused or unreachable");
            })?;
        Ok(Response::new(pb::StatusResponse {
            institution_id: self.institution.to_string(),
            gateway: Some(answer.into_inner()),
            gateway_rtt_micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        }))
    }

    async fn enrol(&self, _: Request<pb::EnrolRequest>) -> Result<Response<pb::EnrolResponse>, Status> {
        Err(not_available())
    }

    async fn send(&self, _: Request<pb::SendRequest>) -> Result<Response<gw::TransferResponse>, Status> {
        Err(not_available())
    }

    async fn request(&self, _: Request<pb::RequestRequest>) -> Result<Response<gw::TransferResponse>, Status> {
        Err(not_available())
    }

    async fn list_inbox(&self, _: Request<pb::ListInboxRequest>) -> Result<Response<pb::ListInboxResponse>, Status> {
        Err(not_available())
    }

    async fn acknowledge(
        &self,
        _: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        Err(not_available())
    }
}
