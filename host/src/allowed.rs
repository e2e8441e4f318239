//! Directories a host was started to read from (`--allow-file-dir`): the only places a
//! control command may name a provider binary or a component file in. A path is resolved
//! (symlinks and `..` included) before it is checked, so nothing outside is reachable.

use std::path::{Path, PathBuf};

use tracing::warn;

/// The directories, resolved at start-up.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowedDirs {
    dirs: Vec<PathBuf>,
}

impl AllowedDirs {
    /// Resolve `dirs`; one that cannot be resolved is logged and left out.
    pub(crate) fn new(dirs: &[PathBuf]) -> Self {
        let dirs = dirs
            .iter()
            .filter_map(|dir| match std::fs::canonicalize(dir) {
                Ok(dir) => Some(dir),
                Err(err) => {
                    warn!(dir = %dir.display(), cause = %err, "ignored an allowed directory that cannot be resolved");
                    None
                }
            })
            .collect();
        Self { dirs }
    }

    /// Whether no directory is allowed.
    pub(crate) fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// `path`, resolved, if it lies under an allowed directory; otherwise why not, naming
    /// `what` (a provider binary, a component) and `host`.
    pub(crate) fn check(&self, what: &str, path: &Path, host: &str) -> Result<PathBuf, String> {
        if self.dirs.is_empty() {
            return Err(format!("host {host} reads no {what} from its own files: start it with --allow-file-dir DIR"));
        }
        let resolved =
            std::fs::canonicalize(path).map_err(|e| format!("cannot find {what} {}: {e}", path.display()))?;
        if !self.dirs.iter().any(|dir| resolved.starts_with(dir)) {
            return Err(format!("{what} {} is outside the directories host {host} allows", resolved.display()));
        }
        Ok(resolved)
    }

    /// `path` checked as [`AllowedDirs::check`] does; a bare file name (no `/`) is looked up in
    /// each allowed directory in turn, so a command can name a binary without knowing where a
    /// host keeps it.
    pub(crate) fn find(&self, what: &str, path: &str, host: &str) -> Result<PathBuf, String> {
        if path.contains('/') || path.is_empty() || path == "." || path == ".." {
            return self.check(what, Path::new(path), host);
        }
        let found = self.dirs.iter().map(|dir| dir.join(path)).find(|candidate| candidate.is_file());
        match found {
            Some(candidate) => self.check(what, &candidate, host),
            None if self.dirs.is_empty() => self.check(what, Path::new(path), host),
            None => Err(format!("host {host} has no {what} named {path} in the directories it allows")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_an_allowed_directory_pass() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("ok.wasm"), b"x").unwrap();
        std::fs::write(root.path().join("secret"), b"x").unwrap();
        let dirs = AllowedDirs::new(std::slice::from_ref(&allowed));
        assert!(dirs.check("component", &allowed.join("ok.wasm"), "h").is_ok());
        let escape = allowed.join("../secret");
        assert!(dirs.check("component", &escape, "h").unwrap_err().contains("outside"));
        assert!(
            AllowedDirs::default()
                .check("component", &allowed.join("ok.wasm"), "h")
                .unwrap_err()
                .contains("--allow-file-dir")
        );
        assert_eq!(dirs.find("component", "ok.wasm", "h").unwrap(), allowed.join("ok.wasm").canonicalize().unwrap());
        assert!(dirs.find("component", "missing", "h").unwrap_err().contains("no component named missing"));
        assert!(dirs.find("component", "..", "h").is_err());
    }
}
