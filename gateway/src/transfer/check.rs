//! Stage 1, checked: the transfer request alone, against the registry and the
//! catalogue — ids, direction, trigger, facts, the ciphertexts' encoding, the
//! payload against the contract (unknown fields refused) and the categories it
//! carries. Every refusal names a stable code and the field. Pure, so the fuzz
//! target `transfer_check` runs exactly this; nothing of the wire request
//! travels further than the [`Checked`] value it returns.

use std::collections::BTreeSet;

use cii_kit::registry::{Institution, Registry};
use cii_policy::vocab::Trigger;
use cii_proto::common as common_pb;
use cii_proto::gateway::{self as pb, transfer_request::Direction as WireDirection};
use cii_pseudonym::{EncryptedAttribute, EncryptedPseudonym};
use cii_types::exchange::Catalogue;
use cii_types::{InstitutionId, TransferId};
use prost::Message;

use super::TransferError;

/// Longest written request, in characters.
const MAX_WRITTEN_REQUEST: usize = 20_000;
/// The category of the identity attribute.
pub(super) const IDENTITY_AVS: &str = "identity.avs";
/// The one category that concerns no person: a transfer of it alone carries none.
const ANONYMISED: &str = "anonymised_statistics";

/// Longest case reference, in characters.
const MAX_CASE_REFERENCE: usize = 128;
/// Most persons one list exchange names.
const MAX_LIST_PERSONS: usize = 100;
/// The list exchange's message: its entries and the persons go in the same order.
const RECIPIENT_LIST: &str = "type.googleapis.com/cii.exchange.v1.RecipientList";

/// Who discloses, and what travels.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per transfer in flight, never stored in a collection"
)]
pub enum Direction {
    /// The caller discloses: its sealed parts go to the counterparty.
    Push {
        /// The AVS number as a libpep attribute, if the caller sends it.
        identity: Option<EncryptedAttribute>,
    },
    /// The counterparty discloses: asked for the categories once the permit is logged.
    Pull,
}

/// The largest payload per exchange type (`[store] payload_max_bytes…`): a push larger
/// than its recipient could decode would fail at every attempt.
#[derive(Debug, Clone)]
pub struct PayloadCaps {
    /// The cap of types not named.
    pub default: u32,
    /// Caps by the exchange type's full message name.
    pub by_type: std::collections::BTreeMap<String, u32>,
}

impl PayloadCaps {
    /// Refuses a payload over its type's cap (before anything else is looked at).
    pub fn check(&self, r: &pb::TransferRequest) -> Result<(), TransferError> {
        let Some(sealed) = &r.sealed else { return Ok(()) };
        let name = sealed.type_url.rsplit('/').next().unwrap_or_default();
        let max = self.by_type.get(name).copied().unwrap_or(self.default);
        // What the recipient will decode: the parts' plaintexts (each ciphertext less its tag).
        let size: usize = sealed.parts.iter().map(|p| p.ciphertext.len().saturating_sub(16)).sum();
        if size > max as usize {
            return Err(TransferError::PayloadTooLarge { max });
        }
        Ok(())
    }
}

/// A request that passed every check that needs nothing but itself.
#[derive(Debug)]
pub struct Checked<'r> {
    pub(super) id: TransferId,
    /// SHA-256 of the request's bytes: the same id with other bytes is another request.
    pub(super) request_sha256: Vec<u8>,
    pub(super) counterparty: &'r Institution,
    pub(super) direction: Direction,
    pub(super) trigger: Trigger,
    pub(super) purpose: String,
    /// What the caller's node sealed for the counterparty (a push's parts, a written request).
    pub(super) sealed: Option<SealedContent>,
    /// SHA-256 of the written request's text, if the caller sealed one (empty otherwise).
    pub(super) written_request_sha256: Vec<u8>,
    /// The categories asked for (pull) or present in the payload (push).
    pub(super) categories: Vec<String>,
    /// Absent only for anonymised statistics (no person concerned).
    pub(super) person: Option<EncryptedPseudonym>,
    /// The facts the caller attested, by id (resolved against the rulebook in stage 2), for the audit entry.
    pub(super) attested: Vec<String>,
    /// The case or request reference of the individual case, if given.
    pub(super) case_reference: Option<String>,
    /// A list exchange: its persons, in the caller's domain (empty otherwise).
    pub(super) list: Vec<EncryptedPseudonym>,
    /// For a pull: its holder's review, once given.
    pub(super) review: Option<super::review::Review>,
}

