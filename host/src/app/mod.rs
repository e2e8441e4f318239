//! Declarative applications: wadm manifests stored in the lattice bucket, version by version,
//! and a reconciler that keeps the lattice running what the deployed versions say
//! (docs/applications.md). This file is the store behind the `app.*` control commands; the
//! manifest reader, the provider image table, the placement arithmetic and the reconciler have
//! a file each.

pub mod images;
pub mod manifest;
pub(crate) mod plan;
pub(crate) mod reconciler;
mod teardown;

use std::sync::Arc;

use ferry_lattice::LatticeBucket;
use ferry_proto::{
    app::{self as records, AppDeployment, AppOwned, AppVersionRecord},
    ctl::{
        AppDeploy, AppDeployed, AppState, AppStatus, AppSummary, AppUndeployed, AppVersionInfo,
        operator::{OperatorKey, verify_record},
    },
};

use self::manifest::{Application, PartKind};

/// The application records of one lattice, written on behalf of control commands and signed
/// with the lattice operator key.
#[derive(Clone)]
pub(crate) struct AppStore {
    bucket: LatticeBucket,
    operator: Arc<OperatorKey>,
    /// Lattice operators whose records are trusted: this host's, and during a rotation of the
    /// cluster key the other key's.
    trusted: Arc<[String]>,
}

/// A deployment the reconciler may act on: its signature holds and its version is stored.
pub(crate) struct Deployed {
    pub(crate) record: AppDeployment,
    pub(crate) app: Application,
    /// What each component's image resolves to (`sha256:…`), by part name.
    pub(crate) images: std::collections::BTreeMap<String, String>,
}

impl AppStore {
    pub(crate) fn new(bucket: LatticeBucket, operator: OperatorKey, trusted: Vec<String>) -> Self {
        Self { bucket, operator: Arc::new(operator), trusted: trusted.into() }
    }

    pub(crate) fn bucket(&self) -> &LatticeBucket {
        &self.bucket
    }

    /// Store the manifest's version (or find it stored, unchanged) and make it the deployed one.
    pub(crate) async fn deploy(&self, cmd: &AppDeploy) -> Result<AppDeployed, String> {
        let app = manifest::parse(&cmd.manifest).map_err(|e| format!("invalid manifest: {e}"))?;
        resolve_images(&app, &cmd.images)?;
        let (record, new_version) = self.store_version(&app, cmd).await?;
        let deployment = AppDeployment {
            name: app.name.clone(),
            seq: record.seq,
            version: record.version.clone(),
            digest: record.digest(),
            deployed: true,
            request_id: cmd.request_id.clone(),
            issued_at_ms: ferry_proto::time::now_ms(),
            signature: String::new(),
        };
        self.put_deployment(deployment).await?;
        let ids = app.parts.iter().map(|p| p.id.clone()).collect();
        Ok(AppDeployed { name: app.name, version: record.version, new_version, ids })
    }

    async fn store_version(&self, app: &Application, cmd: &AppDeploy) -> Result<(AppVersionRecord, bool), String> {
        let digest = records::content_digest(&cmd.manifest, &cmd.images);
        for _ in 0..5 {
            let versions = self.versions(&app.name).await?;
            if let Some(stored) = versions.iter().find(|v| v.version == app.version) {
                if stored.digest() == digest {
                    return Ok((stored.clone(), false));
                }
                return Err(format!(
                    "version {:?} of {} is stored with other content: give the changed manifest a new version",
                    app.version, app.name
                ));
            }
            let seq = versions.last().map_or(1, |v| v.seq + 1);
            let record = AppVersionRecord {
                name: app.name.clone(),
                version: app.version.clone(),
                seq,
                manifest: cmd.manifest.clone(),
                images: cmd.images.clone(),
                stored_at_ms: ferry_proto::time::now_ms(),
            };
            let key = records::version_key(&app.name, seq).map_err(|e| e.to_string())?;
            if self.bucket.swap_json(&key, &record, None).await.map_err(|e| e.to_string())?.is_some() {
                return Ok((record, true));
            }
        }
        Err(format!("could not store a version of {}: other deploys kept winning", app.name))
    }

