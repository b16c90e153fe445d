//! The legal matrix: who may send what to whom, under which article, with
//! which conditions; as Markdown or as a standalone HTML page.

use std::fmt::Write;

use crate::explain::{condition_label, l};
use crate::rulebook::{Basis, Rulebook};
use crate::vocab::Lang;

struct Row {
    from: String,
    to: String,
    basis: String,
    cells: Vec<String>,
}

fn rows(rb: &Rulebook, active: bool, lang: Lang) -> Vec<Row> {
    let mut rows: Vec<Row> = rb
        .bases
        .iter()
        .filter(|b| b.active == active)
        .map(|b: &Basis| {
            let join = |v: Vec<String>| v.join(", ");
            let types = |v: &[cii_types::InstitutionType]| join(v.iter().map(|t| t.to_string()).collect());
            let arrow = if b.mutual { "⇄" } else { "→" };
            let cells = vec![
                format!("{} {arrow} {}", types(&b.from), types(&b.to)),
                format!("{} ({})", b.id, b.citation.get(lang)),
                join(b.triggers.iter().map(|t| t.to_string()).collect()),
                join(
                    b.purposes
                        .iter()
                        .filter_map(|i| rb.purposes.get(*i))
                        .map(|p| p.id.clone())
                        .collect(),
                ),
                join(
                    b.categories
                        .iter()
                        .filter_map(|i| rb.categories.get(*i))
                        .map(|c| c.id.clone())
                        .collect(),
                ),
                join(
                    b.conditions
                        .iter()
                        .map(|c| condition_label(rb, *c, lang).to_owned())
                        .collect(),
                ),
                join(
                    b.obligations
                        .iter()
                        .map(|o| {
                            let kind = rb.obligation_kinds.get(o.kind).map_or("?", |k| k.id.as_str());
                            format!("{kind} ({}, {} j)", o.owner, o.due_days)
                        })
                        .collect(),
                ),
                b.status.to_string(),
            ];
            Row {
                from: types(&b.from),
                to: types(&b.to),
                basis: b.id.clone(),
                cells,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.from, &a.to, &a.basis).cmp(&(&b.from, &b.to, &b.basis)));
    rows
}

fn headers(lang: Lang) -> [&'static str; 8] {
    [
        l(lang, "De → À", "Von → An", "From → To"),
        l(lang, "Base légale", "Rechtsgrundlage", "Legal basis"),
        l(lang, "Déclencheur", "Auslöser", "Trigger"),
        l(lang, "Buts", "Zwecke", "Purposes"),
        l(lang, "Catégories", "Kategorien", "Categories"),
        l(lang, "Conditions", "Voraussetzungen", "Conditions"),
        l(lang, "Obligations", "Pflichten", "Obligations"),
        l(lang, "Statut", "Status", "Status"),
    ]
}

/// The matrix as Markdown.
pub fn markdown(rb: &Rulebook, lang: Lang) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} — {}\n",
        l(lang, "Matrice des échanges", "Austauschmatrix", "Exchange matrix"),
        rb.version
    );
    let _ = writeln!(
        out,
        "{} `{}`\n",
        l(
            lang,
            "Empreinte du recueil :",
            "Prüfsumme des Regelwerks:",
            "Rulebook hash:"
        ),
        rb.hash
    );
    for (title, active) in [
        (l(lang, "Bases actives", "Aktive Grundlagen", "Active bases"), true),
        (
            l(
                lang,
                "Bases inactives (à confirmer)",
                "Inaktive Grundlagen (zu bestätigen)",
                "Inactive bases (to be confirmed)",
            ),
            false,
        ),
    ] {
        let _ = writeln!(out, "## {title}\n");
        let h = headers(lang);
        let _ = writeln!(out, "| {} |", h.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(h.len()));
        for row in rows(rb, active, lang) {
            let cells: Vec<String> = row.cells.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out.push('\n');
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The matrix as a standalone HTML page.
pub fn html(rb: &Rulebook, lang: Lang) -> String {
    let mut out = String::new();
    let title = format!(
        "{} — {}",
        l(lang, "Matrice des échanges", "Austauschmatrix", "Exchange matrix"),
        rb.version
    );
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>",
        escape(&title)
    );
    out.push_str("<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:90%}th,td{border:1px solid #bbb;padding:4px 6px;vertical-align:top}th{background:#eef}tr:nth-child(even){background:#f8f8f8}.inference{color:#8a5a00}.open{color:#a00}</style>\n</head>\n<body>\n");
    let _ = writeln!(
        out,
        "<h1>{}</h1>\n<p><code>{}</code></p>",
        escape(&title),
        escape(&rb.hash)
    );
    for (heading, active) in [
        (l(lang, "Bases actives", "Aktive Grundlagen", "Active bases"), true),
        (
            l(
                lang,
                "Bases inactives (à confirmer)",
                "Inaktive Grundlagen (zu bestätigen)",
                "Inactive bases (to be confirmed)",
            ),
            false,
        ),
    ] {
        let _ = writeln!(
            out,
            "<h2>{}</h2>\n<table>\n<tr>{}</tr>",
            escape(heading),
            headers(lang)
                .iter()
                .map(|h| format!("<th>{}</th>", escape(h)))
                .collect::<String>()
        );
        for row in rows(rb, active, lang) {
            let status = row.cells.last().cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr class=\"{}\">{}</tr>",
                escape(&status),
                row.cells
                    .iter()
                    .map(|c| format!("<td>{}</td>", escape(c)))
                    .collect::<String>()
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}
