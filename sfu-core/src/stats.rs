//! Worker-wide counters and entity counts. Every dropped packet lands in exactly one counter.

/// Per-worker counters, monotonically increasing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// RTP packets handed to `handle_rtp`.
    pub rtp_received: u64,
    /// RTP packets queued toward subscribers (fan-out copies, retransmissions excluded).
    pub rtp_forwarded: u64,
    /// Not parseable as RTP.
    pub rtp_malformed: u64,
    /// From an unknown transport, or RTP on a subscribe transport.
    pub rtp_unknown_transport: u64,
    /// SSRC not published on the transport.
    pub rtp_unknown_ssrc: u64,
    /// Unknown SSRC naming a rid (RFC 8852) that no track announced, or a simulcast layer
    /// already bound to another SSRC.
    pub rtp_unknown_rid: u64,
    /// Payload type other than the track's, or RTX without an original sequence number
    /// (padding-only bandwidth probes).
    pub rtp_unknown_pt: u64,
    /// Duplicates (including RTX for packets already received).
    pub rtp_duplicate: u64,
    /// First packets of suspected stream restarts, held back until confirmed.
    pub rtp_probation: u64,
    /// Packets over their track's publisher bitrate cap: dropped before any fan-out.
    pub rtp_over_bitrate: u64,
    /// Audio level elements (RFC 6464) not one byte long: not read and not forwarded (the
    /// packet itself is).
    pub audio_level_malformed: u64,
    /// Copies not sent because the subscription waits for its first keyframe.
    pub rtp_waiting_for_keyframe: u64,
    /// RTCP packets handed to `handle_rtcp`.
    pub rtcp_received: u64,
    /// RTCP compounds (or their tails) that did not parse.
    pub rtcp_malformed: u64,
    /// RTCP from an unknown transport.
    pub rtcp_unknown_transport: u64,
    /// RTCP messages about SSRCs that are not routed on the transport.
    pub rtcp_unknown_ssrc: u64,
    /// Sequence numbers NACKed by subscribers.
    pub nack_received: u64,
    /// Retransmissions served from a retransmit buffer.
    pub retransmits_sent: u64,
    /// NACKed packets that were not (or no longer) in the buffer.
    pub retransmit_misses: u64,
    /// NACKed packets already resent to that subscriber within the resend interval (repeats
    /// inside one NACK or across recent ones).
    pub retransmits_repeated: u64,
    /// NACKed packets refused because the subscriber's retransmission budget was spent.
    pub retransmits_over_budget: u64,
    /// NACKed packets that could not be resent byte-identical on the media SSRC (no RTX, and
    /// the original's transport-wide sequence number is no longer known).
    pub retransmits_unrepeatable: u64,
    /// Sequence numbers NACKed toward publishers.
    pub nack_sent: u64,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests_received: u64,
    /// PLIs sent to publishers.
    pub pli_sent: u64,
    /// Sender reports forwarded to subscribers.
    pub sr_forwarded: u64,
    /// Publisher sender reports not translated because one for the same SSRC was forwarded
    /// less than `sr_forward_interval` ago.
    pub sr_throttled: u64,
    /// Receiver reports sent to publishers.
    pub rr_sent: u64,
    /// REMB messages sent to publishers.
    pub remb_sent: u64,
    /// Transport-wide CC feedback messages sent.
    pub twcc_sent: u64,
    /// Transport-wide CC feedback messages from subscribers fed to their downlink estimate.
    pub twcc_received: u64,
    /// Transport-wide CC feedback messages dropped: less than `twcc_min_interval` after the
    /// previous one from the same subscriber.
    pub twcc_throttled: u64,
    /// Probe packets (retransmissions of recent packets) sent to measure a downlink's headroom.
    pub probe_packets_sent: u64,
    /// Of those, padding-only packets (no media to resend, e.g. every video paused).
    pub probe_padding_sent: u64,
    /// Video subscriptions paused because not even their lowest layer fit the downlink.
    pub bwe_pauses: u64,
    /// Paused video subscriptions resumed because their downlink takes a layer again.
    pub bwe_resumes: u64,
    /// Loss subscribers report about what we forward (each report block's fraction lost).
    pub subscriber_loss: Histogram,
    /// Loss of publishers' streams toward us (each report block we send them).
    pub publisher_loss: Histogram,
    /// Round-trip times to subscribers, from their report blocks about a sender report we
    /// forwarded (RFC 3550 §6.4.1: arrival − LSR's send time − DLSR).
    pub subscriber_rtt: Histogram,
}

/// Bucket bounds of loss histograms, in millionths (0.1 % … 100 %).
pub const LOSS_BUCKETS: [u64; HISTOGRAM_BOUNDS] = [
    1_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
];
/// Bucket bounds of round-trip-time histograms, in microseconds (5 ms … 1 s).
pub const RTT_BUCKETS: [u64; HISTOGRAM_BOUNDS] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
];
/// Finite bucket bounds of every [`Histogram`].
pub const HISTOGRAM_BOUNDS: usize = 8;

/// Observations in fixed buckets (bounds given by the kind: [`LOSS_BUCKETS`],
/// [`RTT_BUCKETS`]), integer units so it stays `Copy + Eq` and free of allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket, not cumulative: `counts[i]` ≤ `bounds[i]` and above the
    /// previous bound; the last entry counts those above every bound.
    pub counts: [u64; HISTOGRAM_BOUNDS + 1],
    /// Sum of the observations, in the bounds' unit.
    pub sum: u64,
}

impl Histogram {
    /// Files one observation.
    pub fn observe(&mut self, bounds: &[u64; HISTOGRAM_BOUNDS], value: u64) {
        let bucket = bounds.partition_point(|&b| b < value);
        self.counts[bucket] += 1;
        self.sum = self.sum.saturating_add(value);
    }

    /// Adds another histogram of the same kind (a node sums its workers').
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A snapshot of a worker: live entities plus counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Open rooms.
    pub rooms: usize,
    /// Participants with a transport or a track in those rooms.
    pub participants: usize,
    /// Live transports.
    pub transports: usize,
    /// Live tracks.
    pub tracks: usize,
    /// Live subscriptions.
    pub subscriptions: usize,
    /// Counters since the worker started.
    pub counters: Counters,
}
