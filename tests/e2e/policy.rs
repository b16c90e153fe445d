//! The rulebook at the gateway: loaded at start, checked against the
//! registry, served to jurists.

use cii_kit::grpc::error_code;
use cii_proto::policy::{ExplainRequest, GetRulebookRequest, policy_client::PolicyClient};
use cii_tests::{Network, member, with_token};
use cii_types::{InstitutionType, PeerIdentity, Role};

#[tokio::test]
async fn jurists_read_the_active_rulebook_and_its_reasoning() {
    let net = Network::start(&[member("AI-VS", InstitutionType::Ai)]).await;
    let party = PeerIdentity::Institution(net.node(0).member.id.clone());
    let mut client = PolicyClient::new(net.gateway_channel_as(&party));
    let jurist = net.token(0, "claire.jurist", &[Role::Jurist]);
    let rulebook = client
        .get_rulebook(with_token(GetRulebookRequest {}, &jurist))
        .await
        .expect("rulebook")
        .into_inner();
    let federal =
        cii_policy::load(&cii_policy::federal_sources(), time::OffsetDateTime::now_utc().date()).expect("federal");
    assert_eq!(rulebook.hash, federal.hash);
    assert_eq!(rulebook.version, federal.version);

    let request = ExplainRequest {
        from: "AC_ORP".into(),
        to: "AI".into(),
        trigger: "spontaneous_report".into(),
        purpose: "early_detection".into(),
        categories: vec!["identity".into(), "health_limitations".into()],
        facts: [
            ("person_informed_before".to_owned(), "true".to_owned()),
            ("incapacity_for_work_or_threatened".to_owned(), "true".to_owned()),
        ]
        .into(),
        lang: "de".into(),
    };
    let answer = client
        .explain(with_token(request.clone(), &jurist))
        .await
        .expect("explain")
        .into_inner();
    assert_eq!(answer.lines.last().map(String::as_str), Some("Entscheid: PERMIT"));
    let decision = answer.decision.expect("decision");
    assert_eq!(decision.bases[0].id, "LAI-3b-2-i");
    assert_eq!(
        decision.bases[0].citation.as_ref().expect("citation").de,
        "IVG Art. 3abis Abs. 2, Art. 3b Abs. 1, Abs. 2 Bst. i und Abs. 3"
    );
    assert_eq!(decision.released_categories, vec!["identity", "health_limitations"]);
    assert_eq!(decision.rulebook_hash, federal.hash);

    // A caseworker is not a jurist.
    let caseworker = net.token(0, "beat.kunz", &[Role::Caseworker]);
    let err = client
        .explain(with_token(request.clone(), &caseworker))
        .await
        .expect_err("caseworker");
    assert_eq!(error_code(&err).as_deref(), Some("ROLE_REQUIRED"));
    // An unknown fact is an error naming the field.
    let mut bad = request;
    bad.facts.insert("person_informed".into(), "true".into());
    let err = client
        .explain(with_token(bad, &jurist))
        .await
        .expect_err("unknown fact");
    assert_eq!(error_code(&err).as_deref(), Some("INVALID_ARGUMENT"));
    assert_eq!(cii_kit::grpc::error_field(&err).as_deref(), Some("facts"));
    net.stop().await;
}

#[tokio::test]
async fn the_gateway_refuses_to_start_when_rulebook_and_registry_disagree() {
    let net = Network::start(&[member("AI-VS", InstitutionType::Ai)]).await;
    let dir = net.dir.path();
    let rulebook = dir.join("rulebook");
    std::fs::create_dir_all(&rulebook).expect("dir");
    let write = |text: &str| std::fs::write(rulebook.join("canton.toml"), text).expect("write");
    let config = std::fs::read_to_string(dir.join("gateway.toml"))
        .expect("read")
        .replacen("[registry]", "rulebook = \"rulebook\"\n\n[registry]", 1);
    std::fs::write(dir.join("gateway-rb.toml"), config).expect("write");
    let load = || cii_gateway::GatewayConfig::load(&dir.join("gateway-rb.toml"));

    write("[rulebook]\nversion = \"t-1\"\nextends = \"federal\"\n\n[[institution]]\nid = \"AI-VS\"\ntype = \"AI\"\n");
    let ok = load().expect("agreeing rulebook");
    assert!(ok.rulebook.version.ends_with("+ t-1"));

    write("[rulebook]\nversion = \"t-2\"\nextends = \"federal\"\n\n[[institution]]\nid = \"AI-VS\"\ntype = \"AS\"\n");
    let err = load().expect_err("type disagreement").to_string();
    assert!(
        err.contains("key `rulebook`") && err.contains("AI-VS") && err.contains("registry says AI"),
        "{err}"
    );

    write("[rulebook]\nversion = \"t-3\"\nextends = \"federal\"\n\n[[institution]]\nid = \"AS-GE\"\ntype = \"AS\"\n");
    let err = load().expect_err("unknown institution").to_string();
    assert!(err.contains("AS-GE") && err.contains("not in the registry"), "{err}");

    write("[rulebook]\nversion = \"t-4\"\nextends = \"federal\"\n\n[[basis]]\nid = \"X-1\"\n");
    let err = load().expect_err("broken rulebook").to_string();
    assert!(err.contains("key `rulebook`") && err.contains("basis X-1"), "{err}");
    net.stop().await;
}

/// A registry version that no longer agrees with the running gateway's rulebook (an
/// institution the rulebook names, now of another type) is refused on reload; the
/// active registry stays and the refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_registry_that_disagrees_with_the_rulebook_is_refused() {
    let mut net = Network::start(&[member("AI-VS", InstitutionType::Ai)]).await;
    net.restart_gateway(|dir| {
        std::fs::create_dir_all(dir.join("rulebook")).expect("dir");
        std::fs::write(
            dir.join("rulebook/canton.toml"),
            "[rulebook]\nversion = \"t-1\"\nextends = \"federal\"\n\n[[institution]]\nid = \"AI-VS\"\ntype = \"AI\"\n",
        )
        .expect("write");
        let config = std::fs::read_to_string(dir.join("gateway.toml"))
            .expect("read")
            .replacen("[registry]", "rulebook = \"rulebook\"\n\n[registry]", 1);
        std::fs::write(dir.join("gateway.toml"), config).expect("write");
    })
    .await;
    net.publish_registry(&cii_tests::RegistrySpec {
        version: 2,
        retyped: vec![(0, InstitutionType::As)],
        ..cii_tests::RegistrySpec::default()
    });
    assert!(
        cii_tests::metrics_eventually_contain(net.gateway_metrics, "cii_refusals_total{code=\"REGISTRY_INVALID\"} 1")
            .await,
        "the disagreeing registry is refused and counted"
    );
    let dir = net.stop().await;
    let activations: Vec<String> = cii_tests::audit_entries(dir.path())
        .await
        .into_iter()
        .filter(|e| e.kind == cii_audit::EntryKind::RegistryActivated as i32)
        .map(|e| e.detail)
        .collect();
    assert!(activations.iter().all(|d| d.ends_with("version=1")), "{activations:?}");
}
