//! `GET /websocket`: upgrades, then pumps frames between the socket and the domain. Every bad
//! frame gets an `error` reply and the socket stays open; only a dead or kicked socket closes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::ApiError;
use crate::domain::hub::Outgoing;
use crate::domain::{ConnectOptions, Signaling};
use crate::protocol::{ClientFrame, ErrorCode, ServerMessage, SignalError};
use crate::state::AppState;

/// Query parameters of `/websocket`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectQuery {
    /// Accept direct calls from sessions outside this client's channel.
    #[serde(default)]
    pub allow_direct_call: Option<bool>,
}

/// Messages queued for one socket before it counts as too slow.
const OUTBOX_DEPTH: usize = 1024;
/// Hard cap on a frame; between the configured limit and this, frames get an error reply.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;

/// Open WebSocket connections per client IP address, for `max_connections_per_ip`.
#[derive(Debug, Default)]
pub struct PerIpConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIpConnections {
    /// A slot for one more connection from `ip`, or `None` when it already holds `limit`
    /// (0 = no limit). The slot is given back when dropped.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

/// One connection's place in its IP address's count.
#[derive(Debug)]
pub struct IpSlot {
    owner: Arc<PerIpConnections>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts the upgrade, unless the client's IP address already holds its share of connections
/// (429, JSON error body). Without connection info (the router served without
/// `into_make_service_with_connect_info`), no per-IP limit applies.
pub async fn upgrade(
    State(state): State<AppState>,
    extensions: Extensions,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => return ApiError::new(e.status(), e.body_text()).into_response(),
    };
    let slot = match extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => {
            let limit = state.signaling.config().max_connections_per_ip;
            match state.ws_per_ip.acquire(peer.ip(), limit) {
                Some(slot) => Some(slot),
                None => {
                    state.signaling.metrics().ws_refused("per_ip_limit");
                    tracing::debug!(ip = %peer.ip(), "WebSocket refused: per-IP connection limit");
                    return ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("too many WebSocket connections from this address (limit {limit})"),
                    )
                    .into_response();
                }
            }
        }
        None => None,
    };
    let options = ConnectOptions {
        allow_direct_call: query
            .ok()
            .and_then(|Query(q)| q.allow_direct_call)
            .unwrap_or(false),
    };
    upgrade
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket: WebSocket| async move {
            let (sink, stream) = socket.split();
            pump(state.signaling, options, sink, stream).await;
            drop(slot);
        })
}

