//! Handlers of `cii.policy.v1.Policy`: the active rulebook and its reasoning,
//! for users with the `jurist` role (the access table, `cii_types::access`).

use std::sync::Arc;

use cii_kit::auth::caller;
use cii_kit::clock::Clock;
use cii_kit::registry::Live;
use cii_policy::decide::{Facts, Party, Transfer};
use cii_policy::replay::{Replayed, replay};
use cii_policy::{Lang, Rulebook, Trigger};
use cii_proto::policy::{self as pb, policy_server::Policy};
use tonic::{Request, Response, Status};

use crate::GatewayError;

/// Most files a replayed rulebook may have, and the largest.
const MAX_RULEBOOK_FILES: usize = 64;
const MAX_RULEBOOK_FILE_BYTES: usize = 1 << 20;

/// The jurists' rpc handlers.
pub struct PolicyService {
    rulebook: Arc<Rulebook>,
    registry: Live,
    log: cii_audit::Log,
    audit_store: cii_audit::Store,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyService(..)")
    }
}

impl PolicyService {
    pub fn new(
        rulebook: Arc<Rulebook>,
        registry: Live,
        log: cii_audit::Log,
        audit_store: cii_audit::Store,
        clock: Arc<dyn Clock>,
    ) -> PolicyService {
        PolicyService {
            rulebook,
            registry,
            log,
            audit_store,
            clock,
        }
    }

    /// The changed rulebook of a replay request, checked as `cii policy check` would.
    fn replayed_rulebook(&self, files: Vec<pb::RulebookFile>) -> Result<Rulebook, GatewayError> {
        if files.is_empty() || files.len() > MAX_RULEBOOK_FILES {
            return Err(invalid("files", "a rulebook of 1 to 64 files"));
        }
        if files.iter().any(|f| f.text.len() > MAX_RULEBOOK_FILE_BYTES) {
            return Err(invalid("files", "a rulebook file is at most 1 MiB"));
        }
        let files = files.into_iter().map(|f| (f.name, f.text)).collect();
        let today = self.clock.now().date();
        cii_policy::fit::load(Some(files), today).map_err(|e| invalid("files", e.to_string()))
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

    /// A changed rulebook against the decisions recorded for the caller's institution.
    async fn replay(&self, request: Request<pb::ReplayRequest>) -> Result<Response<pb::ReplayResponse>, Status> {
        let caller = caller(&request)?.clone();
        let pb::ReplayRequest { files, limit } = request.into_inner();
        let limit = match limit {
            0 => 100,
            n => n.min(1000),
        } as usize;
        let changed_rb = self.replayed_rulebook(files)?;
        let own = caller.institution.id.to_string();
        // Logged before anything is read: who replayed which rulebook on whose decisions.
        let entry = cii_audit::Entry {
            kind: cii_audit::EntryKind::AuditQuery as i32,
            time_micros: cii_types::time::micros(self.clock.now()),
            sender: own.clone(),
            acting_user: caller.acting_user(),
            detail: format!("policy-replay institution={own} rulebook={}", changed_rb.hash),
            ..cii_audit::Entry::default()
        };
        self.log.append(entry).await.map_err(GatewayError::Audit)?;
        let entries = crate::replay::transfer_entries(&self.audit_store, |e| e.sender == own || e.recipient == own)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "replay could not read the log");
                GatewayError::AuditUnreadable
            })?;
        let registry = self.registry.current();
        let party = |id: &str| {
            let id = cii_types::InstitutionId::parse("id", id).ok()?;
            let m = registry.get(&id)?;
            let canton = (!m.canton.is_empty()).then(|| m.canton.clone());
            Some(Party::member(m.kind, id, canton))
        };
        Ok(Response::new(replay_all(&changed_rb, &entries, party, limit)))
    }
}

/// Every entry decided again under `changed_rb`; the changed ones listed, at most `limit`.
fn replay_all(
    changed_rb: &Rulebook,
    entries: &[(u64, cii_audit::Entry)],
    party: impl Fn(&str) -> Option<Party> + Copy,
    limit: usize,
) -> pb::ReplayResponse {
    let mut answer = pb::ReplayResponse {
        rulebook_version: changed_rb.version.clone(),
        rulebook_hash: changed_rb.hash.clone(),
        ..pb::ReplayResponse::default()
    };
    for (index, e) in entries {
        let recorded = crate::replay::recorded(*index, e);
        match replay(changed_rb, &recorded, party) {
            Replayed::Same => answer.unchanged += 1,
            Replayed::CannotReplay(_) => answer.cannot_replay += 1,
            Replayed::Changed {
                recorded: was,
                replayed,
            } => {
                answer.changed += 1;
                if answer.changes.len() < limit {
                    answer.changes.push(pb::ReplayedDecision {
                        index: *index,
                        transfer_id: recorded.transfer_id.clone(),
                        sender: recorded.sender.clone(),
                        recipient: recorded.recipient.clone(),
                        recorded: was.to_string(),
                        replayed: replayed.to_string(),
                    });
                }
            }
        }
    }
    answer
}
