//! wadm's application manifests (OAM `core.oam.dev/v1beta1`, kind `Application`), read into
//! what Ferry places: components, providers, links and the configs the manifest defines. Every
//! error names the line and the field (`line 14: spec.components[1].traits[0].properties.target:
//! …`); fields nobody knows are refused, as a misspelt key would otherwise be ignored.

use std::collections::{BTreeMap, btree_map::Entry};

use ferry_proto::{link::Link, subject::validate_id};
use serde::{Deserialize, Deserializer};

use super::images::{ProviderImage, provider_image};

/// The OAM API version wadm reads.
const API_VERSION: &str = "core.oam.dev/v1beta1";

/// A manifest that cannot be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{path}{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default(), if path.is_empty() { "" } else { ": " })]
pub struct ManifestError {
    /// 1-based line of the manifest, when known.
    pub line: Option<usize>,
    /// The field, as a path (`spec.components[0].properties.image`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// An application, as Ferry places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.annotations.version`.
    pub version: String,
    /// `metadata.annotations.description`.
    pub description: String,
    /// Components and providers, in manifest order.
    pub parts: Vec<Part>,
    /// Links between them.
    pub links: Vec<Link>,
    /// Configs the manifest gives values for (the others must exist in the lattice).
    pub configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// One component or provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its name in the manifest.
    pub name: String,
    /// The id it runs under: `properties.id`, else `{application}-{name}`.
    pub id: String,
    /// What it is.
    pub kind: PartKind,
    /// Configs it reads (components) or is started with (providers), by name.
    pub config: Vec<String>,
    /// How many, where.
    pub scaler: Scaler,
}

/// What a part runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartKind {
    /// A component; its image as the manifest gives it.
    Component {
        /// `properties.image`.
        image: String,
    },
    /// A capability provider, mapped to a Ferry provider binary.
    Provider {
        /// `properties.image`.
        image: String,
        /// What it maps to.
        binary: ProviderImage,
    },
}

/// How many instances, on which hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaler {
    /// Daemonscaler (`instances` on every eligible host) or spreadscaler (`instances` in all,
    /// split across the spreads by weight).
    pub daemon: bool,
    /// `instances`.
    pub instances: u32,
    /// The spreads; one that every host matches when the manifest gives none.
    pub spreads: Vec<Spread>,
}

/// One spread: hosts whose labels hold every requirement, and its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spread {
    /// Its name.
    pub name: String,
    /// Labels a host must have.
    pub requirements: BTreeMap<String, String>,
    /// Its weight (100 by default, as in wadm).
    pub weight: u32,
}

/// Read and check a manifest (YAML or JSON).
///
/// # Errors
/// [`ManifestError`] naming the line and field of the first problem.
pub fn parse(text: &str) -> Result<Application, ManifestError> {
    let raw: RawManifest = serde_norway::from_str(text).map_err(|e| yaml_error(&e))?;
    Checker { text }.check(raw)
}

/// The id wadm gives a part with no `properties.id`: `{application}-{name}`, each lower-cased
/// with every character but letters, digits and `_` made `_`.
pub fn generated_id(app: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' }).collect()
    };
    format!("{}-{}", clean(app), clean(name))
}

fn yaml_error(err: &serde_norway::Error) -> ManifestError {
    let text = err.to_string();
    // "spec.components[0]: missing field `type` at line 3 column 7"
    let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
    let (path, message) = match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_owned(), rest.to_owned()),
        _ => (String::new(), message),
    };
    ManifestError { line: err.location().map(|l| l.line()), path, message }
}

struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    /// The line a component's `name:` is on, for errors found after parsing.
    fn line_of(&self, name: &str) -> Option<usize> {
        let quoted = [name.to_owned(), format!("\"{name}\""), format!("'{name}'")];
        self.text
            .lines()
            .position(|line| {
                let line = line.trim_start().trim_start_matches("- ").trim_start();
                line.strip_prefix("name:").is_some_and(|v| quoted.iter().any(|q| v.trim() == q))
            })
            .map(|i| i + 1)
    }

    fn check(&self, raw: RawManifest) -> Result<Application, ManifestError> {
        let top = |path: &str, message: String| ManifestError { line: None, path: path.into(), message };
        if raw.api_version != API_VERSION {
            return Err(top("apiVersion", format!("expected {API_VERSION:?}, got {:?}", raw.api_version)));
        }
        if raw.kind != "Application" {
            return Err(top("kind", format!("expected \"Application\", got {:?}", raw.kind)));
        }
        let name = raw.metadata.name;
        validate_id("application name", &name).map_err(|e| top("metadata.name", e.to_string()))?;
        let version = raw.metadata.annotations.get("version").cloned().unwrap_or_default();
        if version.is_empty() || version == "latest" || version.len() > 128 {
            return Err(top(
                "metadata.annotations.version",
                "every manifest needs a version (1 to 128 characters, not \"latest\"); bump it for each change".into(),
            ));
        }
        if raw.spec.policies.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(top("spec.policies", "policies (secrets backends) are not supported by Ferry yet".into()));
        }
        let description = raw.metadata.annotations.get("description").cloned().unwrap_or_default();
        let mut app =
            Application { name, version, description, parts: Vec::new(), links: Vec::new(), configs: BTreeMap::new() };
        let ids: BTreeMap<String, String> = raw
            .spec
            .components
            .iter()
            .map(|c| (c.name.clone(), c.properties.id.clone().unwrap_or_else(|| generated_id(&app.name, &c.name))))
            .collect();
        for (i, component) in raw.spec.components.into_iter().enumerate() {
            let path = format!("spec.components[{i}]");
            let err = |field: &str, message: String| ManifestError {
                line: self.line_of(&component.name),
                path: format!("{path}{field}"),
                message,
            };
            if app.parts.iter().any(|p| p.name == component.name) {
                return Err(err(".name", format!("two components are named {:?}", component.name)));
            }
            let id = ids[&component.name].clone();
            validate_id("id", &id).map_err(|e| err(".properties.id", e.to_string()))?;
            if app.parts.iter().any(|p| p.id == id) {
                return Err(err(".properties.id", format!("id {id:?} is used twice")));
            }
            let props = component.properties;
            if props.application.is_some() {
                return Err(err(
                    ".properties.application",
                    "shared applications are not supported by Ferry yet".into(),
                ));
            }
            if !props.secrets.is_empty() {
                return Err(err(".properties.secrets", "secrets are not supported by Ferry yet".into()));
            }
            let image = props
                .image
                .filter(|i| !i.trim().is_empty())
                .ok_or_else(|| err(".properties.image", "missing".into()))?;
            let kind = match component.kind.as_str() {
                "component" | "actor" => PartKind::Component { image },
                "capability" => {
                    let binary = provider_image(&image).map_err(|m| err(".properties.image", m))?;
                    PartKind::Provider { image, binary }
                }
                other => {
                    return Err(err(".type", format!("unknown type {other:?} (expected component or capability)")));
                }
            };
            let config =
                self.configs(&mut app.configs, props.config, &|f, m| err(&format!(".properties.config{f}"), m))?;
            let mut scaler = None;
            for (t, raw_trait) in component.traits.into_iter().flatten().enumerate() {
                let tpath = format!(".traits[{t}]");
                let terr = |f: &str, m: String| err(&format!("{tpath}{f}"), m);
                match raw_trait.kind.as_str() {
                    "spreadscaler" | "daemonscaler" => {
                        if scaler.is_some() {
                            return Err(terr(".type", "a component has at most one scaler".into()));
                        }
                        scaler = Some(self.scaler(raw_trait.kind == "daemonscaler", raw_trait.properties, &terr)?);
                    }
                    "link" => {
                        let link = self.link(&mut app.configs, &id, &ids, raw_trait.properties, &terr)?;
                        if app.links.iter().any(|l| l.key() == link.key()) {
                            return Err(terr(
                                "",
                                "the same link (source, target, package, name) is given twice".into(),
                            ));
                        }
                        app.links.push(link);
                    }
                    other => {
                        return Err(terr(
                            ".type",
                            format!("unknown trait {other:?} (expected spreadscaler, daemonscaler or link)"),
                        ));
                    }
                }
            }
            let scaler = scaler.unwrap_or(Scaler { daemon: false, instances: 1, spreads: vec![Spread::any()] });
            app.parts.push(Part { name: component.name, id, kind, config, scaler });
        }
        if app.parts.is_empty() {
            return Err(top("spec.components", "an application needs at least one component".into()));
        }
        Ok(app)
    }

    /// Record the configs given values and return every config's name.
    fn configs(
        &self,
        defined: &mut BTreeMap<String, BTreeMap<String, String>>,
        raw: Vec<RawConfig>,
        err: &dyn Fn(&str, String) -> ManifestError,
    ) -> Result<Vec<String>, ManifestError> {
        let mut names = Vec::new();
        for (i, config) in raw.into_iter().enumerate() {
            validate_id("config name", &config.name).map_err(|e| err(&format!("[{i}].name"), e.to_string()))?;
            if let Some(values) = config.properties {
                match defined.entry(config.name.clone()) {
                    Entry::Vacant(slot) => {
                        slot.insert(values);
                    }
                    Entry::Occupied(slot) if *slot.get() == values => {}
                    Entry::Occupied(_) => {
                        return Err(err(
                            &format!("[{i}].properties"),
                            format!("config {:?} is given two different sets of values", config.name),
                        ));
                    }
                }
            }
            names.push(config.name);
        }
        Ok(names)
    }

    fn scaler(
        &self,
        daemon: bool,
        props: RawTraitProperties,
        err: &dyn Fn(&str, String) -> ManifestError,
    ) -> Result<Scaler, ManifestError> {
        if props.target.is_some() || props.namespace.is_some() || !props.interfaces.is_empty() {
            return Err(err(".properties", "a scaler takes `instances` and `spread`, not link fields".into()));
        }
        let instances = props.instances.ok_or_else(|| err(".properties.instances", "missing".into()))?;
        let mut spreads = Vec::new();
        for (i, s) in props.spread.into_iter().enumerate() {
            if s.weight == Some(0) {
                return Err(err(&format!(".properties.spread[{i}].weight"), "must be above 0".into()));
            }
            spreads.push(Spread { name: s.name, requirements: s.requirements, weight: s.weight.unwrap_or(100) });
        }
        if spreads.is_empty() {
            spreads.push(Spread::any());
        }
        Ok(Scaler { daemon, instances, spreads })
    }

    fn link(
        &self,
        configs: &mut BTreeMap<String, BTreeMap<String, String>>,
        source_id: &str,
        ids: &BTreeMap<String, String>,
        props: RawTraitProperties,
        err: &dyn Fn(&str, String) -> ManifestError,
    ) -> Result<Link, ManifestError> {
        if props.instances.is_some() || !props.spread.is_empty() {
            return Err(err(
                ".properties",
                "a link takes target, namespace, package, interfaces, not scaler fields".into(),
            ));
        }
        let target = props.target.ok_or_else(|| err(".properties.target", "missing".into()))?;
        let (target_name, mut target_raw) = match target {
            RawTarget::Name(name) => (name, Vec::new()),
            RawTarget::Full { name, config, secrets } => {
                if !secrets.is_empty() {
                    return Err(err(".properties.target.secrets", "secrets are not supported by Ferry yet".into()));
                }
                (name, config)
            }
        };
        let target_id = ids.get(&target_name).ok_or_else(|| {
            err(".properties.target", format!("no component or capability named {target_name:?} in this manifest"))
        })?;
        let mut source_raw = props.source_config;
        if let Some(source) = props.source {
            if !source.secrets.is_empty() {
                return Err(err(".properties.source.secrets", "secrets are not supported by Ferry yet".into()));
            }
            source_raw.extend(source.config);
        }
        target_raw.extend(props.target_config);
        let namespace = props.namespace.ok_or_else(|| err(".properties.namespace", "missing".into()))?;
        let package = props.package.ok_or_else(|| err(".properties.package", "missing".into()))?;
        if props.interfaces.is_empty() {
            return Err(err(".properties.interfaces", "name at least one interface".into()));
        }
        let source_config =
            self.configs(configs, source_raw, &|f, m| err(&format!(".properties.source.config{f}"), m))?;
        let target_config =
            self.configs(configs, target_raw, &|f, m| err(&format!(".properties.target.config{f}"), m))?;
        let mut link = Link::new(source_id, target_id.clone(), namespace, package, props.interfaces);
        if let Some(name) = props.name {
            link.name = name;
        }
        link.source_config = source_config;
        link.target_config = target_config;
        link.validate().map_err(|e| err(".properties", e.to_string()))?;
        Ok(link)
    }
}

