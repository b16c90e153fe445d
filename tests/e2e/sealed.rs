//! Nothing readable at the gateway (issue 24): a push's payload and written request are
//! sealed by the sender's node for the recipient, one part per category; the gateway drops
//! the withheld categories' parts and rekeys the seal key, and never holds what opens them.
//! Tried on real processes: the gateway runs as a process of its own, whose files, log and
//! memory are searched for a canary placed in the payload; and as a dishonest sender who
//! labels a withheld category's field as a released one.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cii_proto::common::decision::Outcome;
use cii_proto::exchange as xt;
use cii_proto::gateway::{self as gw, gateway_client::GatewayClient};
use cii_proto::node as node_pb;
use cii_tests::{Network, Options, with_token};
use cii_types::PeerIdentity;
use prost::Message;

use crate::exchanges::{
    AI, ORP, PERSON, any, early_detection, files_containing, members, node, outcome, report, token,
};

/// Every readable mapping of process `pid`'s memory, read through `/proc/PID/mem`, searched
/// for `needle` (what an attacker with the gateway host's root would see).
fn memory_contains(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem (ptrace permission)");
    let mut buffer = vec![0u8; 1 << 20];
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        // Chunks overlap by the needle's length, so a match across two chunks is found.
        let mut at = start;
        while at < end {
            let len = usize::try_from((end - at).min(buffer.len() as u64)).expect("chunk");
            if mem.seek(SeekFrom::Start(at)).is_err() {
                break;
            }
            let Ok(read) = mem.read(&mut buffer[..len]) else { break };
            if read == 0 {
                break;
            }
            if buffer[..read].windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            let step = read.saturating_sub(needle.len()).max(1);
            at += step as u64;
        }
    }
    false
}

