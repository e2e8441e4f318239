//! The provider: consumer links (component → provider) get a NATS connection for publish and
//! request; handler links (provider → component) get subscriptions whose messages are
//! delivered to the component's `wasmcloud:messaging/handler`, a bounded number at a time.
//! Both are the link's state, held by the SDK.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_provider_sdk::{
    ErrorKind, InvocationContext, LatticeClient, LinkPut, Provider, ProviderContext, RpcError,
    async_nats::{self, RequestErrorKind},
    messaging::{
        self, BrokerMessage, CONSUMER_INTERFACE, HANDLER_INTERFACE, Messaging, RequestMessage, WIT_NAMESPACE,
        WIT_PACKAGE,
    },
    redact,
};
use futures::StreamExt as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{
    ConsumerConfig, HandlerConfig, SUBSCRIPTION_CAPACITY, reserved_on_lattice, reserved_subscription_on_lattice,
    validate_subject,
};

/// What a link keeps.
pub(crate) enum LinkState {
    /// A component publishes and requests through the provider.
    Consumer(Consumer),
    /// The provider delivers messages to a component.
    Handler(Handler),
}

/// A consumer link's connection, and whether it is the lattice's own.
pub(crate) struct Consumer {
    nats: async_nats::Client,
    on_lattice: bool,
    /// Keeps the link's own connection settings (a CA file) alive with the client.
    _connection: ferry_provider_sdk::LinkConnection,
}

/// A handler link's subscriptions, stopped together.
pub(crate) struct Handler {
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    slots: Arc<Semaphore>,
    max_concurrency: usize,
    /// Keeps the link's own connection settings (a CA file) alive with its subscriptions.
    _connection: Option<ferry_provider_sdk::LinkConnection>,
}

type Ctx = InvocationContext<LinkState>;

/// Publishes, requests and subscriptions for linked components.
#[derive(Default)]
pub(crate) struct MessagingProvider;

/// The consumer connection of the link a call came over.
fn consumer(ctx: &Ctx) -> Result<&Consumer, RpcError> {
    match ctx.state.as_ref() {
        LinkState::Consumer(consumer) => Ok(consumer),
        LinkState::Handler(_) => Err(RpcError::not_linked("a handler link does not publish")),
    }
}

impl Messaging for MessagingProvider {
    async fn publish(&self, ctx: &Ctx, msg: BrokerMessage) -> Result<(), RpcError> {
        let consumer = consumer(ctx)?;
        check_subject(consumer, &msg.subject)?;
        let sent = match msg.reply_to {
            Some(reply) => {
                check_subject(consumer, &reply)?;
                consumer.nats.publish_with_reply(msg.subject, reply, msg.body.into()).await
            }
            None => consumer.nats.publish(msg.subject, msg.body.into()).await,
        };
        sent.map_err(|e| RpcError::provider(format!("publish failed: {e}")))
    }

    async fn request(&self, ctx: &Ctx, req: RequestMessage) -> Result<BrokerMessage, RpcError> {
        let consumer = consumer(ctx)?;
        check_subject(consumer, &req.subject)?;
        let timeout = Duration::from_millis(u64::from(req.timeout_ms.max(1)));
        // The component's timeout, not the connection's default.
        let request = async_nats::Request::new().payload(req.body.into()).timeout(Some(timeout));
        let reply = match tokio::time::timeout(timeout, consumer.nats.send_request(req.subject.clone(), request)).await
        {
            Err(_) => {
                return Err(RpcError::new(
                    ErrorKind::Timeout,
                    format!("no reply on {} within {timeout:?}", req.subject),
                ));
            }
            Ok(Err(err)) => {
                return Err(match err.kind() {
                    RequestErrorKind::NoResponders => {
                        RpcError::new(ErrorKind::Unavailable, format!("nobody answers on {}", req.subject))
                    }
                    RequestErrorKind::TimedOut => {
                        RpcError::new(ErrorKind::Timeout, format!("no reply on {} within {timeout:?}", req.subject))
                    }
                    _ => RpcError::provider(format!("request on {} failed: {err}", req.subject)),
                });
            }
            Ok(Ok(reply)) => reply,
        };
        Ok(BrokerMessage {
            subject: reply.subject.to_string(),
            body: reply.payload.to_vec(),
            reply_to: reply.reply.map(|r| r.to_string()),
        })
    }
}

