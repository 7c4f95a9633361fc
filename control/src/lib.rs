//! The control protocol between signaling instances (clients) and SFU nodes (servers), carried
//! over QUIC. This crate holds only the message types and their framing; both sides depend on it
//! and never on each other.
//!
//! # Exchange
//!
//! - The client opens the connection (TLS 1.3, the node's certificate pinned by its SHA-256
//!   fingerprint) and sends [`Request::Hello`] on the first bidirectional stream, with a
//!   [`Proof`] that it knows the cluster secret, bound to this connection (see [`proof`]); the
//!   secret itself never crosses the wire. The node checks it and answers
//!   [`Response::Welcome`] with its own proof, which the client checks in turn. A wrong proof or
//!   version ends the connection with an [`ErrorCode::Unauthorized`] error.
//! - Every later request takes its own bidirectional stream: one [`Request`] frame from the
//!   client, one [`Response`] frame back, then both sides finish the stream.
//! - The node opens one unidirectional stream after the hello and writes [`Event`] frames on it
//!   for as long as the connection lives.
//!
//! # Framing
//!
//! A frame is a 4-byte big-endian length (of what follows), a 1-byte protocol version, and a
//! JSON body. JSON keeps the protocol inspectable; control traffic is a few messages per second.
//! Frames larger than [`MAX_FRAME`] ([`MAX_HELLO_FRAME`] for the hello a node reads from an
//! unauthenticated peer) are refused from their length prefix, before anything is allocated;
//! [`read_frame`] then grows its buffer only as the body's bytes actually arrive.
//!
//! # Versions
//!
//! The ALPN id names the framing, which every version shares, so a peer of another version still
//! gets through the handshake and its frames' version byte yields a clear
//! [`FrameError::Version`] instead of an opaque TLS alert. Version 2 replaced version 1's
//! cleartext secret in the hello with [`Proof`]s.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod proof;
pub mod sdp_syntax;

use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{Deserialize, Serialize};

pub use proof::{Proof, ProofMismatch, Role};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 2;
/// The QUIC ALPN protocol id: the framing, shared by every version (see the crate docs).
pub const ALPN: &[u8] = b"mooyaho-control/1";
/// Largest frame accepted (SDP offers of large rooms stay well under this).
pub const MAX_FRAME: usize = 1024 * 1024;
/// Largest hello accepted from a peer that has not authenticated yet.
pub const MAX_HELLO_FRAME: usize = 4 * 1024;

/// QUIC idle timeout of a control connection, on both sides (QUIC uses the smaller of the two
/// peers' values). A node killed without a word (SIGKILL, power, a cut link) sends no
/// CONNECTION_CLOSE: its controllers learn of its death when this much time has passed without
/// a packet, and fail its channels over at once (DESIGN §7.1: media back in < 3 s). QUIC itself
/// stretches it to three probe timeouts on a slow path.
pub const LINK_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Keep-alive interval of a control connection, on both sides: four PINGs per
/// [`LINK_IDLE_TIMEOUT`], so a link only times out after several consecutive losses. They run on
/// each process's async runtime (a node's media workers are threads of their own), so a node
/// busy forwarding media still answers them.
pub const LINK_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_millis(250);

/// A relay link's key as the protocol carries it (32 hex digits). Its `Debug` never shows it, so
/// a logged or panicking [`Request`] cannot leak a link's keys (outside review F11).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RelayKeyHex(String);

impl RelayKeyHex {
    /// Wraps a key's hex form.
    pub fn new(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }

    /// The hex digits (to parse; never to log).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RelayKeyHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKeyHex(..)")
    }
}

