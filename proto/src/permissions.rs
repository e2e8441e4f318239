//! What each Ferry identity may do on NATS: the subject permissions a lattice's nats-server
//! gives each process (`ferry nats-config` writes them into the server's configuration).
//!
//! Hosts and operators are trusted with the whole of the lattice's account. A provider gets its
//! own subjects and nothing else: its invocations, link notifications, health and shutdown
//! requests, replies on its own inbox ([`subject::inbox_prefix`]), answers to what it was asked,
//! events, chunked bodies, and the reads and writes of the lattice's JetStream buckets the SDK
//! makes — links only, never config, which reaches it sealed from hosts. What a provider needs
//! beyond that is granted by name ([`ProviderGrants`]): calling components, JetStream for its
//! components' data (in an account of its own), application subjects. It can never read the
//! lattice's config, write its links, config or components, publish on another provider's
//! subjects, or read another identity's replies.

use std::fmt::Write as _;

use crate::{ProtoError, state, subject};

/// Allowed and denied subjects (NATS wildcards) for publishing or subscribing. A subject the
/// deny list matches is refused even when the allow list matches it too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRules {
    /// Subjects allowed; empty with a non-empty deny list means "everything but".
    pub allow: Vec<String>,
    /// Subjects refused.
    pub deny: Vec<String>,
}

/// What one identity may do on NATS; `None` fields mean "unrestricted".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Publishing.
    pub publish: Option<SubjectRules>,
    /// Subscribing.
    pub subscribe: Option<SubjectRules>,
    /// Replies allowed to requests the identity received, on top of `publish`.
    pub responses: Option<Responses>,
}

/// How an identity may answer the requests it receives, whatever their reply subject: a
/// provider answers hosts on their inboxes without being allowed to publish there otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responses {
    /// Answers per request: two, since a link notification gets a receipt and a verdict.
    pub max: u32,
    /// How long after the request the answers may come, in seconds: the longest invocation.
    pub expires_secs: u64,
}

/// The name of the account, beside the lattice's, in which providers granted `jetstream` keep
/// components' data: `FERRY_{lattice}_STORE`.
pub const STORE_ACCOUNT: &str = "STORE";

/// The lattice's account name, `FERRY_{lattice}`, and its store account's
/// ([`STORE_ACCOUNT`]).
///
/// # Errors
/// [`ProtoError::InvalidId`] if the lattice is not valid.
pub fn account_names(lattice: &str) -> Result<(String, String), ProtoError> {
    subject::validate_id("lattice", lattice)?;
    Ok((format!("FERRY_{lattice}"), format!("FERRY_{lattice}_{STORE_ACCOUNT}")))
}

/// Answers a provider may give: two per request, within [`Responses::expires_secs`].
pub const PROVIDER_RESPONSES: Responses = Responses { max: 2, expires_secs: 600 };

/// What a provider may do beyond serving its own subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderGrants {
    /// It invokes components (http-server, messaging's handlers): it may publish invocations
    /// to any id but the lattice's providers. Hosts still refuse a call no link allows.
    pub calls_components: bool,
    /// It keeps components' data in JetStream (the key-value and blobstore NATS backends). Not
    /// in the lattice's account: JetStream API permissions cannot tell a provider's buckets from
    /// the lattice's by name, so the data lives in an account of its own ([`STORE_ACCOUNT`]),
    /// reached with a second identity of the provider's, and the lattice's buckets stay out of
    /// its reach.
    pub jetstream: bool,
    /// Application subjects it may publish and subscribe to (the messaging provider's).
    pub subjects: Vec<String>,
}

impl ProviderGrants {
    /// Parse a comma-separated grant list: `calls`, `jetstream`, `subjects=S` (repeatable;
    /// `|` separates several subjects in one).
    ///
    /// # Errors
    /// [`ProtoError::Grant`] for an unknown grant or an application subject that would reach
    /// Ferry's or NATS's own subjects.
    pub fn parse(text: &str) -> Result<Self, ProtoError> {
        let mut grants = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None if part == "calls" => grants.calls_components = true,
                None if part == "jetstream" => grants.jetstream = true,
                Some(("subjects", list)) => {
                    for subject in list.split('|').map(str::trim).filter(|s| !s.is_empty()) {
                        check_application_subject(subject)?;
                        grants.subjects.push(subject.to_owned());
                    }
                }
                _ => {
                    return Err(ProtoError::Grant(format!(
                        "unknown provider grant {part:?} (known: calls, jetstream, subjects=SUBJECT[|SUBJECT…])"
                    )));
                }
            }
        }
        Ok(grants)
    }
}

