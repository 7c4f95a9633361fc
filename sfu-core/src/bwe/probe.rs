//! Probing: to learn whether the path carries more than is being sent (before switching a
//! subscriber up a layer), the sender fills a short cluster up to a target rate with extra
//! packets; what the receiver reports about the cluster's packets is the answer. The rate the
//! cluster was received at is the path's capacity when it is below the rate it was sent at.

/// Packets a cluster must have received for its result to count.
const MIN_PACKETS: u32 = 5;
/// A cluster received this much slower than sent hit the capacity: the receive rate is it.
const SATURATED: f64 = 0.9;

/// One probe cluster being sent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProbeCluster {
    pub(crate) id: u16,
    pub(crate) bps: f64,
    pub(crate) start_us: i64,
    pub(crate) end_us: i64,
    /// Bytes recorded in the cluster so far (media and probe packets alike).
    pub(crate) sent_bytes: u64,
}

impl ProbeCluster {
    /// Bytes the cluster is behind its target rate at `now_us`.
    pub(crate) fn deficit(&self, now_us: i64) -> u64 {
        let elapsed = (now_us.min(self.end_us) - self.start_us).max(0) as f64;
        let due = self.bps / 8.0 * elapsed / 1e6;
        (due as u64).saturating_sub(self.sent_bytes)
    }
}

/// What feedback reported about one cluster's packets.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClusterFeedback {
    first_send_us: Option<i64>,
    last_send_us: i64,
    last_send_size: u64,
    first_arrival_us: Option<i64>,
    first_arrival_size: u64,
    last_arrival_us: i64,
    bytes: u64,
    received: u32,
}

impl ClusterFeedback {
    /// One received packet of the cluster.
    pub(crate) fn add(&mut self, send_us: i64, arrival_us: i64, size: u16) {
        let size = u64::from(size);
        if self.first_send_us.is_none_or(|f| send_us < f) {
            self.first_send_us = Some(send_us);
        }
        if send_us >= self.last_send_us {
            self.last_send_us = send_us;
            self.last_send_size = size;
        }
        if self.first_arrival_us.is_none_or(|f| arrival_us < f) {
            self.first_arrival_us = Some(arrival_us);
            self.first_arrival_size = size;
        }
        self.last_arrival_us = self.last_arrival_us.max(arrival_us);
        self.bytes += size;
        self.received += 1;
    }

    /// The rate the cluster shows the path carries, in bits per second; `None` if too few
    /// packets or too short a span to tell.
    pub(crate) fn result_bps(&self) -> Option<f64> {
        if self.received < MIN_PACKETS {
            return None;
        }
        let send_span = self.last_send_us - self.first_send_us?;
        let receive_span = self.last_arrival_us - self.first_arrival_us?;
        if send_span <= 0 || receive_span <= 0 {
            return None;
        }
        // The last packet sent and the first received open their intervals: not counted.
        let send_bps = (self.bytes - self.last_send_size) as f64 * 8e6 / send_span as f64;
        let receive_bps = (self.bytes - self.first_arrival_size) as f64 * 8e6 / receive_span as f64;
        Some(if receive_bps < SATURATED * send_bps {
            receive_bps
        } else {
            send_bps.min(receive_bps)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deficit_keeps_the_cluster_at_its_rate_until_it_ends() {
        let mut c = ProbeCluster {
            id: 1,
            bps: 800_000.0,
            start_us: 1_000_000,
            end_us: 1_200_000,
            sent_bytes: 0,
        };
        assert_eq!(c.deficit(1_000_000), 0);
        assert_eq!(c.deficit(1_100_000), 10_000);
        c.sent_bytes = 12_000;
        assert_eq!(c.deficit(1_100_000), 0);
        assert_eq!(c.deficit(5_000_000), 8_000, "capped at the end");
    }

    #[test]
    fn a_cluster_through_a_slower_bottleneck_reports_the_bottleneck_rate() {
        // 20 packets of 1000 bytes sent 2 ms apart (4 Mbps), received 8 ms apart (1 Mbps).
        let mut f = ClusterFeedback::default();
        for i in 0..20 {
            f.add(i * 2_000, 50_000 + i * 8_000, 1000);
        }
        assert!((f.result_bps().unwrap() - 1_000_000.0).abs() < 1.0);
        // The same cluster received as sent: the send rate.
        let mut g = ClusterFeedback::default();
        for i in 0..20 {
            g.add(i * 2_000, 50_000 + i * 2_000, 1000);
        }
        assert!((g.result_bps().unwrap() - 4_000_000.0).abs() < 1.0);
        let mut few = ClusterFeedback::default();
        for i in 0..4 {
            few.add(i * 2_000, i * 2_000, 1000);
        }
        assert_eq!(few.result_bps(), None);
    }
}
