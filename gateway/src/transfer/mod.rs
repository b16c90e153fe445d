//! The transfer pipeline (`SubmitTransfer`) as typed stages, in the charter's
//! order. Authentication (mTLS and JWT) is done by the interceptor; each stage
//! then takes the previous stage's value and returns a named one:
//!
//! ```text
//! request ─check→ Checked ─consult→ Consulted ─decide→ Decided ─seal→ Sealed
//!         ─(entry)→ Logged ─deliver→ response (delivered, queued, or the pull's data)
//! ```
//!
//! A pull the rulebook leaves to its holder's review stops after `decide` (nothing
//! logged) and waits (`review`); the holder's answer runs the rest.
//!
//! Push and pull are one path: [`check::Direction`] says who discloses.
//! Denials are logged like permits.
//!
//! # Layout
//! - `check`: the request alone against the registry and the catalogue (pure; the fuzz target's entry).
//! - `decide`: consulted (transcryption, the registry's lookup) and decided (rulebook, one-off consents, obligations).
//! - `seal`: a permitted push's payload filtered, sealed to the recipient.
//! - `entry`: the audit entry, built in this one place.
//! - `log`: log before deliver (held record, durable entry, released record).
//! - `recovery`: the same transfer id again; held transfers completed after a crash.
//! - `pull`: the holder's answer to a permitted pull, filtered.
//! - `review`: pulls held for their holder's review, and the reviewer's answer.
//! - `undisclosed`: what a sender is told of a decision that turns on the recipient's
//!   relationship with the person (which it may not learn).
//! - `error`: [`TransferError`], each variant with its stable code.

mod check;
mod decide;
mod entry;
mod error;
mod log;
mod pull;
mod recovery;
pub use recovery::sweep_held;
mod review;
mod seal;
mod undisclosed;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use cii_kit::auth::Caller;
use cii_kit::clock::Clock;
use cii_kit::metrics::Metrics;
use cii_kit::registry::Live;
use cii_policy::Rulebook;
use cii_proto::consent::consent_registry_client::ConsentRegistryClient;
use cii_proto::gateway as pb;
use cii_types::exchange::Catalogue;
use cii_types::{TransferId, TransferState};
use tonic::transport::Channel;

use crate::delivery::Nodes;
use crate::store::Store;

pub(crate) use check::ciphertext;
pub use check::{Checked, PayloadCaps, check_request};
pub use decide::Decided;
pub use error::TransferError;
pub use log::Logged;
pub(crate) use log::receipt_to_wire;
pub(crate) use recovery::find_logged;
pub(crate) use recovery::recorded;
pub use seal::Sealed;

/// Everything the pipeline needs, wired once at start.
pub struct Parts {
    /// The members.
    pub registry: Live,
    /// The payload caps.
    pub payload_caps: PayloadCaps,
    /// How long a pull's sealed answer is kept for retries of the same request.
    pub pull_answer_keep: std::time::Duration,
    /// How long a pull waits for its holder's review before it is denied.
    pub review_timeout: std::time::Duration,
    /// The active rulebook.
    pub rulebook: Arc<Rulebook>,
    /// The exchange catalogue (field categories).
    pub catalogue: Arc<Catalogue>,
    /// The transcryptor.
    pub pseudonyms: crate::pseudonyms::Pseudonyms,
    /// The audit log's writer.
    pub audit: cii_audit::Log,
    /// The audit store, read to complete held transfers.
    pub audit_store: cii_audit::Store,
    /// The consent registry.
    pub consent: ConsentRegistryClient<Channel>,
    /// The operational store.
    pub store: Store,
    /// Channels to the nodes and the outbox's wake-up.
    pub nodes: Nodes,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Decision counts.
    pub metrics: Metrics,
    /// Per sender: pushes whose decision turns on the recipient's relationship with the person.
    pub relationship_pushes: cii_kit::rate_limit::RateLimit,
}

/// The transfer pipeline.
pub struct Transfers {
    registry: Live,
    payload_caps: PayloadCaps,
    pull_answer_keep: std::time::Duration,
    review_timeout: std::time::Duration,
    rulebook: Arc<Rulebook>,
    catalogue: Arc<Catalogue>,
    pseudonyms: crate::pseudonyms::Pseudonyms,
    audit: cii_audit::Log,
    audit_store: cii_audit::Store,
    consent: ConsentRegistryClient<Channel>,
    store: Store,
    nodes: Nodes,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    relationship_pushes: cii_kit::rate_limit::RateLimit,
    /// The facts only the reference directory knows, which a sender is never told (`undisclosed`).
    hidden_facts: Vec<usize>,
    /// (caller, transfer id) being decided now: a concurrent duplicate is refused, retryably.
    in_flight: Mutex<HashSet<(String, TransferId)>>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transfers(..)")
    }
}

