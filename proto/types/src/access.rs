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
    /// The family of the rpc at `path`, if it is limited.
    pub fn of(path: &str) -> Option<Family> {
        let method = path.rsplit('/').next().unwrap_or_default();
        let service = path.split('/').nth(1).unwrap_or_default();
        if service == "cii.consent.v1.ConsentRegistry" || service == "cii.node.v1.NodeInbound" {
            return None; // the gateway's own calls, limited where they start
        }
        match method {
            "SubmitTransfer" | "Send" | "Request" => Some(Family::Transfers),
            "RecordConsent" | "RevokeConsent" | "DeclareRelationship" | "EndRelationship" => {
                Some(Family::ConsentChanges)
            }
            "Query" | "LookupPerson" | "QueryAudit" | "LookupPersonForDpo" | "Replay" => Some(Family::Queries),
            _ => None,
        }
    }

    /// The name in config files and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Transfers => "transfers",
            Family::ConsentChanges => "consent_changes",
            Family::Queries => "queries",
        }
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
pub const RPCS: &[(&str, Access)] = &[
    // The gateway, called by nodes on behalf of their users.
    ("/cii.gateway.v1.Gateway/WhoAmI", ANY_USER),
    ("/cii.gateway.v1.Gateway/Enrol", CASEWORK),
    ("/cii.gateway.v1.Gateway/SubmitTransfer", CASEWORK),
    ("/cii.gateway.v1.Gateway/GetTransfer", CASEWORK),
    ("/cii.gateway.v1.Gateway/ReleasePullAnswer", CASEWORK),
    // The discloser's weighing is a person's: a `system` account (automated IT) cannot review.
    ("/cii.gateway.v1.Gateway/AnswerReview", Access::Users(&[Caseworker])),
    ("/cii.gateway.v1.Gateway/AcknowledgeDeliveries", CASEWORK),
    ("/cii.gateway.v1.Gateway/ListObligations", OBLIGATIONS),
    ("/cii.gateway.v1.Gateway/FulfilObligation", CASEWORK),
    ("/cii.gateway.v1.Gateway/ListDeadLetters", Access::Users(&[Operator])),
    ("/cii.gateway.v1.Gateway/ResolveDeadLetter", Access::Users(&[Operator])),
    ("/cii.gateway.v1.Consents/RecordConsent", CASEWORK),
    ("/cii.gateway.v1.Consents/RevokeConsent", CASEWORK),
    ("/cii.gateway.v1.Consents/GetConsent", CASEWORK),
    ("/cii.gateway.v1.Consents/ListConsents", CASEWORK),
    ("/cii.gateway.v1.Consents/ListExpiringConsents", CASEWORK),
    ("/cii.gateway.v1.Consents/DeclareRelationship", CASEWORK),
    ("/cii.gateway.v1.Consents/EndRelationship", CASEWORK),
    (
        "/cii.policy.v1.Policy/GetRulebook",
        Access::Users(&[Jurist, Dpo, NetworkDpo]),
    ),
    ("/cii.policy.v1.Policy/Explain", Access::Users(&[Jurist])),
    ("/cii.policy.v1.Policy/Replay", Access::Users(&[Jurist])),
    ("/cii.audit.v1.Audit/GetCheckpoint", Access::Peer),
    ("/cii.audit.v1.Audit/GetInclusionProof", Access::Peer),
    ("/cii.audit.v1.Audit/GetConsistencyProof", Access::Peer),
    ("/cii.audit.v1.Audit/GetWitnessedInclusion", Access::Peer),
    ("/cii.audit.v1.Audit/Query", DPO),
    ("/cii.audit.v1.Audit/LookupPerson", DPO),
    ("/cii.audit.v1.Audit/ApplyRetention", Access::Users(&[Operator])),
    (
        "/cii.audit.v1.Audit/ShredPeriod",
        Access::Users(&[Operator, NetworkDpo]),
    ),
    // A node's API, called by its institution's IT systems.
    ("/cii.node.v1.Node/Status", ANY_USER),
    ("/cii.node.v1.Node/Enrol", CASEWORK),
    ("/cii.node.v1.Node/Send", CASEWORK),
    ("/cii.node.v1.Node/Request", CASEWORK),
    ("/cii.node.v1.Node/ListInbox", CASEWORK),
    ("/cii.node.v1.Node/Acknowledge", CASEWORK),
    ("/cii.node.v1.Node/GetTransfer", CASEWORK),
    ("/cii.node.v1.Node/ReleasePullAnswer", CASEWORK),
    ("/cii.node.v1.Node/ListReviews", CASEWORK),
    ("/cii.node.v1.Node/AnswerReview", Access::Users(&[Caseworker])),
    ("/cii.node.v1.Node/Publish", CASEWORK),
    ("/cii.node.v1.Node/ListObligations", OBLIGATIONS),
    ("/cii.node.v1.Node/FulfilObligation", CASEWORK),
    ("/cii.node.v1.Node/QueryAudit", DPO),
    ("/cii.node.v1.Node/LookupPersonForDpo", DPO),
    ("/cii.node.v1.Node/ApplyAuditRetention", Access::Users(&[Operator])),
    (
        "/cii.node.v1.Node/ShredAuditPeriod",
        Access::Users(&[Operator, NetworkDpo]),
    ),
    ("/cii.node.v1.Node/ListDeadLetters", Access::Users(&[Operator])),
    ("/cii.node.v1.Node/ResolveDeadLetter", Access::Users(&[Operator])),
    ("/cii.node.v1.Node/RecordConsent", CASEWORK),
    ("/cii.node.v1.Node/RevokeConsent", CASEWORK),
    ("/cii.node.v1.Node/GetConsent", CASEWORK),
    ("/cii.node.v1.Node/ListConsents", CASEWORK),
    ("/cii.node.v1.Node/ListExpiringConsents", CASEWORK),
    ("/cii.node.v1.Node/DeclareRelationship", CASEWORK),
    ("/cii.node.v1.Node/EndRelationship", CASEWORK),
    // A node's inbound API: the gateway only (its certificate, checked by TLS).
    ("/cii.node.v1.NodeInbound/Ping", Access::Peer),
    ("/cii.node.v1.NodeInbound/Deliver", Access::Peer),
    ("/cii.node.v1.NodeInbound/Provide", Access::Peer),
    ("/cii.node.v1.NodeInbound/OfferReview", Access::Peer),
    // A witness of the audit log (a node's inbound API, or an independent witness): the gateway only.
    ("/cii.witness.v1.Witness/AddCheckpoint", Access::Peer),
    // The consent registry: the gateway only (it names the acting user in each request).
    ("/cii.consent.v1.ConsentRegistry/RecordConsent", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/RevokeConsent", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/GetConsent", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/ListConsents", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/ListExpiring", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/Lookup", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/DeclareRelationship", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/EndRelationship", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/ListChanges", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/MarkUsed", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/ActivateChange", Access::Peer),
    ("/cii.consent.v1.ConsentRegistry/ListHeldChanges", Access::Peer),
];

