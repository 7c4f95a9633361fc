//! The subscribe PeerConnection: the SFU offers one `sendonly` m-line per forwarded track and
//! re-offers as tracks come and go; the client answers.

use std::collections::HashMap;

use super::parse::{self, Direction, Media};
use super::write::{self, sdp_line};
use super::{Codec, Extension, ForwardedTrack, Kind, LocalDescription, SdpError, SubscribeAnswer};

/// Writes the SFU's offer for a subscribe session: one m-line per track in the given order, all
/// active ones `sendonly` in one BUNDLE group. `version` is the `o=` session version and must grow
/// with every re-offer (RFC 3264 §8).
///
/// An ended track (`active: false`) is rejected: port 0, out of the BUNDLE group, no SSRCs
/// (RFC 8829 §5.2.2), which stops the client's transceiver. Once the client has answered that
/// rejection, the caller may recycle the m-line's position for a new track of the same kind with
/// a new mid (RFC 8829 §5.2.2, "recycling"), so the SDP grows with the live tracks, not with
/// every track ever forwarded. The first m-line is the exception: it tags the BUNDLE group
/// (RFC 8843 §7.2.1), and rejecting it would move the group to another transport or, with no
/// live track left, tear it down; an ended first track stays bundled as `inactive` and its
/// m-line is never recycled.
///
pub fn subscribe_offer(
    local: &LocalDescription,
    version: u64,
    tracks: &[ForwardedTrack],
) -> Result<String, SdpError> {
    if tracks.is_empty() {
        return Err(SdpError::Missing("tracks"));
    }
    check_tracks(tracks)?;
    let mids: Vec<&str> = tracks
        .iter()
        .enumerate()
        .filter(|(i, track)| is_bundled(*i, track))
        .map(|(_, track)| track.mid.as_str())
        .collect();
    let mut out = String::with_capacity(512 + 1536 * tracks.len());
    write::session_header(&mut out, local, version, &mids);
    for (i, track) in tracks.iter().enumerate() {
        if is_bundled(i, track) {
            let extensions: Vec<(u8, &str)> = subscribe_extensions(track.kind)
                .map(|(id, uri)| (*id, *uri))
                .collect();
            write_track(&mut out, local, track, "actpass", &extensions);
        } else {
            write_rejected_track(&mut out, track);
        }
    }
    Ok(out)
}

/// Whether the track at m-line `index` is offered in the BUNDLE group rather than rejected: the
/// live ones, and the first m-line always (see [`subscribe_offer`]).
fn is_bundled(index: usize, track: &ForwardedTrack) -> bool {
    index == 0 || track.active
}

/// Parses the client's answer to [`subscribe_offer`]`(.., offered)`.
///
/// The answer must list the offer's mids in the same order and kinds (RFC 3264 §6), bundle and
/// rtcp-mux every accepted m-line, and pick a DTLS role: `active` (or none) or `passive`,
/// returned as [`SubscribeAnswer::remote_setup`](super::SubscribeAnswer::remote_setup).
/// A mid is accepted when its port is not 0, the answer direction is `recvonly` (or `sendrecv`)
/// and the offered track is active. Extensions are kept only with the id the SFU offered.
pub fn parse_subscribe_answer(
    answer: &str,
    offered: &[ForwardedTrack],
) -> Result<SubscribeAnswer, SdpError> {
    if offered.is_empty() {
        return Err(SdpError::Missing("tracks"));
    }
    let session = parse::session(answer)?;
    let media = Media::all(&session)?;
    let matches_offer = media.len() == offered.len()
        && media
            .iter()
            .zip(offered)
            .all(|(m, track)| m.mid == track.mid && m.kind == Some(track.kind));
    if !matches_offer {
        return Err(SdpError::Unsupported(format!(
            "answer m-lines ({}) do not match the offered mids and kinds ({})",
            media.len(),
            offered.len()
        )));
    }
    let accepted: Vec<&Media<'_>> = media
        .iter()
        .zip(offered)
        .filter(|(m, track)| {
            track.active
                && m.port != 0
                && matches!(m.direction, Direction::RecvOnly | Direction::SendRecv)
        })
        .map(|(m, _)| m)
        .collect();
    let bundle = parse::bundle_group(&session).unwrap_or_default();
    if let Some(unbundled) = accepted.iter().find(|m| !bundle.contains(&m.mid)) {
        return Err(SdpError::Unsupported(format!(
            "answer does not bundle mid {}",
            unbundled.mid
        )));
    }
    if let Some(unmuxed) = accepted.iter().find(|m| !m.rtcp_mux) {
        return Err(SdpError::Unsupported(format!(
            "answer lacks a=rtcp-mux on mid {}",
            unmuxed.mid
        )));
    }
    // The answerer-tagged m= section (first mid of its group, RFC 8843 §7.3.1) carries the
    // transport; with nothing accepted, fall back to the first m-line.
    let tagged = bundle
        .first()
        .and_then(|mid| media.iter().position(|m| m.mid == *mid))
        .unwrap_or(0);
    let tagged = &session.media_descriptions[tagged];
    let setup = parse::value(&tagged.attributes, "setup")
        .or_else(|| parse::value(&session.attributes, "setup"));
    // RFC 5763 §5: the answer to our `actpass` picks the client's role. Browsers take `active`;
    // Pion and webrtc-rs take `passive` toward an ICE-lite offerer, making the SFU the client.
    let remote_setup = match setup {
        None | Some("active") => super::Setup::Active,
        Some("passive") => super::Setup::Passive,
        Some(other) => {
            return Err(SdpError::Unsupported(format!(
                "answer must take a=setup:active or passive, not {other}"
            )));
        }
    };
    let (remote_ice, remote_fingerprint) = parse::transport(&session, tagged)?;
    let mut extensions: Vec<Extension> = Vec::new();
    for ext in accepted.iter().flat_map(|m| &m.extmaps) {
        let offered_id = super::SUBSCRIBE_EXTENSIONS
            .iter()
            .any(|&(id, uri)| id == ext.id && uri == ext.uri);
        let extension = Extension {
            id: ext.id,
            uri: ext.uri.to_owned(),
        };
        if offered_id && !extensions.contains(&extension) {
            extensions.push(extension);
        }
    }
    Ok(SubscribeAnswer {
        remote_ice,
        remote_fingerprint,
        remote_setup,
        extensions,
        accepted_mids: accepted.iter().map(|m| m.mid.to_owned()).collect(),
    })
}

