//! Ferry's sample component: counts the views of each path in `wasi:keyvalue` and answers
//! with the count. Built for wasm32-wasip2; runs unchanged on any host with the standard
//! key-value and HTTP interfaces.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "ferry:host/component",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, store};
use bindings::wasi::logging::logging::{Level, log};
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Counter;

wasi::http::proxy::export!(Counter);

impl wasi::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let path = path.split('?').next().unwrap_or("/").to_owned();
        let (status, body) = match count(&path) {
            Ok(n) => {
                (200, format!("Hello from Ferry! {path} has been viewed {n} time{}.\n", if n == 1 { "" } else { "s" }))
            }
            Err(err) => {
                log(Level::Error, "http-counter", &format!("key-value failed: {err}"));
                (503, format!("key-value unavailable: {err}\n"))
            }
        };
        respond(out, status, body.as_bytes());
    }
}

fn count(path: &str) -> Result<u64, String> {
    let bucket = store::open("counter").map_err(describe)?;
    atomics::increment(&bucket, &format!("views:{path}"), 1).map_err(describe)
}

fn describe(err: store::Error) -> String {
    match err {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(message) => message,
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
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
