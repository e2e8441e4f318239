//! Component-to-component calls over a custom WIT interface: a component importing
//! `ferry-test:greeter/greet` calls the component that exports it through the lattice, values
//! of every kind in the documented MessagePack form; on one host and across two; and
//! `ferry call` invokes the exported function from the command line.

use ferry_proto::link::Link;
use ferry_tests::{Lattice, binary};
use serde_json::{Value, json};

fn greet_link(source: &str) -> Link {
    Link::new(source, "greeter", "ferry-test", "greeter", vec!["greet".into()])
}

/// What the caller component must get back from the greeter.
pub(crate) fn check(answer: &Value) {
    assert_eq!(answer["hello"], "hello, Ferry");
    assert_eq!(answer["describe"], r#"Ok("Ada (36) circle 1.5 happy [math,engines]")"#);
    assert_eq!(answer["describe_err"], r#"Err("Bo is too young")"#);
    assert_eq!(answer["describe_square"], r#"Ok("Ada (36) square 4 sad [math,engines]")"#);
    assert_eq!(answer["sum"], json!(i64::MAX));
    assert_eq!(answer["bytes"], true, "300 kB of bytes went there and back reversed");
    assert_eq!(answer["options"], json!(["Some(None)", "Some(Some(7))", "None"]));
    assert_eq!(answer["flags"], json!([true, true]));
    assert_eq!(answer["char"], "λ");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_calls_another_components_interface_on_one_host() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    // The greeter exports nothing but its own interface, and starts.
    lattice.start_component_on("greeter", "greeter", &[], None).await?;
    lattice.start_component("greet-caller", "caller", &[]).await?;
    let unlinked = lattice.call("caller", json!({})).await.expect_err("no link yet: the call traps");
    assert_eq!(unlinked.kind, ferry_proto::ErrorKind::ComponentTrap);
    assert!(unlinked.message.contains("not-linked"), "{unlinked}");
    lattice.link(greet_link("caller")).await?;
    check(&lattice.ok("caller", json!({})).await?);

    // A callee slower than the host's 2 s capability-call timeout: the call waits as long as
    // the caller's own invocation may.
    let slow = lattice.client.handle_http("caller", &ferry_tests::get("/slow")).await?;
    let answer: Value = serde_json::from_slice(&slow.body)?;
    assert_eq!((slow.status, &answer["ok"]["slow"]), (200, &json!(3000)), "{answer}");

    // `ferry call` as the CLI's identity, over a link of its own.
    lattice.link(greet_link("ferry-cli")).await?;
    let dir = tempfile::tempdir()?;
    let credential = dir.path().join("cli.credential");
    std::fs::write(&credential, lattice.credential("ferry-cli"))?;
    let call = |args: &[&str]| {
        let mut command = std::process::Command::new(binary("ferry")?);
        command.arg("call").args(args).arg("--credential-file").arg(&credential);
        command.env("FERRY_NATS_URL", &lattice.url).env("FERRY_LATTICE", &lattice.name);
        anyhow::Ok(command.output()?)
    };
    let out = call(&["greeter", "ferry-test:greeter/greet.hello", "CLI"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""hello, CLI""#);
    let person = r#"{"name": "Cy", "age": 3, "tags": ["a"]}"#;
    let out = call(&["greeter", "ferry-test:greeter/greet.describe", person, r#"{"square": 2}"#, "sad"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"ok":"Cy (3) square 2 sad [a]"}"#);
    // Arguments of the wrong shape are refused with the reason, and the greeter serves on.
    let out = call(&["greeter", "ferry-test:greeter/greet.sum", r#"["x"]"#])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected an integer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = call(&["greeter", "ferry-test:greeter/greet.sum", "[1, 2, 3]"])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_calls_another_components_interface_across_two_hosts() -> anyhow::Result<()> {
    let lattice = Lattice::start().await?;
    let (_second, second_id) = lattice.start_host().await?;
    lattice.start_component_on("greeter", "greeter", &[], Some(&second_id)).await?;
    lattice.start_component_on("greet-caller", "caller", &[], Some(&lattice.host_id)).await?;
    let mut http = Link::new(ferry_tests::TEST_CLIENT_ID, "caller", "wasi", "http", vec!["incoming-handler".into()]);
    http.name = "default".into();
    lattice.link(http).await?;
    lattice.link(greet_link("caller")).await?;
    check(&lattice.ok("caller", json!({})).await?);
    Ok(())
}
