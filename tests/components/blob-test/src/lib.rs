//! Test component: each HTTP request carries one JSON command (`{"op": "write", …}`) carried
//! out with `wasi:blobstore`; the answer is `{"ok": …}` (200) or `{"error": "…"}` (500).
//! Large objects are written from, and hashed into, a fixed byte pattern in 64 KiB pieces, so
//! the component never holds a whole object.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "ferry:host/blobstore",
        generate_all,
    });
}

use bindings::wasi::blobstore::{
    blobstore,
    container::Container,
    types::{IncomingValue, ObjectId, OutgoingValue},
};
use bindings::wasi::io::streams::StreamError;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Component;

wasi::http::proxy::export!(Component);

impl wasi::exports::http::incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let body = read_request(&request);
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

fn s<'a>(cmd: &'a Value, field: &str) -> &'a str {
    cmd.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn n(cmd: &Value, field: &str, default: u64) -> u64 {
    cmd.get(field).and_then(Value::as_u64).unwrap_or(default)
}

/// The byte at `offset` of the test pattern (the test computes the same).
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31).wrapping_add(offset >> 13) % 251) as u8
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn container(cmd: &Value) -> Result<Container, String> {
    blobstore::get_container(&s(cmd, "container").to_owned())
}

/// Write an object: `text`, or `size` bytes of the pattern. `order` says when `write-data` is
/// called: `data_first` (the default: before the data, so any size streams), `body_first`
/// (after all of it, as components built for hosts that buffer do), or `abandon` (before the
/// data, and the value is then dropped without `finish`).
fn write(container: &Container, object: &str, cmd: &Value) -> Result<(), String> {
    let order = match s(cmd, "order") {
        "" => "data_first",
        order => order,
    };
    let value = OutgoingValue::new_outgoing_value();
    let stream = value.outgoing_value_write_body().map_err(|()| "no body stream".to_string())?;
    if order != "body_first" {
        container.write_data(&object.to_owned(), &value)?;
    }
    let write_all = |bytes: &[u8]| -> Result<(), String> {
        for piece in bytes.chunks(4096) {
            stream.blocking_write_and_flush(piece).map_err(|e| format!("write failed: {e:?}"))?;
        }
        Ok(())
    };
    if let Some(text) = cmd.get("text").and_then(Value::as_str) {
        write_all(text.as_bytes())?;
    } else {
        let size = n(cmd, "size", 0);
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0;
        while offset < size {
            let len = (size - offset).min(buf.len() as u64) as usize;
            for (i, b) in buf[..len].iter_mut().enumerate() {
                *b = pattern(offset + i as u64);
            }
            write_all(&buf[..len])?;
            offset += len as u64;
        }
    }
    drop(stream);
    match order {
        "abandon" => {
            drop(value);
            Ok(())
        }
        "body_first" => {
            container.write_data(&object.to_owned(), &value)?;
            OutgoingValue::finish(value)
        }
        _ => OutgoingValue::finish(value),
    }
}

/// Read a range, synchronously as text or as a stream hashed piece by piece.
fn read(container: &Container, cmd: &Value) -> Result<Value, String> {
    let value: IncomingValue =
        container.get_data(&s(cmd, "object").to_owned(), n(cmd, "start", 0), n(cmd, "end", u64::MAX))?;
    let size = value.size();
    if s(cmd, "mode") == "sync" {
        let data = IncomingValue::incoming_value_consume_sync(value)?;
        return Ok(json!({ "size": size, "len": data.len(), "text": String::from_utf8_lossy(&data) }));
    }
    let stream = IncomingValue::incoming_value_consume_async(value)?;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(bytes) => {
                len += bytes.len() as u64;
                hasher.update(&bytes);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(err)) => {
                return Err(format!("read failed: {}", err.to_debug_string()));
            }
        }
    }
    Ok(json!({ "size": size, "len": len, "sha256": hex(&hasher.finalize()) }))
}

