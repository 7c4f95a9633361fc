//! Which tracks an accepted SFU publish carries, read from the client's offer and the node's
//! answer. Signaling relays SDP without understanding it; this is the one thing it reads from
//! it, so that `track.published` / `track.unpublished` webhooks can name each track.
//!
//! The node's answer accepts an m-line by giving it a port other than 0 (RFC 3264 §6); the
//! offer's m-line with the same mid names the track exactly as the node reads it: the first
//! `a=msid:<stream> <track>` line only, else the first valid `a=ssrc:<ssrc> msid:<stream>
//! <track>` (older clients); ids are RFC 4566 tokens of at most 64 bytes
//! ([`mooyaho_control::sdp_syntax::msid`], the node's own rule), and a line with a bad id is
//! ignored, so a webhook never names a track other than the one the node forwards.

use mooyaho_control::sdp_syntax::msid;

use super::model::PublishedTrack;

/// At most this many tracks are read from one publish (the node accepts far fewer).
const MAX_TRACKS: usize = 64;

/// One m-section of an SDP: its kind, port and the attributes this module reads.
#[derive(Debug, Default)]
struct Section<'a> {
    kind: &'a str,
    port: &'a str,
    mid: Option<&'a str>,
    /// The first `a=msid` line's track, `Some(None)` when that line is not a valid msid.
    msid_track: Option<Option<&'a str>>,
    /// The track of the first valid `a=ssrc:… msid:` line.
    ssrc_msid_track: Option<&'a str>,
}

impl<'a> Section<'a> {
    /// The node's choice: the first `a=msid` if valid, else the first valid ssrc msid.
    fn track(&self) -> Option<&'a str> {
        self.msid_track.flatten().or(self.ssrc_msid_track)
    }
}

fn sections(sdp: &str) -> Vec<Section<'_>> {
    let mut sections = Vec::new();
    for line in sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(media) = line.strip_prefix("m=") {
            let mut fields = media.split(' ');
            sections.push(Section {
                kind: fields.next().unwrap_or_default(),
                port: fields.next().unwrap_or_default(),
                ..Section::default()
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.trim());
        } else if let Some(value) = line.strip_prefix("a=msid:") {
            if section.msid_track.is_none() {
                section.msid_track = Some(msid(value).map(|(_, track)| track));
            }
        } else if let Some(ssrc) = line.strip_prefix("a=ssrc:")
            && section.ssrc_msid_track.is_none()
            && let Some((_, rest)) = ssrc.split_once(' ')
            && let Some(value) = rest.strip_prefix("msid:")
        {
            section.ssrc_msid_track = msid(value).map(|(_, track)| track);
        }
    }
    sections
}

/// The tracks the node accepted: audio and video m-lines of `answer` with a port other than 0,
/// named by the matching m-line of `offer`.
pub(super) fn published_tracks(offer: &str, answer: &str) -> Vec<PublishedTrack> {
    let offered = sections(offer);
    sections(answer)
        .into_iter()
        .filter(|s| matches!(s.kind, "audio" | "video") && s.port != "0" && !s.port.is_empty())
        .filter_map(|accepted| {
            let mid = accepted.mid?;
            let id = offered
                .iter()
                .find(|o| o.mid == Some(mid))
                .and_then(Section::track)
                .unwrap_or(mid);
            Some(PublishedTrack {
                id: id.to_owned(),
                mid: mid.to_owned(),
                kind: accepted.kind.to_owned(),
            })
        })
        .take(MAX_TRACKS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:stream mic-1\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ssrc:1 cname:x\r\n\
        a=ssrc:1 msid:stream cam-1\r\na=sendonly\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\n";

    fn answer(ports: [&str; 4]) -> String {
        format!(
            "v=0\r\ns=-\r\nm=audio {} UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             m=video {} UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
             m=application {} UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n\
             m=video {} UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\n",
            ports[0], ports[1], ports[2], ports[3]
        )
    }

    fn track(id: &str, mid: &str, kind: &str) -> PublishedTrack {
        PublishedTrack {
            id: id.into(),
            mid: mid.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn accepted_media_lines_are_named_by_the_offers_msid_or_their_mid() {
        assert_eq!(
            published_tracks(OFFER, &answer(["9", "9", "9", "9"])),
            [
                track("mic-1", "0", "audio"),
                track("cam-1", "1", "video"),
                track("3", "3", "video"),
            ]
        );
    }

    /// The reviewer's M1: a later `a=msid` with markup must not rename the track the node
    /// forwards as `real-track`.
    #[test]
    fn only_the_first_msid_counts_and_only_when_its_ids_are_tokens() {
        let offer = |msids: &str| {
            format!(
                "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n{msids}a=sendonly\r\n"
            )
        };
        let answer = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        let id = |msids: &str| published_tracks(&offer(msids), answer)[0].id.clone();
        assert_eq!(
            id("a=msid:s real-track\r\na=msid:s <img/src=x/onerror=alert(1)>\r\n"),
            "real-track"
        );
        assert_eq!(id("a=msid:s first\r\na=msid:s second\r\n"), "first");
        // A bad first line is ignored, as the node ignores it: no later a=msid replaces it.
        assert_eq!(id("a=msid:s <b>\r\na=msid:s later\r\n"), "0");
        assert_eq!(
            id("a=msid:s <b>\r\na=ssrc:1 msid:s from-ssrc\r\n"),
            "from-ssrc"
        );
        assert_eq!(
            id("a=ssrc:1 msid:s bad\"id\r\na=ssrc:1 msid:s good-id\r\n"),
            "good-id"
        );
        assert_eq!(id(&format!("a=msid:s {}\r\n", "t".repeat(65))), "0");
    }

    #[test]
    fn rejected_lines_and_garbage_give_no_tracks() {
        assert_eq!(
            published_tracks(OFFER, &answer(["0", "9", "0", "0"])),
            [track("cam-1", "1", "video")]
        );
        assert!(published_tracks("", "").is_empty());
        assert!(published_tracks("m=", "m=audio\na=mid:0").is_empty());
        assert!(published_tracks("garbage\n", "a=mid:0\nm=video 9\n").is_empty());
    }
}
