//! `cii audit usage-report`: an institution's month in figures — transfers by
//! exchange type, legal basis and decision, the refusals with their reasons,
//! open and overdue obligations — as an HTML page with simple bar charts and a
//! CSV file beside it (what Suwinet's monthly usage reports give).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cii_audit::{Entry, EntryKind};
use cii_proto::gateway::ListObligationsRequest;
use clap::Args;

use super::query::csv_field;
use super::subject_report::escape;
use crate::node_api::{authorized, refused};
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  cii audit usage-report --node https://127.0.0.1:7101 --ca ca.pem --token-file dpo.token \\\n    \
--month 2026-11 --out reports/\n\nWrites reports/usage-<institution>-<month>.html and .csv; the query is logged."
)]
pub struct UsageReportArgs {
    /// The node and the DPO's token (role `dpo` or `network_dpo`).
    #[command(flatten)]
    node: crate::node_api::NodeApiArgs,
    /// The month, `YYYY-MM` (UTC).
    #[arg(long)]
    month: String,
    /// The institution (default: the token's own).
    #[arg(long)]
    institution: Option<String>,
    /// The folder for the HTML and CSV files.
    #[arg(long)]
    out: PathBuf,
}

/// Permitted and refused transfers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Permitted.
    pub permitted: u64,
    /// Refused.
    pub refused: u64,
}

/// The figures of one month.
#[derive(Debug, Default)]
pub struct Usage {
    /// By exchange type (short name).
    pub by_type: BTreeMap<String, Counts>,
    /// By basis (permits only; a refusal's bases are in its reasons).
    pub by_basis: BTreeMap<String, u64>,
    /// By basis, sender and recipient (permits only): the volume of individual cases, which the
    /// DPOs compare with the cases their institution handles (alert `CiiCaseVolumeHigh`).
    pub by_basis_pair: BTreeMap<(String, String, String), u64>,
    /// By counterpart: (sent to / received from, institution).
    pub by_counterpart: BTreeMap<(String, String), Counts>,
    /// Refusals: (index, when, from, to, type, reasons).
    pub refusals: Vec<[String; 5]>,
    /// All transfers.
    pub total: Counts,
}

/// Counts the transfer entries of `institution`.
pub fn usage(entries: &[Entry], institution: &str) -> Usage {
    let mut u = Usage::default();
    for e in entries {
        let permitted = e.kind == EntryKind::TransferPermitted as i32;
        if !permitted && e.kind != EntryKind::TransferDenied as i32 {
            continue;
        }
        let bump = |c: &mut Counts| {
            if permitted {
                c.permitted += 1;
            } else {
                c.refused += 1;
            }
        };
        let kind = e.exchange_type.rsplit('.').next().unwrap_or_default();
        bump(
            u.by_type
                .entry(if kind.is_empty() {
                    "(pull)".to_owned()
                } else {
                    kind.to_owned()
                })
                .or_default(),
        );
        bump(&mut u.total);
        let counterpart = if e.sender == institution {
            ("sent to".to_owned(), e.recipient.clone())
        } else {
            ("received from".to_owned(), e.sender.clone())
        };
        bump(u.by_counterpart.entry(counterpart).or_default());
        if permitted {
            for basis in &e.bases {
                *u.by_basis.entry(basis.clone()).or_default() += 1;
                let pair = (basis.clone(), e.sender.clone(), e.recipient.clone());
                *u.by_basis_pair.entry(pair).or_default() += 1;
            }
        } else {
            let when = cii_types::time::from_micros(e.time_micros)
                .and_then(|t| {
                    t.format(time::macros::format_description!(
                        "[year]-[month]-[day] [hour]:[minute]"
                    ))
                    .ok()
                })
                .unwrap_or_default();
            u.refusals.push([
                when,
                e.sender.clone(),
                e.recipient.clone(),
                kind.to_owned(),
                e.reasons.join(" "),
            ]);
        }
    }
    u
}

/// The CSV file: `section,key,permitted,refused` lines, then the refusals and obligations.
pub fn csv(u: &Usage, obligations: &[[String; 4]]) -> String {
    let mut out = String::from("section,key,permitted,refused\n");
    let _ = writeln!(out, "total,all,{},{}", u.total.permitted, u.total.refused);
    for (k, c) in &u.by_type {
        let _ = writeln!(out, "exchange_type,{},{},{}", csv_field(k), c.permitted, c.refused);
    }
    for (k, n) in &u.by_basis {
        let _ = writeln!(out, "basis,{},{n},0", csv_field(k));
    }
    for ((basis, from, to), n) in &u.by_basis_pair {
        let _ = writeln!(out, "basis_pair,{},{n},0", csv_field(&format!("{basis} {from}→{to}")));
    }
    for ((direction, other), c) in &u.by_counterpart {
        let _ = writeln!(
            out,
            "counterpart,{} {},{},{}",
            direction,
            csv_field(other),
            c.permitted,
            c.refused
        );
    }
    out.push_str("\nrefusal_time,from,to,exchange_type,reasons\n");
    for r in &u.refusals {
        let _ = writeln!(out, "{}", r.iter().map(|v| csv_field(v)).collect::<Vec<_>>().join(","));
    }
    out.push_str("\nobligation,kind,due,state\n");
    for o in obligations {
        let _ = writeln!(out, "{}", o.iter().map(|v| csv_field(v)).collect::<Vec<_>>().join(","));
    }
    out
}

