//! `cii policy …`: the jurists' tools on a rulebook (the built-in federal one,
//! or a directory of TOML files).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cii_policy::decide::{ConsentFound, Facts, Transfer};
use cii_policy::{Lang, Rulebook, Severity, Trigger};
use clap::{Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LangArg {
    /// Français
    Fr,
    /// Deutsch
    De,
    /// English
    En,
}

impl From<LangArg> for Lang {
    fn from(l: LangArg) -> Lang {
        match l {
            LangArg::Fr => Lang::Fr,
            LangArg::De => Lang::De,
            LangArg::En => Lang::En,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Markdown table.
    Md,
    /// Standalone HTML page.
    Html,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ConsentArg {
    /// A written consent.
    Written,
    /// A consent not given in writing.
    Oral,
}

const RULEBOOK_HELP: &str = "Rulebook directory (TOML files; a file with `[rulebook] extends = \"federal\"` adds to the built-in federal rulebook). Default: the built-in federal rulebook.";

/// The situations `prove` and `diff` go through.
#[derive(Debug, clap::Args)]
pub struct SpaceArgs {
    /// The first day considered, YYYY-MM-DD (default: today).
    #[arg(long)]
    date: Option<String>,
    /// Refuse a space of more situations than this (counted before any is decided).
    #[arg(long, default_value_t = MAX_SITUATIONS)]
    max_situations: u64,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Lint a rulebook: errors (exit 1) and warnings.
    #[command(
        after_help = "Errors: unknown ids (categories, purposes, types, triggers, conditions), a basis without \
citation, malformed ids or dates, overlapping (identical) bases, expired bases still active, open bases left active.\n\
Warnings (exit code unchanged): categories or purposes no active basis uses.\n\nExample:\n  cii policy check --rulebook rulebook/vs"
    )]
    Check {
        #[arg(long, help = RULEBOOK_HELP)]
        rulebook: Option<PathBuf>,
    },
    /// Explain one hypothetical transfer: every basis examined, every condition, the decision.
    #[command(
        after_help = "FROM and TO are an institution type (AC_ORP, AC_FUND, AI, AS, PC, FP, MIG, SUVA, OTHER) or \
a registry id the rulebook describes (then reciprocity and cantonal releases come from its attestations).\n\
Facts stand in for what the registry, the rulebook attestations and the directory would answer.\n\n\
Example:\n  cii policy explain --from AC_ORP --to AI --trigger spontaneous_report --purpose early_detection \\\n    \
--categories identity,health_limitations --fact person_informed_before=true --lang de"
    )]
    Explain {
        #[arg(long, help = RULEBOOK_HELP)]
        rulebook: Option<PathBuf>,
        /// The disclosing institution: type or registry id.
        #[arg(long)]
        from: String,
        /// The receiving institution: type or registry id.
        #[arg(long)]
        to: String,
        /// Purpose id (e.g. early_detection).
        #[arg(long)]
        purpose: String,
        /// Categories, comma-separated (e.g. identity,health_limitations).
        #[arg(long, value_delimiter = ',', required = true)]
        categories: Vec<String>,
        /// written_request, spontaneous_report, mandatory_report, case_access or bilateral_exchange (default: all).
        #[arg(long)]
        trigger: Option<String>,
        /// A fact, KEY=true|false (repeat), e.g. person_informed_before=true.
        #[arg(long = "fact", value_name = "KEY=VALUE")]
        facts: Vec<String>,
        /// A consent covering the purpose and the categories asked for (or --consent-categories).
        #[arg(long)]
        consent: Option<ConsentArg>,
        /// Categories the consent covers, comma-separated (default: those asked for).
        #[arg(long, value_delimiter = ',')]
        consent_categories: Vec<String>,
        /// Number of persons concerned.
        #[arg(long, default_value_t = 1)]
        persons: u32,
        /// Explain the transfer as one without a case reference (`case_by_case` then fails:
        /// "in the individual case" needs the case or request it belongs to).
        #[arg(long)]
        no_case_reference: bool,
        /// Date of the transfer, YYYY-MM-DD (default: today).
        #[arg(long)]
        date: Option<String>,
        /// Language of the reasoning.
        #[arg(long, value_enum, default_value = "fr")]
        lang: LangArg,
    },
    /// Run scenario files (expected outcomes); the last line is `N passed, M failed`.
    #[command(after_help = "See docs/jurist-guide.md for the scenario format.\n\nExample:\n  \
cii policy test --scenarios gateway/policy/scenarios/federal.toml")]
    Test {
        #[arg(long, help = RULEBOOK_HELP)]
        rulebook: Option<PathBuf>,
        /// Scenario files.
        #[arg(long, required = true, num_args = 1..)]
        scenarios: Vec<PathBuf>,
    },
    /// Print the legal matrix: who may send what to whom, under which article.
    Matrix {
        #[arg(long, help = RULEBOOK_HELP)]
        rulebook: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "md")]
        format: Format,
        /// Language.
        #[arg(long, value_enum, default_value = "fr")]
        lang: LangArg,
    },
    /// What changed between two rulebooks: the bases, then every situation in which a category
    /// is released differently, grouped by the bases that release it.
    #[command(
        after_help = "OLD and NEW are rulebook directories, or `federal` for the built-in one. Every situation either \
rulebook can tell apart is decided by both (the space `cii policy prove` checks: each discloser and recipient, \
trigger, purpose, category and day, every combination of the facts the bases involved read, each consent state, \
individual case or not, reviewed pull or not).\n\nWith --only-narrows the exit code is 1 if NEW releases, in any \
situation, a category OLD withheld, or drops or delays an obligation of a basis: an amendment meant to narrow that \
widens anywhere fails.\n\nExample:\n  \
cii policy diff federal rulebook/vs-draft --only-narrows"
    )]
    Diff {
        /// The old rulebook.
        old: String,
        /// The new rulebook.
        new: String,
        /// Fail (exit code 1) if the new rulebook widens anything.
        #[arg(long)]
        only_narrows: bool,
        /// Situations printed per group of bases (0: all).
        #[arg(long, default_value_t = 5)]
        limit: usize,
        #[command(flatten)]
        space: SpaceArgs,
    },
    /// Check the rulebook's invariants over every situation it can tell apart; print each
    /// violation as a scenario ready to paste into a suite.
    #[command(
        after_help = "The invariants are the jurists' statements that must always hold (see docs/jurist-guide.md): the built-in federal ones, and those in RULEBOOK/invariants/*.toml. Every situation is decided by the engine itself: each discloser and recipient (types, cantons, the rulebook's institutions), trigger, purpose and category, every combination of the facts the bases involved read, no/oral/written consent, individual case or not, reviewed pull or not, today and every later day a basis or an attestation changes.\n\nExit code 1 if an invariant is violated.\n\nExample:\n  cii policy prove --rulebook deploy/rulebook/vs"
    )]
    Prove {
        #[arg(long, help = RULEBOOK_HELP)]
        rulebook: Option<PathBuf>,
        /// Counterexamples printed per violated invariant.
        #[arg(long, default_value_t = 3)]
        limit: usize,
        #[command(flatten)]
        space: SpaceArgs,
    },
    /// Run a (changed) rulebook against the decisions recorded in an audit log, and print
    /// each decision it would change, then a summary.
    #[command(
        after_help = "Each transfer entry is decided again from what it recorded: the parties (types and cantons from the registry), trigger, purpose, the categories asked for (released and withheld), the facts the sender and the holder's reviewer attested, what the directory said, the consents found and the case reference. Entries written before entries kept those are reported `cannot replay`, never guessed. Read-only: the log is opened read-only and nothing is logged (run it on a copy of the log, or as a DPO on the gateway host).

