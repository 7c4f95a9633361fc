//! The SDP a simulated participant writes: a publish offer (one Opus or VP8 track) and an answer
//! to the SFU's subscribe offer. Only what an SFU needs (Mooyaho's ICE-lite node, or Janus, a full
//! ICE agent that also wants our host candidate); parsing of the SFU's SDP takes the few
//! attributes a client must know.

use std::net::SocketAddr;

/// What a client learns from the SFU's SDP.
#[derive(Clone, Debug, Default)]
pub(crate) struct Remote {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
    pub(crate) fingerprint: String,
    /// The first IPv4 UDP candidate (else the first candidate).
    pub(crate) candidate: Option<SocketAddr>,
    /// The session's `a=setup` (`active`, `passive` or `actpass`), which decides our DTLS role.
    pub(crate) setup: Option<String>,
    /// `(mid, m-line kind, first payload type, a=ssrc of the line)` per m-line.
    pub(crate) media: Vec<(String, String, String, Option<u32>)>,
}

pub(crate) fn parse_remote(sdp: &str) -> Remote {
    let mut remote = Remote::default();
    let mut kind = String::new();
    let mut pt = String::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            kind = parts.next().unwrap_or_default().to_owned();
            pt = parts.nth(2).unwrap_or_default().to_owned();
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            remote
                .media
                .push((mid.to_owned(), kind.clone(), pt.clone(), None));
        } else if let Some(ssrc) = line.strip_prefix("a=ssrc:") {
            let ssrc = ssrc.split_whitespace().next().and_then(|s| s.parse().ok());
            if let Some(last) = remote.media.last_mut()
                && last.3.is_none()
            {
                last.3 = ssrc;
            }
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            v.clone_into(&mut remote.ufrag);
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            v.clone_into(&mut remote.pwd);
        } else if let Some(v) = line.strip_prefix("a=fingerprint:sha-256 ") {
            v.clone_into(&mut remote.fingerprint);
        } else if let Some(v) = line.strip_prefix("a=setup:") {
            if remote.setup.is_none() {
                remote.setup = Some(v.to_owned());
            }
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            let f: Vec<&str> = c.split_whitespace().collect();
            let Some(addr) = f
                .get(4..6)
                .and_then(|f| format!("{}:{}", f[0], f[1]).parse::<SocketAddr>().ok())
            else {
                continue;
            };
            // We bind one IPv4 UDP socket: prefer a candidate it can reach.
            let usable = f[2].eq_ignore_ascii_case("udp") && addr.is_ipv4();
            let have_usable = remote.candidate.is_some_and(|c| c.is_ipv4());
            if remote.candidate.is_none() || (usable && !have_usable) {
                remote.candidate = Some(addr);
            }
        }
    }
    remote
}

/// The local side of a client's SDP.
pub(crate) struct Local<'a> {
    pub(crate) ufrag: &'a str,
    pub(crate) pwd: &'a str,
    pub(crate) fingerprint: &'a str,
    /// Our host candidate, for a full ICE agent (Janus) that checks toward us; the ICE-lite
    /// Mooyaho node learns our address from our checks instead.
    pub(crate) candidate: Option<SocketAddr>,
}

/// The candidate lines of one m-section (none without a candidate).
fn candidate_lines(local: &Local<'_>) -> String {
    local.candidate.map_or_else(String::new, |c| {
        format!("{}\r\na=end-of-candidates\r\n", candidate_attribute(c))
    })
}

/// `a=candidate:…` of a host candidate (also what Janus's trickle request carries, minus `a=`).
pub(crate) fn candidate_attribute(addr: SocketAddr) -> String {
    format!(
        "a=candidate:1 1 udp 2130706431 {} {} typ host",
        addr.ip(),
        addr.port()
    )
}

fn header(local: &Local<'_>, mids: &[String]) -> String {
    format!(
        "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\na=msid-semantic: WMS\r\n",
        rand::random::<u32>(),
        mids.join(" "),
    ) + &format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\n",
        local.ufrag, local.pwd, local.fingerprint
    )
}

