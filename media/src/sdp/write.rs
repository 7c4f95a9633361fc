//! The SFU's side of an SDP: session header, transport attributes and codec lines shared by the
//! publish answer and the subscribe offer. Lines end with CRLF (RFC 8866 §5).

use super::parse::Media;
use super::{CandidateProtocol, Codec, LocalDescription, SdpError};

/// Appends one SDP line; writing to a `String` cannot fail.
macro_rules! sdp_line {
    ($out:expr, $($arg:tt)*) => {{
        let out: &mut String = $out;
        let _ = std::fmt::Write::write_fmt(out, format_args!($($arg)*));
        out.push_str("\r\n");
    }};
}
pub(super) use sdp_line;

/// `v=` … `a=msid-semantic`, with BUNDLE over `mids` (omitted when empty: a group needs a mid).
pub(super) fn session_header(
    out: &mut String,
    local: &LocalDescription,
    version: u64,
    mids: &[&str],
) {
    sdp_line!(out, "v=0");
    sdp_line!(
        out,
        "o=mooyaho {} {version} IN IP4 0.0.0.0",
        session_id(local)
    );
    sdp_line!(out, "s=-");
    sdp_line!(out, "t=0 0");
    if !mids.is_empty() {
        sdp_line!(out, "a=group:BUNDLE {}", mids.join(" "));
    }
    // RFC 8839 §5.2: the lite side says so; the client then takes the controlling role.
    sdp_line!(out, "a=ice-lite");
    sdp_line!(out, "a=msid-semantic: WMS");
}

/// `m=` and `c=` of an m-line the SFU uses, then our ICE/DTLS attributes, mid and rtcp-mux.
/// Repeated on every bundled m-line rather than only the tagged one: RFC 8843 §7.3.1 lets the
/// answerer omit them, but older parsers (and our own tests) read each m-line on its own.
pub(super) fn media_header(
    out: &mut String,
    local: &LocalDescription,
    media: &str,
    pts: &[u8],
    mid: &str,
    setup: &str,
) {
    let pts: Vec<String> = pts.iter().map(u8::to_string).collect();
    sdp_line!(out, "m={media} 9 UDP/TLS/RTP/SAVPF {}", pts.join(" "));
    // JSEP (RFC 8829 §5.2.1) dummy address: the real one is in the candidate.
    sdp_line!(out, "c=IN IP4 0.0.0.0");
    sdp_line!(out, "a=ice-ufrag:{}", local.ice.ufrag);
    sdp_line!(out, "a=ice-pwd:{}", local.ice.pwd);
    sdp_line!(out, "a=fingerprint:sha-256 {}", local.fingerprint.0);
    sdp_line!(out, "a=setup:{setup}");
    sdp_line!(out, "a=mid:{mid}");
    sdp_line!(out, "a=rtcp-mux");
}

/// `a=rtpmap`, `a=rtcp-fb`, `a=fmtp` of `codec` and, when it has one, its RTX (RFC 4588 §8.6).
pub(super) fn codec_lines(out: &mut String, codec: &Codec) {
    let Codec {
        name,
        pt,
        clock_rate,
        ..
    } = codec;
    match codec.channels {
        Some(channels) => sdp_line!(out, "a=rtpmap:{pt} {name}/{clock_rate}/{channels}"),
        None => sdp_line!(out, "a=rtpmap:{pt} {name}/{clock_rate}"),
    }
    for fb in codec
        .rtcp_fb
        .iter()
        .filter(|fb| super::SUPPORTED_RTCP_FB.contains(&fb.as_str()))
    {
        sdp_line!(out, "a=rtcp-fb:{pt} {fb}");
    }
    if let Some(fmtp) = &codec.fmtp {
        sdp_line!(out, "a=fmtp:{pt} {fmtp}");
    }
    if let Some(rtx) = codec.rtx_pt {
        sdp_line!(out, "a=rtpmap:{rtx} rtx/{clock_rate}");
        sdp_line!(out, "a=fmtp:{rtx} apt={pt}");
    }
}

/// The host candidates (RFC 8839 §5.1) and `a=end-of-candidates` (RFC 8840 §8.2): an ICE-lite
/// server never trickles.
pub(super) fn candidate_lines(out: &mut String, local: &LocalDescription) {
    let (mut udp, mut tcp) = (0u32, 0u32);
    for (index, candidate) in local.candidates.iter().enumerate() {
        let address = candidate.address;
        // Priority (RFC 8445 §5.1.2.1): host type preference 126, component 1. Local
        // preference: UDP from 65535 down, one less per address; TCP (RFC 6544 §4.2)
        // 2^13 × 4 (passive) + other-preference from 8191 down, so every UDP candidate outranks
        // every TCP one. Each candidate is its own foundation (other interface or protocol).
        let (local_preference, protocol, tcptype) = match candidate.protocol {
            CandidateProtocol::Udp => {
                udp += 1;
                (65536u32.saturating_sub(udp), "udp", "")
            }
            CandidateProtocol::TcpPassive => {
                tcp += 1;
                (
                    (4 << 13) + 8192u32.saturating_sub(tcp),
                    "tcp",
                    " tcptype passive",
                )
            }
        };
        let priority = (126u32 << 24) + (local_preference << 8) + 255;
        sdp_line!(
            out,
            "a=candidate:{} 1 {protocol} {priority} {} {} typ host{tcptype}",
            index + 1,
            address.ip(),
            address.port()
        );
    }
    sdp_line!(out, "a=end-of-candidates");
}

/// A stable `o=` session id for one transport: RFC 3264 §8 requires re-offers to keep it, and the
/// local ufrag is fixed for the transport's life (no ICE restart), so it is hashed (FNV-1a) into
/// a positive 63-bit number instead of being stored.
fn session_id(local: &LocalDescription) -> u64 {
    let hash = local
        .ice
        .ufrag
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    hash >> 1
}

/// RFC 8829 §5.3.1 / RFC 3264 §6: a rejected m-line keeps its media, proto and mid, with port 0
/// and at least one format from the offer so that it still parses.
pub(super) fn rejected_media(out: &mut String, m: &Media<'_>) -> Result<(), SdpError> {
    let format = m.formats.first().map(String::as_str).unwrap_or("0");
    if !super::parse::is_token(format) {
        return Err(SdpError::Malformed(format!(
            "format {:?} is not a token",
            super::parse::shorten(format)
        )));
    }
    sdp_line!(out, "m={} 0 {} {format}", m.media, m.proto);
    sdp_line!(out, "c=IN IP4 0.0.0.0");
    sdp_line!(out, "a=mid:{}", m.mid);
    sdp_line!(out, "a=inactive");
    if let Some(map) = m.pts.first().and_then(|&pt| m.rtpmap(pt)) {
        match map.channels {
            Some(channels) => sdp_line!(
                out,
                "a=rtpmap:{} {}/{}/{channels}",
                map.pt,
                map.name,
                map.clock_rate
            ),
            None => sdp_line!(out, "a=rtpmap:{} {}/{}", map.pt, map.name, map.clock_rate),
        }
    }
    Ok(())
}
