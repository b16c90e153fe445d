//! `cii transcryptor compare`: the second transcryptor's log against the gateway's audit log.
//! Every request the transcryptor served must be one the gateway logged, and every logged
//! event that needed the transcryptor must be in its log. Pure: the caller reads the entries.
//!
//! What matches what (by purpose):
//! - `enrolment`, `consent`, `dpo_lookup`: one request per ENROLMENT; CONSENT_RECORDED,
//!   CONSENT_REVOKED, RELATIONSHIP_DECLARED/ENDED; DPO_LOOKUP entry of that institution
//!   (counted: each is one event).
//! - `transfer`: a transfer the gateway logged (TRANSFER_PERMITTED, TRANSFER_DENIED,
//!   PULL_HELD_FOR_REVIEW) with a person, by its transfer id and its two institutions; the
//!   stages of one transfer are several requests (compared as a set).
//! - `dpo_query`: an institution DPO's query rekeys the persons it finds, by the index of its
//!   AUDIT_QUERY entry; a query that found no person asked nothing (checked one way only).
//! - `consent_read` (an institution reading a person's consents): not in the gateway's log by
//!   design; not compared.

use std::collections::BTreeMap;

use cii_audit::{Entry, EntryKind};

/// One side's events: key → how many.
type Events = BTreeMap<Key, u64>;

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// The purpose (`enrolment`, `transfer`, …).
    pub purpose: String,
    /// The institutions (a transfer's two, in order; else the one).
    pub institutions: Vec<String>,
    /// The transfer id, or the query's entry index; empty otherwise.
    pub reference: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.purpose, self.institutions.join(" ↔ "))?;
        if !self.reference.is_empty() {
            write!(f, " {}", self.reference)?;
        }
        Ok(())
    }
}

/// A difference between the two logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The transcryptor served it; the gateway logged no such event (`count` more times).
    NotLogged {
        /// The event.
        key: Key,
        /// How many more.
        count: u64,
    },
    /// The gateway logged it; the transcryptor served no such request (`count` more times).
    NotTranscribed {
        /// The event.
        key: Key,
        /// How many more.
        count: u64,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::NotLogged { key, count } => {
                write!(f, "transcribed, not in the gateway's log: {key} ({count}×)")
            }
            Difference::NotTranscribed { key, count } => {
                write!(f, "in the gateway's log, not transcribed: {key} ({count}×)")
            }
        }
    }
}

/// Whether a purpose is compared as a set (several requests per event).
fn as_set(purpose: &str) -> bool {
    matches!(purpose, "transfer" | "dpo_query")
}

fn key(purpose: &str, mut institutions: Vec<String>, reference: &str) -> Key {
    institutions.retain(|i| !i.is_empty());
    if purpose == "transfer" {
        institutions.sort();
    }
    Key {
        purpose: purpose.to_owned(),
        institutions,
        reference: reference.to_owned(),
    }
}

/// The events of the transcryptor's log.
fn transcribed(entries: &[Entry]) -> Events {
    let mut events = Events::new();
    for e in entries.iter().filter(|e| e.kind == EntryKind::Transcribed as i32) {
        let purpose = e
            .detail
            .split_whitespace()
            .find_map(|w| w.strip_prefix("purpose="))
            .unwrap_or_default();
        let k = key(purpose, vec![e.sender.clone(), e.recipient.clone()], &e.transfer_id);
        *events.entry(k).or_default() += 1;
    }
    events
}

/// The events of the gateway's log that needed the transcryptor.
fn logged(entries: &[Entry]) -> (Events, Events) {
    let (mut events, mut maybe) = (Events::new(), Events::new());
    for e in entries {
        // A person transcrypted, or (a permitted push) a seal key rekeyed.
        let person =
            !e.audit_pseudonym.is_empty() || !e.list_audit_pseudonyms.is_empty() || !e.sealed_sha256.is_empty();
        let kind = EntryKind::try_from(e.kind).unwrap_or(EntryKind::Unspecified);
        let k = match kind {
            EntryKind::Enrolment => key("enrolment", vec![e.sender.clone()], ""),
            EntryKind::ConsentRecorded
            | EntryKind::ConsentRevoked
            | EntryKind::RelationshipDeclared
            | EntryKind::RelationshipEnded => key("consent", vec![e.sender.clone()], ""),
            EntryKind::DpoLookup => key("dpo_lookup", vec![e.sender.clone()], ""),
            EntryKind::TransferPermitted | EntryKind::TransferDenied | EntryKind::PullHeldForReview if person => {
                key("transfer", vec![e.sender.clone(), e.recipient.clone()], &e.transfer_id)
            }
            EntryKind::AuditQuery => {
                *maybe
                    .entry(key("dpo_query", vec![e.sender.clone()], &e.index.to_string()))
                    .or_default() += 1;
                continue;
            }
            _ => continue,
        };
        *events.entry(k).or_default() += 1;
    }
    (events, maybe)
}

