//! `cii bench audit`: durable appends through the sequencer against raw inserts of the same
//! batches with the same durability, on SQLite (and PostgreSQL with `--postgres`).

/// Appends per second through the sequencer, and raw inserts, on one store kind: about
/// 10,000 entries per second of the phase (at least 12,800), so that a run lasts long enough
/// for the figure to mean something (a PostgreSQL sequencer takes 30,000 a second).
async fn audit_store(
    url_for: impl Fn(&str) -> String,
    concurrency: usize,
    phase: std::time::Duration,
) -> anyhow::Result<(f64, f64, f64)> {
    let writers = concurrency.max(1) as u64;
    let entries = (phase.as_secs() * 10_000).clamp(12_800, 400_000);
    let per_writer = (entries / writers).max(10);
    let (appends, batch) = cii_audit::bench::sequencer_rate(&url_for("seq"), writers, per_writer).await?;
    let raw = cii_audit::bench::raw_rate(&url_for("raw"), batch.round() as usize, writers, per_writer).await?;
    Ok((appends, raw, batch))
}

pub(super) async fn postgres_database(base: &str, tag: &str) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/').rsplit_once('/').map_or(base, |(b, _)| b);
    let name = format!("cii_bench_{}_{tag}", std::process::id());
    let admin = sqlx::PgPool::connect(&format!("{base}/postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    admin.close().await;
    Ok(format!("{base}/{name}"))
}

#[expect(clippy::print_stdout, reason = "the section's table")]
pub(super) fn audit(
    concurrency: usize,
    postgres: Option<&str>,
    phase: std::time::Duration,
) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_owned();
        let (appends, raw, batch) = audit_store(
            |tag| format!("sqlite:{}", path.join(format!("{tag}.db")).display()),
            concurrency,
            phase,
        )
        .await?;
        println!("\naudit (SQLite, synchronous=FULL, {concurrency} writers)");
        println!("  sequencer appends    {appends:>12.0} /s (average batch {batch:.1})");
        println!(
            "  raw inserts          {raw:>12.0} /s (transactions of {:.0})",
            batch.round()
        );
        let mut section = serde_json::json!({ "sqlite_appends_per_s": appends, "sqlite_ratio": appends / raw });
        if let Some(base) = postgres {
            let seq = postgres_database(base, "seq").await?;
            let raw_db = postgres_database(base, "raw").await?;
            let (appends, raw, batch) = audit_store(
                |tag| if tag == "seq" { seq.clone() } else { raw_db.clone() },
                concurrency,
                phase,
            )
            .await?;
            println!("audit (PostgreSQL)");
            println!("  sequencer appends    {appends:>12.0} /s (average batch {batch:.1})");
            println!("  raw inserts          {raw:>12.0} /s");
            section["postgres_appends_per_s"] = appends.into();
            section["postgres_ratio"] = (appends / raw).into();
        }
        println!(
            "audit.sqlite_ratio {:.2}",
            section["sqlite_ratio"].as_f64().unwrap_or(0.0)
        );
        Ok(section)
    })
}