/// The services every process also serves to anyone it admits.
const PUBLIC_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The row of the rpc at `path` (its `'static` path and access), if any.
pub fn rpc(path: &str) -> Option<(&'static str, Access)> {
    if let Some(public) = PUBLIC_SERVICES.iter().find(|p| path.starts_with(**p)) {
        return Some((public, Access::Public));
    }
    RPCS.iter().find(|(p, _)| *p == path).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for (path, _) in RPCS {
            assert!(seen.insert(path), "{path} twice");
            assert_eq!(path.matches('/').count(), 2, "{path}");
        }
    }

    #[test]
    fn an_unknown_path_has_no_row_and_health_is_public() {
        assert_eq!(rpc("/cii.node.v1.Node/Steal"), None);
        assert_eq!(rpc("/x"), None);
        assert_eq!(
            rpc("/grpc.health.v1.Health/Check").map(|(_, a)| a),
            Some(Access::Public)
        );
    }

    #[test]
    fn a_jurist_cannot_read_an_inbox_and_a_dpo_cannot_send() {
        let roles = |r: &[Role]| r.iter().copied().collect();
        let inbox = rpc("/cii.node.v1.Node/ListInbox").map(|(_, a)| a).unwrap();
        assert!(!inbox.admits(&roles(&[Jurist])));
        assert!(inbox.admits(&roles(&[Jurist, Caseworker])));
        let send = rpc("/cii.node.v1.Node/Send").map(|(_, a)| a).unwrap();
        assert!(!send.admits(&roles(&[Dpo, NetworkDpo, Operator])));
    }

    #[test]
    fn a_replay_is_a_query_and_only_a_person_reviews() {
        assert_eq!(Family::of("/cii.policy.v1.Policy/Replay"), Some(Family::Queries));
        let roles = |r: &[Role]| r.iter().copied().collect();
        let review = rpc("/cii.gateway.v1.Gateway/AnswerReview").map(|(_, a)| a).unwrap();
        assert!(review.admits(&roles(&[Caseworker])));
        assert!(
            !review.admits(&roles(&[System])),
            "the discloser's weighing is a person's"
        );
    }
}
