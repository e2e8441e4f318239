//! The one shutdown signal every Ferry binary uses.

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => tracing::info!("received SIGINT, shutting down"),
                    _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
                }
            }
            Err(err) => {
                tracing::warn!(cause = %err, "cannot listen for SIGTERM; only SIGINT stops this process");
                let _ = ctrl_c.await;
                tracing::info!("received SIGINT, shutting down");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        tracing::info!("received Ctrl-C, shutting down");
    }
}
