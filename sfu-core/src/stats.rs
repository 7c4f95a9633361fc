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
