//! Dividing one subscriber's downlink estimate among its subscriptions: audio first, then every
//! video its lowest layer, then upgrades one layer at a time, round robin, within each
//! subscription's wish. A layer above what is forwarded now must fit with a margin, so the
//! choice does not flap when a layer's rate sits near the estimate.

/// An upgrade (or a resume) must fit this multiple of the layer's rate; a layer already
/// forwarded only needs to fit its rate.
pub(crate) const UPGRADE_MARGIN: f64 = 1.15;
/// A video forwarding its lowest layer is paused only when the budget is below this share of
/// that layer's rate: pausing is the last resort, and one overuse reading (an estimate cut to
/// 0.85 × what got through) must not stop a single-layer video.
pub(crate) const KEEP_LOWEST_SHARE: f64 = 0.5;

/// One video subscription's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VideoDemand {
    /// Measured bitrate per layer, `None` for a layer not flowing.
    pub(crate) rates: [Option<u64>; 3],
    /// The highest layer the subscriber wants.
    pub(crate) wanted: u8,
    /// The layer forwarded now, if any.
    pub(crate) current: Option<u8>,
}

/// What the allocation decided for one video subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Allotted {
    /// Forward this layer.
    Layer(u8),
    /// Not even the lowest allowed layer fits: forward nothing.
    Paused,
    /// No layer flows: nothing to decide.
    Idle,
}

impl VideoDemand {
    /// The layers the wish allows, lowest first: the flowing ones up to `wanted`, or (when none
    /// flows there) the lowest flowing above it.
    fn allowed(&self) -> impl Iterator<Item = u8> + '_ {
        let below = (0..=self.wanted).filter(|&l| self.rate(l).is_some());
        let above = (self.wanted + 1..3).find(|&l| self.rate(l).is_some());
        let any_below = (0..=self.wanted).any(|l| self.rate(l).is_some());
        below.chain(above.filter(|_| !any_below))
    }

    /// The lowest layer the wish allows (`None`: no layer flows).
    pub(crate) fn lowest_allowed(&self) -> Option<u8> {
        self.allowed().next()
    }

    fn rate(&self, layer: u8) -> Option<u64> {
        self.rates.get(usize::from(layer)).copied().flatten()
    }

    /// What `layer` must fit: its rate, with the margin if it is not the layer forwarded now.
    fn cost(&self, layer: u8) -> u64 {
        let rate = self.rate(layer).unwrap_or(0);
        if self.current == Some(layer) {
            rate
        } else {
            (rate as f64 * UPGRADE_MARGIN) as u64
        }
    }
}

