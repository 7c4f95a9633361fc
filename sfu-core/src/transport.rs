//! A transport: the publish or subscribe side of one PeerConnection, as far as routing cares
//! (security and sockets live in the media layer).

use std::collections::HashMap;
use std::time::Instant;

use crate::bwe::BandwidthEstimator;
use crate::config::Config;
use crate::rtcp::TwccRecorder;
use crate::rtp::{ExtensionKind, ExtensionMap};
use crate::{Bitrate, RoomId, Ssrc, SubscriptionId, TrackId};

/// Which way media flows on a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer sends media to the SFU (its publish PeerConnection).
    Publish,
    /// The SFU sends media to the peer (its subscribe PeerConnection).
    Subscribe,
}

/// What a transport negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Publish or subscribe.
    pub direction: Direction,
    /// Negotiated header extension ids.
    pub extensions: ExtensionMap,
}

/// Where packets carrying an SSRC go on this transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Media of one encoding (layer) of a published track.
    Track { track: TrackId, layer: u8 },
    /// RTX of one encoding of a published track.
    TrackRtx { track: TrackId, layer: u8 },
    /// A subscription's outgoing SSRC: RTCP about it (RR, NACK, PLI) comes back with it.
    Subscription(SubscriptionId),
    /// A subscription's RTX SSRC: reserved so nothing else claims it; RTCP about it is ignored
    /// (NACKs and reports name the media SSRC).
    SubscriptionRtx(SubscriptionId),
}

#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) room: RoomId,
    pub(crate) config: TransportConfig,
    /// SSRC → route. SSRCs are chosen by remote peers, so the map keeps std's SipHash (keyed
    /// per process) rather than a fast hasher an attacker could collide.
    pub(crate) routes: HashMap<Ssrc, Route>,
    pub(crate) tracks: Vec<TrackId>,
    pub(crate) subscriptions: Vec<SubscriptionId>,
    /// Publish side: arrival times for transport-wide CC feedback, when negotiated.
    pub(crate) twcc: Option<TwccRecorder>,
    /// Subscribe side: next transport-wide sequence number we stamp.
    pub(crate) twcc_seq: u16,
    /// Subscribe side: the peer's latest REMB estimate.
    pub(crate) remb: Option<Bitrate>,
    /// Subscribe side, with transport-wide CC negotiated: the downlink estimate.
    /// Inline rather than boxed: the forwarding path records every packet sent in it.
    pub(crate) bwe: Option<BandwidthEstimator>,
    /// Subscribe side: how far back the next probe packet is taken from (cycles).
    pub(crate) probe_cursor: u64,
    /// Subscribe side: when the last transport-wide CC feedback was used.
    pub(crate) last_twcc_at: Option<Instant>,
    pub(crate) next_report: Instant,
    pub(crate) next_twcc: Instant,
}

impl Transport {
    pub(crate) fn new(
        now: Instant,
        room: RoomId,
        config: TransportConfig,
        worker: &Config,
    ) -> Self {
        let has_twcc = config.extensions.id(ExtensionKind::TransportCc).is_some();
        let twcc =
            (config.direction == Direction::Publish && has_twcc).then(|| TwccRecorder::new(now));
        let bwe = (config.direction == Direction::Subscribe && has_twcc)
            .then_some(worker.bwe_start_bitrate)
            .flatten()
            .map(|start| BandwidthEstimator::new(now, start));
        Self {
            room,
            config,
            routes: HashMap::new(),
            tracks: Vec::new(),
            subscriptions: Vec::new(),
            twcc,
            twcc_seq: 0,
            remb: None,
            bwe,
            probe_cursor: 0,
            last_twcc_at: None,
            next_report: now,
            next_twcc: now,
        }
    }
}
