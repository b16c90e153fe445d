//! Content sealed where it originates (`cii.common.v1.SealedParts`): what this node
//! sends — a push's payload, one part per category, and a written request — sealed for
//! the counterparty before it leaves, so the gateway forwards it without reading it; and
//! what this node receives, opened and checked part by part. Also the one earlier form,
//! sealed by the gateway (`SealedPayload`, `SealedAnswer`), still opened for what was
//! queued or kept before the change.
//!
//! INVARIANT (nothing-readable-at-the-gateway): a payload or written request leaves this
//! node only sealed under a key whose element the gateway never holds.

use cii_proto::common as common_pb;
use cii_proto::node as pb;
use cii_pseudonym::node::NodeKeys;
use cii_types::exchange::Catalogue;
use cii_types::transfer::{WRITTEN_REQUEST_LABEL, part_associated_data};
use prost::Message;

use crate::error::NodeError;

/// The contract's catalogue, compiled in: read once.
static CATALOGUE: std::sync::LazyLock<Result<Catalogue, cii_types::exchange::ExchangeError>> =
    std::sync::LazyLock::new(Catalogue::load);

fn catalogue() -> Result<&'static Catalogue, NodeError> {
    CATALOGUE.as_ref().map_err(|e| NodeError::Payload(e.clone()))
}

/// Longest written request, in characters (the gateway's limit before it read none).
const MAX_WRITTEN_REQUEST: usize = 20_000;

/// What a transfer's origin seals: the exchange message and the written request.
pub struct Outgoing<'a> {
    /// The institution that seals (the sender of a push, the requester or holder of a pull).
    pub origin: &'a str,
    /// The transfer id.
    pub transfer_id: &'a str,
    /// The exchange message, if any (a pull's request has none).
    pub payload: Option<&'a prost_types::Any>,
    /// Only these categories of it (a holder's answer: the categories asked for); all if `None`.
    pub only: Option<&'a [String]>,
    /// The written request, if any (empty: none).
    pub written_request: &'a str,
}

/// Seals `out` under a fresh key (its element under the global key, for the gateway to
/// rekey): the parts, and the written request's SHA-256 (empty without one). The payload is
/// checked against the contract first, with the codes the gateway used to answer.
pub fn seal(keys: &NodeKeys, out: &Outgoing<'_>) -> Result<(common_pb::SealedParts, Vec<u8>), NodeError> {
    let catalogue = catalogue()?;
    // Checked here, before sealing: the gateway sees only that one was sealed, and its
    // addressee refuses a blank one only once the transfer is decided.
    if !out.written_request.is_empty()
        && (out.written_request.trim().is_empty() || out.written_request.chars().count() > MAX_WRITTEN_REQUEST)
    {
        return Err(NodeError::FieldNotAllowed {
            field: "written_request",
            what: "a written request is not blank and at most 20,000 characters",
        });
    }
    let sealer = keys.sealer().map_err(|source| NodeError::Crypto {
        field: "sealed",
        source,
    })?;
    let type_url = out.payload.map(|p| p.type_url.clone()).unwrap_or_default();
    let seal_part = |label: &str, plaintext: &[u8]| -> Result<common_pb::SealedPart, NodeError> {
        let aad = part_associated_data(out.origin, out.transfer_id, &type_url, label);
        let (nonce, ciphertext) = sealer.seal(&aad, plaintext).map_err(|source| NodeError::Crypto {
            field: "sealed",
            source,
        })?;
        Ok(common_pb::SealedPart {
            category: if label == WRITTEN_REQUEST_LABEL {
                String::new()
            } else {
                label.to_owned()
            },
            nonce: nonce.to_vec(),
            ciphertext,
        })
    };
    let mut parts = Vec::new();
    if let Some(payload) = out.payload {
        for (category, bytes) in catalogue
            .split(&payload.type_url, &payload.value)
            .map_err(NodeError::Payload)?
        {
            if out.only.is_none_or(|only| only.contains(&category)) {
                parts.push(seal_part(&category, &bytes)?);
            }
        }
    }
    let (written_request, sha256) = if out.written_request.is_empty() {
        (None, Vec::new())
    } else {
        let digest = ring::digest::digest(&ring::digest::SHA256, out.written_request.as_bytes());
        (
            Some(seal_part(WRITTEN_REQUEST_LABEL, out.written_request.as_bytes())?),
            digest.as_ref().to_vec(),
        )
    };
    let sealed = common_pb::SealedParts {
        key: cii_pseudonym::wire::to_bytes(&sealer.key),
        type_url,
        parts,
        written_request,
    };
    Ok((sealed, sha256))
}