Example:
  cii policy replay --log sqlite:gateway/audit.db --registry registry.toml --rulebook amended/"
    )]
    Replay {
        /// The audit log's store (`sqlite:PATH` or `postgres://…`).
        #[arg(long)]
        log: String,
        /// The registry file the log's institutions are in (their types and cantons).
        #[arg(long)]
        registry: PathBuf,
        #[arg(long, help = RULEBOOK_HELP)]
        rulebook: Option<PathBuf>,
        /// Also print the decisions it does not change.
        #[arg(long)]
        all: bool,
    },
}

/// The largest space `prove` and `diff` go through by default: about a minute on one core
/// (the federal rulebook's is 285,000 situations, decided in about a second).
const MAX_SITUATIONS: u64 = 50_000_000;

/// Refuses a space larger than `max` before any situation is decided.
fn within(size: u64, max: u64) -> anyhow::Result<()> {
    if size > max {
        bail!(
            "the space has {size} situations, more than --max-situations {max}: the bases of some pair read too many facts \
             (see docs/jurist-guide.md, \"Invariants\"); raise the limit to go through it anyway"
        );
    }
    Ok(())
}

/// The day `--date` gives, or today.
fn day(date: Option<String>) -> anyhow::Result<time::Date> {
    match date {
        Some(d) => Ok(cii_policy::parse_date(&d).context("--date")?),
        None => Ok(today()),
    }
}

fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

fn load(dir: Option<&std::path::Path>) -> anyhow::Result<Rulebook> {
    Ok(cii_policy::fit::load(files(dir)?, today())?)
}

