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
cii audit query … --dpo-keys keys/dpo/audit-session-keys.json --global-public keys/global-public.json \\\n    \
--person 3f2a…   (the person's pseudonym in the DPO context, as this command prints it)\n\n\
A `dpo` token sees the entries where its institution sends or receives; `network_dpo` sees all.\n\
Every query is itself an entry of the log.")]
pub struct QueryArgs {
    /// The node and the DPO's token (role `dpo` or `network_dpo`).
    #[command(flatten)]
    node: crate::node_api::NodeApiArgs,
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
    /// At most this many entries.
    #[arg(long, default_value_t = 0)]
    limit: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The DPO context's session keys (`dpo/audit-session-keys.json` of `cii keys init`):
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

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

pub async fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let (mut client, token) = args.node.connect()?;
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
    let request = QueryRequest {
        institution: args.institution.clone().unwrap_or_default(),
        from: day("from", &args.from)?,
        until: day("until", &args.until)?,
        basis: args.basis.clone().unwrap_or_default(),
        decision: args.decision.clone().unwrap_or_default(),
        exchange_type: args.exchange_type.clone().unwrap_or_default(),
        acting_user: args.user.clone().unwrap_or_default(),
        limit: if person.is_some() { 0 } else { args.limit },
    };
    let mut call = tonic::Request::new(request);
    call.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not valid header text")?,
    );
    let mut stream = match client.query_audit(call).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            let code = cii_kit::grpc::error_code(&status).unwrap_or_else(|| format!("{:?}", status.code()));
            eprintln!("refused: {code}: {}", status.message());
            return Ok(ExitCode::from(2));
        }
    };
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    if args.format == Format::Csv {
        writeln!(out, "{}", COLUMNS.join(","))?;
    }
    let mut printed = 0u32;
    while let Some(item) = stream.next().await {
        let item = item.context("the answer stream broke off")?;
        let entry = cii_audit::entry::decode(&item.body).context("an entry does not decode")?;
        let pseudonym = match (&keys, entry.audit_pseudonym.is_empty()) {
            (Some(keys), false) => cii_pseudonym::wire::pseudonym(&entry.audit_pseudonym)
                .map(|c| {
                    keys.decrypt(&c)
                        .0
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        if person.as_ref().is_some_and(|p| *p != pseudonym) {
            continue;
        }
        if args.limit > 0 && printed >= args.limit {
            break;
        }
        printed += 1;
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(entry.time_micros) * 1000)
            .ok()
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
    Ok(ExitCode::SUCCESS)
}
