//! Every exchange of the catalogue, permitted once and refused once, through
//! the nodes' API (the cases not covered by `exchanges`: those are the early
//! detection report, the end-of-entitlement handover and the data response).

use std::collections::BTreeMap;

use cii_proto::common::decision::Outcome;
use cii_proto::consent as consent_pb;
use cii_proto::exchange as xt;
use cii_proto::gateway::{self as gw, transfer_response::State};
use cii_proto::node::{self as node_pb, node_client::NodeClient};
use cii_tests::{Network, member, with_token};
use cii_types::{InstitutionType, Role};
use prost::Message;

const PERSON: &str = "756.9217.0769.85";
const IDS: [&str; 6] = ["ORP-VS", "AI-VS", "AS-VS", "PC-VS", "MIG-VS", "SUVA-VS"];

fn members() -> Vec<cii_tests::Member> {
    vec![
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
        member("AS-VS", InstitutionType::As),
        member("PC-VS", InstitutionType::Pc),
        member("MIG-VS", InstitutionType::Mig),
        member("SUVA-VS", InstitutionType::Suva),
    ]
}

fn index(id: &str) -> usize {
    IDS.iter().position(|i| *i == id).expect("member")
}

fn any<M: Message>(name: &str, message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/cii.exchange.v1.{name}"),
        value: message.encode_to_vec(),
    }
}

fn person() -> Option<xt::PersonDetails> {
    Some(xt::PersonDetails {
        family_name: "Beispiel".into(),
        given_names: "Luca".into(),
        birth_date: "1975-11-02".into(),
    })
}

/// One exchange: who sends what to whom, how, and the outcome expected.
struct Case {
    name: &'static str,
    from: &'static str,
    to: &'static str,
    trigger: gw::Trigger,
    purpose: &'static str,
    facts: &'static [&'static str],
    written_request: &'static str,
    payload: prost_types::Any,
    permit: bool,
    /// The basis expected to carry a permit.
    basis: &'static str,
}

