//! The control interface: JSON requests on `ferry.ctl.v1.{lattice}.{resource}.{verb}[.{host}]`
//! and their replies. Documented in docs/control-interface.md.
//!
//! Each command is one type implementing [`Command`]: its resource and verb (hence its
//! subject), who answers it ([`Scope`]) and the type of its reply's data. The table of every
//! command lives here ([`CommandKind`]); a host routes on it and a client sends through it, so
//! no subject or verb string is written anywhere else.

mod app;
mod auction;
mod component;
mod config;
mod host;
mod link;
pub mod operator;
mod provider;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use self::{app::*, auction::*, component::*, config::*, host::*, link::*, provider::*};
use crate::{ProtoError, subject};

/// Who answers a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One host of the lattice answers (hosts share a queue group), or the host the subject
    /// names: lattice state (links, config) or a start any host may take.
    AnyHost,
    /// Every host answers, or the one the subject names: lattice-wide queries and auctions.
    EveryHost,
    /// Only the host the subject names: changes to one host's own state.
    OneHost,
}

/// A control command: its subject, who answers it and what its reply carries.
pub trait Command: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The command's resource (`component`).
    const RESOURCE: &'static str;
    /// The command's verb (`start`).
    const VERB: &'static str;
    /// Who answers.
    const SCOPE: Scope;
    /// The reply's `data`.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Which command this is.
    const KIND: CommandKind;

    /// The request id, echoed in the reply and in the events the command causes.
    fn request_id(&self) -> &str;

    /// The subject to send the command on: to `host`, or to whoever [`Command::SCOPE`] says.
    ///
    /// # Errors
    /// [`ProtoError::InvalidId`] for an invalid lattice or host id, or a command that only
    /// one host may answer sent to none.
    fn subject(lattice: &str, host: Option<&str>) -> Result<String, ProtoError> {
        if Self::SCOPE == Scope::OneHost && host.is_none() {
            return Err(ProtoError::InvalidId {
                what: "host id",
                value: String::new(),
                reason: "this command changes one host's state: name the host",
            });
        }
        subject::ctl(lattice, Self::RESOURCE, Self::VERB, host)
    }
}

/// Defines [`CommandKind`] and each command's [`Command`] impl from one table.
macro_rules! commands {
    ($($kind:ident: $ty:ty => $resource:literal . $verb:literal, $scope:ident, $reply:ty;)*) => {
        /// Every control command, by name: what a host routes on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CommandKind {
            $(
                #[doc = concat!("`", $resource, ".", $verb, "`")]
                $kind,
            )*
        }

        impl CommandKind {
            /// Every command.
            pub const ALL: &'static [CommandKind] = &[$(CommandKind::$kind),*];

            /// The command named `resource.verb`, if any.
            pub fn parse(resource: &str, verb: &str) -> Option<Self> {
                match (resource, verb) {
                    $(($resource, $verb) => Some(CommandKind::$kind),)*
                    _ => None,
                }
            }

            /// Its resource.
            pub fn resource(self) -> &'static str {
                match self { $(CommandKind::$kind => $resource,)* }
            }

            /// Its verb.
            pub fn verb(self) -> &'static str {
                match self { $(CommandKind::$kind => $verb,)* }
            }

            /// Who answers it.
            pub fn scope(self) -> Scope {
                match self { $(CommandKind::$kind => Scope::$scope,)* }
            }

            /// Whether it only reads: running it twice changes nothing.
            pub fn is_read_only(self) -> bool {
                matches!(
                    self,
                    CommandKind::HostPing
                        | CommandKind::HostInventory
                        | CommandKind::ComponentList
                        | CommandKind::ComponentAuction
                        | CommandKind::ProviderAuction
                        | CommandKind::LinkGet
                        | CommandKind::ConfigGet
                        | CommandKind::AppList
                        | CommandKind::AppStatus
                        | CommandKind::AppHistory
                )
            }
        }

        $(
            impl Command for $ty {
                const RESOURCE: &'static str = $resource;
                const VERB: &'static str = $verb;
                const SCOPE: Scope = Scope::$scope;
                const KIND: CommandKind = CommandKind::$kind;
                type Reply = $reply;

                fn request_id(&self) -> &str {
                    &self.request_id
                }
            }
        )*
    };
}

