//! A scripted simulcast publisher's wire format: the rid-simulcast offer Chromium writes (one
//! video m-line, layers `q`, `h`, `f` announced by rid only) and RTP packets naming their layer
//! by the mid and rid header extensions.

#![allow(dead_code, unreachable_pub)]

use crate::support::raw;

/// A rid-simulcast publish offer on `ice` and `fingerprint` (mid extension id 1, rid id 2).
pub fn simulcast_offer(ice: &raw::IceCredentials, fingerprint: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {fingerprint}\r\n\
         a=setup:actpass\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
         a=sendonly\r\na=rtcp-mux\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
         a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
         a=msid:hostile camera\r\na=rid:q send\r\na=rid:h send\r\na=rid:f send\r\n\
         a=simulcast:send q;h;f\r\n",
        ice.ufrag, ice.pwd
    )
}

/// An RTP packet of `ssrc` carrying the mid `0` and `rid` header extensions (RFC 8285 one-byte
/// form) and a VP8 payload (`keyframe` or not) of `body`.
pub fn rid_packet(
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    rid: &[u8],
    keyframe: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut elements = vec![0x10, b'0', 0x20 | (rid.len() as u8 - 1)];
    elements.extend_from_slice(rid);
    while elements.len() % 4 != 0 {
        elements.push(0);
    }
    let mut packet = vec![0x90, 96];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(&[0xbe, 0xde]);
    packet.extend_from_slice(&((elements.len() / 4) as u16).to_be_bytes());
    packet.extend_from_slice(&elements);
    packet.extend_from_slice(&raw::vp8_payload(keyframe, body));
    packet
}
