//! Answering a client's publish offer: the SFU only receives on this transport.

use std::collections::HashMap;

use sdp::description::session::SessionDescription;

use super::parse::{self, Direction, Media, RtpMap};
use super::write::{self, sdp_line};
use super::{
    Codec, Extension, Kind, LocalDescription, PublishLimits, PublishNegotiation, PublishedEncoding,
    PublishedTrack, SdpError,
};

/// Parses a client's publish offer and writes the SFU's answer (RFC 8829 §5.3).
///
/// Every m-line is answered in order with its mid. An m-line is accepted when it is audio or
/// video over `UDP/TLS/RTP/SAVPF`, in the BUNDLE group, `sendonly`/`sendrecv` and offers a
/// supported codec (audio: `opus/48000/2`; video: the client's first of VP8, VP9, H264 with
/// `packetization-mode=1`, AV1); it is answered `recvonly` with that single codec and its RTX.
/// Other m-lines (data channels, `inactive`/`recvonly`, unknown codecs) are rejected with port 0.
///
/// Errors: [`SdpError::Malformed`] for unparseable text, numbers out of range or duplicate
/// mids/SSRCs; [`SdpError::Missing`] for absent mid, ICE credentials, fingerprint or SSRC;
/// [`SdpError::Unsupported`] without BUNDLE or rtcp-mux, for a non-sha-256 fingerprint or an
/// `a=setup` other than `actpass`/`active`, for rid simulcast without the rid header extension,
/// for conflicting extension ids, or when no m-line can be accepted;
/// [`SdpError::LimitExceeded`] for more than three simulcast layers on an m-line, or more
/// m-lines, or more accepted tracks of a kind, than `limits`
/// allow (checked before any m-line is examined, and before anything is created).
pub fn negotiate_publish(
    offer: &str,
    local: &LocalDescription,
    limits: &PublishLimits,
) -> Result<PublishNegotiation, SdpError> {
    negotiate_parsed_publish(&PublishOffer::parse(offer)?, local, limits)
}

/// A client's publish offer after the syntax and text checks of [`negotiate_publish`], before
/// negotiation. One text always parses the same way: the `media_worker` fuzz harness, which
/// publishes four fixed offers over and over, parses each once instead of on every publish
/// (the parse was a fifth of its time).
#[derive(Debug)]
pub struct PublishOffer(SessionDescription);

impl PublishOffer {
    /// Errors: as [`negotiate_publish`] for unparseable or oversized text.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        parse::session(text).map(Self)
    }
}

