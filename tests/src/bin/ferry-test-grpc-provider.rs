//! A foreign provider for the bridge's end-to-end tests and benchmark, written against the
//! gRPC contract alone (as a provider in another language would be): it accepts every link,
//! keeps key-value data in memory, prints every `Messaging.Publish` on stdout (`published
//! SUBJECT BODY`) and answers every `Messaging.Request` with `stub: BODY`. Being Rust, it costs
//! next to nothing per call, so a benchmark through it measures the bridge itself.
//!
//! Listens on `--listen ADDR` or `FERRY_BRIDGE_LISTEN` (`unix:PATH` or `HOST:PORT`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ferry_proto::grpc::v1::{
    self, key_value_server::KeyValueServer, messaging_server::MessagingServer, provider_server::ProviderServer,
};
use futures::stream;
use tonic::{Request, Response, Status};

type Store = Arc<Mutex<HashMap<(String, String), Vec<u8>>>>;

struct Stub {
    instance_id: String,
    store: Store,
}

fn lock(store: &Store) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<u8>>> {
    store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[tonic::async_trait]
impl v1::provider_server::Provider for Stub {
    async fn put_link(&self, _: Request<v1::PutLinkRequest>) -> Result<Response<v1::PutLinkResponse>, Status> {
        Ok(Response::new(v1::PutLinkResponse { accepted: true, reason: String::new() }))
    }

    async fn delete_link(&self, _: Request<v1::DeleteLinkRequest>) -> Result<Response<v1::DeleteLinkResponse>, Status> {
        Ok(Response::new(v1::DeleteLinkResponse {}))
    }

    async fn health(&self, _: Request<v1::HealthRequest>) -> Result<Response<v1::HealthResponse>, Status> {
        Ok(Response::new(v1::HealthResponse {
            healthy: true,
            message: "ok".into(),
            instance_id: self.instance_id.clone(),
        }))
    }

    async fn shutdown(&self, _: Request<v1::ShutdownRequest>) -> Result<Response<v1::ShutdownResponse>, Status> {
        Ok(Response::new(v1::ShutdownResponse {}))
    }
}

#[tonic::async_trait]
impl v1::key_value_server::KeyValue for Stub {
    async fn get(&self, request: Request<v1::KeyRequest>) -> Result<Response<v1::GetResponse>, Status> {
        // The trace the bridge forwarded, for the test that checks it does.
        let traceparent = request.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let r = request.into_inner();
        if r.key == "traceparent-seen" {
            return Ok(Response::new(v1::GetResponse { value: traceparent.map(String::into_bytes) }));
        }
        Ok(Response::new(v1::GetResponse { value: lock(&self.store).get(&(r.bucket, r.key)).cloned() }))
    }

    async fn set(&self, request: Request<v1::SetRequest>) -> Result<Response<v1::Empty>, Status> {
        let r = request.into_inner();
        lock(&self.store).insert((r.bucket, r.key), r.value);
        Ok(Response::new(v1::Empty {}))
    }

    async fn delete(&self, request: Request<v1::KeyRequest>) -> Result<Response<v1::Empty>, Status> {
        let r = request.into_inner();
        lock(&self.store).remove(&(r.bucket, r.key));
        Ok(Response::new(v1::Empty {}))
    }

    async fn exists(&self, request: Request<v1::KeyRequest>) -> Result<Response<v1::ExistsResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(v1::ExistsResponse { exists: lock(&self.store).contains_key(&(r.bucket, r.key)) }))
    }

    async fn list_keys(&self, request: Request<v1::ListKeysRequest>) -> Result<Response<v1::ListKeysResponse>, Status> {
        let bucket = request.into_inner().bucket;
        let mut keys: Vec<String> =
            lock(&self.store).keys().filter(|(b, _)| *b == bucket).map(|(_, k)| k.clone()).collect();
        keys.sort();
        Ok(Response::new(v1::ListKeysResponse { keys, cursor: None }))
    }

    async fn increment(
        &self,
        request: Request<v1::IncrementRequest>,
    ) -> Result<Response<v1::IncrementResponse>, Status> {
        let r = request.into_inner();
        let mut store = lock(&self.store);
        let entry = store.entry((r.bucket, r.key.clone())).or_insert_with(|| b"0".to_vec());
        let value = std::str::from_utf8(entry)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| Status::invalid_argument(format!("value of {:?} is not a decimal unsigned integer", r.key)))?
            .checked_add(r.delta)
            .ok_or_else(|| Status::invalid_argument("increment overflows"))?;
        *entry = value.to_string().into_bytes();
        Ok(Response::new(v1::IncrementResponse { value }))
    }

    async fn get_many(&self, request: Request<v1::KeysRequest>) -> Result<Response<v1::GetManyResponse>, Status> {
        let r = request.into_inner();
        let store = lock(&self.store);
        let items = r
            .keys
            .into_iter()
            .map(|key| v1::MaybeValue { value: store.get(&(r.bucket.clone(), key.clone())).cloned(), key })
            .collect();
        Ok(Response::new(v1::GetManyResponse { items }))
    }

    async fn set_many(&self, request: Request<v1::SetManyRequest>) -> Result<Response<v1::Empty>, Status> {
        let r = request.into_inner();
        let mut store = lock(&self.store);
        for item in r.items {
            store.insert((r.bucket.clone(), item.key), item.value);
        }
        Ok(Response::new(v1::Empty {}))
    }

    async fn delete_many(&self, request: Request<v1::KeysRequest>) -> Result<Response<v1::Empty>, Status> {
        let r = request.into_inner();
        let mut store = lock(&self.store);
        for key in r.keys {
            store.remove(&(r.bucket.clone(), key));
        }
        Ok(Response::new(v1::Empty {}))
    }
}