/// Purposes the gateway's log does not record by design (a consent read): counted, not compared.
pub const NOT_LOGGED_BY_DESIGN: &[&str] = &["consent_read"];

/// Every difference between the transcryptor's log and the gateway's, in key order.
pub fn compare(transcryptor: &[Entry], gateway: &[Entry]) -> Vec<Difference> {
    let mut served = transcribed(transcryptor);
    served.retain(|k, _| !NOT_LOGGED_BY_DESIGN.contains(&k.purpose.as_str()));
    let (logged, queries) = logged(gateway);
    let mut differences = Vec::new();
    for (k, &n) in &served {
        let there = logged.get(k).or_else(|| queries.get(k)).copied().unwrap_or(0);
        let count = if as_set(&k.purpose) {
            u64::from(there == 0)
        } else {
            n.saturating_sub(there)
        };
        if count > 0 {
            differences.push(Difference::NotLogged { key: k.clone(), count });
        }
    }
    for (k, &n) in &logged {
        let there = served.get(k).copied().unwrap_or(0);
        let count = if as_set(&k.purpose) {
            u64::from(there == 0)
        } else {
            n.saturating_sub(there)
        };
        if count > 0 {
            differences.push(Difference::NotTranscribed { key: k.clone(), count });
        }
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(purpose: &str, institution: &str, counterparty: &str, reference: &str) -> Entry {
        Entry {
            kind: EntryKind::Transcribed as i32,
            sender: institution.into(),
            recipient: counterparty.into(),
            transfer_id: reference.into(),
            detail: format!("purpose={purpose} operations=2"),
            ..Entry::default()
        }
    }

    fn logged(kind: EntryKind, sender: &str, recipient: &str, transfer_id: &str) -> Entry {
        Entry {
            kind: kind as i32,
            sender: sender.into(),
            recipient: recipient.into(),
            transfer_id: transfer_id.into(),
            audit_pseudonym: vec![1; 64],
            ..Entry::default()
        }
    }

    #[test]
    fn matching_logs_have_no_difference_and_each_kind_of_mismatch_is_named() {
        let gateway = vec![
            logged(EntryKind::Enrolment, "ORP-VS", "", ""),
            logged(EntryKind::Enrolment, "ORP-VS", "", ""),
            // A pull: the holder is the entry's sender, the caller its recipient.
            logged(EntryKind::TransferPermitted, "AI-VS", "ORP-VS", "p-1"),
            logged(EntryKind::ConsentRecorded, "AS-VS", "", ""),
            Entry {
                kind: EntryKind::AuditQuery as i32,
                index: 9,
                sender: "AI-VS".into(),
                ..Entry::default()
            },
            // Anonymised statistics name no person; denied, nothing was sealed: nothing to transcribe.
            Entry {
                audit_pseudonym: Vec::new(),
                ..logged(EntryKind::TransferDenied, "AS-VS", "OFS", "stats-1")
            },
            // Permitted, the seal key was rekeyed for the recipient.
            Entry {
                audit_pseudonym: Vec::new(),
                sealed_sha256: vec![2; 32],
                ..logged(EntryKind::TransferPermitted, "AS-VS", "OFS", "stats-2")
            },
        ];
        let transcryptor = vec![
            served("enrolment", "ORP-VS", "", ""),
            served("enrolment", "ORP-VS", "", ""),
            served("transfer", "ORP-VS", "AI-VS", "p-1"),
            served("transfer", "ORP-VS", "AI-VS", "p-1"),
            served("consent", "AS-VS", "", ""),
            served("transfer", "AS-VS", "OFS", "stats-2"),
        ];
        assert_eq!(compare(&transcryptor, &gateway), Vec::new());
        let mut more = transcryptor.clone();
        more.push(served("enrolment", "ORP-VS", "", ""));
        more.push(served("transfer", "ORP-VS", "SUVA", "x-1"));
        more.push(served("dpo_query", "AI-VS", "", "9"));
        more.push(served("consent_read", "AS-VS", "", ""));
        let found = compare(&more, &gateway);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|d| matches!(d, Difference::NotLogged { .. })));
        assert!(
            found.iter().any(|d| d.to_string().contains("enrolment ORP-VS (1×)")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|d| d.to_string().contains("transfer ORP-VS ↔ SUVA x-1")),
            "{found:?}"
        );
        let fewer = &transcryptor[1..];
        let found = compare(fewer, &gateway);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .to_string()
                .starts_with("in the gateway's log, not transcribed: enrolment ORP-VS")
        );
    }
}
