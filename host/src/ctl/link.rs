//! `link.put|del|get` and `config.put|get|del`, over the host's links service.

use std::collections::BTreeMap;

use ferry_proto::{
    ctl::{
        ConfigDelCommand, ConfigGetCommand, ConfigPutCommand, ConfigStored, CtlResponse, LinkDelCommand,
        LinkGetCommand, LinkPutCommand, LinkSet,
    },
    link::Link,
};

use super::Services;
use crate::links::LinkError;

pub(super) async fn put(services: &Services, cmd: LinkPutCommand) -> CtlResponse<LinkSet> {
    match services.links.put(&cmd.request_id, cmd.link).await {
        Ok(set) => {
            let message = format!(
                "link {} -> {} ({}) set at revision {}",
                set.link.source_id, set.link.target_id, set.link.name, set.revision
            );
            CtlResponse::ok(cmd.request_id, message, set)
        }
        // Stored, but rejected: the reply still says what each side answered.
        Err(LinkError::Rejected(set)) => {
            let message = LinkError::Rejected(set.clone()).to_string();
            CtlResponse::fail_with(cmd.request_id, message, set)
        }
        Err(err) => failure(cmd.request_id, err),
    }
}

pub(super) async fn del(services: &Services, cmd: LinkDelCommand) -> CtlResponse<LinkSet> {
    match services.links.del(&cmd.request_id, cmd.key).await {
        Ok(set) => {
            let message = format!("link {} -> {} ({}) deleted", set.link.source_id, set.link.target_id, set.link.name);
            CtlResponse::ok(cmd.request_id, message, set)
        }
        Err(err) => failure(cmd.request_id, err),
    }
}

pub(super) async fn get(services: &Services, cmd: LinkGetCommand) -> CtlResponse<Vec<Link>> {
    match services.links.get(cmd.id.as_deref()).await {
        Ok(links) => CtlResponse::ok(cmd.request_id, format!("{} link(s)", links.len()), links),
        Err(err) => failure(cmd.request_id, err),
    }
}

pub(super) async fn config_put(services: &Services, cmd: ConfigPutCommand) -> CtlResponse<ConfigStored> {
    match services.links.put_config(&cmd.request_id, &cmd.name, &cmd.values).await {
        Ok(stored) => {
            let message = format!(
                "config {} stored at revision {}; {} link(s) refreshed",
                stored.name,
                stored.revision,
                stored.links.len()
            );
            CtlResponse::ok(cmd.request_id, message, stored)
        }
        Err(err) => failure(cmd.request_id, err),
    }
}

pub(super) async fn config_get(services: &Services, cmd: ConfigGetCommand) -> CtlResponse<BTreeMap<String, String>> {
    let values = match services.links.get_config(&cmd.name).await {
        Ok(values) => values,
        Err(err) => return failure(cmd.request_id, err),
    };
    // Values may be secrets, and the reply crosses NATS: sealed for the requester, or withheld.
    let Some(reply_key) = &cmd.reply_key else {
        let withheld = values.into_keys().map(|k| (k, ferry_proto::ctl::WITHHELD.to_owned())).collect();
        return CtlResponse::ok(
            cmd.request_id,
            format!("config {} (values withheld: no reply key)", cmd.name),
            withheld,
        );
    };
    match ferry_proto::seal::reply::seal_values(reply_key, &cmd.binding(), &values) {
        Ok(sealed) => CtlResponse::ok(cmd.request_id, format!("config {} (values sealed)", cmd.name), sealed),
        Err(_) => CtlResponse::fail(cmd.request_id, "bad_request: reply_key is not an X25519 public key (base64url)"),
    }
}

pub(super) async fn config_del(services: &Services, cmd: ConfigDelCommand) -> CtlResponse<ConfigStored> {
    match services.links.del_config(&cmd.request_id, &cmd.name).await {
        Ok(stored) => {
            let message = format!(
                "config {} deleted at revision {}; {} link(s) refreshed",
                stored.name,
                stored.revision,
                stored.links.len()
            );
            CtlResponse::ok(cmd.request_id, message, stored)
        }
        Err(err) => failure(cmd.request_id, err),
    }
}

/// The failure reply.
fn failure<T>(request_id: String, err: LinkError) -> CtlResponse<T> {
    CtlResponse::fail(request_id, err.to_string())
}
