//! (i) The gRPC sidecar bridge: an HTTP request whose component makes one key-value get,
//! through the bridge to the Python example (SQLite), through the bridge to a Rust gRPC stub
//! (memory), through an SDK provider doing the same work in memory, and through Ferry's own
//! key-value provider on Redis. Stub minus memory is what the bridge itself adds.

use std::{net::SocketAddr, time::Duration};

use ferry_tests::{Lattice, Process, RedisServer, binary, free_port, python, repo_path};
use serde_json::json;

use crate::{
    load::{HttpCall, Sample, Turns, Watched, http_worker, take_turns},
    systems::{Measured, kv_route, measure},
};

/// The routes: component id, HTTP path, the key-value provider it is linked to, and what the
/// provider's process is called in the CPU and memory columns.
const ROUTES: [(&str, &str, &str, &str); 4] = [
    ("kvm", "/memory", "kvmem", "kv"),
    ("kvs", "/stub", "kvstub", "bridge"),
    ("kvp", "/python", "kvpy", "bridge"),
    ("kvr", "/redis", "kv", "kv"),
];

/// One lattice with the four key-value providers and a `kv-http` component linked to each.
pub(crate) struct BridgeLattice {
    lattice: Lattice,
    address: SocketAddr,
    http: Process,
    providers: Vec<(&'static str, Process)>,
    _redis: RedisServer,
    _dir: tempfile::TempDir,
}

impl BridgeLattice {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let lattice = Lattice::start().await?;
        let redis = RedisServer::start().await?;
        let dir = tempfile::tempdir()?;
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let http = lattice
            .start_provider_with("ferry-provider-http-server", "http", &["--config", &format!("address={address}")])
            .await?;
        let bridge = "ferry-provider-bridge";
        let stub = binary("ferry-test-grpc-provider")?.display().to_string();
        let (python, script) =
            (python()?.display().to_string(), repo_path("examples/python-keyvalue/provider.py").display().to_string());
        let db = dir.path().join("kv.sqlite3").display().to_string();
        let providers = vec![
            ("kvmem", lattice.start_provider("ferry-test-memory-kv", "kvmem").await?),
            ("kvstub", lattice.start_provider_with(bridge, "kvstub", &["--exec", &stub]).await?),
            (
                "kvpy",
                lattice
                    .start_provider_env(bridge, "kvpy", &["--exec", &python, &script], &[("KV_SQLITE_PATH", &db)])
                    .await?,
            ),
            ("kv", lattice.start_provider("ferry-provider-keyvalue", "kv").await?),
        ];
        lattice.config("redis", &[("backend", "redis"), ("url", &redis.url)]).await?;
        for (component, path, provider, _) in ROUTES {
            kv_route(&lattice, component, path, provider, (provider == "kv").then_some("redis")).await?;
            ferry_tests::http::wait_for_route(address, "localhost", path).await?;
        }
        Ok(Self { lattice, address, http, providers, _redis: redis, _dir: dir })
    }

    fn get(path: &'static str) -> HttpCall {
        HttpCall::post_json(path, &json!({"op": "get", "bucket": "bench", "key": "k"}))
    }

    /// One get per request through `provider` (its route), at each concurrency.
    pub(crate) async fn measure(&self, provider: &str, concurrency: &[usize], duration: Duration) -> Measured {
        let (_, path, _, label) = ROUTES.iter().find(|(_, _, p, _)| *p == provider).copied().unwrap_or(ROUTES[0]);
        let mut watched = vec![
            Watched { name: "host", pid: self.lattice.host.pid() },
            Watched { name: "http", pid: self.http.pid() },
            Watched { name: "nats", pid: self.lattice.nats.process.pid() },
        ];
        if let Some((_, process)) = self.providers.iter().find(|(id, _)| *id == provider) {
            watched.push(Watched { name: label, pid: process.pid() });
        }
        measure(self.address, &Self::get(path), concurrency, duration, &watched).await
    }

    /// The memory provider, the stub through the bridge, and the Python provider through the
    /// bridge, taking turns (as `turns` says) on one call in flight; one sample each, in that
    /// order.
    pub(crate) async fn turns(&self, duration: Duration, turns: Turns) -> Vec<Sample> {
        let mut workers = Vec::new();
        for path in ["/memory", "/stub", "/python"] {
            workers.push(http_worker(self.address, Self::get(path)).await);
        }
        take_turns(workers, duration, turns).await
    }
}

/// (j) The gRPC hop alone: a `KeyValue.Get` to the Rust stub over a Unix socket from this
/// process, with a channel made as the bridge makes its own (the floor of what the bridge adds).
pub(crate) async fn grpc_floor(concurrency: &[usize], duration: Duration) -> anyhow::Result<Vec<Sample>> {
    use ferry_proto::grpc::v1::{self, key_value_client::KeyValueClient};

    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("stub.sock");
    let mut command = std::process::Command::new(binary("ferry-test-grpc-provider")?);
    command.args(["--listen", &format!("unix:{}", socket.display())]);
    let mut stub = Process::spawn("grpc-stub", command)?;
    stub.wait_for_log("serving on", Duration::from_secs(10)).await?;
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let socket = socket.clone();
        async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
    });
    let channel = tonic::transport::Endpoint::from_static("http://localhost").connect_with_connector(connector).await?;
    let watched = [Watched { name: "stub", pid: stub.pid() }];
    let mut samples = Vec::new();
    for &n in concurrency {
        let channel = channel.clone();
        let sample = crate::load::drive(n, duration, &watched, || {
            let client = KeyValueClient::new(channel.clone());
            async move {
                Box::new(move || {
                    let mut client = client.clone();
                    Box::pin(async move {
                        let request = v1::KeyRequest {
                            caller: Some(v1::Caller { source_id: "bench".into(), link_name: "default".into() }),
                            bucket: "bench".into(),
                            key: "k".into(),
                        };
                        client.get(request).await.is_ok()
                    }) as futures::future::BoxFuture<'static, bool>
                }) as crate::load::Worker
            }
        })
        .await;
        samples.push(sample);
    }
    Ok(samples)
}
