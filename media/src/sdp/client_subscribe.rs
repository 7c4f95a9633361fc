//! A subscribe session the client offers (WHEP): the client sends `recvonly` m-lines and the SFU
//! answers, putting one of the room's published tracks on each m-line it can fill. The SFU is
//! then the answerer (`a=setup:passive`: the DTLS server) and takes the client's mids, payload
//! types and header extension ids, which the node rewrites per subscriber anyway.

use std::collections::HashMap;

use super::parse::{self, Direction, Media};
use super::subscribe::write_track;
use super::write;
use super::{
    Codec, Extension, Fingerprint, ForwardedTrack, IceCredentials, LocalDescription,
    SUBSCRIBE_EXTENSIONS, SUPPORTED_RTCP_FB, SdpError,
};

/// The SFU's answer to a client's receive offer, with what it put where.
#[derive(Clone, Debug)]
pub struct ClientSubscribe {
    /// The answer SDP.
    pub answer: String,
    /// The client's ICE credentials.
    pub remote_ice: IceCredentials,
    /// The client's certificate fingerprint.
    pub remote_fingerprint: Fingerprint,
    /// Header extensions the transport writes, with the client's ids.
    pub extensions: Vec<Extension>,
    /// Each filled m-line: the index of its track in the `available` list given, and the track
    /// as answered (the client's mid and payload types).
    pub tracks: Vec<(usize, ForwardedTrack)>,
}

/// Answers `offer` (a client's `recvonly`/`sendrecv` m-lines) with tracks from `available`
/// (their `mid` is ignored; their codec is the publisher's). Each audio or video m-line takes the
/// first unused available track of its kind whose codec the m-line lists (same name and clock
/// rate); m-lines left without one are rejected (port 0). Refused when the offer is not a
/// BUNDLE/rtcp-mux DTLS-SRTP offer or no m-line can carry any track.
pub fn answer_subscribe_offer(
    offer: &str,
    local: &LocalDescription,
    available: &[ForwardedTrack],
) -> Result<ClientSubscribe, SdpError> {
    let session = parse::session(offer)?;
    let media = Media::all(&session)?;
    let (bundle, remote_ice, remote_fingerprint) = parse::offered_transport(&session, &media)?;

    let mut used = vec![false; available.len()];
    let mut filled: Vec<Option<(usize, ForwardedTrack)>> = Vec::with_capacity(media.len());
    for m in &media {
        let receiving = m.kind.is_some()
            && m.is_dtls_srtp()
            && (m.port != 0 || m.bundle_only)
            && matches!(m.direction, Direction::RecvOnly | Direction::SendRecv)
            && bundle.contains(&m.mid);
        let fill = receiving
            .then(|| {
                available.iter().enumerate().find_map(|(i, track)| {
                    let fits = !used[i] && Some(track.kind) == m.kind;
                    fits.then(|| fit(m, track).map(|answered| (i, answered)))
                        .flatten()
                })
            })
            .flatten();
        if let Some((i, _)) = &fill {
            if !m.rtcp_mux {
                return Err(SdpError::Unsupported(format!(
                    "m-line {} lacks a=rtcp-mux (RFC 8843 §9.3 requires it)",
                    m.mid
                )));
            }
            used[*i] = true;
        }
        filled.push(fill);
    }
    let mids: Vec<&str> = filled
        .iter()
        .flatten()
        .map(|(_, t)| t.mid.as_str())
        .collect();
    if mids.is_empty() {
        return Err(SdpError::Unsupported(format!(
            "nothing to send: no recvonly m-line of the offer fits any of the {} track(s) \
             published here (kind and codec)",
            available.len()
        )));
    }
    let extensions = client_extensions(&media, &filled);

    let mut answer = String::with_capacity(1024 + 1536 * media.len());
    write::session_header(&mut answer, local, 1, &mids);
    for (m, fill) in media.iter().zip(&filled) {
        match fill {
            Some((_, track)) => {
                let offered: Vec<(u8, &str)> = extensions
                    .iter()
                    .filter(|e| m.extmaps.iter().any(|x| x.id == e.id && x.uri == e.uri))
                    .map(|e| (e.id, e.uri.as_str()))
                    .collect();
                write_track(&mut answer, local, track, "passive", &offered);
            }
            None => write::rejected_media(&mut answer, m)?,
        }
    }
    Ok(ClientSubscribe {
        answer,
        remote_ice,
        remote_fingerprint,
        extensions,
        tracks: filled.into_iter().flatten().collect(),
    })
}

