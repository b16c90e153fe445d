//! The demo's story, from reference/seed-usecases.md: what each institution
//! does, through its node, and what the rulebook must decide. The demo adds no
//! legal basis of its own: the decisions come from the federal rulebook and
//! the Valais extension, and a decision other than the story's fails the demo.

use anyhow::Context;
use cii_proto::consent as consent_pb;
use cii_proto::exchange as xt;
use cii_proto::gateway as gw;
use cii_proto::node::{self as node_pb, node_client::NodeClient};
use prost::Message;
use tonic::transport::Channel;

use crate::node_api::authorized;

/// Synthetic persons (valid check digits; no real person has them). The
/// output names them by record id only.
pub const PERSONS: [(&str, &str); 2] = [("Anna", "756.1234.5678.97"), ("Luca", "756.9217.0769.85")];

/// Who enrols whom: (institution, person index, record id).
pub const RECORDS: [(&str, usize, &str); 5] = [
    ("ORP-VS", 0, "ORP-2026-0417"),
    ("AI-VS", 0, "AI-2026-1093"),
    ("AS-VS", 0, "AS-2026-0088"),
    ("AI-VS", 1, "AI-2026-1187"),
    ("AS-VS", 1, "AS-2026-0102"),
];

/// What a step must come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Permit,
    Deny,
    Recorded,
    Revoked,
}

impl Expect {
    pub fn word(self) -> &'static str {
        match self {
            Expect::Permit => "PERMIT",
            Expect::Deny => "DENY",
            Expect::Recorded => "recorded",
            Expect::Revoked => "revoked",
        }
    }
}

/// One row of the printed table.
#[derive(Debug, Clone)]
pub struct Row {
    pub step: usize,
    pub what: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    /// The transfer id (or consent id) the row is logged under.
    pub id: String,
    pub exchange: &'static str,
    pub outcome: String,
    pub expected: Expect,
    /// Bases of a permit, or reasons of a refusal, as FR citations.
    pub citations: Vec<String>,
    pub released: Vec<String>,
    pub withheld: Vec<String>,
}

impl Row {
    pub fn as_expected(&self) -> bool {
        self.outcome == self.expected.word()
    }
}

fn any<M: Message>(name: &str, message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/cii.exchange.v1.{name}"),
        value: message.encode_to_vec(),
    }
}

fn person(given: &str) -> Option<xt::PersonDetails> {
    Some(xt::PersonDetails {
        family_name: "Exemple".into(),
        given_names: given.into(),
        birth_date: "1979-04-12".into(),
    })
}

fn stamp(t: time::OffsetDateTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: 0,
    })
}

/// The clients and tokens of the story's users, one per institution.
pub struct Desk {
    pub clients: Vec<(&'static str, NodeClient<Channel>, String)>,
}

impl Desk {
    fn at(&self, id: &str) -> anyhow::Result<(NodeClient<Channel>, &str)> {
        let (_, client, token) = self
            .clients
            .iter()
            .find(|(i, _, _)| *i == id)
            .with_context(|| format!("no desk at {id}"))?;
        Ok((client.clone(), token))
    }
}

fn record_of(institution: &str, person: usize) -> &'static str {
    RECORDS
        .iter()
        .find(|(i, p, _)| *i == institution && *p == person)
        .map_or("", |(_, _, r)| r)
}

/// Enrols the story's persons at their institutions.
pub async fn enrol(desk: &Desk) -> anyhow::Result<()> {
    for (institution, person, record) in RECORDS {
        let (mut client, token) = desk.at(institution)?;
        let request = node_pb::EnrolRequest {
            avs_number: PERSONS[person].1.into(),
            local_record_id: record.into(),
        };
        client
            .enrol(authorized(token, request)?)
            .await
            .with_context(|| format!("enrolling {record} at {institution}"))?;
    }
    Ok(())
}

