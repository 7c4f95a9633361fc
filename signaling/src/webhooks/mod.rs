//! Signed webhooks: a subscriber of the domain events that POSTs the ones a backend cares about
//! (channels, participants, tracks, SFU nodes) to every `--webhook-url`.
//!
//! - **Signed**: `Mooyaho-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!   ([`signature`]), with a fresh `t` at each attempt.
//! - **At least once**: an attempt that fails (no 2xx within the timeout) is retried with
//!   exponential backoff, up to `max_attempts`; then the event is given up and counted.
//! - **Ordered per channel**: each URL has [`LANES`] lanes, each delivering one event at a time;
//!   an event's lane follows from its channel (or node), so a channel's events arrive in the
//!   order this instance emitted them while other channels' go on alongside.
//! - **Bounded per lane**: each lane of a URL holds at most its share of `queue_size` events
//!   (waiting or in flight); more are dropped and counted (`mooyaho_webhooks_dropped_total`), so
//!   a slow or dead receiver never holds signaling back (the domain only enqueues), and a
//!   channel that floods its lane (a participant looping enter/leave) drops only events of its
//!   own lane, never those of channels in the other lanes.
//! - **Bounded in bytes too**: each lane also holds at most its share of `queue_bytes` (64 MiB
//!   per URL by default) of bodies, since a `user` object can be client-controlled and large
//!   (anonymous mode); an event beyond it is dropped and counted alike.
//! - **Gaps are visible**: every event carries `seq`, numbered 1, 2, 3, … by this instance, so
//!   a receiver that misses a number knows an event was dropped or given up.
//! - **Once per fleet**: the domain emits each of these events on one instance only (see
//!   [`payload::WebhookEvent::from_domain`]), so several instances on one Redis send each once.

pub mod payload;
pub mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::domain::events::{Emitted, EventSubscriber};
use crate::metrics::Metrics;
use payload::WebhookEvent;
use signature::{SIGNATURE_HEADER, signature_header};

/// Lanes per URL: events of different channels are delivered this many at a time, and a
/// flooding channel shares its lane's queue with about 1/`LANES` of the other channels.
pub const LANES: usize = 32;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where and how webhooks are sent.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Receivers (`--webhook-url`, repeatable); none = no webhooks.
    pub urls: Vec<reqwest::Url>,
    /// HMAC secret (`--webhook-secret`); `None` = the API key.
    pub secret: Option<String>,
    /// Events waiting or in flight per URL before new ones are dropped; each of the URL's
    /// [`LANES`] lanes holds `queue_size / LANES` of them (at least 1).
    pub queue_size: usize,
    /// Body bytes waiting or in flight per URL before new events are dropped; each lane holds
    /// `queue_bytes / LANES` of them (at least one largest body).
    pub queue_bytes: usize,
    /// Attempts per event and URL, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled before each next one (at most a minute).
    pub first_retry: Duration,
    /// How long one attempt may take (connect, send, response head).
    pub attempt_timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: None,
            queue_size: 10_000,
            queue_bytes: 64 << 20,
            max_attempts: 6,
            first_retry: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a webhook URL or the sender was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL is not an absolute `http`/`https` URL with a host.
    #[error("webhook URL {url:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("webhook HTTP client: {0}")]
    Client(String),
}

/// Parses a `--webhook-url`: an absolute `http://` or `https://` URL with a host.
pub fn parse_url(text: &str) -> Result<reqwest::Url, WebhookError> {
    let invalid = |reason: &str| WebhookError::InvalidUrl {
        url: text.to_owned(),
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("a host is required"));
    }
    if url.fragment().is_some() {
        return Err(invalid("a fragment (#…) is never sent; remove it"));
    }
    Ok(url)
}

/// Retry timing of one URL's deliveries.
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    max_attempts: u32,
    first_retry: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.first_retry.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// An event waiting in a lane; its permit holds one place of its lane's queue until it is done.
