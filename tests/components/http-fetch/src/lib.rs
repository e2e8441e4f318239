//! Test component: each HTTP request carries one JSON command (`{"url": …, "method": …}`) that
//! the component sends on with `wasi:http/outgoing-handler`, its body `send_len` bytes of a
//! fixed pattern written in pieces; the answer is JSON: the response's status, headers, length
//! and SHA-256 (read in pieces, never held whole) as `{"ok": …}`, or `{"error": "<error-code>"}`
//! (status 502).

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse, RequestOptions, ResponseOutparam,
    Scheme,
};
use wasi::io::streams::StreamError;

struct Component;

wasi::http::proxy::export!(Component);

impl wasi::exports::http::incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let body = read_all(&request);
        let (status, answer) = match serde_json::from_slice::<Value>(&body) {
            Ok(cmd) => match fetch(&cmd) {
                Ok(value) => (200, json!({ "ok": value })),
                Err(err) => (502, json!({ "error": err })),
            },
            Err(err) => (400, json!({ "error": format!("bad command: {err}") })),
        };
        respond(out, status, &serde_json::to_vec(&answer).unwrap_or_default());
    }
}

fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31).wrapping_add(offset >> 13) % 251) as u8
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fetch(cmd: &Value) -> Result<Value, String> {
    let url = cmd["url"].as_str().ok_or("no url")?;
    let (scheme, rest) = url.split_once("://").ok_or("url without scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    if let Some(list) = cmd["headers"].as_array() {
        for pair in list {
            let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) else { continue };
            headers.append(name, value.as_bytes()).map_err(|e| format!("header {name}: {e:?}"))?;
        }
    }
    let request = OutgoingRequest::new(headers);
    let method = match cmd["method"].as_str().unwrap_or("GET") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    };
    request.set_method(&method).map_err(|()| "method refused")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme refused")?;
    request.set_authority(Some(authority)).map_err(|()| "authority refused")?;
    request.set_path_with_query(Some(path)).map_err(|()| "path refused")?;
    let options = RequestOptions::new();
    if let Some(ms) = cmd["first_byte_timeout_ms"].as_u64() {
        options.set_first_byte_timeout(Some(ms * 1_000_000)).map_err(|()| "timeout refused")?;
    }
    let body = request.body().map_err(|()| "no request body")?;
    let future = outgoing_handler::handle(request, Some(options)).map_err(|e| format!("{e:?}"))?;

    // The body goes out while the request is on its way.
    let send_len = cmd["send_len"].as_u64().unwrap_or(0);
    let mut write_failed = None;
    {
        let stream = body.write().map_err(|()| "no body stream")?;
        let mut offset = 0u64;
        let mut piece = Vec::with_capacity(4096);
        while offset < send_len {
            piece.clear();
            let end = (offset + 4096).min(send_len);
            piece.extend((offset..end).map(pattern));
            if let Err(e) = stream.blocking_write_and_flush(&piece) {
                write_failed = Some(format!("request body write failed at byte {offset}: {e:?}"));
                break;
            }
            offset = end;
        }
    }
    if write_failed.is_none() {
        OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    }

    // A request that failed says why on its response, which the failed write only hints at.
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(format!("{code:?}")),
        Some(Err(())) => return Err("response taken twice".into()),
        None => return Err("no response".into()),
    };
    if let Some(failed) = write_failed {
        return Err(failed);
    }
    let status = response.status();
    let headers: Vec<Value> = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| json!([name, String::from_utf8_lossy(&value)]))
        .collect();
    let incoming = response.consume().map_err(|()| "no response body")?;
    let stream = incoming.stream().map_err(|()| "no response body stream")?;
    let (mut len, mut sha) = (0u64, Sha256::new());
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                len += chunk.len() as u64;
                sha.update(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("response body read failed: {}", e.to_debug_string()));
            }
        }
    }
    Ok(json!({ "status": status, "headers": headers, "len": len, "sha256": hex(&sha.finalize()) }))
}

fn read_all(request: &IncomingRequest) -> Vec<u8> {
    let mut buf = Vec::new();
    let Ok(body) = request.consume() else { return buf };
    if let Ok(stream) = body.stream() {
        while let Ok(chunk) = stream.blocking_read(65536) {
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
