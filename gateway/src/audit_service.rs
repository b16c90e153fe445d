//! Handlers of `cii.audit.v1.Audit`: checkpoints and proofs for the
//! institutions that witness the log, and queries for data-protection officers.
//!
//! Checkpoints and proofs are hashes and signed notes, like a public
//! transparency log's, so mutual TLS (a registry member) is enough: a node
//! checks a delivery's receipt without any user token. `Query` returns
//! personal metadata: the access table admits `dpo` and `network_dpo` only,
//! and the handler narrows a `dpo` to its own institution.

use std::sync::Arc;

use cii_audit::Log;
use cii_kit::auth::{Caller, caller};
use cii_kit::clock::Clock;
use cii_proto::audit::{self as pb, audit_server::Audit};
use cii_pseudonym::names::Party;
use cii_types::Role;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::GatewayError;

/// Entries read from the store per batch while a query scans.
const SCAN_BATCH: u32 = 2_000;

/// The log-reading rpc handlers.
#[derive(Debug)]
pub struct AuditService {
    log: Log,
    pseudonyms: crate::pseudonyms::Pseudonyms,
    store: cii_audit::Store,
    /// The operational store (retention forgets old idempotency records there too).
    operations: crate::store::Store,
    retention_days: u32,
    clock: Arc<dyn Clock>,
    metrics: cii_kit::metrics::Metrics,
    witnessed: crate::cosigning::Witnessed,
    /// How long `GetWitnessedInclusion` waits for the witnesses.
    witness_wait: std::time::Duration,
}

/// What the audit handlers read and write.
#[derive(Debug)]
pub struct AuditParts {
    pub log: Log,
    pub pseudonyms: crate::pseudonyms::Pseudonyms,
    pub store: cii_audit::Store,
    pub operations: crate::store::Store,
    pub retention_days: u32,
    pub metrics: cii_kit::metrics::Metrics,
    pub witnessed: crate::cosigning::Witnessed,
    pub witness_wait: std::time::Duration,
}

impl AuditService {
    /// The months whose keys are due for destruction: not destroyed yet, ended by `cutoff_micros`.
    async fn expired_periods(&self, cutoff_micros: i64) -> Result<Vec<cii_audit::store::Period>, GatewayError> {
        Ok(self
            .store
            .periods()
            .await
            .map_err(|e| retention_interrupted(&e))?
            .into_iter()
            .filter(|p| {
                p.destroyed_micros.is_none()
                    && cii_audit::body::period_end_micros(&p.period).is_some_and(|end| end <= cutoff_micros)
            })
            .collect())
    }

    pub fn new(parts: AuditParts, clock: Arc<dyn Clock>) -> AuditService {
        let AuditParts {
            log,
            pseudonyms,
            store,
            operations,
            retention_days,
            metrics,
            witnessed,
            witness_wait,
        } = parts;
        AuditService {
            log,
            pseudonyms,
            store,
            operations,
            retention_days,
            clock,
            metrics,
            witnessed,
            witness_wait,
        }
    }
}

/// A query, checked: what an entry must match.
struct Filter {
    /// `None` for a network DPO.
    institution: Option<String>,
    from: Option<i64>,
    until: Option<i64>,
    basis: String,
    decision: Option<i32>,
    exchange_type: String,
    acting_user: String,
}

/// A filter's value is logged with the query: it must be of its field's form, short, and
/// never an AVS number (a DPO pasting one would write it into the log).
fn check_filter(field: &'static str, value: &str) -> Result<(), GatewayError> {
    let identifier = |v: &str| v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    let (ok, expected) = match field {
        "institution" => (
            cii_types::InstitutionId::parse(field, value).is_ok(),
            "an institution id",
        ),
        "acting_user" => (
            value.split_once('@').is_some_and(|(user, institution)| {
                cii_kit::jwt::subject_is_safe(user) && cii_types::InstitutionId::parse(field, institution).is_ok()
            }),
            "an account user@INSTITUTION as the log records it",
        ),
        _ => (
            identifier(value),
            "an id of at most 64 characters of A–Z, a–z, 0–9, '.', '_', ':', '-'",
        ),
    };
    if value.is_empty() || (ok && !cii_types::avs::looks_like_avs(value)) {
        Ok(())
    } else {
        Err(GatewayError::FilterInvalid { field, expected })
    }
}