struct Queued {
    body: Bytes,
    _place: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// The sending side of one lane: its own queue places, so that no lane can take another's.
struct LaneQueue {
    places: Arc<Semaphore>,
    /// One permit per body byte.
    bytes: Arc<Semaphore>,
    sender: mpsc::UnboundedSender<Queued>,
}

/// One receiver: its lanes.
struct Endpoint {
    lanes: Vec<LaneQueue>,
}

/// The places of one lane's queue: its share of the URL's `queue_size`, at least 1.
fn places_per_lane(queue_size: usize) -> usize {
    (queue_size / LANES).max(1)
}

/// A body larger than this is never queued (a WebSocket frame, hence a `user`, is at most
/// 1 MiB); it also is the least byte share of a lane, so any other body fits an empty lane.
const MAX_BODY: usize = 2 << 20;

/// The body bytes one lane's queue holds: its share of the URL's `queue_bytes`.
fn bytes_per_lane(queue_bytes: usize) -> usize {
    (queue_bytes / LANES).max(MAX_BODY)
}

/// The webhook subscriber of the domain event stream.
pub struct Webhooks {
    endpoints: Vec<Endpoint>,
    metrics: Arc<Metrics>,
    dropped: AtomicU64,
    /// The `seq` of the last event numbered by this instance.
    last_seq: AtomicU64,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Starts the lanes of every URL, signing with `secret`. Must run inside a Tokio runtime.
    pub fn start(
        settings: &WebhookSettings,
        secret: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, WebhookError> {
        let client = reqwest::Client::builder()
            // A redirect would carry the signed body to wherever the receiver points.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.attempt_timeout)
            .user_agent(concat!("mooyaho-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        let secret: Arc<[u8]> = secret.as_bytes().into();
        let policy = RetryPolicy {
            max_attempts: settings.max_attempts.max(1),
            first_retry: settings.first_retry,
        };
        let endpoints = settings
            .urls
            .iter()
            .map(|url| {
                let lanes = (0..LANES)
                    .map(|_| {
                        let (sender, rx) = mpsc::unbounded_channel();
                        let lane = Lane {
                            client: client.clone(),
                            url: url.clone(),
                            secret: secret.clone(),
                            policy,
                            metrics: metrics.clone(),
                        };
                        tokio::spawn(lane.run(rx));
                        LaneQueue {
                            places: Arc::new(Semaphore::new(places_per_lane(settings.queue_size))),
                            bytes: Arc::new(Semaphore::new(bytes_per_lane(settings.queue_bytes))),
                            sender,
                        }
                    })
                    .collect();
                Endpoint { lanes }
            })
            .collect();
        Ok(Arc::new(Self {
            endpoints,
            metrics,
            dropped: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
        }))
    }

    /// Queues `body` on every endpoint, in the lane of `order_key`; drops it where that lane's
    /// queue is full.
    fn enqueue(&self, body: &Bytes, order_key: u64, event: &'static str) {
        let lane = lane_of(order_key);
        for endpoint in &self.endpoints {
            let lane = &endpoint.lanes[lane];
            let place = lane.places.clone().try_acquire_owned();
            let bytes = u32::try_from(body.len())
                .ok()
                .filter(|_| body.len() <= MAX_BODY)
                .and_then(|len| lane.bytes.clone().try_acquire_many_owned(len).ok());
            let (Ok(place), Some(bytes)) = (place, bytes) else {
                self.count_drop(event);
                continue;
            };
            let queued = Queued {
                body: body.clone(),
                _place: place,
                _bytes: bytes,
            };
            // A lane ends only with the runtime; its place is returned with the event.
            let _ = lane.sender.send(queued);
        }
    }
}

impl Webhooks {
    /// Counts an event a full lane could not take.
    fn count_drop(&self, event: &'static str) {
        self.metrics.webhooks_dropped.inc();
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged at the 1st, 2nd, 4th, … drop: a flood is visible without flooding logs.
        if dropped.is_power_of_two() {
            tracing::warn!(
                event,
                dropped,
                "webhook queue full: event dropped (the receiver is slow or unreachable)"
            );
        }
    }
}

/// The lane (index below [`LANES`]) of events with this order key.
fn lane_of(order_key: u64) -> usize {
    usize::try_from(order_key % LANES as u64).unwrap_or(0)
}

#[async_trait]
impl EventSubscriber for Webhooks {
    async fn on_event(&self, emitted: &Emitted) {
        let Some(mut event) = WebhookEvent::from_domain(&emitted.event) else {
            return;
        };
        // Numbered before the queue is asked, so a dropped event leaves a gap receivers see.
        event.seq = self.last_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let body = match serde_json::to_vec(&event) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(error = %e, "webhook body could not be encoded");
                return;
            }
        };
        self.enqueue(&body, event.order_key(), event.event);
    }
}

/// One lane of one URL: delivers its events one at a time, each until it succeeds or runs out
/// of attempts.
struct Lane {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Arc<[u8]>,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl Lane {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Queued>) {
        while let Some(queued) = queue.recv().await {
            self.deliver(&queued.body).await;
        }
    }