/// A request from a signaling instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Request {
    /// First message of a connection.
    Hello {
        /// The signaling instance's id (for logs).
        instance: String,
        /// Proof of the cluster secret for this connection, by [`Role::Signaling`].
        proof: Proof,
    },
    /// Opens a room; the reply names it.
    CreateRoom,
    /// Answers a session's publish offer.
    Publish {
        /// The room (from [`Response::Room`]).
        room: String,
        /// The signaling session id.
        session: String,
        /// The client's offer SDP.
        offer: String,
    },
    /// (Re-)offers a session's subscribe transport.
    SubscribeOffer {
        /// The room.
        room: String,
        /// The session.
        session: String,
    },
    /// Answers a subscribe session the client offers (WHEP): a new subscribe transport with
    /// the room's published tracks on the offer's m-lines; the reply is [`Response::Sdp`] with
    /// the answer. The node never re-offers such a session.
    SubscribeClientOffer {
        /// The room.
        room: String,
        /// The session.
        session: String,
        /// The client's offer SDP (`recvonly` m-lines).
        offer: String,
        /// Only this publishing session's tracks; `None`: every publisher's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        publisher: Option<String>,
    },
    /// Applies a session's answer to its latest subscribe offer.
    SubscribeAnswer {
        /// The room.
        room: String,
        /// The session.
        session: String,
        /// The client's answer SDP.
        answer: String,
    },
    /// What a subscriber wants of one publisher's media (its wish; the node forwards at most
    /// that). Kept by the node until either session leaves the room.
    SetSubscription {
        /// The room.
        room: String,
        /// The subscribing session.
        session: String,
        /// The publishing session the wish is about.
        publisher: String,
        /// The most video wanted.
        video: VideoQuality,
        /// Whether audio is wanted; `None` leaves it as it was (wanted, by default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<bool>,
    },
    /// Removes a session's transports.
    CloseSession {
        /// The room.
        room: String,
        /// The session.
        session: String,
    },
    /// Closes a room and all its transports.
    CloseRoom {
        /// The room.
        room: String,
    },
    /// Current load and counters.
    Stats,
    /// Starts (or stops) draining: the node refuses new rooms; existing rooms go on.
    Drain {
        /// Draining from now on.
        draining: bool,
    },
    /// The rooms the node hosts now ([`Response::Rooms`]). A controller asks when its link comes
    /// up, to find channels whose rooms a restart lost.
    Rooms,
    /// Receiving side of a relay link between nodes (a room spanning nodes, DESIGN §7.2):
    /// `room` here will be fed the tracks of a room on another node. The reply is
    /// [`Response::RelayAddress`]: where the sending node sends ([`Request::OpenRelay`]).
    AcceptRelay {
        /// The room on this node.
        room: String,
        /// The link's id (chosen at random by the control plane; both nodes use it).
        link: u64,
        /// The publishing session whose tracks the link carries: the node refuses tracks of
        /// any other session on it (a relay cycle, outside review F1).
        publisher: String,
        /// Key sealing what this node sends back (feedback), 32 hex digits.
        send_key: RelayKeyHex,
        /// Key opening what this node receives, 32 hex digits.
        receive_key: RelayKeyHex,
    },
    /// Sending side of a relay link: `publisher`'s tracks in `room` (its own, or relayed here
    /// from its node; now and later) go to `address`.
    OpenRelay {
        /// The room on this node.
        room: String,
        /// The link's id, as given to the receiving node.
        link: u64,
        /// The publishing session whose tracks the link carries.
        publisher: String,
        /// The receiving node's [`Response::RelayAddress`].
        address: String,
        /// Key sealing what this node sends (the receiving node's `receive_key`).
        send_key: RelayKeyHex,
        /// Key opening the feedback (the receiving node's `send_key`).
        receive_key: RelayKeyHex,
    },
    /// Tears a relay link down (on either node).
    CloseRelay {
        /// The room on this node.
        room: String,
        /// The link's id.
        link: u64,
    },
    /// A room's speaker ranking now ([`Response::Speakers`]): a member who joins after the
    /// last change hears it this way (changes are announced as [`Event::ActiveSpeakers`]).
    Speakers {
        /// The room.
        room: String,
    },
}

/// How much of a publisher's video a subscriber wants: a simulcast layer, or none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VideoQuality {
    /// The highest layer (the only one of a non-simulcast track).
    #[default]
    High,
    /// The middle layer (the higher of two).
    Medium,
    /// The lowest layer.
    Low,
    /// No video: nothing is forwarded.
    Off,
}