impl MessagingProvider {
    async fn put_consumer(&self, ctx: &ProviderContext, put: &LinkPut) -> Result<LinkState, String> {
        let config = ConsumerConfig::from_link(&put.target_config)?;
        let connection = if config.nats.needs_own_connection() {
            config.nats.connect_own(ctx, "ferry-messaging-consumer", Some(SUBSCRIPTION_CAPACITY)).await?
        } else {
            config.nats.connect(ctx, "ferry-messaging-consumer").await?
        };
        let on_lattice = config.nats.servers.is_none();
        let consumer = Consumer { nats: connection.client.clone(), on_lattice, _connection: connection };
        let nats = config.nats.servers.as_deref().map_or_else(|| "lattice".to_owned(), redact::url);
        info!(component = %put.link.source_id, name = %put.link.name, %nats, "consumer link ready");
        Ok(LinkState::Consumer(consumer))
    }

    async fn put_handler(&self, ctx: &ProviderContext, put: &LinkPut) -> Result<LinkState, String> {
        let config = HandlerConfig::from_link(&put.source_config)?;
        let on_lattice = config.nats.servers.is_none();
        if on_lattice && let Some(reserved) = config.subscriptions.iter().find(|s| reserved_subscription_on_lattice(s))
        {
            return Err(format!(
                "subscription {reserved:?} would reach the lattice's own subjects or reply inboxes; use cluster_uris for another NATS"
            ));
        }
        // A connection of its own, so the buffer of a busy link is bounded and its own.
        let connection = config.nats.connect_own(ctx, "ferry-messaging-handler", Some(SUBSCRIPTION_CAPACITY)).await?;
        let nats = connection.client.clone();
        let key = put.link.key();
        let stop = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(config.max_concurrency));
        let mut tasks = Vec::new();
        for subject in &config.subscriptions {
            let sub = match &config.queue_group {
                Some(group) => nats.queue_subscribe(subject.clone(), group.clone()).await,
                None => nats.subscribe(subject.clone()).await,
            };
            let sub = match sub {
                Ok(sub) => sub,
                Err(err) => {
                    // Roll back: a rejected link delivers nothing.
                    Handler::new(stop, tasks, slots, config.max_concurrency).stop().await;
                    let _ = nats.drain().await;
                    return Err(format!("cannot subscribe to {subject}: {err}"));
                }
            };
            let delivery = Delivery {
                client: ctx.client().clone(),
                component: key.target_id.clone(),
                link_name: key.name.clone(),
                timeout: config.timeout,
            };
            tasks.push(tokio::spawn(deliver_loop(sub, delivery, slots.clone(), stop.clone())));
        }
        // Say "subscribed" only once the server has the subscriptions: a message published
        // right after must not be lost.
        if let Err(err) = ferry_provider_sdk::sync_subscriptions(&nats).await {
            Handler::new(stop, tasks, slots, config.max_concurrency).stop().await;
            let _ = nats.drain().await;
            return Err(format!("cannot subscribe: {err}"));
        }
        info!(
            component = %key.target_id,
            name = %key.name,
            subscriptions = %config.subscriptions.join(","),
            queue_group = config.queue_group.as_deref().unwrap_or("-"),
            max_concurrency = config.max_concurrency,
            "handler link subscribed"
        );
        let handler =
            Handler { _connection: Some(connection), ..Handler::new(stop, tasks, slots, config.max_concurrency) };
        Ok(LinkState::Handler(handler))
    }
}