/// A publish offer with one track: Opus (`audio`) or VP8, the video with RTX on `rtx_ssrc`
/// when given (as a browser offers it: the node then offers RTX to the subscribers).
pub(crate) fn publish_offer(
    local: &Local<'_>,
    audio: bool,
    ssrc: u32,
    rtx_ssrc: Option<u32>,
) -> String {
    offer_tracks(local, &[(audio, ssrc, rtx_ssrc.filter(|_| !audio))])
}

/// A publish offer with one VP8 track sent as simulcast layers, one SSRC each, lowest first
/// (`a=ssrc-group:SIM`, as libwebrtc writes it without rids), each with an RTX SSRC
/// (`a=ssrc-group:FID`): the node then offers RTX to subscribers, which its probes need.
pub(crate) fn publish_offer_simulcast(
    local: &Local<'_>,
    layers: [u32; 3],
    rtx: [u32; 3],
) -> String {
    let mut sdp = header(local, &["0".to_owned()]);
    sdp += &format!("m=video 9 UDP/TLS/RTP/SAVPF 96 {RTX_PT}\r\nc=IN IP4 0.0.0.0\r\n");
    sdp += "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n";
    sdp += &format!("a=rtpmap:{RTX_PT} rtx/90000\r\na=fmtp:{RTX_PT} apt=96\r\n");
    sdp += "a=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=msid:load track0\r\n";
    sdp += &format!(
        "a=ssrc-group:SIM {} {} {}\r\n",
        layers[0], layers[1], layers[2]
    );
    for (media, rtx) in layers.into_iter().zip(rtx) {
        sdp += &format!("a=ssrc-group:FID {media} {rtx}\r\n");
    }
    for ssrc in layers.into_iter().chain(rtx) {
        sdp += &format!("a=ssrc:{ssrc} cname:load\r\n");
    }
    sdp += &candidate_lines(local);
    sdp
}

/// The publisher sessions whose video an SFU offer carries (the stream id of each video
/// m-line's `a=msid`, which the node sets to the publisher's session id).
pub(crate) fn video_publishers(offer: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut video = false;
    for line in offer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            video = m.starts_with("video");
        } else if let Some(msid) = line.strip_prefix("a=msid:")
            && video
            && let Some(stream) = msid.split_whitespace().next()
            && !out.iter().any(|s| s == stream)
        {
            out.push(stream.to_owned());
        }
    }
    out
}

/// A publish offer with one m-line per `(audio, ssrc)` track, in order (mids `0`, `1`, …): Opus
/// for audio, VP8 with NACK and PLI feedback for video, each declaring its one SSRC.
pub(crate) fn publish_offer_tracks(local: &Local<'_>, tracks: &[(bool, u32)]) -> String {
    let tracks: Vec<_> = tracks.iter().map(|&(a, s)| (a, s, None)).collect();
    offer_tracks(local, &tracks)
}

/// The RTX payload type of our VP8 (96).
const RTX_PT: u8 = 97;

/// `(audio, ssrc, rtx ssrc)` per m-line.
fn offer_tracks(local: &Local<'_>, tracks: &[(bool, u32, Option<u32>)]) -> String {
    let mids: Vec<String> = (0..tracks.len()).map(|i| i.to_string()).collect();
    let mut sdp = header(local, &mids);
    for (mid, &(audio, ssrc, rtx)) in mids.iter().zip(tracks) {
        if audio {
            sdp += "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n";
            sdp += "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
        } else if rtx.is_some() {
            sdp += &format!("m=video 9 UDP/TLS/RTP/SAVPF 96 {RTX_PT}\r\nc=IN IP4 0.0.0.0\r\n");
            sdp += "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n";
            sdp += &format!("a=rtpmap:{RTX_PT} rtx/90000\r\na=fmtp:{RTX_PT} apt=96\r\n");
        } else {
            sdp += "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n";
            sdp += "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n";
        }
        sdp += &format!(
            "a=setup:actpass\r\na=mid:{mid}\r\na=sendonly\r\na=rtcp-mux\r\na=msid:load track{mid}\r\n"
        );
        if let Some(rtx) = rtx {
            sdp += &format!("a=ssrc-group:FID {ssrc} {rtx}\r\n");
        }
        for ssrc in std::iter::once(ssrc).chain(rtx) {
            sdp += &format!("a=ssrc:{ssrc} cname:load\r\n");
        }
        sdp += &candidate_lines(local);
    }
    sdp
}