/// The reply to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Response {
    /// Hello accepted.
    Welcome {
        /// The node's workers.
        workers: usize,
        /// Proof of the cluster secret for this connection, by [`Role::Node`].
        proof: Proof,
    },
    /// A room was created.
    Room {
        /// Its id.
        room: String,
    },
    /// An SDP (answer to a publish, or a subscribe offer; `None` when there is nothing to
    /// subscribe to yet).
    Sdp {
        /// The SDP.
        sdp: Option<String>,
    },
    /// Done.
    Done,
    /// Statistics.
    Stats(Load),
    /// The rooms the node hosts. Room names are never reused by a node, not even across its
    /// restarts, so a room missing here is gone for good.
    Rooms {
        /// Their names (as [`Response::Room`] gave them).
        rooms: Vec<String>,
    },
    /// Where the other node sends a relay link's datagrams (`ip:port`).
    RelayAddress {
        /// The address.
        address: String,
    },
    /// A room's speaker ranking, loudest first; empty when nobody speaks.
    Speakers {
        /// Loudest first.
        speakers: Vec<Speaker>,
    },
    /// The request failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Wrong proof of the cluster secret, or another protocol version.
    Unauthorized,
    /// The room does not exist on this node (it restarted, or the room was closed). Room names
    /// are never reused, so the room will not come back.
    UnknownRoom,
    /// The client's SDP was refused.
    BadSdp,
    /// The client's SDP asks for more than a publisher may hold (tracks, m-lines).
    LimitExceeded,
    /// The session repeats a costly request (publishing) faster than the node allows.
    RateLimited,
    /// The request is malformed or not allowed now.
    BadRequest,
    /// The node is draining or shutting down.
    Unavailable,
    /// The node holds as many client transports as its cap allows (`--max-transports`): the
    /// session's transport was not made; serve it from another node.
    Full,
    /// Anything else on the node's side.
    Internal,
}

/// Node → signaling notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Event {
    /// The session's subscribe PeerConnection needs a new offer.
    RenegotiationNeeded {
        /// The room.
        room: String,
        /// The session.
        session: String,
    },
    /// A transport connected (`side`: `publish` or `subscribe`).
    TransportConnected {
        /// The room.
        room: String,
        /// The session.
        session: String,
        /// Which PeerConnection.
        side: String,
    },
    /// The node closed a transport (consent expired, DTLS closed, never connected).
    TransportClosed {
        /// The room.
        room: String,
        /// The session.
        session: String,
        /// Which PeerConnection.
        side: String,
        /// Why.
        reason: String,
    },
    /// A room's active speakers changed (at most every 200 ms per room). Sent to one client
    /// (the one that last spoke for a session of the room), which tells the channel's members.
    ActiveSpeakers {
        /// The room.
        room: String,
        /// A session with a transport in the room (names the channel even when nobody speaks).
        member: String,
        /// Loudest first; empty when nobody speaks.
        speakers: Vec<Speaker>,
    },
    /// Dynacast: which simulcast layers of a session's published video anyone consumes
    /// changed (debounced on the node: a layer needed again at once, one no longer needed at
    /// most every 500 ms per track). The lowest layer is always listed.
    SubscribedQualities {
        /// The room.
        room: String,
        /// The publishing session.
        session: String,
        /// The mid of the track's m-line in the session's publish offer.
        mid: String,
        /// The consumed layers' rids, lowest first (empty strings for layers without a rid,
        /// i.e. `a=ssrc-group:SIM`).
        qualities: Vec<String>,
        /// The consumed layers' indexes, 0 = lowest (the same layers as `qualities`).
        layers: Vec<u8>,
    },
    /// The node closed the sending end of a relay link by itself: its receiving node answered
    /// nothing authentic for a while (it died, or its end was closed). Signaling forgets the
    /// link and plans the channel's links again.
    RelayClosed {
        /// The sending node's room.
        room: String,
        /// The link.
        link: u64,
        /// Why.
        reason: String,
    },
    /// Periodic load report (every second).
    Load(Load),
}

/// One entry of a room's speaker ranking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Speaker {
    /// The publishing session.
    pub session: String,
    /// Smoothed loudness, 1..=100 (percent of full-scale amplitude).
    pub level: u8,
}

