//! Untrusted SDP text → a checked view of the parts the SFU reads. The `sdp` crate splits lines
//! and fields; attribute values are parsed here, strictly for the numbers we use (a payload type
//! of 300 is `Malformed`, not truncated) and ignoring attributes we do not need.

use std::collections::HashSet;
use std::io::Cursor;

use sdp::description::common::Attribute;
use sdp::description::media::MediaDescription;
use sdp::description::session::SessionDescription;

use super::{Fingerprint, IceCredentials, Kind, SdpError};

/// Parses `text` with the `sdp` crate after a size check.
pub(super) fn session(text: &str) -> Result<SessionDescription, SdpError> {
    if text.len() > MAX_SDP_LEN {
        return Err(SdpError::Unsupported(format!(
            "SDP of {} bytes exceeds {MAX_SDP_LEN}",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return Err(SdpError::Malformed("empty SDP".to_owned()));
    }
    // RFC 8866 §5: no NUL, CR or LF inside a line. The `sdp` crate splits on LF only, so a bare
    // CR or other control byte would survive into values we copy (fmtp) and break the
    // client's parser on the way back.
    let bytes = text.as_bytes();
    let bad_byte = bytes.iter().enumerate().any(|(i, &b)| {
        let bare_cr = b == b'\r' && bytes.get(i + 1) != Some(&b'\n');
        bare_cr || b == 0x7f || (b < 0x20 && !matches!(b, b'\r' | b'\n' | b'\t'))
    });
    if bad_byte {
        return Err(SdpError::Malformed(
            "control character inside a line".to_owned(),
        ));
    }
    SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
        .map_err(|e| SdpError::Malformed(shorten(&e.to_string())))
}

/// `a=` direction of an m-line (RFC 4566 §6, default `sendrecv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One `a=rtpmap`.
#[derive(Clone, Debug)]
pub(super) struct RtpMap<'a> {
    pub(super) pt: u8,
    pub(super) name: &'a str,
    pub(super) clock_rate: u32,
    pub(super) channels: Option<u16>,
}

/// One `a=extmap`, direction stripped.
#[derive(Clone, Debug)]
pub(super) struct ExtMap<'a> {
    pub(super) id: u8,
    pub(super) uri: &'a str,
    /// `a=extmap:<id>/recvonly` or `/inactive`: the offerer will not send it.
    pub(super) not_sent: bool,
}

/// One m-line with the attributes the SFU uses already parsed.
#[derive(Debug)]
pub(super) struct Media<'a> {
    /// `audio`, `video`, `application`...
    pub(super) media: &'a str,
    /// `None` for anything that is not audio or video.
    pub(super) kind: Option<Kind>,
    pub(super) port: isize,
    pub(super) proto: String,
    pub(super) formats: &'a [String],
    pub(super) mid: &'a str,
    pub(super) direction: Direction,
    /// RFC 8843 §6: port 0 yet part of the BUNDLE group, not rejected.
    pub(super) bundle_only: bool,
    pub(super) rtcp_mux: bool,
    /// RTP m-lines only: the format list as payload types, in preference order.
    pub(super) pts: Vec<u8>,
    pub(super) rtpmaps: Vec<RtpMap<'a>>,
    pub(super) fmtps: Vec<(u8, &'a str)>,
    /// `(None, ..)` is the `*` wildcard.
    pub(super) rtcp_fbs: Vec<(Option<u8>, String)>,
    pub(super) extmaps: Vec<ExtMap<'a>>,
    /// `a=ssrc` ids in order of first appearance.
    pub(super) ssrcs: Vec<u32>,
    /// `a=ssrc:<ssrc> msid:<stream> <track>` of the first SSRC carrying one.
    pub(super) ssrc_msid: Option<(&'a str, &'a str)>,
    /// `a=ssrc-group:FID <media> <rtx>` pairs, in order.
    pub(super) fids: Vec<(u32, u32)>,
    /// `a=ssrc-group:SIM` SSRCs (the first group), lowest quality first.
    pub(super) sim_group: Option<Vec<u32>>,
    /// `a=rid:<id> send` ids, in order (RFC 8851); restrictions are not read.
    pub(super) send_rids: Vec<&'a str>,
    /// The send half of `a=simulcast` (RFC 8853 §5.1): one stream per `;`-separated
    /// alternative list; `None` without the attribute.
    pub(super) simulcast_send: Option<&'a str>,
    pub(super) msid: Option<(&'a str, &'a str)>,
}

impl<'a> Media<'a> {
    /// Parses every m-line of `session`; mids must be present and unique (RFC 8843 requires a
    /// mid on every m-line of a BUNDLE offer, and JSEP clients always write one).
    pub(super) fn all(session: &'a SessionDescription) -> Result<Vec<Self>, SdpError> {
        let session_direction = direction(&session.attributes);
        let mut mids = HashSet::new();
        let mut media = Vec::with_capacity(session.media_descriptions.len());
        for description in &session.media_descriptions {
            let parsed = Self::parse(description, session_direction)?;
            if !mids.insert(parsed.mid) {
                return Err(SdpError::Malformed(format!("duplicate mid {}", parsed.mid)));
            }
            media.push(parsed);
        }
        Ok(media)
    }

    fn parse(
        description: &'a MediaDescription,
        session_direction: Option<Direction>,
    ) -> Result<Self, SdpError> {
        let attributes = &description.attributes;
        let name = &description.media_name;
        let mid = value(attributes, "mid").ok_or(SdpError::Missing("mid"))?;
        if !is_mid(mid) {
            return Err(SdpError::Malformed(format!(
                "mid {:?} is not a 1–16 character token",
                shorten(mid)
            )));
        }
        let proto = name.protos.join("/");
        let kind = match name.media.as_str() {
            "audio" => Some(Kind::Audio),
            "video" => Some(Kind::Video),
            _ => None,
        };
        let mut media = Self {
            media: &name.media,
            kind,
            port: name.port.value,
            formats: &name.formats,
            mid,
            direction: direction(attributes)
                .or(session_direction)
                .unwrap_or(Direction::SendRecv),
            bundle_only: has(attributes, "bundle-only"),
            rtcp_mux: has(attributes, "rtcp-mux"),
            pts: Vec::new(),
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            rtcp_fbs: Vec::new(),
            extmaps: Vec::new(),
            ssrcs: Vec::new(),
            ssrc_msid: None,
            fids: Vec::new(),
            sim_group: None,
            send_rids: Vec::new(),
            simulcast_send: None,
            msid: values(attributes, "msid").next().and_then(msid),
            proto,
        };
        if kind.is_some() && name.protos.iter().any(|p| p == "RTP") {
            media.parse_rtp(attributes)?;
        }
        Ok(media)
    }

    fn parse_rtp(&mut self, attributes: &'a [Attribute]) -> Result<(), SdpError> {
        self.pts = self
            .formats
            .iter()
            .map(|f| pt(f))
            .collect::<Result<_, _>>()?;
        for attribute in attributes {
            let value = attribute.value.as_deref().unwrap_or("");
            match attribute.key.as_str() {
                "rtpmap" => self.rtpmaps.push(rtpmap(value)?),
                "fmtp" => {
                    let (format, params) = value.split_once(' ').unwrap_or((value, ""));
                    self.fmtps.push((pt(format)?, params.trim()));
                }
                "rtcp-fb" => {
                    let (format, fb) = value.split_once(' ').unwrap_or((value, ""));
                    let format = if format == "*" {
                        None
                    } else {
                        Some(pt(format)?)
                    };
                    self.rtcp_fbs
                        .push((format, fb.split_whitespace().collect::<Vec<_>>().join(" ")));
                }
                "extmap" => self.extmaps.push(extmap(value)?),
                "ssrc" => {
                    let (ssrc_text, rest) = value.split_once(' ').unwrap_or((value, ""));
                    let ssrc = number::<u32>(ssrc_text, "ssrc")?;
                    if !self.ssrcs.contains(&ssrc) {
                        self.ssrcs.push(ssrc);
                    }
                    if let Some(msid_value) = rest.strip_prefix("msid:") {
                        self.ssrc_msid = self.ssrc_msid.or_else(|| msid(msid_value));
                    }
                }
                "ssrc-group" => {
                    let mut fields = value.split_whitespace();
                    match fields.next() {
                        Some("FID") => {
                            let ssrcs = fields
                                .map(|s| number::<u32>(s, "ssrc-group"))
                                .collect::<Result<Vec<_>, _>>()?;
                            let [media, rtx] = ssrcs[..] else {
                                return Err(SdpError::Malformed(
                                    "ssrc-group:FID needs exactly two SSRCs".to_owned(),
                                ));
                            };
                            self.fids.push((media, rtx));
                        }
                        Some("SIM") if self.sim_group.is_none() => {
                            let ssrcs = fields
                                .map(|s| number::<u32>(s, "ssrc-group"))
                                .collect::<Result<Vec<_>, _>>()?;
                            self.sim_group = Some(ssrcs);
                        }
                        _ => {}
                    }
                }
                "rid" => {
                    // `a=rid:<id> <send|recv> [restrictions]`; only what the client sends
                    // matters to a receiver.
                    let mut fields = value.split_whitespace();
                    let (Some(id), Some(direction)) = (fields.next(), fields.next()) else {
                        return Err(SdpError::Malformed(format!(
                            "a=rid:{} lacks a direction",
                            shorten(value)
                        )));
                    };
                    if direction == "send" {
                        self.send_rids.push(id);
                    }
                }
                "simulcast" => {
                    // `a=simulcast:send <list> [recv <list>]` or `recv <list> [send <list>]`.
                    let mut fields = value.split_whitespace();
                    while let Some(direction) = fields.next() {
                        let list = fields.next();
                        if direction == "send" {
                            self.simulcast_send = list;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `fmtp` parameters of `pt`, verbatim.
    pub(super) fn fmtp(&self, pt: u8) -> Option<&'a str> {
        self.fmtps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, params)| *params)
    }

    /// The value of `key` in `pt`'s `fmtp` (`key=value;key=value`).
    pub(super) fn fmtp_param(&self, pt: u8, key: &str) -> Option<&'a str> {
        self.fmtp(pt)?
            .split(';')
            .filter_map(|param| param.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim())
    }

    pub(super) fn rtpmap(&self, pt: u8) -> Option<&RtpMap<'a>> {
        self.rtpmaps.iter().find(|map| map.pt == pt)
    }

    /// Supported `rtcp-fb` values for `pt` (including `*`), deduplicated, in offer order.
    pub(super) fn rtcp_fb(&self, pt: u8) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (format, fb) in &self.rtcp_fbs {
            let applies = format.is_none_or(|p| p == pt);
            if applies && super::SUPPORTED_RTCP_FB.contains(&fb.as_str()) && !out.contains(fb) {
                out.push(fb.clone());
            }
        }
        out
    }

    /// Whether this m-line can be part of the single DTLS-SRTP transport.
    pub(super) fn is_dtls_srtp(&self) -> bool {
        self.proto == "UDP/TLS/RTP/SAVPF"
    }
}

/// The mids of the first `a=group:BUNDLE` (RFC 8843 §7), `None` without one.
pub(super) fn bundle_group(session: &SessionDescription) -> Option<Vec<&str>> {
    values(&session.attributes, "group").find_map(|group| {
        let mut fields = group.split_whitespace();
        (fields.next() == Some("BUNDLE")).then(|| fields.collect())
    })
}

/// What an offer says of its one transport (the SFU carries all media on one, RFC 8843): the
/// BUNDLE group's mids, and the offerer-tagged m= section's (the group's first mid, whose
/// transport attributes apply to the whole group, RFC 8843 §7.2.1) ICE credentials and DTLS
/// fingerprint. Its DTLS role must be `actpass` or `active` (RFC 5763 §5): one that insists on
/// being the DTLS server leaves no role for the SFU's `passive` answer.
pub(super) fn offered_transport<'a>(
    session: &'a SessionDescription,
    media: &[Media<'_>],
) -> Result<(Vec<&'a str>, IceCredentials, Fingerprint), SdpError> {
    let bundle = bundle_group(session)
        .filter(|group| !group.is_empty())
        .ok_or_else(|| {
            SdpError::Unsupported(
                "no a=group:BUNDLE: the SFU carries all media on one transport (RFC 8843)"
                    .to_owned(),
            )
        })?;
    let tagged = media
        .iter()
        .position(|m| m.mid == bundle[0])
        .ok_or_else(|| {
            SdpError::Malformed(format!("BUNDLE mid {} names no m-line", shorten(bundle[0])))
        })?;
    let tagged = &session.media_descriptions[tagged];
    let (remote_ice, remote_fingerprint) = transport(session, tagged)?;
    let setup = value(&tagged.attributes, "setup").or_else(|| value(&session.attributes, "setup"));
    if setup.is_some_and(|setup| setup != "actpass" && setup != "active") {
        return Err(SdpError::Unsupported(
            "offer must take a=setup:actpass or active: the SFU answers passive".to_owned(),
        ));
    }
    Ok((bundle, remote_ice, remote_fingerprint))
}

/// The remote transport parameters: from `media` (the BUNDLE-tagged m-line, whose transport
/// attributes apply to the whole group, RFC 8843 §7.2/§7.3), else from the session level.
pub(super) fn transport(
    session: &SessionDescription,
    media: &MediaDescription,
) -> Result<(IceCredentials, Fingerprint), SdpError> {
    let lookup = |key: &'static str| {
        value(&media.attributes, key).or_else(|| value(&session.attributes, key))
    };
    let ufrag = lookup("ice-ufrag").ok_or(SdpError::Missing("ice-ufrag"))?;
    let pwd = lookup("ice-pwd").ok_or(SdpError::Missing("ice-pwd"))?;
    let ice = IceCredentials::parse(ufrag, pwd)?;
    let mut fingerprints: Vec<&str> = values(&media.attributes, "fingerprint").collect();
    if fingerprints.is_empty() {
        fingerprints = values(&session.attributes, "fingerprint").collect();
    }
    // RFC 8122 §5 allows several fingerprints of one certificate; sha-256 is the one every
    // WebRTC stack writes (RFC 8827 §6.5) and the one the DTLS layer checks.
    let sha256 = fingerprints.iter().find_map(|fp| {
        let (algorithm, value) = fp.split_once(' ')?;
        algorithm
            .eq_ignore_ascii_case("sha-256")
            .then_some(value.trim())
    });
    let fingerprint = match (sha256, fingerprints.first()) {
        (Some(value), _) => Fingerprint::parse_sha256(value)?,
        (None, Some(other)) => {
            let algorithm = other.split(' ').next().unwrap_or("");
            return Err(SdpError::Unsupported(format!(
                "fingerprint algorithm {}; only sha-256",
                shorten(algorithm)
            )));
        }
        (None, None) => return Err(SdpError::Missing("fingerprint")),
    };
    Ok((ice, fingerprint))
}

