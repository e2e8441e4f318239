//! Child processes with their stderr captured to a file, killed on drop; workspace binaries;
//! test components.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A child process whose output goes to a log file, killed (SIGTERM, then SIGKILL) on drop.
/// (Providers a host runs are the host's supervisor's business, not this harness's.) On drop
/// its argument list and output are scanned for secrets ([`crate::leaks`]), and a secret found
/// fails the test.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// The command line, as `ps` shows it to every user of the machine.
    command_line: String,
}

impl Process {
    /// Spawn `command`, sending stdout and stderr to a temporary log file.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn spawn(name: &str, command: Command) -> anyhow::Result<Self> {
        Self::spawn_inner(name, command, None)
    }

    /// Spawn `command` with `input` as its whole stdin (as `echo input | command` would).
    ///
    /// # Errors
    /// When the process cannot be started or written to.
    pub fn spawn_with_input(name: &str, command: Command, input: &str) -> anyhow::Result<Self> {
        Self::spawn_inner(name, command, Some(input))
    }

    fn spawn_inner(name: &str, mut command: Command, line: Option<&str>) -> anyhow::Result<Self> {
        use std::io::Write as _;
        let log = std::env::temp_dir().join(format!("ferry-test-{name}-{}-{}.log", std::process::id(), unique()));
        let command_line = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let file = std::fs::File::create(&log).with_context(|| format!("failed to create {}", log.display()))?;
        let mut child = command
            .stdin(if line.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        // Written, then closed when the pipe drops here.
        if let (Some(mut pipe), Some(line)) = (child.stdin.take(), line) {
            writeln!(pipe, "{line}").context("failed to write to stdin")?;
        }
        Ok(Self { name: name.to_owned(), child: Some(child), log, command_line })
    }

    /// Wait up to `timeout` for the process to exit by itself; its exit status, if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Send SIGINT (a terminal's Ctrl-C) without waiting.
    pub fn send_sigint(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), "INT");
        }
    }

    /// Send SIGTERM without waiting.
    pub fn send_sigterm(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), "TERM");
        }
    }

    /// Freeze the process (SIGSTOP): it holds its connections but answers nothing, like a
    /// process on a machine that stalls or loses its network.
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), "STOP");
        }
    }

    /// Let a paused process run again (SIGCONT).
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), "CONT");
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle`.
    ///
    /// # Errors
    /// When it does not appear within `timeout`, or the process exits first.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if self.logs().contains(needle) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("{} exited with {status} before logging {needle:?}:\n{}", self.name, self.logs());
            }
            if start.elapsed() > timeout {
                bail!("{} did not log {needle:?} within {timeout:?}:\n{}", self.name, self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send SIGKILL and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send SIGTERM and wait up to `grace` for a clean exit; returns whether it exited by
    /// itself with success.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        signal(child.id(), "TERM");
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(5));
        }
        let leaks: Vec<String> = [("its argument list", self.command_line.clone()), ("its output", self.logs())]
            .into_iter()
            .flat_map(|(place, text)| {
                crate::leaks::find_secrets(&text).into_iter().map(move |f| format!("{f} of {place}"))
            })
            .collect();
        if std::env::var_os("FERRY_KEEP_LOGS").is_none() && leaks.is_empty() {
            let _ = std::fs::remove_file(&self.log);
        }
        if !leaks.is_empty() && !std::thread::panicking() {
            panic!("{} showed a secret: {} (log kept: {})", self.name, leaks.join("; "), self.log.display());
        }
    }
}

/// Send signal `name` (`STOP`, `KILL`, …) to process `pid`.
pub(crate) fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The path of a workspace binary (`ferry`, `ferry-provider-keyvalue`), next to the test
/// executable's `deps/` folder.
///
/// # Errors
/// When the binary has not been built (`cargo build --workspace --bins`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).context("unexpected test executable location")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!("{} not found: build the workspace binaries first (cargo build --workspace --bins)", path.display());
    }
    Ok(path)
}

/// The directory of the workspace binaries, for `ferry host --allow-file-dir`.
///
/// # Errors
/// When the binaries have not been built.
pub fn bin_dir() -> anyhow::Result<String> {
    let ferry = binary("ferry")?;
    Ok(ferry.parent().context("a binary has a directory")?.display().to_string())
}

/// Build the test component `name` from `tests/components/{name}` for wasm32-wasip2 (once per
/// test run) and return the path of the `.wasm`.
///
/// # Errors
/// When cargo fails.
pub fn build_component(name: &str) -> anyhow::Result<PathBuf> {
    build_wasm(&Path::new(env!("CARGO_MANIFEST_DIR")).join("components").join(name))
}

/// Build the sample component `examples/{name}` the way [`build_component`] builds test
/// components, and return the path of the `.wasm`.
///
/// # Errors
/// When cargo fails.
pub fn build_example(name: &str) -> anyhow::Result<PathBuf> {
    build_wasm(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name))
}

fn build_wasm(source: &Path) -> anyhow::Result<PathBuf> {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let name = source.file_name().and_then(|n| n.to_str()).context("component directory has no name")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("components");
    let wasm = root.join("target/wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
    // Its own target directory, so this nested cargo never waits on the outer build's lock.
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(root.join("target"))
        // The test command lints the workspace through these; components are not linted.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .current_dir(source)
        .status()
        .context("failed to run cargo for the test component")?;
    if !status.success() {
        bail!("building test component {name} failed");
    }
    Ok(wasm)
}

/// A file or folder of the repository, `examples/python-keyvalue/provider.py`.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// The Python of the venv `scripts/setup.sh` makes under `.ferry/venv` (grpcio and the other
/// examples' packages installed).
///
/// # Errors
/// When the venv is missing: run the set-up first.
pub fn python() -> anyhow::Result<PathBuf> {
    let python = repo_path(".ferry/venv/bin/python");
    if !python.exists() {
        bail!("{} not found: run `. scripts/setup.sh` (it makes the examples' venv)", python.display());
    }
    Ok(python)
}

/// The `node` on PATH, with a check that `scripts/setup.sh` installed the Node example's packages.
///
/// # Errors
/// When Node.js or the example's `node_modules` is missing.
pub fn node(example: &str) -> anyhow::Result<PathBuf> {
    let modules = repo_path(&format!("examples/{example}/node_modules"));
    if !modules.exists() {
        bail!("{} not found: run `. scripts/setup.sh` (it installs the Node examples' packages)", modules.display());
    }
    Ok(PathBuf::from("node"))
}
