//! Overuse detection: the delay trend against an adaptive threshold (draft-ietf-rmcat-gcc-02
//! §5.4–5.5). The threshold follows the trend slowly, so a path with naturally jittery delay
//! does not read as congested, yet a sudden queue does.

/// What the delay trend says about the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Usage {
    /// Queues are not growing.
    Normal,
    /// A queue is building: send less.
    Overusing,
    /// A queue is draining: hold, it will empty.
    Underusing,
}

const INITIAL_THRESHOLD: f64 = 12.5;
const MIN_THRESHOLD: f64 = 6.0;
const MAX_THRESHOLD: f64 = 600.0;
/// Threshold adaptation speed when the trend is above it (slow) and below it (faster).
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// The trend must stay over the threshold this long before it counts.
const OVERUSE_TIME_MS: f64 = 10.0;
/// Trends this far over the threshold are spikes the threshold does not chase.
const MAX_ADAPT_OFFSET: f64 = 15.0;

/// The detector's state.
#[derive(Debug)]
pub(crate) struct OveruseDetector {
    threshold: f64,
    last_update_ms: Option<f64>,
    time_over_ms: Option<f64>,
    over_count: u32,
    previous_trend: f64,
    usage: Usage,
}

impl Default for OveruseDetector {
    fn default() -> Self {
        Self {
            threshold: INITIAL_THRESHOLD,
            last_update_ms: None,
            time_over_ms: None,
            over_count: 0,
            previous_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl OveruseDetector {
    /// Classifies `trend` (from the trendline), seen at `now_ms` for groups `send_delta_ms` apart.
    pub(crate) fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) -> Usage {
        if trend > self.threshold {
            let over = self
                .time_over_ms
                .map_or(send_delta_ms / 2.0, |t| t + send_delta_ms);
            self.time_over_ms = Some(over);
            self.over_count += 1;
            if over > OVERUSE_TIME_MS && self.over_count > 1 && trend >= self.previous_trend {
                self.time_over_ms = None;
                self.over_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if trend < -self.threshold {
            self.time_over_ms = None;
            self.over_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.time_over_ms = None;
            self.over_count = 0;
            self.usage = Usage::Normal;
        }
        self.previous_trend = trend;
        self.adapt(trend, now_ms);
        self.usage
    }

    fn adapt(&mut self, trend: f64, now_ms: f64) {
        let last = self.last_update_ms.replace(now_ms).unwrap_or(now_ms);
        let magnitude = trend.abs();
        if magnitude > self.threshold + MAX_ADAPT_OFFSET {
            return;
        }
        let k = if magnitude < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let elapsed = (now_ms - last).clamp(0.0, 100.0);
        self.threshold = (self.threshold + k * (magnitude - self.threshold) * elapsed)
            .clamp(MIN_THRESHOLD, MAX_THRESHOLD);
    }

    #[cfg(test)]
    pub(crate) fn threshold(&self) -> f64 {
        self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sustained_rising_trend_is_overuse_a_single_spike_is_not() {
        let mut d = OveruseDetector::default();
        assert_eq!(
            d.detect(20.0, 5.0, 0.0),
            Usage::Normal,
            "one sample is not enough"
        );
        assert_eq!(d.detect(5.0, 5.0, 5.0), Usage::Normal);
        let mut usage = Usage::Normal;
        for i in 0..4 {
            usage = d.detect(20.0 + f64::from(i), 5.0, 10.0 + 5.0 * f64::from(i));
        }
        assert_eq!(usage, Usage::Overusing);
        assert_eq!(d.detect(-30.0, 5.0, 40.0), Usage::Underusing);
        assert_eq!(d.detect(0.0, 5.0, 45.0), Usage::Normal);
    }

    #[test]
    fn the_threshold_adapts_toward_the_trend_within_bounds() {
        let mut d = OveruseDetector::default();
        for i in 0..1000 {
            d.detect(0.0, 5.0, f64::from(i) * 5.0);
        }
        assert_eq!(d.threshold(), MIN_THRESHOLD);
        let mut d = OveruseDetector::default();
        for i in 0..1000 {
            d.detect(d.threshold() + 10.0, 5.0, f64::from(i) * 5.0);
        }
        assert!(d.threshold() > 100.0, "{}", d.threshold());
        assert!(d.threshold() <= MAX_THRESHOLD);
    }
}