/// Attribute values of `key` (`""` for a property attribute).
pub(super) fn values<'a>(
    attributes: &'a [Attribute],
    key: &'static str,
) -> impl Iterator<Item = &'a str> + 'a {
    attributes
        .iter()
        .filter(move |a| a.key == key)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

pub(super) fn value<'a>(attributes: &'a [Attribute], key: &'static str) -> Option<&'a str> {
    values(attributes, key).next()
}

pub(super) fn has(attributes: &[Attribute], key: &str) -> bool {
    attributes.iter().any(|a| a.key == key)
}

/// mids are echoed into our SDP and into the one-byte mid header extension, whose value is at
/// most 16 bytes (RFC 8285 §4.2), so they must be short tokens (RFC 4566 §9 `token-char`).
pub(super) fn is_mid(mid: &str) -> bool {
    (1..=16).contains(&mid.len()) && is_token(mid)
}

// RFC 4566 `token` and the `a=msid` pair: shared with signaling, which names the same tracks.
pub(super) use mooyaho_control::sdp_syntax::{is_token, msid};

/// Cuts attacker-sized text in error messages down to a loggable size.
pub(super) fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_TEXT) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

fn direction(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().rev().find_map(|a| match a.key.as_str() {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    })
}

/// `<pt> <name>/<clock>[/<channels>]`.
fn rtpmap(value: &str) -> Result<RtpMap<'_>, SdpError> {
    let (format, encoding) = value.split_once(' ').ok_or_else(|| bad("rtpmap", value))?;
    let mut parts = encoding.trim().split('/');
    let name = parts
        .next()
        .filter(|n| is_token(n))
        .ok_or_else(|| bad("rtpmap", value))?;
    let clock_rate = number::<u32>(
        parts.next().ok_or_else(|| bad("rtpmap", value))?,
        "rtpmap clock rate",
    )?;
    let channels = parts
        .next()
        .map(|c| number::<u16>(c, "rtpmap channels"))
        .transpose()?;
    if parts.next().is_some() {
        return Err(bad("rtpmap", value));
    }
    Ok(RtpMap {
        pt: pt(format)?,
        name,
        clock_rate,
        channels,
    })
}