commands! {
    HostPing: HostPing => "host"."ping", EveryHost, HostInfo;
    HostInventory: HostInventory => "host"."inventory", EveryHost, Inventory;
    HostStop: HostStop => "host"."stop", OneHost, HostStopping;
    LabelPut: LabelPut => "label"."put", OneHost, Labels;
    LabelDel: LabelDel => "label"."del", OneHost, Labels;
    ComponentStart: ComponentStart => "component"."start", AnyHost, ComponentStarted;
    ComponentScale: ComponentScale => "component"."scale", OneHost, ComponentScaled;
    ComponentUpdate: ComponentUpdate => "component"."update", OneHost, ComponentUpdated;
    ComponentStop: ComponentStop => "component"."stop", OneHost, ComponentStopped;
    ComponentList: ComponentList => "component"."list", EveryHost, HostComponents;
    ComponentAuction: ComponentAuction => "component"."auction", EveryHost, AuctionBid;
    ProviderStart: ProviderStart => "provider"."start", AnyHost, ProviderStarted;
    ProviderStop: ProviderStop => "provider"."stop", OneHost, ProviderStopped;
    ProviderAuction: ProviderAuction => "provider"."auction", EveryHost, AuctionBid;
    LinkPut: LinkPutCommand => "link"."put", AnyHost, LinkSet;
    LinkDel: LinkDelCommand => "link"."del", AnyHost, LinkSet;
    LinkGet: LinkGetCommand => "link"."get", AnyHost, Vec<crate::link::Link>;
    ConfigPut: ConfigPutCommand => "config"."put", AnyHost, ConfigStored;
    ConfigGet: ConfigGetCommand => "config"."get", AnyHost, std::collections::BTreeMap<String, String>;
    ConfigDel: ConfigDelCommand => "config"."del", AnyHost, ConfigStored;
    AppDeploy: AppDeploy => "app"."deploy", AnyHost, AppDeployed;
    AppUndeploy: AppUndeploy => "app"."undeploy", AnyHost, AppUndeployed;
    AppList: AppList => "app"."list", AnyHost, Vec<AppSummary>;
    AppStatus: AppStatusQuery => "app"."status", AnyHost, AppStatus;
    AppHistory: AppHistory => "app"."history", AnyHost, Vec<AppVersionInfo>;
}

/// The reply to every control command: what happened, not just "accepted".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtlResponse<T = serde_json::Value> {
    /// The command's request id.
    pub request_id: String,
    /// Whether the command took effect.
    pub success: bool,
    /// What happened, for people.
    pub message: String,
    /// Result data (the command's reply type); absent on most failures.
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

impl<T> CtlResponse<T> {
    /// A success with data.
    pub fn ok(request_id: impl Into<String>, message: impl Into<String>, data: T) -> Self {
        Self { request_id: request_id.into(), success: true, message: message.into(), data: Some(data) }
    }

    /// A failure.
    pub fn fail(request_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self { request_id: request_id.into(), success: false, message: message.into(), data: None }
    }

    /// A failure that still reports data (a link stored but rejected by a provider).
    pub fn fail_with(request_id: impl Into<String>, message: impl Into<String>, data: T) -> Self {
        Self { request_id: request_id.into(), success: false, message: message.into(), data: Some(data) }
    }
}

impl<T: Serialize> CtlResponse<T> {
    /// The same reply with its data as JSON, for a router that handles every command.
    pub fn into_json(self) -> CtlResponse {
        let (data, message) = match self.data.map(serde_json::to_value).transpose() {
            Ok(data) => (data, self.message),
            Err(err) => (None, format!("{} (reply data could not be encoded: {err})", self.message)),
        };
        CtlResponse { request_id: self.request_id, success: self.success, message, data }
    }
}

/// Decode a command's JSON body, with the reason when it is not one.
///
/// # Errors
/// A message naming what is wrong with the body.
pub fn decode_command<C: Command>(payload: &[u8]) -> Result<C, String> {
    let payload = if payload.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { payload };
    serde_json::from_slice(payload).map_err(|e| format!("malformed {}.{} command: {e}", C::RESOURCE, C::VERB))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_as_json() {
        let cmd = ComponentStart {
            request_id: "r1".into(),
            component_id: "c".into(),
            image: "/tmp/c.wasm".into(),
            max_instances: Some(4),
            config: vec!["cfg".into()],
        };
        let json = serde_json::to_vec(&cmd).unwrap();
        assert_eq!(serde_json::from_slice::<ComponentStart>(&json).unwrap(), cmd);
        let minimal: ComponentStop = serde_json::from_str(r#"{"component_id":"c"}"#).unwrap();
        assert_eq!(minimal.request_id, "");
        assert!(decode_command::<LinkPutCommand>(b"\x00garbage").is_err());
        let ping: HostPing = decode_command(b"").unwrap();
        assert_eq!(ping.request_id, "");
        let resp = CtlResponse::ok("r1", "done", serde_json::json!({"a": 1}));
        assert_eq!(serde_json::from_slice::<CtlResponse>(&serde_json::to_vec(&resp).unwrap()).unwrap(), resp);
    }

    #[test]
    fn the_table_names_each_command_once_and_parses_back() {
        let mut seen = std::collections::HashSet::new();
        for kind in CommandKind::ALL {
            assert!(seen.insert((kind.resource(), kind.verb())), "{kind:?} named twice");
            assert_eq!(CommandKind::parse(kind.resource(), kind.verb()), Some(*kind));
        }
        assert_eq!(CommandKind::parse("component", "explode"), None);
        assert_eq!(<ComponentStart as Command>::KIND, CommandKind::ComponentStart);
        assert_eq!(ComponentStart::subject("prod", None).unwrap(), "ferry.ctl.v1.prod.component.start");
        assert!(ComponentScale::subject("prod", None).is_err(), "a one-host command needs a host");
        assert_eq!(ComponentScale::subject("prod", Some("NH")).unwrap(), "ferry.ctl.v1.prod.component.scale.NH");
    }
}
