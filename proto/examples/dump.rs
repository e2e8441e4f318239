//! Prints the example messages of docs/protocol.md: fixed inputs, so the bytes (and MACs) are
//! reproducible test vectors for implementations in other languages.
//!
//! `cargo run -p ferry-proto --example dump`

use std::collections::BTreeMap;

use ferry_proto::{
    RpcError,
    auth::MacKey,
    codec::{encode, hex_dump},
    envelope::{Invocation, InvocationResponse},
    health::HealthAnswer,
    http::{Header, HttpError, HttpErrorCode, HttpRequest, HttpResponse, OutgoingRequest, OutgoingResponse},
    keyvalue::{GetResponse, KeyRequest, SetRequest},
    link::{Link, LinkAck, LinkPut},
    stream::{StreamChunk, StreamPull},
};

fn show(title: &str, bytes: &[u8]) {
    println!("### {title} ({} bytes)\n\n```\n{}\n```\n", bytes.len(), hex_dump(bytes));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = MacKey::from_bytes([0x11; 32]);
    let get = encode(&KeyRequest { bucket: "b".into(), key: "greeting".into() })?;
    show("KeyRequest (wasi:keyvalue/store.get payload)", &get);
    show("SetRequest", &encode(&SetRequest { bucket: "b".into(), key: "k".into(), value: b"hi".to_vec() })?);
    show("GetResponse", &encode(&GetResponse { value: Some(b"hello".to_vec()) })?);

    let mut inv = Invocation::new("my-component", "kv", "default", "wasi:keyvalue/store.get", get);
    inv.id = "0123456789abcdef0123456789abcdef".into();
    inv.issued_at_ms = 1_795_000_000_000;
    inv.set_timeout(std::time::Duration::from_secs(10));
    inv.sign(&key);
    println!("MAC of the invocation below under key 0x11 × 32:\n\n```\n{}\n```\n", hex_dump(&inv.mac));
    show("Invocation (signed)", &inv.encode()?);

    let mut ok = InvocationResponse::ok(inv.id.clone(), encode(&GetResponse { value: Some(b"hello".to_vec()) })?);
    ok.sign(&key);
    show("InvocationResponse (success, signed)", &ok.encode()?);
    let mut err = InvocationResponse::err(inv.id.clone(), RpcError::not_linked("no link"));
    err.sign(&key);
    show("InvocationResponse (error, signed)", &err.encode()?);
    let mut progress = InvocationResponse::progress(inv.id.clone());
    progress.sign(&key);
    show("InvocationResponse (progress message, signed)", &progress.encode()?);

    let mut link = Link::new("my-component", "kv", "wasi", "keyvalue", vec!["store".into()]);
    link.target_config = vec!["redis".into()];
    let put = LinkPut {
        link,
        source_config: BTreeMap::new(),
        target_config: BTreeMap::from([("url".to_owned(), "redis://127.0.0.1:6379".to_owned())]),
        revision: 7,
    };
    show("LinkPut (payload of ferry:link/put)", &encode(&put)?);
    show("LinkAck", &encode(&LinkAck { instance_id: "i1".into(), accepted: true, error: None, pending: false })?);
    show(
        "HealthAnswer",
        &encode(&HealthAnswer {
            provider_id: "kv".into(),
            instance_id: "i1".into(),
            healthy: true,
            message: "ok".into(),
            links: 1,
        })?,
    );
    let request = HttpRequest {
        method: "GET".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_with_query: "/?n=1".into(),
        headers: vec![Header { name: "accept".into(), value: b"*/*".to_vec() }],
        body: Vec::new(),
        body_stream: None,
    };
    show("HttpRequest", &encode(&request)?);
    show(
        "HttpResponse",
        &encode(&HttpResponse { status: 200, headers: vec![], body: b"ok".to_vec(), body_stream: None })?,
    );
    show(
        "OutgoingRequest (wasi:http/outgoing-handler.handle payload)",
        &encode(&OutgoingRequest {
            request: HttpRequest { authority: "api.example.com".into(), scheme: "https".into(), ..request.clone() },
            connect_timeout_ms: None,
            first_byte_timeout_ms: Some(5000),
            between_bytes_timeout_ms: None,
        })?,
    );
    show(
        "OutgoingResponse (refused)",
        &encode(&OutgoingResponse {
            response: None,
            error: Some(HttpError::new(HttpErrorCode::HttpRequestDenied, "not allowed")),
        })?,
    );
    show("StreamPull (chunk 1)", &StreamPull::new("0123456789abcdef0123456789abcdef", 1, false, &key).encode()?);
    show(
        "StreamChunk (chunk 1, last)",
        &StreamChunk::data("0123456789abcdef0123456789abcdef", 1, b"tail".to_vec(), true, &key).encode()?,
    );
    Ok(())
}