/// `track` on m-line `m` if `m` lists its codec: the client's mid and payload types (its RTX
/// payload type for that codec, if it offered one), the client's supported feedback.
fn fit(m: &Media<'_>, track: &ForwardedTrack) -> Option<ForwardedTrack> {
    let codec = &track.codec;
    let pt = m.pts.iter().copied().find(|&pt| {
        m.rtpmap(pt).is_some_and(|map| {
            map.name.eq_ignore_ascii_case(&codec.name)
                && map.clock_rate == codec.clock_rate
                && same_h264_packetization(m, pt, codec)
        })
    })?;
    let rtx_pt = m.pts.iter().copied().find(|&rtx| {
        m.rtpmap(rtx)
            .is_some_and(|map| map.name.eq_ignore_ascii_case("rtx"))
            && m.fmtp_param(rtx, "apt") == Some(pt.to_string().as_str())
    });
    let rtcp_fb = m
        .rtcp_fb(pt)
        .into_iter()
        .filter(|fb| codec.rtcp_fb.contains(fb) && SUPPORTED_RTCP_FB.contains(&fb.as_str()))
        .collect();
    let rtx_ssrc = track.rtx_ssrc.filter(|_| rtx_pt.is_some());
    Some(ForwardedTrack {
        mid: m.mid.to_owned(),
        codec: Codec {
            pt,
            rtx_pt: rtx_pt.filter(|_| rtx_ssrc.is_some()),
            rtcp_fb,
            ..codec.clone()
        },
        rtx_ssrc,
        ..track.clone()
    })
}

