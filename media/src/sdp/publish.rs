//! Answering a client's publish offer: the SFU only receives on this transport.

use std::collections::HashMap;

use super::parse::{self, Direction, Media, RtpMap};
use super::write::{self, sdp_line};
use super::{
    Codec, Extension, Kind, LocalDescription, PublishNegotiation, PublishedTrack, SdpError,
};

/// Parses a client's publish offer and writes the SFU's answer (RFC 8829 §5.3).
///
/// Every m-line is answered in order with its mid. An m-line is accepted when it is audio or
/// video over `UDP/TLS/RTP/SAVPF`, in the BUNDLE group, `sendonly`/`sendrecv` and offers a supported
/// codec (audio: `opus/48000/2`; video: the client's first of VP8, VP9, H264 with
/// `packetization-mode=1`, AV1); it is answered `recvonly` with that single codec and its RTX.
/// Other m-lines (data channels, `inactive`/`recvonly`, unknown codecs) are rejected with port 0.
///
/// Errors: [`SdpError::Malformed`] for unparseable text, numbers out of range or duplicate
/// mids/SSRCs; [`SdpError::Missing`] for absent mid, ICE credentials, fingerprint or SSRC;
/// [`SdpError::Unsupported`] without BUNDLE or rtcp-mux, for a non-sha-256 fingerprint, for
/// simulcast, for conflicting extension ids, or when no m-line can be accepted.
pub fn negotiate_publish(
    offer: &str,
    local: &LocalDescription,
) -> Result<PublishNegotiation, SdpError> {
    let session = parse::session(offer)?;
    let media = Media::all(&session)?;
    let bundle = parse::bundle_group(&session)
        .filter(|group| !group.is_empty())
        .ok_or_else(|| {
            SdpError::Unsupported(
                "no a=group:BUNDLE: the SFU carries all media on one transport (RFC 8843)"
                    .to_owned(),
            )
        })?;
    // The offerer-tagged m= section is the first mid of the group; its transport attributes
    // apply to the whole group (RFC 8843 §7.2.1).
    let tagged = media
        .iter()
        .position(|m| m.mid == bundle[0])
        .ok_or_else(|| {
            SdpError::Malformed(format!(
                "BUNDLE mid {} names no m-line",
                parse::shorten(bundle[0])
            ))
        })?;
    let (remote_ice, remote_fingerprint) =
        parse::transport(&session, &session.media_descriptions[tagged])?;

    let accepted = media
        .iter()
        .map(|m| accept(m, &bundle))
        .collect::<Result<Vec<_>, _>>()?;
    let extensions = bundle_extensions(&accepted)?;
    check_ssrcs_unique(&accepted)?;
    let mids: Vec<&str> = accepted
        .iter()
        .flatten()
        .map(|a| a.track.mid.as_str())
        .collect();
    if mids.is_empty() {
        return Err(SdpError::Unsupported(
            "no m-line with a supported codec, direction and transport to receive".to_owned(),
        ));
    }

    let mut answer = String::with_capacity(1024 + 1024 * media.len());
    write::session_header(&mut answer, local, 1, &mids);
    for (m, accepted) in media.iter().zip(&accepted) {
        match accepted {
            Some(accepted) => write_accepted(&mut answer, local, m, accepted),
            None => write_rejected(&mut answer, m)?,
        }
    }
    Ok(PublishNegotiation {
        answer,
        remote_ice,
        remote_fingerprint,
        extensions,
        tracks: accepted.into_iter().flatten().map(|a| a.track).collect(),
    })
}

/// An m-line the SFU will receive.
struct Accepted {
    track: PublishedTrack,
    /// Supported extensions this m-line offered, with the client's ids.
    extensions: Vec<Extension>,
}

