//! SDP for the SFU's two kinds of transport: it answers a client's publish offer, and it offers
//! the client a subscribe PeerConnection carrying every forwarded track. Input SDP is untrusted
//! text: parsing never panics and every rejection is a typed [`SdpError`].
//!
//! The SFU is ICE-lite (`a=ice-lite`) and BUNDLE-only with rtcp-mux. On publish transports it is
//! the DTLS server (`a=setup:passive` in answers); on subscribe transports it offers
//! `a=setup:actpass`, which browsers answer with `active` (the SFU serves) and Pion/webrtc-rs
//! answer with `passive` toward an ICE-lite offerer (the SFU connects) — see [`Setup`].
//!
//! - [`negotiate_publish`]: a client's publish offer → the SFU's answer and what it accepted.
//! - [`subscribe_offer`] / [`parse_subscribe_answer`]: the SFU-initiated subscribe session,
//!   re-offered with a higher `version` whenever forwarded tracks come or go.
//! - [`answer_subscribe_offer`]: a client's receive offer (WHEP) → the SFU's answer.
//! - [`random_ice_credentials`] and [`Fingerprint::of_der`] build a [`LocalDescription`].

mod client_subscribe;
mod credentials;
mod parse;
mod publish;
mod subscribe;
#[cfg(test)]
mod test_support;
mod write;

use std::net::SocketAddr;

pub use client_subscribe::{ClientSubscribe, answer_subscribe_offer};
pub use credentials::random_ice_credentials;
pub use publish::{PublishOffer, negotiate_parsed_publish, negotiate_publish};
pub use subscribe::{assign_payload_types, parse_subscribe_answer, subscribe_offer};

/// Why an SDP was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// Not parseable as SDP.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// A required attribute is missing (`what` names it).
    #[error("SDP lacks {0}")]
    Missing(&'static str),
    /// Something present but unsupported (e.g. no BUNDLE, no rtcp-mux, non-sha-256 fingerprint).
    #[error("unsupported SDP: {0}")]
    Unsupported(String),
    /// Valid, but asks for more than one publisher may hold ([`PublishLimits`]).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
}

/// What one publish offer may ask the SFU to hold. Every accepted track costs state on the node
/// (a track in sfu-core, SSRC routes) and an m-line in every subscriber's SDP, so a participant
/// must not choose how many. A simulcast track counts once (up to 3 layers, each with its RTX
/// SSRC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishLimits {
    /// m-lines in one offer, of any kind, accepted or not.
    pub max_media_sections: usize,
    /// Audio tracks one publisher may send.
    pub max_audio_tracks: usize,
    /// Video tracks one publisher may send (camera and screen share are two).
    pub max_video_tracks: usize,
}

impl Default for PublishLimits {
    /// 4 audio + 4 video tracks in at most 16 m-lines: a camera, a screen share and their audio
    /// with room to spare; a browser's offer for them has 2–4 m-lines (plus a data channel).
    fn default() -> Self {
        Self {
            max_media_sections: 16,
            max_audio_tracks: 4,
            max_video_tracks: 4,
        }
    }
}

/// ICE credentials (`a=ice-ufrag` / `a=ice-pwd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceCredentials {
    /// Username fragment.
    pub ufrag: String,
    /// Password.
    pub pwd: String,
}

/// A SHA-256 certificate fingerprint as 32 upper-case hex bytes separated by `:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub String);

/// What the SFU puts in its own side of every SDP.
#[derive(Clone, Debug)]
pub struct LocalDescription {
    /// The transport's ICE credentials.
    pub ice: IceCredentials,
    /// The node's DTLS certificate fingerprint.
    pub fingerprint: Fingerprint,
    /// The worker's host candidates, most preferred first within each protocol (never empty:
    /// a UDP one per address the node announces, and a passive TCP one each with ICE-TCP).
    pub candidates: Vec<Candidate>,
}

/// One of the node's ICE candidates: always of type host (the node is ICE-lite, RFC 8445 §2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Where clients reach it.
    pub address: SocketAddr,
    /// How.
    pub protocol: CandidateProtocol,
}

/// A candidate's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateProtocol {
    /// UDP datagrams.
    Udp,
    /// A TCP listener that clients connect to (RFC 6544 `tcptype passive`), RFC 4571 framing.
    TcpPassive,
}

impl Candidate {
    /// A UDP host candidate.
    pub fn udp(address: SocketAddr) -> Self {
        Self {
            address,
            protocol: CandidateProtocol::Udp,
        }
    }

    /// A passive TCP host candidate.
    pub fn tcp_passive(address: SocketAddr) -> Self {
        Self {
            address,
            protocol: CandidateProtocol::TcpPassive,
        }
    }
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// `m=audio`.
    Audio,
    /// `m=video`.
    Video,
}