/// What a subscriber needs to unwrap retransmissions (RFC 4588): the RTX payload types an offer
/// maps, and each RTX SSRC's media SSRC (`a=ssrc-group:FID media rtx`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RtxMap {
    pub(crate) pts: std::collections::BTreeSet<u8>,
    pub(crate) ssrcs: std::collections::HashMap<u32, u32>,
}

impl RtxMap {
    /// The RTX payload types and FID groups of `sdp` (an offer, or a re-offer adding tracks).
    pub(crate) fn of(sdp: &str) -> Self {
        let mut map = Self::default();
        map.extend(sdp);
        map
    }

    /// Adds what `sdp` declares.
    pub(crate) fn extend(&mut self, sdp: &str) {
        for line in sdp.lines().map(str::trim_end) {
            if let Some(rest) = line.strip_prefix("a=rtpmap:")
                && let Some((pt, codec)) = rest.split_once(' ')
                && codec.to_ascii_lowercase().starts_with("rtx/")
                && let Ok(pt) = pt.parse()
            {
                self.pts.insert(pt);
            } else if let Some(rest) = line.strip_prefix("a=ssrc-group:FID ") {
                let ssrcs: Vec<u32> = rest
                    .split_whitespace()
                    .filter_map(|s| s.parse().ok())
                    .collect();
                if let [media, rtx] = ssrcs[..] {
                    self.ssrcs.insert(rtx, media);
                }
            }
        }
    }

    /// The media SSRC of a packet with payload type `pt` on `ssrc`, if it is a retransmission.
    pub(crate) fn media_ssrc(&self, pt: u8, ssrc: u32) -> Option<u32> {
        if !self.pts.contains(&pt) {
            return None;
        }
        self.ssrcs.get(&ssrc).copied()
    }
}

/// The transport-wide-cc header extension's URI.
pub(crate) const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// The id an SDP maps a header extension `uri` to (the first `a=extmap` naming it).
pub(crate) fn extension_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let rest = line.trim_end().strip_prefix("a=extmap:")?;
        let (id, mapped) = rest.split_once(' ')?;
        let id = id.split('/').next()?.parse().ok()?;
        (mapped.split_whitespace().next()? == uri).then_some(id)
    })
}

