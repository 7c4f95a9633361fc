//! Attacks on the media plane's RTP/RTCP handling, by a participant holding real SRTP keys
//! (`mooyaho_loadgen::raw`), against a real `mooyaho dev`; each with an honest room or
//! subscriber alongside that must not notice (issue 11, items 2, 4 and 5):
//!
//! - a NACK storm gets back at most the bytes forwarded to the attacker (not a multiple of its
//!   NACK traffic), and every resend is byte-identical to the original (no SRTP index reused
//!   with other bytes);
//! - an SSRC flood is cut at the SRTP context's SSRC cap, counted, and grows no state;
//! - a sender-report flood is translated at most once per interval, not once per SR;
//! - a publisher far over `--max-track-bitrate` reaches its subscribers at about the cap;
//! - transport-wide CC feedback that is malformed, forged or packed into floods moves only the
//!   sender's own downlink estimate: garbage is dropped, claimed losses pause only the liar's
//!   video, claimed headroom earns nothing beyond the media it asked for.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::Server;
use support::raw::{self, RawParticipant, RawTransport, Track, TrackKind};

const WAIT: Duration = Duration::from_secs(10);
/// Marks the end of a payload the test wrote: `counter (u32) | sent at (µs, u64) | MAGIC`.
const MAGIC: &[u8; 4] = b"MOOY";
/// Payload bytes of the media the tests send.
const FRAME: usize = 1000;

/// What one receiving transport saw, from its raw datagrams.
#[derive(Debug, Default)]
struct Tally {
    /// First copies of media packets: forwarded sequence number → the datagram as received.
    originals: HashMap<u16, Vec<u8>>,
    /// Bytes (datagrams as received) of first copies.
    fresh_bytes: usize,
    /// Counters of the test's frames received (first copies only).
    frames: Vec<u32>,
    /// Largest send-to-receive delay of a frame.
    max_delay: Duration,
    /// Repeated SRTP indices (resends on the media SSRC) and their bytes.
    resends: usize,
    resend_bytes: usize,
    /// Resends whose bytes differ from the original's under the same index.
    resends_not_identical: usize,
    /// Media on another SSRC than the forwarded one (RTX).
    rtx_bytes: usize,
    /// Sender reports in the RTCP received.
    sender_reports: usize,
    /// Highest forwarded sequence numbers seen, most recent last.
    recent: Vec<u16>,
}

/// A subscriber in the tests' rooms.
struct Receiver {
    transport: RawTransport,
    /// The SSRC the node forwards the room's video under.
    ssrc: u32,
    tally: Tally,
}

impl Receiver {
    /// Reads everything queued on the socket: answers the node's checks, sorts media into
    /// first copies and resends by SRTP index, counts SRs.
    fn drain(&mut self, start: Instant) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.transport.socket.try_recv_from(&mut buf) {
            let datagram = buf[..n].to_vec();
            match datagram[0] {
                0..=3 => {
                    if let Some(answer) = self.transport.answer_check(&datagram, from) {
                        let _ = self.transport.socket.try_send_to(&answer, from);
                    }
                }
                128..=191 if (192..=223).contains(&datagram[1]) => {
                    let mut plain = datagram.clone();
                    if let Ok(len) = self.transport.srtp.unprotect_rtcp_in_place(&mut plain) {
                        self.tally.sender_reports += count_sender_reports(&plain[..len]);
                    }
                }
                128..=191 => self.media(datagram, start),
                _ => {}
            }
        }
    }

    fn media(&mut self, datagram: Vec<u8>, start: Instant) {
        let t = &mut self.tally;
        let ssrc = u32::from_be_bytes(datagram[8..12].try_into().unwrap());
        if ssrc != self.ssrc {
            t.rtx_bytes += datagram.len();
            return;
        }
        let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        let mut plain = datagram.clone();
        match self.transport.srtp.unprotect_rtp_in_place(&mut plain) {
            Ok(len) => {
                t.fresh_bytes += datagram.len();
                if let Some((counter, sent)) = frame_of(&plain[..len]) {
                    t.frames.push(counter);
                    let delay = start.elapsed().saturating_sub(sent);
                    t.max_delay = t.max_delay.max(delay);
                }
                t.recent.push(seq);
                if t.recent.len() > 32 {
                    t.recent.remove(0);
                }
                t.originals.insert(seq, datagram);
            }
            Err(e) if e.is_replay() => {
                t.resends += 1;
                t.resend_bytes += datagram.len();
                if t.originals.get(&seq) != Some(&datagram) {
                    t.resends_not_identical += 1;
                }
            }
            Err(e) => panic!("undecryptable media from the node: {e}"),
        }
    }

    /// Test frames received, each once, among `0..sent`.
    fn frames_in(&self, range: std::ops::Range<u32>) -> usize {
        let mut seen: Vec<u32> = self
            .tally
            .frames
            .iter()
            .copied()
            .filter(|c| range.contains(c))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }
}

