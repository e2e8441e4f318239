//! The floors the end-to-end figures are read against: (a) a raw NATS request/reply echo,
//! (b) the component called in-process through wasmtime, (g) a raw Redis GET round trip.

use std::{path::Path, time::Duration};

use bytes::Bytes;
use ferry_tests::{NatsServer, RedisServer};
use futures::{StreamExt as _, future::BoxFuture};
use http_body_util::{BodyExt as _, Empty};
use wasmtime::{Store, component::Linker};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    WasiHttpCtx, WasiHttpCtxView, WasiHttpView,
    p2::bindings::{ProxyPre, http::types::Scheme},
};

use crate::load::{Sample, Watched, Worker, drive};

/// (a) NATS request/reply with a 100-byte payload echoed by a responder on its own connection,
/// at each concurrency.
pub(crate) async fn nats_echo(concurrency: &[usize], duration: Duration) -> anyhow::Result<Vec<Sample>> {
    let nats = NatsServer::start().await?;
    let watched = [Watched { name: "nats", pid: nats.process.pid() }];
    let responder = async_nats::connect(&nats.url).await?;
    let mut sub = responder.subscribe("bench.echo").await?;
    responder.flush().await?;
    let echo = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, msg.payload).await;
            }
        }
    });
    let client = async_nats::connect(&nats.url).await?;
    let payload = Bytes::from(vec![7u8; 100]);
    let mut samples = Vec::new();
    for &n in concurrency {
        let sample = drive(n, duration, &watched, || {
            let (client, payload) = (client.clone(), payload.clone());
            async move {
                Box::new(move || {
                    let (client, payload) = (client.clone(), payload.clone());
                    Box::pin(async move { client.request("bench.echo", payload).await.is_ok() })
                        as BoxFuture<'static, bool>
                }) as Worker
            }
        })
        .await;
        samples.push(sample);
    }
    echo.abort();
    Ok(samples)
}

/// (g) A Redis `GET` of a short value on one multiplexed connection (as the key-value
/// provider holds it), at each concurrency.
pub(crate) async fn redis_get(concurrency: &[usize], duration: Duration) -> anyhow::Result<Vec<Sample>> {
    let redis_server = RedisServer::start().await?;
    let watched = [Watched { name: "redis", pid: redis_server.process.pid() }];
    let conn = redis::Client::open(redis_server.url.as_str())?.get_multiplexed_async_connection().await?;
    redis::cmd("SET").arg("k").arg("a value").query_async::<()>(&mut conn.clone()).await?;
    let mut samples = Vec::new();
    for &n in concurrency {
        let sample = drive(n, duration, &watched, || {
            let conn = conn.clone();
            async move {
                Box::new(move || {
                    let mut conn = conn.clone();
                    Box::pin(async move { redis::cmd("GET").arg("k").query_async::<Vec<u8>>(&mut conn).await.is_ok() })
                        as BoxFuture<'static, bool>
                }) as Worker
            }
        })
        .await;
        samples.push(sample);
    }
    Ok(samples)
}

struct BenchState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutgoingHttp,
}

/// The hello component makes no outgoing requests; any attempt is denied.
struct NoOutgoingHttp;

impl wasmtime_wasi_http::WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        _request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiView for BenchState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for BenchState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// (b) The component in this process on the host's engine: a fresh instance per request, as
/// the host does, without NATS or HTTP.
pub(crate) async fn in_process(
    wasm: &Path,
    concurrency: &[usize],
    duration: Duration,
) -> wasmtime::Result<Vec<Sample>> {
    let engine = ferry_host::new_engine(&ferry_host::Limits::default())?;
    let mut linker = Linker::<BenchState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let component = wasmtime::component::Component::from_file(&engine, wasm)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
    let watched = [Watched { name: "bench", pid: std::process::id() }];
    let mut samples = Vec::new();
    for &n in concurrency {
        let sample = drive(n, duration, &watched, || {
            let (engine, pre) = (engine.clone(), pre.clone());
            async move {
                Box::new(move || {
                    let (engine, pre) = (engine.clone(), pre.clone());
                    Box::pin(async move { call_in_process(&engine, &pre).await.is_ok() }) as BoxFuture<'static, bool>
                }) as Worker
            }
        })
        .await;
        samples.push(sample);
    }
    Ok(samples)
}

async fn call_in_process(engine: &wasmtime::Engine, pre: &ProxyPre<BenchState>) -> wasmtime::Result<()> {
    let state = BenchState {
        wasi: WasiCtx::builder().build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        hooks: NoOutgoingHttp,
    };
    let mut store = Store::new(engine, state);
    store.set_epoch_deadline(u64::MAX);
    let instance = pre.instantiate_async(&mut store).await?;
    let request = hyper::Request::builder().uri("http://localhost/").body(Empty::<Bytes>::new())?;
    let req = store.data_mut().http().new_incoming_request(Scheme::Http, request)?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let task =
        tokio::spawn(async move { instance.wasi_http_incoming_handler().call_handle(&mut store, req, out).await });
    let response = receiver.await??;
    response.into_body().collect().await?;
    task.await??;
    Ok(())
}