/// Runs one connection until the socket closes, dies or is kicked.
pub async fn pump<S, R>(
    signaling: Arc<Signaling>,
    options: ConnectOptions,
    mut sink: S,
    mut stream: R,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let (outbox, mut outgoing) = mpsc::channel(OUTBOX_DEPTH);
    let (mut connection, connected) = match signaling.connect(options, outbox).await {
        Ok(opened) => opened,
        Err(e) => {
            let _ = sink.send(error_frame(None, &e)).await;
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1013,
                    reason: "try again later".into(),
                })))
                .await;
            return;
        }
    };
    let config = signaling.config().clone();
    let mut limiter = RateLimiter::new(config.messages_per_second, config.message_burst);
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.tick().await;
    if sink.send(text(connected.encode(None))).await.is_err() {
        signaling.disconnect(connection).await;
        return;
    }
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                last_seen = Instant::now();
                let reply = match frame {
                    Message::Text(body) => {
                        let allowed = limiter.allow(Instant::now());
                        on_text(&signaling, &mut connection, body.as_str(), allowed).await
                    }
                    Message::Binary(_) => Some(error_frame(None, &SignalError::new(
                        ErrorCode::UnsupportedFrame,
                        "binary frames are not supported; send JSON text",
                    ))),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => None,
                };
                if let Some(reply) = reply
                    && sink.send(reply).await.is_err()
                {
                    break;
                }
            }
            queued = outgoing.recv() => {
                // None: the hub dropped this connection (kicked by a resume, or too slow).
                let Some(Outgoing::Text(body)) = queued else { break };
                if sink.send(Message::Text(body.as_ref().into())).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > config.ping_interval * 2 {
                    signaling.metrics().ws_reaped.inc();
                    tracing::debug!(session = %connection.session, "reaping silent socket");
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
    signaling.disconnect(connection).await;
}

/// Applies a text frame; returns the reply for this socket.
async fn on_text(
    signaling: &Signaling,
    connection: &mut crate::domain::Connection,
    body: &str,
    allowed: bool,
) -> Option<Message> {
    let max = signaling.config().max_frame_bytes;
    let refusal = if !allowed {
        Some(SignalError::new(
            ErrorCode::RateLimited,
            "too many messages; slow down",
        ))
    } else if body.len() > max {
        Some(SignalError::new(
            ErrorCode::FrameTooLarge,
            format!("frames are limited to {max} bytes"),
        ))
    } else {
        None
    };
    if let Some(e) = refusal {
        signaling.metrics().error(e.code.as_str());
        return Some(error_frame(None, &e));
    }
    let frame = ClientFrame::decode(body);
    let request_id = frame.request_id.as_ref();
    let message = match frame.message {
        Ok(message) => message,
        Err(e) => {
            signaling.metrics().error(e.code.as_str());
            return Some(error_frame(request_id, &e));
        }
    };
    signaling.metrics().message(message_name(&message));
    match signaling.handle(connection, message).await {
        Ok(Some(reply)) => Some(text(reply.encode(request_id))),
        Ok(None) => request_id.map(|id| text(ServerMessage::Ack.encode(Some(id)))),
        Err(e) => {
            signaling.metrics().error(e.code.as_str());
            Some(error_frame(request_id, &e))
        }
    }
}

fn text(body: String) -> Message {
    Message::Text(body.into())
}

fn error_frame(request_id: Option<&serde_json::Value>, e: &SignalError) -> Message {
    let error = ServerMessage::Error {
        code: e.code,
        message: e.message.clone(),
    };
    text(error.encode(request_id))
}

fn message_name(message: &crate::protocol::ClientMessage) -> &'static str {
    use crate::protocol::ClientMessage as M;
    match message {
        M::GetId => "getId",
        M::ReuseId { .. } => "reuseId",
        M::Enter { .. } => "enter",
        M::Leave => "leave",
        M::Message { .. } => "message",
        M::ListSessions => "listSessions",
        M::Call { .. } => "call",
        M::Answer { .. } => "answer",
        M::Candidate { .. } => "candidate",
        M::Reject { .. } => "reject",
        M::IntegrateUser { .. } => "integrateUser",
        M::UpdateMediaState { .. } => "updateMediaState",
        M::Ping => "ping",
    }
}

/// Token bucket: `rate` messages per second sustained, `burst` at once.
#[derive(Debug)]
struct RateLimiter {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn per_ip_slots_are_counted_and_given_back() {
        let counts = Arc::new(PerIpConnections::default());
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let a = counts.acquire(v4, 2).unwrap();
        let b = counts.acquire(mapped, 2).unwrap();
        assert!(counts.acquire(v4, 2).is_none(), "v4-mapped counts as v4");
        assert!(counts.acquire("10.0.0.2".parse().unwrap(), 2).is_some());
        assert!(counts.acquire(v4, 0).is_some(), "0 = no limit");
        drop(a);
        assert_eq!(counts.open(v4), 1);
        drop(b);
        assert_eq!(counts.open(v4), 0);
        assert!(counts.open.lock().unwrap().is_empty());
    }

    #[test]
    fn rate_limiter_allows_burst_then_sustained_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 5);
        limiter.last = start;
        assert!((0..5).all(|_| limiter.allow(start)));
        assert!(!limiter.allow(start));
        assert!(limiter.allow(start + Duration::from_millis(100)));
        assert!(!limiter.allow(start + Duration::from_millis(100)));
    }
}
