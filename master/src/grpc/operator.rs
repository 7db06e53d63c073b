//! `OperatorService`: cluster state and agent draining.

use agora_proto::AgentId;
use agora_proto::v1;
use agora_proto::v1::operator_service_server::OperatorService;
use tonic::{Request, Response, Status};

use super::respond;
use crate::actor::{self, ActorHandle};

/// The operator API over the state task.
pub(crate) struct OperatorGrpc {
    actor: ActorHandle,
}

impl OperatorGrpc {
    /// Serves operators.
    pub fn new(actor: ActorHandle) -> Self {
        Self { actor }
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorGrpc {
    async fn get_state(
        &self,
        _request: Request<v1::GetStateRequest>,
    ) -> Result<Response<v1::ClusterState>, Status> {
        let state = self
            .actor
            .call(|reply| actor::Request::GetState { reply })
            .await?;
        Ok(Response::new(state))
    }

    async fn drain_agent(
        &self,
        request: Request<v1::DrainAgentRequest>,
    ) -> Result<Response<v1::DrainAgentResponse>, Status> {
        let agent_id = request.into_inner().agent_id;
        if agent_id.is_empty() {
            return Err(Status::invalid_argument("agent_id: missing"));
        }
        let agent_id = AgentId::new(agent_id);
        let result = self
            .actor
            .call(|reply| actor::Request::DrainAgent { agent_id, reply })
            .await?;
        respond(result.map(|()| v1::DrainAgentResponse {}))
    }
}