impl Handler {
    fn new(
        stop: CancellationToken,
        tasks: Vec<tokio::task::JoinHandle<()>>,
        slots: Arc<Semaphore>,
        max_concurrency: usize,
    ) -> Self {
        Self { stop, tasks: Mutex::new(tasks), slots, max_concurrency, _connection: None }
    }

    /// Stop reading; wait (bounded) for deliveries in flight.
    async fn stop(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        let all = u32::try_from(self.max_concurrency).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.slots.acquire_many(all)).await;
    }
}

/// Connect to a NATS of the link's choosing, with a bounded subscription buffer.
fn check_subject(consumer: &Consumer, subject: &str) -> Result<(), RpcError> {
    validate_subject(subject, false).map_err(RpcError::bad_request)?;
    if consumer.on_lattice && reserved_on_lattice(subject) {
        return Err(RpcError::new(
            ErrorKind::Denied,
            format!("subject {subject:?} belongs to the lattice; link with cluster_uris to use another NATS"),
        ));
    }
    Ok(())
}

/// Where one handler link's messages go.
#[derive(Clone)]
struct Delivery {
    client: LatticeClient,
    component: String,
    link_name: String,
    timeout: Option<Duration>,
}

/// Read one subscription and deliver each message to the component: at most `slots` at once
/// across the link. A message is taken off the subscription only when a slot is free, so a
/// slow component leaves messages in the (bounded) subscription buffer, where NATS's
/// slow-consumer rule drops the excess, instead of growing memory here.
async fn deliver_loop(
    mut sub: async_nats::Subscriber,
    delivery: Delivery,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
) {
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot { Ok(slot) => slot, Err(_) => break },
        };
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = sub.next() => match message { Some(message) => message, None => break },
        };
        let delivery = delivery.clone();
        tokio::spawn(async move {
            let _slot = slot;
            delivery.deliver(message).await;
        });
    }
    let _ = sub.unsubscribe().await;
}

impl Delivery {
    async fn deliver(&self, message: async_nats::Message) {
        let subject = message.subject.to_string();
        let payload = BrokerMessage {
            subject: subject.clone(),
            body: message.payload.to_vec(),
            reply_to: message.reply.map(|r| r.to_string()),
        };
        let result = messaging::deliver(&self.client, &self.component, &self.link_name, &payload, self.timeout).await;
        if let Err(err) = result {
            warn!(subject = %subject, component = %self.component, kind = ?err.kind, cause = %err.message, "message not handled");
        }
    }
}

impl Provider for MessagingProvider {
    type Link = LinkState;

    async fn handle(&self, ctx: Ctx, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        messaging::dispatch(self, &ctx, operation, &payload).await
    }

    async fn on_link_put(&self, ctx: &ProviderContext, put: &LinkPut) -> Result<LinkState, String> {
        let link = &put.link;
        if link.wit_namespace != WIT_NAMESPACE || link.wit_package != WIT_PACKAGE {
            return Err(format!(
                "expected a wasmcloud:messaging link, got {}:{}",
                link.wit_namespace, link.wit_package
            ));
        }
        if link.target_id == ctx.provider_id() && link.interfaces.iter().any(|i| i == CONSUMER_INTERFACE) {
            self.put_consumer(ctx, put).await
        } else if link.source_id == ctx.provider_id() && link.interfaces.iter().any(|i| i == HANDLER_INTERFACE) {
            self.put_handler(ctx, put).await
        } else {
            Err("link components to this provider over `consumer`, and this provider to components over `handler`"
                .into())
        }
    }

    async fn on_link_del(&self, _ctx: &ProviderContext, put: &LinkPut, state: Arc<LinkState>) {
        if let LinkState::Handler(handler) = state.as_ref() {
            handler.stop().await;
            info!(component = %put.link.target_id, name = %put.link.name, "handler link unsubscribed");
        }
    }

    async fn on_shutdown(&self, ctx: &ProviderContext) {
        for (_, state) in ctx.links().states::<LinkState>() {
            if let LinkState::Handler(handler) = state.as_ref() {
                handler.stop().await;
            }
        }
    }
}
