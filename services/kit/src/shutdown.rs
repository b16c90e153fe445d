//! Process signals: graceful shutdown on SIGTERM or Ctrl-C, and surviving a
//! write past the file size limit.

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = term => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// Catches SIGXFSZ, so a write past the file size limit (`RLIMIT_FSIZE`, a
/// quota) fails with `EFBIG` — the store reports an error and the transfer is
/// refused as retryable — instead of the default action, which kills the
/// process and every call in flight with it. PostgreSQL ignores it for the
/// same reason. Must be called inside the runtime.
pub fn survive_file_size_limit() {
    let kind = tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ);
    match tokio::signal::unix::signal(kind) {
        Ok(mut signals) => {
            tokio::spawn(async move {
                // At most one line a minute: the log file may be the one that is full, and each
                // write to it raises the signal again.
                let mut last: Option<std::time::Instant> = None;
                while signals.recv().await.is_some() {
                    if last.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(60)) {
                        last = Some(std::time::Instant::now());
                        tracing::error!("a write went past the file size limit; the store reports it as an error");
                    }
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch SIGXFSZ; a write past the file size limit kills the process")
        }
    }
}