/// `Ok(None)` rejects the m-line in the answer; `Err` refuses the whole offer for things the
/// client asked for that the SFU cannot do on a media m-line it would otherwise accept.
fn accept(m: &Media<'_>, bundle: &[&str]) -> Result<Option<Accepted>, SdpError> {
    let Some(kind) = m.kind else { return Ok(None) };
    let receivable = m.is_dtls_srtp()
        && (m.port != 0 || m.bundle_only)
        && matches!(m.direction, Direction::SendOnly | Direction::SendRecv)
        && bundle.contains(&m.mid);
    if !receivable {
        return Ok(None);
    }
    let Some(codec) = choose_codec(m, kind) else {
        return Ok(None);
    };
    if !m.rtcp_mux {
        return Err(SdpError::Unsupported(format!(
            "m-line {} lacks a=rtcp-mux (RFC 8843 §9.3 requires it)",
            m.mid
        )));
    }
    if let Some(how) = m.simulcast {
        return Err(SdpError::Unsupported(format!(
            "m-line {}: simulcast ({how}) publishing is not supported yet",
            m.mid
        )));
    }
    let (ssrc, rtx_ssrc) = match m.fid {
        Some((media, rtx)) => (media, Some(rtx)),
        None => (*m.ssrcs.first().ok_or(SdpError::Missing("ssrc"))?, None),
    };
    let extensions = m
        .extmaps
        .iter()
        // Ids above 14 need the two-byte header form, only usable with a=extmap-allow-mixed,
        // which the answer does not declare (RFC 8285 §6).
        .filter(|ext| {
            !ext.not_sent && ext.id <= 14 && super::SUPPORTED_EXTENSIONS.contains(&ext.uri)
        })
        .map(|ext| Extension {
            id: ext.id,
            uri: ext.uri.to_owned(),
        })
        .fold(Vec::<Extension>::new(), |mut out, ext| {
            if !out.iter().any(|e| e.uri == ext.uri) {
                out.push(ext);
            }
            out
        });
    let track = PublishedTrack {
        mid: m.mid.to_owned(),
        kind,
        // Without an RTX payload type in the answer the client sends no RTX, FID or not.
        rtx_ssrc: rtx_ssrc.filter(|_| codec.rtx_pt.is_some()),
        codec,
        ssrc,
        msid: m
            .msid
            .or(m.ssrc_msid)
            .map(|(stream, track)| (stream.to_owned(), track.to_owned())),
    };
    Ok(Some(Accepted { track, extensions }))
}

/// The client's first supported codec (RFC 3264 §6.1: the format list is in preference order),
/// then, among entries of the same codec, the most widely decodable profile: the SFU does not
/// transcode, so every subscriber must decode what the publisher sends.
fn choose_codec(m: &Media<'_>, kind: Kind) -> Option<Codec> {
    let supported = |map: &&RtpMap<'_>| match kind {
        Kind::Audio => {
            map.name.eq_ignore_ascii_case("opus")
                && map.clock_rate == 48_000
                && map.channels == Some(2)
        }
        Kind::Video => {
            map.clock_rate == 90_000
                && VIDEO_CODECS.iter().any(|name| map.name.eq_ignore_ascii_case(name))
                // RFC 6184 §6.2: mode 0 (the default) allows single NAL units only, which
                // browsers do not send at useful resolutions.
                && (!map.name.eq_ignore_ascii_case("H264") || m.fmtp_param(map.pt, "packetization-mode") == Some("1"))
        }
    };
    let candidates = || {
        m.pts
            .iter()
            .filter_map(|&pt| m.rtpmap(pt))
            .filter(supported)
    };
    let first = candidates().next()?;
    let chosen = candidates()
        .filter(|map| map.name.eq_ignore_ascii_case(first.name))
        .min_by_key(|map| profile_rank(m, map))?;
    let name = match kind {
        Kind::Audio => "opus",
        Kind::Video => VIDEO_CODECS
            .iter()
            .find(|name| chosen.name.eq_ignore_ascii_case(name))?,
    };
    let pt = chosen.pt;
    let rtx_pt = m.pts.iter().copied().find(|&rtx| {
        m.rtpmap(rtx).is_some_and(|map| {
            map.name.eq_ignore_ascii_case("rtx") && map.clock_rate == chosen.clock_rate
        }) && m
            .fmtp_param(rtx, "apt")
            .and_then(|apt| apt.parse::<u8>().ok())
            == Some(pt)
    });
    Some(Codec {
        name: name.to_owned(),
        pt,
        clock_rate: chosen.clock_rate,
        channels: chosen.channels,
        fmtp: m.fmtp(pt).filter(|f| !f.is_empty()).map(str::to_owned),
        rtcp_fb: m.rtcp_fb(pt),
        rtx_pt,
    })
}