/// One negotiated codec.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Codec {
    /// Encoding name as in `a=rtpmap` (`opus`, `VP8`, `VP9`, `H264`, `AV1`).
    pub name: String,
    /// Payload type.
    pub pt: u8,
    /// Clock rate.
    pub clock_rate: u32,
    /// Channels (2 for opus), if given.
    pub channels: Option<u16>,
    /// The `a=fmtp` parameters, verbatim.
    pub fmtp: Option<String>,
    /// `a=rtcp-fb` values for this payload type, among [`SUPPORTED_RTCP_FB`].
    pub rtcp_fb: Vec<String>,
    /// The RTX payload type associated with this codec (`a=fmtp:<rtx> apt=<pt>`), if offered.
    pub rtx_pt: Option<u8>,
}

/// A negotiated RTP header extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Local id (1–14 one-byte, up to 255 two-byte).
    pub id: u8,
    /// URI.
    pub uri: String,
}

/// One track the client publishes, as accepted in the answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedTrack {
    /// The m-line's mid.
    pub mid: String,
    /// Audio or video.
    pub kind: Kind,
    /// The single codec the SFU accepted (first supported one in the client's order).
    pub codec: Codec,
    /// Its encodings, lowest quality first: one for a plain track, two or three simulcast
    /// layers (`a=ssrc-group:SIM`, or RFC 8853 rids).
    pub encodings: Vec<PublishedEncoding>,
    /// The client's `a=msid` stream and track ids, if present.
    pub msid: Option<(String, String)>,
}

/// One encoding of a published track: its only stream, or one simulcast layer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedEncoding {
    /// The layer's `a=rid` (RFC 8851); its SSRCs are then learned from the first packets.
    pub rid: Option<String>,
    /// Media SSRC (`a=ssrc`, the first SSRC of an `a=ssrc-group:FID`, or a SIM group's member).
    pub ssrc: Option<u32>,
    /// RTX SSRC (second SSRC of the media SSRC's `a=ssrc-group:FID`), if any.
    pub rtx_ssrc: Option<u32>,
}

impl PublishedTrack {
    /// Whether the track is simulcast (more than one encoding).
    pub fn is_simulcast(&self) -> bool {
        self.encodings.len() > 1
    }

    /// Whether the publisher may send RTX for it (an RTX payload type, and an RTX SSRC
    /// signalled or learnable by repaired-rid).
    pub fn has_rtx(&self) -> bool {
        self.codec.rtx_pt.is_some()
            && self
                .encodings
                .iter()
                .any(|e| e.rtx_ssrc.is_some() || e.rid.is_some())
    }

    /// The SSRC of the highest layer, when signalled.
    pub fn top_ssrc(&self) -> Option<u32> {
        self.encodings.last().and_then(|e| e.ssrc)
    }
}

/// A parsed publish offer with the SFU's answer to it.
#[derive(Clone, Debug)]
pub struct PublishNegotiation {
    /// The answer SDP to send back.
    pub answer: String,
    /// The client's ICE credentials.
    pub remote_ice: IceCredentials,
    /// The client's certificate fingerprint (verified during the DTLS handshake).
    pub remote_fingerprint: Fingerprint,
    /// Header extensions accepted (ids as the client chose them).
    pub extensions: Vec<Extension>,
    /// Tracks accepted. m-lines the SFU cannot use (no supported codec, `inactive`, data
    /// channels) are rejected in the answer with port 0 and do not appear here.
    pub tracks: Vec<PublishedTrack>,
}

/// One track the SFU forwards to a subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedTrack {
    /// The m-line's mid in the subscribe session (stable across re-offers).
    pub mid: String,
    /// Audio or video.
    pub kind: Kind,
    /// The publisher's codec (same payload type and fmtp; the SFU does not transcode).
    pub codec: Codec,
    /// The SSRC the subscriber will receive.
    pub ssrc: u32,
    /// The RTX SSRC the subscriber will receive, when the codec has RTX.
    pub rtx_ssrc: Option<u32>,
    /// `a=msid` stream id: the publishing session's id, so the client can tell whose it is.
    pub stream_id: String,
    /// `a=msid` track id.
    pub track_id: String,
    /// False once the track ended: the m-line is then rejected (port 0) with its mid, or kept
    /// `inactive` if it is the first m-line (see [`subscribe_offer`]); either way the client
    /// stops receiving it and ends the track.
    pub active: bool,
}

/// The DTLS role a client takes in its answer (RFC 5763 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// `a=setup:active`: the client sends the ClientHello; the SFU serves.
    Active,
    /// `a=setup:passive`: the SFU sends the ClientHello.
    Passive,
}

