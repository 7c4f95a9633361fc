//! Delay-based rate control: additive-increase / multiplicative-decrease driven by the overuse
//! detector (draft-ietf-rmcat-gcc-02 §5.5, libwebrtc's `AimdRateControl`). On overuse the
//! estimate drops below what the receiver measured getting through; otherwise it grows, fast
//! while far from the last known capacity and slowly near it.

use super::overuse::Usage;

/// Decrease factor: the estimate falls to this share of the acknowledged rate.
const BETA: f64 = 0.85;
/// Multiplicative growth per second far from the known capacity.
const GROWTH_PER_SECOND: f64 = 1.08;
/// The estimate never exceeds this multiple of the acknowledged rate (plus `HEADROOM_BPS`):
/// a rate never tried says nothing about the path.
const MAX_OVER_ACKED: f64 = 1.5;
const HEADROOM_BPS: f64 = 10_000.0;
/// Additive growth: about one video frame's worth of bits (at 30 fps) per response time (a
/// feedback period plus a round trip), and at least this many bits per second.
const FRAMES_PER_SECOND: f64 = 30.0;
const RESPONSE_MS: f64 = 200.0;
const MIN_ADDITIVE_BPS: f64 = 4_000.0;
/// Below this no video is worth sending; the estimate does not fall further.
pub(crate) const MIN_BPS: f64 = 30_000.0;

/// The controller's state.
#[derive(Debug)]
pub(crate) struct AimdRateControl {
    estimate_bps: f64,
    /// Running mean of the acknowledged rate at overuse (the link capacity) and its variance
    /// relative to the mean; `None` until the first overuse or after the path changed.
    capacity: Option<(f64, f64)>,
    last_update_ms: Option<f64>,
    /// Until the first decrease, the estimate also follows the acknowledged rate upward (the
    /// receiver got it without a growing queue), so a subscriber receiving more than the start
    /// estimate is not cut back while the estimator learns.
    startup: bool,
}

impl AimdRateControl {
    pub(crate) fn new(start_bps: f64) -> Self {
        Self {
            estimate_bps: start_bps,
            capacity: None,
            last_update_ms: None,
            startup: true,
        }
    }

    pub(crate) fn estimate_bps(&self) -> f64 {
        self.estimate_bps
    }

    /// A probe showed the path carries `bps`: raise the estimate to it.
    pub(crate) fn set_at_least(&mut self, bps: f64) {
        if bps > self.estimate_bps {
            self.estimate_bps = bps;
            if self.capacity.is_some_and(|(mean, _)| bps > mean) {
                self.capacity = None;
            }
        }
    }

    /// One update per feedback: the detector's verdict and the acknowledged rate.
    pub(crate) fn update(&mut self, usage: Usage, acked_bps: Option<f64>, now_ms: f64) {
        let elapsed_s = self
            .last_update_ms
            .replace(now_ms)
            .map_or(0.0, |t| ((now_ms - t) / 1000.0).clamp(0.0, 1.0));
        match usage {
            Usage::Overusing => {
                let Some(acked) = acked_bps else { return };
                let decreased = (BETA * acked).max(MIN_BPS);
                if decreased < self.estimate_bps {
                    self.estimate_bps = decreased;
                }
                self.observe_capacity(acked);
                self.startup = false;
            }
            Usage::Underusing => {} // hold: the queue drains at the current rate
            Usage::Normal => {
                let near_capacity = self.capacity.is_some_and(|(mean, var)| {
                    (self.estimate_bps - mean).abs() <= 3.0 * var.sqrt() * mean
                });
                let increased = if near_capacity {
                    let per_second = (self.estimate_bps / FRAMES_PER_SECOND * 1000.0 / RESPONSE_MS)
                        .max(MIN_ADDITIVE_BPS);
                    self.estimate_bps + per_second * elapsed_s
                } else {
                    self.estimate_bps * GROWTH_PER_SECOND.powf(elapsed_s)
                };
                if let Some(acked) = acked_bps {
                    if self
                        .capacity
                        .is_some_and(|(mean, var)| acked > mean * (1.0 + 3.0 * var.sqrt()))
                    {
                        self.capacity = None; // the path got faster: grow fast again
                    }
                    let ceiling = increase_ceiling(acked);
                    let floor = if self.startup { acked } else { 0.0 };
                    self.estimate_bps = self.estimate_bps.max(increased.min(ceiling)).max(floor);
                }
            }
        }
    }

