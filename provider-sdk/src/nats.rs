//! NATS connections as Ferry makes them, and knowing when NATS has taken our subscriptions in.
//!
//! Every connection is made from [`connect_options`]: async-nats's own request timeout (10 s)
//! is off, because every Ferry request carries its own deadline and must be able to wait for
//! exactly that long, shorter or longer.
//!
//! A client's `flush` only empties its socket buffer; the server may not have processed the
//! subscriptions yet, and a request sent on another connection in that moment meets "no
//! responders". A process that announces it is ready (a host's component start, a provider's
//! "ready") first makes one round trip through the server on the same connection: the server
//! handles one connection's operations in order, so once the round trip returns, every earlier
//! subscription is live.

use std::time::Duration;

use futures::StreamExt as _;

use crate::SdkError;

/// Options for a Ferry connection named `name` (shown by the server's monitoring).
pub fn connect_options(name: impl Into<String>) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new().name(name.into()).request_timeout(None)
}

/// [`connect_options`], and a handle that reports each time the connection is established again,
/// so what a process keeps in step with the server (its view of the lattice bucket) can resync.
pub fn connect_options_tracked(name: impl Into<String>) -> (async_nats::ConnectOptions, Reconnects) {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let options = connect_options(name).event_callback(move |event| {
        let tx = tx.clone();
        async move {
            match event {
                async_nats::Event::Connected => {
                    tx.send_modify(|n| *n += 1);
                }
                async_nats::Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
                _ => {}
            }
        }
    });
    (options, Reconnects { rx })
}

/// Reports connections established since it last looked. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reconnects {
    rx: tokio::sync::watch::Receiver<u64>,
}

impl Reconnects {
    /// Forget connections made so far (the first one, typically).
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Wait for the next connection; never returns once the connection is gone for good.
    pub async fn next(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Longest wait for the round trip.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// Return once the server has processed every subscription `client` made before this call.
///
/// # Errors
/// [`SdkError::Nats`] when the connection fails or the server does not answer within 10 s.
pub async fn sync_subscriptions(client: &async_nats::Client) -> Result<(), SdkError> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.map_err(SdkError::nats)?;
    client.publish(inbox, bytes::Bytes::new()).await.map_err(SdkError::nats)?;
    client.flush().await.map_err(SdkError::nats)?;
    let answered = tokio::time::timeout(ROUND_TRIP_TIMEOUT, echo.next()).await;
    let _ = echo.unsubscribe().await;
    match answered {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(SdkError::Nats("the connection closed during a round trip to the server".into())),
        Err(_) => Err(SdkError::Nats(format!("no round trip through the server within {ROUND_TRIP_TIMEOUT:?}"))),
    }
}