/// The `.toml` files of a rulebook folder, if one is given.
fn files(dir: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<(String, String)>>> {
    Ok(dir.map(cii_kit::config::toml_files).transpose()?)
}

#[expect(clippy::print_stdout, reason = "the reports are the commands' output")]
pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { rulebook } => {
            let sources = cii_policy::fit::sources(files(rulebook.as_deref())?);
            let report = cii_policy::check(&sources, today());
            for d in &report.diagnostics {
                println!("{d}");
            }
            // The rulebook against the contract: categories no field carries, fields of unknown categories.
            let contract = report
                .rulebook
                .as_ref()
                .map(cii_policy::fit::contract_disagreements)
                .unwrap_or_default();
            for d in &contract {
                println!("error[{}]: contract: {}", d.code, d.message);
            }
            let errors = report
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count()
                + contract.len();
            let warnings = report.diagnostics.len() - errors;
            match &report.rulebook {
                Some(rb) => println!(
                    "rulebook {} ({} bases, hash {}): {errors} error(s), {warnings} warning(s)",
                    rb.version,
                    rb.bases.len(),
                    rb.hash
                ),
                None => println!("{errors} error(s), {warnings} warning(s)"),
            }
            Ok(if errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        PolicyCommand::Explain {
            rulebook,
            from,
            to,
            purpose,
            categories,
            trigger,
            facts,
            consent,
            consent_categories,
            persons,
            no_case_reference,
            date,
            lang,
        } => {
            let rb = load(rulebook.as_deref())?;
            let from = cii_policy::scenario::party(&rb, &from)
                .map_err(anyhow::Error::msg)
                .context("--from")?;
            let to = cii_policy::scenario::party(&rb, &to)
                .map_err(anyhow::Error::msg)
                .context("--to")?;
            let trigger = trigger.map(|t| Trigger::parse("--trigger", &t)).transpose()?;
            let mut given = Facts::default();
            for f in &facts {
                let Some((key, value)) = f.split_once('=') else {
                    bail!("--fact {f}: expected KEY=true or KEY=false")
                };
                let value: bool = value
                    .parse()
                    .with_context(|| format!("--fact {f}: the value must be true or false"))?;
                let fact = rb
                    .fact_index(key)
                    .with_context(|| format!("--fact {f}: `{key}` is not a fact the rulebook declares"))?;
                given.set(fact, value);
            }
            let consents = match consent {
                None => Vec::new(),
                Some(kind) => vec![ConsentFound {
                    reference: "--consent".to_owned(),
                    categories: if consent_categories.is_empty() {
                        categories.clone()
                    } else {
                        consent_categories
                    },
                    purposes: vec![purpose.clone()],
                    written: matches!(kind, ConsentArg::Written),
                }],
            };
            let date = day(date)?;
            let transfer = Transfer {
                from,
                to,
                trigger,
                purpose,
                categories,
                persons,
                case_reference: (!no_case_reference).then(|| "explain".to_owned()),
                unreviewed_pull: false,
                facts: given,
                consents,
                date,
            };
            println!("{}", cii_policy::explain(&rb, &transfer, lang.into())?);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Test { rulebook, scenarios } => {
            let rb = load(rulebook.as_deref())?;
            let (mut passed, mut failed) = (0usize, 0usize);
            for file in &scenarios {
                let name = file.display().to_string();
                let outcomes = match std::fs::read_to_string(file) {
                    Ok(text) => cii_policy::scenario::run_file(&rb, &name, &text, today()),
                    Err(e) => vec![cii_policy::scenario::Outcome {
                        file: name.clone(),
                        name: "(file)".into(),
                        failures: vec![format!("cannot read: {e}")],
                    }],
                };
                for o in outcomes {
                    if o.passed() {
                        passed += 1;
                        println!("ok     {}", o.name);
                    } else {
                        failed += 1;
                        println!("FAILED {} ({}): {}", o.name, o.file, o.failures.join("; "));
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        PolicyCommand::Matrix { rulebook, format, lang } => {
            let rb = load(rulebook.as_deref())?;
            match format {
                Format::Md => print!("{}", cii_policy::matrix::markdown(&rb, lang.into())),
                Format::Html => print!("{}", cii_policy::matrix::html(&rb, lang.into())),
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Replay {
            log,
            registry,
            rulebook,
            all,
        } => crate::policy_replay::run(&log, &registry, &load(rulebook.as_deref())?, all),
        PolicyCommand::Prove { rulebook, limit, space } => {
            prove(rulebook.as_deref(), limit, day(space.date)?, space.max_situations)
        }
        PolicyCommand::Diff {
            old,
            new,
            only_narrows,
            limit,
            space,
        } => diff(&old, &new, only_narrows, limit, day(space.date)?, space.max_situations),
    }
}

/// The invariants that apply to the rulebook of `dir`: the federal ones when it is (or extends)
/// the federal rulebook, and those of `dir/invariants/`.
fn invariant_files(dir: Option<&std::path::Path>) -> anyhow::Result<Vec<(String, String)>> {
    let sources = cii_policy::fit::sources(files(dir)?);
    let mut out = Vec::new();
    if sources.iter().any(|s| s.name.starts_with("federal/")) {
        out.extend(cii_policy::prove::federal_invariants());
    }
    if let Some(sub) = dir.map(|d| d.join("invariants")).filter(|d| d.is_dir()) {
        let name = |n: String| format!("{}/{n}", sub.display());
        out.extend(
            cii_kit::config::toml_files(&sub)?
                .into_iter()
                .map(|(n, text)| (name(n), text)),
        );
    }
    Ok(out)
}

#[expect(clippy::print_stdout, reason = "the report is the command's output")]
fn prove(dir: Option<&std::path::Path>, limit: usize, date: time::Date, max: u64) -> anyhow::Result<ExitCode> {
    let rb = load(dir)?;
    let files = invariant_files(dir)?;
    if files.is_empty() {
        bail!(
            "no invariants: write them in {}/invariants/*.toml (see docs/jurist-guide.md)",
            dir.map_or_else(|| "RULEBOOK".to_owned(), |d| d.display().to_string())
        );
    }
    let invariants = cii_policy::prove::load(&rb, &files).map_err(|errors| {
        anyhow::anyhow!(
            "{} invariant error(s):\n{}",
            errors.len(),
            errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
        )
    })?;
    within(cii_policy::prove::size(&rb, &invariants, date)?, max)?;
    let started = std::time::Instant::now();
    let report = cii_policy::prove::prove(&rb, &invariants, date, limit)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut violated = 0;
    for v in &report.verdicts {
        let inv = &v.invariant;
        if v.violations == 0 {
            println!("holds     {} ({} checked)", inv.id, v.checked);
            continue;
        }
        violated += 1;
        println!(
            "VIOLATED  {} in {} of {} checked\n          {}\n          {}",
            inv.id, v.violations, v.checked, inv.citation, inv.reason
        );
        for example in &v.examples {
            println!(
                "\n# {} released under {}; paste into a scenario suite:\n{}",
                example.category,
                example.basis,
                example.scenario(inv)
            );
        }
    }
    println!(
        "rulebook {}: {} invariant(s), {violated} violated; {} situations decided in {seconds:.1} s",
        rb.version,
        report.verdicts.len(),
        report.situations
    );
    Ok(if violated > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[expect(clippy::print_stdout, reason = "the report is the command's output")]
fn diff(
    old: &str,
    new: &str,
    only_narrows: bool,
    limit: usize,
    date: time::Date,
    max: u64,
) -> anyhow::Result<ExitCode> {
    let open = |s: &str| {
        if s == "federal" {
            load(None)
        } else {
            load(Some(std::path::Path::new(s)))
        }
    };
    let (old_rb, new_rb) = (
        open(old).with_context(|| format!("old rulebook {old}"))?,
        open(new).with_context(|| format!("new rulebook {new}"))?,
    );
    within(
        cii_policy::space::count(&[&old_rb, &new_rb], date, &|_| Default::default())?,
        max,
    )?;
    let started = std::time::Instant::now();
    let diff = cii_policy::diff::diff(&old_rb, &new_rb, date)?;
    for c in &diff.bases {
        println!("{c}");
    }
    for (group, changes) in diff.by_basis() {
        let widen = changes.iter().filter(|c| c.widens()).count();
        println!("\n{group}: {} situation(s), {widen} widen", changes.len());
        let shown = if limit == 0 { changes.len() } else { limit };
        // The widenings first: they are what a reviewer must see.
        let mut ordered = changes.clone();
        ordered.sort_by_key(|c| !c.widens());
        for c in ordered.iter().take(shown) {
            println!("  {c}");
        }
        if changes.len() > shown {
            println!("  … {} more (--limit 0 prints all)", changes.len() - shown);
        }
    }
    let widenings = diff.widenings();
    println!(
        "{} change(s) between {} and {} ({} basis, {} release, {widenings} widening) over {} situations in {:.1} s",
        diff.bases.len() + diff.decisions.len(),
        old_rb.version,
        new_rb.version,
        diff.bases.len(),
        diff.decisions.len(),
        diff.situations,
        started.elapsed().as_secs_f64()
    );
    if only_narrows && widenings > 0 {
        println!("--only-narrows: the new rulebook widens in {widenings} situation(s)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
