//! What was sent: a ring of (transport-wide sequence number, send time, size, probe cluster),
//! written once per packet sent and read when feedback names the packet. The ring is sized by
//! feedback, not per packet: it starts small and grows when a feedback message shows that
//! the packets between the oldest it names and the newest sent come near its length.

use crate::SeqNo;
use crate::time::extend_u16;

/// One packet sent on the transport: 16 bytes, four to a cache line (the ring is written once
/// per packet and subscriber, on the forwarding path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Microseconds since the estimator's epoch.
    pub(crate) send_us: i64,
    /// The extended sequence number's low 32 bits (slots are reused every ring length, so
    /// these tell a slot's current packet from an older one).
    seq_low: u32,
    pub(crate) size: u16,
    /// The probe cluster it belongs to (0: none).
    pub(crate) cluster: u16,
}

/// A ring indexed by extended sequence number: recording costs one slot write; a packet
/// feedback names after its slot was reused is simply unknown.
///
/// Memory per subscriber (issue 17): a full ring (1,024 × 16 B) for every subscriber
/// transport was 16 KiB whatever its packet rate. The ring starts at [`INITIAL_SLOTS`] and
/// [`SendHistory::reach_back_to`] (once per feedback message, off the per-packet path, which
/// stays one masked write) grows it to [`HEADROOM`] × the packets one feedback interval spans:
/// an audio subscriber keeps 2 KiB. A jump in rate larger than the headroom within one
/// interval loses that one message's packets to the estimator (they read as unknown, as an
/// overwritten slot always did); the next message finds a ring sized for the new rate.
#[derive(Debug)]
pub(crate) struct SendHistory {
    slots: Box<[Sent]>,
    /// The most slots the ring may grow to.
    capacity: usize,
    highest: Option<SeqNo>,
}

/// Slots of a new ring: ~1 s of audio, or a feedback interval of a few hundred packets per
/// second.
const INITIAL_SLOTS: usize = 128;

/// The ring holds this many times the packets the latest feedback message reached back over.
const HEADROOM: u64 = 4;

impl SendHistory {
    /// A ring that may grow to `capacity` packets (rounded up to a power of two).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        Self {
            slots: vec![Sent::default(); capacity.min(INITIAL_SLOTS)].into_boxed_slice(),
            capacity,
            highest: None,
        }
    }

    /// Slots held now.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Feedback named packets from `oldest` on: grows the ring (up to its capacity) to
    /// [`HEADROOM`] × the packets sent since, so the next message's packets are still held.
    /// A forged or stale `oldest` buys at most the full capacity. Never shrinks.
    pub(crate) fn reach_back_to(&mut self, oldest: SeqNo) {
        let Some(highest) = self.highest else {
            return;
        };
        let span = highest.0.saturating_sub(oldest.0).saturating_add(1);
        let wanted = span
            .saturating_mul(HEADROOM)
            .min(self.capacity as u64)
            .next_power_of_two() as usize;
        if wanted > self.slots.len() {
            self.grow(wanted.min(self.capacity));
        }
    }

    /// Moves every held packet into a ring of `len` slots.
    #[cold]
    fn grow(&mut self, len: usize) {
        let mut slots = vec![Sent::default(); len].into_boxed_slice();
        let mask = len - 1;
        for sent in self.slots.iter().filter(|s| s.size > 0) {
            slots[(sent.seq_low as usize) & mask] = *sent;
        }
        self.slots = slots;
    }

    /// The extension of a wire number, relative to the newest sent.
    pub(crate) fn extend(&self, wire: u16) -> SeqNo {
        extend_u16(self.highest, wire)
    }

    /// Notes a packet sent; returns its extended number.
    pub(crate) fn record(&mut self, wire: u16, send_us: i64, size: usize, cluster: u16) -> SeqNo {
        let seq = self.extend(wire);
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        let mask = self.slots.len() - 1;
        self.slots[(seq.0 as usize) & mask] = Sent {
            seq_low: seq.0 as u32,
            send_us,
            size: size.min(usize::from(u16::MAX)) as u16,
            cluster,
        };
        seq
    }

    /// The packet sent under `seq`, if the ring still holds it.
    pub(crate) fn get(&self, seq: SeqNo) -> Option<Sent> {
        let slot = self.slots[(seq.0 as usize) & (self.slots.len() - 1)];
        (slot.seq_low == seq.0 as u32 && slot.size > 0).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_recent_packets_across_the_wire_wrap_and_forgets_overwritten_ones() {
        let mut h = SendHistory::new(8);
        let mut seqs = vec![];
        for (i, wire) in (65530u16..=65535).chain(0..4).enumerate() {
            seqs.push(h.record(wire, i as i64 * 1000, 100 + i, 0));
        }
        // The last 8 of 10 are held; extension continues across the wrap.
        assert_eq!(seqs[9].0, seqs[0].0 + 9);
        assert_eq!(h.get(h.extend(3)).map(|s| s.size), Some(109));
        assert_eq!(h.get(h.extend(65532)).map(|s| s.send_us), Some(2000));
        assert_eq!(h.get(h.extend(65530)), None);
        assert_eq!(h.get(h.extend(4)), None, "never sent");
    }

    /// Records `count` packets from wire number `first`, 1 ms apart; returns their numbers.
    fn send(h: &mut SendHistory, first: u16, count: u16) -> Vec<SeqNo> {
        (0..count)
            .map(|i| {
                let wire = first.wrapping_add(i);
                h.record(wire, i64::from(wire) * 1000, 100 + usize::from(i), 0)
            })
            .collect()
    }

    #[test]
    fn starts_small_and_grows_to_what_feedback_reaches_back_over() {
        let mut h = SendHistory::new(1024);
        assert_eq!(h.slots(), INITIAL_SLOTS);
        // Audio-like: feedback names the last 10 packets; 4 × 10 fits the initial ring.
        send(&mut h, 0, 10);
        h.reach_back_to(h.extend(0));
        assert_eq!(h.slots(), INITIAL_SLOTS);
        // Video-like: 100 packets between feedback messages → 400 → 512 slots, and every
        // packet held before the growth is still found afterwards.
        let seqs = send(&mut h, 10, 100);
        h.reach_back_to(h.extend(10));
        assert_eq!(h.slots(), 512);
        for (i, seq) in seqs.iter().enumerate() {
            assert_eq!(h.get(*seq).map(|s| usize::from(s.size)), Some(100 + i));
        }
        // The next interval's 400 packets are all held for the feedback that names them.
        let seqs = send(&mut h, 110, 400);
        assert!(seqs.iter().all(|s| h.get(*s).is_some()));
    }

    #[test]
    fn a_forged_or_stale_base_grows_it_only_to_capacity_and_never_shrinks_it() {
        let mut h = SendHistory::new(1024);
        h.reach_back_to(SeqNo(0)); // nothing sent yet: nothing to size by
        assert_eq!(h.slots(), INITIAL_SLOTS);
        send(&mut h, 0, 50);
        h.reach_back_to(h.extend(49u16.wrapping_sub(32_000))); // 32,000 behind the newest
        assert_eq!(h.slots(), 1024);
        h.reach_back_to(h.extend(48)); // a short span later
        assert_eq!(h.slots(), 1024);
        // A base ahead of everything sent asks for nothing.
        let mut fresh = SendHistory::new(1024);
        send(&mut fresh, 0, 5);
        fresh.reach_back_to(fresh.extend(40));
        assert_eq!(fresh.slots(), INITIAL_SLOTS);
    }
}