/// 0 for the profile every browser decodes, 1 otherwise. H264: Baseline / Constrained Baseline
/// (`profile_idc` 0x42, e.g. 42e01f, 42001f); VP9: profile 0 (8-bit 4:2:0); AV1: Main (0).
fn profile_rank(m: &Media<'_>, map: &RtpMap<'_>) -> u8 {
    let baseline = if map.name.eq_ignore_ascii_case("H264") {
        m.fmtp_param(map.pt, "profile-level-id")
            .is_some_and(|id| id.len() == 6 && id[..2].eq_ignore_ascii_case("42"))
    } else if map.name.eq_ignore_ascii_case("VP9") {
        m.fmtp_param(map.pt, "profile-id")
            .is_none_or(|id| id == "0")
    } else if map.name.eq_ignore_ascii_case("AV1") {
        m.fmtp_param(map.pt, "profile").is_none_or(|id| id == "0")
    } else {
        true
    };
    u8::from(!baseline)
}

/// The union of accepted extensions. RFC 8843 §9.2: within a BUNDLE group an id names one
/// extension, since the receiver parses headers before knowing the m-line.
fn bundle_extensions(accepted: &[Option<Accepted>]) -> Result<Vec<Extension>, SdpError> {
    let mut by_id: HashMap<u8, &str> = HashMap::new();
    let mut out: Vec<Extension> = Vec::new();
    for ext in accepted.iter().flatten().flat_map(|a| &a.extensions) {
        let known_uri = *by_id.entry(ext.id).or_insert(&ext.uri);
        let same_uri_other_id = out.iter().any(|e| e.uri == ext.uri && e.id != ext.id);
        if known_uri != ext.uri || same_uri_other_id {
            return Err(SdpError::Unsupported(format!(
                "extmap id {} / {} used inconsistently across the BUNDLE group",
                ext.id, ext.uri
            )));
        }
        if !out.contains(ext) {
            out.push(ext.clone());
        }
    }
    Ok(out)
}

/// SSRCs identify streams on the one bundled transport (RFC 8843 §9.2), so they must be unique.
fn check_ssrcs_unique(accepted: &[Option<Accepted>]) -> Result<(), SdpError> {
    let mut seen = Vec::new();
    for track in accepted.iter().flatten().map(|a| &a.track) {
        for ssrc in std::iter::once(track.ssrc).chain(track.rtx_ssrc) {
            if seen.contains(&ssrc) {
                return Err(SdpError::Malformed(format!("ssrc {ssrc} used twice")));
            }
            seen.push(ssrc);
        }
    }
    Ok(())
}

fn write_accepted(out: &mut String, local: &LocalDescription, m: &Media<'_>, accepted: &Accepted) {
    let codec = &accepted.track.codec;
    let pts: Vec<u8> = std::iter::once(codec.pt).chain(codec.rtx_pt).collect();
    write::media_header(out, local, m.media, &pts, m.mid, "passive");
    for ext in &accepted.extensions {
        sdp_line!(out, "a=extmap:{} {}", ext.id, ext.uri);
    }
    sdp_line!(out, "a=recvonly");
    write::codec_lines(out, codec);
    write::candidate_lines(out, local);
}

/// RFC 8829 §5.3.1 / RFC 3264 §6: a rejected m-line keeps its media, proto and mid, with port 0
/// and at least one format from the offer so that it still parses.
fn write_rejected(out: &mut String, m: &Media<'_>) -> Result<(), SdpError> {
    let format = m.formats.first().map(String::as_str).unwrap_or("0");
    if !parse::is_token(format) {
        return Err(SdpError::Malformed(format!(
            "format {:?} is not a token",
            parse::shorten(format)
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

const VIDEO_CODECS: &[&str] = &["VP8", "VP9", "H264", "AV1"];
