//! A hostile participant: real keys, raw control of every datagram.
//!
//! [`RawParticipant`] joins a channel through the public WebSocket API like any SDK client, then
//! publishes with an offer it writes ([`Track`]s: the kinds and SSRCs it declares) or answers the
//! node's subscribe offer. Each returns a [`RawTransport`] after real ICE and DTLS: the UDP
//! socket, the node's address, both sides' ICE credentials and the SRTP session, so a test can
//! protect and send *any* RTP/RTCP it builds, and read what the node sends. Attack tests build
//! their packets with the helpers here ([`rtp`], [`vp8_payload`], [`nack`], [`pli`], [`sender_report`],
//! [`receiver_report`], [`RawTransport::binding_request`]) and send them from the transport's
//! socket, from fresh sockets ([`bind_shared`]: any `127.0.0.x` address, or an address another
//! socket with `SO_REUSEPORT` holds) or with a forged source address ([`Spoofer`], root only).
//!
//! An honest client answers the node's connectivity and consent checks (RFC 7675), so
//! [`RawTransport::recv`] does too unless [`RawTransport::answer_checks`] is turned off; a test
//! that drives other sockets answers on them with [`RawTransport::answer_check`].

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use mooyaho_net::PacketClass;
use mooyaho_net::dtls::DtlsIdentity;
pub use mooyaho_net::srtp::SrtpSession;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::receiver_report::ReceiverReport;
use rtcp::reception_report::ReceptionReport;
use rtcp::sender_report::SenderReport;
use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use webrtc_util::marshal::Marshal as _;

use crate::peer::{self, ConnectOptions, LocalIce};
use crate::sdp::{self, Local};
use crate::signal::Signal;

/// ICE credentials of one side of a transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceCredentials {
    /// `a=ice-ufrag`.
    pub ufrag: String,
    /// `a=ice-pwd`.
    pub pwd: String,
}

impl IceCredentials {
    fn to_local(&self) -> LocalIce {
        LocalIce {
            ufrag: self.ufrag.clone(),
            pwd: self.pwd.clone(),
        }
    }
}

/// The media kind of a published track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackKind {
    /// Opus, payload type 111.
    Audio,
    /// VP8 with NACK and PLI feedback, payload type 96.
    Video,
}

/// One m-line of a publish offer: its kind and the SSRC it declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Track {
    /// Audio or video.
    pub kind: TrackKind,
    /// The `a=ssrc` of the m-line.
    pub ssrc: u32,
}

/// One m-line of the node's SDP (its answer to a publish, or its subscribe offer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteMedia {
    /// `a=mid`.
    pub mid: String,
    /// `audio` or `video`.
    pub kind: String,
    /// The first payload type of the m-line.
    pub payload_type: Option<u8>,
    /// The line's `a=ssrc` (in a subscribe offer: the SSRC the node sends this stream under).
    pub ssrc: Option<u32>,
}

/// A participant in a channel, joined through REST + WebSocket like any SDK client.
pub struct RawParticipant {
    signal: Signal,
    identity: DtlsIdentity,
}

impl RawParticipant {
    /// Joins `channel` on the deployment at `url` (`http://host:port`) as user `name`: opens the
    /// WebSocket, has the session integrated with the REST `api_key`, enters the channel.
    pub async fn join(url: &str, api_key: &str, channel: &str, name: &str) -> anyhow::Result<Self> {
        let rest = mooyaho_server_sdk::Mooyaho::new(url, api_key)?;
        let ws_url = format!("{}/websocket", url.replacen("http", "ws", 1));
        let signal = Signal::join(&ws_url, &rest, channel, name).await?;
        let identity = DtlsIdentity::generate().map_err(|e| anyhow::anyhow!(e.0))?;
        Ok(Self { signal, identity })
    }

    /// The WebSocket session id the server gave us.
    pub fn session_id(&self) -> &str {
        &self.signal.id
    }

    /// Sends any signaling message (a `requestId` is added) and returns its reply; SFU offers
    /// that arrive meanwhile are kept for [`subscribe`](Self::subscribe).
    pub async fn request(&mut self, message: Value) -> anyhow::Result<Value> {
        self.signal.request(message).await
    }