/// The caller's tracks end up verbatim in SDP, so anything that could break a line or a BUNDLE
/// group is refused here rather than by the client.
fn check_tracks(tracks: &[ForwardedTrack]) -> Result<(), SdpError> {
    let unsupported = |track: &ForwardedTrack, why: &str| {
        Err(SdpError::Unsupported(format!(
            "track {}: {why}",
            parse::shorten(&track.mid)
        )))
    };
    // pt → codec description; RFC 8843 §9.1.1: one payload type, one codec in a BUNDLE group.
    let mut pts: HashMap<u8, String> = HashMap::new();
    for (i, track) in tracks.iter().enumerate() {
        let codec = &track.codec;
        if !parse::is_mid(&track.mid) {
            return unsupported(track, "mid is not a 1–16 character token");
        }
        if tracks[..i].iter().any(|earlier| earlier.mid == track.mid) {
            return unsupported(track, "duplicate mid");
        }
        let id_ok = |id: &str| id.len() <= 64 && parse::is_token(id);
        if !id_ok(&track.stream_id) || !id_ok(&track.track_id) {
            return unsupported(track, "msid ids must be tokens of at most 64 characters");
        }
        if !parse::is_token(&codec.name)
            || codec
                .fmtp
                .as_deref()
                .is_some_and(|f| f.contains(['\r', '\n']))
        {
            return unsupported(track, "codec name or fmtp cannot be written into SDP");
        }
        if track.rtx_ssrc.is_some() && codec.rtx_pt.is_none() {
            return unsupported(track, "rtx_ssrc set but the codec has no RTX payload type");
        }
        if codec.pt > 127 {
            return unsupported(track, &format!("payload type {} exceeds 127", codec.pt));
        }
        if !is_bundled(i, track) {
            // Rejected: outside the group, its payload types clash with nothing.
            continue;
        }
        let mut claim = |pt: u8, what: String| {
            if pt > 127 {
                return Err(format!("payload type {pt} exceeds 127"));
            }
            match pts.get(&pt) {
                Some(existing) if *existing != what => {
                    Err(format!("payload type {pt} is both {existing} and {what}"))
                }
                _ => {
                    pts.insert(pt, what);
                    Ok(())
                }
            }
        };
        let mut result = claim(codec.pt, codec_description(codec));
        if let (Ok(()), Some(rtx_pt), Some(_)) = (&result, codec.rtx_pt, track.rtx_ssrc) {
            result = claim(rtx_pt, rtx_description(codec));
        }
        if let Err(why) = result {
            return unsupported(track, &why);
        }
    }
    Ok(())
}