fn row_from(
    step: usize,
    what: &'static str,
    (from, to): (&'static str, &'static str),
    id: &str,
    exchange: &'static str,
    expected: Expect,
    answer: &gw::TransferResponse,
) -> Row {
    let decision = answer.decision.clone().unwrap_or_default();
    let outcome = match cii_proto::common::decision::Outcome::try_from(decision.outcome) {
        Ok(cii_proto::common::decision::Outcome::Permit) => "PERMIT",
        _ => "DENY",
    };
    let cite = |b: &Option<cii_proto::common::BasisRef>| {
        b.as_ref()
            .and_then(|b| b.citation.as_ref().map(|c| c.fr.clone()))
            .unwrap_or_default()
    };
    let mut citations: Vec<String> = decision
        .bases
        .iter()
        .map(|b| cite(&Some(b.clone())))
        .chain(decision.reasons.iter().map(|r| {
            let basis = cite(&r.basis);
            if basis.is_empty() {
                r.code.clone()
            } else {
                format!("{}: {basis}", r.code)
            }
        }))
        .collect();
    citations.dedup();
    Row {
        step,
        what,
        from,
        to,
        id: id.to_owned(),
        exchange,
        outcome: outcome.to_owned(),
        expected,
        citations,
        released: decision.released_categories,
        withheld: decision.withheld.iter().map(|w| w.category.clone()).collect(),
    }
}

struct Push {
    what: &'static str,
    from: &'static str,
    to: &'static str,
    person: usize,
    trigger: gw::Trigger,
    purpose: &'static str,
    facts: &'static [&'static str],
    exchange: &'static str,
    payload: prost_types::Any,
    expected: Expect,
}

async fn push(desk: &Desk, step: usize, p: Push) -> anyhow::Result<Row> {
    let (mut client, token) = desk.at(p.from)?;
    let id = format!("demo-{step:02}");
    let request = node_pb::SendRequest {
        list_record_ids: Vec::new(),
        transfer_id: id.clone(),
        recipient: p.to.into(),
        local_record_id: record_of(p.from, p.person).into(),
        trigger: p.trigger as i32,
        purpose: p.purpose.into(),
        payload: Some(p.payload),
        include_identity: false,
        attested_facts: p.facts.iter().map(|f| (*f).to_owned()).collect(),
        written_request: String::new(),
        case_reference: format!("demo-case-{step:02}"),
    };
    let answer = client
        .send(authorized(token, request)?)
        .await
        .with_context(|| format!("step {step}: {}", p.what))?
        .into_inner();
    Ok(row_from(
        step,
        p.what,
        (p.from, p.to),
        &id,
        p.exchange,
        p.expected,
        &answer,
    ))
}

struct Consent {
    what: &'static str,
    by: &'static str,
    to: &'static str,
    person: usize,
    categories: &'static [&'static str],
    evidence: &'static str,
}

async fn record_consent(desk: &Desk, step: usize, c: Consent) -> anyhow::Result<Row> {
    let (mut client, token) = desk.at(c.by)?;
    let now = time::OffsetDateTime::now_utc();
    let consent = consent_pb::ConsentRecord {
        institutions: vec![c.by.into(), c.to.into()],
        directions: vec![consent_pb::Direction {
            from: c.by.into(),
            to: c.to.into(),
        }],
        categories: c.categories.iter().map(|s| (*s).to_owned()).collect(),
        purposes: vec!["integration".into()],
        valid_from: stamp(now - time::Duration::hours(1)),
        valid_until: stamp(now + time::Duration::days(180)),
        written: true,
        evidence_sha256: ring::digest::digest(&ring::digest::SHA256, c.evidence.as_bytes())
            .as_ref()
            .to_vec(),
        evidence_reference: c.evidence.into(),
        recurrence: consent_pb::Recurrence::Recurring as i32,
        information_given: "Purpose, recipient and the right to revoke explained in writing.".into(),
        language: "fr".into(),
        ..consent_pb::ConsentRecord::default()
    };
    let request = node_pb::RecordConsentRequest {
        local_record_id: record_of(c.by, c.person).into(),
        consent: Some(consent),
    };
    let recorded = client
        .record_consent(authorized(token, request)?)
        .await
        .with_context(|| format!("step {step}: {}", c.what))?
        .into_inner();
    Ok(Row {
        step,
        what: c.what,
        from: c.by,
        to: c.to,
        id: recorded.consent_id,
        exchange: "consent",
        outcome: "recorded".into(),
        expected: Expect::Recorded,
        citations: Vec::new(),
        released: c.categories.iter().map(|s| (*s).to_owned()).collect(),
        withheld: Vec::new(),
    })
}

