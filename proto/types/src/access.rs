//! Who may call what: the one table of rpc → roles, checked at node and gateway
//! before any handler runs (before the request is even decoded).
//!
//! A row is either `Peer` (the calling process's certificate is enough: proofs
//! and checkpoints are hashes; the gateway's calls into nodes and into the
//! consent registry carry no user) or `Users(roles)` (an acting user holding at
//! least one of the roles). An rpc absent from the table is refused to
//! everybody, so a new rpc cannot go live without a row (the tidy test walks
//! the services' descriptors). docs/security.md prints the table.

use crate::Role;

/// The rpc families that are rate-limited per institution, before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Sending and requesting data.
    Transfers,
    /// Recording and revoking consents, declaring and ending relationships.
    ConsentChanges,
    /// Reading the audit log.
    Queries,
}

impl Family {
    /// The name in config files and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Transfers => "transfers",
            Family::ConsentChanges => "consent_changes",
            Family::Queries => "queries",
        }
    }
}

/// One row of the access table: an rpc, who may call it, and the rate limit it counts
/// against (none for the gateway's own calls, limited where they start, and for reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The gRPC path.
    pub path: &'static str,
    /// What calling it needs.
    pub access: Access,
    /// The per-institution limit it takes a token of.
    pub family: Option<Family>,
}

const fn row(path: &'static str, access: Access) -> Row {
    Row {
        path,
        access,
        family: None,
    }
}

const fn limited(path: &'static str, access: Access, family: Family) -> Row {
    Row {
        path,
        access,
        family: Some(family),
    }
}

/// What a call to an rpc needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health checks and reflection: the contract is public within the network.
    Public,
    /// An admitted certificate, no acting user.
    Peer,
    /// An acting user holding at least one of these roles.
    Users(&'static [Role]),
}

impl Access {
    /// Whether a user holding `roles` may call.
    pub fn admits(self, roles: &std::collections::BTreeSet<Role>) -> bool {
        match self {
            Access::Public | Access::Peer => true,
            Access::Users(needed) => needed.iter().any(|r| roles.contains(r)),
        }
    }
}

use Role::{Caseworker, Dpo, Jurist, NetworkDpo, Operator, System};

const CASEWORK: Access = Access::Users(&[Caseworker, System]);
const DPO: Access = Access::Users(&[Dpo, NetworkDpo]);
const ANY_USER: Access = Access::Users(&Role::ALL);
/// Open obligations: caseworkers fulfil them, DPOs report on them (`cii audit usage-report`).
const OBLIGATIONS: Access = Access::Users(&[Caseworker, System, Dpo, NetworkDpo]);