impl Filter {
    fn check(caller: &Caller, q: &pb::QueryRequest) -> Result<Filter, GatewayError> {
        for (field, value) in [
            ("institution", &q.institution),
            ("basis", &q.basis),
            ("exchange_type", &q.exchange_type),
            ("acting_user", &q.acting_user),
        ] {
            check_filter(field, value)?;
        }
        let own = caller.institution.id.to_string();
        let institution = if caller.user.roles.contains(&Role::NetworkDpo) {
            (!q.institution.is_empty()).then(|| q.institution.clone())
        } else if q.institution.is_empty() || q.institution == own {
            Some(own)
        } else {
            return Err(GatewayError::DpoScope);
        };
        let decision = match q.decision.as_str() {
            "" => None,
            "permit" => Some(pb::EntryKind::TransferPermitted as i32),
            "deny" => Some(pb::EntryKind::TransferDenied as i32),
            _ => return Err(GatewayError::DecisionInvalid),
        };
        let micros = cii_types::time::micros_of_timestamp;
        let (from, until) = (q.from.as_ref().map(micros), q.until.as_ref().map(micros));
        if let (Some(f), Some(u)) = (from, until)
            && f >= u
        {
            return Err(GatewayError::PeriodInvalid);
        }
        Ok(Filter {
            institution,
            from,
            until,
            basis: q.basis.clone(),
            decision,
            exchange_type: q.exchange_type.clone(),
            acting_user: q.acting_user.clone(),
        })
    }

    fn matches(&self, e: &cii_audit::Entry) -> bool {
        self.institution
            .as_ref()
            .is_none_or(|i| e.sender == *i || e.recipient == *i)
            && self.from.is_none_or(|f| e.time_micros >= f)
            && self.until.is_none_or(|u| e.time_micros < u)
            && (self.basis.is_empty() || e.bases.contains(&self.basis))
            && self.decision.is_none_or(|k| e.kind == k)
            && (self.exchange_type.is_empty() || e.exchange_type == self.exchange_type)
            && (self.acting_user.is_empty() || e.acting_user == self.acting_user)
    }

    /// The filters as logged (metadata only).
    fn describe(&self, q: &pb::QueryRequest) -> String {
        let mut parts = vec![format!("institution={}", self.institution.as_deref().unwrap_or("*"))];
        for (name, value) in [
            ("basis", &q.basis),
            ("decision", &q.decision),
            ("exchange_type", &q.exchange_type),
            ("acting_user", &q.acting_user),
        ] {
            if !value.is_empty() {
                parts.push(format!("{name}={value}"));
            }
        }
        if let Some(f) = self.from {
            parts.push(format!("from={f}"));
        }
        if let Some(u) = self.until {
            parts.push(format!("until={u}"));
        }
        parts.join(" ")
    }
}

fn retention_period(p: cii_audit::store::Period) -> pb::RetentionPeriod {
    pb::RetentionPeriod {
        period: p.period,
        entries: p.entries,
    }
}

/// What a retention run's entry says: the limit, the cutoff, the months whose keys go.
fn retention_detail(retention_days: u32, cutoff: time::Date, periods: &[String], dry_run: bool) -> String {
    format!(
        "retention_days={retention_days} cutoff={cutoff} periods={}{}",
        if periods.is_empty() {
            "none".to_owned()
        } else {
            periods.join(",")
        },
        if dry_run { " dry_run" } else { "" },
    )
}

fn retention_interrupted(e: &dyn std::fmt::Display) -> GatewayError {
    tracing::error!(error = %e, "audit or operational store failed during retention");
    GatewayError::RetentionInterrupted
}

#[tonic::async_trait]
impl Audit for AuditService {
    type QueryStream = ReceiverStream<Result<pb::Entry, Status>>;

