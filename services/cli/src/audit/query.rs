//! `cii audit query`: a data-protection officer's questions to the audit log,
//! through the institution's node (JWT role `dpo` or `network_dpo`). The
//! gateway selects by metadata and logs the query; persons arrive as
//! ciphertexts for the DPO context and are decrypted here, on the DPO's side,
//! with the DPO context key — the gateway never holds it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cii_proto::audit::{EntryKind, QueryRequest};
use cii_pseudonym::node::NodeKeys;
use clap::{Args, ValueEnum};
use tokio_stream::StreamExt;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for reading.
    Table,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
cii audit query --node https://127.0.0.1:7101 --ca ca.pem --token-file dpo.token --decision deny\n  \
cii audit query --node https://127.0.0.1:7101 --ca ca.pem --token-file dpo.token \\\n    \
--from 2026-11-01 --until 2026-12-01 --format csv > november.csv\n  \
cii audit query … --dpo-keys keys/dpo/ORP-VS/session-keys.json --global-public keys/global-public.json \\\n    \
--person 3f2a…   (the person's pseudonym in the DPO context, as this command prints it)\n\n\
A `dpo` token sees the entries where its institution sends or receives; `network_dpo` sees all.\n\
Every query is itself an entry of the log.")]
pub struct QueryArgs {
    /// The node and the DPO's token (role `dpo` or `network_dpo`).
    #[command(flatten)]
    node: crate::node_api::NodeApiArgs,
    #[command(flatten)]
    filters: Filters,
    /// At most this many entries.
    #[arg(long, default_value_t = 0)]
    limit: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The DPO's session keys from `cii keys init`: `dpo/<ID>/session-keys.json` for an
    /// institution's `dpo`, `dpo/audit-session-keys.json` for the `network_dpo`:
    /// persons are then shown as their DPO-context pseudonym.
    #[arg(long, requires = "global_public")]
    dpo_keys: Option<PathBuf>,
    /// The network's `global-public.json`.
    #[arg(long)]
    global_public: Option<PathBuf>,
    /// Only entries about this person (hex of the DPO-context pseudonym); needs --dpo-keys.
    #[arg(long, requires = "dpo_keys")]
    person: Option<String>,
}

/// What entries to select (all given filters must match).
#[derive(Debug, Args)]
pub struct Filters {
    /// Entries where this institution sends or receives (a `dpo` may name only their own).
    #[arg(long)]
    institution: Option<String>,
    /// From this day (UTC, `YYYY-MM-DD`, inclusive).
    #[arg(long)]
    from: Option<String>,
    /// Until this day (UTC, `YYYY-MM-DD`, exclusive).
    #[arg(long)]
    until: Option<String>,
    /// Legal basis id, e.g. `LAI-3b-2-i`.
    #[arg(long)]
    basis: Option<String>,
    /// `permit` or `deny`.
    #[arg(long)]
    decision: Option<String>,
    /// Exchange type, e.g. `cii.exchange.v1.EarlyDetectionReport`.
    #[arg(long)]
    exchange_type: Option<String>,
    /// The acting user as logged, `user@institution`.
    #[arg(long)]
    user: Option<String>,
}

impl Filters {
    fn request(&self, limit: u32, with_proofs: bool) -> anyhow::Result<QueryRequest> {
        Ok(QueryRequest {
            institution: self.institution.clone().unwrap_or_default(),
            from: day("from", &self.from)?,
            until: day("until", &self.until)?,
            basis: self.basis.clone().unwrap_or_default(),
            decision: self.decision.clone().unwrap_or_default(),
            exchange_type: self.exchange_type.clone().unwrap_or_default(),
            acting_user: self.user.clone().unwrap_or_default(),
            limit,
            with_proofs,
        })
    }
}

/// Sends the query through the node; a refusal is printed with its code (exit code 2).
async fn ask(
    node: &crate::node_api::NodeApiArgs,
    request: QueryRequest,
) -> anyhow::Result<Result<tonic::Streaming<cii_proto::audit::Entry>, ExitCode>> {
    let (mut client, token) = node.connect()?;
    match client.query_audit(crate::node_api::authorized(&token, request)?).await {
        Ok(answer) => Ok(Ok(answer.into_inner())),
        Err(status) => Ok(Err(crate::node_api::refused(&status))),
    }
}

fn day(field: &str, text: &Option<String>) -> anyhow::Result<Option<prost_types::Timestamp>> {
    let Some(text) = text else { return Ok(None) };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).with_context(|| format!("--{field}: expected YYYY-MM-DD"))?;
    Ok(Some(prost_types::Timestamp {
        seconds: date.midnight().assume_utc().unix_timestamp(),
        nanos: 0,
    }))
}