/// A node's load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    /// Rooms hosted.
    pub rooms: u64,
    /// Transports (publish + subscribe).
    pub transports: u64,
    /// Published tracks.
    #[serde(default)]
    pub tracks: u64,
    /// Subscriptions (a track forwarded to one subscriber).
    #[serde(default)]
    pub subscriptions: u64,
    /// Distinct sessions with a transport.
    pub sessions: u64,
    /// Datagrams received per second.
    pub packets_in_per_sec: u64,
    /// Datagrams sent per second.
    pub packets_out_per_sec: u64,
    /// Process CPU use, percent of one core.
    pub cpu_percent: u64,
    /// Packets dropped by the security layer since start (STUN, DTLS, SRTP failures).
    pub security_drops: u64,
    /// Control connections refused since start because too many were already waiting to
    /// authenticate (in all, or from the same source address).
    pub control_over_capacity: u64,
    /// Control connections closed since start for not completing their hello in time.
    pub control_hello_timeouts: u64,
    /// Control connections closed since start for a bad hello (malformed, oversized, another
    /// version, or a proof that does not verify).
    pub control_bad_hellos: u64,
    /// The node is draining.
    pub draining: bool,
    /// The node's cap of client transports (`--max-transports`; 0 = no cap). At it, a session
    /// new to the node is refused with [`ErrorCode::Full`] (one already on it may still open its
    /// other side, so a member's two transports stay on one node).
    #[serde(default)]
    pub max_transports: u64,
    /// Client transports the node holds against that cap (publish and subscribe
    /// PeerConnections, including ones being set up; the workers' `transports` counts only
    /// those made).
    #[serde(default)]
    pub admitted_transports: u64,
    /// Relay links sending this node's tracks to other nodes.
    #[serde(default)]
    pub relay_links_out: u64,
    /// Relay links receiving other nodes' tracks.
    #[serde(default)]
    pub relay_links_in: u64,
    /// Media-plane counters since the node started (signaling exports them per node). Boxed:
    /// most control messages are small.
    #[serde(default)]
    pub media: Box<MediaCounters>,
}

/// A node's media counters since it started, summed over its workers: what `/metrics` shows as
/// `mooyaho_sfu_*{node}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MediaCounters {
    /// UDP datagrams received (STUN, DTLS, SRTP, SRTCP, and refused ones).
    pub packets_in: u64,
    /// UDP datagrams sent.
    pub packets_out: u64,
    /// Bytes of the datagrams received.
    pub bytes_in: u64,
    /// Bytes of the datagrams sent.
    pub bytes_out: u64,
    /// RTP packets decrypted and handed to forwarding.
    pub rtp_in: u64,
    /// RTP copies forwarded to subscribers (retransmissions excluded).
    pub rtp_forwarded: u64,
    /// Sequence numbers subscribers NACKed.
    pub nacks_received: u64,
    /// Sequence numbers the node NACKed toward publishers.
    pub nacks_sent: u64,
    /// Retransmissions (RTX or byte-identical resends) sent to subscribers.
    pub retransmits_sent: u64,
    /// NACKed packets no longer buffered.
    pub retransmit_misses: u64,
    /// NACKed packets refused as repeats within the resend interval.
    pub retransmits_repeated: u64,
    /// NACKed packets refused over the subscriber's retransmission budget.
    pub retransmits_over_budget: u64,
    /// NACKed packets that could not be resent byte-identical.
    pub retransmits_unrepeatable: u64,
    /// PLIs sent to publishers.
    pub plis_sent: u64,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests_received: u64,
    /// Copies not sent because their subscription waits for a keyframe (to start or to switch
    /// layers).
    pub rtp_waiting_for_keyframe: u64,
    /// Video subscriptions paused because not even their lowest layer fit the subscriber's
    /// downlink estimate.
    pub bwe_pauses: u64,
    /// Such paused subscriptions resumed when their downlink took a layer again.
    pub bwe_resumes: u64,
    /// Probe packets sent to measure subscribers' downlink headroom.
    pub probe_packets_sent: u64,
    /// Publisher sender reports not translated (SR flood throttle).
    pub sr_throttled: u64,
    /// RTP packets over their track's bitrate cap, dropped.
    pub rtp_over_bitrate: u64,
    /// RTP packets on unknown SSRCs naming a rid no track announced, or a simulcast layer
    /// already bound to another SSRC, dropped.
    pub rtp_unknown_rid: u64,
    /// Audio level elements of the wrong size, not read.
    pub audio_level_malformed: u64,
    /// SRTP/SRTCP packets that failed authentication.
    pub srtp_auth_failures: u64,
    /// SRTP/SRTCP replays refused.
    pub srtp_replays: u64,
    /// Outgoing packets SRTP refused to protect (index reuse; never expected).
    pub srtp_index_reuse_refused: u64,
    /// DTLS handshakes completed (transports connected).
    pub dtls_handshakes: u64,
    /// DTLS handshakes or records that failed.
    pub dtls_failures: u64,
    /// Packets relayed between the node's workers (rooms spanning workers).
    pub relay_packets: u64,
    /// Packets dropped because a worker's relay queue was full.
    pub relay_drops: u64,
    /// Datagrams sent to other nodes over relay links (a room spanning nodes).
    pub node_relay_packets_out: u64,
    /// Authentic relay datagrams received from other nodes.
    pub node_relay_packets_in: u64,
    /// Relay datagrams dropped: no such link, failed authentication, or replayed.
    pub node_relay_rejected: u64,
    /// ICE-TCP connections accepted.
    pub ice_tcp_accepted: u64,
    /// ICE-TCP connections refused over the node's limits (in all or per client address).
    pub ice_tcp_refused: u64,
    /// ICE-TCP connections closed for bad input (framing, no STUN first, no first frame).
    pub ice_tcp_dropped: u64,
    /// ICE-TCP frames dropped on open connections (not STUN before validation, no RTC
    /// protocol, over the connection's rate).
    pub ice_tcp_frames_dropped: u64,
    /// ICE-TCP connections open now.
    pub ice_tcp_open: u64,
    /// Loss subscribers report, per report block (ratio, millionths).
    pub subscriber_loss: HistogramCounts,
    /// Loss of publishers' streams toward the node, per report block (ratio, millionths).
    pub publisher_loss: HistogramCounts,
    /// Round-trip time to subscribers (microseconds).
    pub subscriber_rtt: HistogramCounts,
    /// Per worker, the share of the last report interval it spent working rather than
    /// waiting for packets, in thousandths.
    pub worker_busy_permille: Vec<u64>,
}

