//! The acknowledged bitrate: what the receiver reports getting, over a sliding window of its
//! arrival clock. Rate control never trusts an estimate far above it.

/// Window length and bucket width (arrival clock).
const BUCKET_US: i64 = 50_000;
const BUCKETS: usize = 10;

/// Bytes received per 50 ms bucket, the last 500 ms.
#[derive(Debug, Default)]
pub(crate) struct AckedBitrate {
    buckets: [u64; BUCKETS],
    /// Index (arrival time / bucket width) of the newest bucket.
    newest: Option<i64>,
    first_us: Option<i64>,
}

impl AckedBitrate {
    /// A packet of `size` bytes arrived at `arrival_us`.
    pub(crate) fn add(&mut self, arrival_us: i64, size: u16) {
        let index = arrival_us.div_euclid(BUCKET_US);
        self.first_us.get_or_insert(arrival_us);
        match self.newest {
            Some(newest) if index <= newest - BUCKETS as i64 => return, // too old to count
            Some(newest) if index > newest => {
                for i in (newest + 1)..=index.min(newest + BUCKETS as i64) {
                    self.buckets[i.rem_euclid(BUCKETS as i64) as usize] = 0;
                }
                self.newest = Some(index);
            }
            Some(_) => {}
            None => self.newest = Some(index),
        }
        self.buckets[index.rem_euclid(BUCKETS as i64) as usize] += u64::from(size);
    }

    /// Bits per second over the window (or since the first packet, if shorter); `None` before
    /// 100 ms of arrivals.
    pub(crate) fn bps(&self) -> Option<f64> {
        let (newest, first) = (self.newest?, self.first_us?);
        let span_us = ((newest + 1) * BUCKET_US - first).min(BUCKET_US * BUCKETS as i64);
        (span_us >= 2 * BUCKET_US)
            .then(|| self.buckets.iter().sum::<u64>() as f64 * 8.0 * 1e6 / span_us as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_last_half_second_of_arrivals() {
        let mut a = AckedBitrate::default();
        assert_eq!(a.bps(), None);
        // 1000 bytes every 10 ms: 800 kbps.
        for i in 0..100 {
            a.add(i * 10_000, 1000);
        }
        assert!((a.bps().unwrap() - 800_000.0).abs() < 1.0, "{:?}", a.bps());
        // Then 250 bytes every 10 ms for a full window: 200 kbps, the old rate forgotten.
        for i in 100..160 {
            a.add(i * 10_000, 250);
        }
        assert!((a.bps().unwrap() - 200_000.0).abs() < 1.0, "{:?}", a.bps());
        // A late report of a long-gone packet changes nothing.
        a.add(0, 60_000);
        assert!((a.bps().unwrap() - 200_000.0).abs() < 1.0);
    }
}