impl Spread {
    fn any() -> Self {
        Self { name: "default".into(), requirements: BTreeMap::new(), weight: 100 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: RawSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: String,
    #[serde(default, deserialize_with = "string_map")]
    annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_map")]
    #[allow(dead_code)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    components: Vec<RawComponent>,
    #[serde(default)]
    policies: Option<Vec<serde_norway::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    properties: RawProperties,
    #[serde(default)]
    traits: Option<Vec<RawTrait>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProperties {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    config: Vec<RawConfig>,
    #[serde(default)]
    secrets: Vec<serde_norway::Value>,
    #[serde(default)]
    application: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    #[serde(default, deserialize_with = "optional_string_map")]
    properties: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrait {
    #[serde(rename = "type")]
    kind: String,
    properties: RawTraitProperties,
}

/// The fields of every trait wadm knows; which apply is checked per trait type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraitProperties {
    #[serde(default, alias = "replicas")]
    instances: Option<u32>,
    #[serde(default)]
    spread: Vec<RawSpread>,
    #[serde(default)]
    target: Option<RawTarget>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    source: Option<RawSource>,
    #[serde(default)]
    source_config: Vec<RawConfig>,
    #[serde(default)]
    target_config: Vec<RawConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpread {
    name: String,
    #[serde(default, deserialize_with = "string_map")]
    requirements: BTreeMap<String, String>,
    #[serde(default)]
    weight: Option<u32>,
}

/// `target: name` (wadm before 0.13) or `target: {name, config, secrets}`.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a component name, or a map with `name` and optionally `config`")]
enum RawTarget {
    Name(String),
    Full {
        name: String,
        #[serde(default)]
        config: Vec<RawConfig>,
        #[serde(default)]
        secrets: Vec<serde_norway::Value>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    config: Vec<RawConfig>,
    #[serde(default)]
    secrets: Vec<serde_norway::Value>,
}

/// A map whose values may be written as numbers or booleans (`port: 8080`), kept as text.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a string, number or boolean")]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let map = Option::<BTreeMap<String, Scalar>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

fn optional_string_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    string_map(d).map(Some)
}

#[cfg(test)]
mod tests;