impl Transfers {
    /// The pipeline over `parts`.
    pub fn new(parts: Parts) -> Transfers {
        let Parts {
            registry,
            payload_caps,
            pull_answer_keep,
            review_timeout,
            rulebook,
            catalogue,
            pseudonyms,
            audit,
            audit_store,
            consent,
            store,
            nodes,
            clock,
            metrics,
            relationship_pushes,
        } = parts;
        Transfers {
            hidden_facts: rulebook.directory_facts(),
            registry,
            payload_caps,
            pull_answer_keep,
            review_timeout,
            rulebook,
            catalogue,
            pseudonyms,
            audit,
            audit_store,
            consent,
            store,
            nodes,
            clock,
            metrics,
            relationship_pushes,
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Submits a transfer: the whole pipeline, stage by stage.
    pub async fn submit(
        &self,
        caller: &Caller,
        request: &pb::TransferRequest,
    ) -> Result<pb::TransferResponse, TransferError> {
        // One snapshot of the registry for the whole transfer.
        let registry = self.registry.current();
        self.payload_caps.check(request)?;
        let mut checked = check_request(&registry, &self.catalogue, &caller.institution.id, request)?;
        let _slot = self.claim(caller, &checked.id)?;
        if let Some(done) = self.replay(caller, &checked).await? {
            return Ok(done);
        }
        match self.pending(caller, &checked).await? {
            review::Held::No => {}
            review::Held::Waiting(response) => return Ok(*response),
            review::Held::Reviewed(review) => checked.review = Some(review),
        }
        cii_audit::entry::check(&entry::request_part(caller, &checked)).map_err(cii_audit::LogError::from)?;
        let consulted = self.consult(caller, checked).await?;
        let decided = self.decide(caller, consulted).await?;
        if decided.awaits_review {
            return self.hold_for_review(caller, decided.checked()).await;
        }
        let sealed = self.seal(caller, &decided).await?;
        let mut entry = entry::transfer_entry(caller, &decided, &sealed);
        // The audit context the entry's persons are encrypted for (a rotation changes it).
        entry.key_epoch = self.pseudonyms.epoch();
        let logged = self.log(caller, &decided, sealed, entry).await?;
        if decided.checked().review.is_some() {
            // Decided and recorded: the requester's next call finds the transfer's record.
            let id = decided.checked().id.as_str();
            self.store.review_concluded(caller.institution.id.as_str(), id).await?;
        }
        self.deliver(caller, &decided, logged).await
    }

    /// Stage 6: a permitted push goes out at once unless older deliveries to the same
    /// recipient wait (the outbox keeps order); a permitted pull asks its holder.
    async fn deliver(
        &self,
        caller: &Caller,
        decided: &Decided<'_>,
        logged: Logged,
    ) -> Result<pb::TransferResponse, TransferError> {
        let Logged { mut response, permit } = logged;
        if permit {
            self.deliver_permit(caller, decided, &mut response).await?;
        }
        // On a checkpoint the witnesses cosigned, if one covers the entry by now: the sender's
        // node checks it without asking back.
        if let Some(receipt) = response.receipt.as_mut() {
            self.nodes.witnessed_receipt(receipt).await;
        }
        Ok(response)
    }

    async fn deliver_permit(
        &self,
        caller: &Caller,
        decided: &Decided<'_>,
        response: &mut pb::TransferResponse,
    ) -> Result<(), TransferError> {
        let checked = decided.checked();
        if checked.is_pull() {
            self.provide(caller, checked, &decided.released, response).await?;
        } else if decided.disclosure != cii_policy::decide::Disclosure::Decided {
            // Not delivered while the sender waits: the answer's timing would tell.
            self.nodes.wake.notify_one();
        } else if self
            .nodes
            .deliver_now(
                caller.institution.id.as_str(),
                checked.id.as_str(),
                checked.counterparty.id.as_str(),
            )
            .await
        {
            response.state = TransferState::Delivered.code();
        }
        Ok(())
    }

    fn claim(&self, caller: &Caller, id: &TransferId) -> Result<Slot<'_>, TransferError> {
        self.claim_key(caller.institution.id.to_string(), id.clone())
    }

    /// The in-flight slot of (caller institution, transfer id); `InProgress` if taken.
    fn claim_key(&self, caller: String, id: TransferId) -> Result<Slot<'_>, TransferError> {
        let key = (caller, id);
        let mut set = self.in_flight.lock().map_err(|_| TransferError::Poisoned)?;
        if !set.insert(key.clone()) {
            return Err(TransferError::InProgress);
        }
        Ok(Slot {
            set: &self.in_flight,
            key,
        })
    }
}

/// Frees the in-flight slot when the call ends, however it ends.
struct Slot<'a> {
    set: &'a Mutex<HashSet<(String, TransferId)>>,
    key: (String, TransferId),
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}