/// What a payload type stands for in a BUNDLE group: two tracks may share a payload type only
/// when these are equal.
fn codec_description(codec: &Codec) -> String {
    format!(
        "{}/{}/{:?} {}",
        codec.name.to_ascii_lowercase(),
        codec.clock_rate,
        codec.channels,
        codec.fmtp.as_deref().unwrap_or("")
    )
}

fn rtx_description(codec: &Codec) -> String {
    format!("rtx/{} apt={}", codec.clock_rate, codec.pt)
}

/// Dynamic payload types to move a track to, in order of preference (RFC 3551 §6; 64–95 are
/// avoided because they collide with RTCP packet types under rtcp-mux, RFC 5761 §4).
const DYNAMIC_PTS: [std::ops::RangeInclusive<u8>; 2] = [96..=127, 35..=63];

/// Gives `track` (a track about to be added to a subscribe session) payload types that mean the
/// same in the BUNDLE group as in `bundled`, the session's other bundled tracks: the publisher's
/// own when free or used for the same codec, else a free dynamic one. Publishers choose payload
/// types freely, and one publisher's Opus on 111 with other fmtp than another's would otherwise
/// make the subscribe offer unwritable for everyone in the room ([`subscribe_offer`] refuses
/// it). The SFU rewrites the payload type per subscriber, so this costs nothing on the wire.
/// Leaves a payload type as it is when all are taken (the offer then reports the clash).
pub fn assign_payload_types<'a>(
    bundled: impl Iterator<Item = &'a ForwardedTrack>,
    track: &mut ForwardedTrack,
) {
    let mut claimed: HashMap<u8, String> = HashMap::new();
    for other in bundled {
        claimed.insert(other.codec.pt, codec_description(&other.codec));
        if let (Some(rtx_pt), Some(_)) = (other.codec.rtx_pt, other.rtx_ssrc) {
            claimed.insert(rtx_pt, rtx_description(&other.codec));
        }
    }
    let pick = |claimed: &HashMap<u8, String>, wanted: u8, description: &str| -> u8 {
        let fits = |pt: &u8| claimed.get(pt).is_none_or(|d| d == description);
        if fits(&wanted) {
            return wanted;
        }
        // The same codec already has a payload type: share it; else the first free one.
        let same = claimed
            .iter()
            .filter(|(_, d)| *d == description)
            .map(|(pt, _)| *pt)
            .min();
        same.or_else(|| DYNAMIC_PTS.into_iter().flatten().find(fits))
            .unwrap_or(wanted)
    };
    let description = codec_description(&track.codec);
    track.codec.pt = pick(&claimed, track.codec.pt, &description);
    claimed.insert(track.codec.pt, description);
    if let (Some(rtx_pt), Some(_)) = (track.codec.rtx_pt, track.rtx_ssrc) {
        track.codec.rtx_pt = Some(pick(&claimed, rtx_pt, &rtx_description(&track.codec)));
    }
}

/// One m-line sending `track`: in the SFU's offers (`setup` `actpass`, the fixed
/// [`SUBSCRIBE_EXTENSIONS`](super::SUBSCRIBE_EXTENSIONS)) and in its answers to a client's
/// receive offer (`passive`, the extensions with the client's ids).
pub(super) fn write_track(
    out: &mut String,
    local: &LocalDescription,
    track: &ForwardedTrack,
    setup: &str,
    extensions: &[(u8, &str)],
) {
    // RTX is offered only with an RTX SSRC to announce it on.
    let codec = Codec {
        rtx_pt: track.codec.rtx_pt.filter(|_| track.rtx_ssrc.is_some()),
        ..track.codec.clone()
    };
    let pts: Vec<u8> = std::iter::once(codec.pt).chain(codec.rtx_pt).collect();
    let media = match track.kind {
        Kind::Audio => "audio",
        Kind::Video => "video",
    };
    write::media_header(out, local, media, &pts, &track.mid, setup);
    for (id, uri) in extensions {
        sdp_line!(out, "a=extmap:{id} {uri}");
    }
    let (stream, track_id) = (&track.stream_id, &track.track_id);
    if track.active {
        sdp_line!(out, "a=sendonly");
        sdp_line!(out, "a=msid:{stream} {track_id}");
    } else {
        sdp_line!(out, "a=inactive");
    }
    write::codec_lines(out, &codec);
    if track.active {
        if let Some(rtx) = track.rtx_ssrc {
            sdp_line!(out, "a=ssrc-group:FID {} {rtx}", track.ssrc);
        }
        // RFC 5576 §4.1 / RFC 8830 §2: cname ties audio and video for lip sync.
        for ssrc in std::iter::once(track.ssrc).chain(track.rtx_ssrc) {
            sdp_line!(out, "a=ssrc:{ssrc} cname:mooyaho");
            sdp_line!(out, "a=ssrc:{ssrc} msid:{stream} {track_id}");
        }
    }
    write::candidate_lines(out, local);
}