/// A histogram as counts per bucket (not cumulative) in integer units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HistogramCounts {
    /// Upper bounds of the finite buckets, ascending.
    pub bounds: Vec<u64>,
    /// Observations per bucket; one more entry than `bounds` (the last is above every bound).
    pub counts: Vec<u64>,
    /// Sum of the observations.
    pub sum: u64,
}

/// A framing or decoding failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The frame is shorter than its header.
    #[error("truncated frame")]
    Truncated,
    /// The peer speaks another protocol version.
    #[error("the peer speaks control protocol version {0}; this build speaks version {VERSION}")]
    Version(u8),
    /// The body is not a valid message.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// SHA-256 fingerprint of a DER certificate, as upper-case colon-separated hex (the SDP
/// `a=fingerprint:sha-256` form). Both ends of the control plane pin node certificates by it,
/// and the media plane compares DTLS certificates with it.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Encodes a message as one frame.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let body = serde_json::to_vec(message).expect("control messages always serialize");
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    frame.push(VERSION);
    frame.extend_from_slice(&body);
    frame
}

/// Reads the length header: how many bytes follow it. Refuses frames over `max` up front, so a
/// reader never buffers more than that.
pub fn frame_len(header: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        return Err(FrameError::Truncated);
    }
    Ok(len)
}

/// Decodes the part of a frame after the length header (version byte + body).
pub fn decode<T: for<'de> Deserialize<'de>>(rest: &[u8]) -> Result<T, FrameError> {
    let (&version, body) = rest.split_first().ok_or(FrameError::Truncated)?;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    serde_json::from_slice(body).map_err(|e| FrameError::Invalid(e.to_string()))
}

/// Decodes a whole frame (header included) from untrusted bytes; for fuzzing and tests.
pub fn decode_frame<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<T, FrameError> {
    let header: [u8; 4] = frame
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated)?;
    let len = frame_len(header, MAX_FRAME)?;
    let rest = frame.get(4..4 + len).ok_or(FrameError::Truncated)?;
    decode(rest)
}

/// A failure to read a frame from a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The stream failed or ended before a whole frame.
    #[error("reading a control frame: {0}")]
    Io(#[from] std::io::Error),
    /// The frame is refused.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame of at most `max` bytes (after the length prefix) from `reader`. The length
/// is checked before any buffer is sized, and the buffer then grows only with bytes received,
/// so a peer announcing a huge frame and sending little costs little.
pub async fn read_frame<T, R>(reader: &mut R, max: usize) -> Result<T, ReadError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).await?;
    let len = frame_len(header, max)?;
    let mut rest = Vec::new();
    reader.take(len as u64).read_to_end(&mut rest).await?;
    if rest.len() < len {
        return Err(FrameError::Truncated.into());
    }
    Ok(decode(&rest)?)
}