    /// Publishes `tracks` (one m-line each, in order) and connects the transport. Fails with the
    /// server's reply when it refuses the offer.
    pub async fn publish(&mut self, tracks: &[Track]) -> anyhow::Result<RawTransport> {
        let ice = LocalIce::random();
        let declared: Vec<(bool, u32)> = tracks
            .iter()
            .map(|t| (t.kind == TrackKind::Audio, t.ssrc))
            .collect();
        let offer = sdp::publish_offer_tracks(&self.local(&ice), &declared);
        self.publish_offer(&offer, ice).await
    }

    /// Publishes with an offer written by the caller, whose ICE credentials are `ice` and whose
    /// fingerprint is [`fingerprint`](Self::fingerprint).
    pub async fn publish_sdp(
        &mut self,
        offer: &str,
        ice: &IceCredentials,
    ) -> anyhow::Result<RawTransport> {
        self.publish_offer(offer, ice.to_local()).await
    }

    /// Sends `offer` as an SFU publish (`call {isSFU}`) and connects the transport to the
    /// node's answer with the offer's ICE credentials `ice`.
    async fn publish_offer(&mut self, offer: &str, ice: LocalIce) -> anyhow::Result<RawTransport> {
        let reply = self
            .signal
            .request(json!({ "type": "call", "isSFU": true, "sdp": offer }))
            .await?;
        let answer = reply["sdp"]
            .as_str()
            .with_context(|| format!("publish refused: {reply}"))?;
        RawTransport::connect(&self.identity, ice, answer).await
    }

    /// Waits up to `wait` for the node's subscribe offer, answers it (receiving every m-line)
    /// and connects the transport.
    pub async fn subscribe(&mut self, wait: Duration) -> anyhow::Result<RawTransport> {
        let offer = tokio::time::timeout(wait, self.signal.next_offer())
            .await
            .context("no subscribe offer in time")??;
        let ice = LocalIce::random();
        self.answer(&offer, &ice).await?;
        RawTransport::connect(&self.identity, ice, &offer).await
    }

    /// Waits up to `wait` for the node's next subscribe offer (a publisher joined or left) and
    /// answers it on `transport`'s credentials; `transport.remote_media` follows.
    pub async fn renegotiate(
        &mut self,
        transport: &mut RawTransport,
        wait: Duration,
    ) -> anyhow::Result<()> {
        let offer = tokio::time::timeout(wait, self.signal.next_offer())
            .await
            .context("no re-offer in time")??;
        let ice = transport.local_ice.to_local();
        self.answer(&offer, &ice).await?;
        transport.remote_media = remote_media(&sdp::parse_remote(&offer));
        Ok(())
    }

    /// Our DTLS certificate's SHA-256 fingerprint, for offers written by hand.
    pub fn fingerprint(&self) -> &str {
        &self.identity.fingerprint
    }

    /// Closes the WebSocket (the server ends our transports).
    pub async fn leave(self) {
        self.signal.close().await;
    }

    fn local<'a>(&'a self, ice: &'a LocalIce) -> Local<'a> {
        ice.local(&self.identity.fingerprint)
    }

    /// Answers a subscribe offer and waits for the ack: the node must know our fingerprint
    /// before our ClientHello.
    async fn answer(&mut self, offer: &str, ice: &LocalIce) -> anyhow::Result<()> {
        let setup = ConnectOptions::ICE_LITE_SFU.answer_setup.attribute();
        let answer = sdp::subscribe_answer(&self.local(ice), offer, setup);
        let ack = self
            .signal
            .request(json!({ "type": "answer", "isSFU": true, "sdp": answer }))
            .await?;
        anyhow::ensure!(ack["type"] == "ack", "subscribe answer refused: {ack}");
        Ok(())
    }
}

/// What [`RawTransport::recv`] read.
#[derive(Debug)]
pub enum Inbound {
    /// An SRTP packet, decrypted: plain RTP.
    Rtp(Vec<u8>),
    /// An SRTCP packet, decrypted: plain (compound) RTCP.
    Rtcp(Vec<u8>),
    /// An authenticated binding request for us, already answered.
    CheckAnswered {
        /// Where it came from (and the response went).
        from: SocketAddr,
    },
    /// Any other STUN message (responses to our checks; checks we did not answer).
    Stun {
        /// The raw message.
        datagram: Vec<u8>,
        /// Its source.
        from: SocketAddr,
    },
    /// SRTP or SRTCP that failed authentication or replay checks.
    Undecryptable {
        /// Its source.
        from: SocketAddr,
    },
    /// DTLS or anything else.
    Other {
        /// The raw datagram.
        datagram: Vec<u8>,
        /// Its source.
        from: SocketAddr,
    },
}

