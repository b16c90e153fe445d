//! A permitted pull answered: the holder answers from its store; the gateway
//! filters its answer to the released categories and returns it with the
//! person in the caller's domain. The permit is in the log already.

use std::collections::BTreeSet;

use cii_kit::auth::Caller;
use cii_proto::common as common_pb;
use cii_proto::gateway as pb;
use cii_proto::node as node_pb;
use cii_pseudonym::names::Party;
use cii_types::TransferState;
use prost::Message;

use super::{Checked, TransferError, Transfers};

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
        // `check` requires a person for every pull.
        let asked = checked.person.as_ref().ok_or_else(|| TransferError::FieldRequired {
            field: "person",
            what: "person is required".to_owned(),
        })?;
        let person = self.pseudonyms.translate(asked, &caller_party, &holder);
        let ask = node_pb::ProvideRequest {
            transfer_id: checked.id.to_string(),
            requester: caller.institution.id.to_string(),
            person: Some(common_pb::EncryptedPseudonym {
                ciphertext: cii_pseudonym::wire::to_bytes(&person),
            }),
            categories: released.iter().cloned().collect(),
            written_request: checked.written_request.clone(),
            decision: response.decision.clone(),
            receipt: response.receipt.clone(),
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
        let payload = answer.payload.ok_or(TransferError::HolderAnswerEmpty)?;
        let filtered = self
            .catalogue
            .filter(&payload.type_url, &payload.value, |c| released.contains(c))
            .map_err(|e| {
                tracing::warn!(code = e.code(), "holder answered with an invalid payload");
                TransferError::HolderAnswerInvalid(e)
            })?;
        let back = self.pseudonyms.translate(&person, &holder, &caller_party);
        response.provided_sealed = Some(self.seal_answer(&caller_party, checked, payload.type_url, filtered.bytes)?);
        response.provided_person = Some(common_pb::EncryptedPseudonym {
            ciphertext: cii_pseudonym::wire::to_bytes(&back),
        });
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

    /// The filtered answer sealed to the requester: what leaves the gateway, and what a
    /// retry of the same request gets while it is kept.
    ///
    /// INVARIANT (a-replay-adds-nothing): the answer leaves sealed to the requester, and
    /// these very bytes are what a retry of the same request gets while they are kept.
    fn seal_answer(
        &self,
        requester: &Party,
        checked: &Checked<'_>,
        type_url: String,
        filtered: Vec<u8>,
    ) -> Result<pb::SealedAnswer, TransferError> {
        let content = node_pb::DeliveryContent {
            payload: Some(prost_types::Any {
                type_url,
                value: filtered,
            }),
            written_request: String::new(),
        };
        let aad = cii_types::transfer::seal_associated_data(checked.counterparty.id.as_str(), checked.id.as_str());
        let sealed = self
            .pseudonyms
            .seal(requester, &aad, &content.encode_to_vec())
            .map_err(TransferError::Seal)?;
        Ok(pb::SealedAnswer {
            key: cii_pseudonym::wire::to_bytes(&sealed.key),
            nonce: sealed.nonce.to_vec(),
            ciphertext: sealed.ciphertext,
        })
    }
}