/// Refuse application subjects that reach beyond the application: a leading wildcard (it
/// matches Ferry's subjects too), Ferry's namespace, NATS's `$…` and inbox subjects.
fn check_application_subject(subject: &str) -> Result<(), ProtoError> {
    let first = subject.split('.').next().unwrap_or_default();
    let reserved = first.is_empty()
        || first == "*"
        || first == ">"
        || first.eq_ignore_ascii_case(subject::PREFIX)
        || first.starts_with('$')
        || first.starts_with("_INBOX")
        || subject.contains(' ');
    if reserved {
        return Err(ProtoError::Grant(format!(
            "application subject {subject:?} would reach Ferry's or NATS's own subjects: start it with a name of your own"
        )));
    }
    Ok(())
}

/// The whole account: hosts and operators (`ferry ctl`, `ferry call`) are trusted.
pub fn trusted() -> Permissions {
    Permissions::default()
}

/// JetStream API subject `$JS.API.{rest}`.
fn js_api(rest: &str) -> String {
    format!("$JS.API.{rest}")
}

/// The permissions of provider `id` in `lattice`. `providers` names every provider of the
/// lattice (this one may be among them): a provider that calls components must not reach them.
///
/// # Errors
/// [`ProtoError::InvalidId`] if an identifier is not valid.
pub fn provider(
    lattice: &str,
    id: &str,
    grants: &ProviderGrants,
    providers: &[&str],
) -> Result<Permissions, ProtoError> {
    let data_bucket = subject::data_bucket(lattice)?;
    let data = subject::kv_stream(&data_bucket);
    let seen_bucket = subject::seen_bucket(lattice)?;
    let seen = subject::kv_stream(&seen_bucket);
    let streams = subject::all_streams(lattice)?;
    let inbox = format!("{}.>", subject::inbox_prefix(lattice, id)?);

    let mut subscribe = vec![
        subject::rpc(lattice, id)?,
        subject::link_put(lattice, id)?,
        subject::link_del(lattice, id)?,
        subject::health(lattice, id)?,
        subject::shutdown(lattice, id, None)?,
        format!("{}.*", subject::shutdown(lattice, id, None)?),
        streams.clone(),
        inbox.clone(),
    ];
    let mut publish = vec![
        subject::all_events(lattice)?,
        // Its own inbox: a round trip through the server to itself says its subscriptions are in.
        inbox,
        streams,
        // Its links, resolved with their config, from a host.
        subject::link_sync(lattice, id)?,
        // The lattice bucket: its state, and watches of its links — named consumers whose
        // filter is in the API subject, so no other key (config) can be read.
        js_api(&format!("STREAM.INFO.{data}")),
        js_api(&format!("CONSUMER.CREATE.{data}.*.$KV.{data_bucket}.{}>", state::LINK_PREFIX)),
        js_api(&format!("CONSUMER.DELETE.{data}.*")),
        // The replay record, read and written (claims are created, never changed).
        js_api(&format!("STREAM.INFO.{seen}")),
        js_api(&format!("STREAM.CREATE.{seen}")),
        js_api(&format!("DIRECT.GET.{seen}")),
        js_api(&format!("DIRECT.GET.{seen}.>")),
        format!("$KV.{seen_bucket}.>"),
    ];
    let mut deny_publish = Vec::new();
    if grants.calls_components {
        publish.push(subject::all_rpc(lattice)?);
        for other in providers.iter().copied().chain([id]) {
            let own = subject::rpc(lattice, other)?;
            if !deny_publish.contains(&own) {
                deny_publish.push(own);
            }
        }
    }
    for application in &grants.subjects {
        check_application_subject(application)?;
        publish.push(application.clone());
        subscribe.push(application.clone());
    }
    Ok(Permissions {
        publish: Some(SubjectRules { allow: publish, deny: deny_publish }),
        subscribe: Some(SubjectRules { allow: subscribe, deny: Vec::new() }),
        responses: Some(PROVIDER_RESPONSES),
    })
}

/// One user of a nats-server `authorization`/`accounts` block: a public nkey and what it may
/// do.
#[derive(Debug, Clone)]
pub struct NatsUser {
    /// Who the user is, for a comment in the configuration.
    pub name: String,
    /// The user's public nkey (`U…`).
    pub nkey: String,
    /// What it may do.
    pub permissions: Permissions,
}

/// A nats-server `accounts` block: each account, with JetStream, holding its users. Clients
/// that are none of them are refused (there is no default user).
pub fn accounts_block(accounts: &[(String, Vec<NatsUser>)]) -> String {
    let mut out = String::from("accounts {\n");
    for (account, users) in accounts {
        let _ = writeln!(out, "  {account}: {{\n    jetstream: enabled\n    users: [");
        for user in users {
            write_user(&mut out, user);
        }
        out.push_str("    ]\n  }\n");
    }
    out.push_str("}\n");
    out
}

