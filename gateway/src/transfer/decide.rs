//! Stages 2 and 3, consulted and decided: the person transcrypted into the
//! audit context and the registry's domain, the registry asked for consents
//! and the directory, then the rulebook's decision — a one-off consent it
//! relies on marked used at the registry first — and the obligations it
//! creates, each with its id, owner and due date.

use std::collections::BTreeSet;

use cii_kit::auth::Caller;
use cii_kit::registry::Institution;
use cii_policy::decide::{self, ConsentFound, Decision, Disclosure, Facts, Party as PolicyParty};
use cii_policy::vocab::{Attester, Builtin};
use cii_proto::common as common_pb;
use cii_proto::consent as registry_pb;
use cii_pseudonym::EncryptedPseudonym;
use cii_pseudonym::names::Party;
use prost::Message;
use tonic::Code;

use super::review::Verdict;
use super::{Checked, TransferError, Transfers};
use crate::store::ObligationRecord;
use cii_policy::decide::ReasonCode;

/// Stage 2: what the network knows about the transfer besides the request.
#[derive(Debug)]
pub struct Consulted<'r> {
    pub(super) checked: Checked<'r>,
    /// The institution that discloses (the caller for a push, the holder for a pull).
    pub(super) from: &'r Institution,
    /// The institution that receives.
    pub(super) to: &'r Institution,
    pub(super) now: time::OffsetDateTime,
    /// The person for the DPO's audit context.
    pub(super) audit_person: Option<EncryptedPseudonym>,
    /// A list's persons for the DPO's audit context.
    pub(super) audit_list: Vec<EncryptedPseudonym>,
    /// The registry's answer: consents and the directory.
    pub(super) lookup: registry_pb::LookupResponse,
    /// The facts the caller attested, resolved against the rulebook.
    pub(super) facts: Facts,
}

/// Stage 3: the decision and what it creates.
#[derive(Debug)]
pub struct Decided<'r> {
    pub(super) consulted: Consulted<'r>,
    pub(super) decision: Decision,
    /// The consents the decision relied on (`id@version`).
    pub(super) consents: Vec<ConsentFound>,
    /// The categories released, by id.
    pub(super) released: BTreeSet<String>,
    /// The decision's wire form, obligations with their ids and due dates.
    pub(super) wire: common_pb::Decision,
    /// The obligations to track.
    pub(super) obligations: Vec<ObligationRecord>,
    /// A pull no automatic basis carries while some basis waits for the holder's review:
    /// not decided, held for the review.
    pub(super) awaits_review: bool,
    /// The network facts that held (directory capacities), for the entry.
    pub(super) network_facts: Vec<String>,
    /// The consents found, as the decision saw them, for the entry.
    pub(super) consents_found: Vec<String>,
    /// What the sender may be told (a push whose decision turns on the directory: not all).
    pub(super) disclosure: Disclosure,
}

impl Decided<'_> {
    /// The checked request.
    pub(super) fn checked(&self) -> &Checked<'_> {
        &self.consulted.checked
    }
}