fn id(value: &Value) -> ObjectId {
    ObjectId { container: s(value, "container").to_owned(), object: s(value, "object").to_owned() }
}

fn run(cmd: &Value) -> Result<Value, String> {
    let name = s(cmd, "container").to_owned();
    match s(cmd, "op") {
        "create" => blobstore::create_container(&name).map(|c| json!(c.name().unwrap_or_default())),
        "get" => blobstore::get_container(&name).map(|c| json!(c.name().unwrap_or_default())),
        "delete_container" => blobstore::delete_container(&name).map(|()| json!(null)),
        "exists" => blobstore::container_exists(&name).map(|e| json!(e)),
        "container_info" => container(cmd)?.info().map(|i| json!({ "name": i.name, "created_at": i.created_at })),
        "write" => write(&container(cmd)?, s(cmd, "object"), cmd).map(|()| json!(null)),
        "write_many" => {
            let c = container(cmd)?;
            for i in 0..n(cmd, "count", 0) {
                write(&c, &format!("{}{i:05}", s(cmd, "prefix")), &json!({ "text": format!("v{i}") }))?;
            }
            Ok(json!(null))
        }
        "write_pair_body_first" => {
            // Two values written in full before either calls write-data: both spool at once.
            let c = container(cmd)?;
            let size = n(cmd, "size", 0) as usize;
            let data = vec![7u8; size];
            let values: Vec<OutgoingValue> = (0..2).map(|_| OutgoingValue::new_outgoing_value()).collect();
            for value in &values {
                let stream = value.outgoing_value_write_body().map_err(|()| "no body stream".to_string())?;
                for piece in data.chunks(4096) {
                    stream.blocking_write_and_flush(piece).map_err(|e| format!("write failed: {e:?}"))?;
                }
            }
            for (i, value) in values.into_iter().enumerate() {
                c.write_data(&format!("{}{i}", s(cmd, "prefix")), &value)?;
                OutgoingValue::finish(value)?;
            }
            Ok(json!(null))
        }
        "read" => read(&container(cmd)?, cmd),
        "list" => {
            let names = container(cmd)?.list_objects()?;
            let page = n(cmd, "page", 100);
            let mut all = Vec::new();
            let mut pages = 0;
            loop {
                let (mut batch, end) = names.read_stream_object_names(page)?;
                pages += 1;
                all.append(&mut batch);
                if end {
                    break;
                }
            }
            Ok(json!({ "names": all, "pages": pages }))
        }
        "skip" => {
            let names = container(cmd)?.list_objects()?;
            let (skipped, end) = names.skip_stream_object_names(n(cmd, "count", 0))?;
            let (next, _) = names.read_stream_object_names(1)?;
            Ok(json!({ "skipped": skipped, "end": end, "next": next }))
        }
        "has" => container(cmd)?.has_object(&s(cmd, "object").to_owned()).map(|h| json!(h)),
        "info" => container(cmd)?
            .object_info(&s(cmd, "object").to_owned())
            .map(|i| json!({ "name": i.name, "container": i.container, "size": i.size, "created_at": i.created_at })),
        "delete" => container(cmd)?.delete_object(&s(cmd, "object").to_owned()).map(|()| json!(null)),
        "delete_many" => {
            let objects: Vec<String> = cmd
                .get("objects")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            container(cmd)?.delete_objects(&objects).map(|()| json!(null))
        }
        "clear" => container(cmd)?.clear().map(|()| json!(null)),
        "copy" => blobstore::copy_object(&id(&cmd["src"]), &id(&cmd["dest"])).map(|()| json!(null)),
        "move" => blobstore::move_object(&id(&cmd["src"]), &id(&cmd["dest"])).map(|()| json!(null)),
        other => Err(format!("unknown op {other:?}")),
    }
}

fn read_request(request: &IncomingRequest) -> Vec<u8> {
    let mut buf = Vec::new();
    let Ok(body) = request.consume() else { return buf };
    if let Ok(stream) = body.stream() {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            buf.extend_from_slice(&chunk);
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
