//! Test component for the messaging provider.
//!
//! Messages (`wasmcloud:messaging/handler`): a subject starting with `fail.` makes the handler
//! return an error; any other message is reported on `seen.{subject}` with its body, and
//! answered on its reply-to (if any) with `{name}: {body}`, `name` from the component's config.
//!
//! HTTP (`wasi:http/incoming-handler`): `POST /publish?subject=S` publishes the body on S;
//! `POST /request?subject=S&timeout=MS` requests and answers with the reply's body (500 with
//! the error otherwise).

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "ferry:host/messaging-component",
        generate_all,
    });
}

use bindings::exports::wasmcloud::messaging::handler::Guest as Handler;
use bindings::wasmcloud::messaging::{consumer, types::BrokerMessage};
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Component;

bindings::export!(Component with_types_in bindings);
wasi::http::proxy::export!(Component);

impl Handler for Component {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        if msg.subject.starts_with("fail.") {
            return Err(format!("handler failed on purpose for {}", msg.subject));
        }
        consumer::publish(&BrokerMessage {
            subject: format!("seen.{}", msg.subject),
            body: msg.body.clone(),
            reply_to: None,
        })?;
        if let Some(reply_to) = msg.reply_to {
            let name = bindings::wasi::config::store::get("name").ok().flatten().unwrap_or_else(|| "component".into());
            let mut body = format!("{name}: ").into_bytes();
            body.extend_from_slice(&msg.body);
            consumer::publish(&BrokerMessage { subject: reply_to, body, reply_to: None })?;
        }
        Ok(())
    }
}

impl wasi::exports::http::incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query.split_once('?').unwrap_or((&path_with_query, ""));
        let subject = param(query, "subject").unwrap_or_default().to_owned();
        let body = read_body(&request);
        let (status, answer) = match path {
            "/publish" => match consumer::publish(&BrokerMessage { subject, body, reply_to: None }) {
                Ok(()) => (200, b"published".to_vec()),
                Err(err) => (500, err.into_bytes()),
            },
            "/request" => {
                let timeout = param(query, "timeout").and_then(|t| t.parse().ok()).unwrap_or(1000);
                match consumer::request(&subject, &body, timeout) {
                    Ok(reply) => (200, reply.body),
                    Err(err) => (500, err.into_bytes()),
                }
            }
            _ => (404, b"unknown command".to_vec()),
        };
        respond(out, status, &answer);
    }
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
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
    let response = OutgoingResponse::new(Fields::new());
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