/// A transport to the node after ICE and DTLS: everything a hostile client needs.
pub struct RawTransport {
    /// Our socket (the validated path's local end).
    pub socket: Arc<UdpSocket>,
    /// The node's address.
    pub remote: SocketAddr,
    /// Our ICE credentials.
    pub local_ice: IceCredentials,
    /// The node's ICE credentials.
    pub remote_ice: IceCredentials,
    /// The SRTP session of the DTLS handshake.
    pub srtp: SrtpSession,
    /// The m-lines of the node's SDP.
    pub remote_media: Vec<RemoteMedia>,
    /// Whether [`recv`](Self::recv) answers the node's authenticated binding requests (on by
    /// default, as an honest client must).
    pub answer_checks: bool,
    checks_answered: u64,
    buf: Vec<u8>,
}

impl RawTransport {
    async fn connect(
        identity: &DtlsIdentity,
        local: LocalIce,
        remote_sdp: &str,
    ) -> anyhow::Result<Self> {
        let remote = sdp::parse_remote(remote_sdp);
        let connected = peer::connect(identity, &local, &remote).await?;
        Ok(Self {
            socket: connected.socket,
            remote: connected.remote,
            local_ice: IceCredentials {
                ufrag: local.ufrag,
                pwd: local.pwd,
            },
            remote_ice: IceCredentials {
                ufrag: remote.ufrag.clone(),
                pwd: remote.pwd.clone(),
            },
            srtp: connected.srtp,
            remote_media: remote_media(&remote),
            answer_checks: true,
            checks_answered: 0,
            buf: vec![0; 2048],
        })
    }

    /// Our socket's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// An authenticated binding request to the node, as the controlling agent (a fresh
    /// transaction id each call), to send from any socket: the node validates the path it
    /// came from, and `use_candidate` nominates it.
    pub fn binding_request(&self, use_candidate: bool) -> Vec<u8> {
        peer::binding_request_with(
            &self.local_ice.ufrag,
            &self.remote_ice.ufrag,
            &self.remote_ice.pwd,
            true,
            use_candidate,
        )
    }

    /// The signed success response to a binding request the node sent us (to `from`'s check,
    /// received on any socket), or `None` when it is not an authenticated check for us.
    pub fn answer_check(&self, datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        peer::answer_check(datagram, from, &self.local_ice.to_local())
    }

    /// How many of the node's checks [`recv`](Self::recv) answered.
    pub fn checks_answered(&self) -> u64 {
        self.checks_answered
    }

    /// Sends a datagram as is to the node from our socket.
    pub async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        self.socket.send_to(datagram, self.remote).await.map(drop)
    }

    /// Encrypts a plain RTP packet (any SSRC, sequence number, payload) and sends it.
    pub async fn send_rtp(&mut self, packet: &[u8]) -> anyhow::Result<()> {
        let protected = self
            .srtp
            .protect_rtp(packet)
            .map_err(|e| anyhow::anyhow!("SRTP protect: {e}"))?;
        Ok(self.send(&protected).await?)
    }

    /// Encrypts a plain (compound) RTCP packet and sends it.
    pub async fn send_rtcp(&mut self, packet: &[u8]) -> anyhow::Result<()> {
        let protected = self
            .srtp
            .protect_rtcp(packet)
            .map_err(|e| anyhow::anyhow!("SRTCP protect: {e}"))?;
        Ok(self.send(&protected).await?)
    }

    /// The next datagram on our socket within `wait` (`None` when nothing came), decrypted or
    /// classified; the node's checks are answered on the way when
    /// [`answer_checks`](Self::answer_checks) is on.
    pub async fn recv(&mut self, wait: Duration) -> anyhow::Result<Option<Inbound>> {
        let Ok(received) = tokio::time::timeout(wait, self.socket.recv_from(&mut self.buf)).await
        else {
            return Ok(None);
        };
        let (n, from) = received?;
        let datagram = &mut self.buf[..n];
        Ok(Some(match PacketClass::of(datagram) {
            PacketClass::Stun => {
                let answer = if self.answer_checks {
                    peer::answer_check(datagram, from, &self.local_ice.to_local())
                } else {
                    None
                };
                if let Some(response) = answer {
                    self.socket.send_to(&response, from).await?;
                    self.checks_answered += 1;
                    Inbound::CheckAnswered { from }
                } else {
                    Inbound::Stun {
                        datagram: datagram.to_vec(),
                        from,
                    }
                }
            }
            PacketClass::Rtp => match self.srtp.unprotect_rtp_in_place(datagram) {
                Ok(len) => Inbound::Rtp(datagram[..len].to_vec()),
                Err(_) => Inbound::Undecryptable { from },
            },
            PacketClass::Rtcp => match self.srtp.unprotect_rtcp_in_place(datagram) {
                Ok(len) => Inbound::Rtcp(datagram[..len].to_vec()),
                Err(_) => Inbound::Undecryptable { from },
            },
            _ => Inbound::Other {
                datagram: datagram.to_vec(),
                from,
            },
        }))
    }
}

