//! `--exec`: the bridge starts the foreign provider, restarts it with capped exponential
//! backoff when it exits, and stops it (SIGTERM, then SIGKILL after a grace period) when the
//! bridge stops. The process finds where to listen in `FERRY_BRIDGE_LISTEN`; its stdin is a
//! pipe that closes when the bridge is gone, however it went.

use std::{process::Stdio, sync::Arc, time::Duration};

use tokio::{process::Command, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{config::Address, foreign::Foreign};

/// First wait before a restart.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long before exiting is restarted after the shortest wait again.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// What to start, and how.
pub(crate) struct Exec {
    /// The program and its arguments.
    pub(crate) command: Vec<String>,
    /// Variables added to the bridge's own environment.
    pub(crate) env: Vec<(String, String)>,
    /// Time between SIGTERM and SIGKILL on stop.
    pub(crate) grace: Duration,
}

/// Keep the process running until `stop`, then stop it.
pub(crate) async fn supervise(exec: Exec, foreign: Arc<Foreign>, stop: CancellationToken) {
    let Some((program, args)) = exec.command.split_first() else { return };
    let mut backoff = MIN_BACKOFF;
    loop {
        if let Address::Unix(path) = foreign.address() {
            // A socket left by the last run would make the new one fail to bind.
            let _ = std::fs::remove_file(path);
        }
        let spawned = Command::new(program)
            .args(args)
            .envs(exec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let started = Instant::now();
        match spawned {
            Err(err) => {
                error!(command = %program, cause = %err, retry_in = ?backoff, "cannot start the bridged provider")
            }
            Ok(mut child) => {
                // Held, never written: the pipe closes when this process ends.
                let _stdin = child.stdin.take();
                info!(command = %program, pid = child.id().unwrap_or_default(), "started the bridged provider");
                tokio::select! {
                    status = child.wait() => {
                        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                        warn!(command = %program, %status, retry_in = ?backoff, "the bridged provider exited; restarting it");
                        foreign.mark_down(format!("the process exited ({status})"));
                    }
                    () = stop.cancelled() => {
                        terminate(&mut child, exec.grace).await;
                        return;
                    }
                }
            }
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// SIGTERM, up to `grace` to exit, then SIGKILL.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid
        && rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok()
        && let Ok(status) = tokio::time::timeout(grace, child.wait()).await
    {
        info!(status = %status.map_or_else(|e| e.to_string(), |s| s.to_string()), "the bridged provider stopped");
        return;
    }
    warn!(?grace, "the bridged provider did not stop on SIGTERM; killing it");
    let _ = child.kill().await;
}
