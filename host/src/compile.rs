//! Compiling components outside the host. A host hands a component's bytes to a short-lived
//! compiler process — its own executable, `ferry compile-component` — which compiles them into
//! the compilation cache the two share; the host then loads the compiled code from the cache.
//! Cranelift's code and its working memory never enter the long-running host, so its resident
//! memory is what serving needs (docs/benchmarks.md), and a restarted host, or a second host on
//! the directory, loads what was compiled before instead of compiling again.
//!
//! The cache is wasmtime's: entries are keyed by the component's bytes and everything about the
//! engine that shapes compiled code, so a host only ever loads code compiled for its own
//! configuration and wasmtime version. Loading compiled code runs it, so the directory must be
//! writable by the host's user alone; it is created with mode 0700.

use std::{
    ffi::OsString,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use tracing::{debug, warn};

use crate::engine::{Limits, engine_with_cache};

/// The compiler's exit status for bytes that are not a valid component (its message on stderr).
pub const EXIT_INVALID: i32 = 2;

/// Where a host keeps compiled components and what compiles them.
#[derive(Debug, Clone, Default)]
pub struct Compilation {
    /// The compilation cache; `None`: nothing is kept, every start of a component compiles it
    /// in the host's own process.
    pub cache_dir: Option<PathBuf>,
    /// The compiler process; `None` (or no cache): the host compiles in its own process.
    pub compiler: Option<Compiler>,
}

impl Compilation {
    /// `$XDG_CACHE_HOME/ferry/compiled`, else `~/.cache/ferry/compiled`, else a folder in the
    /// temporary directory (beside [`crate::oci::RegistrySettings::default_cache_dir`]).
    pub fn default_cache_dir() -> PathBuf {
        crate::oci::RegistrySettings::default_cache_dir().with_file_name("compiled")
    }
}

/// A program that runs [`compile_into_cache`]: started as `PROGRAM ARGS… --cache-dir DIR
/// --memory-bytes N` with the component's bytes on its standard input; exits 0 once the
/// compiled component is in the cache, [`EXIT_INVALID`] for bytes that are not a valid
/// component, anything else when it failed otherwise. `ferry compile-component` is one.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// The executable: for `ferry`, `/proc/self/exe`, the very file the host runs from, even if
    /// the path it was started by now names another version.
    pub program: PathBuf,
    /// Arguments before the ones the host adds.
    pub args: Vec<OsString>,
}

/// Why the compiler process did not put a component in the cache.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompilerError {
    /// The bytes are not a valid component: compiling them anywhere fails the same way.
    #[error("{0}")]
    Invalid(String),
    /// The process could not run or failed for a reason of its own.
    #[error("{0}")]
    Failed(String),
}

impl Compiler {
    /// Compile `wasm` into the cache at `cache_dir` for an engine with `limits`, in a process
    /// of its own; blocks until the process has ended.
    pub(crate) fn compile(&self, cache_dir: &Path, limits: &Limits, wasm: &[u8]) -> Result<(), CompilerError> {
        let failed = |what: &str, e: std::io::Error| CompilerError::Failed(format!("{what}: {e}"));
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg("--cache-dir")
            .arg(cache_dir)
            .arg("--memory-bytes")
            .arg(limits.memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed("cannot start the compiler process", e))?;
        // The compiler reads all of its input before it writes anything, so writing first
        // cannot block on a full stderr pipe.
        let written = child.stdin.take().map(|mut stdin| stdin.write_all(wasm));
        let output = child.wait_with_output().map_err(|e| failed("lost the compiler process", e))?;
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        match output.status.code() {
            Some(0) => Ok(()),
            Some(EXIT_INVALID) => Err(CompilerError::Invalid(message)),
            _ => match written {
                Some(Err(e)) => Err(failed("cannot hand the component to the compiler process", e)),
                _ => {
                    Err(CompilerError::Failed(format!("the compiler process ended with {}: {message}", output.status)))
                }
            },
        }
    }
}

/// Open the compilation cache at `dir`, creating it (mode 0700) when absent.
///
/// # Errors
/// When the directory cannot be created or wasmtime refuses it.
pub(crate) fn open_cache(dir: &Path) -> Result<wasmtime::Cache, String> {
    create_private_dir(dir).map_err(|e| format!("cannot create the compilation cache {}: {e}", dir.display()))?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(dir);
    wasmtime::Cache::new(config).map_err(|e| format!("cannot open the compilation cache {}: {e:#}", dir.display()))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// What a compiler process does: compile the component `wasm` for the engine a host with
/// `limits` runs, into the cache at `cache_dir`.
///
/// # Errors
/// [`CompileFailure::Invalid`] when `wasm` is not a valid component, [`CompileFailure::Other`]
/// when the cache or the engine cannot be set up.
pub fn compile_into_cache(cache_dir: &Path, limits: &Limits, wasm: &[u8]) -> Result<(), CompileFailure> {
    let cache = open_cache(cache_dir).map_err(CompileFailure::Other)?;
    let engine = engine_with_cache(limits, Some(cache))
        .map_err(|e| CompileFailure::Other(format!("cannot set up wasmtime: {e:#}")))?;
    wasmtime::component::Component::new(&engine, wasm)
        .map(drop)
        .map_err(|e| CompileFailure::Invalid(format!("not a valid component: {e:#}")))
}

/// Why [`compile_into_cache`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileFailure {
    /// The bytes are not a valid component.
    #[error("{0}")]
    Invalid(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Compile `wasm` on `engine`: through `compiler` into the cache first when there is one, so
/// that the host's own compilation below only loads the result.
pub(crate) fn compile(
    engine: &wasmtime::Engine,
    compilation: &Compilation,
    limits: &Limits,
    wasm: &[u8],
) -> Result<wasmtime::component::Component, String> {
    if let (Some(compiler), Some(dir)) = (&compilation.compiler, &compilation.cache_dir) {
        match compiler.compile(dir, limits, wasm) {
            Ok(()) => debug!("component compiled by the compiler process"),
            Err(CompilerError::Invalid(message)) => return Err(message),
            Err(CompilerError::Failed(cause)) => {
                warn!(%cause, "the compiler process failed; compiling in the host's process");
            }
        }
    }
    wasmtime::component::Component::new(engine, wasm).map_err(|e| format!("not a valid component: {e:#}"))
}
