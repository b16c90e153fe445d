//! A changed rulebook run against recorded decisions (`cii policy replay`): each recorded
//! transfer decided again from what its entry kept — the parties, trigger, purpose, the
//! categories asked for, the facts the sender and the holder's reviewer attested, what the
//! directory said, the consents found, the case reference — and compared with what was
//! decided. An entry that lacks what a replay needs is reported "cannot replay", never guessed.

use std::collections::BTreeSet;

use crate::decide::{ConsentFound, Facts, Party, Transfer, decide};
use crate::rulebook::Rulebook;
use crate::vocab::Trigger;

/// What a transfer's audit entry recorded (the caller maps its log's entries to this).
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The entry's position in the log.
    pub index: u64,
    /// The transfer id.
    pub transfer_id: String,
    /// Permitted (true) or denied.
    pub permitted: bool,
    /// The bases that carried a permit.
    pub bases: Vec<String>,
    /// The categories released.
    pub released: Vec<String>,
    /// The categories withheld, each `category:REASON`.
    pub withheld: Vec<String>,
    /// The discloser's registry id.
    pub sender: String,
    /// The recipient's registry id.
    pub recipient: String,
    /// The trigger id.
    pub trigger: String,
    /// The purpose id.
    pub purpose: String,
    /// A pull (the holder answered).
    pub pull: bool,
    /// The facts the sender attested.
    pub attestations: Vec<String>,
    /// The holder's reviewer, if a pull was reviewed.
    pub reviewer: String,
    /// The facts the reviewer attested.
    pub reviewer_attestations: Vec<String>,
    /// The case reference.
    pub case_reference: String,
    /// The network facts that held.
    pub network_facts: Vec<String>,
    /// The consents found, `id@version:written|oral:cat+…:purpose+…`.
    pub consents_found: Vec<String>,
    /// The written request was present (its hash was logged).
    pub written_request: bool,
    /// The day of the decision.
    pub date: Option<time::Date>,
    /// 1 when the entry carries what a replay needs.
    pub replay_format: u32,
}

/// What a decision is, for comparison: permit or deny, the bases, the released categories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Permitted.
    pub permitted: bool,
    /// The bases that carried it.
    pub bases: BTreeSet<String>,
    /// The categories released.
    pub released: BTreeSet<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        if self.permitted {
            write!(f, "PERMIT [{}] ({})", join(&self.released), join(&self.bases))
        } else {
            f.write_str("DENY")
        }
    }
}

/// The replay of one recorded decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// The changed rulebook decides the same.
    Same,
    /// It decides otherwise.
    Changed {
        /// What was decided.
        recorded: Outcome,
        /// What the changed rulebook decides.
        replayed: Outcome,
    },
    /// The entry lacks what a replay needs.
    CannotReplay(String),
}

/// Decides `r` again under `rulebook`; `party` gives a registry id's type and canton.
pub fn replay(rulebook: &Rulebook, r: &Recorded, party: impl Fn(&str) -> Option<Party>) -> Replayed {
    if r.replay_format < 1 {
        return Replayed::CannotReplay(
            "written before entries kept the directory's answer, the consents found and the case reference".into(),
        );
    }
    let (Some(from), Some(to)) = (party(&r.sender), party(&r.recipient)) else {
        return Replayed::CannotReplay("an institution no longer in the registry".into());
    };
    let Ok(trigger) = Trigger::parse("trigger", &r.trigger) else {
        return Replayed::CannotReplay(format!("trigger `{}` unknown to this rulebook", r.trigger));
    };
    let Some(date) = r.date else {
        return Replayed::CannotReplay("no date".into());
    };
    let mut categories: Vec<String> = r.released.clone();
    categories.extend(r.withheld.iter().filter_map(|w| w.split(':').next().map(str::to_owned)));
    let mut names: Vec<&str> = r
        .attestations
        .iter()
        .chain(&r.reviewer_attestations)
        .chain(&r.network_facts)
        .map(String::as_str)
        .collect();
    if r.written_request {
        names.push("written_request");
    }
    let facts = match Facts::named(rulebook, names) {
        Ok(facts) => facts,
        Err(unknown) => return Replayed::CannotReplay(format!("fact `{unknown}` unknown to this rulebook")),
    };
    let consents = match r.consents_found.iter().map(|c| consent(c)).collect::<Option<Vec<_>>>() {
        Some(consents) => consents,
        None => return Replayed::CannotReplay("a consent recorded in a form this release cannot read".into()),
    };
    let transfer = Transfer {
        from,
        to,
        trigger: Some(trigger),
        purpose: r.purpose.clone(),
        categories,
        persons: 1,
        case_reference: (!r.case_reference.is_empty()).then(|| r.case_reference.clone()),
        unreviewed_pull: r.pull && r.reviewer.is_empty(),
        facts,
        consents,
        date,
    };
    let decision = match decide(rulebook, &transfer) {
        Ok(d) => d,
        Err(e) => return Replayed::CannotReplay(format!("{e} under this rulebook")),
    };
    let ids = |idx: &[usize], names: &dyn Fn(usize) -> Option<String>| idx.iter().filter_map(|i| names(*i)).collect();
    let replayed = Outcome {
        permitted: decision.is_permit(),
        bases: ids(decision.bases(), &|i| rulebook.bases.get(i).map(|b| b.id.clone())),
        released: ids(decision.released(), &|i| {
            rulebook.categories.get(i).map(|c| c.id.clone())
        }),
    };
    let recorded = Outcome {
        permitted: r.permitted,
        bases: r.bases.iter().cloned().collect(),
        released: r.released.iter().cloned().collect(),
    };
    if recorded == replayed {
        Replayed::Same
    } else {
        Replayed::Changed { recorded, replayed }
    }
}

/// `id@version:written|oral:cat+…:purpose+…`.
fn consent(text: &str) -> Option<ConsentFound> {
    let mut parts = text.split(':');
    let reference = parts.next()?.to_owned();
    let written = match parts.next()? {
        "written" => true,
        "oral" => false,
        _ => return None,
    };
    let list = |s: &str| s.split('+').filter(|x| !x.is_empty()).map(str::to_owned).collect();
    let categories = list(parts.next()?);
    let purposes = list(parts.next()?);
    Some(ConsentFound {
        reference,
        categories,
        purposes,
        written,
    })
}