/// What an addressee expects of sealed parts it received.
pub struct Incoming<'a> {
    /// The institution that sealed them.
    pub origin: &'a str,
    /// The transfer id.
    pub transfer_id: &'a str,
    /// The categories released to this institution: a part of any other is refused unopened.
    pub released: &'a [String],
    /// The written request's SHA-256 as logged or declared (empty: none may come).
    pub written_request_sha256: &'a [u8],
}

/// Opens parts sealed to this institution, each checked against its label (a part
/// carrying another category's field is refused: `SEALED_PART_MISLABELLED`), and joins them
/// into the exchange message; the written request checked against its SHA-256.
pub fn open_parts(
    keys: &NodeKeys,
    sealed: &common_pb::SealedParts,
    expect: &Incoming<'_>,
) -> Result<pb::DeliveryContent, NodeError> {
    let catalogue = catalogue()?;
    let mut previous: Option<&str> = None;
    for part in &sealed.parts {
        if previous.is_some_and(|p| p >= part.category.as_str()) {
            return Err(NodeError::SealedPartsInvalid(
                "the parts are not one per category, in order",
            ));
        }
        if !expect.released.contains(&part.category) {
            return Err(NodeError::SealedPartsInvalid(
                "a part of a category the decision did not release",
            ));
        }
        previous = Some(&part.category);
    }
    let key = cii_pseudonym::wire::attribute(&sealed.key).map_err(|source| NodeError::Crypto {
        field: "parts.key",
        source,
    })?;
    let opener = keys.opener(&key).map_err(|source| NodeError::Crypto {
        field: "parts.key",
        source,
    })?;
    let open = |label: &str, part: &common_pb::SealedPart| -> Result<Vec<u8>, NodeError> {
        let nonce: [u8; 12] = part.nonce.as_slice().try_into().map_err(|_| NodeError::NonceInvalid)?;
        let aad = part_associated_data(expect.origin, expect.transfer_id, &sealed.type_url, label);
        opener
            .open(nonce, &aad, &part.ciphertext)
            .map_err(|source| NodeError::Crypto { field: "parts", source })
    };
    let mut opened = Vec::with_capacity(sealed.parts.len());
    for part in &sealed.parts {
        let plain = open(&part.category, part)?;
        catalogue
            .check_part(&sealed.type_url, &part.category, &plain)
            .map_err(NodeError::Part)?;
        opened.push(plain);
    }
    let written_request = match &sealed.written_request {
        Some(part) => {
            let text =
                String::from_utf8(open(WRITTEN_REQUEST_LABEL, part)?).map_err(|_| NodeError::WrittenRequestMismatch)?;
            let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
            if text.trim().is_empty() || digest.as_ref() != expect.written_request_sha256 {
                return Err(NodeError::WrittenRequestMismatch);
            }
            text
        }
        None if expect.written_request_sha256.is_empty() => String::new(),
        None => return Err(NodeError::WrittenRequestMismatch),
    };
    let payload = if sealed.type_url.is_empty() {
        None
    } else {
        Some(prost_types::Any {
            type_url: sealed.type_url.clone(),
            value: catalogue.join(&sealed.type_url, &opened).map_err(NodeError::Payload)?,
        })
    };
    Ok(pb::DeliveryContent {
        payload,
        written_request,
    })
}