/// [`negotiate_publish`] of an offer already parsed.
pub fn negotiate_parsed_publish(
    offer: &PublishOffer,
    local: &LocalDescription,
    limits: &PublishLimits,
) -> Result<PublishNegotiation, SdpError> {
    let session = &offer.0;
    let sections = session.media_descriptions.len();
    if sections > limits.max_media_sections {
        return Err(SdpError::LimitExceeded(format!(
            "the offer has {sections} m-lines; at most {} are accepted",
            limits.max_media_sections
        )));
    }
    let media = Media::all(session)?;
    let (bundle, remote_ice, remote_fingerprint) = parse::offered_transport(session, &media)?;

    let accepted = media
        .iter()
        .map(|m| accept(m, &bundle))
        .collect::<Result<Vec<_>, _>>()?;
    check_track_limits(&accepted, limits)?;
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
            None => write::rejected_media(&mut answer, m)?,
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
    /// Rid simulcast: the layers' rids in the offer's order (answered `recv`, RFC 8853 §5.3).
    rids: Vec<String>,
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
    let (encodings, rids) = encodings(m)?;
    let simulcast_by_rid = !rids.is_empty();
    let extensions = m
        .extmaps
        .iter()
        // Ids above 14 need the two-byte header form, only usable with a=extmap-allow-mixed,
        // which the answer does not declare (RFC 8285 §6).
        .filter(|ext| {
            let wanted = super::SUPPORTED_EXTENSIONS.contains(&ext.uri)
                || (simulcast_by_rid && super::RID_EXTENSIONS.contains(&ext.uri));
            !ext.not_sent && ext.id <= 14 && wanted
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
    if simulcast_by_rid && !extensions.iter().any(|e| e.uri == super::RID_URI) {
        return Err(SdpError::Unsupported(format!(
            "m-line {}: simulcast by rid needs the {} header extension (id 1–14) to tell the \
             layers apart",
            m.mid,
            super::RID_URI
        )));
    }
    // Without an RTX payload type in the answer the client sends no RTX, FID or not.
    let encodings = encodings
        .into_iter()
        .map(|e| PublishedEncoding {
            rtx_ssrc: e.rtx_ssrc.filter(|_| codec.rtx_pt.is_some()),
            ..e
        })
        .collect();
    let track = PublishedTrack {
        mid: m.mid.to_owned(),
        kind,
        codec,
        encodings,
        msid: m
            .msid
            .or(m.ssrc_msid)
            .map(|(stream, track)| (stream.to_owned(), track.to_owned())),
    };
    Ok(Some(Accepted {
        track,
        extensions,
        rids,
    }))
}

/// The m-line's encodings, lowest quality first: its one SSRC (with the RTX of its
/// `ssrc-group:FID`), the layers of `a=ssrc-group:SIM` (in the group's order, each with its
/// FID), or the send streams of RFC 8853 `a=simulcast` / RFC 8851 `a=rid`, whose SSRCs the node
/// learns from the rid header extension of their first packets (browsers signal none). Rid
/// layers are ordered `q` < `h` < `f` when named so (the SDK's and LiveKit's convention), else
/// in the offer's order, which libwebrtc clients write lowest first. Also returns the rids in
/// the offer's order, for the answer's `a=simulcast:recv`.
fn encodings(m: &Media<'_>) -> Result<(Vec<PublishedEncoding>, Vec<String>), SdpError> {
    let too_many = |count: usize| {
        SdpError::LimitExceeded(format!(
            "m-line {}: {count} simulcast layers; at most {MAX_SIMULCAST_LAYERS}",
            m.mid
        ))
    };
    if !m.send_rids.is_empty() || m.simulcast_send.is_some() {
        let streams: Vec<&str> = match m.simulcast_send {
            // One stream per `;`; within it `,` lists alternatives (the first is ours) and `~`
            // marks one that starts paused (still a layer).
            Some(list) => list
                .split(';')
                .map(|stream| {
                    let first = stream.split(',').next().unwrap_or("");
                    first.strip_prefix('~').unwrap_or(first)
                })
                .collect(),
            None => m.send_rids.clone(),
        };
        if streams.len() > MAX_SIMULCAST_LAYERS {
            return Err(too_many(streams.len()));
        }
        let mut rids: Vec<&str> = Vec::with_capacity(streams.len());
        for rid in streams {
            if !is_rid(rid) {
                return Err(SdpError::Malformed(format!(
                    "m-line {}: rid {:?} is not a 1–16 character token",
                    m.mid,
                    parse::shorten(rid)
                )));
            }
            if !m.send_rids.contains(&rid) {
                return Err(SdpError::Malformed(format!(
                    "m-line {}: a=simulcast names rid {rid} without an a=rid:{rid} send line",
                    m.mid
                )));
            }
            if rids.contains(&rid) {
                return Err(SdpError::Malformed(format!(
                    "m-line {}: rid {rid} listed twice",
                    m.mid
                )));
            }
            rids.push(rid);
        }
        let offer_order: Vec<String> = rids.iter().map(|rid| (*rid).to_owned()).collect();
        const CONVENTION: [&str; 3] = ["q", "h", "f"];
        if rids.iter().all(|rid| CONVENTION.contains(rid)) {
            rids.sort_by_key(|rid| CONVENTION.iter().position(|c| c == rid));
        }
        let encodings = rids
            .into_iter()
            .map(|rid| PublishedEncoding {
                rid: Some(rid.to_owned()),
                ssrc: None,
                rtx_ssrc: None,
            })
            .collect();
        return Ok((encodings, offer_order));
    }
    let rtx_of = |ssrc: u32| m.fids.iter().find(|(media, _)| *media == ssrc).map(|f| f.1);
    if let Some(group) = &m.sim_group {
        if group.len() > MAX_SIMULCAST_LAYERS {
            return Err(too_many(group.len()));
        }
        if group.is_empty() {
            return Err(SdpError::Malformed(format!(
                "m-line {}: empty ssrc-group:SIM",
                m.mid
            )));
        }
        let encodings = group
            .iter()
            .map(|&ssrc| PublishedEncoding {
                rid: None,
                ssrc: Some(ssrc),
                rtx_ssrc: rtx_of(ssrc),
            })
            .collect();
        return Ok((encodings, Vec::new()));
    }
    let ssrc = match m.fids.first() {
        Some(&(media, _)) => media,
        None => *m.ssrcs.first().ok_or(SdpError::Missing("ssrc"))?,
    };
    let plain = PublishedEncoding {
        rid: None,
        ssrc: Some(ssrc),
        rtx_ssrc: rtx_of(ssrc),
    };
    Ok((vec![plain], Vec::new()))
}

/// RFC 8851 §10: `rid-id = 1*(alpha-numeric / "-" / "_")`; we also bound its length to what
/// the rid header extension can carry in the one-byte form.
fn is_rid(rid: &str) -> bool {
    (1..=16).contains(&rid.len())
        && rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Most layers of one simulcast track (sfu-core's [`sfu_core::Encodings`] holds three).
const MAX_SIMULCAST_LAYERS: usize = 3;

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
                && (!map.name.eq_ignore_ascii_case("H264")
                    || m.fmtp_param(map.pt, "packetization-mode") == Some("1"))
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

/// The whole offer is refused rather than trimmed: which tracks to drop is the client's choice.
fn check_track_limits(
    accepted: &[Option<Accepted>],
    limits: &PublishLimits,
) -> Result<(), SdpError> {
    for (kind, name, max) in [
        (Kind::Audio, "audio", limits.max_audio_tracks),
        (Kind::Video, "video", limits.max_video_tracks),
    ] {
        let count = accepted
            .iter()
            .flatten()
            .filter(|a| a.track.kind == kind)
            .count();
        if count > max {
            return Err(SdpError::LimitExceeded(format!(
                "the offer publishes {count} {name} tracks; at most {max} per publisher"
            )));
        }
    }
    Ok(())
}

/// SSRCs identify streams on the one bundled transport (RFC 8843 §9.2), so they must be unique.
fn check_ssrcs_unique(accepted: &[Option<Accepted>]) -> Result<(), SdpError> {
    let mut seen = Vec::new();
    for track in accepted.iter().flatten().map(|a| &a.track) {
        let ssrcs = track
            .encodings
            .iter()
            .flat_map(|e| e.ssrc.into_iter().chain(e.rtx_ssrc));
        for ssrc in ssrcs {
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
    if !accepted.rids.is_empty() {
        for rid in &accepted.rids {
            sdp_line!(out, "a=rid:{rid} recv");
        }
        sdp_line!(out, "a=simulcast:recv {}", accepted.rids.join(";"));
    }
    write::codec_lines(out, codec);
    write::candidate_lines(out, local);
}

const VIDEO_CODECS: &[&str] = &["VP8", "VP9", "H264", "AV1"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::test_support::*;
    use crate::sdp::{
        ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, Candidate, Fingerprint, IceCredentials, MID_URI,
        REPAIRED_RID_URI, RID_EXTENSIONS, RID_URI, TRANSPORT_CC_URI,
    };

    fn ext(id: u8, uri: &str) -> Extension {
        Extension {
            id,
            uri: uri.to_owned(),
        }
    }

    /// The SSRC and RTX SSRC of a plain (single-encoding) track.
    fn ssrcs(track: &PublishedTrack) -> (u32, Option<u32>) {
        assert_eq!(track.encodings.len(), 1, "a plain track");
        let e = &track.encodings[0];
        (e.ssrc.expect("signalled"), e.rtx_ssrc)
    }

    fn negotiate(offer: &str) -> PublishNegotiation {
        let negotiation = negotiate_publish(&crlf(offer), &local(), &PublishLimits::default())
            .expect("offer accepted");
        // LF-only input (hand-written SDP, some test tools) gives the same result.
        assert_eq!(
            negotiate_publish(offer, &local(), &PublishLimits::default())
                .expect("LF offer accepted")
                .answer,
            negotiation.answer
        );
        negotiation
    }

    /// The checks every answer must pass: parses with the `sdp` crate; same mids and media in
    /// the offer's order; BUNDLE lists exactly the accepted mids; session-level ICE-lite;
    /// accepted m-lines are `recvonly`, `setup:passive`, rtcp-mux, with our credentials and one
    /// host candidate; rejected ones have port 0.
    fn check_answer(offer: &str, negotiation: &PublishNegotiation) {
        let offer = reparse(&crlf(offer));
        let answer = reparse(&negotiation.answer);
        let local = local();
        assert_eq!(answer.origin.username, "mooyaho");
        assert!(answer.attributes.iter().any(|a| a.key == "ice-lite"));
        assert_eq!(session_attr(&answer, "msid-semantic"), Some(" WMS"));
        let accepted: Vec<&str> = negotiation.tracks.iter().map(|t| t.mid.as_str()).collect();
        assert_eq!(
            session_attr(&answer, "group"),
            Some(format!("BUNDLE {}", accepted.join(" ")).as_str())
        );
        assert_eq!(
            answer.media_descriptions.len(),
            offer.media_descriptions.len()
        );
        for (i, offered) in offer.media_descriptions.iter().enumerate() {
            let answered = &answer.media_descriptions[i];
            let mid = media_attr(&answer, i, "mid").expect("mid");
            assert_eq!(Some(mid), media_attr(&offer, i, "mid"));
            assert_eq!(answered.media_name.media, offered.media_name.media);
            let Some(track) = negotiation.tracks.iter().find(|t| t.mid == mid) else {
                assert_eq!(answered.media_name.port.value, 0, "rejected m-line {mid}");
                assert_eq!(answered.media_name.formats.len(), 1);
                continue;
            };
            assert_eq!(answered.media_name.port.value, 9);
            assert_eq!(answered.media_name.protos, ["UDP", "TLS", "RTP", "SAVPF"]);
            let pts: Vec<String> = std::iter::once(track.codec.pt)
                .chain(track.codec.rtx_pt)
                .map(|p| p.to_string())
                .collect();
            assert_eq!(answered.media_name.formats, pts);
            for key in ["recvonly", "rtcp-mux", "end-of-candidates"] {
                assert_eq!(media_attr(&answer, i, key), Some(""), "{key} on {mid}");
            }
            assert_eq!(media_attr(&answer, i, "sendonly"), None);
            assert_eq!(media_attr(&answer, i, "setup"), Some("passive"));
            assert_eq!(
                media_attr(&answer, i, "ice-ufrag"),
                Some(local.ice.ufrag.as_str())
            );
            assert_eq!(
                media_attr(&answer, i, "ice-pwd"),
                Some(local.ice.pwd.as_str())
            );
            assert_eq!(
                media_attr(&answer, i, "fingerprint"),
                Some(format!("sha-256 {}", local.fingerprint.0).as_str())
            );
            assert_eq!(
                media_attrs(&answer, i, "candidate"),
                ["1 1 udp 2130706431 203.0.113.7 40000 typ host"]
            );
            let extmaps = media_attrs(&answer, i, "extmap");
            assert!(extmaps.iter().all(|e| {
                negotiation
                    .extensions
                    .iter()
                    .any(|x| *e == format!("{} {}", x.id, x.uri))
            }));
            let fbs = media_attrs(&answer, i, "rtcp-fb");
            assert_eq!(fbs.len(), track.codec.rtcp_fb.len());
        }
    }

    #[test]
    fn chrome_offer_accepts_opus_and_vp8_with_rtx_and_rejects_the_data_channel() {
        let negotiation = negotiate(CHROME);
        check_answer(CHROME, &negotiation);
        assert_eq!(
            negotiation.remote_ice,
            IceCredentials {
                ufrag: "x9Qe".to_owned(),
                pwd: "Yc3bV8mK2pL7nR4tW6sZ1qA9".to_owned()
            }
        );
        assert_eq!(
            negotiation.remote_fingerprint,
            Fingerprint("3F:8A:1C:7E:55:D2:90:4B:AE:61:0F:C3:28:9D:B7:14:E6:72:05:5A:C8:3B:9F:21:D4:66:80:1E:BA:47:0C:93".to_owned())
        );
        assert_eq!(
            negotiation.extensions,
            [
                ext(1, AUDIO_LEVEL_URI),
                ext(2, ABS_SEND_TIME_URI),
                ext(3, TRANSPORT_CC_URI),
                ext(4, MID_URI)
            ]
        );
        let [audio, video] = &negotiation.tracks[..] else {
            panic!("two tracks: {:?}", negotiation.tracks)
        };
        assert_eq!(
            (audio.mid.as_str(), audio.kind, ssrcs(audio)),
            ("0", Kind::Audio, (1_583_420_916, None))
        );
        assert_eq!(audio.codec, opus());
        assert_eq!(
            audio.msid,
            Some((
                "6f8f4e2b-7f2c-4d7e-9a41-3c1b5e0d2a77".to_owned(),
                "0d9c1f7a-3b2e-4c5d-8e6f-7a8b9c0d1e2f".to_owned()
            ))
        );
        assert_eq!((video.mid.as_str(), video.kind), ("1", Kind::Video));
        assert_eq!(
            (
                video.codec.name.as_str(),
                video.codec.pt,
                video.codec.rtx_pt
            ),
            ("VP8", 96, Some(97))
        );
        assert_eq!(
            video.codec.rtcp_fb,
            ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
        );
        assert_eq!(ssrcs(video), (2_921_764_371, Some(1_290_233_214)));
        assert!(
            negotiation
                .answer
                .contains("\r\nm=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n")
        );
        assert!(
            negotiation
                .answer
                .contains("\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n")
        );
        // Video offered ids 2, 3, 4 of ours (toffset, orientation... dropped).
        let answer = reparse(&negotiation.answer);
        assert_eq!(
            media_attrs(&answer, 1, "extmap"),
            [
                format!("2 {ABS_SEND_TIME_URI}"),
                format!("3 {TRANSPORT_CC_URI}"),
                format!("4 {MID_URI}")
            ]
        );
    }

    #[test]
    fn every_announced_address_is_a_host_candidate_udp_before_tcp() {
        let mut local = local();
        local.candidates = vec![
            Candidate::udp(std::net::SocketAddr::from(([192, 168, 1, 20], 40000))),
            Candidate::udp(std::net::SocketAddr::from(([10, 8, 0, 1], 40000))),
            Candidate::tcp_passive(std::net::SocketAddr::from(([192, 168, 1, 20], 40001))),
            Candidate::tcp_passive(std::net::SocketAddr::from(([10, 8, 0, 1], 40001))),
        ];
        let negotiation = negotiate_publish(&crlf(CHROME), &local, &PublishLimits::default())
            .expect("offer accepted");
        let answer = reparse(&negotiation.answer);
        // Distinct foundations (different interfaces), the first address preferred.
        assert_eq!(
            media_attrs(&answer, 0, "candidate"),
            [
                "1 1 udp 2130706431 192.168.1.20 40000 typ host",
                "2 1 udp 2130706175 10.8.0.1 40000 typ host",
                "3 1 tcp 2124414975 192.168.1.20 40001 typ host tcptype passive",
                "4 1 tcp 2124414719 10.8.0.1 40001 typ host tcptype passive",
            ]
        );
        assert_eq!(media_attr(&answer, 0, "end-of-candidates"), Some(""));
    }

    #[test]
    fn firefox_offer_uses_session_fingerprint_and_media_ice() {
        let negotiation = negotiate(FIREFOX);
        check_answer(FIREFOX, &negotiation);
        assert_eq!(negotiation.remote_ice.ufrag, "3e4f5a6b");
        assert_eq!(
            negotiation.remote_ice.pwd,
            "6b2c1f0e9d8a7b6c5d4e3f2a1b0c9d8e"
        );
        // Lower-case hex in the offer is normalised.
        assert_eq!(
            negotiation.remote_fingerprint.0,
            "A1:B2:C3:D4:E5:F6:07:18:29:3A:4B:5C:6D:7E:8F:90:A1:B2:C3:D4:E5:F6:07:18:29:3A:4B:5C:6D:7E:8F:90"
        );
        // csrc-audio-level (unsupported) and playout-delay (recvonly) are not accepted.
        assert_eq!(
            negotiation.extensions,
            [
                ext(1, AUDIO_LEVEL_URI),
                ext(3, MID_URI),
                ext(4, ABS_SEND_TIME_URI),
                ext(7, TRANSPORT_CC_URI)
            ]
        );
        let [audio, video] = &negotiation.tracks[..] else {
            panic!("two tracks")
        };
        assert_eq!((audio.codec.pt, ssrcs(audio).0), (109, 2_791_247_043));
        assert_eq!(
            audio.codec.fmtp.as_deref(),
            Some("maxplaybackrate=48000;stereo=1;useinbandfec=1")
        );
        assert_eq!(
            audio.msid,
            Some((
                "{8c0a4d5e-1f2b-4c3d-9e8f-7a6b5c4d3e2f}".to_owned(),
                "{1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d}".to_owned()
            ))
        );
        assert_eq!(
            (
                video.codec.name.as_str(),
                video.codec.pt,
                video.codec.rtx_pt
            ),
            ("VP8", 120, Some(124))
        );
        assert_eq!(video.codec.fmtp.as_deref(), Some("max-fs=12288;max-fr=60"));
        assert_eq!(ssrcs(video), (1_146_591_536, Some(2_547_219_562)));
    }

    #[test]
    fn safari_offer_prefers_constrained_baseline_h264_over_high() {
        let negotiation = negotiate(SAFARI);
        check_answer(SAFARI, &negotiation);
        let video = &negotiation.tracks[1];
        assert_eq!(
            (
                video.codec.name.as_str(),
                video.codec.pt,
                video.codec.rtx_pt
            ),
            ("H264", 98, Some(99))
        );
        assert_eq!(
            video.codec.fmtp.as_deref(),
            Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
        );
        assert_eq!(ssrcs(video), (3_105_288_512, Some(1_764_034_711)));
    }

    #[test]
    fn aiortc_offer_accepts_vp8_and_its_extension_ids() {
        let negotiation = negotiate(AIORTC);
        check_answer(AIORTC, &negotiation);
        assert_eq!(
            negotiation.remote_ice,
            IceCredentials {
                ufrag: "Hq7T".to_owned(),
                pwd: "Kx2bW9vN4mQ7rT1yU5iO3p".to_owned()
            }
        );
        assert_eq!(
            negotiation.extensions,
            [
                ext(1, MID_URI),
                ext(2, AUDIO_LEVEL_URI),
                ext(3, ABS_SEND_TIME_URI)
            ]
        );
        let [audio, video] = &negotiation.tracks[..] else {
            panic!("two tracks")
        };
        assert_eq!(
            (audio.codec.pt, audio.codec.fmtp.as_deref(), ssrcs(audio).0),
            (111, None, 3_732_219_051)
        );
        assert_eq!(
            (
                video.codec.name.as_str(),
                video.codec.pt,
                video.codec.rtx_pt
            ),
            ("VP8", 97, Some(98))
        );
        assert_eq!(video.codec.rtcp_fb, ["nack", "nack pli", "goog-remb"]);
        assert_eq!(ssrcs(video), (1_895_712_361, Some(2_419_861_372)));
        assert_eq!(
            video.msid.as_ref().map(|(s, _)| s.as_str()),
            Some("0e5c8a3f-6b1d-4f2a-9c7e-2d4b6a8c0e1f")
        );
    }

    fn rids(track: &PublishedTrack) -> Vec<Option<&str>> {
        track.encodings.iter().map(|e| e.rid.as_deref()).collect()
    }

    #[test]
    fn chrome_and_firefox_rid_simulcast_offers_are_accepted_with_three_layers() {
        for (offer, rid_id) in [(CHROME_SIMULCAST, 10), (FIREFOX_SIMULCAST, 8)] {
            let negotiation = negotiate(offer);
            check_answer(offer, &negotiation);
            let video = negotiation
                .tracks
                .iter()
                .find(|t| t.kind == Kind::Video)
                .expect("video accepted");
            assert_eq!(rids(video), [Some("q"), Some("h"), Some("f")]);
            assert!(video.is_simulcast() && video.has_rtx());
            // Chromium signals no SSRC; Firefox's a=ssrc lines are not mapped to rids, so
            // both are learned from the rid header extension.
            assert!(video.encodings.iter().all(|e| e.ssrc.is_none()));
            let audio = negotiation.tracks.iter().find(|t| t.kind == Kind::Audio);
            assert_eq!(audio.map(|a| a.encodings.len()), Some(1));
            assert!(negotiation.extensions.contains(&ext(rid_id, RID_URI)));
            assert!(
                negotiation
                    .extensions
                    .contains(&ext(rid_id + 1, REPAIRED_RID_URI))
            );
            let answer = &negotiation.answer;
            let video_answer = &answer[answer.find("m=video").unwrap()..];
            assert!(video_answer.contains(
                "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n"
            ));
            assert!(!answer[..answer.find("m=video").unwrap()].contains("a=rid"));
        }
        // The plain offer of the same client is answered without the rid extensions.
        let plain = negotiate(CHROME);
        assert!(
            !plain
                .extensions
                .iter()
                .any(|e| RID_EXTENSIONS.contains(&e.uri.as_str()))
        );
        assert!(!plain.answer.contains("a=simulcast"));
    }

    #[test]
    fn simulcast_layers_are_ordered_low_to_high_and_answered_in_the_offer_order() {
        // q < h < f whatever the offer's order; `~` (paused) and alternatives still name layers.
        let offer = CHROME_SIMULCAST.replace("a=simulcast:send q;h;f", "a=simulcast:send f;~h;q,x");
        let offer = offer.replace("a=rid:f send", "a=rid:f send\na=rid:x send");
        let negotiation = negotiate(&offer);
        let video = &negotiation.tracks[1];
        assert_eq!(rids(video), [Some("q"), Some("h"), Some("f")]);
        assert!(negotiation.answer.contains("a=simulcast:recv f;h;q\r\n"));
        // Other names keep the offer's order (libwebrtc clients list layers lowest first).
        let offer = CHROME_SIMULCAST
            .replace("a=rid:q send", "a=rid:lo send")
            .replace("a=rid:h send", "a=rid:hi send")
            .replace("a=rid:f send\n", "")
            .replace("a=simulcast:send q;h;f", "a=simulcast:send lo;hi");
        let video = &negotiate(&offer).tracks[1];
        assert_eq!(rids(video), [Some("lo"), Some("hi")]);
        // Rids without a=simulcast (a client that only writes a=rid): their order.
        let offer = CHROME_SIMULCAST.replace("a=simulcast:send q;h;f\n", "");
        assert_eq!(
            rids(&negotiate(&offer).tracks[1]),
            [Some("q"), Some("h"), Some("f")]
        );
    }

    #[test]
    fn ssrc_group_sim_offer_gives_one_layer_per_ssrc_with_its_rtx() {
        let offer = CHROME.replace(
            "a=ssrc-group:FID 2921764371 1290233214\n",
            "a=ssrc-group:FID 2921764371 1290233214\na=ssrc:11 cname:x\na=ssrc:12 cname:x\n\
             a=ssrc-group:FID 11 12\na=ssrc:21 cname:x\na=ssrc:22 cname:x\n\
             a=ssrc-group:FID 21 22\na=ssrc-group:SIM 2921764371 11 21\n",
        );
        assert_ne!(offer, CHROME, "the fixture has the FID line");
        let negotiation = negotiate(&offer);
        check_answer(&offer, &negotiation);
        let video = &negotiation.tracks[1];
        let layers: Vec<_> = video
            .encodings
            .iter()
            .map(|e| (e.ssrc, e.rtx_ssrc))
            .collect();
        assert_eq!(
            layers,
            [
                (Some(2_921_764_371), Some(1_290_233_214)),
                (Some(11), Some(12)),
                (Some(21), Some(22))
            ]
        );
        assert_eq!(video.top_ssrc(), Some(21));
        assert!(!negotiation.answer.contains("a=simulcast"));
    }

    #[test]
    fn webrtc_rs_offer_sendrecv_is_answered_recvonly() {
        let negotiation = negotiate(WEBRTC_RS);
        check_answer(WEBRTC_RS, &negotiation);
        assert_eq!(negotiation.remote_ice.ufrag, "qWlFJhYrAbNzXcTe");
        assert_eq!(negotiation.remote_fingerprint.0.len(), 95);
        assert_eq!(
            negotiation.extensions,
            [ext(1, MID_URI), ext(2, TRANSPORT_CC_URI)]
        );
        let [audio, video] = &negotiation.tracks[..] else {
            panic!("two tracks")
        };
        assert_eq!((audio.codec.pt, ssrcs(audio).0), (111, 3_355_343_711));
        assert_eq!(
            audio.msid,
            Some(("webrtc-rs".to_owned(), "audio".to_owned()))
        );
        assert_eq!((video.codec.pt, video.codec.rtx_pt), (96, Some(97)));
        assert_eq!(ssrcs(video), (2_196_479_312, Some(4_017_362_595)));
        assert_eq!(
            video.msid,
            Some(("webrtc-rs".to_owned(), "video".to_owned()))
        );
    }

    /// Chrome's video m-line with its format list replaced by `formats`.
    fn chrome_video_formats(formats: &str) -> String {
        let original = "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 106 107 108 109 127 125 39 40 45 46 112 113 116 117 118";
        assert!(CHROME.contains(original));
        CHROME.replace(original, &format!("m=video 9 UDP/TLS/RTP/SAVPF {formats}"))
    }

    #[test]
    fn video_codec_follows_client_preference_then_the_most_decodable_profile() {
        let cases = [
            // H264 Main first: H264 is the client's choice, baseline 42001f (the first of the
            // two baselines) is the profile.
            ("127 125 106 107 102 103 96 97", "H264", 106, Some(107)),
            ("127 125 102 103 106 107", "H264", 102, Some(103)),
            // Only packetization-mode=0 H264 → skipped.
            ("104 105 108 96 97", "VP8", 96, Some(97)),
            // VP9 profile 2 listed first → profile 0.
            ("100 101 98 99", "VP9", 98, Some(99)),
            ("45 46", "AV1", 45, Some(46)),
            // RTX not in the format list is not offered.
            ("96", "VP8", 96, None),
        ];
        for (formats, name, pt, rtx_pt) in cases {
            let offer = chrome_video_formats(formats);
            let negotiation = negotiate(&offer);
            check_answer(&offer, &negotiation);
            let video = &negotiation.tracks[1].codec;
            assert_eq!(
                (video.name.as_str(), video.pt, video.rtx_pt),
                (name, pt, rtx_pt),
                "formats {formats}"
            );
            // Without RTX in the answer the FID SSRC is not reported either.
            assert_eq!(ssrcs(&negotiation.tracks[1]).1.is_some(), rtx_pt.is_some());
        }
        // High-profile H264 only: accepted as offered.
        let negotiation = negotiate(&chrome_video_formats("112 113"));
        assert_eq!(negotiation.tracks[1].codec.pt, 112);
        // Only unsupported codecs (red, ulpfec, mode-0 H264): video rejected, audio kept.
        let offer = chrome_video_formats("116 117 118 104");
        let negotiation = negotiate(&offer);
        check_answer(&offer, &negotiation);
        assert_eq!(negotiation.tracks.len(), 1);
        assert!(
            negotiation
                .answer
                .contains("\r\nm=video 0 UDP/TLS/RTP/SAVPF 116\r\n")
        );
    }

    #[test]
    fn inactive_and_recvonly_m_lines_are_rejected_not_refused() {
        let offer =
            CHROME
                .replacen("a=sendonly", "a=recvonly", 1)
                .replacen("a=sendonly", "a=inactive", 1);
        assert_eq!(
            negotiate_publish(&offer, &local(), &PublishLimits::default()).map(|n| n.tracks.len()),
            Err(SdpError::Unsupported(
                "no m-line with a supported codec, direction and transport to receive".to_owned()
            ))
        );
        let offer = CHROME.replacen("a=sendonly", "a=inactive", 1);
        let negotiation = negotiate(&offer);
        check_answer(&offer, &negotiation);
        assert_eq!(
            negotiation
                .tracks
                .iter()
                .map(|t| t.mid.as_str())
                .collect::<Vec<_>>(),
            ["1"]
        );
        // The BUNDLE tag (mid 0) is rejected: transport attributes still come from it, and the
        // answer's group starts with the first accepted mid (RFC 8843 §7.3.1).
        assert!(negotiation.answer.contains("a=group:BUNDLE 1\r\n"));
        assert!(
            negotiation
                .answer
                .contains("\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\n")
        );
    }

    #[test]
    fn bad_offers_are_typed_errors() {
        let edit = |from: &str, to: &str| {
            assert!(CHROME.contains(from), "{from}");
            CHROME.replace(from, to)
        };
        let fingerprint = CHROME
            .lines()
            .find(|l| l.starts_with("a=fingerprint"))
            .expect("fp");
        let sha1 =
            "a=fingerprint:sha-1 3F:8A:1C:7E:55:D2:90:4B:AE:61:0F:C3:28:9D:B7:14:E6:72:05:5A";
        let minimal = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
        let cases: Vec<(String, Expect)> = vec![
            (String::new(), Expect::Malformed),
            ("\r\n \r\n".to_owned(), Expect::Malformed),
            ("hello world".to_owned(), Expect::Malformed),
            ("v=0\r\n".to_owned(), Expect::Malformed),
            (minimal.to_owned(), Expect::Unsupported("BUNDLE")),
            (edit("minptime=10;", "minptime=10\r;"), Expect::Malformed),
            (edit("minptime=10;", "minptime=10\0;"), Expect::Malformed),
            (
                CHROME.replace("a=setup:actpass", "a=setup:passive"),
                Expect::Unsupported("setup"),
            ),
            (
                edit(&format!("{fingerprint}\n"), ""),
                Expect::Missing("fingerprint"),
            ),
            (edit(fingerprint, sha1), Expect::Unsupported("sha-1")),
            (edit(":0C:93\n", ":0C\n"), Expect::Malformed),
            (
                edit("a=group:BUNDLE 0 1 2\n", ""),
                Expect::Unsupported("BUNDLE"),
            ),
            (
                edit("a=group:BUNDLE 0 1 2\n", "a=group:BUNDLE\n"),
                Expect::Unsupported("BUNDLE"),
            ),
            (
                edit("a=group:BUNDLE 0 1 2\n", "a=group:BUNDLE 7\n"),
                Expect::Malformed,
            ),
            (edit("a=rtcp-mux\n", ""), Expect::Unsupported("rtcp-mux")),
            (edit("a=ice-ufrag:x9Qe\n", ""), Expect::Missing("ice-ufrag")),
            (
                edit("a=ice-pwd:Yc3bV8mK2pL7nR4tW6sZ1qA9\n", ""),
                Expect::Missing("ice-pwd"),
            ),
            (
                edit("a=ice-ufrag:x9Qe", "a=ice-ufrag:x9Q"),
                Expect::Malformed,
            ),
            (
                edit("a=ice-ufrag:x9Qe", "a=ice-ufrag:x9Q:e"),
                Expect::Malformed,
            ),
            (
                edit("a=rtpmap:111 opus", "a=rtpmap:300 opus"),
                Expect::Malformed,
            ),
            (
                edit("a=rtpmap:111 opus", "a=rtpmap:-1 opus"),
                Expect::Malformed,
            ),
            (
                edit("opus/48000/2", "opus/99999999999/2"),
                Expect::Malformed,
            ),
            (edit("opus/48000/2", "opus/48000/2/1"), Expect::Malformed),
            (edit("SAVPF 111 63", "SAVPF 111 abc"), Expect::Malformed),
            (edit("SAVPF 111 63", "SAVPF 111 128"), Expect::Malformed),
            (
                edit("a=ssrc:1583420916 cname", "a=ssrc:4294967296 cname"),
                Expect::Malformed,
            ),
            (
                edit("a=ssrc:1583420916 cname", "a=ssrc:+1583420916 cname"),
                Expect::Malformed,
            ),
            (
                edit("FID 2921764371 1290233214", "FID 2921764371"),
                Expect::Malformed,
            ),
            (edit("a=extmap:4 urn", "a=extmap:15 urn"), Expect::Malformed),
            (
                edit("a=extmap:4 urn", "a=extmap:256 urn"),
                Expect::Malformed,
            ),
            (
                edit("a=extmap:1 urn", "a=extmap:3 urn"),
                Expect::Unsupported("extmap id"),
            ),
            (edit("a=mid:1", "a=mid:0"), Expect::Malformed),
            (
                edit("a=mid:1", "a=mid:this-mid-is-far-too-long"),
                Expect::Malformed,
            ),
            (edit("a=mid:2\n", ""), Expect::Missing("mid")),
            (edit("2921764371", "1583420916"), Expect::Malformed),
            (edit("m=video 9 ", "m=video 99999 "), Expect::Malformed),
            (chrome_video_formats(""), Expect::Malformed),
            (strip_ssrc_lines(CHROME), Expect::Missing("ssrc")),
            (
                CHROME_SIMULCAST.replace(
                    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\n",
                    "",
                ),
                Expect::Unsupported("rtp-stream-id header extension"),
            ),
            (
                CHROME_SIMULCAST.replace(
                    "a=simulcast:send q;h;f",
                    "a=rid:x send\na=simulcast:send q;h;f;x",
                ),
                Expect::LimitExceeded("4 simulcast layers; at most 3"),
            ),
            (
                CHROME_SIMULCAST.replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;z"),
                Expect::Malformed,
            ),
            (
                CHROME_SIMULCAST.replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;h"),
                Expect::Malformed,
            ),
            (
                CHROME_SIMULCAST
                    .replace("a=rid:q send", "a=rid:q/x send")
                    .replace("send q;", "send q/x;"),
                Expect::Malformed,
            ),
            (
                CHROME_SIMULCAST.replace("a=rid:q send", "a=rid:q"),
                Expect::Malformed,
            ),
            (
                edit(
                    "a=ssrc-group:FID",
                    "a=ssrc-group:SIM 1 2 3 4\na=ssrc-group:FID",
                ),
                Expect::LimitExceeded("4 simulcast layers"),
            ),
            (
                edit(
                    "a=ssrc-group:FID",
                    "a=ssrc-group:SIM 1 2 1\na=ssrc-group:FID",
                ),
                Expect::Malformed,
            ),
            (
                format!("{CHROME}{}", "a=x:y\n".repeat(50_000)),
                Expect::Unsupported("exceeds"),
            ),
        ];
        for (i, (offer, expected)) in cases.iter().enumerate() {
            let result = negotiate_publish(offer, &local(), &PublishLimits::default());
            let error = result
                .as_ref()
                .err()
                .unwrap_or_else(|| panic!("case {i} accepted"));
            assert!(
                expected.matches(error),
                "case {i}: {error:?}, expected {expected:?}"
            );
            assert!(
                error.to_string().len() < 200,
                "case {i}: error text stays short"
            );
        }
    }

    /// An offer of `audio` + `video` sendonly m-lines with the transport of the Chrome fixture,
    /// each as short as a hostile client can make it.
    fn many_tracks_offer(audio: usize, video: usize) -> String {
        let head_end = CHROME.find("m=audio").expect("audio m-line");
        let head = CHROME[..head_end].replace("a=group:BUNDLE 0 1 2\n", "");
        let mids: Vec<String> = (0..audio + video).map(|i| i.to_string()).collect();
        let mut offer = format!("{head}a=group:BUNDLE {}\n", mids.join(" "));
        let transport: String = CHROME[head_end..]
            .lines()
            .filter(|l| {
                ["a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .take(4)
            .map(|l| format!("{l}\n"))
            .collect();
        for i in 0..audio + video {
            let (media, rtpmap) = if i < audio {
                ("audio 9 UDP/TLS/RTP/SAVPF 111", "111 opus/48000/2")
            } else {
                ("video 9 UDP/TLS/RTP/SAVPF 96", "96 VP8/90000")
            };
            offer += &format!(
                "m={media}\nc=IN IP4 0.0.0.0\n{transport}a=mid:{i}\na=sendonly\na=rtcp-mux\na=rtpmap:{rtpmap}\na=ssrc:{} cname:x\n",
                1000 + i
            );
        }
        offer
    }

    #[test]
    fn offers_beyond_the_publish_limits_are_refused_before_anything_is_accepted() {
        let defaults = PublishLimits::default();
        // Within the defaults: 4 + 4 tracks in 8 m-lines.
        let offer = many_tracks_offer(4, 4);
        let negotiation = negotiate_publish(&offer, &local(), &defaults).expect("4 + 4 accepted");
        check_answer(&offer, &negotiation);
        assert_eq!(negotiation.tracks.len(), 8);

        let refused = |offer: &str, limits: &PublishLimits| match negotiate_publish(
            offer,
            &local(),
            limits,
        ) {
            Err(SdpError::LimitExceeded(why)) => why,
            other => panic!(
                "not refused by a limit: {:?}",
                other.map(|n| n.tracks.len())
            ),
        };
        // 500 m-lines: refused on the count alone, with a short, clear reason.
        let why = refused(&many_tracks_offer(500, 0), &defaults);
        assert_eq!(why, "the offer has 500 m-lines; at most 16 are accepted");
        assert!(
            SdpError::LimitExceeded(why).to_string().len() < 200,
            "error text stays short"
        );
        // Rejected m-lines count too (the Chrome fixture has 3: audio, video, data channel).
        let two_sections = PublishLimits {
            max_media_sections: 2,
            ..defaults
        };
        assert_eq!(
            refused(CHROME, &two_sections),
            "the offer has 3 m-lines; at most 2 are accepted"
        );
        // Per kind.
        assert_eq!(
            refused(&many_tracks_offer(5, 1), &defaults),
            "the offer publishes 5 audio tracks; at most 4 per publisher"
        );
        assert_eq!(
            refused(&many_tracks_offer(0, 5), &defaults),
            "the offer publishes 5 video tracks; at most 4 per publisher"
        );
        let one_each = PublishLimits {
            max_audio_tracks: 1,
            max_video_tracks: 1,
            ..defaults
        };
        assert_eq!(
            refused(&many_tracks_offer(1, 2), &one_each),
            "the offer publishes 2 video tracks; at most 1 per publisher"
        );
        for fixture in ALL {
            negotiate_publish(&crlf(fixture), &local(), &one_each)
                .expect("every browser fixture fits one audio + one video");
        }
    }

    fn strip_ssrc_lines(sdp: &str) -> String {
        sdp.lines()
            .filter(|l| !l.starts_with("a=ssrc"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn mutated_offers_never_panic_and_accepted_ones_answer_validly() {
        let mut rng = TestRng::new(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for fixture in ALL {
            for _ in 0..400 {
                let offer = mutate(fixture, &mut rng);
                if let Ok(negotiation) =
                    negotiate_publish(&offer, &local(), &PublishLimits::default())
                {
                    reparse(&negotiation.answer);
                    accepted += 1;
                }
                crate::sdp::fuzz_sdp(offer.as_bytes());
            }
        }
        // Most single mutations hit an attribute we ignore; the loop must exercise both paths.
        assert!(accepted > 200, "only {accepted} mutated offers accepted");
    }
}
