//! `cii audit subject-report`: everything the log holds about one person, for
//! an access request (nLPD art. 25), in French, German or English, as text and
//! as an HTML page the DPO can send. The person is reached from the
//! institution's own record id: the node asks the gateway to translate its
//! pseudonym into the DPO context (a logged lookup); the DPO's tool opens the
//! entries' persons with the DPO context key and keeps that person's.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cii_audit::{Entry, EntryKind};
use cii_policy::{Lang, Rulebook};
use cii_proto::node::DpoLookupRequest;
use cii_pseudonym::node::NodeKeys;
use clap::{Args, ValueEnum};
use tokio_stream::StreamExt;

use crate::node_api::{authorized, refused};

/// Report languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Language {
    /// Français.
    Fr,
    /// Deutsch.
    De,
    /// English.
    En,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  cii audit subject-report --node https://127.0.0.1:7101 --ca ca.pem --token-file dpo.token \\\n    \
--record DOSSIER-2026-0001 --dpo-keys dpo/ORP-VS/session-keys.json --global-public global-public.json \\\n    \
--lang fr --out reports/\n\n\
Prints the report and writes it as HTML into --out. The report names the person by your record id\n\
only; the lookup is itself logged."
)]
pub struct SubjectReportArgs {
    /// The node and the DPO's token (role `dpo` or `network_dpo`).
    #[command(flatten)]
    node: crate::node_api::NodeApiArgs,
    /// The person, by your institution's record id.
    #[arg(long)]
    record: String,
    /// The DPO's session keys: `dpo/<ID>/session-keys.json` of its institution (a `dpo`),
    /// `dpo/audit-session-keys.json` (the `network_dpo`).
    #[arg(long)]
    dpo_keys: PathBuf,
    /// The network's `global-public.json`.
    #[arg(long)]
    global_public: PathBuf,
    /// The report's language.
    #[arg(long, value_enum, default_value_t = Language::Fr)]
    lang: Language,
    /// A folder for the HTML report.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The words of the report, per language.
struct Words {
    title: &'static str,
    intro: &'static str,
    none: &'static str,
    permitted: &'static str,
    refused: &'static str,
    other: &'static str,
    from_to: (&'static str, &'static str),
    exchange: &'static str,
    purpose: &'static str,
    bases: &'static str,
    released: &'static str,
    withheld: &'static str,
    reasons: &'static str,
    consents: &'static str,
    acted: &'static str,
    retention: &'static str,
    /// What follows a label (French typography puts a space before the colon).
    colon: &'static str,
}

fn words(lang: Language) -> Words {
    match lang {
        Language::Fr => Words {
            title: "Rapport d'accès aux données (nLPD art. 25)",
            intro: "Personne : dossier {record} de {institution}. Établi le {date} à partir du journal d'audit de l'échange CII.",
            none: "Le journal ne contient aucune communication concernant cette personne.",
            permitted: "Communication effectuée",
            refused: "Communication refusée",
            other: "Événement",
            from_to: ("De", "à"),
            exchange: "Type d'échange",
            purpose: "But",
            bases: "Base légale",
            released: "Données communiquées",
            withheld: "Données non communiquées",
            reasons: "Motifs du refus",
            consents: "Consentement",
            acted: "Agissant",
            retention: "Conservation : les entrées du journal sont conservées au moins un an (OPDo art. 4), puis selon la durée de conservation du réseau.",
            colon: " : ",
        },
        Language::De => Words {
            title: "Auskunft über Personendaten (revDSG Art. 25)",
            intro: "Person: Dossier {record} von {institution}. Erstellt am {date} aus dem Audit-Journal des IIZ-Austauschs.",
            none: "Das Journal enthält keine Bekanntgabe über diese Person.",
            permitted: "Bekanntgabe erfolgt",
            refused: "Bekanntgabe verweigert",
            other: "Ereignis",
            from_to: ("Von", "an"),
            exchange: "Austauschart",
            purpose: "Zweck",
            bases: "Rechtsgrundlage",
            released: "Bekanntgegebene Daten",
            withheld: "Nicht bekanntgegebene Daten",
            reasons: "Gründe der Verweigerung",
            consents: "Einwilligung",
            acted: "Handelnd",
            retention: "Aufbewahrung: Die Journaleinträge werden mindestens ein Jahr aufbewahrt (DSV Art. 4), danach gemäss der Aufbewahrungsdauer des Netzes.",
            colon: ": ",
        },
        Language::En => Words {
            title: "Subject access report (nFADP art. 25)",
            intro: "Person: record {record} of {institution}. Prepared on {date} from the audit log of the CII exchange.",
            none: "The log holds no disclosure about this person.",
            permitted: "Disclosed",
            refused: "Disclosure refused",
            other: "Event",
            from_to: ("From", "to"),
            exchange: "Exchange type",
            purpose: "Purpose",
            bases: "Legal basis",
            released: "Data disclosed",
            withheld: "Data not disclosed",
            reasons: "Reasons for the refusal",
            consents: "Consent",
            acted: "Acting",
            retention: "Retention: log entries are kept at least one year (DPO art. 4), then for the network's retention period.",
            colon: ": ",
        },
    }
}

/// A refusal's reason code in plain words.
fn reason_text(code: &str, lang: Language) -> String {
    let (fr, de, en) = match code {
        "NO_MATCHING_BASIS" => (
            "aucune base légale ne prévoit cet échange",
            "keine Rechtsgrundlage sieht diesen Austausch vor",
            "no legal basis provides for this exchange",
        ),
        "TRIGGER_NOT_COVERED" => (
            "la base légale ne couvre pas cette forme d'échange",
            "die Rechtsgrundlage deckt diese Form des Austauschs nicht",
            "the legal basis does not cover this form of exchange",
        ),
        "PURPOSE_NOT_PERMITTED" => (
            "la base légale ne couvre pas ce but",
            "die Rechtsgrundlage deckt diesen Zweck nicht",
            "the legal basis does not cover this purpose",
        ),
        "CONDITION_NOT_MET" => (
            "une condition de la base légale n'était pas remplie",
            "eine Voraussetzung der Rechtsgrundlage war nicht erfüllt",
            "a condition of the legal basis was not met",
        ),
        "CONSENT_DOES_NOT_COVER" => (
            "le consentement ne couvre pas cet échange",
            "die Einwilligung deckt diesen Austausch nicht",
            "the consent does not cover this exchange",
        ),
        "NO_BASIS_HOLDS" | "CATEGORY_NOT_PERMITTED" | "MEDICAL_DATA_EXCLUDED" => (
            "aucune des données demandées ne pouvait être communiquée",
            "keine der verlangten Daten durfte bekanntgegeben werden",
            "none of the data asked for could be disclosed",
        ),
        other => (other, other, other),
    };
    match lang {
        Language::Fr => fr,
        Language::De => de,
        Language::En => en,
    }
    .to_owned()
}

fn policy_lang(lang: Language) -> Lang {
    match lang {
        Language::Fr => Lang::Fr,
        Language::De => Lang::De,
        Language::En => Lang::En,
    }
}

/// The report as text: one numbered block per entry about the person.
pub fn render(
    entries: &[Entry],
    rulebook: &Rulebook,
    lang: Language,
    record: &str,
    institution: &str,
    date: &str,
) -> String {
    let w = words(lang);
    let category = |id: &str| {
        rulebook
            .categories
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_owned(), |c| c.labels.get(policy_lang(lang)).to_owned())
    };
    let citation = |id: &str| {
        rulebook.bases.iter().find(|b| b.id == id).map_or_else(
            || id.to_owned(),
            |b| match lang {
                Language::De => b.citation.de.clone(),
                Language::Fr | Language::En => b.citation.fr.clone(),
            },
        )
    };
    let purpose = |id: &str| {
        rulebook
            .purposes
            .iter()
            .find(|p| p.id == id)
            .map_or_else(|| id.to_owned(), |p| p.labels.get(policy_lang(lang)).to_owned())
    };
    let list = |items: Vec<String>| items.join("; ");
    let c = w.colon;
    let mut text = format!(
        "{}\n{}\n",
        w.title,
        w.intro
            .replace("{record}", record)
            .replace("{institution}", institution)
            .replace("{date}", date)
    );
    let transfers: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::TransferPermitted as i32 || e.kind == EntryKind::TransferDenied as i32)
        .collect();
    if transfers.is_empty() {
        let _ = writeln!(text, "\n{}", w.none);
    }
    for (n, e) in transfers.iter().enumerate() {
        let when = cii_types::time::from_micros(e.time_micros)
            .and_then(|t| {
                t.format(time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute] UTC"
                ))
                .ok()
            })
            .unwrap_or_default();
        let what = match EntryKind::try_from(e.kind) {
            Ok(EntryKind::TransferPermitted) => w.permitted,
            Ok(EntryKind::TransferDenied) => w.refused,
            _ => w.other,
        };
        let _ = writeln!(text, "\n{}. {when} — {what} ({})", n + 1, e.transfer_id);
        let _ = writeln!(text, "   {} {} {} {}", w.from_to.0, e.sender, w.from_to.1, e.recipient);
        if !e.exchange_type.is_empty() {
            let short = e.exchange_type.rsplit('.').next().unwrap_or(&e.exchange_type);
            let _ = writeln!(text, "   {}{c}{short}", w.exchange);
        }
        let _ = writeln!(text, "   {}{c}{}", w.purpose, purpose(&e.purpose));
        if !e.bases.is_empty() {
            let _ = writeln!(
                text,
                "   {}{c}{}",
                w.bases,
                list(e.bases.iter().map(|b| citation(b)).collect())
            );
        }
        if !e.released.is_empty() {
            let _ = writeln!(
                text,
                "   {}{c}{}",
                w.released,
                list(e.released.iter().map(|c| category(c)).collect())
            );
        }
        if !e.withheld.is_empty() {
            let withheld = e
                .withheld
                .iter()
                .map(|x| category(x.split(':').next().unwrap_or(x)))
                .collect();
            let _ = writeln!(text, "   {}{c}{}", w.withheld, list(withheld));
        }
        if !e.reasons.is_empty() {
            let reasons = e
                .reasons
                .iter()
                .map(|r| match r.split_once(':') {
                    Some((code, basis)) => format!("{} ({})", reason_text(code, lang), citation(basis)),
                    None => reason_text(r, lang),
                })
                .collect();
            let _ = writeln!(text, "   {}{c}{}", w.reasons, list(reasons));
        }
        if !e.consents.is_empty() {
            let _ = writeln!(text, "   {}{c}{}", w.consents, e.consents.join("; "));
        }
        let _ = writeln!(text, "   {}{c}{}", w.acted, e.acting_user);
    }
    let _ = writeln!(text, "\n{}", w.retention);
    text
}