impl Transfers {
    /// Stage 2: transcryption into the audit context and the registry's domain,
    /// and the registry's lookup.
    pub(super) async fn consult<'r>(
        &self,
        caller: &'r Caller,
        checked: Checked<'r>,
    ) -> Result<Consulted<'r>, TransferError> {
        let now = self.clock.now();
        // Refused before anything is asked of the registry: a fact the caller may not attest.
        let facts = self.attested_facts(&checked)?;
        let from = cii_pseudonym::shares::Source::node(Some(Party::Institution(caller.institution.id.clone())));
        // One round: the person into the audit context and the registry's domain, then the list's.
        let mut wanted = Vec::with_capacity(2 + checked.list.len());
        if let Some(p) = &checked.person {
            wanted.push((*p, from.clone(), Party::Audit));
            wanted.push((*p, from.clone(), Party::Registry));
        }
        wanted.extend(checked.list.iter().map(|p| (*p, from.clone(), Party::Audit)));
        let mut translated = self
            .pseudonyms
            .pseudonyms(wanted, &checked.purpose(caller))
            .await?
            .into_iter();
        let (audit_person, registry_person) = if checked.person.is_some() {
            (translated.next(), translated.next())
        } else {
            (None, None)
        };
        let audit_list = translated.collect();
        // Who discloses and who receives: a pull discloses from the holder to the caller.
        let (from, to) = if checked.is_pull() {
            (checked.counterparty, &caller.institution)
        } else {
            (&caller.institution, checked.counterparty)
        };
        let lookup = match registry_person {
            // No person, no consent and no relationship to look up.
            None => registry_pb::LookupResponse::default(),
            Some(person) => self.lookup(&checked, caller, from, to, &person, now).await?,
        };
        Ok(Consulted {
            checked,
            from,
            to,
            now,
            audit_person,
            audit_list,
            lookup,
            facts,
        })
    }

    /// The facts the caller attests, each declared by the rulebook and attestable by the
    /// caller in this direction: `sender` facts always; `discloser` facts only when the
    /// caller discloses (a push); `recipient` facts only when it receives (a pull);
    /// `network` facts never. The written request's text sets `written_request`.
    fn attested_facts(&self, checked: &Checked<'_>) -> Result<Facts, TransferError> {
        let rb = &self.rulebook;
        let mut facts = Facts::default();
        for id in &checked.attested {
            let index = rb
                .fact_index(id)
                .ok_or_else(|| TransferError::FactUnknown(id.clone()))?;
            let attester = rb.facts.get(index).map_or(Attester::Network, |f| f.attested_by);
            let refused = |why| TransferError::FactNotAssertable {
                fact: id.clone(),
                attester: attester.as_str(),
                why,
            };
            match (attester, checked.is_pull()) {
                (Attester::Sender, _) | (Attester::Discloser, false) | (Attester::Recipient, true) => {}
                (Attester::Discloser, true) => {
                    return Err(refused(
                        "the institution that holds the data weighs it; in a pull only the holder's caseworker attests it",
                    ));
                }
                (Attester::Recipient, false) => {
                    return Err(refused("only the receiving institution attests it, in a pull"));
                }
                (Attester::Network, _) => {
                    return Err(refused(
                        "the network establishes it (reference directory, registry, rulebook or the written request's text)",
                    ));
                }
            }
            facts.set(index, true);
        }
        // The holder's reviewer attests, as the discloser, only what the discloser weighs.
        for id in checked.review.iter().flat_map(|r| r.facts()) {
            let index = rb
                .fact_index(id)
                .ok_or_else(|| TransferError::FactUnknown(id.clone()))?;
            let attester = rb.facts.get(index).map_or(Attester::Network, |f| f.attested_by);
            if attester != Attester::Discloser {
                return Err(TransferError::FactNotAssertable {
                    fact: id.clone(),
                    attester: attester.as_str(),
                    why: "the holder's reviewer attests only the facts the discloser weighs",
                });
            }
            facts.set(index, true);
        }
        // The text is sealed for the counterparty, whose node checks it against this hash
        // and refuses a blank one; the gateway sees only that one was sealed.
        if !checked.written_request_sha256.is_empty()
            && let Some(i) = rb.fact_index("written_request")
        {
            facts.set(i, true);
        }
        Ok(facts)
    }

    async fn lookup(
        &self,
        checked: &Checked<'_>,
        caller: &Caller,
        from: &Institution,
        to: &Institution,
        person: &EncryptedPseudonym,
        now: time::OffsetDateTime,
    ) -> Result<registry_pb::LookupResponse, TransferError> {
        let request = registry_pb::LookupRequest {
            person: Some(common_pb::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(person),
            }),
            sender: from.id.to_string(),
            recipient: to.id.to_string(),
            categories: checked.categories.clone(),
            purpose: checked.purpose.clone(),
            at: Some(cii_types::time::timestamp(now)),
            transfer: cii_types::transfer::reference(&caller.institution.id, &checked.id),
        };
        match self.consent.clone().lookup(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "consent registry lookup failed");
                Err(TransferError::ConsentRegistryUnavailable(
                    "the consent registry could not be asked; nothing was decided, retry later",
                ))
            }
        }
    }

    /// Stage 3: the rulebook's decision; one-off consents it relies on are used up.
    pub(super) async fn decide<'r>(
        &self,
        caller: &Caller,
        consulted: Consulted<'r>,
    ) -> Result<Decided<'r>, TransferError> {
        let mut transfer = self.policy_transfer(&consulted);
        let reference = cii_types::transfer::reference(&caller.institution.id, &consulted.checked.id);
        let refused = consulted.checked.review.as_ref().and_then(|r| match r.verdict {
            Verdict::Approved(_) => None,
            Verdict::Refused(_) => Some(ReasonCode::ReviewRefused),
            Verdict::TimedOut => Some(ReasonCode::ReviewTimeout),
        });
        let mut disclosure = Disclosure::Decided;
        let decision = match refused {
            Some(code) => {
                Decision::by_review(&self.rulebook, &transfer.categories, code).map_err(TransferError::Undecidable)?
            }
            None => {
                // Before a one-off consent is used: a probe refused here spends nothing.
                disclosure = self.disclosure(caller, &consulted, &transfer)?;
                self.decide_consuming(&mut transfer, &consulted.lookup, &reference)
                    .await?
            }
        };
        let awaits_review = consulted.checked.review.is_none() && decision.awaits_review();
        let network_facts = self
            .rulebook
            .facts
            .iter()
            .enumerate()
            .filter(|(i, f)| f.attested_by == Attester::Network && transfer.facts.get(*i))
            .map(|(_, f)| f.id.clone())
            .collect();
        let consents_found = transfer.consents.iter().map(consent_found).collect();
        let released: BTreeSet<String> = decision
            .released()
            .iter()
            .filter_map(|i| self.rulebook.categories.get(*i).map(|c| c.id.clone()))
            .collect();
        let mut wire = crate::wire::decision(&self.rulebook, &decision);
        let mut obligations = self.obligations(&mut wire, caller, &consulted);
        if disclosure != Disclosure::Decided {
            // A sender not told the outcome cannot be held to what only a permit asks of it.
            obligations.retain(|o| o.owner != caller.institution.id.as_str());
        }
        Ok(Decided {
            consulted,
            decision,
            consents: transfer.consents,
            released,
            wire,
            obligations,
            awaits_review,
            network_facts,
            consents_found,
            disclosure,
        })
    }

    /// The transfer as the rulebook sees it: the parties with their types and cantons, the
    /// attested facts and those only the directory establishes, the consents found.
    fn policy_transfer(&self, consulted: &Consulted<'_>) -> decide::Transfer {
        let mut facts = consulted.facts;
        // Only the directory says in which capacities the recipient serves the person.
        for (i, fact) in self.rulebook.facts.iter().enumerate() {
            if let Some(capacity) = &fact.directory_capacity {
                let lookup = &consulted.lookup;
                let serves = match capacity.as_str() {
                    "*" => lookup.recipient_serves_person,
                    capacity => lookup.recipient_capacities.iter().any(|c| c == capacity),
                };
                facts.set(i, serves);
            }
        }
        let party = |i: &Institution| {
            let canton = (!i.canton.is_empty()).then(|| i.canton.clone());
            PolicyParty::member(i.kind, i.id.clone(), canton)
        };
        decide::Transfer {
            from: party(consulted.from),
            to: party(consulted.to),
            trigger: Some(consulted.checked.trigger),
            purpose: consulted.checked.purpose.clone(),
            categories: consulted.checked.categories.clone(),
            // The real count: one person, or the persons of a list (never "the individual case").
            persons: u32::try_from(consulted.checked.list.len().max(1)).unwrap_or(u32::MAX),
            case_reference: consulted.checked.case_reference.clone(),
            unreviewed_pull: consulted.checked.is_pull() && consulted.checked.review.is_none(),
            facts,
            consents: consents_found(&consulted.lookup),
            date: consulted.now.date(),
        }
    }

    /// Decides; a permit relying on one-off consents marks them used at the
    /// registry first. A one-off consent another transfer used in between is
    /// dropped and the transfer decided again without it.
    async fn decide_consuming(
        &self,
        transfer: &mut decide::Transfer,
        lookup: &registry_pb::LookupResponse,
        reference: &str,
    ) -> Result<Decision, TransferError> {
        loop {
            let decision = decide::decide(&self.rulebook, transfer).map_err(TransferError::Undecidable)?;
            if !decision.is_permit() || !self.rests_on_consent(&decision) {
                return Ok(decision);
            }
            let one_off: Vec<&registry_pb::ConsentRecord> = lookup
                .consents
                .iter()
                .filter_map(|c| c.consent.as_ref())
                .filter(|r| r.recurrence == registry_pb::Recurrence::OneOff as i32)
                .filter(|r| transfer.consents.iter().any(|c| c.reference == consent_reference(r)))
                .collect();
            let mut dropped = false;
            for record in one_off {
                if !self.mark_used(record, reference).await? {
                    let used = consent_reference(record);
                    transfer.consents.retain(|c| c.reference != used);
                    dropped = true;
                }
            }
            if !dropped {
                return Ok(decision);
            }
        }
    }

    /// Only a permit that rests on consent uses it up.
    fn rests_on_consent(&self, decision: &Decision) -> bool {
        decision.bases().iter().any(|i| {
            self.rulebook.bases.get(*i).is_some_and(|b| {
                self.rulebook.basis_uses(b, Builtin::Consent) || self.rulebook.basis_uses(b, Builtin::WrittenConsent)
            })
        })
    }

    /// Marks a one-off consent used by `reference`; false if another transfer used it.
    /// INVARIANT (one-off-once): the registry answers true again for the same
    /// reference, so a retry after a failure later in the pipeline is not a second use.
    async fn mark_used(&self, record: &registry_pb::ConsentRecord, reference: &str) -> Result<bool, TransferError> {
        let marked = self
            .consent
            .clone()
            .mark_used(registry_pb::MarkUsedRequest {
                consent_id: record.consent_id.clone(),
                version: record.version,
                transfer: reference.to_owned(),
            })
            .await;
        match marked {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::FailedPrecondition => Ok(false),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "one-off consent not marked used");
                Err(TransferError::ConsentRegistryUnavailable(
                    "the consent registry could not mark a one-off consent used; retry later",
                ))
            }
        }
    }

    /// Gives each obligation of the decision its id, owner and due date; the
    /// records to store with the transfer.
    fn obligations(&self, wire: &mut common_pb::Decision, caller: &Caller, c: &Consulted<'_>) -> Vec<ObligationRecord> {
        let mut records = Vec::new();
        for (n, o) in wire.obligations.iter_mut().enumerate() {
            // The decision names the owner by role; the transfer names the institution.
            let owner = if o.owner == c.from.kind.to_string() || o.owner == c.from.id.to_string() {
                c.from
            } else {
                c.to
            };
            let due_days = self
                .rulebook
                .bases
                .iter()
                .find(|b| Some(&b.id) == o.basis.as_ref().map(|r| &r.id))
                .and_then(|b| {
                    b.obligations.iter().find(|s| {
                        self.rulebook
                            .obligation_kinds
                            .get(s.kind)
                            .is_some_and(|k| k.id == o.kind)
                    })
                })
                .map_or(30, |s| s.due_days);
            let due = c.now + time::Duration::days(i64::from(due_days));
            o.id = format!("{}:{}:{n}", caller.institution.id, c.checked.id);
            o.owner = owner.id.to_string();
            o.due = Some(cii_types::time::timestamp(due));
            records.push(ObligationRecord {
                id: o.id.clone(),
                owner: o.owner.clone(),
                due_micros: cii_types::time::micros(due),
                wire: o.encode_to_vec(),
            });
        }
        records
    }
}

/// `consent_id@version`, the name the decision and the log give a consent.
fn consent_reference(record: &registry_pb::ConsentRecord) -> String {
    format!("{}@{}", record.consent_id, record.version)
}

/// A consent as the decision saw it: `id@version:written|oral:category+…:purpose+…`.
fn consent_found(c: &ConsentFound) -> String {
    format!(
        "{}:{}:{}:{}",
        c.reference,
        if c.written { "written" } else { "oral" },
        c.categories.join("+"),
        c.purposes.join("+")
    )
}

fn consents_found(lookup: &registry_pb::LookupResponse) -> Vec<ConsentFound> {
    lookup
        .consents
        .iter()
        .filter_map(|c| {
            let record = c.consent.as_ref()?;
            Some(ConsentFound {
                reference: consent_reference(record),
                categories: c.covered_categories.clone(),
                purposes: record.purposes.clone(),
                written: record.written,
            })
        })
        .collect()
}