fn remote_media(remote: &sdp::Remote) -> Vec<RemoteMedia> {
    remote
        .media
        .iter()
        .map(|(mid, kind, pt, ssrc)| RemoteMedia {
            mid: mid.clone(),
            kind: kind.clone(),
            payload_type: pt.parse().ok(),
            ssrc: *ssrc,
        })
        .collect()
}

/// A plain RTP packet (version 2, no CSRC or extension).
pub fn rtp(
    ssrc: u32,
    sequence_number: u16,
    timestamp: u32,
    payload_type: u8,
    marker: bool,
    payload: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let packet = rtp::packet::Packet {
        header: rtp::header::Header {
            version: 2,
            marker,
            payload_type: payload_type & 0x7f,
            sequence_number,
            timestamp,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::copy_from_slice(payload),
    };
    marshalled(packet.marshal())
}

/// A VP8 payload (RFC 7741): a descriptor starting partition 0 and a frame tag whose P bit
/// marks a keyframe (what the node waits for before forwarding video to a new subscriber),
/// then `body`.
pub fn vp8_payload(keyframe: bool, body: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x10, u8::from(!keyframe), 0, 0];
    payload.extend_from_slice(body);
    payload
}

/// A generic NACK (RFC 4585 §6.2.1) with one FCI entry per sequence number, in order and
/// repeats kept (an empty bitmask each): what a storm of repeated requests looks like.
pub fn nack(
    sender_ssrc: u32,
    media_ssrc: u32,
    sequence_numbers: &[u16],
) -> anyhow::Result<Vec<u8>> {
    let pairs: Vec<(u16, u16)> = sequence_numbers.iter().map(|&s| (s, 0)).collect();
    nack_entries(sender_ssrc, media_ssrc, &pairs)
}

/// A generic NACK with the given FCI entries: `(packet id, bitmask of the 16 following)`.
pub fn nack_entries(
    sender_ssrc: u32,
    media_ssrc: u32,
    entries: &[(u16, u16)],
) -> anyhow::Result<Vec<u8>> {
    let nack = TransportLayerNack {
        sender_ssrc,
        media_ssrc,
        nacks: entries
            .iter()
            .map(|&(packet_id, lost_packets)| NackPair {
                packet_id,
                lost_packets,
            })
            .collect(),
    };
    marshalled(nack.marshal())
}

/// A picture loss indication (RFC 4585 §6.3.1).
pub fn pli(sender_ssrc: u32, media_ssrc: u32) -> anyhow::Result<Vec<u8>> {
    marshalled(
        PictureLossIndication {
            sender_ssrc,
            media_ssrc,
        }
        .marshal(),
    )
}

/// A sender report without report blocks.
pub fn sender_report(
    ssrc: u32,
    ntp_time: u64,
    rtp_time: u32,
    packet_count: u32,
    octet_count: u32,
) -> anyhow::Result<Vec<u8>> {
    marshalled(
        SenderReport {
            ssrc,
            ntp_time,
            rtp_time,
            packet_count,
            octet_count,
            reports: Vec::new(),
            profile_extensions: Bytes::new(),
        }
        .marshal(),
    )
}

/// A receiver report with one block about `media_ssrc`: its highest extended sequence number,
/// cumulative loss and fraction lost (of 256).
pub fn receiver_report(
    sender_ssrc: u32,
    media_ssrc: u32,
    highest_sequence_number: u32,
    total_lost: u32,
    fraction_lost: u8,
) -> anyhow::Result<Vec<u8>> {
    marshalled(
        ReceiverReport {
            ssrc: sender_ssrc,
            reports: vec![ReceptionReport {
                ssrc: media_ssrc,
                fraction_lost,
                total_lost: total_lost & 0x00ff_ffff,
                last_sequence_number: highest_sequence_number,
                jitter: 0,
                last_sender_report: 0,
                delay: 0,
            }],
            profile_extensions: Bytes::new(),
        }
        .marshal(),
    )
}

