//! Ingress loss detection (mediasoup's `NackGenerator`): gaps in a publisher's sequence numbers
//! become NACKs upstream, sent at once and retried until the packet arrives or the retry
//! budget runs out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::SeqNo;

/// More missing packets than this at once means NACK cannot help; ask for a keyframe instead.
const MAX_MISSING: usize = 1000;
/// Give up on a packet after this many NACKs (libwebrtc uses 10).
const MAX_RETRIES: u8 = 10;

/// What one received packet meant for loss recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackOutcome {
    /// Nothing new is missing.
    Nothing,
    /// A gap opened: NACKs are due now.
    Gap,
    /// So much is missing that only a keyframe will do; the missing list was cleared.
    KeyframeNeeded,
}

#[derive(Clone, Copy, Debug)]
struct Missing {
    retries: u8,
    next_at: Instant,
}

/// Missing sequence numbers of one publisher stream.
#[derive(Debug)]
pub struct NackGenerator {
    retry_interval: Duration,
    highest: Option<SeqNo>,
    missing: BTreeMap<SeqNo, Missing>,
    given_up: u64,
}

impl NackGenerator {
    /// Retries a NACK every `retry_interval` (about one RTT).
    pub fn new(retry_interval: Duration) -> Self {
        Self {
            retry_interval,
            highest: None,
            missing: BTreeMap::new(),
            given_up: 0,
        }
    }

    /// Accounts one received (extended) sequence number.
    pub fn receive(&mut self, now: Instant, seq: SeqNo) -> NackOutcome {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return NackOutcome::Nothing;
        };
        if seq <= highest {
            // Late or recovered packet.
            self.missing.remove(&seq);
            return NackOutcome::Nothing;
        }
        self.highest = Some(seq);
        let gap = seq.0 - highest.0 - 1;
        if gap == 0 {
            return NackOutcome::Nothing;
        }
        if gap as usize + self.missing.len() > MAX_MISSING {
            self.missing.clear();
            return NackOutcome::KeyframeNeeded;
        }
        for lost in highest.0 + 1..seq.0 {
            self.missing.insert(
                SeqNo(lost),
                Missing {
                    retries: 0,
                    next_at: now,
                },
            );
        }
        NackOutcome::Gap
    }

    /// The stream restarted: old gaps are meaningless.
    pub fn reset(&mut self) {
        self.highest = None;
        self.missing.clear();
    }

    /// Appends the sequence numbers due for a NACK now (ascending) and schedules their retry;
    /// packets out of retries are dropped from the list.
    pub fn due(&mut self, now: Instant, out: &mut Vec<SeqNo>) {
        let interval = self.retry_interval;
        let given_up = &mut self.given_up;
        self.missing.retain(|&seq, m| {
            if m.next_at > now {
                return true;
            }
            if m.retries >= MAX_RETRIES {
                *given_up += 1;
                return false;
            }
            m.retries += 1;
            m.next_at = now + interval;
            out.push(seq);
            true
        });
    }

    /// When the next retry is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.missing.values().map(|m| m.next_at).min()
    }

    /// Number of packets currently missing.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// Packets abandoned after `MAX_RETRIES` NACKs.
    pub fn given_up(&self) -> u64 {
        self.given_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_is_nacked_at_once_then_retried_until_recovered() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut n = NackGenerator::new(ms(100));
        let mut out = Vec::new();
        assert_eq!(n.receive(t0, SeqNo(10)), NackOutcome::Nothing);
        assert_eq!(n.receive(t0, SeqNo(13)), NackOutcome::Gap);
        n.due(t0, &mut out);
        assert_eq!(out, vec![SeqNo(11), SeqNo(12)]);
        out.clear();
        n.due(t0 + ms(50), &mut out);
        assert!(out.is_empty(), "not yet time to retry");
        assert_eq!(n.receive(t0 + ms(60), SeqNo(11)), NackOutcome::Nothing);
        n.due(t0 + ms(100), &mut out);
        assert_eq!(out, vec![SeqNo(12)]);
    }

    #[test]
    fn retries_are_bounded() {
        let t0 = Instant::now();
        let mut n = NackGenerator::new(Duration::from_millis(10));
        n.receive(t0, SeqNo(1));
        n.receive(t0, SeqNo(3));
        let mut sent = 0;
        for i in 0..100 {
            let mut out = Vec::new();
            n.due(t0 + Duration::from_millis(i * 10), &mut out);
            sent += out.len();
        }
        assert_eq!(sent, usize::from(MAX_RETRIES));
        assert_eq!((n.missing(), n.given_up()), (0, 1));
    }

    #[test]
    fn huge_gap_asks_for_keyframe() {
        let t0 = Instant::now();
        let mut n = NackGenerator::new(Duration::from_millis(10));
        n.receive(t0, SeqNo(1));
        assert_eq!(n.receive(t0, SeqNo(2000)), NackOutcome::KeyframeNeeded);
        assert_eq!(n.missing(), 0);
    }
}