/// Content the caller's node sealed for the counterparty, checked in form only (the gateway
/// cannot open it): the key a valid ciphertext, parts one per category in order, each a
/// category the exchange type carries, nonces of 12 bytes.
#[derive(Debug, Clone)]
pub struct SealedContent {
    /// The key element, under the global key.
    pub(super) key: EncryptedAttribute,
    /// The exchange type (empty: only a written request).
    pub(super) type_url: String,
    /// The parts, by category.
    pub(super) parts: Vec<common_pb::SealedPart>,
    /// The written request's part.
    pub(super) written_request: Option<common_pb::SealedPart>,
}

impl Checked<'_> {
    /// What the transcryptions of this transfer are for (the second transcryptor logs it).
    pub(super) fn purpose(&self, caller: &cii_kit::auth::Caller) -> crate::pseudonyms::Purpose {
        crate::pseudonyms::transfer(
            caller.institution.id.as_str(),
            self.counterparty.id.as_str(),
            self.id.as_str(),
        )
    }

    /// A pull.
    pub(super) fn is_pull(&self) -> bool {
        matches!(self.direction, Direction::Pull)
    }
}

/// The checks of a transfer request that need nothing but the request, the
/// registry and the catalogue.
pub fn check_request<'a>(
    registry: &'a Registry,
    catalogue: &Catalogue,
    caller: &InstitutionId,
    r: &pb::TransferRequest,
) -> Result<Checked<'a>, TransferError> {
    let id = TransferId::parse(&r.transfer_id)?;
    let counterparty = counterparty(registry, caller, &r.counterparty)?;
    let pull = match WireDirection::try_from(r.direction) {
        Ok(WireDirection::Push) => false,
        Ok(WireDirection::Pull) => true,
        _ => return Err(TransferError::DirectionRequired),
    };
    let trigger = trigger(r.trigger)?;
    if r.purpose.is_empty() {
        return Err(required("purpose", "purpose is required"));
    }
    // A purpose is an id of the rulebook's vocabulary, and it is logged: never free text.
    let id_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c);
    if r.purpose.len() > 64 || !r.purpose.chars().all(id_char) {
        return Err(not_allowed(
            "purpose",
            "purpose is an id of the rulebook's vocabulary: at most 64 characters of a–z, 0–9, '_', '-', '.'",
        ));
    }
    refuse_readable(r)?;
    let sealed = r.sealed.as_ref().map(|s| sealed_content(catalogue, s)).transpose()?;
    let written_request_sha256 = written_request_sha256(r, sealed.as_ref())?;
    let list = list_persons(r, pull, sealed.as_ref())?;
    let person = match &r.person {
        None if !pull && sealed.is_some() => None,
        person => Some(ciphertext("person", person.as_ref())?),
    };
    let attested = attested_facts(&r.attested_facts)?;
    let case_reference = case_reference(&r.case_reference)?;
    let (direction, categories) = if pull {
        pulled(r, sealed.as_ref())?
    } else {
        pushed(r, sealed.as_ref(), person.is_some() || !list.is_empty())?
    };
    Ok(Checked {
        id,
        request_sha256: sha256(&r.encode_to_vec()),
        counterparty,
        direction,
        trigger,
        purpose: r.purpose.clone(),
        sealed,
        written_request_sha256,
        categories,
        person,
        attested,
        case_reference,
        list,
        review: None,
    })
}

/// The forms of earlier releases, which the gateway read, are refused: it reads nothing.
fn refuse_readable(r: &pb::TransferRequest) -> Result<(), TransferError> {
    if !r.written_request.is_empty() {
        return Err(not_allowed(
            "written_request",
            "the gateway reads no written request: it travels sealed in sealed.written_request",
        ));
    }
    if r.payload.is_some() {
        return Err(not_allowed(
            "payload",
            "the gateway reads no payload: a push carries its exchange message sealed per category in sealed",
        ));
    }
    Ok(())
}

fn required(field: &'static str, what: &str) -> TransferError {
    TransferError::FieldRequired {
        field,
        what: what.to_owned(),
    }
}

fn not_allowed(field: &'static str, what: &'static str) -> TransferError {
    TransferError::FieldNotAllowed { field, what }
}

/// SHA-256 of `bytes`.
pub(super) fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

fn counterparty<'a>(
    registry: &'a Registry,
    caller: &InstitutionId,
    id: &str,
) -> Result<&'a Institution, TransferError> {
    let id = InstitutionId::parse("counterparty", id).map_err(TransferError::Counterparty)?;
    if id == *caller {
        return Err(TransferError::CounterpartyIsCaller);
    }
    registry.get(&id).ok_or(TransferError::CounterpartyUnknown(id))
}

