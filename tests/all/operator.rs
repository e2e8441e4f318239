//! Control-plane authorization: hosts given operator keys obey only commands those operators
//! signed — unaltered, on the subject they were signed for, within their window, once — and
//! refuse and log everything else without a change.

use std::{process::Command, time::Duration};

use ferry_proto::{
    ctl::{Command as _, CtlResponse, HostPing, LinkGetCommand, LinkPutCommand, operator::OperatorKey},
    link::Link,
};
use ferry_tests::{Lattice, binary};

/// Send `body` on `subject` with `headers` over plain NATS; the reply as a control response.
async fn send(
    lattice: &Lattice,
    subject: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> anyhow::Result<CtlResponse> {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, value.as_str());
    }
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        lattice.raw.request_with_headers(subject.to_owned(), map, body.to_vec().into()),
    )
    .await??;
    Ok(serde_json::from_slice(&reply.payload)?)
}

async fn links(lattice: &Lattice) -> anyhow::Result<Vec<Link>> {
    let reply = lattice.ctl.send(&LinkGetCommand { request_id: "get".into(), id: None }, None).await?;
    anyhow::ensure!(reply.success, "{reply:?}");
    Ok(reply.data.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_forged_altered_moved_and_replayed_commands_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (_second, _second_id) = lattice.start_host().await?;
    let operator = OperatorKey::from_seed(&lattice.operator_seed)?;
    let (stranger, _) = OperatorKey::generate()?;
    let put = LinkPutCommand {
        request_id: "r-put".into(),
        link: Link::new("comp", "kv", "wasi", "keyvalue", vec!["store".into()]),
    };
    let subject = LinkPutCommand::subject(&lattice.name, None)?;
    let body = serde_json::to_vec(&put)?;
    let del_subject = ferry_proto::ctl::LinkDelCommand::subject(&lattice.name, None)?;

    let refused = [
        ("unsigned", subject.clone(), Vec::new(), body.clone()),
        ("another operator", subject.clone(), stranger.sign(&subject, &body)?, body.clone()),
        ("altered body", subject.clone(), operator.sign(&subject, &body)?, altered(&body)),
        ("signed for another command", subject.clone(), operator.sign(&del_subject, &body)?, body.clone()),
    ];
    for (what, subject, headers, body) in refused {
        let reply = send(&lattice, &subject, &headers, &body).await?;
        assert!(!reply.success && reply.message.contains("unauthorized"), "{what}: {reply:?}");
        assert_eq!(reply.request_id, if what == "altered body" { "r-PUT" } else { "r-put" }, "{what}");
    }
    assert!(links(&lattice).await?.is_empty(), "a refused command stored a link");

    // Lattice-wide queries need a signature too.
    let ping = serde_json::to_vec(&HostPing::default())?;
    let reply = send(&lattice, &HostPing::subject(&lattice.name, None)?, &[], &ping).await?;
    assert!(!reply.success && reply.message.contains("unauthorized"), "{reply:?}");

    // Signed properly it runs, once: the same message again, to whichever host takes it, is
    // a replay.
    let headers = operator.sign(&subject, &body)?;
    let reply = send(&lattice, &subject, &headers, &body).await?;
    assert!(reply.success, "{reply:?}");
    for _ in 0..4 {
        let reply = send(&lattice, &subject, &headers, &body).await?;
        assert!(!reply.success && reply.message.contains("unauthorized"), "replay: {reply:?}");
    }
    assert_eq!(links(&lattice).await?.len(), 1);
    let logs = lattice.host.logs();
    assert!(logs.contains("refused a control command"), "the host logs refusals:\n{logs}");

    // `ferry ctl` without the operator's seed is refused and exits non-zero; with it, obeyed.
    let ctl = |seed: Option<&str>| {
        let mut command = Command::new(binary("ferry")?);
        command.args(["ctl", "--nats-url", &lattice.nats.url, "--lattice", &lattice.name, "link", "get"]);
        command.env_remove("FERRY_OPERATOR_SEED");
        if let Some(seed) = seed {
            command.env("FERRY_OPERATOR_SEED", seed);
        }
        anyhow::Ok(command.output()?)
    };
    let output = ctl(None)?;
    assert!(!output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("unauthorized"), "{output:?}");
    let output = ctl(Some(&lattice.operator_seed))?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

#[test]
fn ferry_keys_operator_prints_a_seed_and_its_public_key() -> anyhow::Result<()> {
    let output = Command::new(binary("ferry")?).args(["keys", "operator"]).output()?;
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout)?;
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).expect("field printed")
    };
    let (seed, public) = (field("seed:"), field("public key:"));
    assert_eq!(OperatorKey::from_seed(&seed)?.public_key(), public);
    assert!(public.starts_with('O'));
    Ok(())
}

/// `body` with its request id changed after signing.
fn altered(body: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(body).replacen("r-put", "r-PUT", 1).into_bytes()
}
