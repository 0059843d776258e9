//! Webhooks at the edge: a task that drives the sans-IO [`Outbox`] and POSTs each event's
//! signed JSON to every configured receiver, and the cheap [`Webhooks`] handle that the rest of
//! the server (and the recorder) emits events through.
//!
//! Plain HTTP only (hyper's client, no TLS stack): receivers are `http://` URLs, for example a
//! local TLS-terminating proxy in front of an `https://` one. Each request carries
//! `Content-Type: application/json`, `User-Agent: townhall` and `Townhall-Signature:
//! t=<unix secs>,v1=<hex HMAC-SHA256 of "<t>.<body>">` keyed with the node's `webhook_secret` (never the token secret); a 2xx
//! within 5 s is a delivery, anything else is retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use crate::app::outbound::HttpClient;
use axum::http::{Request, Uri, header};
use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::mpsc;
use tokio::time::Instant;
use townhall_core::webhook::{
    DeliveryId, Failure, Outbox, OutboxConfig, SIGNATURE_HEADER, WebhookEnvelope, WebhookEvent,
    sign,
};

use crate::app::config::Config;
use crate::clock::now_unix;

/// Counter: webhook deliveries (event × receiver), by `outcome`: `delivered`, `retried` (an
/// attempt failed and will be tried again) or `dropped` (given up: out of attempts, or pushed
/// out of the full queue).
pub const WEBHOOKS: &str = "townhall_webhooks_total";

/// How long a receiver has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The longest delay between attempts.
pub const RETRY_CAP: Duration = Duration::from_secs(60);

/// Requests in flight to one receiver at once.
const MAX_IN_FLIGHT: usize = 8;

/// Emits webhook events. Cheap to clone; [`emit`](Webhooks::emit) never blocks. Without
/// configured receivers it does nothing.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    tx: Option<mpsc::Sender<WebhookEnvelope>>,
}

impl Webhooks {
    /// A handle that drops everything (no receivers configured).
    pub fn disabled() -> Webhooks {
        Webhooks { tx: None }
    }