fn trigger(value: i32) -> Result<Trigger, TransferError> {
    Ok(match pb::Trigger::try_from(value) {
        Ok(pb::Trigger::WrittenRequest) => Trigger::WrittenRequest,
        Ok(pb::Trigger::SpontaneousReport) => Trigger::SpontaneousReport,
        Ok(pb::Trigger::MandatoryReport) => Trigger::MandatoryReport,
        Ok(pb::Trigger::CaseAccess) => Trigger::CaseAccess,
        Ok(pb::Trigger::BilateralExchange) => Trigger::BilateralExchange,
        _ => return Err(TransferError::TriggerRequired),
    })
}

/// A ciphertext field of a request, parsed; errors name the field.
pub(crate) fn ciphertext(
    field: &'static str,
    value: Option<&cii_proto::common::EncryptedPseudonym>,
) -> Result<EncryptedPseudonym, TransferError> {
    let value = value.ok_or_else(|| required(field, &format!("{field} is required")))?;
    cii_pseudonym::wire::pseudonym(&value.ciphertext).map_err(|e| TransferError::ciphertext(field, e))
}

/// The fact ids the caller attests, well-formed, as given (the log refuses an entry with too
/// many, before anything is consulted); whether the rulebook declares them and lets the
/// caller attest them is decided with the rulebook (stage 2).
fn attested_facts(ids: &[String]) -> Result<Vec<String>, TransferError> {
    let mut attested: Vec<String> = Vec::new();
    for id in ids {
        let well_formed = !id.is_empty()
            && id.len() <= 64
            && id.starts_with(|c: char| c.is_ascii_lowercase())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !well_formed {
            return Err(TransferError::FactUnknown(id.chars().take(64).collect()));
        }
        attested.push(id.clone());
    }
    Ok(attested)
}

/// A list exchange's persons: a push of a `RecipientList` only, naming no single `person`, at
/// most 100, as many as the list's entries.
fn list_persons(
    r: &pb::TransferRequest,
    pull: bool,
    sealed: Option<&SealedContent>,
) -> Result<Vec<EncryptedPseudonym>, TransferError> {
    let is_list = sealed.is_some_and(|s| s.type_url == RECIPIENT_LIST);
    if r.list_persons.is_empty() {
        if is_list {
            return Err(required(
                "list_persons",
                "a recipient list names its persons in list_persons",
            ));
        }
        return Ok(Vec::new());
    }
    if pull || !is_list {
        return Err(not_allowed(
            "list_persons",
            "only a pushed cii.exchange.v1.RecipientList names a list of persons",
        ));
    }
    if r.person.is_some() || r.identity.is_some() {
        return Err(not_allowed(
            "person",
            "a list names its persons in list_persons, and never their AVS numbers",
        ));
    }
    if r.list_persons.len() > MAX_LIST_PERSONS {
        return Err(not_allowed("list_persons", "a list names at most 100 persons"));
    }
    // That the list has as many entries as persons, the nodes check: the gateway cannot read it.
    r.list_persons
        .iter()
        .map(|p| ciphertext("list_persons", Some(p)))
        .collect()
}

