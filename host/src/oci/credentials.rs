//! Registry credentials: a user name and password given to the process, else the registry's
//! entry in a docker-style config file — never a command-line value, never logged.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

/// Where registry credentials come from: a user name and password given to the process (used
/// for every registry), else the entry for the registry in a docker-style config file.
#[derive(Clone, Default)]
pub struct Credentials {
    basic: Option<(String, String)>,
    docker_config: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.basic.as_ref().map(|(user, _)| user))
            .field("docker_config", &self.docker_config)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A user name and password for every registry.
    pub fn basic(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self { basic: Some((user.into(), password.into())), docker_config: None }
    }

    /// Credentials from a docker-style config file (`{"auths": {"REGISTRY": {"auth": …}}}`).
    #[must_use]
    pub fn with_docker_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.docker_config = Some(path.into());
        self
    }

    /// The docker config file the environment names: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`, when it exists.
    pub fn default_docker_config() -> Option<PathBuf> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))?;
        let path = dir.join("config.json");
        path.is_file().then_some(path)
    }

    pub(super) fn for_registry(&self, registry: &str) -> RegistryAuth {
        if let Some((user, password)) = &self.basic {
            return RegistryAuth::Basic(user.clone(), password.clone());
        }
        self.docker_config
            .as_deref()
            .and_then(|path| docker_config_auth(path, registry))
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

/// The entry for `registry` in the docker config at `path`: `auth` (base64 `user:password`) or
/// `username` and `password`. Keys may carry a scheme and a path (`https://ghcr.io/v1/`).
fn docker_config_auth(path: &Path, registry: &str) -> Option<RegistryAuth> {
    let text = std::fs::read_to_string(path).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let host_of = |key: &str| {
        let key = key.split_once("://").map_or(key, |(_, rest)| rest);
        key.split('/').next().unwrap_or(key).to_owned()
    };
    let entry = auths.iter().find(|(key, _)| host_of(key) == registry).map(|(_, entry)| entry)?;
    if let Some(encoded) = entry.get("auth").and_then(|v| v.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        return Some(RegistryAuth::Basic(user.to_owned(), password.to_owned()));
    }
    let user = entry.get("username")?.as_str()?;
    let password = entry.get("password")?.as_str()?;
    Some(RegistryAuth::Basic(user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries_are_found_by_registry_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &path,
            serde_json::json!({"auths": {
                "https://registry.local:5000/v1/": {"auth": encoded},
                "ghcr.io": {"username": "bob", "password": "pw"},
            }})
            .to_string(),
        )
        .expect("write");
        let credentials = Credentials::default().with_docker_config(&path);
        assert!(
            matches!(credentials.for_registry("registry.local:5000"), RegistryAuth::Basic(u, p) if u == "alice" && p == "s3cret")
        );
        assert!(matches!(credentials.for_registry("ghcr.io"), RegistryAuth::Basic(u, _) if u == "bob"));
        assert!(matches!(credentials.for_registry("quay.io"), RegistryAuth::Anonymous));
        assert!(!format!("{:?}", Credentials::basic("u", "hidden")).contains("hidden"));
    }
}