    /// Starts the delivery task for `config.webhook_urls` (on the current Tokio runtime) and
    /// returns its handle; disabled when there are no receivers. The task runs until every
    /// handle is gone and what was queued is delivered or given up.
    pub fn start(config: &Config, secret: &str, client: HttpClient) -> Webhooks {
        if config.webhook_urls.is_empty() {
            return Webhooks::disabled();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("webhooks need a Tokio runtime; none is running, so they are off");
            return Webhooks::disabled();
        };
        let endpoints: Vec<Uri> = config
            .webhook_urls
            .iter()
            .filter_map(|url| match crate::app::config::parse_webhook_url(url) {
                Ok(uri) => Some(uri),
                Err(e) => {
                    tracing::error!("webhook receiver skipped: {e}");
                    None
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Webhooks::disabled();
        }
        describe();
        let outbox = OutboxConfig {
            capacity: config.webhook_queue.max(1),
            max_attempts: config.webhook_max_attempts.max(1),
            retry_base_ms: config.webhook_retry_base_ms.max(1),
            retry_cap_ms: RETRY_CAP.as_millis() as u64,
            max_in_flight: MAX_IN_FLIGHT,
        };
        let (tx, rx) = mpsc::channel(config.webhook_queue.clamp(1, 10_000));
        runtime.spawn(deliver(rx, endpoints, client, Arc::from(secret.as_bytes()), outbox));
        Webhooks { tx: Some(tx) }
    }

    /// Whether events go anywhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an event for every receiver, stamped with a fresh id and the time now. Never
    /// waits: if the delivery task is that far behind, the event is dropped and counted.
    pub fn emit(&self, event: WebhookEvent) {
        let Some(tx) = &self.tx else { return };
        let envelope = WebhookEnvelope {
            id: format!("evt_{:032x}", rand::random::<u128>()),
            created_at: now_unix(),
            event,
        };
        if let Err(e) = tx.try_send(envelope) {
            let envelope = match e {
                mpsc::error::TrySendError::Full(env) | mpsc::error::TrySendError::Closed(env) => {
                    env
                }
            };
            tracing::warn!(event = envelope.event.name(), "webhook dropped: the queue is full");
            metrics::counter!(WEBHOOKS, "outcome" => "dropped").increment(1);
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        WEBHOOKS,
        "Webhook deliveries (event x receiver), by outcome: delivered, retried or dropped."
    );
}

/// The delivery task: takes emitted events into the outbox, sends what is due, hears back.
async fn deliver(
    mut events: mpsc::Receiver<WebhookEnvelope>,
    endpoints: Vec<Uri>,
    client: HttpClient,
    key: Arc<[u8]>,
    config: OutboxConfig,
) {
    let mut outbox = Outbox::new(config, endpoints.len(), rand::random());
    // At most `MAX_IN_FLIGHT` per receiver report at once, so this stays small.
    let (done_tx, mut done) = mpsc::unbounded_channel::<(DeliveryId, Result<(), String>)>();
    let epoch = Instant::now();
    let now_ms = move || epoch.elapsed().as_millis() as u64;
    let mut open = true;
    loop {
        for delivery in outbox.due(now_ms()) {
            let Some(uri) = endpoints.get(delivery.endpoint).cloned() else { continue };
            let (client, key, done_tx) = (client.clone(), key.clone(), done_tx.clone());
            tokio::spawn(async move {
                let result = post(&client, uri, &key, delivery.body).await;
                let _ = done_tx.send((delivery.id, result));
            });
        }
        if !open && outbox.is_empty() && outbox.in_flight() == 0 {
            return;
        }
        let wake = outbox.next_wake().map(|ms| epoch + Duration::from_millis(ms));
        tokio::select! {
            event = events.recv(), if open => match event {
                Some(envelope) => {
                    if let Some(evicted) = outbox.push(&envelope, now_ms()) {
                        tracing::warn!(id = %evicted.event_id, "webhook dropped: the queue is full");
                        metrics::counter!(WEBHOOKS, "outcome" => "dropped")
                            .increment(evicted.undelivered as u64);
                    }
                }
                None => open = false,
            },
            Some((id, result)) = done.recv() => {
                let url = endpoints.get(id.endpoint()).map(Uri::to_string).unwrap_or_default();
                match result {
                    Ok(()) => {
                        if outbox.succeeded(id) {
                            metrics::counter!(WEBHOOKS, "outcome" => "delivered").increment(1);
                        }
                    }
                    Err(why) => match outbox.failed(id, now_ms()) {
                        Failure::Retry { at_ms } => {
                            let after_ms = at_ms.saturating_sub(now_ms());
                            tracing::debug!(%url, after_ms, "webhook failed ({why}); will retry");
                            metrics::counter!(WEBHOOKS, "outcome" => "retried").increment(1);
                        }
                        Failure::Dropped => {
                            tracing::warn!(%url, "webhook given up after its last attempt: {why}");
                            metrics::counter!(WEBHOOKS, "outcome" => "dropped").increment(1);
                        }
                        Failure::Unknown => {}
                    },
                }
            }
            () = sleep_until(wake) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One attempt: a 2xx within [`TIMEOUT`] is `Ok`.
async fn post(client: &HttpClient, uri: Uri, key: &[u8], body: Arc<[u8]>) -> Result<(), String> {
    let body = Bytes::from_owner(body);
    let signature = sign(key, now_unix(), &body);
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "townhall")
        .header(SIGNATURE_HEADER, signature)
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    match tokio::time::timeout(TIMEOUT, client.request(req)).await {
        Ok(Ok(res)) if res.status().is_success() => Ok(()),
        Ok(Ok(res)) => Err(format!("status {}", res.status())),
        Ok(Err(e)) => Err(format!("request failed: {e}")),
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_urls_are_checked() {
        assert!(crate::app::config::parse_webhook_url("http://127.0.0.1:9000/hooks").is_ok());
        assert!(crate::app::config::parse_webhook_url("http://hooks.internal/townhall").is_ok());
        assert!(crate::app::config::parse_webhook_url("https://example.com/hook").is_ok());
        for bad in ["", "ftp://x/y", "/just/a/path", "http://", "not a url"] {
            assert!(crate::app::config::parse_webhook_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_disabled_handle_drops_events_quietly() {
        let config = Config::default();
        let client = crate::app::outbound::Outbound::new(&config).expect("client").http;
        let hooks = Webhooks::start(&config, "a test secret, long enough", client);
        assert!(!hooks.enabled());
        hooks.emit(WebhookEvent::SpaceEnded {
            space: townhall_core::webhook::SpaceRef {
                id: townhall_core::SpaceId::new("x").unwrap_or_else(|_| unreachable!()),
                title: "x".into(),
            },
        });
    }
}
