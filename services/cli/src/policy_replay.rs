//! `cii policy replay`: a (changed) rulebook run against the decisions an audit log recorded
//! (the decision logic is `cii_policy::replay`; this reads the log and the registry, prints).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cii_audit::EntryKind;
use cii_audit::store::Body;
use cii_policy::Rulebook;
use cii_policy::decide::Party;
use cii_policy::replay::{Recorded, Replayed, replay};

/// The answer a pull's entry names (the holder answered with it).
const PULL_ANSWER_TYPE: &str = "cii.exchange.v1.DataResponse";
/// Entries read at a time.
const PAGE: u32 = 10_000;

/// Reads the log, replays every transfer entry, prints the changes and a summary.
#[expect(clippy::print_stdout, reason = "the command's report")]
pub fn run(log: &str, registry: &Path, rulebook: &Rulebook, all: bool) -> anyhow::Result<ExitCode> {
    let registry = cii_kit::registry::Registry::load(registry).context("--registry")?;
    let parties: BTreeMap<String, Party> = registry
        .institutions()
        .map(|m| {
            let canton = (!m.canton.is_empty()).then(|| m.canton.clone());
            (m.id.to_string(), Party::member(m.kind, m.id.clone(), canton))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let entries = runtime.block_on(read(log))?;
    let (mut same, mut changed, mut cannot) = (0u64, 0u64, BTreeMap::<String, u64>::new());
    for e in &entries {
        let recorded = recorded(e);
        match replay(rulebook, &recorded, |id| parties.get(id).cloned()) {
            Replayed::Same => {
                same += 1;
                if all {
                    println!("= #{} {}: unchanged", recorded.index, recorded.transfer_id);
                }
            }
            Replayed::Changed {
                recorded: was,
                replayed,
            } => {
                changed += 1;
                println!(
                    "≠ #{} {} {} → {}: {was}  →  {replayed}",
                    recorded.index, recorded.transfer_id, recorded.sender, recorded.recipient
                );
            }
            Replayed::CannotReplay(why) => {
                if all {
                    println!("? #{} {}: cannot replay: {why}", recorded.index, recorded.transfer_id);
                }
                *cannot.entry(why).or_default() += 1;
            }
        }
    }
    println!(
        "rulebook {} ({}): {} transfer decision(s) replayed: {same} unchanged, {changed} changed, {} cannot be replayed",
        rulebook.version,
        rulebook.hash.get(..16).unwrap_or(""),
        same + changed + cannot.values().sum::<u64>(),
        cannot.values().sum::<u64>(),
    );
    for (why, n) in &cannot {
        println!("  cannot replay ({n}): {why}");
    }
    Ok(if changed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The transfer entries of the log that retention left readable, in order.
async fn read(log: &str) -> anyhow::Result<Vec<(u64, cii_audit::Entry)>> {
    let store = cii_audit::Store::open_read_only(log)
        .await
        .context("opening the audit store")?;
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let page = store.entries(from, PAGE).await.context("reading the audit log")?;
        let Some(last) = page.last().map(|e| e.index) else {
            break;
        };
        for stored in &page {
            if matches!(stored.body, Body::Expired { .. }) {
                continue;
            }
            let entry = cii_audit::entry::decode(stored.readable().context("an entry body")?)
                .with_context(|| format!("entry #{} does not decode", stored.index))?;
            let transfer = [EntryKind::TransferPermitted as i32, EntryKind::TransferDenied as i32];
            if transfer.contains(&entry.kind) {
                out.push((stored.index, entry));
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
        from = last + 1;
    }
    store.close().await;
    Ok(out)
}

fn recorded((index, e): &(u64, cii_audit::Entry)) -> Recorded {
    Recorded {
        index: *index,
        transfer_id: e.transfer_id.clone(),
        permitted: e.kind == EntryKind::TransferPermitted as i32,
        bases: e.bases.clone(),
        released: e.released.clone(),
        withheld: e.withheld.clone(),
        sender: e.sender.clone(),
        recipient: e.recipient.clone(),
        trigger: e.trigger.clone(),
        purpose: e.purpose.clone(),
        pull: e.exchange_type == PULL_ANSWER_TYPE,
        attestations: e.attestations.clone(),
        reviewer: e.reviewer.clone(),
        reviewer_attestations: e.reviewer_attestations.clone(),
        case_reference: e.case_reference.clone(),
        network_facts: e.network_facts.clone(),
        consents_found: e.consents_found.clone(),
        written_request: !e.written_request_sha256.is_empty(),
        date: cii_types::time::from_micros(e.time_micros).map(time::OffsetDateTime::date),
        replay_format: e.replay_format,
    }
}
