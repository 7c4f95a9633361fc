//! What was sent: a fixed ring of (transport-wide sequence number, send time, size, probe
//! cluster), written once per packet sent and read when feedback names the packet.

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
#[derive(Debug)]
pub(crate) struct SendHistory {
    slots: Box<[Sent]>,
    highest: Option<SeqNo>,
}

impl SendHistory {
    /// A ring of `capacity` packets (rounded up to a power of two).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: vec![Sent::default(); capacity.max(1).next_power_of_two()].into_boxed_slice(),
            highest: None,
        }
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
}