fn cases() -> Vec<Case> {
    let registration = any(
        "RegistrationNotice",
        &xt::RegistrationNotice {
            person: person(),
            employment_situation: "able to work 100 %".into(),
            residence_permit: "B (recognised refugee)".into(),
            ..xt::RegistrationNotice::default()
        },
    );
    let assessment = any(
        "EmployabilityAssessment",
        &xt::EmployabilityAssessment {
            person: person(),
            employability: "placeable in logistics".into(),
            job_search: "active".into(),
            ..xt::EmployabilityAssessment::default()
        },
    );
    let cost_bearer = any(
        "CostBearerExchange",
        &xt::CostBearerExchange {
            person: person(),
            employment_situation: "unemployed since 2026-02".into(),
            health_limitations: "reduced capacity 50 %".into(),
            ..xt::CostBearerExchange::default()
        },
    );
    let decision_copy = any(
        "DecisionCopy",
        &xt::DecisionCopy {
            person: person(),
            decision: "quarter pension from 2026-10".into(),
        },
    );
    let pc_referral = any(
        "PcReferral",
        &xt::PcReferral {
            person: person(),
            pc_benefits: "CHF 900 per month".into(),
            ..xt::PcReferral::default()
        },
    );
    let deregistration = any(
        "DeregistrationNotice",
        &xt::DeregistrationNotice {
            person: person(),
            deregistration: "found work 2026-11-15".into(),
            unemployment_benefits: "last payment 2026-11".into(),
        },
    );
    let refugee = any(
        "RefugeeNotification",
        &xt::RefugeeNotification {
            person: person(),
            residence_status: "F (provisionally admitted)".into(),
            employment_situation: "able to work".into(),
            ..xt::RefugeeNotification::default()
        },
    );
    let handover = any(
        "CaseHandover",
        &xt::CaseHandover {
            person: person(),
            lead_institution: "AS-VS".into(),
            lead_from: "2026-12-01".into(),
            agreement: "weekly coaching; review in 3 months".into(),
            ..xt::CaseHandover::default()
        },
    );
    let oral = any(
        "OralExchangeRecord",
        &xt::OralExchangeRecord {
            person: person(),
            held_at: "2026-11-20 phone call".into(),
            employment_situation: "unemployed".into(),
            health_limitations: "reduced capacity".into(),
        },
    );
    let statistics = any(
        "StatisticsReport",
        &xt::StatisticsReport {
            period: "2026-Q3".into(),
            figures: vec!["early_detection_reports=41".into()],
        },
    );
    use gw::Trigger::*;
    let case =
        |name, from, to, trigger, purpose, facts, written_request, payload: &prost_types::Any, permit, basis| Case {
            name,
            from,
            to,
            trigger,
            purpose,
            facts,
            written_request,
            payload: payload.clone(),
            permit,
            basis,
        };
    const REFUGEE: &[&str] = &[
        "refugee_or_provisionally_admitted",
        "employability_established",
        "unemployed",
    ];
    const UNCLEAR: &[&str] = &["cost_bearer_unclear", "no_overriding_private_interest"];
    const WRITTEN: &str = "Demande écrite et motivée : examen du droit aux prestations (LPGA art. 32).";
    vec![
        case(
            "registration notice",
            "AS-VS",
            "ORP-VS",
            MandatoryReport,
            "integration",
            REFUGEE,
            "",
            &registration,
            true,
            "LEI-53-5",
        ),
        case(
            "registration notice, no refugee status",
            "AS-VS",
            "ORP-VS",
            MandatoryReport,
            "integration",
            &["employability_established"],
            "",
            &registration,
            false,
            "",
        ),
        case(
            "employability assessment",
            "ORP-VS",
            "AS-VS",
            WrittenRequest,
            "benefit_determination",
            &["no_overriding_private_interest"],
            WRITTEN,
            &assessment,
            true,
            "LACI-97a-1-f",
        ),
        case(
            "employability assessment, no written request",
            "ORP-VS",
            "AS-VS",
            WrittenRequest,
            "benefit_determination",
            &[],
            "",
            &assessment,
            false,
            "",
        ),
        case(
            "cost-bearer exchange",
            "ORP-VS",
            "AI-VS",
            BilateralExchange,
            "claim_clarification_ac_ai",
            UNCLEAR,
            "",
            &cost_bearer,
            true,
            "LACI-85f-3",
        ),
        case(
            "cost-bearer exchange, cost bearer known",
            "ORP-VS",
            "AI-VS",
            BilateralExchange,
            "claim_clarification_ac_ai",
            &["no_overriding_private_interest"],
            "",
            &cost_bearer,
            false,
            "",
        ),
        case(
            "decision copy",
            "AI-VS",
            "AS-VS",
            MandatoryReport,
            "benefit_coordination",
            &["decision_affects_recipient_benefits"],
            "",
            &decision_copy,
            true,
            "LAI-68bis-5",
        ),
        case(
            "decision copy to the ORP (68bis al. 5 does not cover AC)",
            "AI-VS",
            "ORP-VS",
            MandatoryReport,
            "benefit_coordination",
            &[],
            "",
            &decision_copy,
            false,
            "",
        ),
        case(
            "PC referral",
            "PC-VS",
            "ORP-VS",
            WrittenRequest,
            "benefit_determination",
            &[],
            WRITTEN,
            &pc_referral,
            true,
            "LPGA-32-2",
        ),
        case(
            "PC referral to the migration office on its own initiative, no consent",
            "PC-VS",
            "MIG-VS",
            SpontaneousReport,
            "integration",
            &[],
            "",
            &pc_referral,
            false,
            "",
        ),
        case(
            "deregistration notice the AI asked for, under the LAI's duty",
            "ORP-VS",
            "AI-VS",
            MandatoryReport,
            "benefit_determination",
            &["ai_claim_filed", "no_overriding_private_interest"],
            "",
            &deregistration,
            true,
            "LACI-97a-1-b",
        ),
        case(
            "deregistration notice to the PC: no federal act imposes it",
            "ORP-VS",
            "PC-VS",
            MandatoryReport,
            "benefit_determination",
            &["no_overriding_private_interest"],
            "",
            &deregistration,
            false,
            "",
        ),
        case(
            "deregistration notice to the social service",
            "ORP-VS",
            "AS-VS",
            MandatoryReport,
            "benefit_determination",
            &[],
            "",
            &deregistration,
            false,
            "",
        ),
        case(
            "refugee notification",
            "AS-VS",
            "ORP-VS",
            MandatoryReport,
            "integration",
            REFUGEE,
            "",
            &refugee,
            true,
            "LEI-53-5",
        ),
        case(
            "refugee notification, employability not established",
            "AS-VS",
            "ORP-VS",
            MandatoryReport,
            "integration",
            &["refugee_or_provisionally_admitted"],
            "",
            &refugee,
            false,
            "",
        ),
        case(
            "case handover, before the consent",
            "AI-VS",
            "AS-VS",
            SpontaneousReport,
            "integration",
            &[],
            "",
            &handover,
            false,
            "",
        ),
        case(
            "oral exchange record",
            "ORP-VS",
            "AI-VS",
            BilateralExchange,
            "claim_clarification_ac_ai",
            UNCLEAR,
            "",
            &oral,
            true,
            "LACI-85f-3",
        ),
        case(
            "oral exchange record, cost bearer known",
            "ORP-VS",
            "AI-VS",
            BilateralExchange,
            "claim_clarification_ac_ai",
            &[],
            "",
            &oral,
            false,
            "",
        ),
        case(
            "statistics report",
            "AI-VS",
            "SUVA-VS",
            SpontaneousReport,
            "accident_risk_analysis",
            &["dataset_limited_to_laa_1a_1c"],
            "",
            &statistics,
            true,
            "LAI-66a-3",
        ),
        case(
            "statistics report to the social service",
            "AI-VS",
            "AS-VS",
            SpontaneousReport,
            "accident_risk_analysis",
            &["dataset_limited_to_laa_1a_1c"],
            "",
            &statistics,
            false,
            "",
        ),
    ]
}