/// One entry as printed.
struct Row {
    index: u64,
    time: String,
    kind: String,
    sender: String,
    recipient: String,
    user: String,
    exchange_type: String,
    purpose: String,
    bases: String,
    released: String,
    withheld: String,
    reasons: String,
    person: String,
}

const COLUMNS: [&str; 13] = [
    "index",
    "time",
    "kind",
    "sender",
    "recipient",
    "user",
    "exchange_type",
    "purpose",
    "bases",
    "released",
    "withheld",
    "reasons",
    "person",
];

impl Row {
    fn values(&self) -> [String; 13] {
        [
            self.index.to_string(),
            self.time.clone(),
            self.kind.clone(),
            self.sender.clone(),
            self.recipient.clone(),
            self.user.clone(),
            self.exchange_type.clone(),
            self.purpose.clone(),
            self.bases.clone(),
            self.released.clone(),
            self.withheld.clone(),
            self.reasons.clone(),
            self.person.clone(),
        ]
    }
}

/// One CSV field, quoted when it must be.
///
/// A cell a spreadsheet would read as a formula (beginning with `=`, `+`, `-`, `@`, a tab
/// or a carriage return) gets a leading `'`, so opening an export never runs what an entry
/// or a filter put there (OWASP's CSV-injection rule).
pub(crate) fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

pub async fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let keys = match (&args.dpo_keys, &args.global_public) {
        (Some(session), Some(global)) => {
            let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
            Some(NodeKeys::from_json(&read(global)?, &read(session)?).context("the DPO context keys")?)
        }
        _ => None,
    };
    let person = match &args.person {
        Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => Some(hex.to_ascii_lowercase()),
        Some(_) => bail!("--person: expected the 64 hex digits of a DPO-context pseudonym"),
        None => None,
    };
    let request = args
        .filters
        .request(if person.is_some() { 0 } else { args.limit }, false)?;
    let mut stream = match ask(&args.node, request).await? {
        Ok(stream) => stream,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    if args.format == Format::Csv {
        writeln!(out, "{}", COLUMNS.join(","))?;
    }
    let mut printed = 0u32;
    let mut undecodable = 0u64;
    while let Some(item) = stream.next().await {
        let item = item.context("the answer stream broke off")?;
        if super::report_undecodable(&item) {
            undecodable += 1;
            continue;
        }
        let entry = cii_audit::entry::decode(&item.body).context("an entry does not decode")?;
        // The person alone, or each person of a list entry, as the DPO key opens them.
        let pseudonyms: Vec<String> = match &keys {
            Some(keys) => super::dpo_persons(&item, &entry)
                .into_iter()
                .filter_map(|p| cii_pseudonym::wire::pseudonym(p).ok())
                .map(|c| {
                    keys.decrypt(&c)
                        .0
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                })
                .collect(),
            None => Vec::new(),
        };
        let pseudonym = match &person {
            Some(p) if !pseudonyms.contains(p) => continue,
            Some(p) => p.clone(),
            None => pseudonyms.first().cloned().unwrap_or_default(),
        };
        if args.limit > 0 && printed >= args.limit {
            break;
        }
        printed += 1;
        let time = cii_types::time::from_micros(entry.time_micros)
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let row = Row {
            index: item.index,
            time,
            kind: EntryKind::try_from(entry.kind)
                .map(|k| k.as_str_name().to_owned())
                .unwrap_or_default(),
            sender: entry.sender,
            recipient: entry.recipient,
            user: entry.acting_user,
            exchange_type: entry.exchange_type,
            purpose: entry.purpose,
            bases: entry.bases.join(" "),
            released: entry.released.join(" "),
            withheld: entry.withheld.join(" "),
            reasons: entry.reasons.join(" "),
            person: pseudonym,
        };
        match args.format {
            Format::Jsonl => {
                let object: serde_json::Map<String, serde_json::Value> = COLUMNS
                    .iter()
                    .zip(row.values())
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v)))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Object(object))?;
            }
            Format::Csv => writeln!(
                out,
                "{}",
                row.values().iter().map(|v| csv_field(v)).collect::<Vec<_>>().join(",")
            )?,
            Format::Table => rows.push(row),
        }
    }
    if args.format == Format::Table {
        let shown = [0usize, 1, 2, 3, 4, 5, 6, 8, 11, 12];
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.values().to_vec()).collect();
        let width = |i: usize| {
            cells
                .iter()
                .map(|c| c.get(i).map_or(0, |v| v.chars().count()))
                .chain(std::iter::once(COLUMNS.get(i).map_or(0, |c| c.len())))
                .max()
                .unwrap_or(0)
        };
        let line = |values: Vec<&str>| {
            shown
                .iter()
                .zip(values)
                .map(|(i, v)| format!("{v:<w$}", w = width(*i)))
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(
            out,
            "{}",
            line(shown.iter().filter_map(|i| COLUMNS.get(*i).copied()).collect()).trim_end()
        )?;
        for c in &cells {
            writeln!(
                out,
                "{}",
                line(shown.iter().filter_map(|i| c.get(*i).map(String::as_str)).collect()).trim_end()
            )?;
        }
        writeln!(out, "{} entries", cells.len())?;
    }
    Ok(super::exit_after(undecodable))
}