/// A rejected m-line (RFC 8829 §5.2.2 / RFC 3264 §6): port 0, its mid, one format so it parses,
/// and nothing of the transport.
fn write_rejected_track(out: &mut String, track: &ForwardedTrack) {
    let codec = &track.codec;
    let media = match track.kind {
        Kind::Audio => "audio",
        Kind::Video => "video",
    };
    sdp_line!(out, "m={media} 0 UDP/TLS/RTP/SAVPF {}", codec.pt);
    sdp_line!(out, "c=IN IP4 0.0.0.0");
    sdp_line!(out, "a=mid:{}", track.mid);
    sdp_line!(out, "a=inactive");
    write::codec_lines(
        out,
        &Codec {
            rtx_pt: None,
            rtcp_fb: Vec::new(),
            fmtp: None,
            ..codec.clone()
        },
    );
}

/// [`SUBSCRIBE_EXTENSIONS`](super::SUBSCRIBE_EXTENSIONS) that apply to `kind`.
fn subscribe_extensions(kind: Kind) -> impl Iterator<Item = &'static (u8, &'static str)> {
    super::SUBSCRIBE_EXTENSIONS
        .iter()
        .filter(move |(_, uri)| match kind {
            Kind::Audio => *uri != super::ABS_SEND_TIME_URI,
            Kind::Video => *uri != super::AUDIO_LEVEL_URI,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::test_support::*;
    use crate::sdp::{ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, MID_URI, Setup, TRANSPORT_CC_URI};

    fn vp8() -> Codec {
        Codec {
            name: "VP8".to_owned(),
            pt: 96,
            clock_rate: 90_000,
            channels: None,
            fmtp: None,
            // "goog-lntf" is not ours: it must not be offered.
            rtcp_fb: [
                "goog-remb",
                "transport-cc",
                "ccm fir",
                "nack",
                "nack pli",
                "goog-lntf",
            ]
            .map(str::to_owned)
            .to_vec(),
            rtx_pt: Some(97),
        }
    }

    fn track(mid: &str, kind: Kind, ssrc: u32, stream_id: &str) -> ForwardedTrack {
        let (codec, rtx_ssrc) = match kind {
            Kind::Audio => (opus(), None),
            Kind::Video => (vp8(), Some(ssrc + 1)),
        };
        ForwardedTrack {
            mid: mid.to_owned(),
            kind,
            codec,
            ssrc,
            rtx_ssrc,
            stream_id: stream_id.to_owned(),
            track_id: format!("{stream_id}-{mid}"),
            active: true,
        }
    }

    /// Alice's and Bob's audio and video.
    fn four_tracks() -> Vec<ForwardedTrack> {
        vec![
            track("0", Kind::Audio, 1000, "alice"),
            track("1", Kind::Video, 2000, "alice"),
            track("2", Kind::Audio, 3000, "bob"),
            track("3", Kind::Video, 4000, "bob"),
        ]
    }

    /// A browser-style answer (Chrome's layout): `directions[i]` per m-line, port 0 for
    /// `"rejected"`; it answers mid with id 1, transport-cc with 3, audio level with 4, and
    /// abs-send-time with a different id (9) than offered.
    fn browser_answer(tracks: &[ForwardedTrack], directions: &[&str]) -> String {
        let mids: Vec<&str> = tracks
            .iter()
            .zip(directions)
            .filter(|(_, d)| **d != "rejected")
            .map(|(t, _)| t.mid.as_str())
            .collect();
        let mut out = format!(
            "v=0\no=- 8011929430712297457 2 IN IP4 127.0.0.1\ns=-\nt=0 0\na=group:BUNDLE {}\na=msid-semantic: WMS\n",
            mids.join(" ")
        );
        for (track, direction) in tracks.iter().zip(directions) {
            let (media, pt) = match track.kind {
                Kind::Audio => ("audio", track.codec.pt),
                Kind::Video => ("video", track.codec.pt),
            };
            let port = if *direction == "rejected" { 0 } else { 9 };
            out += &format!(
                "m={media} {port} UDP/TLS/RTP/SAVPF {pt}\nc=IN IP4 0.0.0.0\na=rtcp:9 IN IP4 0.0.0.0\n"
            );
            out += "a=ice-ufrag:Bv7k\na=ice-pwd:c2Xq9Lm4Np7Rs1Tu6Vw3Yz8A\na=ice-options:trickle\n";
            out += "a=fingerprint:sha-256 7E:21:9C:04:B8:53:FA:6D:10:E7:A2:3F:C9:58:0B:D4:61:9A:2E:F3:87:1C:B5:40:DE:6A:93:27:C8:05:7F:B1\n";
            out += &format!("a=setup:active\na=mid:{}\n", track.mid);
            out += &format!("a=extmap:1 {MID_URI}\na=extmap:3 {TRANSPORT_CC_URI}\n");
            out += &match track.kind {
                Kind::Audio => format!("a=extmap:4 {AUDIO_LEVEL_URI}\n"),
                Kind::Video => format!("a=extmap:9 {ABS_SEND_TIME_URI}\n"),
            };
            let direction = if *direction == "rejected" {
                "inactive"
            } else {
                direction
            };
            out += &format!(
                "a={direction}\na=rtcp-mux\na=rtpmap:{pt} {}/{}\n",
                track.codec.name, track.codec.clock_rate
            );
        }
        out
    }

    #[test]
    fn offer_has_one_sendonly_m_line_per_track_with_ssrcs_msid_and_rtx() {
        let tracks = four_tracks();
        let offer = subscribe_offer(&local(), 1, &tracks).expect("offer");
        let sdp = reparse(&offer);
        assert_eq!(sdp.origin.session_version, 1);
        assert_eq!(session_attr(&sdp, "group"), Some("BUNDLE 0 1 2 3"));
        assert_eq!(session_attr(&sdp, "ice-lite"), Some(""));
        assert_eq!(sdp.media_descriptions.len(), 4);
        for (i, track) in tracks.iter().enumerate() {
            let m = &sdp.media_descriptions[i];
            assert_eq!(media_attr(&sdp, i, "mid"), Some(track.mid.as_str()));
            assert_eq!(media_attr(&sdp, i, "sendonly"), Some(""));
            assert_eq!(media_attr(&sdp, i, "setup"), Some("actpass"));
            assert_eq!(media_attr(&sdp, i, "rtcp-mux"), Some(""));
            assert_eq!(media_attr(&sdp, i, "ice-ufrag"), Some("SfuUfrag"));
            assert_eq!(
                media_attr(&sdp, i, "candidate"),
                Some("1 1 udp 2130706431 203.0.113.7 40000 typ host")
            );
            let msid = format!("{} {}", track.stream_id, track.track_id);
            assert_eq!(media_attr(&sdp, i, "msid"), Some(msid.as_str()));
            let ssrc = track.ssrc;
            match track.kind {
                Kind::Audio => {
                    assert_eq!(m.media_name.formats, ["111"]);
                    assert_eq!(media_attrs(&sdp, i, "rtcp-fb"), ["111 transport-cc"]);
                    assert_eq!(
                        media_attr(&sdp, i, "fmtp"),
                        Some("111 minptime=10;useinbandfec=1")
                    );
                    assert_eq!(
                        media_attrs(&sdp, i, "extmap"),
                        [
                            format!("1 {MID_URI}"),
                            format!("3 {TRANSPORT_CC_URI}"),
                            format!("4 {AUDIO_LEVEL_URI}")
                        ]
                    );
                    assert_eq!(
                        media_attrs(&sdp, i, "ssrc"),
                        [
                            format!("{ssrc} cname:mooyaho"),
                            format!("{ssrc} msid:{msid}")
                        ]
                    );
                    assert_eq!(media_attr(&sdp, i, "ssrc-group"), None);
                }
                Kind::Video => {
                    let rtx = ssrc + 1;
                    assert_eq!(m.media_name.formats, ["96", "97"]);
                    assert_eq!(
                        media_attrs(&sdp, i, "rtcp-fb").len(),
                        5,
                        "goog-lntf dropped"
                    );
                    assert_eq!(
                        media_attrs(&sdp, i, "rtpmap"),
                        ["96 VP8/90000", "97 rtx/90000"]
                    );
                    assert_eq!(media_attr(&sdp, i, "fmtp"), Some("97 apt=96"));
                    assert_eq!(
                        media_attrs(&sdp, i, "extmap"),
                        [
                            format!("1 {MID_URI}"),
                            format!("2 {ABS_SEND_TIME_URI}"),
                            format!("3 {TRANSPORT_CC_URI}")
                        ]
                    );
                    assert_eq!(
                        media_attr(&sdp, i, "ssrc-group"),
                        Some(format!("FID {ssrc} {rtx}").as_str())
                    );
                    assert_eq!(
                        media_attrs(&sdp, i, "ssrc"),
                        [
                            format!("{ssrc} cname:mooyaho"),
                            format!("{ssrc} msid:{msid}"),
                            format!("{rtx} cname:mooyaho"),
                            format!("{rtx} msid:{msid}")
                        ]
                    );
                }
            }
        }
    }

    #[test]
    fn re_offer_keeps_mids_and_rejects_ended_tracks_but_the_bundle_tag() {
        let mut tracks = four_tracks();
        let first = reparse(&subscribe_offer(&local(), 1, &tracks).expect("offer"));
        tracks[0].active = false;
        tracks[2].active = false;
        let second = reparse(&subscribe_offer(&local(), 2, &tracks).expect("re-offer"));
        assert_eq!(second.origin.session_id, first.origin.session_id);
        assert_eq!(second.origin.session_version, 2);
        assert_eq!(mids(&second), mids(&first));
        // The first m-line tags the group: it stays bundled, inactive, without SSRCs or msid.
        assert_eq!(session_attr(&second, "group"), Some("BUNDLE 0 1 3"));
        assert_eq!(second.media_descriptions[0].media_name.port.value, 9);
        assert_eq!(media_attr(&second, 0, "inactive"), Some(""));
        assert_eq!(media_attr(&second, 0, "sendonly"), None);
        assert!(
            media_attrs(&second, 0, "ssrc").is_empty() && media_attr(&second, 0, "msid").is_none()
        );
        // Any other ended track is rejected: port 0, out of the group, nothing of the transport.
        let rejected = &second.media_descriptions[2];
        assert_eq!(rejected.media_name.port.value, 0);
        assert_eq!(rejected.media_name.formats, ["111"]);
        assert_eq!(media_attr(&second, 2, "inactive"), Some(""));
        for key in [
            "ssrc",
            "msid",
            "ice-ufrag",
            "fingerprint",
            "candidate",
            "extmap",
        ] {
            assert!(media_attrs(&second, 2, key).is_empty(), "{key}");
        }
        for i in [1, 3] {
            assert_eq!(media_attr(&second, i, "sendonly"), Some(""));
        }
        // Every track ended: the group still has its tag.
        for track in &mut tracks {
            track.active = false;
        }
        let third = reparse(&subscribe_offer(&local(), 3, &tracks).expect("re-offer"));
        assert_eq!(session_attr(&third, "group"), Some("BUNDLE 0"));
    }

    fn mids(sdp: &sdp::description::session::SessionDescription) -> Vec<String> {
        (0..sdp.media_descriptions.len())
            .map(|i| media_attr(sdp, i, "mid").unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn a_rejected_m_line_is_recycled_with_a_new_mid_and_answers_match_each_offer() {
        let mut tracks = four_tracks();
        tracks[3].active = false;
        let rejected = subscribe_offer(&local(), 2, &tracks).expect("offer");
        let answer = browser_answer(&tracks, &["recvonly", "recvonly", "recvonly", "rejected"]);
        let parsed = parse_subscribe_answer(&answer, &tracks).expect("answer to the rejection");
        assert_eq!(parsed.accepted_mids, ["0", "1", "2"]);
        // Carol's video takes m-line 3 under mid 4; another of Bob's payload types clashes with
        // nothing, since the rejected track is outside the group.
        let mut recycled = tracks.clone();
        recycled[3] = track("4", Kind::Video, 5000, "carol");
        let offer = reparse(&subscribe_offer(&local(), 3, &recycled).expect("re-offer"));
        assert_eq!(mids(&offer), ["0", "1", "2", "4"]);
        assert_eq!(session_attr(&offer, "group"), Some("BUNDLE 0 1 2 4"));
        assert_eq!(offer.media_descriptions[3].media_name.port.value, 9);
        assert_eq!(media_attr(&offer, 3, "msid"), Some("carol carol-4"));
        let answer = browser_answer(&recycled, &["recvonly"; 4]);
        assert_eq!(
            parse_subscribe_answer(&answer, &recycled)
                .expect("answer to the recycling offer")
                .accepted_mids,
            ["0", "1", "2", "4"]
        );
        // An answer is only valid against the offer it answers.
        assert!(parse_subscribe_answer(&answer, &tracks).is_err());
        assert!(rejected.contains("\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\n"));
        let mut clash = tracks.clone();
        clash[3].codec.name = "H264".to_owned();
        subscribe_offer(&local(), 4, &clash).expect("a rejected track's payload type is free");
    }

    #[test]
    fn clashing_payload_types_are_moved_so_every_offer_stays_writable() {
        let tracks = four_tracks();
        // Carol's Opus on 111 with other fmtp, and her VP8 + RTX on Bob's RTX type 97.
        let mut audio = track("4", Kind::Audio, 5000, "carol");
        audio.codec.fmtp = Some("stereo=1".to_owned());
        let mut video = track("5", Kind::Video, 6000, "carol");
        video.codec.pt = 97;
        video.codec.rtx_pt = Some(96);
        let mut all = tracks.clone();
        for mut new in [audio, video] {
            assign_payload_types(all.iter(), &mut new);
            all.push(new);
        }
        assert_eq!(
            all[4].codec.pt, 98,
            "first free dynamic type (96, 97 taken)"
        );
        // VP8 already has 96: shared; its RTX too.
        assert_eq!((all[5].codec.pt, all[5].codec.rtx_pt), (96, Some(97)));
        reparse(&subscribe_offer(&local(), 1, &all).expect("writable"));
        // Same codec on the same type, or a free type: unchanged.
        let mut same = track("6", Kind::Audio, 7000, "dave");
        assign_payload_types(tracks.iter(), &mut same);
        assert_eq!(same.codec.pt, 111);
        let mut free = track("7", Kind::Video, 8000, "erin");
        free.codec.pt = 120;
        free.codec.name = "VP9".to_owned();
        free.codec.rtx_pt = Some(121);
        assign_payload_types(tracks.iter(), &mut free);
        assert_eq!((free.codec.pt, free.codec.rtx_pt), (120, Some(121)));
        // Rejected tracks claim nothing: the caller passes only the bundled ones.
        let mut h264 = track("8", Kind::Video, 9000, "fay");
        h264.codec.name = "H264".to_owned();
        assign_payload_types(tracks.iter().take(1), &mut h264);
        assert_eq!(h264.codec.pt, 96);
    }

    #[test]
    fn browser_answer_round_trips() {
        let tracks = four_tracks();
        let answer = browser_answer(&tracks, &["recvonly"; 4]);
        let parsed = parse_subscribe_answer(&crlf(&answer), &tracks).expect("answer");
        assert_eq!(parsed.accepted_mids, ["0", "1", "2", "3"]);
        assert_eq!(parsed.remote_ice.ufrag, "Bv7k");
        assert_eq!(parsed.remote_ice.pwd, "c2Xq9Lm4Np7Rs1Tu6Vw3Yz8A");
        assert!(parsed.remote_fingerprint.0.starts_with("7E:21:9C"));
        assert_eq!(parsed.remote_setup, Setup::Active);
        // abs-send-time came back with id 9 instead of 2: dropped.
        assert_eq!(
            parsed.extensions,
            [
                Extension {
                    id: 1,
                    uri: MID_URI.to_owned()
                },
                Extension {
                    id: 3,
                    uri: TRANSPORT_CC_URI.to_owned()
                },
                Extension {
                    id: 4,
                    uri: AUDIO_LEVEL_URI.to_owned()
                },
            ]
        );
        // Pion / webrtc-rs answer an ICE-lite offerer with `passive`: the SFU becomes the DTLS
        // client. No `a=setup` at all means `active` (RFC 4145 §4 default for the answerer).
        let passive = answer.replace("a=setup:active", "a=setup:passive");
        assert_eq!(
            parse_subscribe_answer(&passive, &tracks).map(|a| a.remote_setup),
            Ok(Setup::Passive)
        );
        let absent = answer.replace("a=setup:active\n", "");
        assert_eq!(
            parse_subscribe_answer(&absent, &tracks).map(|a| a.remote_setup),
            Ok(Setup::Active)
        );
        // Answer to the re-offer: the ended track is answered inactive, one is rejected.
        let mut tracks = tracks;
        tracks[1].active = false;
        let answer = browser_answer(&tracks, &["recvonly", "inactive", "rejected", "recvonly"]);
        let parsed = parse_subscribe_answer(&answer, &tracks).expect("answer");
        assert_eq!(parsed.accepted_mids, ["0", "3"]);
        // An ended track answered recvonly is still not accepted.
        let answer = browser_answer(&tracks, &["recvonly"; 4]);
        assert_eq!(
            parse_subscribe_answer(&answer, &tracks)
                .expect("answer")
                .accepted_mids,
            ["0", "2", "3"]
        );
    }

    #[test]
    fn bad_answers_are_typed_errors() {
        let tracks = four_tracks();
        let good = browser_answer(&tracks, &["recvonly"; 4]);
        let cases: Vec<(String, Expect)> = vec![
            (String::new(), Expect::Malformed),
            (good.replace("a=mid:3", "a=mid:4"), Expect::Unsupported("")),
            (
                good.replace("a=mid:1", "a=mid:x")
                    .replace("a=mid:2", "a=mid:1")
                    .replace("a=mid:x", "a=mid:2"),
                Expect::Unsupported(""),
            ),
            (
                good.replace(
                    "m=video 9 UDP/TLS/RTP/SAVPF 96",
                    "m=audio 9 UDP/TLS/RTP/SAVPF 96",
                ),
                Expect::Unsupported(""),
            ),
            (
                good[..good.rfind("m=video").expect("video")].to_owned(),
                Expect::Unsupported(""),
            ),
            (
                good.replace("a=setup:active", "a=setup:actpass"),
                Expect::Unsupported(""),
            ),
            (
                good.replace("a=setup:active", "a=setup:holdconn"),
                Expect::Unsupported(""),
            ),
            (
                good.replace("a=group:BUNDLE 0 1 2 3", "a=group:BUNDLE 0 1 2"),
                Expect::Unsupported(""),
            ),
            (good.replace("a=rtcp-mux\n", ""), Expect::Unsupported("")),
            (
                good.replace("a=ice-ufrag:Bv7k\n", ""),
                Expect::Missing("ice-ufrag"),
            ),
            (
                good.replace("sha-256 7E", "sha-1 7E"),
                Expect::Unsupported(""),
            ),
            (good.replace("a=mid:1", "a=mid:0"), Expect::Malformed),
        ];
        for (i, (answer, expected)) in cases.iter().enumerate() {
            let error = parse_subscribe_answer(answer, &tracks)
                .err()
                .unwrap_or_else(|| panic!("case {i} accepted: {answer}"));
            assert!(
                expected.matches(&error),
                "case {i}: {error:?}, expected {expected:?}"
            );
        }
        assert_eq!(
            parse_subscribe_answer(&good, &[]).err(),
            Some(SdpError::Missing("tracks"))
        );
    }

    #[test]
    fn offer_refuses_tracks_it_cannot_write() {
        assert_eq!(
            subscribe_offer(&local(), 1, &[]),
            Err(SdpError::Missing("tracks"))
        );
        let refuse = |edit: &dyn Fn(&mut Vec<ForwardedTrack>)| {
            let mut tracks = four_tracks();
            edit(&mut tracks);
            subscribe_offer(&local(), 1, &tracks)
        };
        let unsupported = |result: Result<String, SdpError>, needle: &str| {
            matches!(&result, Err(SdpError::Unsupported(m)) if m.contains(needle))
                || panic!("{needle}: {result:?}")
        };
        unsupported(refuse(&|t| t[1].mid = "0".to_owned()), "duplicate mid");
        unsupported(refuse(&|t| t[1].mid = "a b".to_owned()), "mid");
        unsupported(
            refuse(&|t| t[1].track_id = "x\r\na=evil".to_owned()),
            "msid",
        );
        unsupported(
            refuse(&|t| t[1].codec.fmtp = Some("a\r\nb".to_owned())),
            "fmtp",
        );
        unsupported(refuse(&|t| t[0].rtx_ssrc = Some(7)), "rtx_ssrc");
        unsupported(refuse(&|t| t[1].codec.pt = 200), "exceeds 127");
        // Bob's H264 on Alice's VP8 payload type / RTX payload type: one BUNDLE, two codecs.
        unsupported(
            refuse(&|t| t[3].codec.name = "H264".to_owned()),
            "payload type 96",
        );
        unsupported(refuse(&|t| t[3].codec.pt = 97), "payload type 97");
        // Same codec on the same payload type is fine, and RTX without an RTX SSRC is not offered.
        let mut tracks = four_tracks();
        tracks[3].rtx_ssrc = None;
        let offer = reparse(&subscribe_offer(&local(), 1, &tracks).expect("offer"));
        assert_eq!(offer.media_descriptions[3].media_name.formats, ["96"]);
    }

    #[test]
    fn mutated_answers_never_panic() {
        let tracks = four_tracks();
        let good = crlf(&browser_answer(&tracks, &["recvonly"; 4]));
        let mut rng = TestRng::new(0x2545_f491_4f6c_dd1d);
        let mut accepted = 0;
        for _ in 0..1000 {
            let answer = mutate(&good, &mut rng);
            accepted += usize::from(parse_subscribe_answer(&answer, &tracks).is_ok());
        }
        assert!(accepted > 100, "only {accepted} mutated answers accepted");
    }
}