    async fn get_checkpoint(
        &self,
        _request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let (tree_size, note) = self.log.checkpoint();
        Ok(Response::new(pb::Checkpoint { note, tree_size }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        let pb::InclusionProofRequest { index, tree_size } = request.into_inner();
        let (tree_size, leaf, proof) = self
            .log
            .inclusion_proof(index, tree_size)
            .await
            .map_err(GatewayError::from)?;
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
        let pb::ConsistencyProofRequest { old_size, tree_size } = request.into_inner();
        let (tree_size, proof) = self
            .log
            .consistency_proof(old_size, tree_size)
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(pb::ConsistencyProof {
            old_size,
            tree_size,
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    /// An early shredding: asked for (logged), or approved (logged, then the key destroyed).
    async fn shred_period(
        &self,
        request: Request<pb::ShredPeriodRequest>,
    ) -> Result<Response<pb::ShredPeriodResponse>, Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let now = cii_types::time::micros(self.clock.now());
        let approving = request.approve != 0;
        let entry = if approving {
            crate::shredding::approval_entry(&self.store, &caller, &request, now).await?
        } else {
            crate::shredding::request_entry(&self.store, &caller, &request, now).await?
        };
        let receipt = self.log.append(entry).await.map_err(GatewayError::Audit)?;
        if approving {
            // Durable approval first; then the key, with the record naming the approval.
            self.store
                .destroy_early(&request.period, receipt.index, now)
                .await
                .map_err(|e| retention_interrupted(&e))?;
            tracing::warn!(period = %request.period, audit_index = receipt.index, "month shredded early");
        }
        Ok(Response::new(pb::ShredPeriodResponse {
            index: receipt.index,
            destroyed: approving,
        }))
    }

    async fn get_witnessed_inclusion(
        &self,
        request: Request<pb::WitnessedInclusionRequest>,
    ) -> Result<Response<pb::WitnessedInclusion>, Status> {
        let index = request.into_inner().index;
        if index >= self.log.checkpoint().0 {
            return Err(
                GatewayError::ProofOutOfRange(cii_audit::merkle::ProofError::SizeOutOfRange {
                    size: index + 1,
                    available: self.log.checkpoint().0,
                })
                .into(),
            );
        }
        let cosigned = self
            .witnessed
            .covering(index, self.witness_wait)
            .await
            .ok_or(GatewayError::NotWitnessed(index))?;
        let (tree_size, leaf, proof) = self
            .log
            .inclusion_proof(index, cosigned.size)
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(pb::WitnessedInclusion {
            checkpoint: Some(pb::Checkpoint {
                note: cosigned.note.clone(),
                tree_size,
            }),
            proof: Some(pb::InclusionProof {
                index,
                tree_size,
                leaf_hash: leaf.to_vec(),
                hashes: proof.iter().map(|h| h.to_vec()).collect(),
            }),
        }))
    }

    /// Translates the caller's pseudonym of a person into the DPO context;
    /// the DPO_LOOKUP entry (naming the person for the DPO) is durable first.
    async fn lookup_person(
        &self,
        request: Request<pb::LookupPersonRequest>,
    ) -> Result<Response<pb::LookupPersonResponse>, Status> {
        let caller = caller(&request)?.clone();
        let person =
            crate::transfer::ciphertext("person", request.get_ref().person.as_ref()).map_err(GatewayError::from)?;
        let from = cii_pseudonym::shares::Source::node(Some(Party::Institution(caller.institution.id.clone())));
        // A network DPO reads the audit context; an institution's DPO its own.
        let mut wanted = vec![(person, from.clone(), Party::Audit)];
        wanted.extend(dpo_context(&caller).map(|dpo| (person, from, dpo)));
        let purpose = crate::pseudonyms::of("dpo_lookup", caller.institution.id.as_str(), "");
        let translated = self
            .pseudonyms
            .pseudonyms(wanted, &purpose)
            .await
            .map_err(GatewayError::from)?;
        let bytes = translated
            .first()
            .map(cii_pseudonym::wire::to_bytes)
            .unwrap_or_default();
        let answered = translated.last().map(cii_pseudonym::wire::to_bytes).unwrap_or_default();
        let entry = cii_audit::Entry {
            kind: pb::EntryKind::DpoLookup as i32,
            time_micros: cii_types::time::micros(self.clock.now()),
            sender: caller.institution.id.to_string(),
            acting_user: caller.acting_user(),
            audit_pseudonym: bytes,
            key_epoch: self.pseudonyms.epoch(),
            detail: "subject access".to_owned(),
            ..cii_audit::Entry::default()
        };
        let receipt = self.log.append(entry).await.map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "DPO lookup not logged");
            GatewayError::Audit(e)
        })?;
        Ok(Response::new(pb::LookupPersonResponse {
            audit_person: Some(cii_proto::common::EncryptedPseudonym { ciphertext: answered }),
            lookup_index: receipt.index,
        }))
    }