/// Plays the story; every row says what happened and what was expected.
pub async fn play(desk: &Desk) -> anyhow::Result<Vec<Row>> {
    use gw::Trigger::*;
    let mut rows = Vec::new();
    // 1. The ORP sees health problems behind a long unemployment: early detection to the AI office.
    rows.push(
        push(
            desk,
            1,
            Push {
                what: "early-detection report (person informed beforehand)",
                from: "ORP-VS",
                to: "AI-VS",
                person: 0,
                trigger: SpontaneousReport,
                purpose: "early_detection",
                facts: &["person_informed_before", "incapacity_for_work_or_threatened"],
                exchange: "EarlyDetectionReport",
                payload: any(
                    "EarlyDetectionReport",
                    &xt::EarlyDetectionReport {
                        person: person("Anna"),
                        employment_situation: "unemployed since 2025-09, 14 months".into(),
                        health_limitations: "back problems limit work as a warehouse clerk".into(),
                        ..xt::EarlyDetectionReport::default()
                    },
                ),
                expected: Expect::Permit,
            },
        )
        .await?,
    );
    // 2-3. Her entitlement ends: with her written consent, the ORP hands over to the social service.
    rows.push(
        record_consent(
            desk,
            2,
            Consent {
                what: "written consent to the fin-de-droits handover",
                by: "ORP-VS",
                to: "AS-VS",
                person: 0,
                categories: &[
                    "identity",
                    "contact",
                    "unemployment_benefits",
                    "job_search",
                    "labour_market_measures",
                    "case_coordination",
                ],
                evidence: "dms://orp-vs/consents/2026-0417-fdd",
            },
        )
        .await?,
    );
    rows.push(
        push(
            desk,
            3,
            Push {
                what: "fin-de-droits handover to the social service",
                from: "ORP-VS",
                to: "AS-VS",
                person: 0,
                trigger: SpontaneousReport,
                purpose: "integration",
                facts: &[],
                exchange: "EndOfEntitlementHandover",
                payload: any(
                    "EndOfEntitlementHandover",
                    &xt::EndOfEntitlementHandover {
                        person: person("Anna"),
                        entitlement_ends: "2026-12-31".into(),
                        job_search: "12 applications a month".into(),
                        measures: vec!["course: logistics basics".into()],
                        ..xt::EndOfEntitlementHandover::default()
                    },
                ),
                expected: Expect::Permit,
            },
        )
        .await?,
    );
    // 4. The AI office asks the social service for its file, without the written, reasoned request of LPGA art. 32.
    rows.push(pull(desk, 4, "", Expect::Deny).await?);
    // 5. The same request, written and reasoned: the social service's node answers what it published.
    publish_social_aid(desk).await?;
    rows.push(
        pull(
            desk,
            5,
            "Demande écrite et motivée (LPGA art. 32 al. 1) : examen du droit à une mesure de réadaptation.",
            Expect::Permit,
        )
        .await?,
    );
    // 6-9. A CII case: Luca consents to the case handover from the AI office to the social service, then revokes.
    let consent = record_consent(
        desk,
        6,
        Consent {
            what: "written consent to the CII case handover",
            by: "AI-VS",
            to: "AS-VS",
            person: 1,
            categories: &["identity", "case_coordination"],
            evidence: "dms://ai-vs/consents/2026-1187-cii",
        },
    )
    .await?;
    let consent_id = consent.id.clone();
    rows.push(consent);
    let handover = || {
        any(
            "CaseHandover",
            &xt::CaseHandover {
                person: person("Luca"),
                employment_situation: "unemployed, no entitlement".into(),
                lead_institution: "AS-VS".into(),
                lead_from: "2026-12-01".into(),
                agreement: "weekly coaching; review in 3 months".into(),
                ..xt::CaseHandover::default()
            },
        )
    };
    let case = |what: &'static str, expected: Expect| Push {
        what,
        from: "AI-VS",
        to: "AS-VS",
        person: 1,
        trigger: SpontaneousReport,
        purpose: "integration",
        facts: &[],
        exchange: "CaseHandover",
        payload: handover(),
        expected,
    };
    rows.push(push(desk, 7, case("CII case handover to the social service", Expect::Permit)).await?);
    rows.push(revoke(desk, 8, &consent_id).await?);
    rows.push(push(desk, 9, case("CII case handover after the revocation", Expect::Deny)).await?);
    Ok(rows)
}