/// `<id>[/<direction>] <uri> [<attributes>]` (RFC 8285 §8).
fn extmap(value: &str) -> Result<ExtMap<'_>, SdpError> {
    let mut fields = value.split_whitespace();
    let (id_text, uri) = (
        fields.next().unwrap_or(""),
        fields.next().ok_or_else(|| bad("extmap", value))?,
    );
    let (id_text, direction) = id_text.split_once('/').unwrap_or((id_text, "sendrecv"));
    let id = number::<u8>(id_text, "extmap id")?;
    // 1–14 one-byte, 16–255 two-byte; 0 and 15 are reserved (RFC 8285 §4.2, §4.3).
    if id == 0 || id == 15 {
        return Err(SdpError::Malformed(format!("extmap id {id} is reserved")));
    }
    Ok(ExtMap {
        id,
        uri,
        not_sent: matches!(direction, "recvonly" | "inactive"),
    })
}

/// An RTP payload type: 0–127 (RFC 3550 §5.1, 7 bits).
fn pt(text: &str) -> Result<u8, SdpError> {
    number::<u8>(text, "payload type").and_then(|pt| {
        if pt < 128 {
            Ok(pt)
        } else {
            Err(SdpError::Malformed(format!(
                "payload type {pt} exceeds 127"
            )))
        }
    })
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, SdpError> {
    // `FromStr` for integers accepts a leading `+`; SDP numbers are plain digits.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(what, text));
    }
    text.parse().map_err(|_| bad(what, text))
}

fn bad(what: &str, text: &str) -> SdpError {
    SdpError::Malformed(format!("bad {what}: {:?}", shorten(text)))
}

/// Four BUNDLE-ed m-lines from a browser are about 6 KiB; 100 subscribed tracks in an answer about
/// 100 KiB. Anything larger is not a WebRTC client's SDP.
const MAX_SDP_LEN: usize = 256 * 1024;
const MAX_ERROR_TEXT: usize = 80;