/// Text made safe for HTML.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The report as a self-contained HTML page.
pub fn html(text: &str, lang: Language) -> String {
    let code = match lang {
        Language::Fr => "fr",
        Language::De => "de",
        Language::En => "en",
    };
    let mut lines = text.lines();
    let title = escape(lines.next().unwrap_or_default());
    let body: String = lines.map(|l| format!("{}\n", escape(l))).collect();
    format!(
        "<!doctype html>\n<html lang=\"{code}\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}}pre{{white-space:pre-wrap;font-family:inherit}}</style>\
         </head><body><h1>{title}</h1><pre>{body}</pre></body></html>\n"
    )
}

#[expect(clippy::print_stdout, reason = "the report is the command's output")]
pub async fn run(args: SubjectReportArgs) -> anyhow::Result<ExitCode> {
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let keys =
        NodeKeys::from_json(&read(&args.global_public)?, &read(&args.dpo_keys)?).context("the DPO context keys")?;
    let (mut client, token) = args.node.connect()?;
    let lookup = authorized(
        &token,
        DpoLookupRequest {
            local_record_id: args.record.clone(),
        },
    )?;
    let found = match client.lookup_person_for_dpo(lookup).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return Ok(refused(&status)),
    };
    let Some(ciphertext) = found.audit_person else {
        bail!("the gateway answered without a person");
    };
    let target = keys.decrypt(&cii_pseudonym::wire::pseudonym(&ciphertext.ciphertext)?);
    let mut stream = client
        .query_audit(authorized(&token, cii_proto::audit::QueryRequest::default())?)
        .await
        .context("the query was refused")?
        .into_inner();
    let (mut entries, mut undecodable) = (Vec::new(), 0u64);
    while let Some(item) = stream.next().await {
        let item = item.context("the answer stream broke off")?;
        // An entry that cannot be read may be about this person: the exit code says so.
        if super::report_undecodable(&item) {
            undecodable += 1;
            continue;
        }
        let entry = cii_audit::entry::decode(&item.body)?;
        // The person alone, or one of the persons of a list.
        let about = super::dpo_persons(&item, &entry).into_iter().any(|p| {
            cii_pseudonym::wire::pseudonym(p)
                .map(|c| keys.decrypt(&c) == target)
                .unwrap_or(false)
        });
        if about {
            entries.push(entry);
        }
    }
    let today = time::OffsetDateTime::now_utc().date();
    let rulebook = cii_policy::fit::load(None, today)?;
    let institution = entries
        .iter()
        .find(|e| e.kind == EntryKind::DpoLookup as i32)
        .map(|e| e.sender.clone())
        .unwrap_or_default();
    let date = today
        .format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default();
    let text = render(&entries, &rulebook, args.lang, &args.record, &institution, &date);
    print!("{text}");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(format!("subject-report-{}-{:?}.html", args.record, args.lang).to_lowercase());
        std::fs::write(&file, html(&text, args.lang)).with_context(|| format!("writing {}", file.display()))?;
        eprintln!("written: {}", file.display());
    }
    Ok(super::exit_after(undecodable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        let at = 1_795_000_000_000_000; // 2026-11-18 10:13 UTC
        vec![
            Entry {
                kind: EntryKind::TransferPermitted as i32,
                time_micros: at,
                transfer_id: "t-1".into(),
                sender: "ORP-VS".into(),
                recipient: "AI-VS".into(),
                acting_user: "anna.meier@ORP-VS".into(),
                exchange_type: "cii.exchange.v1.EarlyDetectionReport".into(),
                purpose: "early_detection".into(),
                bases: vec!["LAI-3b-2-i".into()],
                released: vec!["identity".into(), "health_limitations".into()],
                withheld: vec!["accident_benefits:NOT_PERMITTED_BY_BASIS".into()],
                ..Entry::default()
            },
            Entry {
                kind: EntryKind::TransferDenied as i32,
                time_micros: at + 3_600_000_000,
                transfer_id: "t-2".into(),
                sender: "AS-VS".into(),
                recipient: "ORP-VS".into(),
                acting_user: "bruno.rey@ORP-VS".into(),
                purpose: "benefit_determination".into(),
                reasons: vec!["CONDITION_NOT_MET:LPGA-32-1".into()],
                ..Entry::default()
            },
            Entry {
                kind: EntryKind::TransferPermitted as i32,
                time_micros: at + 7_200_000_000,
                transfer_id: "t-3".into(),
                sender: "ORP-VS".into(),
                recipient: "AS-VS".into(),
                acting_user: "anna.meier@ORP-VS".into(),
                exchange_type: "cii.exchange.v1.EndOfEntitlementHandover".into(),
                purpose: "integration".into(),
                bases: vec!["LACI-97a-4-b".into()],
                released: vec!["unemployment_benefits".into()],
                consents: vec!["c-42@1".into()],
                ..Entry::default()
            },
        ]
    }

    fn rulebook() -> Rulebook {
        cii_policy::fit::load(None, time::macros::date!(2026 - 11 - 28)).unwrap()
    }

    #[test]
    fn the_french_report_lists_permitted_refused_and_consent_based_transfers() {
        let text = render(&entries(), &rulebook(), Language::Fr, "D-1", "ORP-VS", "2026-11-28");
        let expected = include_str!("../../tests/snapshots/subject-report-fr.txt");
        assert_eq!(text, expected, "\n--- got ---\n{text}");
    }

    #[test]
    fn the_german_report_says_the_same_in_german() {
        let text = render(&entries(), &rulebook(), Language::De, "D-1", "ORP-VS", "2026-11-28");
        let expected = include_str!("../../tests/snapshots/subject-report-de.txt");
        assert_eq!(text, expected, "\n--- got ---\n{text}");
    }

    #[test]
    fn the_html_page_escapes_and_names_its_language() {
        let page = html("Titre\na < b & c", Language::De);
        assert!(page.contains("<html lang=\"de\">") && page.contains("a &lt; b &amp; c"));
    }
}