/// The answer to the SFU's subscribe offer: receive every m-line with its first codec, its
/// feedback and the offered header extensions; `setup` is our DTLS side (`active` or `passive`).
pub(crate) fn subscribe_answer(local: &Local<'_>, offer: &str, setup: &str) -> String {
    let mut mids = Vec::new();
    let mut lines = Vec::new();
    let mut section: Vec<&str> = Vec::new();
    let mut sections: Vec<Vec<&str>> = Vec::new();
    for line in offer.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            if !section.is_empty() {
                sections.push(std::mem::take(&mut section));
            }
            section.push(line);
        } else if !section.is_empty() {
            section.push(line);
        }
    }
    if !section.is_empty() {
        sections.push(section);
    }
    for section in &sections {
        let mid = section
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .unwrap_or("0");
        mids.push(mid.to_owned());
        let m: Vec<&str> = section[0].split_whitespace().collect();
        let pt = m.get(3).copied().unwrap_or("96");
        // The codec's RTX, if offered (`a=fmtp:<rtx> apt=<pt>`).
        let rtx = section.iter().find_map(|l| {
            let (rtx, params) = l.strip_prefix("a=fmtp:")?.split_once(' ')?;
            (params.trim() == format!("apt={pt}")).then_some(rtx)
        });
        let pts = rtx.map_or_else(|| pt.to_owned(), |rtx| format!("{pt} {rtx}"));
        lines.push(format!(
            "{} 9 UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 0.0.0.0\r\n",
            m[0]
        ));
        for l in section.iter() {
            // As a browser answers: the codec, its RTX, its feedback, and the header extensions
            // offered (the server then writes them into every packet it sends us, as it would to
            // Chrome).
            let of_rtx = rtx.is_some_and(|rtx| {
                l.starts_with(&format!("a=rtpmap:{rtx} "))
                    || l.starts_with(&format!("a=fmtp:{rtx} "))
            });
            let keep = l.starts_with(&format!("a=rtpmap:{pt} "))
                || l.starts_with(&format!("a=fmtp:{pt} "))
                || l.starts_with(&format!("a=rtcp-fb:{pt} "))
                || of_rtx
                || l.starts_with("a=extmap:");
            if keep {
                lines.push(format!("{l}\r\n"));
            }
        }
        let direction = if section.contains(&"a=inactive") {
            "inactive"
        } else {
            "recvonly"
        };
        lines.push(format!(
            "a=setup:{setup}\r\na=mid:{mid}\r\na={direction}\r\na=rtcp-mux\r\n"
        ));
        lines.push(candidate_lines(local));
    }
    let mut sdp = header(local, &mids);
    for l in lines {
        sdp += &l;
    }
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offers_video_publishers_are_its_video_msid_streams() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:alice a0\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:alice v0\r\n\
                     a=ssrc:1 msid:alice v0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                     a=inactive\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:bob v1\r\n";
        assert_eq!(video_publishers(offer), ["alice", "bob"]);
    }

    #[test]
    fn a_simulcast_offer_groups_its_layers_lowest_first() {
        let ice = crate::peer::LocalIce::random();
        let offer = publish_offer_simulcast(&ice.local("AB:CD"), [7, 8, 9], [17, 18, 19]);
        assert!(offer.contains("a=ssrc-group:SIM 7 8 9\r\n"), "{offer}");
        assert!(offer.contains("a=ssrc-group:FID 8 18\r\n"), "{offer}");
        assert_eq!(offer.matches("m=").count(), 1);
        assert_eq!(offer.matches("a=ssrc:").count(), 6);
    }

    #[test]
    fn remote_setup_and_a_reachable_candidate_are_parsed() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=setup:active\r\na=mid:0\r\n\
                   a=candidate:2 1 udp 2015363583 fd00::2 20086 typ host\r\n\
                   a=candidate:1 1 udp 2015363327 192.0.2.2 20304 typ host\r\n\
                   a=candidate:3 1 udp 2015363327 192.0.2.3 20305 typ host\r\n";
        let remote = parse_remote(sdp);
        assert_eq!(remote.setup.as_deref(), Some("active"));
        assert_eq!(remote.candidate, Some("192.0.2.2:20304".parse().unwrap()));
    }

    #[test]
    fn our_candidate_is_written_only_when_we_have_one() {
        let mut local = Local {
            ufrag: "u",
            pwd: "p",
            fingerprint: "AA",
            candidate: None,
        };
        assert!(!publish_offer(&local, false, 1, None).contains("a=candidate"));
        local.candidate = Some("192.0.2.2:5000".parse().unwrap());
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=mid:0\r\n";
        let answer = subscribe_answer(&local, offer, "passive");
        assert!(answer.contains(
            "a=candidate:1 1 udp 2130706431 192.0.2.2 5000 typ host\r\na=end-of-candidates\r\n"
        ));
        assert!(answer.contains("a=setup:passive\r\n"));
    }

    #[test]
    fn answers_keep_feedback_and_extensions_and_the_twcc_id_is_found() {
        let local = Local {
            ufrag: "u",
            pwd: "p",
            fingerprint: "AA",
            candidate: None,
        };
        let offer = format!(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\n\
             a=rtcp-fb:96 nack\r\na=rtcp-fb:96 transport-cc\r\na=rtcp-fb:97 nack\r\n\
             a=extmap:3 {TRANSPORT_CC_URI}\r\na=mid:0\r\n"
        );
        let answer = subscribe_answer(&local, &offer, "active");
        assert!(answer.contains("a=rtcp-fb:96 transport-cc\r\n"));
        assert!(
            !answer.contains("a=rtcp-fb:97"),
            "only the chosen codec's feedback"
        );
        assert_eq!(extension_id(&answer, TRANSPORT_CC_URI), Some(3));
        assert_eq!(
            extension_id("a=extmap:5/sendrecv urn:x\r\n", "urn:x"),
            Some(5)
        );
        assert_eq!(extension_id("a=extmap:x urn:x\r\n", "urn:x"), None);
        assert_eq!(extension_id(&answer, "urn:other"), None);
    }

    #[test]
    fn video_offers_declare_rtx_answers_keep_it_and_the_map_unwraps_it() {
        let local = Local {
            ufrag: "u",
            pwd: "p",
            fingerprint: "AA",
            candidate: None,
        };
        let offer = publish_offer(&local, false, 11, Some(12));
        assert!(
            offer.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"),
            "{offer}"
        );
        assert!(offer.contains("a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"));
        assert!(offer.contains("a=ssrc-group:FID 11 12\r\n"));
        assert!(offer.contains("a=ssrc:12 cname:load\r\n"));
        // Audio has no RTX, whatever is asked.
        assert!(!publish_offer(&local, true, 11, Some(12)).contains("rtx"));

        // The node's subscribe offer: VP8 on 100 with RTX on 101 and a FID group.
        let sub_offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 100 101\r\na=rtpmap:100 VP8/90000\r\n\
                         a=rtcp-fb:100 nack\r\na=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n\
                         a=mid:0\r\na=ssrc-group:FID 500 501\r\na=ssrc:500 cname:x\r\n";
        let answer = subscribe_answer(&local, sub_offer, "active");
        assert!(
            answer.contains("m=video 9 UDP/TLS/RTP/SAVPF 100 101\r\n"),
            "{answer}"
        );
        assert!(answer.contains("a=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n"));
        let map = RtxMap::of(sub_offer);
        assert_eq!(map.media_ssrc(101, 501), Some(500));
        assert_eq!(map.media_ssrc(100, 500), None, "the media packet itself");
        assert_eq!(map.media_ssrc(101, 999), None, "an SSRC no FID group names");
        // Without RTX offered, the answer has the codec only.
        let plain = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=mid:0\r\n";
        assert!(subscribe_answer(&local, plain, "active").contains("SAVPF 96\r\n"));
        assert_eq!(RtxMap::of(plain), RtxMap::default());
    }

    #[test]
    fn a_publish_offer_declares_every_track_and_its_ssrc() {
        let local = Local {
            ufrag: "u",
            pwd: "p",
            fingerprint: "AA",
            candidate: None,
        };
        let offer = publish_offer_tracks(&local, &[(true, 11), (false, 22)]);
        assert!(offer.contains("a=group:BUNDLE 0 1\r\n"));
        let audio = offer.find("m=audio").unwrap();
        let video = offer.find("m=video").unwrap();
        assert!(audio < video);
        assert!(
            offer[audio..video].contains("a=mid:0\r\n")
                && offer[audio..video].contains("a=ssrc:11 ")
        );
        assert!(offer[video..].contains("a=mid:1\r\n") && offer[video..].contains("a=ssrc:22 "));
        let remote = parse_remote(&offer);
        assert_eq!(remote.media.len(), 2);
        assert_eq!(
            remote.media[1],
            ("1".into(), "video".into(), "96".into(), Some(22))
        );
    }
}