    /// Mark the application undeployed; the reconciler removes what it created.
    pub(crate) async fn undeploy(&self, name: &str, request_id: &str) -> Result<AppUndeployed, String> {
        let key = records::deployment_key(name).map_err(|e| e.to_string())?;
        let Some((mut deployment, _)) = self.bucket.get_json::<AppDeployment>(&key).await.map_err(|e| e.to_string())?
        else {
            return Err(format!("application {name} is not deployed"));
        };
        if !deployment.deployed {
            return Err(format!("application {name} is already being undeployed"));
        }
        deployment.deployed = false;
        deployment.request_id = request_id.to_owned();
        deployment.issued_at_ms = ferry_proto::time::now_ms();
        let version = deployment.version.clone();
        self.put_deployment(deployment).await?;
        Ok(AppUndeployed { name: name.to_owned(), version })
    }

    async fn put_deployment(&self, mut deployment: AppDeployment) -> Result<(), String> {
        deployment.signature = self.operator.sign_record(&deployment.signed_bytes()).map_err(|e| e.to_string())?;
        let key = records::deployment_key(&deployment.name).map_err(|e| e.to_string())?;
        self.bucket
            .put_json(&key, &serde_json::to_value(&deployment).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Sign `record` (stored under `key` at `revision`, signed under a cluster key being rotated
    /// out) with this host's lattice operator, unless it changed meanwhile: it stays valid once
    /// the old key is dropped.
    async fn sign_again(&self, key: &str, record: &mut AppDeployment, revision: u64) {
        match self.operator.sign_record(&record.signed_bytes()) {
            Ok(signature) => record.signature = signature,
            Err(err) => {
                tracing::warn!(%key, cause = %err, "cannot sign an application deployment again");
                return;
            }
        }
        match self.bucket.swap_json(key, &*record, Some(revision)).await {
            Ok(Some(_)) => tracing::info!(%key, "signed an application deployment under the lattice's new cluster key"),
            Ok(None) => tracing::debug!(%key, "a deployment changed while it was signed again; left to the next pass"),
            Err(err) => tracing::warn!(%key, cause = %err, "cannot store an application deployment signed again"),
        }
    }

    /// Every stored version of `name`, oldest first.
    pub(crate) async fn versions(&self, name: &str) -> Result<Vec<AppVersionRecord>, String> {
        ferry_proto::subject::validate_id("application name", name).map_err(|e| e.to_string())?;
        let prefix = format!("{}{name}.v", records::APP_PREFIX);
        let mut versions = Vec::new();
        for key in self.bucket.keys_with_prefix(&prefix).await.map_err(|e| e.to_string())? {
            if records::parse_version_key(&key).is_none_or(|(n, _)| n != name) {
                continue;
            }
            if let Some((record, _)) =
                self.bucket.get_json::<AppVersionRecord>(&key).await.map_err(|e| e.to_string())?
            {
                versions.push(record);
            }
        }
        versions.sort_by_key(|v| v.seq);
        Ok(versions)
    }

    /// The deployment record of `name`, if any (signature not checked: for display).
    pub(crate) async fn deployment(&self, name: &str) -> Result<Option<AppDeployment>, String> {
        let key = records::deployment_key(name).map_err(|e| e.to_string())?;
        Ok(self.bucket.get_json(&key).await.map_err(|e| e.to_string())?.map(|(d, _)| d))
    }

    /// Every deployment whose signature holds, with its manifest read back; the others are
    /// logged and left alone.
    pub(crate) async fn deployments(&self) -> Result<Vec<Deployed>, String> {
        let mut found = Vec::new();
        for key in self.bucket.keys_with_prefix(records::APP_PREFIX).await.map_err(|e| e.to_string())? {
            let Some(name) = records::parse_deployment_key(&key) else { continue };
            let Some((mut record, revision)) =
                self.bucket.get_json::<AppDeployment>(&key).await.map_err(|e| e.to_string())?
            else {
                continue;
            };
            let signer =
                self.trusted.iter().position(|key| verify_record(key, &record.signed_bytes(), &record.signature));
            if record.name != name || signer.is_none() {
                tracing::warn!(%key, "ignored an application deployment not signed by this lattice's hosts");
                continue;
            }
            if signer != Some(0) {
                self.sign_again(&key, &mut record, revision).await;
            }
            let version_key = records::version_key(name, record.seq).map_err(|e| e.to_string())?;
            let Some((version, _)) =
                self.bucket.get_json::<AppVersionRecord>(&version_key).await.map_err(|e| e.to_string())?
            else {
                tracing::warn!(%key, "a deployment names a version that is not stored; ignored");
                continue;
            };
            if version.digest() != record.digest {
                tracing::warn!(%key, "a stored version does not match its deployment's digest; ignored");
                continue;
            }
            match manifest::parse(&version.manifest).and_then(|app| {
                resolve_images(&app, &version.images)
                    .map(|images| (app, images))
                    .map_err(|message| manifest::ManifestError { line: None, path: String::new(), message })
            }) {
                Ok((app, images)) => found.push(Deployed { record, app, images }),
                Err(err) => tracing::warn!(%key, cause = %err, "a stored manifest no longer reads; ignored"),
            }
        }
        Ok(found)
    }

    /// What the reconciler created for `name`.
    pub(crate) async fn owned(&self, name: &str) -> Result<(AppOwned, Option<u64>), String> {
        let key = records::owned_key(name).map_err(|e| e.to_string())?;
        Ok(match self.bucket.get_json(&key).await.map_err(|e| e.to_string())? {
            Some((owned, revision)) => (owned, Some(revision)),
            None => (AppOwned::default(), None),
        })
    }

    /// The reconciler's last report on `name`.
    pub(crate) async fn status(&self, name: &str) -> Result<Option<AppStatus>, String> {
        let key = records::status_key(name).map_err(|e| e.to_string())?;
        Ok(self.bucket.get_json(&key).await.map_err(|e| e.to_string())?.map(|(s, _)| s))
    }

    /// Every application with a stored version.
    pub(crate) async fn list(&self) -> Result<Vec<AppSummary>, String> {
        let mut names: Vec<String> = Vec::new();
        for key in self.bucket.keys_with_prefix(records::APP_PREFIX).await.map_err(|e| e.to_string())? {
            if let Some((name, _)) = records::parse_version_key(&key)
                && names.last().is_none_or(|n| n != name)
            {
                names.push(name.to_owned());
            }
        }
        names.dedup();
        let mut summaries = Vec::new();
        for name in names {
            let latest = self.versions(&name).await?.pop().map(|v| v.version).unwrap_or_default();
            let deployment = self.deployment(&name).await?;
            let status = self.status(&name).await?;
            let (state, message) = summary_state(deployment.as_ref(), status.as_ref());
            summaries.push(AppSummary {
                name,
                latest_version: latest,
                deployed_version: deployment.filter(|d| d.deployed).map(|d| d.version),
                state,
                message,
            });
        }
        Ok(summaries)
    }

    /// The versions of `name`, which one is deployed marked.
    pub(crate) async fn history(&self, name: &str) -> Result<Vec<AppVersionInfo>, String> {
        let deployed = self.deployment(name).await?.filter(|d| d.deployed).map(|d| d.seq);
        let versions = self.versions(name).await?;
        if versions.is_empty() {
            return Err(format!("no application named {name}"));
        }
        Ok(versions
            .into_iter()
            .map(|v| AppVersionInfo {
                deployed: deployed == Some(v.seq),
                version: v.version,
                stored_at_ms: v.stored_at_ms,
            })
            .collect())
    }
}

/// An application's state from its deployment record and the reconciler's last report.
pub(crate) fn summary_state(deployment: Option<&AppDeployment>, status: Option<&AppStatus>) -> (AppState, String) {
    match (deployment, status) {
        (None, _) => (AppState::Undeployed, String::new()),
        (Some(d), _) if !d.deployed => (AppState::Undeploying, "removing what it created".into()),
        (Some(d), Some(s)) if s.version == d.version => (s.state, s.message.clone()),
        (Some(_), _) => (AppState::Reconciling, "waiting for the reconciler".into()),
    }
}

/// Each component's image as a host can fetch it: `file://` images by what the client uploaded
/// them as, `sha256:` as they are.
fn resolve_images(
    app: &Application,
    uploaded: &std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut resolved = std::collections::BTreeMap::new();
    for part in &app.parts {
        let PartKind::Component { image } = &part.kind else { continue };
        let reference = if image.starts_with("sha256:") {
            image.clone()
        } else if image.starts_with("file://") {
            uploaded.get(image).cloned().ok_or_else(|| {
                format!("component {}: {image} was not uploaded (`ferry app deploy` uploads file:// images)", part.name)
            })?
        } else {
            // A registry image: each host pulls it (through its image cache).
            match ferry_proto::image::OciRef::parse(image) {
                Ok(oci) => oci.to_string(),
                Err(err) => return Err(format!("component {}: {image:?}: {err}", part.name)),
            }
        };
        ferry_proto::image::ImageRef::parse(&reference).map_err(|e| format!("component {}: {e}", part.name))?;
        resolved.insert(part.name.clone(), reference);
    }
    Ok(resolved)
}
