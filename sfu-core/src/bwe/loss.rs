//! Loss-based control (draft-ietf-rmcat-gcc-02 §6): a path that loses more than 10 % of what is
//! sent is over capacity whatever the delay says (a shallow or policed queue), so the estimate
//! falls in proportion; under 2 % it may recover toward the delay-based estimate.

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
    /// delay-based one (the ceiling of recovery).
    pub(crate) fn update(
        &mut self,
        sent: u32,
        lost: u32,
        current_bps: f64,
        delay_bps: f64,
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
            self.bound_bps = self
                .bound_bps
                .map(|b| b * RECOVERY)
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
        l.update(10, 5, 1_000_000.0, 1_000_000.0, 0.0);
        assert_eq!(l.bound_bps(), None, "fewer than 20 packets are not judged");
        l.update(10, 1, 1_000_000.0, 1_000_000.0, 10.0);
        // 6 of 20 lost: 30 % → × 0.85.
        assert_eq!(l.bound_bps(), Some(850_000.0));
        l.update(20, 10, 850_000.0, 1_000_000.0, 100.0);
        assert_eq!(
            l.bound_bps(),
            Some(850_000.0),
            "too soon after the last decrease"
        );
        l.update(20, 1, 850_000.0, 1_000_000.0, 200.0);
        assert_eq!(l.bound_bps(), Some(850_000.0), "5 % holds");
        for i in 0..3 {
            l.update(20, 0, 850_000.0, 1_000_000.0, 300.0 + f64::from(i) * 100.0);
        }
        assert!((l.bound_bps().unwrap() - 850_000.0 * 1.05f64.powi(3)).abs() < 1.0);
        for i in 0..3 {
            l.update(20, 0, 850_000.0, 1_000_000.0, 600.0 + f64::from(i) * 100.0);
        }
        assert_eq!(l.bound_bps(), None, "recovered to the delay-based estimate");
    }
}