/// `cii audit export`: the selected entries with their inclusion proofs, as JSON lines.
#[derive(Debug, Args)]
#[command(
    after_help = "Each line: index, entry (canonical bytes, base64), leaf_hash, inclusion_proof (base64\n\
hashes) and the signed checkpoint they lead to. Anyone with the log's verifier key can check the\n\
file: `cii audit check-export --vkey KEY FILE`.\n\n\
Example:\n  cii audit export --node https://127.0.0.1:7101 --ca ca.pem --token-file dpo.token \\\n    \
--from 2026-01-01 --until 2027-01-01 > log-2026.jsonl"
)]
pub struct ExportArgs {
    /// The node and the DPO's token (role `dpo` or `network_dpo`).
    #[command(flatten)]
    node: crate::node_api::NodeApiArgs,
    #[command(flatten)]
    filters: Filters,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut stream = match ask(&args.node, args.filters.request(0, true)?).await? {
        Ok(stream) => stream,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    let (mut count, mut undecodable) = (0u64, 0u64);
    while let Some(item) = stream.next().await {
        let item = item.context("the answer stream broke off")?;
        if super::report_undecodable(&item) {
            undecodable += 1;
            continue;
        }
        let leaf = cii_audit::merkle::leaf_hash(&item.body);
        let line = serde_json::json!({
            "index": item.index,
            "entry": super::b64(&item.body),
            "leaf_hash": super::b64(&leaf),
            "inclusion_proof": item.inclusion_proof.iter().map(|h| super::b64(h)).collect::<Vec<_>>(),
            "checkpoint": item.checkpoint,
        });
        writeln!(out, "{line}")?;
        count += 1;
    }
    eprintln!("{count} entries exported");
    Ok(super::exit_after(undecodable))
}

/// `cii audit check-export`: checks an export offline against the log's verifier key.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit 0: every entry is in its signed checkpoint. Exit 1: the first line that is not.\n\n\
Example:\n  cii audit check-export --vkey \"$(cat audit.vkey)\" log-2026.jsonl"
)]
pub struct CheckExportArgs {
    /// The log's verifier key (`cii audit vkey`), `<origin>+<key id>+<base64 key>`.
    #[arg(long)]
    vkey: String,
    /// The export file (JSON lines).
    file: PathBuf,
}

#[expect(clippy::print_stdout, reason = "the command's verdict")]
pub fn check_export(args: CheckExportArgs) -> anyhow::Result<ExitCode> {
    use base64::Engine;
    let verifier = cii_audit::note::Verifier::from_vkey(args.vkey.trim()).context("--vkey")?;
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let decode = |v: &serde_json::Value| -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()
    };
    let mut checked = 0u64;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fail = |why: &str| {
            println!("FAILED: line {}: {why}", n + 1);
            Ok(ExitCode::from(1))
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            return fail("not JSON");
        };
        let (Some(entry), Some(index)) = (value.get("entry").and_then(decode), value["index"].as_u64()) else {
            return fail("no entry or index");
        };
        let Some(checkpoint) = value["checkpoint"].as_str() else {
            return fail("no checkpoint");
        };
        let Ok(cp) = verifier.open_checkpoint(checkpoint, verifier.name()) else {
            return fail("the checkpoint's signature does not verify with this key");
        };
        let proof: Option<Vec<cii_audit::merkle::Hash>> = value["inclusion_proof"]
            .as_array()
            .map(|hashes| {
                hashes
                    .iter()
                    .map(|h| decode(h).and_then(|b| b.try_into().ok()))
                    .collect()
            })
            .unwrap_or(None);
        let Some(proof) = proof else {
            return fail("no inclusion proof");
        };
        let leaf = cii_audit::merkle::leaf_hash(&entry);
        if !cii_audit::merkle::verify_inclusion(&leaf, index, cp.size, &proof, &cp.root) {
            return fail("the entry is not in the checkpoint (altered entry or proof)");
        }
        if cii_audit::entry::decode(&entry).map(|e| e.index) != Ok(index) {
            return fail("the entry does not say it is at this index");
        }
        checked += 1;
    }
    println!("ok: {checked} entries, each in its signed checkpoint");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_cells_never_start_a_formula() {
        assert_eq!(csv_field("AI-VS"), "AI-VS");
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        for cell in ["+1", "-1+2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(csv_field(cell).trim_start_matches('"').starts_with('\''), "{cell:?}");
        }
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