/// `counter` and send time of a payload the test wrote.
fn frame_of(rtp: &[u8]) -> Option<(u32, Duration)> {
    let tail = rtp.len().checked_sub(16).map(|at| &rtp[at..])?;
    (&tail[12..] == MAGIC).then(|| {
        let counter = u32::from_be_bytes(tail[..4].try_into().unwrap());
        let micros = u64::from_be_bytes(tail[4..12].try_into().unwrap());
        (counter, Duration::from_micros(micros))
    })
}

fn count_sender_reports(mut rtcp: &[u8]) -> usize {
    let mut n = 0;
    while rtcp.len() >= 8 {
        n += usize::from(rtcp[1] == 200);
        let len = (usize::from(u16::from_be_bytes([rtcp[2], rtcp[3]])) + 1) * 4;
        rtcp = rtcp.get(len..).unwrap_or_default();
    }
    n
}

/// A publisher of one video track and its subscribers, in one channel.
struct Room {
    publisher: RawParticipant,
    sending: RawTransport,
    ssrc: u32,
    seq: u16,
    subscribers: Vec<(RawParticipant, Receiver)>,
    start: Instant,
}

impl Room {
    async fn open(server: &Server, ssrc: u32, subscribers: usize) -> Self {
        let channel = server.rest().create_channel(true).await;
        let url = server.url("");
        let mut publisher = RawParticipant::join(&url, &server.api_key, &channel, "pub")
            .await
            .unwrap();
        let sending = publisher
            .publish(&[Track {
                kind: TrackKind::Video,
                ssrc,
            }])
            .await
            .unwrap();
        let mut room = Self {
            publisher,
            sending,
            ssrc,
            seq: 1000,
            subscribers: Vec::new(),
            start: Instant::now(),
        };
        for i in 0..subscribers {
            let mut p = RawParticipant::join(&url, &server.api_key, &channel, &format!("sub{i}"))
                .await
                .unwrap();
            let transport = p.subscribe(WAIT).await.unwrap();
            let ssrc = transport
                .remote_media
                .iter()
                .find(|m| m.kind == "video")
                .and_then(|m| m.ssrc)
                .expect("the subscribe offer declares the video SSRC");
            room.subscribers.push((
                p,
                Receiver {
                    transport,
                    ssrc,
                    tally: Tally::default(),
                },
            ));
        }
        room.prime().await;
        room
    }

