//! Recently received packets of one track, for answering NACKs (mediasoup's
//! `RtpRetransmissionBuffer`). A ring indexed by extended sequence number: insert and lookup
//! are O(1) and never allocate after construction. Each slot keeps a `Bytes` handle, so the
//! media layer's receive buffer (a pooled chunk shared with other packets) stays alive until
//! the slot is overwritten or expires: [`RetransmitBuffer::expire`] releases packets older
//! than the maximum age, so after a burst, or on a quiet stream such as audio (512 packets are
//! 10 s of it), memory returns to normal instead of waiting for the ring to wrap.

use std::time::{Duration, Instant};

use crate::SeqNo;
use crate::rtp::RtpPacket;

#[derive(Debug)]
struct Stored {
    seq: SeqNo,
    at: Instant,
    packet: RtpPacket,
}

/// Bounded by both count (a power of two) and age.
#[derive(Debug)]
pub struct RetransmitBuffer {
    slots: Box<[Option<Stored>]>,
    max_age: Duration,
}

impl RetransmitBuffer {
    /// Room for `capacity` packets (rounded up to a power of two), none older than `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        Self {
            slots: (0..capacity).map(|_| None).collect(),
            max_age,
        }
    }

    fn slot(&self, seq: SeqNo) -> usize {
        (seq.0 as usize) & (self.slots.len() - 1)
    }

    /// Stores `packet` under `seq`. Returns `false` (and stores nothing) for a duplicate.
    pub fn insert(&mut self, now: Instant, seq: SeqNo, packet: &RtpPacket) -> bool {
        let slot = self.slot(seq);
        if let Some(s) = &self.slots[slot] {
            if s.seq == seq {
                return false;
            }
            if s.seq > seq {
                // Older than what the ring already holds at this slot: too late to be useful.
                return true;
            }
        }
        self.slots[slot] = Some(Stored {
            seq,
            at: now,
            packet: packet.clone(),
        });
        true
    }

    /// Whether `seq` is stored (regardless of age).
    pub fn contains(&self, seq: SeqNo) -> bool {
        self.slots[self.slot(seq)]
            .as_ref()
            .is_some_and(|s| s.seq == seq)
    }

    /// The packet stored under `seq`, if still young enough to be worth resending.
    pub fn get(&self, now: Instant, seq: SeqNo) -> Option<&RtpPacket> {
        let stored = self.slots[self.slot(seq)].as_ref()?;
        (stored.seq == seq && now.saturating_duration_since(stored.at) <= self.max_age)
            .then_some(&stored.packet)
    }

    /// Releases every packet older than the maximum age (and the buffers it pins). O(capacity):
    /// the worker calls it a few times per maximum age, not per packet.
    pub fn expire(&mut self, now: Instant) {
        for slot in self.slots.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|s| now.saturating_duration_since(s.at) > self.max_age)
            {
                *slot = None;
            }
        }
    }

    /// Packets currently held (fresh or not yet expired).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every stored packet (stream restart: sequence numbers start over).
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::rtp::RtpPacket;

    fn packet(seq: u16) -> RtpPacket {
        RtpPacket::parse(crate::rtp::tests_support::build(
            seq,
            0,
            1,
            96,
            false,
            &[],
            b"p",
        ))
        .unwrap()
    }

    #[test]
    fn lookup_table() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = RetransmitBuffer::new(4, ms(1000));
        for seq in 10..16 {
            assert!(b.insert(t0 + ms(seq * 10), SeqNo(seq), &packet(seq as u16)));
        }
        assert!(!b.insert(t0, SeqNo(15), &packet(15)), "duplicate");
        // (seq, at ms, found)
        let rows = [
            (15, 200, true),
            (12, 200, true),
            (11, 200, false),
            (9, 200, false),
            (16, 200, false),
            (12, 1121, false),
            (15, 1150, true),
        ];
        for (seq, at, found) in rows {
            assert_eq!(
                b.get(t0 + ms(at), SeqNo(seq)).is_some(),
                found,
                "seq {seq} at {at}"
            );
        }
        assert!(
            b.insert(t0, SeqNo(11), &packet(11)),
            "stale inserts are ignored, not duplicates"
        );
        assert!(!b.contains(SeqNo(11)));
    }

    #[test]
    fn expire_releases_old_packets_and_their_buffers() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = RetransmitBuffer::new(512, ms(1000));
        let raw = crate::rtp::tests_support::build(1, 0, 1, 96, false, &[], b"burst");
        for seq in 0..300u64 {
            let p = RtpPacket::parse(raw.clone()).unwrap();
            b.insert(t0 + ms(seq), SeqNo(70_000 + seq), &p);
        }
        assert_eq!(b.len(), 300);
        b.expire(t0 + ms(1100));
        assert_eq!(
            b.len(),
            200,
            "packets younger than the maximum age are kept"
        );
        b.expire(t0 + ms(1400));
        assert!(b.is_empty());
        assert!(
            raw.is_unique(),
            "no stored packet pins the receive buffer any more"
        );
    }

    #[test]
    fn stored_payload_shares_the_received_allocation() {
        let raw = crate::rtp::tests_support::build(1, 0, 1, 96, false, &[], b"shared payload");
        let mut b = RetransmitBuffer::new(8, Duration::from_secs(1));
        let p = RtpPacket::parse(raw.clone()).unwrap();
        b.insert(Instant::now(), SeqNo(1), &p);
        let got: &Bytes = b.get(Instant::now(), SeqNo(1)).unwrap().payload();
        assert_eq!(got.as_ptr(), p.payload().as_ptr());
    }
}
