//! `GET /websocket`: upgrades, then pumps frames between the socket and the domain. Every bad
//! frame gets an `error` reply and the socket stays open; only a dead or kicked socket closes.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::ApiError;
use crate::domain::hub::Outgoing;
use crate::domain::{ConnectOptions, Connection, Signaling};
use crate::protocol::{
    ClientFrame, ClientMessage, ErrorCode, ServerMessage, SessionInfo, SignalError,
};
use crate::state::AppState;

/// Query parameters of `/websocket`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectQuery {
    /// Accept direct calls from sessions outside this client's channel.
    #[serde(default)]
    pub allow_direct_call: Option<bool>,
    /// A join token: the session starts integrated, limited to the token's channel and grants.
    #[serde(default)]
    pub token: Option<String>,
}

/// Messages queued for one socket before it counts as too slow.
const OUTBOX_DEPTH: usize = 1024;
/// Hard cap on a frame; between the configured limit and this, frames get an error reply.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;
/// Queued frames written with one flush at most (a bound on the time the connection's other
/// work waits behind its writes).
const WRITE_BATCH: usize = 64;
/// Read and write buffer of one WebSocket connection.
const WS_BUFFER_BYTES: usize = 4096;

/// Open WebSocket connections per client address, for `max_connections_per_ip`. IPv4 addresses
/// count one by one, IPv6 ones per /64: a single host usually holds a whole /64 and could
/// otherwise open `limit` connections from each of its 2^64 addresses.
#[derive(Debug, Default)]
pub struct PerIpConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// The address a per-IP limit counts under: the IPv4 address, or the IPv6 /64 network.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(network))
        }
    }
}

/// The client's address: the TCP peer, or when the peer is a trusted proxy, the rightmost hop of
/// `X-Forwarded-For` that is not itself trusted (hops left of it could be forged by the client).
/// A hop may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:443`, as some proxies write it); a hop
/// that does not parse stops the walk at the last trusted address.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop.trim()) {
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(client) {
                    return client;
                }
            }
            None => return client,
        }
    }
    client
}

/// One `X-Forwarded-For` hop: an address, optionally bracketed (IPv6) and with a `:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