    /// Sends frames until every subscriber receives media (the node waits for a keyframe and
    /// the subscriber's DTLS), then forgets what priming counted.
    async fn prime(&mut self) {
        let deadline = Instant::now() + WAIT;
        while self
            .subscribers
            .iter()
            .any(|(_, r)| r.tally.originals.is_empty())
        {
            assert!(
                Instant::now() < deadline,
                "media never reached a subscriber"
            );
            self.send_frame(u32::MAX, FRAME).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let start = self.start;
            self.subscribers
                .iter_mut()
                .for_each(|(_, r)| r.drain(start));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = self.start;
        for (_, r) in &mut self.subscribers {
            r.drain(start);
            r.tally = Tally::default();
        }
    }

    /// One VP8 keyframe packet of `size` payload bytes, tagged with `counter` and its send time.
    async fn send_frame(&mut self, counter: u32, size: usize) {
        let mut body = vec![0x55; size.saturating_sub(16)];
        body.extend_from_slice(&counter.to_be_bytes());
        body.extend_from_slice(&(self.start.elapsed().as_micros() as u64).to_be_bytes());
        body.extend_from_slice(MAGIC);
        let payload = raw::vp8_payload(true, &body);
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        let packet = raw::rtp(self.ssrc, seq, u32::from(seq) * 3000, 96, true, &payload).unwrap();
        self.sending.send_rtp(&packet).await.unwrap();
    }

    fn drain(&mut self) {
        let start = self.start;
        self.subscribers
            .iter_mut()
            .for_each(|(_, r)| r.drain(start));
    }

    async fn leave(self) {
        for (p, _) in self.subscribers {
            p.leave().await;
        }
        self.publisher.leave().await;
    }
}

/// Sends `frames` frames at `interval`, draining every subscriber meanwhile and calling
/// `attack` every `attack_every` (the attacker's own turn in the same loop, so one task owns
/// every socket).
async fn stream_with<F>(room: &mut Room, frames: u32, interval: Duration, mut attack: F)
where
    F: AsyncFnMut(&mut Room),
{
    let mut tick = tokio::time::interval(interval);
    for counter in 0..frames {
        tick.tick().await;
        room.send_frame(counter, FRAME).await;
        attack(room).await;
        room.drain();
    }
    // Stragglers.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        room.drain();
    }
}