/// Every rpc of the network's services (gRPC path) and what calling it needs.
pub const RPCS: &[Row] = &[
    // The gateway, called by nodes on behalf of their users.
    row("/cii.gateway.v1.Gateway/WhoAmI", ANY_USER),
    row("/cii.gateway.v1.Gateway/Enrol", CASEWORK),
    limited("/cii.gateway.v1.Gateway/SubmitTransfer", CASEWORK, Family::Transfers),
    row("/cii.gateway.v1.Gateway/GetTransfer", CASEWORK),
    row("/cii.gateway.v1.Gateway/ReleasePullAnswer", CASEWORK),
    // The discloser's weighing is a person's: a `system` account (automated IT) cannot review.
    row("/cii.gateway.v1.Gateway/AnswerReview", Access::Users(&[Caseworker])),
    row("/cii.gateway.v1.Gateway/AcknowledgeDeliveries", CASEWORK),
    row("/cii.gateway.v1.Gateway/ListObligations", OBLIGATIONS),
    row("/cii.gateway.v1.Gateway/FulfilObligation", CASEWORK),
    row("/cii.gateway.v1.Gateway/ListDeadLetters", Access::Users(&[Operator])),
    row("/cii.gateway.v1.Gateway/ResolveDeadLetter", Access::Users(&[Operator])),
    limited(
        "/cii.gateway.v1.Consents/RecordConsent",
        CASEWORK,
        Family::ConsentChanges,
    ),
    limited(
        "/cii.gateway.v1.Consents/RevokeConsent",
        CASEWORK,
        Family::ConsentChanges,
    ),
    row("/cii.gateway.v1.Consents/GetConsent", CASEWORK),
    row("/cii.gateway.v1.Consents/ListConsents", CASEWORK),
    row("/cii.gateway.v1.Consents/ListExpiringConsents", CASEWORK),
    limited(
        "/cii.gateway.v1.Consents/DeclareRelationship",
        CASEWORK,
        Family::ConsentChanges,
    ),
    limited(
        "/cii.gateway.v1.Consents/EndRelationship",
        CASEWORK,
        Family::ConsentChanges,
    ),
    row(
        "/cii.policy.v1.Policy/GetRulebook",
        Access::Users(&[Jurist, Dpo, NetworkDpo]),
    ),
    row("/cii.policy.v1.Policy/Explain", Access::Users(&[Jurist])),
    limited(
        "/cii.policy.v1.Policy/Replay",
        Access::Users(&[Jurist]),
        Family::Queries,
    ),
    row("/cii.audit.v1.Audit/GetCheckpoint", Access::Peer),
    row("/cii.audit.v1.Audit/GetInclusionProof", Access::Peer),
    row("/cii.audit.v1.Audit/GetConsistencyProof", Access::Peer),
    row("/cii.audit.v1.Audit/GetWitnessedInclusion", Access::Peer),
    limited("/cii.audit.v1.Audit/Query", DPO, Family::Queries),
    limited("/cii.audit.v1.Audit/LookupPerson", DPO, Family::Queries),
    row("/cii.audit.v1.Audit/ApplyRetention", Access::Users(&[Operator])),
    row(
        "/cii.audit.v1.Audit/ShredPeriod",
        Access::Users(&[Operator, NetworkDpo]),
    ),
    // A node's API, called by its institution's IT systems.
    row("/cii.node.v1.Node/Status", ANY_USER),
    row("/cii.node.v1.Node/Enrol", CASEWORK),
    limited("/cii.node.v1.Node/Send", CASEWORK, Family::Transfers),
    limited("/cii.node.v1.Node/Request", CASEWORK, Family::Transfers),
    row("/cii.node.v1.Node/ListInbox", CASEWORK),
    row("/cii.node.v1.Node/Acknowledge", CASEWORK),
    row("/cii.node.v1.Node/GetTransfer", CASEWORK),
    row("/cii.node.v1.Node/ReleasePullAnswer", CASEWORK),
    row("/cii.node.v1.Node/ListReviews", CASEWORK),
    row("/cii.node.v1.Node/AnswerReview", Access::Users(&[Caseworker])),
    row("/cii.node.v1.Node/Publish", CASEWORK),
    row("/cii.node.v1.Node/ListObligations", OBLIGATIONS),
    row("/cii.node.v1.Node/FulfilObligation", CASEWORK),
    limited("/cii.node.v1.Node/QueryAudit", DPO, Family::Queries),
    limited("/cii.node.v1.Node/LookupPersonForDpo", DPO, Family::Queries),
    row("/cii.node.v1.Node/ApplyAuditRetention", Access::Users(&[Operator])),
    row(
        "/cii.node.v1.Node/ShredAuditPeriod",
        Access::Users(&[Operator, NetworkDpo]),
    ),
    row("/cii.node.v1.Node/ListDeadLetters", Access::Users(&[Operator])),
    row("/cii.node.v1.Node/ResolveDeadLetter", Access::Users(&[Operator])),
    limited("/cii.node.v1.Node/RecordConsent", CASEWORK, Family::ConsentChanges),
    limited("/cii.node.v1.Node/RevokeConsent", CASEWORK, Family::ConsentChanges),
    row("/cii.node.v1.Node/GetConsent", CASEWORK),
    row("/cii.node.v1.Node/ListConsents", CASEWORK),
    row("/cii.node.v1.Node/ListExpiringConsents", CASEWORK),
    limited(
        "/cii.node.v1.Node/DeclareRelationship",
        CASEWORK,
        Family::ConsentChanges,
    ),
    limited("/cii.node.v1.Node/EndRelationship", CASEWORK, Family::ConsentChanges),
    // A node's inbound API: the gateway only (its certificate, checked by TLS).
    row("/cii.node.v1.NodeInbound/Ping", Access::Peer),
    row("/cii.node.v1.NodeInbound/Deliver", Access::Peer),
    row("/cii.node.v1.NodeInbound/DeliverBatch", Access::Peer),
    row("/cii.node.v1.NodeInbound/Provide", Access::Peer),
    row("/cii.node.v1.NodeInbound/OfferReview", Access::Peer),
    // A witness of the audit log (a node's inbound API, or an independent witness): the gateway only.
    row("/cii.witness.v1.Witness/AddCheckpoint", Access::Peer),
    // The second transcryptor (an independent witness's): the gateway only.
    row("/cii.transcryptor.v1.Transcryptor/Transcrypt", Access::Peer),
    // The consent registry: the gateway only (it names the acting user in each request).
    row("/cii.consent.v1.ConsentRegistry/RecordConsent", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/RevokeConsent", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/GetConsent", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/ListConsents", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/ListExpiring", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/Lookup", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/DeclareRelationship", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/EndRelationship", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/ListChanges", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/MarkUsed", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/ActivateChange", Access::Peer),
    row("/cii.consent.v1.ConsentRegistry/ListHeldChanges", Access::Peer),
];

