//! A lattice on a nats-server configured by `ferry nats-config`: every process connects with an
//! nkey of its own — the host, `ferry ctl`, each provider (the supervised one handed its
//! identity by the host) — and the lattice serves as usual, in plain, TLS and mutual-TLS
//! variants. A provider's NATS user publishes on no other provider's or component's subjects,
//! reads no one else's replies, reads no config and writes nothing in the lattice bucket; a
//! client without a key is turned away. Config reaches providers only sealed, from hosts: a provider's user cannot
//! read it from the lattice bucket, and one started after its links gets them from a host.

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_lattice::CtlClient;
use ferry_proto::{
    auth::ClusterKey,
    ctl::{ComponentStart, ConfigPutCommand, LinkPutCommand, ProviderStart, operator::OperatorKey},
    link::Link,
};
use ferry_tests::{
    NatsServer, Process, RedisServer, bin_dir, binary, build_component, free_port,
    http::{fetch, full, request, wait_for_route},
};
use futures::StreamExt as _;

use crate::{keyvalue::kv_link, tls::pki};

const LATTICE: &str = "scoped";

/// A raw connection as the NATS user whose seed is in `seed_file`, with `inbox` as its reply
/// prefix, collecting the server's error reports (permission violations).
async fn connect_as(
    url: &str,
    seed_file: &Path,
    inbox: Option<&str>,
    tls: Option<&TlsFiles>,
) -> anyhow::Result<(async_nats::Client, Arc<Mutex<Vec<String>>>)> {
    let seed = std::fs::read_to_string(seed_file)?.trim().to_owned();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let mut options = async_nats::ConnectOptions::with_nkey(seed).event_callback(move |event| {
        let seen = seen.clone();
        async move {
            if let async_nats::Event::ServerError(err) = event {
                seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(err.to_string());
            }
        }
    });
    if let Some(prefix) = inbox {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(tls) = tls {
        options = tls.apply(options);
    }
    Ok((options.connect(url).await?, errors))
}

/// Client-side TLS files of one variant.
struct TlsFiles {
    ca: String,
    client: Option<(String, String)>,
}

impl TlsFiles {
    fn apply(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        let mut options = options.add_root_certificates(self.ca.clone().into()).require_tls(true);
        if let Some((cert, key)) = &self.client {
            options = options.add_client_certificate(cert.clone().into(), key.clone().into());
        }
        options
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("FERRY_NATS_TLS_CA", self.ca.clone())];
        if let Some((cert, key)) = &self.client {
            env.push(("FERRY_NATS_TLS_CERT", cert.clone()));
            env.push(("FERRY_NATS_TLS_KEY", key.clone()));
        }
        env
    }
}

