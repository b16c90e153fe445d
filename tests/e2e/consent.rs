//! The consent registry over gRPC on both stores: consents cover exactly
//! their scope and period, a revocation holds for the next lookup, history
//! keeps every version, the directory answers only yes or no, bad input is
//! refused with a stable code and stores nothing, and only the gateway gets in.

use cii_kit::grpc::{error_code, error_field};
use cii_proto::consent::{self as pb, consent_registry_client::ConsentRegistryClient};
use cii_tests::{Network, Options, member};
use cii_types::{InstitutionType, PeerIdentity};
use tonic::Code;
use tonic::transport::Channel;

const PERSON: &str = "756.1234.5678.97";
const OTHER_PERSON: &str = "756.9217.0769.85";
const DAY: i64 = 24 * 3600;

/// A change that makes a request invalid.
type Mutation = Box<dyn Fn(&mut pb::RecordConsentRequest)>;

fn members() -> Vec<cii_tests::Member> {
    vec![
        member("ORP-VS", InstitutionType::AcOrp),
        member("AI-VS", InstitutionType::Ai),
        member("AS-VS", InstitutionType::As),
    ]
}

/// Networks with the registry on SQLite and on PostgreSQL.
async fn networks() -> Vec<(&'static str, Network)> {
    let postgres = Options {
        consent_database: Some(cii_tests::pg::fresh_database().await),
        ..Options::default()
    };
    let two_transcryptors = Options {
        two_transcryptors: true,
        ..Options::default()
    };
    vec![
        ("sqlite", Network::start(&members()).await),
        ("postgres", Network::start_with(&members(), postgres).await),
        (
            "two transcryptors",
            Network::start_with(&members(), two_transcryptors).await,
        ),
    ]
}

fn registry(net: &Network) -> ConsentRegistryClient<Channel> {
    ConsentRegistryClient::new(net.consent_channel_as(&PeerIdentity::Gateway))
}

fn actor(institution: &str, user: &str) -> Option<pb::Actor> {
    Some(pb::Actor {
        institution: institution.into(),
        user: user.into(),
    })
}

fn at(offset_days: i64) -> Option<prost_types::Timestamp> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Some(prost_types::Timestamp {
        seconds: now + offset_days * DAY,
        nanos: 0,
    })
}

/// ORP and AI exchange job-search data for integration, ORP → AI only, for a year.
fn declaration() -> pb::ConsentRecord {
    cii_tests::consent_declaration()
}

fn lookup(
    net: &Network,
    sender: &str,
    recipient: &str,
    categories: &[&str],
    purpose: &str,
    day: i64,
) -> pb::LookupRequest {
    pb::LookupRequest {
        person: Some(net.registry_ciphertext(PERSON)),
        sender: sender.into(),
        recipient: recipient.into(),
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        purpose: purpose.into(),
        // Day 0 is "now" on the registry's clock (to the microsecond).
        at: if day == 0 { None } else { at(day) },
        transfer: String::new(),
    }
}

async fn ask(net: &Network, request: pb::LookupRequest) -> pb::LookupResponse {
    registry(net).lookup(request).await.expect("lookup").into_inner()
}

fn reasons(answer: &pb::LookupResponse) -> Vec<String> {
    answer.not_covering.iter().flat_map(|n| n.reasons.clone()).collect()
}

