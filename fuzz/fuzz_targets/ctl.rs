//! Control commands as a host receives them: the subject picks the command, the body is JSON.
#![no_main]

use ferry_proto::{
    ctl::{self, CommandKind, decode_command},
    subject,
};
use libfuzzer_sys::fuzz_target;

/// Decode `body` as the command `kind` names.
fn decode(kind: CommandKind, body: &[u8]) {
    macro_rules! as_command {
        ($($kind:ident => $ty:ty),* $(,)?) => {
            match kind {
                $(CommandKind::$kind => { let _ = decode_command::<$ty>(body); })*
            }
        };
    }
    as_command! {
        HostPing => ctl::HostPing, HostInventory => ctl::HostInventory, HostStop => ctl::HostStop,
        LabelPut => ctl::LabelPut, LabelDel => ctl::LabelDel, ComponentStart => ctl::ComponentStart,
        ComponentScale => ctl::ComponentScale, ComponentUpdate => ctl::ComponentUpdate,
        ComponentStop => ctl::ComponentStop, ComponentList => ctl::ComponentList,
        ComponentAuction => ctl::ComponentAuction, ProviderStart => ctl::ProviderStart,
        ProviderStop => ctl::ProviderStop, ProviderAuction => ctl::ProviderAuction,
        LinkPut => ctl::LinkPutCommand, LinkDel => ctl::LinkDelCommand, LinkGet => ctl::LinkGetCommand,
        ConfigPut => ctl::ConfigPutCommand, ConfigGet => ctl::ConfigGetCommand,
        ConfigDel => ctl::ConfigDelCommand, AppDeploy => ctl::AppDeploy, AppUndeploy => ctl::AppUndeploy,
        AppList => ctl::AppList, AppStatus => ctl::AppStatusQuery, AppHistory => ctl::AppHistory,
    }
}

fuzz_target!(|data: &[u8]| {
    // The first line is the subject, the rest the body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (subject_bytes, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    if let Ok(subject) = std::str::from_utf8(subject_bytes)
        && let Some((resource, verb, _host)) = subject::parse_ctl("fuzz", subject)
        && let Some(kind) = CommandKind::parse(resource, verb)
    {
        decode(kind, body);
        return;
    }
    for kind in CommandKind::ALL {
        decode(*kind, data);
    }
    if let Ok(link) = serde_json::from_slice::<ferry_proto::link::Link>(data) {
        let _ = link.validate();
    }
});
