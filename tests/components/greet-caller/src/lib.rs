//! Test component: on any HTTP request it calls every function of the
//! `ferry-test:greeter/greet` interface it imports (another component exports it) and answers
//! with what came back, as JSON: `{"ok": {…}}`; `/slow` calls only its slow function.

mod bindings {
    wit_bindgen::generate!({ path: "../greeter/wit", world: "caller" });
}

use bindings::ferry_test::greeter::greet::{self, Mood, Perms, Person, Shape};
use serde_json::{Value, json};
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Component;

wasi::http::proxy::export!(Component);

impl wasi::exports::http::incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let answer = match request.path_with_query().as_deref() {
            // A callee slower than the host's capability-call timeout.
            Some("/slow") => json!({ "ok": { "slow": greet::slow(3000) } }),
            _ => json!({ "ok": call_everything() }),
        };
        respond(out, 200, &serde_json::to_vec(&answer).unwrap_or_default());
    }
}

fn call_everything() -> Value {
    let ada = Person { name: "Ada".into(), age: 36, tags: vec!["math".into(), "engines".into()] };
    let baby = Person { name: "Bo".into(), age: 0, tags: vec![] };
    let big: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let reversed = greet::reverse_bytes(&big);
    let (o1, f1, c1) = greet::pass_through(Some(None), Perms::READ | Perms::WRITE, 'λ');
    let (o2, f2, _) = greet::pass_through(Some(Some(7)), Perms::empty(), 'x');
    let (o3, _, _) = greet::pass_through(None, Perms::READ, 'y');
    json!({
        "hello": greet::hello("Ferry"),
        "describe": format!("{:?}", greet::describe(&ada, Shape::Circle(1.5), Mood::Happy)),
        "describe_err": format!("{:?}", greet::describe(&baby, Shape::Point, Mood::Sad)),
        "describe_square": format!("{:?}", greet::describe(&ada, Shape::Square(4), Mood::Sad)),
        "sum": greet::sum(&[1, -2, 40, i64::MAX - 39]),
        "bytes": reversed.len() == big.len() && reversed.iter().rev().eq(big.iter()),
        "options": [format!("{o1:?}"), format!("{o2:?}"), format!("{o3:?}")],
        "flags": [f1 == (Perms::READ | Perms::WRITE), f2 == Perms::empty()],
        "char": c1.to_string(),
    })
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
