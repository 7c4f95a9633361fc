//! The control protocol between signaling instances (clients) and SFU nodes (servers), carried
//! over QUIC. This crate holds only the message types and their framing; both sides depend on it
//! and never on each other.
//!
//! # Exchange
//!
//! - The client opens the connection (TLS, the node's certificate pinned by its SHA-256
//!   fingerprint) and sends [`Request::Hello`] with the cluster secret on the first
//!   bidirectional stream. A wrong secret or version ends the connection.
//! - Every later request takes its own bidirectional stream: one [`Request`] frame from the
//!   client, one [`Response`] frame back, then both sides finish the stream.
//! - The node opens one unidirectional stream after the hello and writes [`Event`] frames on it
//!   for as long as the connection lives.
//!
//! # Framing
//!
//! A frame is a 4-byte big-endian length (of what follows), a 1-byte protocol version, and a
//! JSON body. JSON keeps the protocol inspectable; control traffic is a few messages per second.
//! Frames larger than [`MAX_FRAME`] are refused before they are buffered.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The QUIC ALPN protocol id.
pub const ALPN: &[u8] = b"mooyaho-control/1";
/// Largest frame accepted (SDP offers of large rooms stay well under this).
pub const MAX_FRAME: usize = 1024 * 1024;

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
        /// The shared cluster secret.
        secret: String,
        /// The signaling instance's id (for logs).
        instance: String,
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
    /// Applies a session's answer to its latest subscribe offer.
    SubscribeAnswer {
        /// The room.
        room: String,
        /// The session.
        session: String,
        /// The client's answer SDP.
        answer: String,
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
    /// Wrong cluster secret or protocol version.
    Unauthorized,
    /// The room does not exist on this node (it restarted, or the room was closed).
    UnknownRoom,
    /// The client's SDP was refused.
    BadSdp,
    /// The request is malformed or not allowed now.
    BadRequest,
    /// The node is draining or shutting down.
    Unavailable,
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
    /// Periodic load report (every second).
    Load(Load),
}

/// A node's load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    /// Rooms hosted.
    pub rooms: u64,
    /// Transports (publish + subscribe).
    pub transports: u64,
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
    /// The node is draining.
    pub draining: bool,
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
    #[error("unsupported protocol version {0}")]
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

/// Reads the length header: how many bytes follow it. Refuses oversized frames up front, so a
/// reader never buffers more than [`MAX_FRAME`].
pub fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
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
    let len = frame_len(header)?;
    let rest = frame.get(4..4 + len).ok_or(FrameError::Truncated)?;
    decode(rest)
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
}