/// The subscriber's answer to an SFU offer.
#[derive(Clone, Debug)]
pub struct SubscribeAnswer {
    /// The client's ICE credentials.
    pub remote_ice: IceCredentials,
    /// The client's certificate fingerprint.
    pub remote_fingerprint: Fingerprint,
    /// The DTLS role the client took (`a=setup`).
    pub remote_setup: Setup,
    /// Header extensions the client accepted (a subset of those offered, same ids).
    pub extensions: Vec<Extension>,
    /// Mids the client accepted to receive (`recvonly`, port ≠ 0).
    pub accepted_mids: Vec<String>,
}

/// `urn:ietf:params:rtp-hdrext:sdes:mid` (RFC 8843 §15.2): lets a receiver map an SSRC it has
/// not seen in the SDP to its m-line.
pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// `abs-send-time`: the send-side timestamps REMB bandwidth estimation needs.
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
/// Transport-wide sequence numbers for transport-cc (TWCC) feedback.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// Client-to-mixer audio level (RFC 6464), for active-speaker detection.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// `rtp-stream-id` (RFC 8852): names the simulcast layer of a packet.
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
/// `repaired-rtp-stream-id` (RFC 8852): names the layer an RTX packet repairs.
pub const REPAIRED_RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
/// Accepted from publishers on rid-simulcast m-lines only (elsewhere nobody sends them).
pub const RID_EXTENSIONS: &[&str] = &[RID_URI, REPAIRED_RID_URI];

/// The only header extensions the SFU accepts from publishers (plus [`RID_EXTENSIONS`] on
/// simulcast m-lines); any other `a=extmap` in an offer is left out of the answer, so clients
/// do not spend bytes on extensions nobody reads.
pub const SUPPORTED_EXTENSIONS: &[&str] = &[
    MID_URI,
    ABS_SEND_TIME_URI,
    TRANSPORT_CC_URI,
    AUDIO_LEVEL_URI,
];

/// The header extensions, with their fixed ids, every subscribe offer declares. Ids 1–4 fit the
/// one-byte header form (RFC 8285 §4.2), so `a=extmap-allow-mixed` is never needed. Audio
/// m-lines omit abs-send-time (REMB only estimates video) and video m-lines omit audio level.
pub const SUBSCRIBE_EXTENSIONS: &[(u8, &str)] = &[
    (1, MID_URI),
    (2, ABS_SEND_TIME_URI),
    (3, TRANSPORT_CC_URI),
    (4, AUDIO_LEVEL_URI),
];

/// The `a=rtcp-fb` values the SFU implements; others are dropped from answers and offers.
pub const SUPPORTED_RTCP_FB: &[&str] =
    &["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"];

/// Fuzz target body for `fuzz/fuzz_targets/sdp_offer.rs`: arbitrary bytes as a publish offer and
/// as a subscribe answer. Nothing may panic, and an accepted offer's answer must parse back.
pub fn fuzz_sdp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let local = LocalDescription {
        ice: IceCredentials {
            ufrag: "fuzzUfrg".to_owned(),
            pwd: "fuzzPasswordFuzzPassword".to_owned(),
        },
        fingerprint: Fingerprint::of_der(b"fuzz"),
        candidates: vec![Candidate::udp(SocketAddr::from(([192, 0, 2, 1], 3478)))],
    };
    if let Ok(negotiation) = negotiate_publish(text, &local, &PublishLimits::default()) {
        assert!(
            parse::session(&negotiation.answer).is_ok(),
            "our answer must parse"
        );
        // What a publisher negotiated is forwarded verbatim: it must be writable into a
        // subscribe offer. Only a payload type reused across its m-lines may clash there.
        let forwarded: Vec<ForwardedTrack> = negotiation
            .tracks
            .iter()
            .enumerate()
            .map(|(i, track)| ForwardedTrack {
                mid: i.to_string(),
                kind: track.kind,
                codec: track.codec.clone(),
                // The node picks subscriber SSRCs itself, whatever the publisher's.
                ssrc: 2 * i as u32 + 1,
                rtx_ssrc: track.has_rtx().then_some(2 * i as u32 + 2),
                stream_id: "publisher".to_owned(),
                track_id: format!("track{i}"),
                active: true,
            })
            .collect();
        match subscribe_offer(&local, 1, &forwarded) {
            Ok(offer) => assert!(parse::session(&offer).is_ok(), "our offer must parse"),
            Err(SdpError::Unsupported(why)) if why.contains("payload type") => {}
            Err(other) => panic!("negotiated tracks cannot be re-offered: {other:?}"),
        }
    }
    let offered = [ForwardedTrack {
        mid: "0".to_owned(),
        kind: Kind::Audio,
        codec: Codec {
            name: "opus".to_owned(),
            pt: 111,
            clock_rate: 48_000,
            channels: Some(2),
            fmtp: None,
            rtcp_fb: Vec::new(),
            rtx_pt: None,
        },
        ssrc: 1,
        rtx_ssrc: None,
        stream_id: "s".to_owned(),
        track_id: "t".to_owned(),
        active: true,
    }];
    let _ = parse_subscribe_answer(text, &offered);
}