fn write_user(out: &mut String, user: &NatsUser) {
    let _ = writeln!(out, "      # {}", user.name.replace('\n', " "));
    let _ = write!(out, "      {{ nkey: {}", quote(&user.nkey));
    let p = &user.permissions;
    if p.publish.is_some() || p.subscribe.is_some() || p.responses.is_some() {
        out.push_str(", permissions: {\n");
        for (name, rules) in [("publish", &p.publish), ("subscribe", &p.subscribe)] {
            if let Some(rules) = rules {
                let _ =
                    writeln!(out, "        {name}: {{ allow: {}, deny: {} }}", list(&rules.allow), list(&rules.deny));
            }
        }
        if let Some(r) = p.responses {
            let _ = writeln!(out, "        allow_responses: {{ max: {}, expires: \"{}s\" }}", r.max, r.expires_secs);
        }
        out.push_str("      }");
    }
    out.push_str(" }\n");
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A string in nats-server's configuration syntax.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_provider_publishes_on_no_invocation_subject() {
        let p = provider("lat", "kv", &ProviderGrants::default(), &["kv", "web"]).unwrap();
        let publish = p.publish.unwrap();
        assert!(!publish.allow.iter().any(|s| s.starts_with("ferry.rpc.")), "{publish:?}");
        assert!(!publish.allow.iter().any(|s| s.starts_with("$KV.FERRY_lat_DATA")), "{publish:?}");
        // The lattice bucket is read through link watches only: never a direct get, never a
        // consumer without a filter or with one beyond `link.`.
        let reads: Vec<&String> = publish.allow.iter().filter(|s| s.contains("KV_FERRY_lat_DATA")).collect();
        assert_eq!(
            reads,
            [
                "$JS.API.STREAM.INFO.KV_FERRY_lat_DATA",
                "$JS.API.CONSUMER.CREATE.KV_FERRY_lat_DATA.*.$KV.FERRY_lat_DATA.link.>",
                "$JS.API.CONSUMER.DELETE.KV_FERRY_lat_DATA.*"
            ]
        );
        let subscribe = p.subscribe.unwrap();
        assert!(subscribe.allow.contains(&"ferry.rpc.lat.kv".to_owned()));
        assert!(subscribe.allow.contains(&"_INBOX.ferry.lat.kv.>".to_owned()));
        assert!(!subscribe.allow.iter().any(|s| s == "_INBOX.>" || s == ">"));
    }

    #[test]
    fn a_calling_provider_reaches_components_but_no_provider() {
        let grants = ProviderGrants::parse("calls").unwrap();
        let p = provider("lat", "web", &grants, &["kv", "web"]).unwrap().publish.unwrap();
        assert!(p.allow.contains(&"ferry.rpc.lat.*".to_owned()));
        assert!(p.deny.contains(&"ferry.rpc.lat.kv".to_owned()) && p.deny.contains(&"ferry.rpc.lat.web".to_owned()));
    }

    #[test]
    fn a_jetstream_grant_adds_nothing_in_the_lattice_account() {
        let grants = ProviderGrants::parse("jetstream").unwrap();
        assert!(grants.jetstream);
        assert_eq!(
            provider("lat", "kv", &grants, &[]).unwrap(),
            provider("lat", "kv", &ProviderGrants::default(), &[]).unwrap()
        );
        assert_eq!(account_names("lat").unwrap(), ("FERRY_lat".to_owned(), "FERRY_lat_STORE".to_owned()));
    }

    #[test]
    fn application_subjects_stay_out_of_ferrys_and_natss() {
        for bad in
            ["subjects=>", "subjects=*.x", "subjects=ferry.rpc.x", "subjects=$JS.API.>", "subjects=_INBOX.>", "nope"]
        {
            assert!(ProviderGrants::parse(bad).is_err(), "{bad}");
        }
        let grants = ProviderGrants::parse("calls, subjects=orders.>|events.*").unwrap();
        assert_eq!(grants.subjects, ["orders.>", "events.*"]);
    }

    #[test]
    fn the_accounts_block_quotes_every_subject() {
        let users = [NatsUser {
            name: "provider kv".into(),
            nkey: "UABC".into(),
            permissions: provider("lat", "kv", &ProviderGrants::default(), &[]).unwrap(),
        }];
        let text = accounts_block(&[("FERRY_lat".to_owned(), users.to_vec())]);
        assert!(text.contains("\"$JS.API.STREAM.INFO.KV_FERRY_lat_DATA\""), "{text}");
        assert!(text.contains("allow_responses: { max: 2, expires: \"600s\" }"), "{text}");
        assert!(!accounts_block(&[("A".to_owned(), Vec::new())]).contains("no_auth_user"));
    }
}