/// Allocates `budget` (bits per second, after audio) among `videos`, writing one [`Allotted`]
/// per video into `out`. Returns the budget the first upgrade or resume that did not fit would
/// have needed in all (the target of a probe), if any.
pub(crate) fn allocate(
    budget: u64,
    videos: &[VideoDemand],
    out: &mut Vec<Allotted>,
) -> Option<u64> {
    out.clear();
    let mut left = budget;
    let mut blocked: Option<u64> = None;
    let mut note_blocked = |need: u64, left: u64| {
        let total = budget - left + need;
        blocked = Some(blocked.map_or(total, |b| b.min(total)));
    };
    for video in videos {
        let Some(lowest) = video.allowed().next() else {
            out.push(Allotted::Idle);
            continue;
        };
        let rate = video.rate(lowest).unwrap_or(0);
        let need = if video.current == Some(lowest) {
            (rate as f64 * KEEP_LOWEST_SHARE) as u64
        } else {
            video.cost(lowest)
        };
        if need <= left {
            left = left.saturating_sub(rate);
            out.push(Allotted::Layer(lowest));
        } else {
            note_blocked(need, left);
            out.push(Allotted::Paused);
        }
    }
    loop {
        let mut upgraded = false;
        for (video, allotted) in videos.iter().zip(out.iter_mut()) {
            let Allotted::Layer(layer) = *allotted else {
                continue;
            };
            let Some(next) = video.allowed().find(|&l| l > layer) else {
                continue;
            };
            let now = video.rate(layer).unwrap_or(0);
            let extra = video.cost(next).saturating_sub(now);
            if extra <= left {
                left -= video.rate(next).unwrap_or(0).saturating_sub(now);
                *allotted = Allotted::Layer(next);
                upgraded = true;
            } else {
                note_blocked(extra, left);
            }
        }
        if !upgraded {
            break;
        }
    }
    blocked
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1000;
    const LAYERS: [Option<u64>; 3] = [Some(150 * K), Some(500 * K), Some(1500 * K)];

    fn video(wanted: u8, current: Option<u8>) -> VideoDemand {
        VideoDemand {
            rates: LAYERS,
            wanted,
            current,
        }
    }

    fn run(budget: u64, videos: &[VideoDemand]) -> (Vec<Allotted>, Option<u64>) {
        let mut out = vec![];
        let blocked = allocate(budget, videos, &mut out);
        (out, blocked)
    }

    #[test]
    fn the_highest_layer_within_the_budget_and_the_wish() {
        use Allotted::*;
        let rows: &[(u64, u8, Option<u8>, Allotted)] = &[
            (3000 * K, 2, Some(2), Layer(2)),
            (3000 * K, 1, Some(1), Layer(1)),
            (1000 * K, 2, Some(2), Layer(1)),
            (1500 * K, 2, Some(2), Layer(2)),
            // An upgrade needs the margin: 1.5 Mbps fits f only while f is forwarded.
            (1500 * K, 2, Some(1), Layer(1)),
            (1725 * K, 2, Some(1), Layer(2)),
            (200 * K, 2, Some(0), Layer(0)),
            // The lowest layer being forwarded is kept down to half its rate.
            (100 * K, 2, Some(0), Layer(0)),
            (70 * K, 2, Some(0), Paused),
            // Resuming a paused video needs the margin too.
            (160 * K, 2, None, Paused),
            (173 * K, 2, None, Layer(0)),
        ];
        for &(budget, wanted, current, expected) in rows {
            let (out, _) = run(budget, &[video(wanted, current)]);
            assert_eq!(out, [expected], "{budget} {wanted} {current:?}");
        }
    }

    #[test]
    fn every_video_gets_its_lowest_layer_before_any_is_upgraded() {
        use Allotted::*;
        let videos = [video(2, Some(2)), video(2, Some(2)), video(2, Some(2))];
        // 3 × 150 k fits, then one upgrade to h (+350 k), the second does not fit.
        let (out, blocked) = run(900 * K, &videos);
        assert_eq!(out, [Layer(1), Layer(0), Layer(0)]);
        // The first blocked step: the second video's h (575 k with margin) on top of 800 k used.
        assert_eq!(blocked, Some(800 * K + 575 * K - 150 * K));
    }

    #[test]
    fn only_flowing_layers_count_and_a_wish_below_them_takes_the_lowest_above() {
        use Allotted::*;
        let top_only = VideoDemand {
            rates: [None, None, Some(1500 * K)],
            wanted: 0,
            current: Some(2),
        };
        assert_eq!(run(2000 * K, &[top_only]).0, [Layer(2)]);
        assert_eq!(
            run(1000 * K, &[top_only]).0,
            [Layer(2)],
            "kept down to half"
        );
        assert_eq!(run(700 * K, &[top_only]).0, [Paused]);
        let gap = VideoDemand {
            rates: [Some(150 * K), None, Some(1500 * K)],
            wanted: 2,
            current: Some(0),
        };
        assert_eq!(run(1000 * K, &[gap]).0, [Layer(0)]);
        let idle = VideoDemand {
            rates: [None; 3],
            wanted: 2,
            current: None,
        };
        assert_eq!(run(0, &[idle]), (vec![Idle], None));
    }

    #[test]
    fn nothing_blocked_when_everything_wanted_fits() {
        let (_, blocked) = run(5000 * K, &[video(2, Some(2)), video(1, Some(1))]);
        assert_eq!(blocked, None);
    }
}