async fn revoke(desk: &Desk, step: usize, consent_id: &str) -> anyhow::Result<Row> {
    let (mut client, token) = desk.at("AI-VS")?;
    let request = node_pb::RevokeConsentRequest {
        consent_id: consent_id.into(),
        local_record_id: record_of("AI-VS", 1).into(),
        channel: "letter".into(),
    };
    client
        .revoke_consent(authorized(token, request)?)
        .await
        .with_context(|| format!("step {step}: revoking the consent"))?;
    Ok(Row {
        step,
        what: "the person revokes the consent",
        from: "AI-VS",
        to: "AS-VS",
        id: consent_id.to_owned(),
        exchange: "consent",
        outcome: "revoked".into(),
        expected: Expect::Revoked,
        citations: Vec::new(),
        released: Vec::new(),
        withheld: Vec::new(),
    })
}

/// The social service publishes what it holds about Anna, for permitted pulls.
async fn publish_social_aid(desk: &Desk) -> anyhow::Result<()> {
    let (mut client, token) = desk.at("AS-VS")?;
    let data = xt::DataResponse {
        person: person("Anna"),
        social_aid_benefits: "social aid since 2026-01, CHF 2,110 a month".into(),
        employment_situation: "unemployed".into(),
        ..xt::DataResponse::default()
    };
    let request = node_pb::PublishRequest {
        local_record_id: record_of("AS-VS", 0).into(),
        data: Some(any("DataResponse", &data)),
    };
    client
        .publish(authorized(token, request)?)
        .await
        .context("publishing the social service's data")?;
    Ok(())
}

/// The AI office asks the social service (a pull, LPGA art. 32 al. 1).
async fn pull(desk: &Desk, step: usize, written_request: &str, expected: Expect) -> anyhow::Result<Row> {
    let (mut client, token) = desk.at("AI-VS")?;
    let id = format!("demo-{step:02}");
    let request = node_pb::RequestRequest {
        transfer_id: id.clone(),
        holder: "AS-VS".into(),
        local_record_id: record_of("AI-VS", 0).into(),
        purpose: "benefit_determination".into(),
        categories: vec!["identity".into(), "social_aid_benefits".into()],
        written_request: written_request.into(),
        trigger: gw::Trigger::WrittenRequest as i32,
        attested_facts: Vec::new(),
        case_reference: format!("demo-case-{step:02}"),
    };
    let answer = client
        .request(authorized(token, request)?)
        .await
        .with_context(|| format!("step {step}: the AI office's request"))?
        .into_inner();
    let what = if written_request.is_empty() {
        "request for the social-aid file, no written justification"
    } else {
        "the same request, written and reasoned"
    };
    // A pull discloses from the holder to the requester.
    Ok(row_from(
        step,
        what,
        ("AS-VS", "AI-VS"),
        &id,
        "DataResponse",
        expected,
        &answer,
    ))
}