async fn security_drops(server: &Server) -> u64 {
    let (status, nodes) = server.rest().call("GET", "/sfu-servers", None).await;
    assert_eq!(status, 200, "{nodes}");
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["load"]["securityDrops"].as_u64().unwrap_or(0))
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_storm_gets_back_at_most_the_forwarded_bytes_and_only_identical_resends() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    // Subscriber 0 attacks, subscriber 1 is honest.
    let mut room = Room::open(&server, 0x0a77_ac00, 2).await;
    let mut nacks = 0usize;
    let mut requested = 0usize;
    // 4 s of 50 frames/s; each frame the attacker sends 5 NACKs naming its last 32 packets
    // with all 16 following bits set, every entry four times (128 entries, 2 176 sequence
    // numbers per NACK, ≈ 2 million requested over the run).
    stream_with(&mut room, 200, Duration::from_millis(20), async |room| {
        let attacker = &mut room.subscribers[0].1;
        let entries: Vec<(u16, u16)> = (0..4)
            .flat_map(|_| attacker.tally.recent.iter().map(|&s| (s, 0xffff)))
            .collect();
        if entries.is_empty() {
            return;
        }
        let nack = raw::nack_entries(0x0bad_0001, attacker.ssrc, &entries).unwrap();
        for _ in 0..5 {
            attacker.transport.send_rtcp(&nack).await.unwrap();
            nacks += 1;
            requested += entries.len() * 17;
        }
    })
    .await;

    let attacker = &room.subscribers[0].1.tally;
    let honest = &room.subscribers[1].1;
    let resent = attacker.resend_bytes + attacker.rtx_bytes;
    eprintln!(
        "NACK storm: {nacks} NACKs ({requested} sequence numbers requested); attacker got \
         {} B of media and {resent} B of resends ({} packets); honest max delay {:?}",
        attacker.fresh_bytes, attacker.resends, honest.tally.max_delay
    );
    assert!(requested > 1_000_000, "the storm was sent");
    assert!(attacker.resends > 0, "the node did answer NACKs");
    // Budget: one resent byte per forwarded byte, plus a 64 KiB burst (SRTP tags make both
    // sides of the comparison a little bigger alike).
    assert!(
        resent <= attacker.fresh_bytes + 64 * 1024 + 4096,
        "resent {resent} B for {} B forwarded",
        attacker.fresh_bytes
    );
    assert_eq!(
        attacker.resends_not_identical, 0,
        "a resend reused an SRTP index with other bytes"
    );
    assert_eq!(
        honest.frames_in(0..200),
        200,
        "the honest subscriber lost frames"
    );
    assert!(
        honest.tally.max_delay < Duration::from_secs(2),
        "{:?}",
        honest.tally.max_delay
    );
    room.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrc_flood_is_cut_at_the_srtp_ssrc_cap() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let mut honest = Room::open(&server, 0x00de_c001, 1).await;
    let channel = server.rest().create_channel(true).await;
    let mut attacker = RawParticipant::join(&server.url(""), &server.api_key, &channel, "flood")
        .await
        .unwrap();
    let mut flood = attacker
        .publish(&[Track {
            kind: TrackKind::Video,
            ssrc: 0x0f00_0000,
        }])
        .await
        .unwrap();
    let drops_before = security_drops(&server).await;
    let rss_before = rss_kib(server.pid());

    // 10 000 undeclared SSRCs, one packet each, 100 per honest frame (5 000 packets/s).
    let mut next = 0u32;
    stream_with(&mut honest, 100, Duration::from_millis(20), async |_| {
        for _ in 0..100 {
            let packet = raw::rtp(0x7000_0000 + next, 1, 0, 96, false, &[0; 200]).unwrap();
            flood.send_rtp(&packet).await.unwrap();
            next += 1;
        }
    })
    .await;
    assert_eq!(next, 10_000);

    let counted = support::eventually(WAIT, || async {
        security_drops(&server).await - drops_before >= 10_000 - 64
    })
    .await;
    let drops = security_drops(&server).await - drops_before;
    let rss_after = rss_kib(server.pid());
    eprintln!(
        "SSRC flood: {drops} packets dropped at the SSRC cap; node RSS {rss_before} → \
         {rss_after} KiB"
    );
    assert!(
        counted,
        "only {drops} flood packets were counted as dropped"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert_eq!(honest.subscribers[0].1.frames_in(0..100), 100);
    attacker.leave().await;
    honest.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_report_flood_is_translated_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let mut room = Room::open(&server, 0x005e_0001, 2).await;
    // 2 s of frames; 20 SRs with every frame (1 000 SRs/s).
    let mut sent = 0;
    stream_with(&mut room, 100, Duration::from_millis(20), async |room| {
        for _ in 0..20 {
            let ntp = (room.start.elapsed().as_micros() as u64) << 12;
            let sr = raw::sender_report(room.ssrc, ntp, 3000, 1, 1000).unwrap();
            room.sending.send_rtcp(&sr).await.unwrap();
            sent += 1;
        }
    })
    .await;
    for (_, r) in &room.subscribers {
        eprintln!(
            "SR flood: {sent} SRs sent, {} translated to one subscriber",
            r.tally.sender_reports
        );
        // 2.5 s at one per 250 ms, plus edges.
        assert!(
            (1..=12).contains(&r.tally.sender_reports),
            "{r:?}",
            r = r.tally.sender_reports
        );
        assert_eq!(r.frames_in(0..100), 100);
    }
    room.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_over_the_track_bitrate_cap_reaches_subscribers_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &["--max-track-bitrate", "1000000"]);
    let mut honest = Room::open(&server, 0x00de_c002, 1).await;
    let mut hog = Room::open(&server, 0x0b16_0001, 1).await;
    // 3 s: the honest room at 50 frames/s (≈ 410 kbit/s, under the cap), the hog sending ten
    // frames per honest one (≈ 4.1 Mbit/s).
    let started = Instant::now();
    stream_with(&mut honest, 150, Duration::from_millis(20), async |_| {
        for i in 0..10 {
            hog.send_frame(i, FRAME).await;
        }
        hog.drain();
    })
    .await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    hog.drain();
    let received = hog.subscribers[0].1.tally.fresh_bytes;
    // The cap counts packets as received (header + payload, ≈ the datagram without its tag):
    // 1 Mbit/s over the run plus the 0.5 s bucket.
    let cap = (1_000_000.0 / 8.0 * (elapsed.as_secs_f64() + 0.5)) as usize;
    eprintln!(
        "bitrate cap: hog offered ≈ {} B in {elapsed:?}, subscriber got {received} B (cap {cap} B)",
        1500 * 10 * (FRAME + 30)
    );
    assert!(received <= cap * 11 / 10, "{received} B > cap {cap} B");
    assert!(received >= cap / 3, "the cap itself passes: {received} B");
    assert_eq!(honest.subscribers[0].1.frames_in(0..150), 150);
    hog.leave().await;
    honest.leave().await;
}