    async fn deliver(&self, body: &Bytes) {
        for attempt in 1..=self.policy.max_attempts {
            let failure = match self.attempt(body).await {
                Ok(()) => {
                    self.metrics.webhooks_delivered.inc();
                    return;
                }
                Err(failure) => failure,
            };
            if attempt == self.policy.max_attempts {
                self.metrics.webhooks_failed.inc();
                tracing::warn!(
                    url = %redacted(&self.url),
                    attempts = attempt,
                    %failure,
                    "webhook given up"
                );
                return;
            }
            self.metrics.webhooks_retried.inc();
            let wait = self.policy.backoff(attempt);
            tracing::debug!(url = %redacted(&self.url), attempt, %failure, ?wait, "webhook retry");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, body: &Bytes) -> Result<(), String> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature_header(&self.secret, timestamp, body),
            )
            .body(body.clone())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    }
}

/// The URL without credentials, query or fragment (they may hold secrets), for logs.
fn redacted(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::http::{HeaderMap, StatusCode};

    use super::*;
    use crate::domain::events::DomainEvent;
    use crate::domain::ids::ChannelId;

    /// A receiver on a loopback port: answers 500 to the first `fail` requests, then 204 after
    /// `delay`; records the event names it accepted with their signature headers.
    async fn receiver(
        fail: usize,
        delay: Duration,
    ) -> (reqwest::Url, Arc<Mutex<Vec<(String, String)>>>) {
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let requests = Arc::new(AtomicU64::new(0));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (record, requests) = (record.clone(), requests.clone());
                async move {
                    tokio::time::sleep(delay).await;
                    if requests.fetch_add(1, Ordering::SeqCst) < fail as u64 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let header = headers[SIGNATURE_HEADER].to_str().unwrap().to_owned();
                    let t: u64 = header[2..header.find(',').unwrap()].parse().unwrap();
                    assert_eq!(header, signature_header(b"secret-0123456789", t, &body));
                    let name = event["event"].as_str().unwrap().to_owned();
                    record.lock().unwrap().push((name, header));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = parse_url(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn settings(url: reqwest::Url, queue_size: usize) -> WebhookSettings {
        WebhookSettings {
            urls: vec![url],
            queue_size,
            first_retry: Duration::from_millis(10),
            ..WebhookSettings::default()
        }
    }

    async fn emit(webhooks: &Webhooks, event: DomainEvent) {
        webhooks
            .on_event(&Emitted {
                event,
                audience: Vec::new(),
            })
            .await;
    }

    fn channel_events(channel: &str) -> [DomainEvent; 2] {
        let channel = ChannelId::from(channel);
        [
            DomainEvent::ChannelCreated {
                channel: channel.clone(),
                sfu_enabled: false,
            },
            DomainEvent::ChannelDeleted { channel },
        ]
    }

    #[tokio::test]
    async fn a_failed_attempt_is_retried_before_the_channels_next_event() {
        let (url, seen) = receiver(2, Duration::ZERO).await;
        let metrics = Arc::new(Metrics::new());
        let webhooks = Webhooks::start(
            &settings(url, 16 * LANES),
            "secret-0123456789",
            metrics.clone(),
        )
        .unwrap();
        for event in channel_events("c1") {
            emit(&webhooks, event).await;
        }
        // Chat is not a backend event.
        emit(
            &webhooks,
            DomainEvent::ChatSent {
                channel: ChannelId::from("c1"),
                from: crate::domain::ids::SessionId::from("s"),
                message: crate::domain::model::ChatMessage::Text { text: "x".into() },
            },
        )
        .await;
        let delivered = tokio::time::timeout(Duration::from_secs(10), async {
            while metrics.webhooks_delivered.get() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(delivered.is_ok(), "{:?}", seen.lock().unwrap());
        let names: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(names, ["channel.created", "channel.deleted"]);
        assert_eq!(metrics.webhooks_retried.get(), 2);
        assert_eq!(metrics.webhooks_failed.get(), 0);
    }

    #[tokio::test]
    async fn a_full_lane_drops_and_counts_without_waiting() {
        let (url, _seen) = receiver(0, Duration::from_secs(30)).await;
        let metrics = Arc::new(Metrics::new());
        let webhooks = Webhooks::start(
            &settings(url, 3 * LANES),
            "secret-0123456789",
            metrics.clone(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        for _ in 0..10 {
            for event in channel_events("c1") {
                emit(&webhooks, event).await;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "enqueueing waited"
        );
        // One channel, one lane: its 3 places of the URL's 3 × LANES.
        assert_eq!(metrics.webhooks_dropped.get(), 20 - 3);
    }

    /// The reviewer's M3: large (client-controlled) `user` objects fill a lane by bytes long
    /// before its places run out.
    #[tokio::test]
    async fn a_lane_full_of_bytes_drops_and_counts() {
        let (url, _seen) = receiver(0, Duration::from_secs(30)).await;
        let metrics = Arc::new(Metrics::new());
        let mut settings = settings(url, 1000 * LANES);
        settings.queue_bytes = 0; // each lane: the least share, MAX_BODY
        let webhooks = Webhooks::start(&settings, "secret-0123456789", metrics.clone()).unwrap();
        let big_user = serde_json::json!({ "id": "x".repeat(MAX_BODY / 4) });
        for i in 0..10 {
            let entered = DomainEvent::MemberEntered {
                channel: ChannelId::from("c1"),
                session: crate::domain::ids::SessionId::from(format!("s{i}").as_str()),
                user: big_user.clone(),
            };
            emit(&webhooks, entered).await;
        }
        // Bodies a little over MAX_BODY / 4: three fit in the lane's MAX_BODY bytes.
        assert_eq!(metrics.webhooks_dropped.get(), 10 - 3);
        assert_eq!(bytes_per_lane(64 << 20), 2 << 20);
    }

    /// Channels named `flood-…` hang the receiver for a minute; others are accepted at once
    /// and their names recorded with their `seq`.
    async fn receiver_stalled_by_one_channel() -> (reqwest::Url, Arc<Mutex<Vec<(String, u64)>>>) {
        let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: Bytes| {
                let record = record.clone();
                async move {
                    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let channel = event["channel"].as_str().unwrap_or_default().to_owned();
                    if channel.starts_with("flood") {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    let seq = event["seq"].as_u64().unwrap();
                    record.lock().unwrap().push((channel, seq));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = parse_url(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn lane_of_channel(channel: &str) -> usize {
        let [created, _] = channel_events(channel);
        lane_of(WebhookEvent::from_domain(&created).unwrap().order_key())
    }

    /// The reviewer's H1: one channel looping enter/leave against a slow receiver must not make
    /// every other channel's events get dropped.
    #[tokio::test]
    async fn a_flooded_lane_drops_only_its_own_events() {
        let (url, seen) = receiver_stalled_by_one_channel().await;
        let metrics = Arc::new(Metrics::new());
        let webhooks = Webhooks::start(
            &settings(url, 2 * LANES),
            "secret-0123456789",
            metrics.clone(),
        )
        .unwrap();
        let flood_lane = lane_of_channel("flood");
        for _ in 0..500 {
            for event in channel_events("flood") {
                emit(&webhooks, event).await;
            }
        }
        assert_eq!(
            metrics.webhooks_dropped.get(),
            1000 - 2,
            "only the flood's lane is full"
        );
        // Honest channels in every other lane.
        let honest: Vec<String> = (0..1000)
            .map(|i| format!("honest-{i}"))
            .filter(|c| lane_of_channel(c) != flood_lane)
            .take(20)
            .collect();
        for channel in &honest {
            let [created, _] = channel_events(channel);
            emit(&webhooks, created).await;
        }
        let delivered = tokio::time::timeout(Duration::from_secs(10), async {
            while metrics.webhooks_delivered.get() < 20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(delivered.is_ok(), "{:?}", seen.lock().unwrap());
        assert_eq!(
            metrics.webhooks_dropped.get(),
            1000 - 2,
            "no honest event dropped"
        );
        let mut got = seen.lock().unwrap().clone();
        got.sort_by_key(|(_, seq)| *seq);
        // Numbered after the 1000 flood events, dropped or not: the gap is visible.
        let seqs: Vec<u64> = got.iter().map(|(_, seq)| *seq).collect();
        assert_eq!(seqs, (1001..=1020).collect::<Vec<u64>>());
        let mut channels: Vec<String> = got.into_iter().map(|(c, _)| c).collect();
        channels.sort();
        let mut expected = honest.clone();
        expected.sort();
        assert_eq!(channels, expected);
    }

    #[tokio::test]
    async fn an_event_is_given_up_after_its_last_attempt() {
        let (url, _seen) = receiver(usize::MAX, Duration::ZERO).await;
        let metrics = Arc::new(Metrics::new());
        let mut settings = settings(url, 4 * LANES);
        settings.max_attempts = 3;
        let webhooks = Webhooks::start(&settings, "secret-0123456789", metrics.clone()).unwrap();
        let [created, _] = channel_events("c1");
        emit(&webhooks, created).await;
        let given_up = tokio::time::timeout(Duration::from_secs(10), async {
            while metrics.webhooks_failed.get() < 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(given_up.is_ok());
        assert_eq!(metrics.webhooks_retried.get(), 2);
        assert_eq!(metrics.webhooks_delivered.get(), 0);
    }

    #[test]
    fn only_absolute_http_urls_with_a_host_are_accepted() {
        for good in [
            "http://127.0.0.1:9000/hooks",
            "https://hooks.example.com/mooyaho?tenant=a",
            "http://[::1]:80/",
        ] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "hooks.example.com/x",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "http://",
            "https://example.com/x#frag",
            "http://exa mple.com/",
        ] {
            let error = parse_url(bad).unwrap_err().to_string();
            assert!(error.contains("webhook URL"), "{bad}: {error}");
        }
    }

    #[test]
    fn backoff_doubles_from_the_first_retry_up_to_a_minute() {
        let policy = RetryPolicy {
            max_attempts: 40,
            first_retry: Duration::from_millis(500),
        };
        let waits: Vec<_> = (1..=5).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000]);
        assert_eq!(policy.backoff(39), MAX_BACKOFF);
    }

    #[test]
    fn logs_never_show_credentials_or_query() {
        let url = parse_url("https://user:pw@example.com:8443/hook?token=s3cret").unwrap();
        assert_eq!(redacted(&url), "https://example.com:8443/hook");
    }
}
