//! `ferry ctl watch`: the lattice's events as they happen, one a line — `TIME EVENT SOURCE
//! REQUEST DATA` for people, the CloudEvent itself with `--json` — until Ctrl-C.

use std::io::Write as _;

use ferry_proto::{event::CloudEvent, subject};
use futures::StreamExt as _;

use super::Outcome;

pub(crate) async fn run(
    nats: &async_nats::Client,
    lattice: &str,
    events: &[String],
    json: bool,
) -> anyhow::Result<Outcome> {
    let subjects = if events.is_empty() {
        vec![subject::all_events(lattice)?]
    } else {
        events.iter().map(|e| subject::event(lattice, e)).collect::<Result<_, _>>()?
    };
    let mut subscriptions = Vec::new();
    for subject in subjects {
        subscriptions.push(nats.subscribe(subject).await?);
    }
    nats.flush().await?;
    let mut messages = futures::stream::select_all(subscriptions);
    let shutdown = ferry_lattice::shutdown_signal();
    tokio::pin!(shutdown);
    let mut out = std::io::stdout();
    loop {
        let msg = tokio::select! {
            () = &mut shutdown => break,
            msg = messages.next() => match msg { Some(msg) => msg, None => break },
        };
        let line = if json {
            String::from_utf8_lossy(&msg.payload).into_owned()
        } else {
            match serde_json::from_slice::<CloudEvent>(&msg.payload) {
                Ok(e) => {
                    let name = e.event_type.strip_prefix("ferry.").unwrap_or(&e.event_type);
                    let request = e.data.get("request_id").and_then(|r| r.as_str()).filter(|r| !r.is_empty());
                    format!(
                        "{} {name} {} {} {}",
                        e.time,
                        super::table::short(&e.source, 12),
                        request.unwrap_or("-"),
                        e.data
                    )
                }
                Err(err) => format!("(unreadable event on {}: {err})", msg.subject),
            }
        };
        // A closed pipe (`| head`) ends the watch.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(Outcome::silent())
}
