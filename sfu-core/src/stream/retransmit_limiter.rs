//! Per-subscription limits on answering NACKs, so a subscriber cannot turn the SFU into an
//! amplifier: each packet is resent at most once per interval (which also de-duplicates
//! sequence numbers repeated inside one NACK and across recent ones), and resent bytes come out
//! of a budget credited with the bytes forwarded to the same subscriber (at most 1× the media
//! rate, plus a small burst).

use std::time::{Duration, Instant};

use crate::SeqNo;

/// Why a retransmission was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The same packet was resent to this subscriber less than an interval ago.
    Repeated,
    /// The subscriber's retransmission budget is spent.
    OverBudget,
}

/// One resend-history slot: which output packet it records and when it was last resent.
type Resent = (SeqNo, Option<Instant>);

/// Resend history and byte budget of one subscription.
#[derive(Debug)]
pub struct RetransmitLimiter {
    /// Output sequence number → when it was last resent; allocated at the first NACK (most
    /// subscriptions never need it). Indexed by the low bits, like the retransmit buffer.
    resent: Option<Box<[Resent]>>,
    capacity: usize,
    interval: Duration,
    /// Bytes that may be resent now.
    budget: usize,
    /// Cap of `budget`.
    burst: usize,
}

impl RetransmitLimiter {
    /// `capacity` packets of history (rounded up to a power of two), one resend per packet per
    /// `interval`, budget capped at `burst` bytes.
    pub fn new(capacity: usize, interval: Duration, burst: usize) -> Self {
        Self {
            resent: None,
            capacity: capacity.max(1).next_power_of_two(),
            interval,
            budget: 0,
            burst,
        }
    }

    /// `bytes` were forwarded to the subscriber: that much more may be resent.
    pub fn credit(&mut self, bytes: usize) {
        self.budget = self.budget.saturating_add(bytes).min(self.burst);
    }

    /// The cheap early answer, before the resend is built: refuses a packet resent less than
    /// an interval ago, or one of at least `bytes` the budget cannot cover. A storm of
    /// repeated sequence numbers costs one slot check each. [`admit`](Self::admit) decides.
    pub fn precheck(&self, now: Instant, seq: SeqNo, bytes: usize) -> Result<(), Refused> {
        if let Some(resent) = &self.resent {
            let slot = resent[(seq.0 as usize) & (self.capacity - 1)];
            if slot.0 == seq
                && slot
                    .1
                    .is_some_and(|at| now.saturating_duration_since(at) < self.interval)
            {
                return Err(Refused::Repeated);
            }
        }
        if bytes > self.budget {
            return Err(Refused::OverBudget);
        }
        Ok(())
    }

    /// Admits resending output packet `seq` of `bytes` now, recording it; or says why not.
    pub fn admit(&mut self, now: Instant, seq: SeqNo, bytes: usize) -> Result<(), Refused> {
        self.precheck(now, seq, bytes)?;
        let capacity = self.capacity;
        let resent = self
            .resent
            .get_or_insert_with(|| vec![(SeqNo(0), None); capacity].into_boxed_slice());
        resent[(seq.0 as usize) & (capacity - 1)] = (seq, Some(now));
        self.budget -= bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_resend_per_packet_per_interval() {
        let t0 = Instant::now();
        let mut l = RetransmitLimiter::new(8, 100 * MS, 100_000);
        l.credit(100_000);
        // (ms, seq, admitted?)
        let rows = [
            (0, 70_000, Ok(())),
            (0, 70_000, Err(Refused::Repeated)),
            (50, 70_000, Err(Refused::Repeated)),
            (50, 70_001, Ok(())),
            (100, 70_000, Ok(())),
            (100, 70_008, Ok(())), // same slot, another packet: not a repeat
            (101, 70_000, Ok(())), // its record was overwritten by 70_008
        ];
        for (ms, seq, want) in rows {
            assert_eq!(l.admit(t0 + ms * MS, SeqNo(seq), 10), want, "{ms} {seq}");
        }
    }

    #[test]
    fn budget_is_credited_by_forwarded_bytes_and_capped_by_the_burst() {
        let t0 = Instant::now();
        let mut l = RetransmitLimiter::new(1024, 100 * MS, 3000);
        assert_eq!(l.admit(t0, SeqNo(1), 1), Err(Refused::OverBudget));
        l.credit(1000);
        assert_eq!(l.admit(t0, SeqNo(1), 1000), Ok(()));
        assert_eq!(l.admit(t0, SeqNo(2), 1), Err(Refused::OverBudget));
        l.credit(1_000_000);
        let admitted = (10..100)
            .filter(|&s| l.admit(t0, SeqNo(s), 1000).is_ok())
            .count();
        assert_eq!(admitted, 3, "the burst caps what idle forwarding saves up");
    }
}