#[tonic::async_trait]
impl v1::messaging_server::Messaging for Stub {
    async fn publish(&self, request: Request<v1::PublishRequest>) -> Result<Response<v1::Empty>, Status> {
        let message = request.into_inner().message.ok_or_else(|| Status::invalid_argument("no message"))?;
        println!("published {} {}", message.subject, String::from_utf8_lossy(&message.body));
        Ok(Response::new(v1::Empty {}))
    }

    async fn request(&self, request: Request<v1::RequestRequest>) -> Result<Response<v1::BrokerMessage>, Status> {
        let r = request.into_inner();
        if r.subject.starts_with("fail.") {
            return Err(Status::unavailable(format!("no responders on {}", r.subject)));
        }
        let body = [b"stub: ".as_slice(), &r.body].concat();
        Ok(Response::new(v1::BrokerMessage { subject: r.subject, body, reply_to: None }))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("FERRY_BRIDGE_LISTEN").ok())
        .ok_or_else(|| anyhow::anyhow!("say where to listen: --listen or FERRY_BRIDGE_LISTEN"))?;
    let (instance_id, store) = (uuid(), Store::default());
    let stub = || Stub { instance_id: instance_id.clone(), store: store.clone() };
    let router = tonic::transport::Server::builder()
        .add_service(ProviderServer::new(stub()))
        .add_service(KeyValueServer::new(stub()))
        .add_service(MessagingServer::new(stub()));
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    if let Some(path) = listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        eprintln!("serving on {listen}");
        let incoming = stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
        router.serve_with_incoming_shutdown(incoming, shutdown).await?;
    } else {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        eprintln!("serving on {listen}");
        let incoming = stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
        router.serve_with_incoming_shutdown(incoming, shutdown).await?;
    }
    eprintln!("stopped");
    Ok(())
}

/// An instance id: the process id and start time are unique enough for a stub.
fn uuid() -> String {
    format!("{}-{}", std::process::id(), ferry_proto::time::now_ms())
}