/// Marshalling fails only on lists too long for a length field (an RTCP packet's 256 KiB).
fn marshalled(result: Result<Bytes, webrtc_util::Error>) -> anyhow::Result<Vec<u8>> {
    result
        .map(|bytes| bytes.to_vec())
        .map_err(|e| anyhow::anyhow!("cannot marshal the packet: {e}"))
}

/// A UDP socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, so that several sockets can
/// share one address (as long as each sets both): a stand-in for a second device behind the
/// same address, or for a spoofer of an address whose owner also set them. Any `127.0.0.x`
/// address works on Linux loopback.
pub fn bind_shared(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Sends UDP datagrams with any IPv4 source address and port (a raw `IPPROTO_RAW` socket:
/// needs root or `CAP_NET_RAW`): the attacker who forges a victim's address.
pub struct Spoofer {
    socket: socket2::Socket,
}

impl Spoofer {
    /// Opens the raw socket; `PermissionDenied` without `CAP_NET_RAW`.
    pub fn new() -> io::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
        )?;
        Ok(Self { socket })
    }

    /// Sends `payload` to `to` as if from `from`.
    pub fn send(&self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
        let datagram = ipv4_udp(from, to, payload)?;
        let sent = self
            .socket
            .send_to(&datagram, &SocketAddrV4::new(*to.ip(), 0).into())?;
        if sent == datagram.len() {
            Ok(())
        } else {
            Err(io::Error::other("short raw send"))
        }
    }
}

/// An IPv4 header and a UDP header before `payload`. The kernel fills the IP checksum, id and
/// total length of an `IPPROTO_RAW` send (raw(7)); a zero UDP checksum means "none" in IPv4.
fn ipv4_udp(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> io::Result<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len())
        .ok()
        .filter(|&l| usize::from(l) + 20 <= 65_535)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "payload too large"))?;
    let mut datagram = Vec::with_capacity(28 + payload.len());
    datagram.extend_from_slice(&[0x45, 0]);
    datagram.extend_from_slice(&(udp_len + 20).to_be_bytes());
    datagram.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // id, DF, TTL, UDP, checksum
    datagram.extend_from_slice(&from.ip().octets());
    datagram.extend_from_slice(&to.ip().octets());
    datagram.extend_from_slice(&from.port().to_be_bytes());
    datagram.extend_from_slice(&to.port().to_be_bytes());
    datagram.extend_from_slice(&udp_len.to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    Ok(datagram)
}

#[cfg(test)]
mod tests {
    use rtcp::packet::unmarshal;
    use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication as Pli;
    use stun::message::Message;
    use webrtc_util::marshal::Unmarshal as _;

    use super::*;

    #[test]
    fn rtp_packets_carry_exactly_the_fields_given() {
        let raw = rtp(0xdead_beef, 65_535, 90_000, 96, true, b"payload").unwrap();
        assert_eq!(raw.len(), 12 + 7);
        let parsed = rtp::packet::Packet::unmarshal(&mut &raw[..]).unwrap();
        assert_eq!(parsed.header.ssrc, 0xdead_beef);
        assert_eq!(parsed.header.sequence_number, 65_535);
        assert_eq!(parsed.header.timestamp, 90_000);
        assert_eq!(parsed.header.payload_type, 96);
        assert!(parsed.header.marker);
        assert_eq!(&parsed.payload[..], b"payload");
        assert_eq!(PacketClass::of(&raw), PacketClass::Rtp);
        assert_eq!(vp8_payload(true, b"x"), [0x10, 0, 0, 0, b'x']);
        assert_eq!(vp8_payload(false, b"")[1] & 1, 1, "P bit: inter frame");
    }

