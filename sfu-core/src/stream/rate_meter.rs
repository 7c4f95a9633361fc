//! The bitrate of a stream as received: bytes counted per packet, turned into a smoothed rate
//! when the worker's layer check asks (a few times per second), not per packet.

use std::time::Instant;

/// Weight of the newest interval in the smoothed rate.
const NEWEST_WEIGHT: f64 = 0.5;

/// Received bytes and the smoothed rate they make.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateMeter {
    bytes: u64,
    since: Option<Instant>,
    bps: u64,
}

impl RateMeter {
    /// Counts one packet of `len` bytes.
    pub fn add(&mut self, len: usize) {
        self.bytes += len as u64;
    }

    /// Ends the current interval at `now`: the rate over it joins the smoothed rate.
    pub fn conclude(&mut self, now: Instant) {
        let Some(since) = self.since.replace(now) else {
            self.bytes = 0;
            return;
        };
        let elapsed = now.saturating_duration_since(since).as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        let newest = self.bytes as f64 * 8.0 / elapsed;
        self.bytes = 0;
        self.bps = (NEWEST_WEIGHT * newest + (1.0 - NEWEST_WEIGHT) * self.bps as f64) as u64;
    }

    /// The smoothed rate in bits per second.
    pub fn bps(&self) -> u64 {
        self.bps
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn smooths_the_rate_of_successive_intervals() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        m.add(999);
        m.conclude(t0);
        assert_eq!(m.bps(), 0, "the first call only starts an interval");
        m.add(25_000); // 800 kbps over 250 ms
        m.conclude(t0 + Duration::from_millis(250));
        assert_eq!(m.bps(), 400_000);
        m.add(25_000);
        m.conclude(t0 + Duration::from_millis(500));
        assert_eq!(m.bps(), 600_000);
        m.conclude(t0 + Duration::from_millis(750));
        assert_eq!(m.bps(), 300_000, "silence halves it");
    }
}
