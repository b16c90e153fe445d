//! `cii policy replay`: a (changed) rulebook run against the decisions an audit log recorded
//! (the decision logic is `cii_policy::replay`; this reads the log and the registry, prints).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cii_gateway::replay::{recorded, transfer_entries};
use cii_policy::Rulebook;
use cii_policy::decide::Party;
use cii_policy::replay::{Replayed, replay};

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
    let entries = runtime.block_on(async {
        let store = cii_audit::Store::open_read_only(log)
            .await
            .context("opening the audit store")?;
        let entries = transfer_entries(&store, |_| true).await;
        store.close().await;
        anyhow::Ok(entries?)
    })?;
    let (mut same, mut changed, mut cannot) = (0u64, 0u64, BTreeMap::<String, u64>::new());
    for (index, e) in &entries {
        let recorded = recorded(*index, e);
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