impl PerIpConnections {
    /// A slot for one more connection from `ip` (counted under [`limit_key`]), or `None` when
    /// it already holds `limit` (0 = no limit). The slot is given back when dropped.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let ip = limit_key(ip);
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
        open.get(&limit_key(ip)).copied().unwrap_or(0)
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
    headers: HeaderMap,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => return ApiError::new(e.status(), e.body_text()).into_response(),
    };
    let slot = match extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => {
            let config = state.signaling.config();
            let limit = config.max_connections_per_ip;
            let ip = client_ip(peer.ip(), &headers, &config.trusted_proxies);
            match state.ws_per_ip.acquire(ip, limit) {
                Some(slot) => Some(slot),
                None => {
                    state.signaling.metrics().ws_refused("per_ip_limit");
                    tracing::debug!(%ip, "WebSocket refused: per-IP connection limit");
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
    let query = query.map(|Query(q)| q).unwrap_or_default();
    // Checked before the upgrade so a refused token is a plain HTTP 401 the client can read.
    let join = match query.token.as_deref() {
        Some(token) => match state.signaling.sessions().verify_join_token(token) {
            Ok(verified) => Some(verified),
            Err(e) => {
                state.signaling.metrics().ws_refused("join_token");
                return ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            }
        },
        None => None,
    };
    let options = ConnectOptions {
        allow_direct_call: query.allow_direct_call.unwrap_or(false),
        join,
    };
    upgrade
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        // tungstenite's 128 KiB defaults were ~90 % of an idle session's memory; signaling
        // frames are small (an SDP is a few KiB) and larger ones still arrive, in more reads.
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
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
    let user = options.join.as_ref().map(|join| join.user.clone());
    let (mut connection, token) = match signaling.sessions().connect(options, outbox).await {
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
    let mut membership = RateLimiter::new(MEMBERSHIP_CHANGES_PER_SECOND, MEMBERSHIP_CHANGE_BURST);
    let mut violations = Violations::new(config.max_violations, config.violation_window);
    let mut last_seen = Instant::now();
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.tick().await;
    // Every half lifetime the session gets a new resume token (the old one expires after one).
    let rotation = config.resume_token_lifetime / 2;
    let mut rotate = tokio::time::interval_at(Instant::now() + rotation, rotation);
    let connected = ServerMessage::Connected {
        id: connection.session.clone(),
        token,
        user: user.clone(),
        // A join token integrates at connect; other sessions get credentials with `integrated`.
        ice_servers: if user.is_some() {
            config.ice_servers(&connection.session)
        } else {
            Vec::new()
        },
    };
    if sink.send(text(connected.encode(None))).await.is_err() {
        signaling.sessions().disconnect(connection).await;
        return;
    }
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                let now = Instant::now();
                last_seen = now;
                if let Message::Close(_) = frame {
                    break;
                }
                // Every frame the client sends costs a token, whatever its kind.
                let allowed = limiter.allow(now);
                let (reply, refused) = match frame {
                    Message::Text(body) => {
                        on_text(&signaling, &mut connection, body.as_str(), allowed, &mut membership).await
                    }
                    Message::Binary(_) => {
                        let e = if allowed {
                            SignalError::new(
                                ErrorCode::UnsupportedFrame,
                                "binary frames are not supported; send JSON text",
                            )
                        } else {
                            rate_limited()
                        };
                        signaling.metrics().error(e.code.as_str());
                        (Some(error_frame(None, &e)), true)
                    }
                    Message::Ping(_) | Message::Pong(_) => (None, !allowed),
                    Message::Close(_) => break,
                };
                if refused && violations.exceeded(now) {
                    signaling.metrics().ws_refused("abuse");
                    tracing::debug!(session = %connection.session, "closing abusive socket");
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: 1008,
                            reason: "too many refused frames".into(),
                        })))
                        .await;
                    break;
                }
                if let Some(reply) = reply
                    && sink.send(reply).await.is_err()
                {
                    break;
                }
            }
            _ = rotate.tick() => {
                match signaling.sessions().rotate_token(&connection).await {
                    Ok(Some(token)) => {
                        let message = ServerMessage::ResumeToken { token };
                        if sink.send(text(message.encode(None))).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    // The current token stays valid until its expiry; the next tick retries.
                    Err(e) => tracing::warn!(error = %e, "resume token rotation failed"),
                }
            }
            queued = outgoing.recv() => {
                // None: the hub dropped this connection (kicked by a resume, or too slow).
                let Some(Outgoing::Text(body)) = queued else { break };
                if write_queued(&mut sink, &body, &mut outgoing).await.is_err() {
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
    signaling.sessions().disconnect(connection).await;
}

/// Writes `first` and the frames queued behind it (up to [`WRITE_BATCH`] in all) with one
/// flush: in a join wave into a large room every member's outbox fills with `entered` frames,
/// and one socket write per frame was most of the wave's cost.
async fn write_queued<S: Sink<Message> + Unpin>(
    sink: &mut S,
    first: &str,
    outgoing: &mut mpsc::Receiver<Outgoing>,
) -> Result<(), S::Error> {
    sink.feed(Message::Text(first.into())).await?;
    for _ in 1..WRITE_BATCH {
        let Ok(Outgoing::Text(body)) = outgoing.try_recv() else {
            break;
        };
        sink.feed(Message::Text(body.as_ref().into())).await?;
    }
    sink.flush().await
}

fn rate_limited() -> SignalError {
    SignalError::new(ErrorCode::RateLimited, "too many messages; slow down")
}

/// Applies a text frame; returns the reply for this socket and whether the frame was refused
/// for abuse (over the rate or the size limit).
async fn on_text(
    signaling: &Signaling,
    connection: &mut Connection,
    body: &str,
    allowed: bool,
    membership: &mut RateLimiter,
) -> (Option<Message>, bool) {
    let max = signaling.config().max_frame_bytes;
    let refusal = if !allowed {
        Some(rate_limited())
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
        return (Some(error_frame(None, &e)), true);
    }
    let frame = ClientFrame::decode(body);
    let request_id = frame.request_id.as_ref();
    let message = match frame.message {
        Ok(message) => message,
        Err(e) => {
            signaling.metrics().error(e.code.as_str());
            return (Some(error_frame(request_id, &e)), false);
        }
    };
    signaling.metrics().message(message_name(&message));
    if matches!(message, ClientMessage::Enter { .. } | ClientMessage::Leave)
        && !membership.allow(Instant::now())
    {
        let e = SignalError::new(
            ErrorCode::RateLimited,
            format!(
                "channel membership changes (enter, leave) are limited to \
                 {MEMBERSHIP_CHANGES_PER_SECOND} per second"
            ),
        );
        signaling.metrics().error(e.code.as_str());
        return (Some(error_frame(request_id, &e)), true);
    }
    let reply = match dispatch(signaling, connection, message).await {
        Ok(Some(reply)) => Some(text(reply.encode(request_id))),
        Ok(None) => request_id.map(|id| text(ServerMessage::Ack.encode(Some(id)))),
        Err(e) => {
            signaling.metrics().error(e.code.as_str());
            Some(error_frame(request_id, &e))
        }
    };
    (reply, false)
}

/// Applies one client message through the domain; returns the reply for the sender's socket, if
/// the message has one (`ack` is the edge's business).
pub async fn dispatch(
    signaling: &Signaling,
    connection: &mut Connection,
    message: ClientMessage,
) -> Result<Option<ServerMessage>, SignalError> {
    use ClientMessage as M;
    let reply = match message {
        M::GetId => ServerMessage::GetIdSuccess {
            id: connection.session.clone(),
        },
        M::Ping => ServerMessage::Pong,
        M::ReuseId { id, token } => {
            let resumed = signaling.sessions().reuse(connection, id, &token).await?;
            ServerMessage::ReuseIdSuccess {
                ice_servers: match resumed.user {
                    Some(_) => signaling.config().ice_servers(&resumed.id),
                    None => Vec::new(),
                },
                id: resumed.id,
                user: resumed.user.unwrap_or(serde_json::Value::Null),
                channel: resumed.channel,
                token: resumed.token,
            }
        }
        M::Enter { channel } => {
            let entry = signaling.channels().enter(connection, channel).await?;
            ServerMessage::EnterSuccess {
                channel: entry.channel,
                sfu_enabled: entry.sfu_enabled,
            }
        }
        M::Leave => return signaling.channels().leave(connection).await.map(|()| None),
        M::IntegrateUser { user } => ServerMessage::Integrated {
            user: signaling.sessions().integrate(connection, user).await?,
            ice_servers: signaling.config().ice_servers(&connection.session),
        },
        M::ListSessions => {
            let sessions = signaling
                .channels()
                .members(connection)
                .await?
                .into_iter()
                .map(|m| SessionInfo {
                    id: m.id,
                    user: m.user.unwrap_or(serde_json::Value::Null),
                    state: m.state,
                })
                .collect();
            ServerMessage::ListSessionsSuccess { sessions }
        }
        M::Message { message } => {
            return signaling
                .channels()
                .send_chat(connection, message)
                .await
                .map(|()| None);
        }
        M::SetSubscription {
            session_id,
            video,
            audio,
        } => {
            return signaling
                .placement()
                .set_subscription(connection, session_id, video, audio)
                .await
                .map(|()| None);
        }
        M::UpdateMediaState { key, value } => {
            return signaling
                .channels()
                .update_media_state(connection, key, value)
                .await
                .map(|()| None);
        }
        M::Call {
            sdp, is_sfu: true, ..
        } => ServerMessage::Answered {
            from: None,
            sdp: signaling.placement().publish(connection, sdp).await?,
            is_sfu: true,
        },
        M::Call { to, sdp, .. } => {
            return signaling
                .relay()
                .call(connection, to, sdp)
                .await
                .map(|()| None);
        }
        M::Answer {
            sdp, is_sfu: true, ..
        } => {
            return signaling
                .placement()
                .answer(connection, sdp)
                .await
                .map(|()| None);
        }
        M::Answer { to, sdp, .. } => {
            return signaling
                .relay()
                .answer(connection, to, sdp)
                .await
                .map(|()| None);
        }
        M::Candidate {
            candidate,
            is_sfu: true,
            ..
        } => {
            return signaling
                .placement()
                .candidate(connection, &candidate)
                .await
                .map(|()| None);
        }
        M::Candidate { to, candidate, .. } => {
            return signaling
                .relay()
                .candidate(connection, to, candidate)
                .await
                .map(|()| None);
        }
        M::Reject { to, reason } => {
            return signaling
                .relay()
                .reject(connection, to, reason)
                .await
                .map(|()| None);
        }
    };
    Ok(Some(reply))
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

fn message_name(message: &ClientMessage) -> &'static str {
    use ClientMessage as M;
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
        M::SetSubscription { .. } => "setSubscription",
        M::Ping => "ping",
    }
}

/// Channel membership changes (`enter`, `leave`) one socket may make: each is broadcast to
/// every member of the channel, so within the general message rate a few sockets entering and
/// leaving in a loop would fill every member's outbox until the hub drops them as slow
/// consumers (outside review of issue 11, H1). A person switching rooms needs far fewer.
const MEMBERSHIP_CHANGES_PER_SECOND: u32 = 2;
const MEMBERSHIP_CHANGE_BURST: u32 = 8;

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

/// Refused frames of one connection within a sliding window.
#[derive(Debug)]
struct Violations {
    at: VecDeque<Instant>,
    max: usize,
    window: std::time::Duration,
}

impl Violations {
    fn new(max: u32, window: std::time::Duration) -> Self {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        Self {
            at: VecDeque::with_capacity(max.min(1024) + 1),
            max,
            window,
        }
    }

    /// Records one refused frame at `now`; true once more than `max` fall within the window.
    fn exceeded(&mut self, now: Instant) -> bool {
        while self
            .at
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.at.pop_front();
        }
        self.at.push_back(now);
        self.at.len() > self.max
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use super::*;

    /// A sink that keeps the frames it is given and counts its flushes.
    #[derive(Default)]
    struct RecordingSink {
        frames: Vec<String>,
        flushes: usize,
    }

    impl Sink<Message> for RecordingSink {
        type Error = std::convert::Infallible;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            if let Message::Text(text) = item {
                self.frames.push(text.to_string());
            }
            Ok(())
        }
        fn poll_flush(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn queued_frames_go_out_in_order_with_one_flush_per_batch() {
        let (outbox, mut outgoing) = mpsc::channel(OUTBOX_DEPTH);
        let total = WRITE_BATCH + 10;
        for i in 0..total {
            let text: Arc<str> = format!("frame {i}").into();
            outbox.try_send(Outgoing::Text(text)).unwrap();
        }
        let mut sink = RecordingSink::default();
        while let Ok(Outgoing::Text(first)) = outgoing.try_recv() {
            write_queued(&mut sink, &first, &mut outgoing)
                .await
                .unwrap();
        }
        let expected: Vec<String> = (0..total).map(|i| format!("frame {i}")).collect();
        assert_eq!(sink.frames, expected);
        assert_eq!(
            sink.flushes, 2,
            "a full batch, then the rest: not one flush per frame"
        );
    }

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
    fn ipv6_counts_per_64_and_ipv4_per_address() {
        let counts = Arc::new(PerIpConnections::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = counts.acquire(a, 1).unwrap();
        assert!(counts.acquire(b, 1).is_none(), "same /64");
        assert!(counts.acquire(other, 1).is_some(), "another /64");
        let _v4 = counts.acquire("10.0.0.1".parse().unwrap(), 1).unwrap();
        assert!(counts.acquire("10.0.0.2".parse().unwrap(), 1).is_some());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "1.1.1.1, 2.2.2.2, 10.0.0.7".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "3.3.3.3".parse().unwrap();
        // The client may have forged 1.1.1.1; 2.2.2.2 is what the trusted hops saw.
        assert_eq!(
            client_ip(proxy, &headers, &trusted),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(stranger, &headers, &trusted), stranger);
        assert_eq!(client_ip(proxy, &headers, &[]), proxy);
        headers.insert("x-forwarded-for", "garbage, 10.0.0.9".parse().unwrap());
        assert_eq!(
            client_ip(proxy, &headers, &trusted),
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
        // Hops with a port, or a bracketed IPv6 address, are the address alone.
        for (hop, ip) in [
            ("1.2.3.4:5678", "1.2.3.4"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::2]", "2001:db8::2"),
        ] {
            headers.insert(
                "x-forwarded-for",
                format!("{hop}, 10.0.0.9").parse().unwrap(),
            );
            assert_eq!(
                client_ip(proxy, &headers, &trusted),
                ip.parse::<IpAddr>().unwrap(),
                "{hop}"
            );
        }
        headers.insert("x-forwarded-for", "2001:db8::1:443".parse().unwrap());
        assert_eq!(
            client_ip(proxy, &headers, &trusted),
            "2001:db8::1:443".parse::<IpAddr>().unwrap(),
            "an unbracketed IPv6 address is all address"
        );
        headers.clear();
        assert_eq!(client_ip(proxy, &headers, &trusted), proxy);
        headers.append("x-forwarded-for", "4.4.4.4".parse().unwrap());
        headers.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        assert_eq!(
            client_ip(proxy, &headers, &trusted),
            "4.4.4.4".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn violations_close_only_past_the_limit_within_the_window() {
        let start = Instant::now();
        let mut v = Violations::new(3, Duration::from_secs(10));
        assert!(!(0..3).any(|_| v.exceeded(start)));
        assert!(v.exceeded(start + Duration::from_secs(1)));
        let mut v = Violations::new(3, Duration::from_secs(10));
        for i in 0..10 {
            assert!(
                !v.exceeded(start + Duration::from_secs(4 * i)),
                "spread out: {i}"
            );
        }
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
