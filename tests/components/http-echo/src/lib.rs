//! Test component for the http-server provider. Routes (by the last path segment):
//!
//! * `/echo` — any method: the body streamed back; `x-method`, `x-uri` and every request header
//!   as `x-echo-{name}` (repeats kept); `content-type` copied.
//! * `/download?bytes=N[&length]` — N bytes of a fixed pattern, streamed (with content-length
//!   when `length` is given).
//! * `/upload` — reads the body as a stream; answers `{sha256 hex} {byte count}`.
//! * `/status?code=N` — an empty response with that status.
//! * `/cookies` — two `set-cookie` headers.
//! * `/whoami` — the `name` value of the component's config.
//! * `/trap` — panics. `/sleep?ms=N` — sleeps, then answers.
//! * `/alloc?mb=N&ms=M` — holds N MiB of memory for M ms; 507 when the allocation fails.
//! * `/resources?n=N` — creates and holds N header maps (resources).
//! * anything else — `hello`.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "ferry:host/config",
        generate_all,
    });
}

use sha2::{Digest as _, Sha256};
use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

struct Component;

wasi::http::proxy::export!(Component);

impl wasi::exports::http::incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".into());
        let (path, query) = path_with_query.split_once('?').unwrap_or((&path_with_query, ""));
        // Routes are matched on the last segment, so a route prefix in front changes nothing.
        let route = format!("/{}", path.rsplit('/').next().unwrap_or_default());
        match route.as_str() {
            "/echo" => echo(&request, &path_with_query, out),
            "/download" => {
                let bytes = param(query, "bytes").and_then(|v| v.parse().ok()).unwrap_or(0u64);
                download(out, bytes, param(query, "length").is_some());
            }
            "/upload" => {
                let (hash, len) = match request.consume().ok().and_then(|b| b.stream().ok().map(|s| (b, s))) {
                    Some((_body, stream)) => hash_stream(&stream),
                    None => hash_stream_empty(),
                };
                respond(out, 200, &[], format!("{hash} {len}").as_bytes());
            }
            "/status" => {
                let code = param(query, "code").and_then(|v| v.parse().ok()).unwrap_or(200);
                respond(out, code, &[], b"");
            }
            "/cookies" => {
                respond(out, 200, &[("set-cookie", b"a=1".to_vec()), ("set-cookie", b"b=2".to_vec())], b"cookies")
            }
            "/whoami" => {
                let name = bindings::wasi::config::store::get("name").ok().flatten().unwrap_or_default();
                respond(out, 200, &[], name.as_bytes());
            }
            "/trap" => panic!("trap requested"),
            "/sleep" => {
                let ms = param(query, "ms").and_then(|v| v.parse().ok()).unwrap_or(0u64);
                wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, &[], b"awake");
            }
            "/spin" => {
                // Computes for `ms` milliseconds without waiting on anything.
                let ms = param(query, "ms").and_then(|v| v.parse().ok()).unwrap_or(0u64);
                let until = wasi::clocks::monotonic_clock::now() + ms * 1_000_000;
                let mut turns = 0u64;
                while wasi::clocks::monotonic_clock::now() < until {
                    turns = turns.wrapping_add(1);
                }
                respond(out, 200, &[], format!("spun {turns}").as_bytes());
            }
            "/alloc" => {
                // Holds `mb` MiB of touched memory for `ms` milliseconds.
                let mb = param(query, "mb").and_then(|v| v.parse().ok()).unwrap_or(0usize);
                let ms = param(query, "ms").and_then(|v| v.parse().ok()).unwrap_or(0u64);
                let mut held: Vec<u8> = Vec::new();
                if held.try_reserve_exact(mb << 20).is_err() {
                    respond(out, 507, &[], b"out of memory");
                    return;
                }
                held.resize(mb << 20, 1);
                wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, &[], format!("held {}", held.iter().step_by(4096).count()).as_bytes());
            }
            "/resources" => {
                // Creates `n` header maps and holds them all.
                let n = param(query, "n").and_then(|v| v.parse().ok()).unwrap_or(0usize);
                let held: Vec<Fields> = (0..n).map(|_| Fields::new()).collect();
                respond(out, 200, &[], format!("created {}", held.len()).as_bytes());
            }
            _ => respond(out, 200, &[], b"hello"),
        }
    }
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

fn echo(request: &IncomingRequest, uri: &str, out: ResponseOutparam) {
    let headers = Fields::new();
    let _ = headers.append("x-method", method_name(&request.method()).as_bytes());
    let _ = headers.append("x-uri", uri.as_bytes());
    for (name, value) in request.headers().entries() {
        if name == "content-type" {
            let _ = headers.append("content-type", &value);
        }
        let _ = headers.append(&format!("x-echo-{name}"), &value);
    }
    let response = OutgoingResponse::new(headers);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if let (Ok(body), Ok(output)) = (request.consume(), outgoing.write()) {
        if let Ok(input) = body.stream() {
            loop {
                match input.blocking_read(64 * 1024) {
                    Ok(bytes) => {
                        if write_all(&output, &bytes).is_err() {
                            return;
                        }
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(_)) => return,
                }
            }
            drop(input);
        }
        let _ = output.blocking_flush();
        drop(output);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// The byte at `offset` of the download pattern (the test computes the same).
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31).wrapping_add(offset >> 13) % 251) as u8
}

fn download(out: ResponseOutparam, bytes: u64, with_length: bool) {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"application/octet-stream");
    if with_length {
        let _ = headers.append("content-length", bytes.to_string().as_bytes());
    }
    let response = OutgoingResponse::new(headers);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(output) = outgoing.write() {
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0;
        while offset < bytes {
            let n = (bytes - offset).min(buf.len() as u64) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(offset + i as u64);
            }
            if write_all(&output, &buf[..n]).is_err() {
                return;
            }
            offset += n as u64;
        }
        let _ = output.blocking_flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

fn hash_stream(input: &InputStream) -> (String, u64) {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(bytes) => {
                len += bytes.len() as u64;
                hasher.update(&bytes);
            }
            Err(_) => break,
        }
    }
    (hex(&hasher.finalize()), len)
}

fn hash_stream_empty() -> (String, u64) {
    (hex(&Sha256::digest(b"")), 0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_all(output: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let ready = output.check_write()? as usize;
        let n = ready.min(bytes.len());
        if n == 0 {
            output.subscribe().block();
            continue;
        }
        output.write(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    Ok(())
}

fn respond(out: ResponseOutparam, status: u16, extra: &[(&str, Vec<u8>)], body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"text/plain");
    for (name, value) in extra {
        let _ = headers.append(name, value);
    }
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if !body.is_empty()
        && let Ok(output) = outgoing.write()
    {
        let _ = write_all(&output, body);
        let _ = output.blocking_flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