/// Opens content sealed to this institution by the gateway in earlier releases (a queued
/// delivery's payload, a kept pull answer): `(key, nonce, ciphertext)` as they travel, under
/// the associated data `aad`.
pub(crate) fn open(
    keys: &NodeKeys,
    field: &'static str,
    (key, nonce, ciphertext): (&[u8], &[u8], &[u8]),
    aad: &[u8],
) -> Result<pb::DeliveryContent, NodeError> {
    let key = cii_pseudonym::wire::attribute(key).map_err(|source| NodeError::Crypto { field, source })?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| NodeError::NonceInvalid)?;
    let sealed = cii_pseudonym::seal::Sealed {
        key,
        nonce,
        ciphertext: ciphertext.to_vec(),
    };
    let plain = keys
        .open(&sealed, aad)
        .map_err(|source| NodeError::Crypto { field, source })?;
    pb::DeliveryContent::decode(plain.as_slice()).map_err(|_| NodeError::ContentInvalid)
}

#[cfg(test)]
mod tests {
    use cii_pseudonym::ceremony::Ceremony;
    use cii_pseudonym::gateway::Gateway;
    use cii_pseudonym::names::Party;
    use cii_types::InstitutionId;

    use super::*;

    struct World {
        gateway: Gateway,
        orp: NodeKeys,
        ai: NodeKeys,
        ai_party: Party,
    }

    fn world() -> World {
        let c = Ceremony::new();
        let party = |id| Party::Institution(InstitutionId::parse("id", id).unwrap());
        let (orp_party, ai_party) = (party("ORP-VS"), party("AI-VS"));
        World {
            gateway: Gateway::new(
                c.pseudonymisation_secret.clone(),
                c.rekeying_secret.clone(),
                &c.global_public,
                1,
            ),
            orp: NodeKeys::new(c.global_public, c.session_keys(&orp_party, 1)),
            ai: NodeKeys::new(c.global_public, c.session_keys(&ai_party, 1)),
            ai_party,
        }
    }

    fn report() -> prost_types::Any {
        let report = cii_proto::exchange::EarlyDetectionReport {
            health_limitations: "no heavy loads".into(),
            medical_reports: vec!["report 1".into()],
            employment_situation: "unemployed".into(),
            ..Default::default()
        };
        prost_types::Any {
            type_url: "type.googleapis.com/cii.exchange.v1.EarlyDetectionReport".into(),
            value: report.encode_to_vec(),
        }
    }

    /// Sealed by the ORP for the AI office, the key rekeyed as the gateway rekeys it.
    fn sealed(w: &World, written_request: &str) -> (common_pb::SealedParts, Vec<u8>) {
        let payload = report();
        let out = Outgoing {
            origin: "ORP-VS",
            transfer_id: "t-1",
            payload: Some(&payload),
            only: None,
            written_request,
        };
        let (mut sealed, sha) = seal(&w.orp, &out).unwrap();
        let key = cii_pseudonym::wire::attribute(&sealed.key).unwrap();
        sealed.key = cii_pseudonym::wire::to_bytes(&w.gateway.rekey_seal_key(&key, &w.ai_party));
        (sealed, sha)
    }

    fn expect<'a>(released: &'a [String], sha: &'a [u8]) -> Incoming<'a> {
        Incoming {
            origin: "ORP-VS",
            transfer_id: "t-1",
            released,
            written_request_sha256: sha,
        }
    }

