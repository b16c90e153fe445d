//! A permitted pull answered: the holder answers from its store, sealed by its
//! node for the requester one part per category; the gateway drops the parts of
//! categories not released, rekeys the seal key to the requester, and returns it
//! with the person in the caller's domain. The permit is in the log already.

use std::collections::BTreeSet;

use cii_kit::auth::Caller;
use cii_proto::common as common_pb;
use cii_proto::gateway as pb;
use cii_proto::node as node_pb;
use cii_pseudonym::names::Party;
use cii_types::TransferState;
use prost::Message;

use super::{Checked, TransferError, Transfers};

/// The type a holder answers a pull with.
const DATA_RESPONSE: &str = "type.googleapis.com/cii.exchange.v1.DataResponse";

impl Transfers {
    /// Asks the holder for the released categories and fills the response.
    pub(super) async fn provide(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
        released: &BTreeSet<String>,
        response: &mut pb::TransferResponse,
    ) -> Result<(), TransferError> {
        let caller_party = Party::Institution(caller.institution.id.clone());
        let holder_id = &checked.counterparty.id;
        let holder = Party::Institution(holder_id.clone());
        let (person, back) = self.person_for_holder(caller, checked, &holder).await?;
        let ask = node_pb::ProvideRequest {
            transfer_id: checked.id.to_string(),
            requester: caller.institution.id.to_string(),
            person: Some(wire_pseudonym(&person)),
            categories: released.iter().cloned().collect(),
            written_request: String::new(),
            decision: response.decision.clone(),
            receipt: response.receipt.clone(),
            sealed_written_request: self.forward_sealed(caller, checked, &holder).await?,
        };
        let answer = self.nodes.provide(holder_id, ask).await.map_err(|e| {
            let (holder, code) = (holder_id.clone(), e.code());
            tracing::warn!(%holder, %code, "holder did not provide");
            if e.is_not_found() {
                TransferError::HolderHasNoData { holder, code }
            } else {
                TransferError::HolderUnavailable { holder, code }
            }
        })?;
        let purpose = checked.purpose(caller);
        response.provided_parts = Some(
            self.forward_answer(&answer, released, (&caller_party, &purpose))
                .await?,
        );
        response.provided_person = Some(wire_pseudonym(&back));
        response.state = TransferState::Delivered.code();
        let keep = i64::try_from(self.pull_answer_keep.as_micros()).unwrap_or(i64::MAX);
        let until = cii_types::time::micros(self.clock.now()).saturating_add(keep);
        let caller_id = caller.institution.id.to_string();
        // Kept before it is answered: an answer the gateway could not keep is not given.
        self.store
            .provided(&caller_id, checked.id.as_str(), &response.encode_to_vec(), until)
            .await?;
        Ok(())
    }

    /// One round: the person for the holder, and back in the caller's own domain and key.
    async fn person_for_holder(
        &self,
        caller: &Caller,
        checked: &Checked<'_>,
        holder: &Party,
    ) -> Result<(cii_pseudonym::EncryptedPseudonym, cii_pseudonym::EncryptedPseudonym), TransferError> {
        // `check` requires a person for every pull.
        let asked = checked.person.as_ref().ok_or_else(|| TransferError::FieldRequired {
            field: "person",
            what: "person is required".to_owned(),
        })?;
        let caller_party = Party::Institution(caller.institution.id.clone());
        let from = cii_pseudonym::shares::Source::node(Some(caller_party.clone()));
        let wanted = vec![(*asked, from.clone(), holder.clone()), (*asked, from, caller_party)];
        let mut both = self
            .pseudonyms
            .pseudonyms(wanted, &checked.purpose(caller))
            .await?
            .into_iter();
        match (both.next(), both.next()) {
            (Some(person), Some(back)) => Ok((person, back)),
            _ => Err(crate::pseudonyms::PseudonymsError::Invalid("too few results".to_owned()).into()),
        }
    }

    /// The holder sealed its answer for the requester: checked in form, the parts of
    /// categories not released dropped (the requester's node refuses any left, and any part
    /// that carries another category than its label), the key rekeyed to the requester.
    async fn forward_answer(
        &self,
        answer: &node_pb::ProvideResponse,
        released: &BTreeSet<String>,
        (requester, purpose): (&Party, &crate::pseudonyms::Purpose),
    ) -> Result<common_pb::SealedParts, TransferError> {
        let sealed = answer.sealed.as_ref().ok_or(TransferError::HolderAnswerEmpty)?;
        let answer = super::check::sealed_content(&self.catalogue, sealed)
            .ok()
            .filter(|s| s.type_url == DATA_RESPONSE && s.written_request.is_none())
            .ok_or_else(|| {
                tracing::warn!("holder answered with malformed sealed parts");
                TransferError::HolderAnswerInvalid
            })?;
        super::seal::forward(
            &self.pseudonyms,
            &answer,
            |c| released.contains(c),
            (requester, purpose),
        )
        .await
    }
}

fn wire_pseudonym(p: &cii_pseudonym::EncryptedPseudonym) -> common_pb::EncryptedPseudonym {
    common_pb::EncryptedPseudonym {
        ciphertext: cii_pseudonym::wire::to_bytes(p),
    }
}