/// The nkey that the connection named `name` authenticated with, from the server's monitoring
/// port `monitor`.
fn connected_as(monitor: u16, name: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", monitor))?;
    write!(stream, "GET /connz?auth=1&limit=1024 HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let connz: serde_json::Value = serde_json::from_str(body)?;
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .and_then(|c| c["authorized_user"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no connection named {name} in {body}"))
}

/// The key-value provider as sidecar `kv`, connecting as its own NATS user from `out`; once
/// it is ready.
async fn sidecar_kv(
    name: &str,
    url: &str,
    cluster: &ClusterKey,
    out: &Path,
    tls_env: &[(&'static str, String)],
) -> anyhow::Result<Process> {
    let mut command = Command::new(binary("ferry-provider-keyvalue")?);
    command
        .env("FERRY_NATS_URL", url)
        .env("FERRY_LATTICE", LATTICE)
        .env("FERRY_PROVIDER_ID", "kv")
        .env(
            "FERRY_PROVIDER_CREDENTIAL",
            cluster.issue_credential(LATTICE, "kv", ferry_proto::time::now_ms(), 2).encode(),
        )
        .env("FERRY_NATS_NKEY_FILE", out.join("providers/kv.nk"))
        .envs(tls_env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut kv = Process::spawn(name, command)?;
    kv.wait_for_log("provider ready", Duration::from_secs(30)).await?;
    Ok(kv)
}

/// Wait until the server has reported a violation that mentions `subject`, or two seconds.
async fn refused(errors: &Mutex<Vec<String>>, subject: &str) -> bool {
    for _ in 0..40 {
        if errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|e| e.contains("Permissions Violation") && e.contains(subject))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lattice_on_generated_nats_accounts_serves_and_each_provider_reaches_only_its_own() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = pki(dir.path())?;
    let redis = RedisServer::start().await?;
    for variant in ["plain", "tls", "mtls"] {
        let out = dir.path().join(variant);
        let mut command = Command::new(binary("ferry")?);
        command.args(["nats-config", "--lattice", LATTICE, "--out"]).arg(&out);
        command.args(["--provider", "kv", "--provider", "web:calls", "--provider", "store:jetstream"]);
        if variant != "plain" {
            command.args(["--tls-cert", &pki.server.0, "--tls-key", &pki.server.1, "--tls-ca", &pki.ca]);
        }
        if variant == "mtls" {
            command.arg("--tls-verify-clients");
        }
        let generated = command.output()?;
        let printed = String::from_utf8_lossy(&generated.stdout).into_owned();
        assert!(generated.status.success(), "{printed}{}", String::from_utf8_lossy(&generated.stderr));
        assert!(!printed.contains("SU"), "ferry nats-config printed a seed: {printed}");
        let monitor = free_port()?;
        let config = std::fs::read_to_string(out.join("nats-server.conf"))?;
        let nats = NatsServer::start_with_config(&format!("http: \"127.0.0.1:{monitor}\"\n{config}")).await?;
        let (url, tls) = match variant {
            "plain" => (nats.url.clone(), None),
            _ => (
                nats.url.replace("nats://", "tls://"),
                Some(TlsFiles { ca: pki.ca.clone(), client: (variant == "mtls").then(|| pki.client.clone()) }),
            ),
        };
        let tls_env = tls.as_ref().map(TlsFiles::env).unwrap_or_default();

        // The host, as the hosts' user; it hands the supervised provider its own identity.
        let (cluster, seed) = ClusterKey::generate()?;
        let (operator, operator_seed) = OperatorKey::generate()?;
        let mut command = Command::new(binary("ferry")?);
        command
            .args(["host", "--nats-url", &url, "--lattice", LATTICE, "--operator-key", &operator.public_key()])
            .args(["--allow-file-dir", &bin_dir()?, "--provider-nats-dir"])
            .arg(out.join("providers"))
            .env("FERRY_CLUSTER_SEED", &seed)
            .env("FERRY_NATS_NKEY_FILE", out.join("host.nk"))
            .envs(tls_env.iter().map(|(k, v)| (*k, v.as_str())));
        let mut host = Process::spawn(&format!("{variant}-host"), command)?;
        host.wait_for_log("host ready", Duration::from_secs(30)).await?;
        let logs = host.logs();
        let host_id: String = logs
            .split("host_id=")
            .nth(1)
            .map(|rest| rest.chars().take_while(char::is_ascii_alphanumeric).collect())
            .unwrap_or_default();
        assert!(!host_id.is_empty(), "no host id in {logs}");

        // A sidecar provider, as its own user.
        let kv = sidecar_kv(&format!("{variant}-kv"), &url, &cluster, &out, &tls_env).await?;

        // `ferry ctl` as the operators' user.
        let out_ctl = Command::new(binary("ferry")?)
            .args(["ctl", "--nats-url", &url, "--lattice", LATTICE, "--json", "get", "hosts"])
            .env("FERRY_OPERATOR_SEED", &operator_seed)
            .env("FERRY_NATS_NKEY_FILE", out.join("ctl.nk"))
            .envs(tls_env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()?;
        let stdout = String::from_utf8_lossy(&out_ctl.stdout);
        assert!(out_ctl.status.success(), "ferry ctl: {stdout}{}", String::from_utf8_lossy(&out_ctl.stderr));
        assert!(stdout.contains(&host_id), "{stdout}");

        // The http-server provider, supervised by the host, serves a component that stores in
        // the key-value provider: every hop on its own NATS user.
        let (ctl_nats, _) = connect_as(&url, &out.join("ctl.nk"), None, tls.as_ref()).await?;
        let ctl = CtlClient::new(ctl_nats.clone(), LATTICE, Duration::from_secs(60)).with_operator(operator);
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let start = ProviderStart {
            request_id: "web".into(),
            provider_id: "web".into(),
            binary: binary("ferry-provider-http-server")?.display().to_string(),
            config: [("address".to_owned(), address.to_string())].into(),
        };
        let started = ctl.send(&start, Some(&host_id)).await?;
        assert!(started.success, "{}", started.message);
        let store = ferry_lattice::ComponentStore::open(&ctl_nats, LATTICE).await?;
        let image = store.upload(&std::fs::read(build_component("kv-http")?)?).await?.to_string();
        let start = ComponentStart {
            request_id: "c".into(),
            component_id: "kvc".into(),
            image,
            max_instances: Some(4),
            config: vec![],
        };
        let started = ctl.send(&start, None).await?;
        assert!(started.success, "{}", started.message);
        for (name, values) in [("redis", vec![("url", redis.url.clone())]), ("route", vec![("path", "/".to_owned())])] {
            let put = ConfigPutCommand {
                request_id: "cfg".into(),
                name: name.into(),
                values: values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            };
            let put = ctl.send(&put, None).await?;
            assert!(put.success, "{}", put.message);
        }
        let mut web_link = Link::new("web", "kvc", "wasi", "http", vec!["incoming-handler".into()]);
        web_link.source_config = vec!["route".into()];
        for link in [web_link, kv_link("kvc", "kv", "default", &["redis"])] {
            let put = ctl.send(&LinkPutCommand { request_id: "l".into(), link }, None).await?;
            assert!(put.success, "{}", put.message);
        }
        wait_for_route(address, "localhost", "/").await?;
        // A key-value provider on NATS, granted JetStream: its components' data lives in an
        // account apart from the lattice's, reached with its second identity.
        let start = ProviderStart {
            request_id: "store".into(),
            provider_id: "store".into(),
            binary: binary("ferry-provider-keyvalue")?.display().to_string(),
            config: Default::default(),
        };
        let started = ctl.send(&start, Some(&host_id)).await?;
        assert!(started.success, "{}", started.message);
        let store_link = kv_link("kvc", "store", "cache", &[]);
        let mut stored = ctl.send(&LinkPutCommand { request_id: "l".into(), link: store_link.clone() }, None).await?;
        for _ in 0..50 {
            if stored.success {
                break;
            }
            // The provider may not be up yet: it takes the link from a host when it is.
            tokio::time::sleep(Duration::from_millis(100)).await;
            stored = ctl.send(&LinkPutCommand { request_id: "l".into(), link: store_link.clone() }, None).await?;
        }
        assert!(stored.success, "{}", stored.message);
        let mut answer = String::new();
        for _ in 0..50 {
            let body = r#"{"op":"set","bucket":"b","key":"j","value":"in-store","link":"cache"}"#;
            let (status, _, bytes) = fetch(address, request("POST", "localhost", "/", full(body.to_owned()))?).await?;
            answer = String::from_utf8_lossy(&bytes).into_owned();
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = r#"{"op":"get","bucket":"b","key":"j","link":"cache"}"#;
        let (status, _, bytes) = fetch(address, request("POST", "localhost", "/", full(body.to_owned()))?).await?;
        let got = String::from_utf8_lossy(&bytes);
        assert!(status == 200 && got.contains("in-store"), "{variant}: {got} (set: {answer})");
        let store_bucket = ferry_proto::subject::component_kv_bucket(LATTICE, "b")?;
        let lattice_js = async_nats::jetstream::new(ctl_nats.clone());
        assert!(
            lattice_js.get_key_value(&store_bucket).await.is_err(),
            "{variant}: component data in the lattice's account"
        );
        let (as_store, _) = connect_as(&url, &out.join("providers/store.store.nk"), None, tls.as_ref()).await?;
        let store_js = async_nats::jetstream::new(as_store.clone());
        let data_bucket = store_js.get_key_value(&store_bucket).await?;
        assert_eq!(data_bucket.get("j").await?.as_deref(), Some(&b"in-store"[..]), "{variant}");
        assert!(
            store_js.get_key_value(format!("FERRY_{LATTICE}_DATA")).await.is_err(),
            "{variant}: the store identity reaches the lattice bucket"
        );

        // The supervised provider connected as itself, not as its host.
        let web_key = nkeys::KeyPair::from_seed(std::fs::read_to_string(out.join("providers/web.nk"))?.trim())?;
        assert_eq!(connected_as(monitor, "ferry-provider-web")?, web_key.public_key(), "{variant}");
        // And one the directory holds no identity for is not started.
        let start = ProviderStart {
            request_id: "nobody".into(),
            provider_id: "nobody".into(),
            binary: binary("ferry-provider-http-server")?.display().to_string(),
            config: [("address".to_owned(), format!("127.0.0.1:{}", free_port()?))].into(),
        };
        let refused_start = ctl.send(&start, Some(&host_id)).await?;
        assert!(!refused_start.success, "{variant}: a provider without a NATS identity was started");
        assert!(refused_start.message.contains("no NATS identity"), "{}", refused_start.message);
        for (body, expected) in [
            (r#"{"op":"set","bucket":"b","key":"k","value":"scoped"}"#, None),
            (r#"{"op":"get","bucket":"b","key":"k"}"#, Some("scoped")),
        ] {
            let (status, _, answer) = fetch(address, request("POST", "localhost", "/", full(body.to_owned()))?).await?;
            let answer = String::from_utf8_lossy(&answer);
            assert_eq!(status, 200, "{variant}: {answer}");
            if let Some(expected) = expected {
                assert!(answer.contains(expected), "{variant}: {answer}");
            }
        }

        // What a provider's user may not do. A watcher with the operators' key sees what
        // reaches the invocation subjects.
        let mut watch = ctl_nats.subscribe(format!("ferry.rpc.{LATTICE}.>")).await?;
        ctl_nats.flush().await?;
        let kv_inbox = ferry_proto::subject::inbox_prefix(LATTICE, "kv")?;
        let (as_kv, kv_errors) = connect_as(&url, &out.join("providers/kv.nk"), Some(&kv_inbox), tls.as_ref()).await?;
        let forged = [
            format!("ferry.rpc.{LATTICE}.web"),
            format!("ferry.rpc.{LATTICE}.kvc"),
            format!("ferry.link.{LATTICE}.web.put"),
            format!("ferry.ctl.v1.{LATTICE}.component.scale"),
            format!("$KV.FERRY_{LATTICE}_DATA.link.forged"),
        ];
        for subject in &forged {
            as_kv.publish(subject.clone(), "forged".into()).await?;
            as_kv.flush().await?;
            assert!(
                refused(&kv_errors, subject).await,
                "{variant}: kv published on {subject}: {:?}",
                kv_errors.lock().unwrap()
            );
        }
        for subject in [format!("ferry.rpc.{LATTICE}.web"), "_INBOX.>".to_owned(), format!("ferry.evt.{LATTICE}.>")] {
            let _sub = as_kv.subscribe(subject.clone()).await?;
            as_kv.flush().await?;
            assert!(refused(&kv_errors, &subject).await, "{variant}: kv subscribed to {subject}");
        }
        // The calling provider reaches components, not providers.
        let web_inbox = ferry_proto::subject::inbox_prefix(LATTICE, "web")?;
        let (as_web, web_errors) =
            connect_as(&url, &out.join("providers/web.nk"), Some(&web_inbox), tls.as_ref()).await?;
        let to_kv = format!("ferry.rpc.{LATTICE}.kv");
        as_web.publish(to_kv.clone(), "forged".into()).await?;
        as_web.flush().await?;
        assert!(refused(&web_errors, &to_kv).await, "{variant}: web published on {to_kv}");
        let to_component = format!("ferry.rpc.{LATTICE}.kvc");
        as_web.publish(to_component.clone(), "unsigned".into()).await?;
        as_web.flush().await?;
        let arrived = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(msg) = watch.next().await {
                if msg.payload.as_ref() == b"unsigned" || msg.payload.as_ref() == b"forged" {
                    return msg;
                }
            }
            unreachable!("the watch ended")
        })
        .await?;
        assert_eq!(arrived.subject.as_str(), to_component, "{variant}: only web's call to a component arrives");
        assert_eq!(arrived.payload.as_ref(), b"unsigned");

        // Nor may it read config from the lattice bucket: not by direct get, not by a watch
        // (it reads only link keys, through a named consumer whose filter says so).
        let data = format!("FERRY_{LATTICE}_DATA");
        for subject in [
            format!("$JS.API.DIRECT.GET.KV_{data}.$KV.{data}.config.redis"),
            format!("$JS.API.STREAM.MSG.GET.KV_{data}"),
            format!("$JS.API.CONSUMER.CREATE.KV_{data}"),
            format!("$JS.API.CONSUMER.CREATE.KV_{data}.peek.$KV.{data}.config.>"),
        ] {
            as_kv.publish(subject.clone(), "{}".into()).await?;
            as_kv.flush().await?;
            assert!(refused(&kv_errors, &subject).await, "{variant}: kv may publish on {subject}");
        }
        let js = async_nats::jetstream::with_prefix(as_kv.clone(), "$JS.API");
        let bucket = js.get_key_value(&data).await?;
        let read = tokio::time::timeout(Duration::from_secs(2), bucket.get("config.redis")).await;
        assert!(!matches!(read, Ok(Ok(Some(_)))), "{variant}: kv read the redis config from the bucket");
        let watch = tokio::time::timeout(Duration::from_secs(2), bucket.watch("config.>")).await;
        assert!(!matches!(watch, Ok(Ok(_))), "{variant}: kv watched the bucket's config");

        // A provider started after its links exist gets their config from a host, sealed.
        drop(kv);
        let kv = sidecar_kv(&format!("{variant}-kv-again"), &url, &cluster, &out, &tls_env).await?;
        let body = r#"{"op":"get","bucket":"b","key":"k"}"#;
        let (status, _, answer) = fetch(address, request("POST", "localhost", "/", full(body.to_owned()))?).await?;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 200, "{variant}, restarted provider: {answer}");
        assert!(answer.contains("scoped"), "{variant}, restarted provider: {answer}");

        // No key, no lattice.
        let mut anonymous = async_nats::ConnectOptions::new();
        if let Some(tls) = &tls {
            anonymous = tls.apply(anonymous);
        }
        let refused_anon = tokio::time::timeout(Duration::from_secs(3), anonymous.connect(url.as_str())).await;
        assert!(!matches!(refused_anon, Ok(Ok(_))), "{variant}: a client without a key got in");

        drop((kv, host, as_kv, as_web, as_store, ctl_nats, nats));
    }
    Ok(())
}
