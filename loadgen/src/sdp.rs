//! The SDP a simulated participant writes: a publish offer (one Opus or VP8 track) and an answer
//! to the SFU's subscribe offer. Only what an ICE-lite SFU needs; parsing of the SFU's SDP takes
//! the few attributes a client must know.

use std::net::SocketAddr;

/// What a client learns from the SFU's SDP.
#[derive(Clone, Debug, Default)]
pub(crate) struct Remote {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
    pub(crate) fingerprint: String,
    pub(crate) candidate: Option<SocketAddr>,
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
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            let f: Vec<&str> = c.split_whitespace().collect();
            if f.len() >= 6 && remote.candidate.is_none() {
                remote.candidate = format!("{}:{}", f[4], f[5]).parse().ok();
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

/// A publish offer with one track: Opus (`audio`) or VP8.
pub(crate) fn publish_offer(local: &Local<'_>, audio: bool, ssrc: u32) -> String {
    let mid = "0".to_owned();
    let mut sdp = header(local, std::slice::from_ref(&mid));
    if audio {
        sdp += "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n";
        sdp += "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
    } else {
        sdp += "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n";
        sdp += "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n";
    }
    sdp += &format!(
        "a=setup:actpass\r\na=mid:{mid}\r\na=sendonly\r\na=rtcp-mux\r\na=msid:load track\r\na=ssrc:{ssrc} cname:load\r\n"
    );
    sdp
}

/// The answer to the SFU's subscribe offer: receive every m-line with its first codec.
pub(crate) fn subscribe_answer(local: &Local<'_>, offer: &str) -> String {
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
        lines.push(format!(
            "{} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\n",
            m[0]
        ));
        for l in section.iter() {
            let keep = l.starts_with(&format!("a=rtpmap:{pt} "))
                || l.starts_with(&format!("a=fmtp:{pt} "));
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
            "a=setup:active\r\na=mid:{mid}\r\na={direction}\r\na=rtcp-mux\r\n"
        ));
    }
    let mut sdp = header(local, &mids);
    for l in lines {
        sdp += &l;
    }
    sdp
}