/// A transport-wide CC feedback message (RTPFB FMT 15) about media SSRC `media` with the FCI
/// `fci` (from the base sequence number on), padded to a 32-bit boundary.
fn twcc(media: u32, fci: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x8f, 205, 0, 0];
    packet.extend_from_slice(&0x0bad_cc01u32.to_be_bytes());
    packet.extend_from_slice(&media.to_be_bytes());
    packet.extend_from_slice(fci);
    while packet.len() % 4 != 0 {
        packet.push(0);
    }
    let words = (packet.len() / 4 - 1) as u16;
    packet[2..4].copy_from_slice(&words.to_be_bytes());
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_twcc_feedback_moves_only_the_senders_own_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    // Subscriber 0 is honest; 1 claims every packet lost; 2 claims everything arrived at once.
    let mut room = Room::open(&server, 0x0c0c_0001, 3).await;
    // A reserved status symbol (two-bit vector, symbol 3): not feedback at all.
    let malformed = twcc(0, &[0, 0, 0, 3, 0, 0, 0, 0, 0xf0, 0x00]);
    // 65,535 packets from sequence number 0 "not received" (nine run-length chunks).
    let mut all_lost = vec![0, 0, 0xff, 0xff, 0, 0, 0, 0];
    (0..9).for_each(|_| all_lost.extend_from_slice(&0x1fffu16.to_be_bytes()));
    let all_lost = twcc(0, &all_lost);
    // 1000 packets from 0 received with zero deltas: infinite bandwidth.
    let mut instant = vec![0, 0, 0x03, 0xe8, 0, 0, 0, 0];
    instant.extend_from_slice(&(0x2000u16 | 1000).to_be_bytes());
    instant.extend_from_slice(&[0; 1000]);
    let instant = twcc(0, &instant);
    let mut sent = 0usize;
    // 5 s of frames; with each frame the liars send their claim once and the malformed message
    // ten times in one compound (a flood past the per-subscriber feedback interval).
    let flood: Vec<u8> = (0..10).flat_map(|_| malformed.clone()).collect();
    stream_with(&mut room, 250, Duration::from_millis(20), async |room| {
        for (i, claim) in [(1, &all_lost), (2, &instant)] {
            let transport = &mut room.subscribers[i].1.transport;
            transport.send_rtcp(claim).await.unwrap();
            transport.send_rtcp(&flood).await.unwrap();
            sent += 2;
        }
    })
    .await;
    let honest = &room.subscribers[0].1;
    let (loser, inflater) = (&room.subscribers[1].1, &room.subscribers[2].1);
    eprintln!(
        "TWCC lies: {sent} messages; honest {} frames, {} bytes; 'all lost' {} frames (last 2 s: \
         {}); 'instant' {} frames, {} bytes, {} RTX bytes",
        honest.frames_in(0..250),
        honest.tally.fresh_bytes,
        loser.frames_in(0..250),
        loser.frames_in(150..250),
        inflater.frames_in(0..250),
        inflater.tally.fresh_bytes,
        inflater.tally.rtx_bytes,
    );
    assert_eq!(
        honest.frames_in(0..250),
        250,
        "the honest subscriber is unharmed"
    );
    // Claimed losses halve the liar's own estimate each second until not even half the video's
    // rate fits: its video pauses.
    assert_eq!(
        loser.frames_in(150..250),
        0,
        "the 'all lost' liar's video paused"
    );
    // Claimed headroom buys nothing the subscriber did not ask for: the same media as the
    // honest one, no probes (nothing to upgrade to), no more bytes.
    assert_eq!(inflater.frames_in(0..250), 250);
    assert!(inflater.tally.fresh_bytes <= honest.tally.fresh_bytes * 11 / 10);
    assert_eq!(inflater.tally.rtx_bytes, 0);
    // The node still answers (security_drops asserts the REST call succeeds).
    security_drops(&server).await;
    room.leave().await;
}