/// Writes one frame to `writer`.
pub async fn write_frame<T, W>(writer: &mut W, message: &T) -> std::io::Result<()>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&encode(message)).await
}

/// Fuzz body: any bytes decode to a message or a typed error, and every decoded message
/// re-encodes to a frame that decodes to the same message.
pub fn fuzz_frame(data: &[u8]) {
    if let Ok(request) = decode_frame::<Request>(data) {
        assert_eq!(
            decode_frame::<Request>(&encode(&request)).ok(),
            Some(request)
        );
    }
    if let Ok(response) = decode_frame::<Response>(data) {
        assert_eq!(
            decode_frame::<Response>(&encode(&response)).ok(),
            Some(response)
        );
    }
    if let Ok(event) = decode_frame::<Event>(data) {
        assert_eq!(decode_frame::<Event>(&encode(&event)).ok(), Some(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_upper_case_colon_hex_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn frames_round_trip() {
        let request = Request::Publish {
            room: "0.1".into(),
            session: "s".into(),
            offer: "v=0\r\n".into(),
        };
        let frame = encode(&request);
        assert_eq!(decode_frame::<Request>(&frame).unwrap(), request);
        let event = Event::Load(Load {
            rooms: 2,
            ..Load::default()
        });
        assert_eq!(decode_frame::<Event>(&encode(&event)).unwrap(), event);
        let response = Response::Error {
            code: ErrorCode::UnknownRoom,
            message: "gone".into(),
        };
        assert_eq!(
            decode_frame::<Response>(&encode(&response)).unwrap(),
            response
        );
        let rooms = Response::Rooms {
            rooms: vec!["1f.0.1".into()],
        };
        assert_eq!(decode_frame::<Response>(&encode(&rooms)).unwrap(), rooms);
        assert_eq!(
            decode_frame::<Request>(&encode(&Request::Rooms)).unwrap(),
            Request::Rooms
        );
        let ask = Request::Speakers {
            room: "1f.0.1".into(),
        };
        assert_eq!(decode_frame::<Request>(&encode(&ask)).unwrap(), ask);
        let speakers = Response::Speakers {
            speakers: vec![Speaker {
                session: "s".into(),
                level: 42,
            }],
        };
        assert_eq!(
            decode_frame::<Response>(&encode(&speakers)).unwrap(),
            speakers
        );
    }

    /// Outside review F11: a relay request's `Debug` (a log line, a test's panic message)
    /// never shows its keys; on the wire they stay plain hex strings.
    #[test]
    fn relay_keys_stay_out_of_debug_output() {
        let (send, receive) = (
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210fedcba9876543210",
        );
        let accept = Request::AcceptRelay {
            room: "1f.0.1".into(),
            link: 7,
            publisher: "p".into(),
            send_key: RelayKeyHex::new(send),
            receive_key: RelayKeyHex::new(receive),
        };
        let shown = format!("{accept:?}");
        assert!(!shown.contains(send) && !shown.contains(receive), "{shown}");
        let json = serde_json::to_value(&accept).unwrap();
        assert_eq!(json["sendKey"], send);
        assert_eq!(json["receiveKey"], receive);
        assert_eq!(decode_frame::<Request>(&encode(&accept)).unwrap(), accept);
    }

    #[test]
    fn fuzz_body_round_trips_what_decodes() {
        fuzz_frame(&encode(&Request::CreateRoom));
        fuzz_frame(&encode(&Event::Load(Load::default())));
        fuzz_frame(&[0, 0, 0, 3, 1, b'{', b'}']);
        fuzz_frame(b"garbage");
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(decode_frame::<Request>(&[]), Err(FrameError::Truncated));
        assert_eq!(
            decode_frame::<Request>(&[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge(0xffff_ffff))
        );
        let mut frame = encode(&Request::CreateRoom);
        frame[4] = 9;
        assert_eq!(decode_frame::<Request>(&frame), Err(FrameError::Version(9)));
        let mut frame = encode(&Request::CreateRoom);
        frame.truncate(6);
        assert_eq!(decode_frame::<Request>(&frame), Err(FrameError::Truncated));
        let mut frame = encode(&Request::CreateRoom);
        frame[6] = b'!';
        assert!(matches!(
            decode_frame::<Request>(&frame),
            Err(FrameError::Invalid(_))
        ));
        for n in 0..frame.len() {
            let _ = decode_frame::<Request>(&frame[..n]);
        }
    }

    /// Polls a future once: the readers below are in-memory and always ready.
    fn ready<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("an in-memory read never waits"),
        }
    }

    fn hello() -> Request {
        Request::Hello {
            instance: "instance-1".into(),
            proof: Proof::new(b"secret", Role::Signaling, &[1; proof::EXPORTER_LEN]),
        }
    }

    #[test]
    fn read_frame_reads_consecutive_frames_and_write_frame_writes_them() {
        let mut wire = futures_util::io::Cursor::new(Vec::new());
        ready(write_frame(&mut wire, &hello())).unwrap();
        ready(write_frame(&mut wire, &Request::CreateRoom)).unwrap();
        let mut reader = futures_util::io::Cursor::new(wire.into_inner());
        let first: Request = ready(read_frame(&mut reader, MAX_HELLO_FRAME)).unwrap();
        assert_eq!(first, hello());
        let second: Request = ready(read_frame(&mut reader, MAX_FRAME)).unwrap();
        assert_eq!(second, Request::CreateRoom);
        assert!(matches!(
            ready(read_frame::<Request, _>(&mut reader, MAX_FRAME)),
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof
        ));
    }

    #[test]
    fn a_huge_length_prefix_is_refused_before_reading_or_allocating_the_body() {
        // 4 GiB announced; the reader must stop right after the 4-byte prefix.
        let mut reader = futures_util::io::Cursor::new(vec![0xff, 0xff, 0xff, 0xff, 1, b'{']);
        assert!(matches!(
            ready(read_frame::<Request, _>(&mut reader, MAX_FRAME)),
            Err(ReadError::Frame(FrameError::TooLarge(0xffff_ffff)))
        ));
        assert_eq!(reader.position(), 4);
        // A frame fine after authentication is too large for a hello.
        let big = encode(&Request::Publish {
            room: "0.1".into(),
            session: "s".into(),
            offer: "a".repeat(MAX_HELLO_FRAME),
        });
        let mut reader = futures_util::io::Cursor::new(big.clone());
        assert!(matches!(
            ready(read_frame::<Request, _>(&mut reader, MAX_HELLO_FRAME)),
            Err(ReadError::Frame(FrameError::TooLarge(_)))
        ));
        assert_eq!(reader.position(), 4);
        let mut reader = futures_util::io::Cursor::new(big);
        assert!(ready(read_frame::<Request, _>(&mut reader, MAX_FRAME)).is_ok());
    }

    #[test]
    fn a_frame_cut_short_is_truncated_not_padded() {
        let mut frame = encode(&hello());
        frame.truncate(frame.len() - 3);
        let mut reader = futures_util::io::Cursor::new(frame);
        assert!(matches!(
            ready(read_frame::<Request, _>(&mut reader, MAX_HELLO_FRAME)),
            Err(ReadError::Frame(FrameError::Truncated))
        ));
        // The one-megabyte frame announced by five bytes buffers five bytes, not a megabyte.
        let mut reader = futures_util::io::Cursor::new(vec![0, 0x10, 0, 0, VERSION, b'{', b'"']);
        assert!(matches!(
            ready(read_frame::<Request, _>(&mut reader, MAX_FRAME)),
            Err(ReadError::Frame(FrameError::Truncated))
        ));
    }

    #[test]
    fn another_version_is_named_in_the_error() {
        let mut frame = encode(&hello());
        frame[4] = 1;
        let mut reader = futures_util::io::Cursor::new(frame);
        let error = ready(read_frame::<Request, _>(&mut reader, MAX_HELLO_FRAME)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the peer speaks control protocol version 1; this build speaks version 2"
        );
    }

    #[test]
    fn the_hello_carries_a_proof_and_no_secret_field() {
        let frame = encode(&hello());
        let body = std::str::from_utf8(&frame[5..]).unwrap();
        assert!(body.contains(r#""proof":""#), "{body}");
        assert!(!body.contains("secret"), "{body}");
        // A version-1 hello (with a cleartext secret) does not decode as version 2.
        let mut old = br#"{"type":"hello","secret":"s","instance":"i"}"#.to_vec();
        old.insert(0, VERSION);
        assert!(matches!(
            decode::<Request>(&old),
            Err(FrameError::Invalid(_))
        ));
    }
}