/// A change recorded held is not in force until activated, except a revocation (both stores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_consent_covers_nothing_until_activated_and_a_held_revocation_counts_at_once() {
    for (store, net) in networks().await {
        let mut client = registry(&net);
        let held = |log_size: u64| {
            Some(pb::HeldChange {
                log_size,
                entry_draft: vec![1, 2, 3],
            })
        };
        let recorded = client
            .record_consent(pb::RecordConsentRequest {
                held: held(7),
                actor: actor("ORP-VS", "anna.meier"),
                person: Some(net.registry_ciphertext(PERSON)),
                consent: Some(declaration()),
            })
            .await
            .expect("record held")
            .into_inner();
        let covering = |answer: &pb::LookupResponse| answer.consents.len();
        let ask_now = || ask(&net, lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", 0));
        assert_eq!(covering(&ask_now().await), 0, "{store}: held covers nothing");
        let listed = client
            .list_held_changes(pb::ListHeldChangesRequest { limit: 0 })
            .await
            .expect("held")
            .into_inner()
            .changes;
        assert_eq!(listed.len(), 1, "{store}");
        assert_eq!((listed[0].version, listed[0].held.clone()), (1, held(7)), "{store}");
        let activate = pb::ActivateChangeRequest {
            consent_id: recorded.consent_id.clone(),
            version: 1,
        };
        let first = client
            .activate_change(activate.clone())
            .await
            .expect("activate")
            .into_inner();
        let again = client.activate_change(activate).await.expect("again").into_inner();
        assert!(first.was_held && !again.was_held, "{store}");
        assert_eq!(covering(&ask_now().await), 1, "{store}: active once activated");
        // A new version held (not logged yet): the active one still covers, and the person
        // can still revoke (the revocation numbered after the held version).
        let amended = client
            .record_consent(pb::RecordConsentRequest {
                held: held(8),
                actor: actor("ORP-VS", "anna.meier"),
                person: Some(net.registry_ciphertext(PERSON)),
                consent: Some(pb::ConsentRecord {
                    consent_id: recorded.consent_id.clone(),
                    ..declaration()
                }),
            })
            .await
            .expect("amend held")
            .into_inner();
        assert_eq!(amended.version, 2, "{store}");
        assert_eq!(
            covering(&ask_now().await),
            1,
            "{store}: the active version still covers"
        );
        client
            .revoke_consent(pb::RevokeConsentRequest {
                held: held(9),
                actor: actor("AI-VS", "bruno.rey"),
                consent_id: recorded.consent_id.clone(),
                channel: "in_person".into(),
                person: None,
            })
            .await
            .expect("revoke held, a new version held too");
        assert_eq!(covering(&ask_now().await), 0, "{store}: a held revocation counts");
        assert_eq!(reasons(&ask_now().await), vec!["REVOKED".to_owned()], "{store}");
        // Two held (the new version, the revocation), listed a page at a time, oldest first.
        let page = |limit| {
            let mut client = client.clone();
            async move {
                client
                    .list_held_changes(pb::ListHeldChangesRequest { limit })
                    .await
                    .expect("held")
                    .into_inner()
                    .changes
                    .iter()
                    .map(|c| c.version)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!((page(1).await, page(0).await), (vec![2], vec![2, 3]), "{store}");
        net.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_covers_its_scope_until_revoked_and_keeps_its_history() {
    for (store, net) in networks().await {
        let mut client = registry(&net);
        let recorded = client
            .record_consent(pb::RecordConsentRequest {
                held: None,
                actor: actor("ORP-VS", "anna.meier"),
                person: Some(net.registry_ciphertext(PERSON)),
                consent: Some(declaration()),
            })
            .await
            .expect("record")
            .into_inner();
        assert_eq!(recorded.version, 1, "{store}");
        assert_eq!(recorded.status, pb::ConsentStatus::ConsentActive as i32);
        assert_eq!(
            (recorded.recorded_by.as_str(), recorded.recorded_by_user.as_str()),
            ("ORP-VS", "anna.meier")
        );

        // Covered, with the categories it covers.
        let answer = ask(
            &net,
            lookup(
                &net,
                "ORP-VS",
                "AI-VS",
                &["job_search", "health_limitations"],
                "integration",
                0,
            ),
        )
        .await;
        assert_eq!(answer.consents.len(), 1, "{store}");
        assert_eq!(answer.consents[0].covered_categories, vec!["job_search"]);
        assert_eq!(answer.consents[0].uncovered_categories, vec!["health_limitations"]);
        // Not covered, with the reason.
        for (request, reason) in [
            (
                lookup(&net, "ORP-VS", "AI-VS", &["health_limitations"], "integration", 0),
                "CATEGORIES_NOT_COVERED",
            ),
            (
                lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "benefit_determination", 0),
                "PURPOSE_NOT_COVERED",
            ),
            (
                lookup(&net, "ORP-VS", "AS-VS", &["job_search"], "integration", 0),
                "RECIPIENT_NOT_COVERED",
            ),
            (
                lookup(&net, "AI-VS", "ORP-VS", &["job_search"], "integration", 0),
                "DIRECTION_NOT_COVERED",
            ),
            (
                lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", 400),
                "EXPIRED",
            ),
            (
                lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", -3),
                "NOT_YET_VALID",
            ),
        ] {
            let answer = ask(&net, request).await;
            assert!(answer.consents.is_empty(), "{store} {reason}");
            assert_eq!(reasons(&answer), vec![reason.to_owned()], "{store}");
        }
        // Another person's lookup finds nothing.
        let mut other = lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", 0);
        other.person = Some(net.registry_ciphertext(OTHER_PERSON));
        let answer = ask(&net, other).await;
        assert!(answer.consents.is_empty() && answer.not_covering.is_empty(), "{store}");

        // A change is a new version.
        let mut change = declaration();
        change.consent_id = recorded.consent_id.clone();
        change.categories.push("health_limitations".into());
        let changed = client
            .record_consent(pb::RecordConsentRequest {
                held: None,
                actor: actor("AI-VS", "bruno.rey"),
                person: Some(net.registry_ciphertext(PERSON)),
                consent: Some(change.clone()),
            })
            .await
            .expect("change")
            .into_inner();
        assert_eq!(
            (changed.consent_id.as_str(), changed.version),
            (recorded.consent_id.as_str(), 2)
        );
        // Not for another person.
        let err = client
            .record_consent(pb::RecordConsentRequest {
                held: None,
                actor: actor("AI-VS", "bruno.rey"),
                person: Some(net.registry_ciphertext(OTHER_PERSON)),
                consent: Some(change.clone()),
            })
            .await
            .expect_err("other person");
        assert_eq!(error_code(&err).as_deref(), Some("CONSENT_PERSON_MISMATCH"));

        // Revoking names the person; another person's revocation does not touch it.
        let err = client
            .revoke_consent(pb::RevokeConsentRequest {
                held: None,
                actor: actor("AI-VS", "bruno.rey"),
                consent_id: recorded.consent_id.clone(),
                channel: "letter".into(),
                person: Some(net.registry_ciphertext(OTHER_PERSON)),
            })
            .await
            .expect_err("another person");
        assert_eq!(error_code(&err).as_deref(), Some("CONSENT_PERSON_MISMATCH"));
        // Revoked: the very next lookup says so.
        let revoked = client
            .revoke_consent(pb::RevokeConsentRequest {
                held: None,
                actor: actor("AI-VS", "bruno.rey"),
                consent_id: recorded.consent_id.clone(),
                channel: "letter".into(),
                person: Some(net.registry_ciphertext(PERSON)),
            })
            .await
            .expect("revoke")
            .into_inner();
        assert_eq!(revoked.status, pb::ConsentStatus::ConsentRevoked as i32);
        assert_eq!(revoked.version, 3);
        let revocation = revoked.revocation.expect("revocation");
        assert_eq!(
            (
                revocation.institution.as_str(),
                revocation.user.as_str(),
                revocation.channel.as_str()
            ),
            ("AI-VS", "bruno.rey", "letter")
        );
        let answer = ask(&net, lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", 0)).await;
        assert!(answer.consents.is_empty(), "{store}: revoked consent still covers");
        assert_eq!(reasons(&answer), vec!["REVOKED".to_owned()]);
        // A revoked consent cannot be changed or revoked again.
        let err = client
            .record_consent(pb::RecordConsentRequest {
                held: None,
                actor: actor("AI-VS", "bruno.rey"),
                person: Some(net.registry_ciphertext(PERSON)),
                consent: Some(change),
            })
            .await
            .expect_err("change after revocation");
        assert_eq!(error_code(&err).as_deref(), Some("CONSENT_NOT_ACTIVE"));

        // History: every version, oldest first.
        let history = client
            .get_consent(pb::GetConsentRequest {
                actor: actor("ORP-VS", "anna.meier"),
                consent_id: recorded.consent_id.clone(),
            })
            .await
            .expect("history")
            .into_inner();
        let versions: Vec<u32> = history.versions.iter().map(|v| v.version).collect();
        assert_eq!(versions, vec![1, 2, 3], "{store}");
        assert_eq!(history.versions[1].categories.len(), 3);
        // An institution the consent does not cover does not learn that it exists.
        let err = client
            .get_consent(pb::GetConsentRequest {
                actor: actor("AS-VS", "carla"),
                consent_id: recorded.consent_id.clone(),
            })
            .await
            .expect_err("not covered");
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(error_code(&err).as_deref(), Some("CONSENT_NOT_FOUND"));
        // The person's list, for a covered institution.
        let list = client
            .list_consents(pb::ListConsentsRequest {
                actor: actor("AI-VS", "bruno.rey"),
                person: Some(net.registry_ciphertext(PERSON)),
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(list.consents.len(), 1);
        assert_eq!(list.consents[0].version, 3);
        // The change feed carries the revocation, for the gateway to notify.
        let changes = client
            .list_changes(pb::ListChangesRequest { after: 0, limit: 0 })
            .await
            .expect("changes")
            .into_inner()
            .changes;
        assert_eq!(changes.len(), 1, "{store}");
        assert_eq!(changes[0].consent_id, recorded.consent_id);
        assert_eq!(changes[0].version, 3);
        assert_eq!(changes[0].kind, pb::ChangeKind::ChangeRevoked as i32);
        assert_eq!(changes[0].institutions, vec!["AI-VS", "ORP-VS"]);
        net.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_enters_the_change_feed_and_expiring_consents_are_listed() {
    for (store, net) in networks().await {
        let mut client = registry(&net);
        // Ends in two seconds; the test registry sweeps every second.
        let mut short = declaration();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        short.valid_until = Some(prost_types::Timestamp {
            seconds: now + 2,
            nanos: 0,
        });
        let recorded = client
            .record_consent(pb::RecordConsentRequest {
                held: None,
                actor: actor("ORP-VS", "anna.meier"),
                person: Some(net.registry_ciphertext(PERSON)),
                consent: Some(short),
            })
            .await
            .expect("record")
            .into_inner();
        let expiring = client
            .list_expiring(pb::ListExpiringRequest {
                actor: actor("AI-VS", "bruno.rey"),
                within_days: 1,
            })
            .await
            .expect("expiring")
            .into_inner();
        assert_eq!(expiring.consents.len(), 1, "{store}");
        let none_for_as = client
            .list_expiring(pb::ListExpiringRequest {
                actor: actor("AS-VS", "carla"),
                within_days: 30,
            })
            .await
            .expect("expiring")
            .into_inner();
        assert!(none_for_as.consents.is_empty(), "{store}: AS is not covered");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let change = loop {
            let changes = client
                .list_changes(pb::ListChangesRequest { after: 0, limit: 10 })
                .await
                .expect("changes")
                .into_inner()
                .changes;
            if let Some(c) = changes.into_iter().next() {
                break c;
            }
            assert!(std::time::Instant::now() < deadline, "{store}: expiry never reported");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert_eq!(change.consent_id, recorded.consent_id);
        assert_eq!(change.kind, pb::ChangeKind::ChangeExpired as i32);
        // And the lookup now says expired.
        let answer = ask(&net, lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", 0)).await;
        assert_eq!(reasons(&answer), vec!["EXPIRED".to_owned()], "{store}");
        // Reported once, however many sweeps run.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let changes = client
            .list_changes(pb::ListChangesRequest { after: 0, limit: 10 })
            .await
            .expect("changes")
            .into_inner()
            .changes;
        assert_eq!(changes.len(), 1, "{store}");
        net.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_answers_whether_an_institution_serves_a_person() {
    for (store, net) in networks().await {
        let mut client = registry(&net);
        let serves = |answer: &pb::LookupResponse| (answer.sender_serves_person, answer.recipient_serves_person);
        let question = || lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", 0);
        assert_eq!(serves(&ask(&net, question()).await), (false, false), "{store}");
        let relationship = |institution: &str| pb::RelationshipRequest {
            person: Some(net.registry_ciphertext(PERSON)),
            actor: actor(institution, "caseworker"),
            capacity: "ai_integration_measure".into(),
            at: None,
        };
        let declared = client
            .declare_relationship(relationship("AI-VS"))
            .await
            .expect("declare")
            .into_inner();
        assert!(declared.active);
        // Declaring twice changes nothing.
        client
            .declare_relationship(relationship("AI-VS"))
            .await
            .expect("declare again");
        assert_eq!(serves(&ask(&net, question()).await), (false, true), "{store}");
        let mut orp = relationship("ORP-VS");
        orp.capacity = "registered_job_seeker".into();
        client.declare_relationship(orp.clone()).await.expect("declare ORP");
        assert_eq!(serves(&ask(&net, question()).await), (true, true), "{store}");
        // Another person is not served.
        let mut other = question();
        other.person = Some(net.registry_ciphertext(OTHER_PERSON));
        assert_eq!(serves(&ask(&net, other).await), (false, false), "{store}");
        // Ended: no longer.
        let ended = client
            .end_relationship(relationship("AI-VS"))
            .await
            .expect("end")
            .into_inner();
        assert!(!ended.active);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(serves(&ask(&net, question()).await), (true, false), "{store}");
        let err = client
            .end_relationship(relationship("AI-VS"))
            .await
            .expect_err("end twice");
        assert_eq!(error_code(&err).as_deref(), Some("RELATIONSHIP_NOT_FOUND"));
        let mut bad = relationship("AI-VS");
        bad.capacity = "Job Seeker".into();
        let err = client.declare_relationship(bad).await.expect_err("bad capacity");
        assert_eq!(error_code(&err).as_deref(), Some("CAPACITY_INVALID"));
        net.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_declarations_get_a_stable_code_and_the_field_and_store_nothing() {
    for (store, net) in networks().await {
        let mut client = registry(&net);
        let cases: Vec<(&str, &str, Mutation)> = vec![
            (
                "UNKNOWN_INSTITUTION",
                "consent.institutions",
                Box::new(|r| {
                    r.consent.as_mut().unwrap().institutions.push("AI".into());
                }),
            ),
            (
                "UNKNOWN_INSTITUTION",
                "actor.institution",
                Box::new(|r| r.actor = actor("XX-XX", "anna")),
            ),
            ("ACTOR_REQUIRED", "actor", Box::new(|r| r.actor = None)),
            (
                "SCOPE_EMPTY",
                "consent.categories",
                Box::new(|r| r.consent.as_mut().unwrap().categories.clear()),
            ),
            (
                "SCOPE_EMPTY",
                "consent.purposes",
                Box::new(|r| r.consent.as_mut().unwrap().purposes.clear()),
            ),
            (
                "SCOPE_EMPTY",
                "consent.directions",
                Box::new(|r| r.consent.as_mut().unwrap().directions.clear()),
            ),
            (
                "VALIDITY_INVERTED",
                "consent.valid_until",
                Box::new(|r| {
                    let c = r.consent.as_mut().unwrap();
                    c.valid_from = at(10);
                    c.valid_until = at(5);
                }),
            ),
            (
                "VALIDITY_PAST",
                "consent.valid_until",
                Box::new(|r| {
                    let c = r.consent.as_mut().unwrap();
                    c.valid_from = at(-10);
                    c.valid_until = at(-5);
                }),
            ),
            (
                "VALIDITY_REQUIRED",
                "consent.valid_from",
                Box::new(|r| r.consent.as_mut().unwrap().valid_from = None),
            ),
            (
                "EVIDENCE_REFERENCE_TOO_LONG",
                "consent.evidence_reference",
                Box::new(|r| {
                    r.consent.as_mut().unwrap().evidence_reference = "d".repeat(300);
                }),
            ),
            (
                "UNKNOWN_CATEGORY",
                "consent.categories",
                Box::new(|r| {
                    r.consent.as_mut().unwrap().categories.push("everything".into());
                }),
            ),
            (
                "RECURRENCE_REQUIRED",
                "consent.recurrence",
                Box::new(|r| r.consent.as_mut().unwrap().recurrence = 0),
            ),
            (
                "CIPHERTEXT_LENGTH",
                "person.ciphertext",
                Box::new(|r| {
                    r.person = Some(cii_proto::common::EncryptedPseudonym {
                        ciphertext: vec![1; 10],
                    });
                }),
            ),
            ("FIELD_REQUIRED", "person", Box::new(|r| r.person = None)),
        ];
        for (code, field, change) in cases {
            let mut request = pb::RecordConsentRequest {
                held: None,
                actor: actor("ORP-VS", "anna.meier"),
                person: Some(net.registry_ciphertext(PERSON)),
                consent: Some(declaration()),
            };
            change(&mut request);
            let err = client.record_consent(request).await.expect_err(code);
            assert_eq!(err.code(), Code::InvalidArgument, "{store} {code}");
            assert_eq!(error_code(&err).as_deref(), Some(code), "{store}: {err:?}");
            assert_eq!(error_field(&err).as_deref(), Some(field), "{store} {code}");
        }
        let err = client
            .revoke_consent(pb::RevokeConsentRequest {
                held: None,
                actor: actor("ORP-VS", "anna"),
                consent_id: "c-000".into(),
                channel: "pigeon".into(),
                person: None,
            })
            .await
            .expect_err("channel");
        assert_eq!(error_code(&err).as_deref(), Some("CHANNEL_UNKNOWN"));
        // Nothing was stored.
        let list = client
            .list_consents(pb::ListConsentsRequest {
                actor: actor("ORP-VS", "anna.meier"),
                person: Some(net.registry_ciphertext(PERSON)),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(list.consents.is_empty(), "{store}: {:?}", list.consents);
        net.stop().await;
    }
}

#[tokio::test]
async fn only_the_gateway_reaches_the_registry() {
    let net = Network::start(&members()).await;
    let as_institution =
        ConsentRegistryClient::new(net.consent_channel_as(&PeerIdentity::Institution(net.node(0).member.id.clone())))
            .list_changes(pb::ListChangesRequest::default())
            .await
            .expect_err("an institution's certificate is refused");
    assert!(
        error_code(&as_institution).is_none(),
        "refused in the handshake: {as_institution:?}"
    );
    net.stop().await;
}

/// Institutions reach the registry through their node and the gateway: the person travels as
/// each institution's own pseudonym and arrives as the same registry pseudonym; the actor is
/// the caller; every change is an audit entry the DPO can tie to the person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn institutions_manage_consents_through_their_node_and_every_change_is_logged() {
    use cii_proto::gateway::{GetConsentRequest, ListExpiringConsentsRequest};
    use cii_proto::node::{self as node_pb, node_client::NodeClient};
    use cii_tests::with_token;
    use cii_types::Role;

    let net = Network::start(&members()).await;
    let node = |i: usize| NodeClient::new(net.node_api_channel(i));
    let token = |i: usize| net.token(i, if i == 0 { "anna.meier" } else { "bruno.rey" }, &[Role::Caseworker]);
    for (i, record) in [(0, "ORP-1"), (1, "AI-1")] {
        node(i)
            .enrol(with_token(
                node_pb::EnrolRequest {
                    avs_number: PERSON.into(),
                    local_record_id: record.into(),
                },
                &token(i),
            ))
            .await
            .expect("enrol");
    }
    let recorded = node(0)
        .record_consent(with_token(
            node_pb::RecordConsentRequest {
                local_record_id: "ORP-1".into(),
                consent: Some(declaration()),
            },
            &token(0),
        ))
        .await
        .expect("record through ORP's node")
        .into_inner();
    assert_eq!(
        (recorded.recorded_by.as_str(), recorded.recorded_by_user.as_str()),
        ("ORP-VS", "anna.meier")
    );
    // The registry knows the person under its own pseudonym, whichever domain they came from.
    let answer = ask(&net, lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", 0)).await;
    assert_eq!(
        answer.consents.len(),
        1,
        "ORP's pseudonym reached the registry as the same person"
    );
    let listed = node(1)
        .list_consents(with_token(
            node_pb::ListConsentsRequest {
                local_record_id: "AI-1".into(),
            },
            &token(1),
        ))
        .await
        .expect("list through AI's node")
        .into_inner();
    assert_eq!(listed.consents.len(), 1, "AI finds the consent under its own record");
    let expiring = node(1)
        .list_expiring_consents(with_token(ListExpiringConsentsRequest { within_days: 366 }, &token(1)))
        .await
        .expect("expiring")
        .into_inner();
    assert_eq!(expiring.consents.len(), 1);
    node(1)
        .declare_relationship(with_token(
            node_pb::RelationshipRequest {
                local_record_id: "AI-1".into(),
                capacity: "ai_integration_measure".into(),
                at: None,
            },
            &token(1),
        ))
        .await
        .expect("declare through AI's node");
    assert!(
        ask(&net, lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", 0))
            .await
            .recipient_serves_person
    );
    let revoked = node(1)
        .revoke_consent(with_token(
            node_pb::RevokeConsentRequest {
                consent_id: recorded.consent_id.clone(),
                local_record_id: "AI-1".into(),
                channel: "in_person".into(),
            },
            &token(1),
        ))
        .await
        .expect("revoke through AI's node")
        .into_inner();
    assert_eq!(revoked.version, 2);
    assert_eq!(
        reasons(&ask(&net, lookup(&net, "ORP-VS", "AI-VS", &["job_search"], "integration", 0)).await),
        vec!["REVOKED".to_owned()]
    );

    // Refusals pass through with their code and field.
    let mut empty = declaration();
    empty.categories.clear();
    let err = node(0)
        .record_consent(with_token(
            node_pb::RecordConsentRequest {
                local_record_id: "ORP-1".into(),
                consent: Some(empty),
            },
            &token(0),
        ))
        .await
        .expect_err("empty scope");
    assert_eq!(error_code(&err).as_deref(), Some("SCOPE_EMPTY"));
    assert_eq!(error_field(&err).as_deref(), Some("consent.categories"));
    let err = node(0)
        .list_consents(with_token(
            node_pb::ListConsentsRequest {
                local_record_id: "NOBODY".into(),
            },
            &token(0),
        ))
        .await
        .expect_err("not enrolled");
    assert_eq!(error_code(&err).as_deref(), Some("NOT_ENROLLED"));
    let err = node(2)
        .get_consent(with_token(
            GetConsentRequest {
                consent_id: recorded.consent_id.clone(),
            },
            &net.token(2, "carla", &[Role::Caseworker]),
        ))
        .await
        .expect_err("AS is not covered");
    assert_eq!(error_code(&err).as_deref(), Some("CONSENT_NOT_FOUND"));

    // The log: enrolments, then the three changes, each tied to the same person for the DPO.
    let dir = net.stop().await;
    let entries = cii_tests::audit_entries(dir.path()).await;
    let read = |f: &str| std::fs::read_to_string(dir.path().join("keys").join(f)).expect("key file");
    let dpo =
        cii_pseudonym::node::NodeKeys::from_json(&read("global-public.json"), &read("dpo/audit-session-keys.json"))
            .expect("dpo keys");
    use cii_audit::EntryKind::*;
    let changes: Vec<(i32, &str, Vec<String>)> = entries
        .iter()
        .filter(|e| e.kind != RulebookActivated as i32 && e.kind != RegistryActivated as i32)
        .map(|e| (e.kind, e.sender.as_str(), e.consents.clone()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (Enrolment as i32, "ORP-VS", vec![]),
            (Enrolment as i32, "AI-VS", vec![]),
            (
                ConsentRecorded as i32,
                "ORP-VS",
                vec![format!("{}@1", recorded.consent_id)]
            ),
            (RelationshipDeclared as i32, "AI-VS", vec![]),
            (
                ConsentRevoked as i32,
                "AI-VS",
                vec![format!("{}@2", recorded.consent_id)]
            ),
        ]
    );
    let persons: std::collections::HashSet<_> = entries
        .iter()
        .filter(|e| e.kind != RulebookActivated as i32 && e.kind != RegistryActivated as i32)
        .map(|e| dpo.decrypt(&cii_pseudonym::wire::pseudonym(&e.audit_pseudonym).expect("ciphertext")))
        .collect();
    assert_eq!(persons.len(), 1, "every entry names the same person for the DPO");
}