/// A canary in a payload field and one in the written request: the recipient receives both;
/// neither is in any gateway-side file, in the gateway's log, or in the gateway process's
/// memory after the transfer (while the transfer id, which the gateway does handle, is).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_in_a_payload_reaches_the_recipient_and_nowhere_at_the_gateway() {
    let net = Network::start_with(
        &members(),
        Options {
            external_gateways: 1,
            ..Options::default()
        },
    )
    .await;
    let (config, _) = net.external_gateways[0].clone();
    let log = config.with_extension("log");
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_cii-test-gateway"))
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("gateway process");
    for i in [ORP, AI] {
        let enrol = node_pb::EnrolRequest {
            avs_number: PERSON.into(),
            local_record_id: format!("{}-1", net.node(i).member.id),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while node(&net, i)
            .enrol(with_token(enrol.clone(), &token(&net, i)))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the gateway process never served");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos();
    let canary = format!("CANARY-payload-{stamp:x}");
    let written = format!("CANARY-written-{stamp:x}");
    let transfer_id = format!("canary-transfer-{stamp:x}");
    let mut request = report(
        &transfer_id,
        &["person_informed_before", "incapacity_for_work_or_threatened"],
    );
    let mut payload = early_detection();
    payload.health_limitations = canary.clone();
    payload.person.as_mut().expect("person").family_name = canary.clone();
    request.payload = Some(any("EarlyDetectionReport", &payload));
    request.written_request = written.clone();
    let answer = node(&net, ORP)
        .send(with_token(request, &token(&net, ORP)))
        .await
        .expect("sent")
        .into_inner();
    assert_eq!(outcome(&answer), Outcome::Permit, "{:?}", answer.decision);
    let items = net.inbox_of_size(AI, 1).await;
    let received =
        xt::EarlyDetectionReport::decode(items[0].payload.as_ref().expect("payload").value.as_slice()).expect("report");
    assert_eq!(received.health_limitations, canary, "the recipient receives the canary");
    assert_eq!(items[0].written_request, written);

    let pid = gateway.id();
    assert!(
        memory_contains(pid, transfer_id.as_bytes()),
        "the memory search finds what the gateway handles (the transfer id)"
    );
    for needle in [&canary, &written] {
        assert!(
            !memory_contains(pid, needle.as_bytes()),
            "{needle} in the gateway's memory"
        );
    }
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let _ = gateway.wait();
    let gateway_side = [net.dir.path().join("gateway"), log.clone()];
    assert!(
        !files_containing(&net.dir.path().join("gateway"), transfer_id.as_bytes()).is_empty(),
        "the file search finds what the gateway stores (the transfer id)"
    );
    for needle in [&canary, &written] {
        for place in &gateway_side {
            let found = if place.is_dir() {
                files_containing(place, needle.as_bytes())
            } else {
                files_containing_file(place, needle.as_bytes())
            };
            assert!(found.is_empty(), "{needle} in {found:?}");
        }
    }
    net.stop().await;
}

fn files_containing_file(file: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let bytes = std::fs::read(file).unwrap_or_default();
    if bytes.windows(needle.len()).any(|w| w == needle) {
        vec![file.to_owned()]
    } else {
        Vec::new()
    }
}

/// A dishonest sender labels a withheld category's field (the medical reports) as a released
/// category: the gateway, which cannot read the part, releases it by its label; the
/// recipient's node opens it, finds a field of another category, and refuses the delivery for
/// good (SEALED_PART_MISLABELLED): nothing reaches the recipient's inbox, the delivery is
/// dead-lettered and logged, and the sender is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_part_carrying_another_category_than_its_label_is_refused_by_the_recipient() {
    let net = Network::start(&members()).await;
    crate::exchanges::enrol_everywhere(&net).await;
    let orp = PeerIdentity::Institution(net.node(ORP).member.id.clone());
    let honest = net.sealed_as(
        "ORP-VS",
        "mislabelled-1",
        Some(&any("EarlyDetectionReport", &early_detection())),
        "",
    );
    // The part labelled `incapacity_certificate` (released) carries the medical reports too.
    let smuggled = xt::EarlyDetectionReport {
        incapacity_certificate: early_detection().incapacity_certificate,
        medical_reports: vec!["the whole medical file".into()],
        ..xt::EarlyDetectionReport::default()
    };
    let keys = net.node_keys(ORP);
    let sealer = keys.sealer().expect("sealer");
    let mut sealed = honest.0.clone();
    sealed.key = cii_pseudonym::wire::to_bytes(&sealer.key);
    for part in &mut sealed.parts {
        let plain = if part.category == "incapacity_certificate" {
            smuggled.encode_to_vec()
        } else {
            let only = cii_types::exchange::Catalogue::load()
                .expect("catalogue")
                .filter(&sealed.type_url, &early_detection().encode_to_vec(), |c| {
                    c == part.category
                })
                .expect("filtered");
            only.bytes
        };
        let aad =
            cii_types::transfer::part_associated_data("ORP-VS", "mislabelled-1", &sealed.type_url, &part.category);
        let (nonce, ciphertext) = sealer.seal(&aad, &plain).expect("sealed");
        part.nonce = nonce.to_vec();
        part.ciphertext = ciphertext;
    }
    let request = gw::TransferRequest {
        transfer_id: "mislabelled-1".into(),
        counterparty: "AI-VS".into(),
        direction: gw::transfer_request::Direction::Push as i32,
        trigger: gw::Trigger::SpontaneousReport as i32,
        purpose: "early_detection".into(),
        person: Some(net.ciphertext_for(
            PERSON,
            &cii_pseudonym::names::Party::Institution(net.node(ORP).member.id.clone()),
        )),
        attested_facts: vec![
            "person_informed_before".into(),
            "incapacity_for_work_or_threatened".into(),
        ],
        case_reference: "case-1".into(),
        sealed: Some(sealed),
        ..gw::TransferRequest::default()
    };
    let answer = GatewayClient::new(net.gateway_channel_as(&orp))
        .submit_transfer(with_token(request, &token(&net, ORP)))
        .await
        .expect("decided")
        .into_inner();
    assert_eq!(outcome(&answer), Outcome::Permit, "decided on the labels");
    // The sender is told its delivery was refused for good, with the recipient's code.
    let deadline = Instant::now() + Duration::from_secs(20);
    let failure = loop {
        if let Some(failure) = net.inbox(ORP).await.into_iter().find_map(|i| i.failure) {
            break failure;
        }
        assert!(Instant::now() < deadline, "no dead-letter notice to the sender");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failure.transfer_id, "mislabelled-1");
    assert_eq!(failure.code, "SEALED_PART_MISLABELLED");
    assert!(
        !net.inbox(AI).await.iter().any(|i| i.transfer_id == "mislabelled-1"),
        "nothing reaches the recipient's inbox"
    );
    let dead = cii_tests::audit_entries(net.dir.path())
        .await
        .into_iter()
        .any(|e| e.kind == cii_audit::EntryKind::DeliveryDeadLettered as i32 && e.transfer_id == "mislabelled-1");
    assert!(dead, "the refusal is logged");
    net.stop().await;
}
