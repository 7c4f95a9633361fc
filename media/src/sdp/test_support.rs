//! Fixtures and helpers shared by the sdp tests.

use std::io::Cursor;
use std::net::SocketAddr;

use sdp::description::session::SessionDescription;

pub(super) use mooyaho_test_support::rng::TestRng;

use super::{Candidate, Fingerprint, IceCredentials, LocalDescription, SdpError};

pub(super) const CHROME: &str = include_str!("../../tests/sdp_offers/chrome.sdp");
pub(super) const FIREFOX: &str = include_str!("../../tests/sdp_offers/firefox.sdp");
pub(super) const CHROME_SIMULCAST: &str =
    include_str!("../../tests/sdp_offers/chrome_simulcast.sdp");
pub(super) const FIREFOX_SIMULCAST: &str =
    include_str!("../../tests/sdp_offers/firefox_simulcast.sdp");
pub(super) const SAFARI: &str = include_str!("../../tests/sdp_offers/safari.sdp");
pub(super) const AIORTC: &str = include_str!("../../tests/sdp_offers/aiortc.sdp");
pub(super) const WEBRTC_RS: &str = include_str!("../../tests/sdp_offers/webrtc_rs.sdp");
pub(super) const ALL: &[&str] = &[CHROME, FIREFOX, SAFARI, AIORTC, WEBRTC_RS];

pub(super) fn local() -> LocalDescription {
    LocalDescription {
        ice: IceCredentials {
            ufrag: "SfuUfrag".to_owned(),
            pwd: "SfuPasswordSfuPassword24".to_owned(),
        },
        fingerprint: Fingerprint::of_der(b"mooyaho test certificate"),
        candidates: vec![Candidate::udp(SocketAddr::from(([203, 0, 113, 7], 40000)))],
    }
}

/// Real clients send CRLF; the fixtures are stored with LF.
pub(super) fn crlf(sdp: &str) -> String {
    sdp.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Parses our own output with the `sdp` crate, as a client's stack would.
pub(super) fn reparse(sdp: &str) -> SessionDescription {
    assert!(
        sdp.ends_with("\r\n") && !sdp.replace("\r\n", "").contains('\n'),
        "CRLF only"
    );
    SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())).expect("our SDP parses")
}

/// The value of `key` on m-line `index` (`None` if absent).
pub(super) fn media_attr<'a>(
    sdp: &'a SessionDescription,
    index: usize,
    key: &str,
) -> Option<&'a str> {
    sdp.media_descriptions[index]
        .attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

pub(super) fn media_attrs<'a>(
    sdp: &'a SessionDescription,
    index: usize,
    key: &str,
) -> Vec<&'a str> {
    sdp.media_descriptions[index]
        .attributes
        .iter()
        .filter(|a| a.key == key)
        .map(|a| a.value.as_deref().unwrap_or(""))
        .collect()
}

/// The Opus codec a browser offers (and its subscribe m-line carries).
pub(super) fn opus() -> super::Codec {
    super::Codec {
        name: "opus".to_owned(),
        pt: 111,
        clock_rate: 48_000,
        channels: Some(2),
        fmtp: Some("minptime=10;useinbandfec=1".to_owned()),
        rtcp_fb: vec!["transport-cc".to_owned()],
        rtx_pt: None,
    }
}

pub(super) fn session_attr<'a>(sdp: &'a SessionDescription, key: &str) -> Option<&'a str> {
    sdp.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

/// A mutated copy of `sdp`: truncated, byte-flipped, a line dropped or duplicated, or a number
/// replaced by an extreme one.
pub(super) fn mutate(sdp: &str, rng: &mut TestRng) -> String {
    let mut lines: Vec<String> = sdp.lines().map(str::to_owned).collect();
    match rng.index(6) {
        0 => return String::from_utf8_lossy(&sdp.as_bytes()[..rng.index(sdp.len())]).into_owned(),
        1 => {
            let mut bytes = sdp.as_bytes().to_vec();
            for _ in 0..1 + rng.index(4) {
                let i = rng.index(bytes.len());
                bytes[i] = rng.next_u64() as u8;
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        2 => {
            let i = rng.index(lines.len());
            lines.remove(i);
        }
        3 => {
            let i = rng.index(lines.len());
            let line = lines[i].clone();
            lines.insert(rng.index(lines.len()), line);
        }
        _ => {
            let i = rng.index(lines.len());
            let extreme = [
                "0",
                "15",
                "128",
                "255",
                "256",
                "65536",
                "4294967296",
                "-1",
                "+1",
                "99999999999999999999",
            ];
            let replacement = extreme[rng.index(extreme.len())];
            let line = &lines[i];
            if let Some(start) = line.find(|c: char| c.is_ascii_digit()) {
                let end = line[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(line.len(), |e| start + e);
                lines[i] = format!("{}{replacement}{}", &line[..start], &line[end..]);
            }
        }
    }
    lines.join("\r\n") + "\r\n"
}

/// What a refused SDP must be refused with.
#[derive(Debug)]
pub(super) enum Expect {
    Malformed,
    Missing(&'static str),
    /// `Unsupported` whose message contains the text.
    Unsupported(&'static str),
    /// `LimitExceeded` whose message contains the text.
    LimitExceeded(&'static str),
}

impl Expect {
    pub(super) fn matches(&self, error: &SdpError) -> bool {
        match (self, error) {
            (Self::Malformed, SdpError::Malformed(_)) => true,
            (Self::Missing(what), SdpError::Missing(missing)) => what == missing,
            (Self::Unsupported(needle), SdpError::Unsupported(message)) => message.contains(needle),
            (Self::LimitExceeded(needle), SdpError::LimitExceeded(message)) => {
                message.contains(needle)
            }
            _ => false,
        }
    }
}