/// A table whose last column is a bar proportional to the count.
fn bars(title: &str, rows: &[(String, u64, u64)]) -> String {
    let max = rows.iter().map(|(_, p, r)| p + r).max().unwrap_or(0).max(1);
    let mut html = format!("<h2>{}</h2><table>", escape(title));
    for (key, p, r) in rows {
        let width = |n: u64| n * 300 / max;
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=n>{p}</td><td class=n>{r}</td><td><span class=p style=\"width:{}px\"></span><span class=r style=\"width:{}px\"></span></td></tr>",
            escape(key),
            width(*p),
            width(*r)
        );
    }
    html.push_str("</table>");
    html
}

/// The HTML page.
pub fn html(u: &Usage, obligations: &[[String; 4]], institution: &str, month: &str) -> String {
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Usage {i} {m}</title><style>\
         body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td{{padding:2px 8px}}td.n{{text-align:right}}\
         span{{display:inline-block;height:12px}}.p{{background:#2a7}}.r{{background:#c33}}tr.late td{{color:#c33}}\
         </style></head><body><h1>Usage report — {i} — {m}</h1><p>{t} transfers: {p} permitted, {r} refused \
         (green: permitted, red: refused).</p>",
        i = escape(institution),
        m = escape(month),
        t = u.total.permitted + u.total.refused,
        p = u.total.permitted,
        r = u.total.refused
    );
    let types: Vec<_> = u
        .by_type
        .iter()
        .map(|(k, c)| (k.clone(), c.permitted, c.refused))
        .collect();
    page.push_str(&bars("By exchange type", &types));
    let bases: Vec<_> = u.by_basis.iter().map(|(k, n)| (k.clone(), *n, 0)).collect();
    page.push_str(&bars("Permits by legal basis", &bases));
    let pairs: Vec<_> = u
        .by_basis_pair
        .iter()
        .map(|((b, from, to), n)| (format!("{b} {from} → {to}"), *n, 0))
        .collect();
    page.push_str(&bars("Permits by legal basis, sender → recipient", &pairs));
    let counterparts: Vec<_> = u
        .by_counterpart
        .iter()
        .map(|((d, o), c)| (format!("{d} {o}"), c.permitted, c.refused))
        .collect();
    page.push_str(&bars("By counterpart", &counterparts));
    page.push_str(
        "<h2>Refusals</h2><table><tr><th>when (UTC)</th><th>from</th><th>to</th><th>type</th><th>reasons</th></tr>",
    );
    for r in &u.refusals {
        page.push_str("<tr>");
        for v in r {
            let _ = write!(page, "<td>{}</td>", escape(v));
        }
        page.push_str("</tr>");
    }
    page.push_str("</table><h2>Obligations</h2><table><tr><th>id</th><th>kind</th><th>due</th><th>state</th></tr>");
    for o in obligations {
        let late = if o[3] == "overdue" { " class=late" } else { "" };
        let _ = write!(page, "<tr{late}>");
        for v in o {
            let _ = write!(page, "<td>{}</td>", escape(v));
        }
        page.push_str("</tr>");
    }
    page.push_str("</table></body></html>\n");
    page
}

#[expect(clippy::print_stdout, reason = "the command's summary")]
pub async fn run(args: UsageReportArgs) -> anyhow::Result<ExitCode> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let first = time::Date::parse(&format!("{}-01", args.month), &format).context("--month: expected YYYY-MM")?;
    let next = first
        .replace_day(28)
        .ok()
        .and_then(|d| d.checked_add(time::Duration::days(4)))
        .and_then(|d| d.replace_day(1).ok())
        .context("--month out of range")?;
    let stamp = |d: time::Date| prost_types::Timestamp {
        seconds: d.midnight().assume_utc().unix_timestamp(),
        nanos: 0,
    };
    let (mut client, token) = args.node.connect()?;
    let query = authorized(
        &token,
        cii_proto::audit::QueryRequest {
            institution: args.institution.clone().unwrap_or_default(),
            from: Some(stamp(first)),
            until: Some(stamp(next)),
            ..cii_proto::audit::QueryRequest::default()
        },
    )?;
    let mut stream = match client.query_audit(query).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return Ok(refused(&status)),
    };
    let (mut entries, mut undecodable) = (Vec::new(), 0u64);
    while let Some(item) = stream.next().await {
        let item = item.context("the answer stream broke off")?;
        if super::report_undecodable(&item) {
            undecodable += 1;
            continue;
        }
        entries.push(cii_audit::entry::decode(&item.body)?);
    }
    let own = client
        .status(authorized(&token, cii_proto::node::StatusRequest {})?)
        .await
        .context("node status")?
        .into_inner()
        .institution_id;
    let institution = args.institution.clone().unwrap_or_else(|| own.clone());
    // Obligations are the node's own institution's (the gateway answers for the caller only).
    let mut obligations = Vec::new();
    if institution == own {
        let list = authorized(
            &token,
            ListObligationsRequest {
                include_fulfilled: true,
            },
        )?;
        for o in client
            .list_obligations(list)
            .await
            .context("obligations")?
            .into_inner()
            .obligations
        {
            let Some(ob) = o.obligation else { continue };
            let due = ob
                .due
                .and_then(|d| time::OffsetDateTime::from_unix_timestamp(d.seconds).ok())
                .and_then(|t| t.format(&format).ok())
                .unwrap_or_default();
            let state = if o.fulfilled_at.is_some() {
                "fulfilled"
            } else if o.overdue {
                "overdue"
            } else {
                "open"
            };
            obligations.push([ob.id, ob.kind, due, state.to_owned()]);
        }
    }
    let u = usage(&entries, &institution);
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let base = args.out.join(format!("usage-{institution}-{}", args.month));
    let (html_file, csv_file) = (base.with_extension("html"), base.with_extension("csv"));
    std::fs::write(&html_file, html(&u, &obligations, &institution, &args.month))?;
    std::fs::write(&csv_file, csv(&u, &obligations))?;
    let open = obligations.iter().filter(|o| o[3] != "fulfilled").count();
    let overdue = obligations.iter().filter(|o| o[3] == "overdue").count();
    println!(
        "{institution} {}: {} permitted, {} refused; obligations: {open} open, {overdue} overdue",
        args.month, u.total.permitted, u.total.refused
    );
    println!("written: {}\nwritten: {}", html_file.display(), csv_file.display());
    Ok(super::exit_after(undecodable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(kind: EntryKind, from: &str, to: &str, ty: &str, bases: &[&str], reasons: &[&str]) -> Entry {
        Entry {
            kind: kind as i32,
            time_micros: 1_795_000_000_000_000,
            sender: from.into(),
            recipient: to.into(),
            exchange_type: format!("cii.exchange.v1.{ty}"),
            bases: bases.iter().map(|b| (*b).to_owned()).collect(),
            reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
            ..Entry::default()
        }
    }

    #[test]
    fn counts_by_type_basis_and_counterpart_with_refusals_listed() {
        use EntryKind::*;
        let entries = vec![
            transfer(
                TransferPermitted,
                "ORP-VS",
                "AI-VS",
                "EarlyDetectionReport",
                &["LAI-3b-2-i"],
                &[],
            ),
            transfer(
                TransferPermitted,
                "ORP-VS",
                "AI-VS",
                "EarlyDetectionReport",
                &["LAI-3b-2-i"],
                &[],
            ),
            transfer(
                TransferDenied,
                "ORP-VS",
                "AI-VS",
                "EarlyDetectionReport",
                &[],
                &["CONDITION_NOT_MET:LAI-3b-2-i"],
            ),
            transfer(
                TransferPermitted,
                "AS-VS",
                "ORP-VS",
                "RefugeeNotification",
                &["LEI-53-5"],
                &[],
            ),
            Entry {
                kind: Enrolment as i32,
                sender: "ORP-VS".into(),
                ..Entry::default()
            },
        ];
        let u = usage(&entries, "ORP-VS");
        assert_eq!(
            u.total,
            Counts {
                permitted: 3,
                refused: 1
            }
        );
        assert_eq!(
            u.by_type["EarlyDetectionReport"],
            Counts {
                permitted: 2,
                refused: 1
            }
        );
        assert_eq!(u.by_basis["LAI-3b-2-i"], 2);
        assert_eq!(
            u.by_basis_pair
                .iter()
                .map(|(k, n)| (k.0.as_str(), *n))
                .collect::<Vec<_>>(),
            u.by_basis.iter().map(|(k, n)| (k.as_str(), *n)).collect::<Vec<_>>(),
            "one pair per basis here"
        );
        assert_eq!(
            u.by_counterpart[&("received from".to_owned(), "AS-VS".to_owned())],
            Counts {
                permitted: 1,
                refused: 0
            }
        );
        assert_eq!(u.refusals.len(), 1);
        let obligations = [[
            "ORP-VS:t:0".to_owned(),
            "inform_person_after".into(),
            "2026-12-01".into(),
            "overdue".into(),
        ]];
        let file = csv(&u, &obligations);
        assert!(file.contains("exchange_type,EarlyDetectionReport,2,1\n"), "{file}");
        assert!(file.contains("CONDITION_NOT_MET:LAI-3b-2-i"));
        let page = html(&u, &obligations, "ORP-VS", "2026-11");
        assert!(page.contains("<tr class=late>") && page.contains("4 transfers: 3 permitted, 1 refused"));
    }
}
