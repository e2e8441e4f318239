//! Test component: each HTTP request carries one JSON command (`{"op": "set", …}`) that the
//! component carries out with `wasi:keyvalue`, `wasi:config` and `wasmcloud:bus`; the answer is
//! JSON: `{"ok": …}` with status 200, or `{"error": "…"}` with status 500.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "ferry:host/component",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use bindings::wasmcloud::bus2_0_0::lattice;
use serde_json::{Value, json};
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasi::io::streams::StreamError;

struct Component;

wasi::http::proxy::export!(Component);

impl wasi::exports::http::incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let body = read_body(&request);
        let (status, answer) = match serde_json::from_slice::<Value>(&body) {
            Ok(cmd) => match run(&cmd) {
                Ok(value) => (200, json!({ "ok": value })),
                Err(err) => (500, json!({ "error": err })),
            },
            Err(err) => (400, json!({ "error": format!("bad command: {err}") })),
        };
        respond(out, status, &serde_json::to_vec(&answer).unwrap_or_default());
    }
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut buf = Vec::new();
    let Ok(body) = request.consume() else { return buf };
    if let Ok(stream) = body.stream() {
        loop {
            match stream.blocking_read(65536) {
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => break,
            }
        }
    }
    buf
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"application/json".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

fn s<'a>(cmd: &'a Value, field: &str) -> &'a str {
    cmd.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn kv_err(err: store::Error) -> String {
    match err {
        store::Error::NoSuchStore => "no-such-store".into(),
        store::Error::AccessDenied => "access-denied".into(),
        store::Error::Other(msg) => msg,
    }
}

fn strings(cmd: &Value, field: &str) -> Vec<String> {
    cmd.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn run(cmd: &Value) -> Result<Value, String> {
    if let Some(link) = cmd.get("link").and_then(Value::as_str) {
        let interfaces =
            ["store", "atomics", "batch"].map(|i| lattice::CallTargetInterface::new("wasi", "keyvalue", i));
        lattice::set_link_name(link, interfaces.into_iter().collect())?;
    }
    let op = s(cmd, "op");
    if op == "noop" {
        // No capability call at all: the benchmark's baseline for this component.
        return Ok(Value::Null);
    }
    if op == "trap" {
        panic!("trap requested by the test");
    }
    if op == "config" {
        return bindings::wasi::config::store::get(s(cmd, "key")).map(|v| json!(v)).map_err(|e| format!("{e:?}"));
    }
    let bucket = store::open(s(cmd, "bucket")).map_err(kv_err)?;
    let key = s(cmd, "key");
    match op {
        "open" => Ok(Value::Null),
        "get" => Ok(json!(bucket.get(key).map_err(kv_err)?.map(|v| String::from_utf8_lossy(&v).into_owned()))),
        "set" => bucket.set(key, s(cmd, "value").as_bytes()).map(|()| Value::Null).map_err(kv_err),
        "delete" => bucket.delete(key).map(|()| Value::Null).map_err(kv_err),
        "exists" => bucket.exists(key).map(|b| json!(b)).map_err(kv_err),
        "list" => {
            let (mut keys, mut pages, mut cursor) = (Vec::new(), 0, None);
            loop {
                let page = bucket.list_keys(cursor).map_err(kv_err)?;
                pages += 1;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Ok(json!({ "keys": keys, "pages": pages }))
        }
        "increment" => {
            let delta = cmd.get("delta").and_then(Value::as_u64).unwrap_or(1);
            atomics::increment(&bucket, key, delta).map(|v| json!(v)).map_err(kv_err)
        }
        "get_many" => {
            let found = batch::get_many(&bucket, &strings(cmd, "keys")).map_err(kv_err)?;
            Ok(json!(
                found.into_iter().map(|e| e.map(|(k, v)| json!([k, String::from_utf8_lossy(&v)]))).collect::<Vec<_>>()
            ))
        }
        "set_many" => {
            let items: Vec<(String, Vec<u8>)> = cmd
                .get("items")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().as_bytes().to_vec())).collect()
                })
                .unwrap_or_default();
            batch::set_many(&bucket, &items).map(|()| Value::Null).map_err(kv_err)
        }
        "delete_many" => batch::delete_many(&bucket, &strings(cmd, "keys")).map(|()| Value::Null).map_err(kv_err),
        other => Err(format!("unknown op {other:?}")),
    }
}
