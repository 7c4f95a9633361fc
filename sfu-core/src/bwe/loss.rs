//! Loss-based control (draft-ietf-rmcat-gcc-02 §6): a path that loses more than 10 % of what is
//! sent is over capacity whatever the delay says (a shallow or policed queue), so the estimate
//! falls in proportion; under 2 % it may recover toward the delay-based estimate, but no further
//! than what the path was acknowledged to carry allows.

use super::rate_control::increase_ceiling;

/// Loss at or above which the bound decreases.
const HIGH_LOSS: f64 = 0.10;
/// Loss under which the bound recovers.
const LOW_LOSS: f64 = 0.02;
/// Recovery per update.
const RECOVERY: f64 = 1.05;
/// Losses are judged over at least this many packets.
const MIN_PACKETS: u32 = 20;
/// At most one decrease per this long (about a round trip plus the feedback period): the
/// losses right after a decrease were caused before it.
const DECREASE_INTERVAL_MS: f64 = 1000.0;

/// The loss-based bound.
#[derive(Debug, Default)]
pub(crate) struct LossController {
    /// `None`: no bound (losses have not limited the rate, or it recovered fully).
    bound_bps: Option<f64>,
    sent: u32,
    lost: u32,
    last_decrease_ms: Option<f64>,
    last_loss: f64,
}

impl LossController {
    /// The bound, if losses currently limit the rate.
    pub(crate) fn bound_bps(&self) -> Option<f64> {
        self.bound_bps
    }

    /// The loss fraction of the latest judged batch.
    pub(crate) fn last_loss(&self) -> f64 {
        self.last_loss
    }

    /// Accounts one feedback's packets; `current_bps` is the estimate in force, `delay_bps` the
    /// delay-based one (the ceiling of recovery), `acked_bps` what the path was acknowledged to
    /// carry lately (recovery grows no further than [`increase_ceiling`] of it).
    pub(crate) fn update(
        &mut self,
        sent: u32,
        lost: u32,
        current_bps: f64,
        delay_bps: f64,
        acked_bps: Option<f64>,
        now_ms: f64,
    ) {
        self.sent += sent;
        self.lost += lost;
        if self.sent < MIN_PACKETS {
            return;
        }
        let loss = f64::from(self.lost) / f64::from(self.sent);
        self.last_loss = loss;
        (self.sent, self.lost) = (0, 0);
        if loss >= HIGH_LOSS {
            if self
                .last_decrease_ms
                .is_some_and(|at| now_ms - at < DECREASE_INTERVAL_MS)
            {
                return;
            }
            self.last_decrease_ms = Some(now_ms);
            self.bound_bps =
                Some((current_bps * (1.0 - 0.5 * loss)).max(super::rate_control::MIN_BPS));
        } else if loss < LOW_LOSS {
            // A full drop-tail queue or a policer loses packets without a growing delay, so the
            // delay-based estimate may never have come down: without the ceiling, a sender now
            // below the capacity would recover its bound to that stale estimate and step
            // straight back into loss. More than the ceiling is for a probe to show.
            let ceiling = acked_bps.map_or(f64::INFINITY, increase_ceiling);
            self.bound_bps = self
                .bound_bps
                .map(|b| (b * RECOVERY).min(ceiling.max(b)))
                .filter(|&b| b < delay_bps);
        }
    }

    /// A probe proved `bps` gets through: the bound rises to it.
    pub(crate) fn set_at_least(&mut self, bps: f64) {
        if let Some(b) = &mut self.bound_bps {
            *b = b.max(bps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_loss_decreases_once_per_interval_low_loss_recovers_to_the_delay_estimate() {
        let mut l = LossController::default();
        l.update(10, 5, 1_000_000.0, 1_000_000.0, None, 0.0);
        assert_eq!(l.bound_bps(), None, "fewer than 20 packets are not judged");
        l.update(10, 1, 1_000_000.0, 1_000_000.0, None, 10.0);
        // 6 of 20 lost: 30 % → × 0.85.
        assert_eq!(l.bound_bps(), Some(850_000.0));
        l.update(20, 10, 850_000.0, 1_000_000.0, None, 100.0);
        assert_eq!(
            l.bound_bps(),
            Some(850_000.0),
            "too soon after the last decrease"
        );
        l.update(20, 1, 850_000.0, 1_000_000.0, None, 200.0);
        assert_eq!(l.bound_bps(), Some(850_000.0), "5 % holds");
        for i in 0..3 {
            l.update(
                20,
                0,
                850_000.0,
                1_000_000.0,
                None,
                300.0 + f64::from(i) * 100.0,
            );
        }
        assert!((l.bound_bps().unwrap() - 850_000.0 * 1.05f64.powi(3)).abs() < 1.0);
        for i in 0..3 {
            l.update(
                20,
                0,
                850_000.0,
                1_000_000.0,
                None,
                600.0 + f64::from(i) * 100.0,
            );
        }
        assert_eq!(l.bound_bps(), None, "recovered to the delay-based estimate");
    }

    #[test]
    fn recovery_grows_no_further_than_the_acknowledged_rate_allows() {
        let mut l = LossController::default();
        l.update(20, 10, 1_000_000.0, 1_000_000.0, Some(480_000.0), 0.0);
        assert_eq!(l.bound_bps(), Some(750_000.0));
        // Acknowledged 300 k: the ceiling (1.5 x + 10 k = 460 k) is under the bound, which holds.
        for i in 1..=20 {
            l.update(
                20,
                0,
                750_000.0,
                1_000_000.0,
                Some(300_000.0),
                f64::from(i) * 100.0,
            );
        }
        assert_eq!(l.bound_bps(), Some(750_000.0));
        // Acknowledged 520 k: recovery stops at its ceiling, 790 k, under the delay estimate.
        for i in 21..=40 {
            l.update(
                20,
                0,
                750_000.0,
                1_000_000.0,
                Some(520_000.0),
                f64::from(i) * 100.0,
            );
        }
        assert_eq!(l.bound_bps(), Some(790_000.0));
        // Unknown acknowledged rate: recovery as before, up to the delay-based estimate.
        for i in 41..=50 {
            l.update(20, 0, 790_000.0, 1_000_000.0, None, f64::from(i) * 100.0);
        }
        assert_eq!(l.bound_bps(), None);
    }
}