/// The AI office records the person's written consent to a case handover to the social service.
fn handover_consent() -> consent_pb::ConsentRecord {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    consent_pb::ConsentRecord {
        institutions: vec!["AI-VS".into(), "AS-VS".into()],
        directions: vec![consent_pb::Direction {
            from: "AI-VS".into(),
            to: "AS-VS".into(),
        }],
        categories: vec!["identity".into(), "case_coordination".into()],
        purposes: vec!["integration".into()],
        valid_from: Some(prost_types::Timestamp {
            seconds: now - 3600,
            nanos: 0,
        }),
        valid_until: Some(prost_types::Timestamp {
            seconds: now + 90 * 24 * 3600,
            nanos: 0,
        }),
        written: true,
        evidence_sha256: vec![3; 32],
        evidence_reference: "dms://ai-vs/consents/2026-0777".into(),
        recurrence: consent_pb::Recurrence::Recurring as i32,
        information_given: "Handover to the social service explained; right to revoke explained.".into(),
        language: "de".into(),
        ..consent_pb::ConsentRecord::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_catalogue_exchange_is_permitted_in_its_case_and_refused_outside_it() {
    let net = Network::start(&members()).await;
    let node = |id: &str| NodeClient::new(net.node_api_channel(index(id)));
    let token = |id: &str| net.token(index(id), "caseworker.7", &[Role::Caseworker]);
    for id in IDS {
        node(id)
            .enrol(with_token(
                node_pb::EnrolRequest {
                    avs_number: PERSON.into(),
                    local_record_id: format!("{id}-9"),
                },
                &token(id),
            ))
            .await
            .expect("enrol");
    }
    // The social service supports the person (the reference directory says so): the AI office's
    // decision copy touches its benefits (LAI art. 68bis al. 5).
    node("AS-VS")
        .declare_relationship(with_token(
            node_pb::RelationshipRequest {
                local_record_id: "AS-VS-9".into(),
                capacity: "social_aid".into(),
                at: None,
            },
            &token("AS-VS"),
        ))
        .await
        .expect("relationship");
    let mut cases = cases();
    // The consent-based handover, after the consent is recorded.
    let handover_payload = cases
        .iter()
        .find(|c| c.name.starts_with("case handover"))
        .expect("case")
        .payload
        .clone();
    let mut delivered: BTreeMap<&str, usize> = BTreeMap::new();
    let mut run = async |n: usize, c: &Case| {
        let statistics = c.payload.type_url.ends_with("StatisticsReport");
        let answer = node(c.from)
            .send(with_token(
                node_pb::SendRequest {
                    list_record_ids: Vec::new(),
                    case_reference: "case-1".into(),
                    transfer_id: format!("cat-{n}"),
                    recipient: c.to.into(),
                    local_record_id: if statistics {
                        String::new()
                    } else {
                        format!("{}-9", c.from)
                    },
                    trigger: c.trigger as i32,
                    purpose: c.purpose.into(),
                    payload: Some(c.payload.clone()),
                    include_identity: false,
                    attested_facts: c.facts.iter().map(|f| (*f).to_owned()).collect(),
                    written_request: c.written_request.into(),
                },
                &token(c.from),
            ))
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", c.name))
            .into_inner();
        let decision = answer.decision.expect("decision");
        let outcome = Outcome::try_from(decision.outcome).expect("outcome");
        if c.basis == "LAI-68bis-5" {
            // The copy goes only to an institution that serves the person, which the AI office
            // may not learn from the answer: permitted, delivered, and not told.
            assert_eq!(State::try_from(answer.state), Ok(State::Undisclosed), "{}", c.name);
            assert_eq!(outcome, Outcome::Unspecified, "{}", c.name);
            assert!(decision.bases.is_empty() && decision.released_categories.is_empty());
            assert!(answer.entry_withheld && answer.receipt.as_ref().is_some_and(|r| r.entry.is_empty()));
            *delivered.entry(c.to).or_default() += 1;
        } else if c.permit {
            assert_eq!(outcome, Outcome::Permit, "{}: {:?}", c.name, decision.reasons);
            assert!(
                decision.bases.iter().any(|b| b.id == c.basis),
                "{}: {:?}",
                c.name,
                decision.bases
            );
            assert_eq!(State::try_from(answer.state), Ok(State::Delivered), "{}", c.name);
            *delivered.entry(c.to).or_default() += 1;
        } else {
            assert_eq!(outcome, Outcome::Deny, "{}: {:?}", c.name, decision.bases);
            assert!(!decision.reasons.is_empty(), "{}: a refusal says why", c.name);
            assert!(
                decision
                    .reasons
                    .iter()
                    .all(|r| r.code == "NO_MATCHING_BASIS" || r.basis.is_some()),
                "{}: every reason names its basis",
                c.name
            );
            assert_eq!(State::try_from(answer.state), Ok(State::Denied), "{}", c.name);
        }
    };
    for (n, c) in cases.iter().enumerate() {
        run(n, c).await;
    }
    node("AI-VS")
        .record_consent(with_token(
            node_pb::RecordConsentRequest {
                local_record_id: "AI-VS-9".into(),
                consent: Some(handover_consent()),
            },
            &token("AI-VS"),
        ))
        .await
        .expect("record consent");
    cases.push(Case {
        name: "case handover with written consent",
        from: "AI-VS",
        to: "AS-VS",
        trigger: gw::Trigger::SpontaneousReport,
        purpose: "integration",
        facts: &[],
        written_request: "",
        payload: handover_payload,
        permit: true,
        basis: "LAVS-50a-4-b",
    });
    let last = cases.len() - 1;
    run(last, &cases[last]).await;

    // Refused transfers arrived nowhere: each inbox holds exactly the permitted ones (an
    // undisclosed one goes out through the outbox, after its answer).
    for id in IDS {
        let expected = delivered.get(id).copied().unwrap_or(0);
        let mut items = Vec::new();
        for _ in 0..100 {
            items = node(id)
                .list_inbox(with_token(node_pb::ListInboxRequest { limit: 100 }, &token(id)))
                .await
                .expect("inbox")
                .into_inner()
                .items;
            if items.len() >= expected {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(items.len(), expected, "inbox of {id}");
        for item in &items {
            let is_statistics = item
                .payload
                .as_ref()
                .is_some_and(|p| p.type_url.ends_with("StatisticsReport"));
            assert_eq!(
                item.local_record_id.is_empty(),
                is_statistics,
                "{id} recognises the person in every delivery but the statistics"
            );
        }
    }
    // The written request travelled to the recipient.
    let assessment = node("AS-VS")
        .list_inbox(with_token(node_pb::ListInboxRequest { limit: 100 }, &token("AS-VS")))
        .await
        .expect("inbox")
        .into_inner()
        .items
        .into_iter()
        .find(|i| {
            i.payload
                .as_ref()
                .is_some_and(|p| p.type_url.ends_with("EmployabilityAssessment"))
        })
        .expect("the assessment arrived");
    assert!(assessment.written_request.starts_with("Demande écrite"));

    // The log names the user and the attestations, and the written request by its hash only.
    let dir = net.stop().await;
    let entries = cii_tests::audit_entries(dir.path()).await;
    let by_id = |id: &str| entries.iter().find(|e| e.transfer_id == id).expect("entry");
    let registration = by_id("cat-0");
    assert_eq!(registration.acting_user, "caseworker.7@AS-VS");
    assert_eq!(
        registration.attestations,
        [
            "refugee_or_provisionally_admitted",
            "employability_established",
            "unemployed"
        ]
    );
    assert_eq!(registration.bases, ["LEI-53-5"]);
    assert_eq!(registration.case_reference, "case-1");
    // The decision copy's entry keeps what the directory said, for a replay under another rulebook.
    let copy = entries
        .iter()
        .find(|e| e.bases == ["LAI-68bis-5"])
        .expect("the decision copy's entry");
    assert!(
        copy.network_facts.contains(&"recipient_serves_person".to_owned()),
        "{copy:?}"
    );
    let written = by_id("cat-2");
    let digest = ring::digest::digest(&ring::digest::SHA256, assessment.written_request.as_bytes());
    assert_eq!(written.written_request_sha256, digest.as_ref());
    assert_eq!(
        written.audit_pseudonym.len(),
        64,
        "the person, as a ciphertext for the DPO context"
    );
    let refused = by_id("cat-1");
    assert_eq!(refused.kind, cii_audit::EntryKind::TransferDenied as i32);
    assert!(!refused.reasons.is_empty());
    assert!(refused.released.is_empty() && refused.consents.is_empty());
}
