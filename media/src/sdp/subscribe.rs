//! The subscribe PeerConnection: the SFU offers one `sendonly` m-line per forwarded track and
//! re-offers as tracks come and go; the client answers.

use std::collections::HashMap;

use super::parse::{self, Direction, Media};
use super::write::{self, sdp_line};
use super::{Codec, Extension, ForwardedTrack, Kind, LocalDescription, SdpError, SubscribeAnswer};

/// Writes the SFU's offer for a subscribe session: one m-line per track in the given order,
/// `sendonly` while the track is active and `inactive` once it ended (the m-line and its mid stay,
/// RFC 8829 §5.2.2), all in one BUNDLE group. `version` is the `o=` session version and must
/// grow with every re-offer (RFC 3264 §8).
///
/// Errors: [`SdpError::Missing`]`("tracks")` for an empty list; [`SdpError::Unsupported`] when a
/// mid is duplicated or not a short token, an id or fmtp cannot be written into SDP, `rtx_ssrc`
/// is set without `codec.rtx_pt`, or two tracks use one payload type for different codecs
/// (browsers reject such a BUNDLE group; the caller must remap payload types first).
pub fn subscribe_offer(
    local: &LocalDescription,
    version: u64,
    tracks: &[ForwardedTrack],
) -> Result<String, SdpError> {
    if tracks.is_empty() {
        return Err(SdpError::Missing("tracks"));
    }
    check_tracks(tracks)?;
    let mids: Vec<&str> = tracks.iter().map(|track| track.mid.as_str()).collect();
    let mut out = String::with_capacity(512 + 1536 * tracks.len());
    write::session_header(&mut out, local, version, &mids);
    for track in tracks {
        write_track(&mut out, local, track);
    }
    Ok(out)
}

/// Parses the client's answer to [`subscribe_offer`]`(.., offered)`.
///
/// The answer must list the offer's mids in the same order and kinds (RFC 3264 §6), bundle and
/// rtcp-mux every accepted m-line, and leave the SFU the DTLS server role (`a=setup:active`).
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
        let description = format!(
            "{}/{}/{:?} {}",
            codec.name.to_ascii_lowercase(),
            codec.clock_rate,
            codec.channels,
            codec.fmtp.as_deref().unwrap_or("")
        );
        let mut result = claim(codec.pt, description);
        if let (Ok(()), Some(rtx_pt), Some(_)) = (&result, codec.rtx_pt, track.rtx_ssrc) {
            result = claim(rtx_pt, format!("rtx/{} apt={}", codec.clock_rate, codec.pt));
        }
        if let Err(why) = result {
            return unsupported(track, &why);
        }
    }
    Ok(())
}

fn write_track(out: &mut String, local: &LocalDescription, track: &ForwardedTrack) {
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
    write::media_header(out, local, media, &pts, &track.mid, "actpass");
    for (id, uri) in subscribe_extensions(track.kind) {
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

/// [`SUBSCRIBE_EXTENSIONS`](super::SUBSCRIBE_EXTENSIONS) that apply to `kind`.
fn subscribe_extensions(kind: Kind) -> impl Iterator<Item = &'static (u8, &'static str)> {
    super::SUBSCRIBE_EXTENSIONS
        .iter()
        .filter(move |(_, uri)| match kind {
            Kind::Audio => *uri != super::ABS_SEND_TIME_URI,
            Kind::Video => *uri != super::AUDIO_LEVEL_URI,
        })
}