/// The services every process also serves to anyone it admits.
const PUBLIC_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The row of the rpc at `path`, if any (health and reflection: one public row per service).
pub fn rpc(path: &str) -> Option<Row> {
    if let Some(public) = PUBLIC_SERVICES.iter().find(|p| path.starts_with(**p)) {
        return Some(row(public, Access::Public));
    }
    RPCS.iter().find(|r| r.path == path).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for Row { path, .. } in RPCS {
            assert!(seen.insert(path), "{path} twice");
            assert_eq!(path.matches('/').count(), 2, "{path}");
        }
    }

    #[test]
    fn an_unknown_path_has_no_row_and_health_is_public() {
        assert_eq!(rpc("/cii.node.v1.Node/Steal"), None);
        assert_eq!(rpc("/x"), None);
        assert_eq!(
            rpc("/grpc.health.v1.Health/Check").map(|r| r.access),
            Some(Access::Public)
        );
    }

    #[test]
    fn a_jurist_cannot_read_an_inbox_and_a_dpo_cannot_send() {
        let roles = |r: &[Role]| r.iter().copied().collect();
        let inbox = rpc("/cii.node.v1.Node/ListInbox").map(|r| r.access).unwrap();
        assert!(!inbox.admits(&roles(&[Jurist])));
        assert!(inbox.admits(&roles(&[Jurist, Caseworker])));
        let send = rpc("/cii.node.v1.Node/Send").map(|r| r.access).unwrap();
        assert!(!send.admits(&roles(&[Dpo, NetworkDpo, Operator])));
    }

    #[test]
    fn a_replay_is_a_query_and_only_a_person_reviews() {
        assert_eq!(
            rpc("/cii.policy.v1.Policy/Replay").and_then(|r| r.family),
            Some(Family::Queries)
        );
        let roles = |r: &[Role]| r.iter().copied().collect();
        let review = rpc("/cii.gateway.v1.Gateway/AnswerReview").map(|r| r.access).unwrap();
        assert!(review.admits(&roles(&[Caseworker])));
        assert!(
            !review.admits(&roles(&[System])),
            "the discloser's weighing is a person's"
        );
    }
}
