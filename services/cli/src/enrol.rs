//! `cii enrol`: batch enrolment of an institution's caseload from a CSV file,
//! through its node's API, as its IT system would do it. AVS numbers are read
//! from the file and sent to the node only; the report names lines, never numbers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cii_kit::grpc::{error_code, error_field};
use cii_proto::node::{EnrolRequest, node_client::NodeClient};
use clap::Args;

/// Attempts per line while the gateway asks to slow down or is unreachable.
const ATTEMPTS: u32 = 8;

#[derive(Debug, Args)]
#[command(
    after_help = "The CSV file has one person per line: AVS_NUMBER,LOCAL_RECORD_ID (dots in the AVS \
number optional; empty lines and lines starting with # are skipped; a first line naming the columns is \
skipped too).\n\nLines refused are reported by line number and stable code, never with the AVS number; \
lines refused for the enrolment rate limit are retried with backoff. Exit code 1 if any line was refused.\n\n\
Example:\n  cii pki token --dir deploy/dev/pki --institution ORP-VS --user batch --role caseworker > token\n  \
cii enrol --node https://127.0.0.1:7101 --ca deploy/dev/pki/ca.pem --token-file token --csv caseload.csv"
)]
pub struct EnrolArgs {
    #[command(flatten)]
    node: crate::node_api::NodeApiArgs,
    /// The CSV file.
    #[arg(long)]
    csv: PathBuf,
    /// Enrolments in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

/// One line of the file.
struct Line {
    number: usize,
    avs: String,
    record: String,
}

fn read_lines(text: &str) -> Vec<Line> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') {
                return None;
            }
            let (avs, record) = raw.split_once(',').unwrap_or((raw, ""));
            let (avs, record) = (avs.trim(), record.trim());
            if i == 0 && !avs.starts_with(|c: char| c.is_ascii_digit()) {
                return None; // a header
            }
            Some(Line {
                number: i + 1,
                avs: avs.to_owned(),
                record: record.to_owned(),
            })
        })
        .collect()
}

#[expect(clippy::print_stdout, reason = "the command's report")]
pub async fn run(args: EnrolArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.csv).with_context(|| format!("reading {}", args.csv.display()))?;
    let lines = read_lines(&text);
    let (client, token) = args.node.connect()?;

    let bar = indicatif::ProgressBar::new(lines.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} persons {per_sec} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::new();
    for line in lines {
        let (client, token, limit, bar) = (client.clone(), token.clone(), limit.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let outcome = enrol_one(client, &token, &line).await;
            bar.inc(1);
            (line.number, outcome)
        }));
    }
    let mut enrolled = 0usize;
    let mut refused: Vec<(usize, String)> = Vec::new();
    for task in tasks {
        let (number, outcome) = task.await.context("enrolment task")?;
        match outcome {
            Ok(()) => enrolled += 1,
            Err(why) => refused.push((number, why)),
        }
    }
    bar.finish_and_clear();
    refused.sort();
    for (number, why) in &refused {
        println!("line {number}: {why}");
    }
    println!("{enrolled} enrolled, {} refused", refused.len());
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Enrols one line; retries while rate-limited or unavailable. The error names the code and field.
async fn enrol_one(mut client: NodeClient<tonic::transport::Channel>, token: &str, line: &Line) -> Result<(), String> {
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=ATTEMPTS {
        let mut request = tonic::Request::new(EnrolRequest {
            avs_number: line.avs.clone(),
            local_record_id: line.record.clone(),
        });
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not valid header text".to_owned())?;
        request.metadata_mut().insert("authorization", header);
        match client.enrol(request).await {
            Ok(_) => return Ok(()),
            Err(status) => {
                let code = error_code(&status);
                let retry = code.as_deref() == Some("ENROLMENT_RATE_LIMITED")
                    || (code.is_none() && status.code() == tonic::Code::Unavailable);
                if retry && attempt < ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                    continue;
                }
                // The message of a node error never contains the AVS number; transport errors are generic.
                return Err(match (code, error_field(&status)) {
                    (Some(code), Some(field)) => format!("{code} ({field})"),
                    (Some(code), None) => code,
                    (None, _) => format!("{:?}: {}", status.code(), status.message()),
                });
            }
        }
    }
    Err("gave up after retries".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_skips_headers_comments_and_blank_lines_and_keeps_line_numbers() {
        let lines = read_lines("avs,record\n756.1234.5678.97, R-1\n\n# note\n7569217076985,R-2\n");
        let got: Vec<(usize, &str, &str)> = lines
            .iter()
            .map(|l| (l.number, l.avs.as_str(), l.record.as_str()))
            .collect();
        assert_eq!(got, vec![(2, "756.1234.5678.97", "R-1"), (5, "7569217076985", "R-2")]);
        assert_eq!(
            read_lines("756.1234.5678.97").first().map(|l| l.record.as_str()),
            Some("")
        );
    }
}