    fn all() -> Vec<String> {
        ["employment_status", "health_limitations", "medical_reports"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn the_released_parts_open_into_the_payload_and_the_written_request_checks_against_its_hash() {
        let w = world();
        let (mut sealed, sha) = sealed(&w, "Please send the report.");
        let content = open_parts(&w.ai, &sealed, &expect(&all(), &sha)).unwrap();
        assert_eq!(content.payload.unwrap().value, report().value);
        assert_eq!(content.written_request, "Please send the report.");
        // The gateway withholds the medical reports: their part is dropped, the rest opens.
        sealed.parts.retain(|p| p.category != "medical_reports");
        let released = vec!["employment_status".to_owned(), "health_limitations".to_owned()];
        let content = open_parts(&w.ai, &sealed, &expect(&released, &sha)).unwrap();
        let opened =
            cii_proto::exchange::EarlyDetectionReport::decode(content.payload.unwrap().value.as_slice()).unwrap();
        assert!(opened.medical_reports.is_empty());
        assert_eq!(opened.health_limitations, "no heavy loads");
    }

    #[test]
    fn what_does_not_match_the_decision_or_the_declared_hash_is_refused() {
        let w = world();
        let (sealed, sha) = sealed(&w, "Please send the report.");
        let code = |r: Result<pb::DeliveryContent, NodeError>| r.unwrap_err().code();
        // A part of a category the decision withheld (a gateway that did not drop it).
        let released = vec!["employment_status".to_owned(), "health_limitations".to_owned()];
        assert_eq!(
            code(open_parts(&w.ai, &sealed, &expect(&released, &sha))),
            "SEALED_PARTS_INVALID"
        );
        // Parts out of order, or one twice.
        let mut reversed = sealed.clone();
        reversed.parts.reverse();
        assert_eq!(
            code(open_parts(&w.ai, &reversed, &expect(&all(), &sha))),
            "SEALED_PARTS_INVALID"
        );
        // The written request with another hash than logged, or missing though logged.
        assert_eq!(
            code(open_parts(&w.ai, &sealed, &expect(&all(), &[0; 32]))),
            "WRITTEN_REQUEST_MISMATCH"
        );
        let mut without = sealed.clone();
        without.written_request = None;
        assert_eq!(
            code(open_parts(&w.ai, &without, &expect(&all(), &sha))),
            "WRITTEN_REQUEST_MISMATCH"
        );
        // A blank written request (a sender's node refuses to seal one; crafted here), even with
        // its own hash.
        let sealer = w.orp.sealer().unwrap();
        let aad = part_associated_data("ORP-VS", "t-1", "", WRITTEN_REQUEST_LABEL);
        let (nonce, ciphertext) = sealer.seal(&aad, b"   ").unwrap();
        let blank = common_pb::SealedParts {
            key: cii_pseudonym::wire::to_bytes(&w.gateway.rekey_seal_key(&sealer.key, &w.ai_party)),
            type_url: String::new(),
            parts: Vec::new(),
            written_request: Some(common_pb::SealedPart {
                category: String::new(),
                nonce: nonce.to_vec(),
                ciphertext,
            }),
        };
        let blank_sha = ring::digest::digest(&ring::digest::SHA256, b"   ").as_ref().to_vec();
        assert_eq!(
            code(open_parts(&w.ai, &blank, &expect(&all(), &blank_sha))),
            "WRITTEN_REQUEST_MISMATCH"
        );
        // A part relabelled by the gateway does not open.
        let mut relabelled = sealed.clone();
        relabelled.parts[0].category = "contact".into();
        let released = [all(), vec!["contact".to_owned()]].concat();
        assert_eq!(
            code(open_parts(&w.ai, &relabelled, &expect(&released, &sha))),
            "SEALED_PAYLOAD_UNREADABLE"
        );
        // A blank or too long written request is refused before anything is sealed.
        let payload = report();
        for text in ["   ".to_owned(), "x".repeat(MAX_WRITTEN_REQUEST + 1)] {
            let out = Outgoing {
                origin: "ORP-VS",
                transfer_id: "t-2",
                payload: Some(&payload),
                only: None,
                written_request: &text,
            };
            assert_eq!(seal(&w.orp, &out).unwrap_err().code(), "FIELD_NOT_ALLOWED");
        }
        // Opened by another institution than the one the key was rekeyed to: nothing opens.
        assert_eq!(
            code(open_parts(&w.orp, &sealed, &expect(&all(), &sha))),
            "SEALED_PAYLOAD_UNREADABLE"
        );
    }
}