    /// Logs the run, then destroys the keys of the months past the limit and
    /// forgets the operational records older than it. A failure after the
    /// entry leaves the rest for the next run (which is logged too).
    async fn apply_retention(
        &self,
        request: Request<pb::ApplyRetentionRequest>,
    ) -> Result<Response<pb::ApplyRetentionResponse>, Status> {
        let caller = caller(&request)?.clone();
        let dry_run = request.get_ref().dry_run;
        let now = self.clock.now();
        let cutoff = now - time::Duration::days(i64::from(self.retention_days));
        let cutoff_micros = cii_types::time::micros(cutoff);
        let expired = self.expired_periods(cutoff_micros).await?;
        let names: Vec<String> = expired.iter().map(|p| p.period.clone()).collect();
        let entry = cii_audit::Entry {
            kind: pb::EntryKind::RetentionRun as i32,
            time_micros: cii_types::time::micros(now),
            sender: caller.institution.id.to_string(),
            acting_user: caller.acting_user(),
            detail: retention_detail(self.retention_days, cutoff.date(), &names, dry_run),
            ..cii_audit::Entry::default()
        };
        let receipt = self.log.append(entry).await.map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "retention run not logged");
            GatewayError::Audit(e)
        })?;
        if !dry_run && !names.is_empty() {
            self.store
                .destroy_keys(&names, cii_types::time::micros(now))
                .await
                .map_err(|e| retention_interrupted(&e))?;
        }
        let (transfers, obligations) = self
            .operations
            .forget_before(cutoff_micros, dry_run)
            .await
            .map_err(|e| retention_interrupted(&e))?;
        tracing::info!(
            audit_index = receipt.index,
            periods = names.len(),
            transfers,
            obligations,
            dry_run,
            "retention run"
        );
        Ok(Response::new(pb::ApplyRetentionResponse {
            retention_days: self.retention_days,
            cutoff: Some(cii_types::time::timestamp(
                cutoff.replace_nanosecond(0).unwrap_or(cutoff),
            )),
            destroyed: expired.into_iter().map(retention_period).collect(),
            run_index: receipt.index,
            transfers_forgotten: transfers,
            obligations_forgotten: obligations,
            dry_run,
        }))
    }

    /// Logs the query (durably), then streams the matching entries of the log
    /// as it stood when the query was logged.
    async fn query(&self, request: Request<pb::QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        let caller = caller(&request)?.clone();
        let query = request.into_inner();
        let filter = Filter::check(&caller, &query)?;
        let entry = cii_audit::Entry {
            kind: pb::EntryKind::AuditQuery as i32,
            time_micros: cii_types::time::micros(self.clock.now()),
            sender: caller.institution.id.to_string(),
            acting_user: caller.acting_user(),
            detail: filter.describe(&query),
            ..cii_audit::Entry::default()
        };
        let receipt = self.log.append(entry).await.map_err(|e| {
            tracing::error!(code = e.code(), error = %e, "audit query not logged");
            GatewayError::Audit(e)
        })?;
        // Network-wide queries are rare and worth a look: the shipped alert rules watch them.
        let scope = if filter.institution.is_none() {
            "network"
        } else {
            "institution"
        };
        cii_kit::metrics::Metrics::count(&self.metrics.audit_queries, scope);
        let end = receipt.index + 1;
        // The checkpoint the proofs lead to: it covers the query's own entry.
        let proofs = query.with_proofs.then(|| self.log.checkpoint());
        let limit = match query.limit {
            0 => u64::MAX,
            n => u64::from(n),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let scan = Scan {
            store: self.store.clone(),
            log: self.log.clone(),
            rekey: dpo_context(&caller).map(|dpo| {
                let purpose =
                    crate::pseudonyms::of("dpo_query", caller.institution.id.as_str(), &receipt.index.to_string());
                (self.pseudonyms.clone(), dpo, purpose)
            }),
            filter,
            end,
            limit,
            proofs,
        };
        tokio::spawn(scan.send_to(tx));
        tracing::info!(audit_index = receipt.index, "audit query");
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The DPO context a caller's answers are rekeyed into: its institution's for a
/// `dpo`, none (the audit context itself) for a `network_dpo`.
fn dpo_context(caller: &Caller) -> Option<Party> {
    (!caller.user.has(Role::NetworkDpo)).then(|| Party::Dpo(caller.institution.id.clone()))
}

/// A query's scan of the log as it stood when the query was logged.
struct Scan {
    store: cii_audit::Store,
    log: Log,
    /// For an institution's DPO: the transcryptor and the DPO context to rekey persons into.
    rekey: Option<(crate::pseudonyms::Pseudonyms, Party, crate::pseudonyms::Purpose)>,
    filter: Filter,
    /// One past the query's own entry.
    end: u64,
    limit: u64,
    /// The checkpoint inclusion proofs lead to, if asked for.
    proofs: Option<(u64, String)>,
}

impl Scan {
    /// Sends the matching entries, oldest first, until the end, the limit or the caller goes.
    async fn send_to(self, tx: tokio::sync::mpsc::Sender<Result<pb::Entry, Status>>) {
        let (mut next, mut sent) = (0, 0);
        while next < self.end && sent < self.limit {
            let batch = match self.store.entries(next, SCAN_BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "audit store not readable");
                    let _ = tx.send(Err(GatewayError::AuditUnreadable.into())).await;
                    return;
                }
            };
            let Some(last) = batch.last().map(|e| e.index) else {
                return;
            };
            for stored in batch.into_iter().filter(|e| e.index < self.end) {
                // Expired bodies (retention) match nothing: only their leaf hashes remain.
                let cii_audit::store::Body::Readable(body) = stored.body else {
                    continue;
                };
                let entry = match cii_audit::entry::decode(&body) {
                    Ok(entry) if sent < self.limit && self.filter.matches(&entry) => entry,
                    Ok(_) => continue,
                    Err(e) => {
                        // Nothing in it can be matched or shown: the DPO learns it is there.
                        let report = pb::Entry {
                            index: stored.index,
                            undecodable: e.to_string(),
                            ..pb::Entry::default()
                        };
                        if tx.send(Ok(report)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                sent += 1;
                let answer = self.answer(stored.index, body, &entry).await.map_err(Status::from);
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return; // the caller went away, or the proof failed
                }
            }
            next = last + 1;
        }
    }

    /// An entry as answered, with its inclusion proof if asked for.
    async fn answer(&self, index: u64, body: Vec<u8>, entry: &cii_audit::Entry) -> Result<pb::Entry, GatewayError> {
        // Entries written before the epoch was recorded were all written in epoch 1.
        let written_in = entry.key_epoch.max(1);
        let (audit_person, audit_list) = (&entry.audit_pseudonym, &entry.list_audit_pseudonyms);
        let mut answer = pb::Entry {
            index,
            body,
            ..pb::Entry::default()
        };
        if let Some((pseudonyms, dpo, purpose)) = &self.rekey {
            // The entry's person first, then its list's, in one round.
            let person = cii_pseudonym::wire::pseudonym(audit_person).ok();
            let from = cii_pseudonym::shares::Source::audit(written_in);
            let wanted: Vec<_> = person
                .iter()
                .copied()
                .chain(audit_list.iter().filter_map(|p| cii_pseudonym::wire::pseudonym(p).ok()))
                .map(|p| (p, from.clone(), dpo.clone()))
                .collect();
            let mut rekeyed = pseudonyms.pseudonyms(wanted, purpose).await?.into_iter();
            if person.is_some() {
                answer.dpo_person = rekeyed
                    .next()
                    .as_ref()
                    .map(cii_pseudonym::wire::to_bytes)
                    .unwrap_or_default();
            }
            answer.dpo_list_persons = rekeyed.map(|p| cii_pseudonym::wire::to_bytes(&p)).collect();
        }
        if let Some((size, note)) = &self.proofs {
            let (_, _, proof) = self
                .log
                .inclusion_proof(index, *size)
                .await
                .map_err(GatewayError::from)?;
            answer.inclusion_proof = proof.iter().map(|h| h.to_vec()).collect();
            answer.checkpoint = note.clone();
        }
        Ok(answer)
    }
}