    fn observe_capacity(&mut self, acked: f64) {
        let (mean, var) = match self.capacity {
            None => (acked, 0.01),
            Some((mean, var)) => {
                let mean = 0.95 * mean + 0.05 * acked;
                let error = (acked - mean) / mean;
                (
                    mean,
                    (0.95 * var + 0.05 * error * error).clamp(0.0004, 0.04),
                )
            }
        };
        self.capacity = Some((mean, var));
    }
}

/// The most an estimate may grow to over what the path was acknowledged to carry: an
/// application-limited sender (an SFU sends what its layers carry) must not read the absence
/// of congestion at a low rate as room for a much higher one.
pub(crate) fn increase_ceiling(acked_bps: f64) -> f64 {
    MAX_OVER_ACKED * acked_bps + HEADROOM_BPS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overuse_cuts_to_beta_of_the_acked_rate_and_normal_grows_bounded_by_it() {
        let mut c = AimdRateControl::new(1_000_000.0);
        c.update(Usage::Normal, Some(900_000.0), 0.0);
        c.update(Usage::Normal, Some(900_000.0), 1000.0);
        assert!(
            (c.estimate_bps() - 1_080_000.0).abs() < 1.0,
            "{}",
            c.estimate_bps()
        );
        c.update(Usage::Overusing, Some(800_000.0), 1100.0);
        assert_eq!(c.estimate_bps(), 680_000.0);
        // Growth never passes 1.5× what got through.
        for i in 0..100 {
            c.update(
                Usage::Normal,
                Some(400_000.0),
                1200.0 + f64::from(i) * 1000.0,
            );
        }
        assert_eq!(
            c.estimate_bps(),
            680_000.0,
            "the ceiling does not lower the estimate"
        );
        c.update(Usage::Overusing, Some(400_000.0), 200_000.0);
        assert_eq!(c.estimate_bps(), 340_000.0);
        for i in 1..100 {
            c.update(
                Usage::Normal,
                Some(300_000.0),
                200_000.0 + f64::from(i) * 1000.0,
            );
        }
        assert_eq!(c.estimate_bps(), 460_000.0);
    }

    #[test]
    fn startup_follows_the_acked_rate_upward_until_the_first_overuse() {
        let mut c = AimdRateControl::new(300_000.0);
        c.update(Usage::Normal, Some(2_000_000.0), 0.0);
        assert_eq!(c.estimate_bps(), 2_000_000.0);
        c.update(Usage::Overusing, Some(2_000_000.0), 100.0);
        assert_eq!(c.estimate_bps(), 1_700_000.0);
        c.update(Usage::Normal, Some(2_000_000.0), 100.0);
        assert_eq!(c.estimate_bps(), 1_700_000.0, "no floor after startup");
    }

    #[test]
    fn near_the_known_capacity_growth_is_additive() {
        let mut c = AimdRateControl::new(1_000_000.0);
        c.update(Usage::Overusing, Some(1_000_000.0), 0.0);
        assert_eq!(c.estimate_bps(), 850_000.0);
        c.update(Usage::Normal, Some(850_000.0), 1000.0);
        // A 30 fps frame (28.3 kbit) per 200 ms: 141.7 kbps per second, not 8 %.
        assert!(
            (c.estimate_bps() - 991_666.7).abs() < 1.0,
            "{}",
            c.estimate_bps()
        );
    }
}
