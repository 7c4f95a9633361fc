//! A bottleneck link model: a drop-tail queue in front of a fixed-capacity link, plus a
//! propagation delay. Time is an input (virtual in simulations, `Instant::now()` in a relay), so
//! the same model shapes a simulated subscriber and a real UDP one.

use std::time::{Duration, Instant};

/// One direction of a path with limited capacity.
#[derive(Clone, Debug)]
pub struct Bottleneck {
    /// Link rate in bits per second.
    pub capacity_bps: u64,
    /// Most bytes the queue holds; a packet that does not fit is dropped.
    pub queue_bytes: usize,
    /// Delay added after the packet leaves the queue.
    pub propagation: Duration,
    /// When the link finishes sending what is queued.
    busy_until: Option<Instant>,
    /// Packets offered and dropped.
    pub offered: u64,
    /// Packets dropped because the queue was full.
    pub dropped: u64,
}

impl Bottleneck {
    /// A link of `capacity_bps` with a queue of `queue` at that rate and `propagation` delay.
    pub fn new(capacity_bps: u64, queue: Duration, propagation: Duration) -> Self {
        Self {
            capacity_bps,
            queue_bytes: (capacity_bps as f64 / 8.0 * queue.as_secs_f64()) as usize,
            propagation,
            busy_until: None,
            offered: 0,
            dropped: 0,
        }
    }

    /// Changes the capacity (the queue keeps its byte size).
    pub fn set_capacity(&mut self, capacity_bps: u64) {
        self.capacity_bps = capacity_bps;
    }

    /// Offers a packet of `size` bytes at `now`: when it arrives at the far end, or `None` if
    /// the queue is full.
    pub fn send(&mut self, now: Instant, size: usize) -> Option<Instant> {
        self.offered += 1;
        let start = self.busy_until.filter(|&b| b > now).unwrap_or(now);
        let queued =
            start.saturating_duration_since(now).as_secs_f64() * self.capacity_bps as f64 / 8.0;
        if queued + size as f64 > self.queue_bytes as f64 {
            self.dropped += 1;
            return None;
        }
        let done = start + Duration::from_secs_f64(size as f64 * 8.0 / self.capacity_bps as f64);
        self.busy_until = Some(done);
        Some(done + self.propagation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_at_capacity_and_drops_when_the_queue_is_full() {
        let t0 = Instant::now();
        // 1 Mbps, 10 ms of queue (1250 bytes), 20 ms propagation.
        let mut link = Bottleneck::new(
            1_000_000,
            Duration::from_millis(10),
            Duration::from_millis(20),
        );
        // 1000 bytes take 8 ms.
        assert_eq!(link.send(t0, 1000), Some(t0 + Duration::from_millis(28)));
        assert_eq!(link.send(t0, 1000), None, "1000 queued + 1000 > 1250");
        assert_eq!(link.send(t0, 200), Some(t0 + Duration::from_micros(29_600)));
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            link.send(later, 1000),
            Some(later + Duration::from_millis(28))
        );
        assert_eq!((link.offered, link.dropped), (4, 1));
    }
}