/// The case or request reference of the individual case: an institution's file number, never
/// personal data (the same alphabet as a record id), logged with the transfer.
fn case_reference(value: &str) -> Result<Option<String>, TransferError> {
    if value.is_empty() {
        return Ok(None);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".:_/-".contains(c);
    if value.chars().count() > MAX_CASE_REFERENCE || !value.chars().all(allowed) {
        return Err(not_allowed(
            "case_reference",
            "a case reference is at most 128 characters of A–Z, a–z, 0–9, '.', ':', '_', '/', '-'",
        ));
    }
    if cii_types::avs::hides_avs(value) || cii_types::avs::looks_like_avs(value) {
        return Err(not_allowed(
            "case_reference",
            "a case reference looks like an AVS number; use the institution's own file number",
        ));
    }
    Ok(Some(value.to_owned()))
}

fn pulled(r: &pb::TransferRequest, sealed: Option<&SealedContent>) -> Result<(Direction, Vec<String>), TransferError> {
    if r.identity.is_some() {
        return Err(not_allowed("identity", "a pull carries no identity"));
    }
    if sealed.is_some_and(|s| !s.type_url.is_empty() || !s.parts.is_empty()) {
        return Err(not_allowed(
            "sealed",
            "a pull carries no payload, only its written request",
        ));
    }
    if r.categories.is_empty() {
        return Err(required("categories", "a pull names the categories asked for"));
    }
    let unique: BTreeSet<String> = r.categories.iter().cloned().collect();
    Ok((Direction::Pull, unique.into_iter().collect()))
}

fn pushed(
    r: &pb::TransferRequest,
    sealed: Option<&SealedContent>,
    names_person: bool,
) -> Result<(Direction, Vec<String>), TransferError> {
    let identity = match &r.identity {
        Some(i) => {
            Some(cii_pseudonym::wire::attribute(&i.ciphertext).map_err(|e| TransferError::ciphertext("identity", e))?)
        }
        None => None,
    };
    if !r.categories.is_empty() {
        return Err(not_allowed(
            "categories",
            "a push's categories are read from its sealed parts; leave categories empty",
        ));
    }
    let sealed = sealed
        .filter(|s| !s.type_url.is_empty())
        .ok_or_else(|| required("sealed", "a push carries its exchange message sealed per category"))?;
    // The parts' labels are the categories sent; that each part holds only its label's
    // fields, the recipient's node checks when it opens them.
    let mut categories: Vec<String> = sealed.parts.iter().map(|p| p.category.clone()).collect();
    if identity.is_some() {
        categories.push(IDENTITY_AVS.to_owned());
    }
    if categories.is_empty() {
        return Err(TransferError::PayloadEmpty);
    }
    let anonymous = categories.iter().all(|c| c == ANONYMISED);
    if !names_person && !anonymous {
        return Err(required(
            "person",
            "person is required (only anonymised statistics concern no person)",
        ));
    }
    if names_person && anonymous {
        return Err(not_allowed("person", "anonymised statistics name no person"));
    }
    Ok((Direction::Push { identity }, categories))
}

/// The sealed content's form: what the gateway can check of what it cannot read.
pub(super) fn sealed_content(
    catalogue: &Catalogue,
    s: &common_pb::SealedParts,
) -> Result<SealedContent, TransferError> {
    let invalid = |what: &'static str| TransferError::SealedPartsInvalid(what);
    let key = cii_pseudonym::wire::attribute(&s.key).map_err(|e| TransferError::ciphertext("sealed.key", e))?;
    let carried: BTreeSet<String> = if s.type_url.is_empty() {
        BTreeSet::new()
    } else if !s.type_url.starts_with("type.googleapis.com/") {
        // One spelling of each type: the list checks and the nodes compare full URLs.
        return Err(invalid("the type URL is not type.googleapis.com/<exchange type>"));
    } else {
        let message = catalogue.exchange_type(&s.type_url).map_err(TransferError::Payload)?;
        message.fields().filter_map(|f| catalogue.category_of(&f)).collect()
    };
    let mut previous: Option<&str> = None;
    for part in &s.parts {
        if previous.is_some_and(|p| p >= part.category.as_str()) {
            return Err(invalid("the parts are not one per category, in order"));
        }
        if !carried.contains(&part.category) {
            return Err(invalid("a part names a category its exchange type does not carry"));
        }
        previous = Some(&part.category);
    }
    let well_formed = |p: &common_pb::SealedPart| p.nonce.len() == 12 && p.ciphertext.len() >= 16;
    if !s.parts.iter().all(well_formed)
        || s.written_request
            .as_ref()
            .is_some_and(|p| !well_formed(p) || !p.category.is_empty())
    {
        return Err(invalid(
            "a part's nonce is not 12 bytes, its ciphertext shorter than its tag, or the written request has a category",
        ));
    }
    if s.written_request
        .as_ref()
        .is_some_and(|p| p.ciphertext.len() > MAX_WRITTEN_REQUEST * 4 + 16)
    {
        return Err(TransferError::WrittenRequestTooLong(MAX_WRITTEN_REQUEST));
    }
    Ok(SealedContent {
        key,
        type_url: s.type_url.clone(),
        parts: s.parts.clone(),
        written_request: s.written_request.clone(),
    })
}

/// The written request's SHA-256: 32 bytes exactly when a written request is sealed.
fn written_request_sha256(r: &pb::TransferRequest, sealed: Option<&SealedContent>) -> Result<Vec<u8>, TransferError> {
    let has_text = sealed.is_some_and(|s| s.written_request.is_some());
    match (has_text, r.written_request_sha256.len()) {
        (true, 32) | (false, 0) => Ok(r.written_request_sha256.clone()),
        (true, _) => Err(required(
            "written_request_sha256",
            "a sealed written request comes with the SHA-256 (32 bytes) of its text",
        )),
        (false, _) => Err(not_allowed(
            "written_request_sha256",
            "a written request's hash comes only with a sealed written request",
        )),
    }
}