/// H264 streams of different `packetization-mode`s are not interchangeable (RFC 6184 §8.1);
/// other codecs match by name and clock rate alone.
fn same_h264_packetization(m: &Media<'_>, pt: u8, codec: &Codec) -> bool {
    if !codec.name.eq_ignore_ascii_case("H264") {
        return true;
    }
    let mode = |fmtp: Option<&str>| {
        fmtp.and_then(|f| {
            f.split(';')
                .find_map(|p| p.trim().strip_prefix("packetization-mode="))
                .map(str::trim)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "0".to_owned())
    };
    mode(m.fmtp(pt)) == mode(codec.fmtp.as_deref())
}

/// The extensions of [`SUBSCRIBE_EXTENSIONS`]' URIs the filled m-lines offered, with the
/// client's ids (one-byte form, 1–14). A URI or id used inconsistently across the BUNDLE group is
/// left out (the node then does not write it).
fn client_extensions(
    media: &[Media<'_>],
    filled: &[Option<(usize, ForwardedTrack)>],
) -> Vec<Extension> {
    let mut by_uri: HashMap<&str, Option<u8>> = HashMap::new();
    let mut by_id: HashMap<u8, Option<&str>> = HashMap::new();
    for (m, _) in media.iter().zip(filled).filter(|(_, f)| f.is_some()) {
        for ext in &m.extmaps {
            let supported = SUBSCRIBE_EXTENSIONS.iter().any(|(_, uri)| *uri == ext.uri);
            if !supported || ext.id == 0 || ext.id > 14 {
                continue;
            }
            let uri_id = by_uri.entry(ext.uri).or_insert(Some(ext.id));
            if *uri_id != Some(ext.id) {
                *uri_id = None;
            }
            let id_uri = by_id.entry(ext.id).or_insert(Some(ext.uri));
            if *id_uri != Some(ext.uri) {
                *id_uri = None;
            }
        }
    }
    let mut out: Vec<Extension> = by_uri
        .into_iter()
        .filter_map(|(uri, id)| {
            let id = id?;
            (by_id.get(&id) == Some(&Some(uri))).then(|| Extension {
                id,
                uri: uri.to_owned(),
            })
        })
        .collect();
    out.sort_by_key(|e| e.id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::test_support::*;
    use crate::sdp::{AUDIO_LEVEL_URI, Kind, MID_URI, TRANSPORT_CC_URI};
    use mooyaho_test_support::rng::TestRng;

    /// Chrome's offer turned into a viewer's: every m-line `recvonly`.
    fn chrome_viewer_offer() -> String {
        crlf(CHROME).replace("a=sendonly", "a=recvonly")
    }

    /// A published VP8 track whose publisher chose payload types 120/121.
    fn vp8_track(stream: &str) -> ForwardedTrack {
        ForwardedTrack {
            mid: String::new(),
            kind: Kind::Video,
            codec: Codec {
                name: "VP8".to_owned(),
                pt: 120,
                clock_rate: 90_000,
                channels: None,
                fmtp: None,
                rtcp_fb: ["nack", "nack pli", "goog-remb"]
                    .map(str::to_owned)
                    .to_vec(),
                rtx_pt: Some(121),
            },
            ssrc: 1111,
            rtx_ssrc: Some(2222),
            stream_id: stream.to_owned(),
            track_id: "cam".to_owned(),
            active: true,
        }
    }

    fn opus_track(stream: &str) -> ForwardedTrack {
        ForwardedTrack {
            mid: String::new(),
            kind: Kind::Audio,
            codec: opus(),
            ssrc: 3333,
            rtx_ssrc: None,
            stream_id: stream.to_owned(),
            track_id: "mic".to_owned(),
            active: true,
        }
    }

    #[test]
    fn a_browser_viewer_offer_gets_the_tracks_on_its_own_mids_payload_types_and_extension_ids() {
        let available = [vp8_track("pub"), opus_track("pub")];
        let answered =
            answer_subscribe_offer(&chrome_viewer_offer(), &local(), &available).unwrap();
        // Audio m-line 0 takes the Opus track (index 1), video m-line 1 the VP8 one (index 0).
        let placed: Vec<(usize, &str, u8)> = answered
            .tracks
            .iter()
            .map(|(i, t)| (*i, t.mid.as_str(), t.codec.pt))
            .collect();
        assert_eq!(placed, [(1, "0", 111), (0, "1", 96)]);
        assert_eq!(
            answered.tracks[1].1.codec.rtx_pt,
            Some(97),
            "the client's RTX pt"
        );
        assert_eq!(answered.tracks[1].1.rtx_ssrc, Some(2222));
        let sdp = reparse(&answered.answer);
        assert_eq!(session_attr(&sdp, "group"), Some("BUNDLE 0 1"));
        assert!(session_attr(&sdp, "ice-lite").is_some());
        assert_eq!(
            sdp.media_descriptions.len(),
            3,
            "the data channel is rejected, kept"
        );
        assert_eq!(sdp.media_descriptions[2].media_name.port.value, 0);
        for (i, msid) in [(0, "pub mic"), (1, "pub cam")] {
            assert_eq!(media_attr(&sdp, i, "setup"), Some("passive"));
            assert!(media_attr(&sdp, i, "sendonly").is_some());
            assert_eq!(media_attr(&sdp, i, "msid"), Some(msid));
        }
        let video = &sdp.media_descriptions[1];
        assert_eq!(video.media_name.formats, ["96", "97"]);
        // Chrome's ids: mid 4, transport-cc 3, abs-send-time 2, audio level 1.
        let ids: Vec<(u8, &str)> = answered
            .extensions
            .iter()
            .map(|e| (e.id, e.uri.as_str()))
            .collect();
        assert!(
            ids.contains(&(4, MID_URI)) && ids.contains(&(3, TRANSPORT_CC_URI)),
            "{ids:?}"
        );
        assert!(ids.contains(&(1, AUDIO_LEVEL_URI)), "{ids:?}");
        let offered_ufrag = chrome_viewer_offer()
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned);
        assert_eq!(Some(answered.remote_ice.ufrag), offered_ufrag);
    }

    #[test]
    fn m_lines_without_a_fitting_track_are_rejected_and_nothing_to_send_is_refused() {
        // Only audio published: the video m-line is rejected.
        let answered =
            answer_subscribe_offer(&chrome_viewer_offer(), &local(), &[opus_track("p")]).unwrap();
        assert_eq!(answered.tracks.len(), 1);
        let sdp = reparse(&answered.answer);
        assert_eq!(session_attr(&sdp, "group"), Some("BUNDLE 0"));
        assert_eq!(sdp.media_descriptions[1].media_name.port.value, 0);
        // A codec the viewer does not list is no fit either.
        let mut h265 = vp8_track("p");
        h265.codec.name = "H265".to_owned();
        let refused = answer_subscribe_offer(&chrome_viewer_offer(), &local(), &[h265]);
        assert!(
            matches!(refused, Err(SdpError::Unsupported(ref m)) if m.contains("nothing to send")),
            "{refused:?}"
        );
        // A publish offer (sendonly) has nothing to receive.
        let refused = answer_subscribe_offer(&crlf(CHROME), &local(), &[opus_track("p")]);
        assert!(refused.is_err());
    }

    #[test]
    fn hostile_viewer_offers_are_typed_errors_never_panics() {
        let available = [vp8_track("p"), opus_track("p")];
        let no_bundle = chrome_viewer_offer().replace("a=group:BUNDLE 0 1 2\r\n", "");
        assert!(answer_subscribe_offer(&no_bundle, &local(), &available).is_err());
        let server_role = chrome_viewer_offer().replace("a=setup:actpass", "a=setup:passive");
        assert!(answer_subscribe_offer(&server_role, &local(), &available).is_err());
        assert!(answer_subscribe_offer("v=0\r\n", &local(), &available).is_err());
        let mut rng = TestRng::new(18);
        for _ in 0..300 {
            let mutated = mutate(&chrome_viewer_offer(), &mut rng);
            let _ = answer_subscribe_offer(&mutated, &local(), &available);
        }
    }
}
