//! wasmCloud's capability provider images mapped to Ferry's providers (the table in
//! docs/applications.md): a manifest written for wasmCloud names `ghcr.io/wasmcloud/…`
//! images; Ferry runs its own binary for the same capability, with the provider-wide settings
//! that make it behave as that image does. Any other registry image is a Ferry provider image
//! (`ferry push`), which hosts pull.

use std::collections::BTreeMap;

/// The Ferry provider a manifest's capability image stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderImage {
    /// The binary a host starts: a file name, looked up in the host's allowed directories, an
    /// absolute path under one of them, or a registry image (`oci://…`).
    pub binary: String,
    /// Provider-wide config it starts with (under the manifest's own).
    pub defaults: BTreeMap<String, String>,
}

/// Names an image may carry, the binary, and its provider-wide defaults.
type Row = (&'static [&'static str], &'static str, &'static [(&'static str, &'static str)]);

/// wasmCloud repository names (the last path segment, any registry and tag) and Ferry's own
/// `ferry:` names, with the binary and defaults each maps to.
const TABLE: &[Row] = &[
    (&["http-server", "httpserver"], "ferry-provider-http-server", &[]),
    (&["http-client", "httpclient"], "ferry-provider-http-client", &[]),
    (&["keyvalue-nats", "kv-nats", "keyvalue"], "ferry-provider-keyvalue", &[("backend", "nats")]),
    (
        &["keyvalue-redis", "kvredis", "kv-redis"],
        "ferry-provider-keyvalue",
        &[("backend", "redis"), ("url", "redis://127.0.0.1:6379")],
    ),
    (&["blobstore-fs", "blobstore_fs", "blobstore"], "ferry-provider-blobstore", &[("backend", "fs")]),
    (&["blobstore-nats"], "ferry-provider-blobstore", &[("backend", "nats")]),
    (&["messaging-nats", "nats_messaging", "messaging"], "ferry-provider-messaging", &[]),
];

/// Registries whose provider images are wasmCloud's own (provider archives Ferry cannot run):
/// only the table's names are taken from them.
const WASMCLOUD_REGISTRIES: &[&str] = &["ghcr.io/wasmcloud/", "wasmcloud.azurecr.io/"];

/// What `image` maps to: a wasmCloud first-party provider image, `ferry:NAME` (a row of the
/// table by name), `file:///absolute/path` to a provider binary, or a Ferry provider image in
/// a registry — `oci://…` always, a plain `REGISTRY/REPOSITORY:TAG` when its name is not one
/// of the table's.
///
/// # Errors
/// Why the image cannot run on Ferry.
pub fn provider_image(image: &str) -> Result<ProviderImage, String> {
    if let Some(path) = image.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!("{image:?}: a provider binary must be given by absolute path (file:///…)"));
        }
        return Ok(ProviderImage { binary: path.to_owned(), defaults: BTreeMap::new() });
    }
    let pulled = |reference: &str| {
        ferry_proto::image::OciRef::parse(reference)
            .map(|oci| ProviderImage { binary: oci.to_string(), defaults: BTreeMap::new() })
            .map_err(|e| format!("{image:?}: {e}"))
    };
    if image.starts_with("oci://") {
        return pulled(image);
    }
    let repository = match image.strip_prefix("ferry:") {
        Some(name) => name,
        None => {
            let without_digest = image.split('@').next().unwrap_or(image);
            let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
            last.split(':').next().unwrap_or(last)
        }
    };
    let found = TABLE.iter().find(|(names, _, _)| names.contains(&repository));
    if found.is_none()
        && !image.starts_with("ferry:")
        && !WASMCLOUD_REGISTRIES.iter().any(|r| image.starts_with(r))
        && ferry_proto::image::OciRef::parse(image).is_ok()
    {
        return pulled(image);
    }
    found
        .map(|(_, binary, defaults)| ProviderImage {
            binary: (*binary).to_owned(),
            defaults: defaults.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        })
        .ok_or_else(|| {
            let known: Vec<&str> = TABLE.iter().map(|(names, _, _)| names[0]).collect();
            format!(
                "no Ferry provider for {image:?}: Ferry runs {} (wasmCloud's images of these names, or ferry:NAME), a provider binary given as file:///path, or a Ferry provider image (oci://REGISTRY/REPOSITORY:TAG)",
                known.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasmcloud_images_map_to_ferry_binaries() {
        let kv = provider_image("ghcr.io/wasmcloud/keyvalue-redis:0.28.2").unwrap();
        assert_eq!(kv.binary, "ferry-provider-keyvalue");
        assert_eq!(kv.defaults.get("backend").map(String::as_str), Some("redis"));
        assert_eq!(
            provider_image("ghcr.io/wasmcloud/http-server:0.23.2").unwrap().binary,
            "ferry-provider-http-server"
        );
        assert_eq!(
            provider_image("wasmcloud.azurecr.io/httpserver:0.19.1").unwrap().binary,
            "ferry-provider-http-server"
        );
        assert_eq!(
            provider_image("ghcr.io/wasmcloud/messaging-nats@sha256:00").unwrap().binary,
            "ferry-provider-messaging"
        );
        assert_eq!(provider_image("ferry:blobstore").unwrap().binary, "ferry-provider-blobstore");
        assert_eq!(provider_image("file:///opt/p/bin").unwrap().binary, "/opt/p/bin");
        let err = provider_image("ghcr.io/wasmcloud/sqldb-postgres:0.9.0").unwrap_err();
        assert!(err.contains("no Ferry provider") && err.contains("keyvalue-redis"), "{err}");
        assert!(provider_image("file://relative/bin").is_err());
        assert_eq!(
            provider_image("registry.local:5000/acme/ledger:1.2").unwrap().binary,
            "oci://registry.local:5000/acme/ledger:1.2"
        );
        let pinned = provider_image("oci://registry.local:5000/acme/keyvalue:1.0").unwrap();
        assert_eq!(pinned.binary, "oci://registry.local:5000/acme/keyvalue:1.0", "oci:// is always pulled");
        assert!(pinned.defaults.is_empty());
    }
}
