//! Handlers of `cii.policy.v1.Policy`: the active rulebook and its reasoning,
//! for users with the `jurist` role (the access table, `cii_types::access`).

use std::sync::Arc;

use cii_policy::decide::{Facts, Transfer};
use cii_policy::{Lang, Rulebook, Trigger};
use cii_proto::policy::{self as pb, policy_server::Policy};
use tonic::{Request, Response, Status};

use crate::GatewayError;

/// The jurists' rpc handlers.
#[derive(Debug)]
pub struct PolicyService {
    rulebook: Arc<Rulebook>,
}

impl PolicyService {
    pub fn new(rulebook: Arc<Rulebook>) -> PolicyService {
        PolicyService { rulebook }
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> GatewayError {
    GatewayError::ExplainInvalid {
        field,
        problem: problem.into(),
    }
}

#[tonic::async_trait]
impl Policy for PolicyService {
    async fn get_rulebook(&self, _request: Request<pb::GetRulebookRequest>) -> Result<Response<pb::Rulebook>, Status> {
        Ok(Response::new(pb::Rulebook {
            version: self.rulebook.version.clone(),
            hash: self.rulebook.hash.clone(),
        }))
    }

    async fn explain(&self, request: Request<pb::ExplainRequest>) -> Result<Response<pb::ExplainResponse>, Status> {
        let rb = &self.rulebook;
        let pb::ExplainRequest {
            from,
            to,
            trigger,
            purpose,
            categories,
            facts,
            lang,
        } = request.into_inner();
        let from = cii_policy::scenario::party(rb, &from).map_err(|e| invalid("from", e))?;
        let to = cii_policy::scenario::party(rb, &to).map_err(|e| invalid("to", e))?;
        let trigger = if trigger.is_empty() {
            None
        } else {
            Some(Trigger::parse("trigger", &trigger).map_err(|e| invalid("trigger", e.to_string()))?)
        };
        let mut given = Facts::default();
        for (key, value) in &facts {
            let fact = rb
                .fact_index(key)
                .ok_or_else(|| invalid("facts", format!("fact `{key}` is not declared by the rulebook")))?;
            let value = value
                .parse::<bool>()
                .map_err(|_| invalid("facts", format!("fact `{key}` must be true or false")))?;
            given.set(fact, value);
        }
        let lang = if lang.is_empty() {
            Lang::Fr
        } else {
            Lang::parse("lang", &lang).map_err(|e| invalid("lang", e.to_string()))?
        };
        let transfer = Transfer {
            unreviewed_pull: false,
            from,
            to,
            trigger,
            purpose,
            categories,
            persons: 1,
            // A hypothetical transfer is explained as an individual case.
            case_reference: Some("explain".to_owned()),
            facts: given,
            consents: Vec::new(),
            date: time::OffsetDateTime::now_utc().date(),
        };
        let evaluation =
            cii_policy::decide::evaluate_traced(rb, &transfer).map_err(|e| invalid("categories", e.to_string()))?;
        let text = cii_policy::explain::render(rb, &transfer, &evaluation, lang);
        Ok(Response::new(pb::ExplainResponse {
            decision: Some(crate::wire::decision(rb, &evaluation.decision)),
            lines: text.lines().map(str::to_owned).collect(),
        }))
    }
}