    #[test]
    fn nacks_keep_every_entry_including_repeats() {
        let raw = nack(1, 2, &[7, 7, 7, 9]).unwrap();
        assert_eq!(raw.len(), 12 + 4 * 4, "one FCI word per entry");
        assert_eq!(raw[1], 205, "RTPFB");
        assert_eq!(raw[0] & 0x1f, 1, "generic NACK");
        let parsed = unmarshal(&mut &raw[..]).unwrap();
        let nack = parsed[0]
            .as_any()
            .downcast_ref::<TransportLayerNack>()
            .unwrap();
        assert_eq!((nack.sender_ssrc, nack.media_ssrc), (1, 2));
        let ids: Vec<u16> = nack.nacks.iter().map(|p| p.packet_id).collect();
        assert_eq!(ids, [7, 7, 7, 9]);
        let masked = nack_entries(1, 2, &[(100, 0xffff)]).unwrap();
        let parsed = unmarshal(&mut &masked[..]).unwrap();
        let nack = parsed[0]
            .as_any()
            .downcast_ref::<TransportLayerNack>()
            .unwrap();
        assert_eq!(nack.nacks[0].packet_list().len(), 17);
        assert_eq!(PacketClass::of(&raw), PacketClass::Rtcp);
        let too_many = vec![1u16; 70_000];
        assert!(
            super::nack(1, 2, &too_many).is_err(),
            "over the RTCP length field"
        );
    }

    #[test]
    fn pli_and_reports_parse_back() {
        let compound = [
            sender_report(5, 0x1122_3344_5566_7788, 1000, 10, 1200).unwrap(),
            receiver_report(6, 7, 0x0001_0005, 3, 64).unwrap(),
            pli(6, 7).unwrap(),
        ]
        .concat();
        let parsed = unmarshal(&mut &compound[..]).unwrap();
        assert_eq!(parsed.len(), 3);
        let sr = parsed[0].as_any().downcast_ref::<SenderReport>().unwrap();
        assert_eq!((sr.ssrc, sr.rtp_time, sr.packet_count), (5, 1000, 10));
        let rr = parsed[1].as_any().downcast_ref::<ReceiverReport>().unwrap();
        assert_eq!(rr.reports[0].ssrc, 7);
        assert_eq!(rr.reports[0].last_sequence_number, 0x0001_0005);
        assert_eq!(rr.reports[0].total_lost, 3);
        let pli = parsed[2].as_any().downcast_ref::<Pli>().unwrap();
        assert_eq!((pli.sender_ssrc, pli.media_ssrc), (6, 7));
    }

    fn transport_credentials() -> (IceCredentials, IceCredentials) {
        (
            IceCredentials {
                ufrag: "client".into(),
                pwd: "client-password-0123456789".into(),
            },
            IceCredentials {
                ufrag: "node".into(),
                pwd: "node-password-0123456789ab".into(),
            },
        )
    }

    #[test]
    fn binding_requests_authenticate_with_the_node_password() {
        use mooyaho_net::stun::BindingRequest;
        let (local, remote) = transport_credentials();
        for use_candidate in [false, true] {
            let raw = peer::binding_request_with(
                &local.ufrag,
                &remote.ufrag,
                &remote.pwd,
                true,
                use_candidate,
            );
            let mut request = BindingRequest::parse(&raw).unwrap();
            assert_eq!(request.local_ufrag, "node");
            assert_eq!(request.use_candidate, use_candidate);
            request.authenticate(&remote.pwd).unwrap();
            assert!(request.authenticate("another-password-012345").is_err());
            let mut m = Message::new();
            m.unmarshal_binary(&raw).unwrap();
        }
    }

    #[tokio::test]
    async fn shared_sockets_bind_one_address_twice() {
        let first = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_shared(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        second
            .send_to(b"x", receiver.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0; 8];
        let (_, from) = receiver.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, addr);
    }

    #[tokio::test]
    async fn the_spoofer_forges_the_source_address() {
        let spoofer = match Spoofer::new() {
            Ok(spoofer) => spoofer,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                eprintln!("skipped: raw sockets need CAP_NET_RAW ({e})");
                return;
            }
            Err(e) => panic!("raw socket: {e}"),
        };
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(to) = receiver.local_addr().unwrap() else {
            unreachable!("bound on IPv4")
        };
        let forged: SocketAddrV4 = "127.0.0.77:4242".parse().unwrap();
        spoofer.send(forged, to, b"forged").unwrap();
        let mut buf = [0; 16];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), receiver.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"forged"[..], SocketAddr::V4(forged)));
    }

    #[test]
    fn oversized_spoofed_payloads_are_refused() {
        let a: SocketAddrV4 = "127.0.0.1:1".parse().unwrap();
        assert!(ipv4_udp(a, a, &vec![0; 65_507]).is_ok());
        let err = ipv4_udp(a, a, &vec![0; 65_508]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
