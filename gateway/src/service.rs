//! Handlers of `cii.gateway.v1.Gateway`.

use std::sync::Arc;

use cii_kit::auth::caller;
use cii_kit::clock::Clock;
use cii_kit::registry::Registry;
use cii_proto::gateway::{self as pb, gateway_server::Gateway};
use tonic::{Request, Response, Status};

/// The gateway's rpc handlers.
#[derive(Debug)]
pub struct GatewayService {
    #[expect(dead_code, reason = "the transfer pipeline (exchanges issue) reads it")]
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
}

impl GatewayService {
    pub fn new(registry: Arc<Registry>, clock: Arc<dyn Clock>) -> GatewayService {
        GatewayService { registry, clock }
    }
}

fn timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = caller(&request)?;
        tracing::debug!(institution = %caller.institution.id, "who-am-i");
        Ok(Response::new(pb::WhoAmIResponse {
            institution_id: caller.institution.id.to_string(),
            institution_type: caller.institution.kind.to_string(),
            user: caller.user.subject.clone(),
            roles: caller.user.roles.iter().map(|r| r.to_string()).collect(),
            gateway_time: Some(timestamp(self.clock.now())),
        }))
    }

    async fn enrol(&self, _: Request<pb::EnrolRequest>) -> Result<Response<pb::EnrolResponse>, Status> {
        Err(cii_kit::grpc::not_available())
    }

    async fn submit_transfer(&self, _: Request<pb::TransferRequest>) -> Result<Response<pb::TransferResponse>, Status> {
        Err(cii_kit::grpc::not_available())
    }

    async fn get_transfer(&self, _: Request<pb::GetTransferRequest>) -> Result<Response<pb::TransferResponse>, Status> {
        Err(cii_kit::grpc::not_available())
    }
}
