//! Delay gradient: packets are grouped into send bursts, consecutive groups' arrival spacing
//! is compared with their send spacing, and the accumulated delay's slope over a window of
//! groups tells whether a queue is building (positive) or draining (negative). The idea of
//! GCC's trendline filter (draft-ietf-rmcat-gcc-02 §5.3, libwebrtc's `TrendlineEstimator`).

use std::collections::VecDeque;

/// Packets sent within this of a group's first belong to that group (one pacing burst).
const BURST_US: i64 = 5_000;
/// Groups in the regression window.
const WINDOW: usize = 20;
/// Exponential smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// Scales the slope into the detector's units (ms of delay growth over the window).
const GAIN: f64 = 4.0;
/// The slope is weighed by the deltas seen, up to this many.
const MAX_DELTAS: u32 = 60;

#[derive(Clone, Copy, Debug)]
struct Group {
    first_send_us: i64,
    last_send_us: i64,
    last_arrival_us: i64,
}

/// The spacing of one group against the previous one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GroupDelta {
    pub(crate) send_ms: f64,
    pub(crate) arrival_ms: f64,
    /// When the later group's last packet arrived (receiver clock, µs).
    pub(crate) arrival_us: i64,
}

/// Turns packets (in send order) into group deltas.
#[derive(Debug, Default)]
pub(crate) struct InterArrival {
    previous: Option<Group>,
    current: Option<Group>,
}

impl InterArrival {
    /// Adds one received packet; returns the delta when it closes a group.
    pub(crate) fn add(&mut self, send_us: i64, arrival_us: i64) -> Option<GroupDelta> {
        let Some(current) = &mut self.current else {
            self.current = Some(Group {
                first_send_us: send_us,
                last_send_us: send_us,
                last_arrival_us: arrival_us,
            });
            return None;
        };
        if send_us < current.first_send_us {
            return None; // reordered behind its group: says nothing about queueing
        }
        if send_us - current.first_send_us <= BURST_US {
            current.last_send_us = current.last_send_us.max(send_us);
            current.last_arrival_us = current.last_arrival_us.max(arrival_us);
            return None;
        }
        let closed = *current;
        *current = Group {
            first_send_us: send_us,
            last_send_us: send_us,
            last_arrival_us: arrival_us,
        };
        let delta = self.previous.map(|p| GroupDelta {
            send_ms: (closed.last_send_us - p.last_send_us) as f64 / 1000.0,
            arrival_ms: (closed.last_arrival_us - p.last_arrival_us) as f64 / 1000.0,
            arrival_us: closed.last_arrival_us,
        });
        self.previous = Some(closed);
        delta
    }
}

/// The trendline filter: a least-squares slope of smoothed accumulated delay over arrival time.
#[derive(Debug)]
pub(crate) struct Trendline {
    window: VecDeque<(f64, f64)>,
    first_arrival_us: Option<i64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    deltas: u32,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            window: VecDeque::with_capacity(WINDOW),
            first_arrival_us: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            deltas: 0,
        }
    }
}

impl Trendline {
    /// Adds a group delta; returns the modified trend the overuse detector compares against
    /// its threshold (0 until the window is full).
    pub(crate) fn update(&mut self, delta: GroupDelta) -> f64 {
        let first = *self.first_arrival_us.get_or_insert(delta.arrival_us);
        self.deltas = (self.deltas + 1).min(MAX_DELTAS);
        self.accumulated_ms += delta.arrival_ms - delta.send_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        let x = (delta.arrival_us - first) as f64 / 1000.0;
        self.window.push_back((x, self.smoothed_ms));
        if self.window.len() < WINDOW {
            return 0.0;
        }
        slope(&self.window).map_or(0.0, |s| f64::from(self.deltas) * s * GAIN)
    }
}

/// Least-squares slope of `points`; `None` when they share one x.
pub(crate) fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_vertical_set() {
        let line: VecDeque<_> = (0..10)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 1.0))
            .collect();
        assert!((slope(&line).unwrap() - 3.0).abs() < 1e-9);
        let flat: VecDeque<_> = (0..10).map(|i| (f64::from(i), 5.0)).collect();
        assert_eq!(slope(&flat), Some(0.0));
        let vertical: VecDeque<_> = (0..3).map(|i| (1.0, f64::from(i))).collect();
        assert_eq!(slope(&vertical), None);
    }

    #[test]
    fn packets_within_a_burst_form_one_group() {
        let mut ia = InterArrival::default();
        // Groups at send 0, 10, 20 ms (two packets each, 1 ms apart); arrivals +50 ms, the
        // second group 2 ms late.
        let packets = [
            (0, 50),
            (1, 51),
            (10, 62),
            (11, 63),
            (20, 71),
            (21, 72),
            (30, 80),
        ];
        let deltas: Vec<_> = packets
            .iter()
            .filter_map(|&(s, a)| ia.add(s * 1000, a * 1000))
            .collect();
        assert_eq!(
            deltas,
            [
                GroupDelta {
                    send_ms: 10.0,
                    arrival_ms: 12.0,
                    arrival_us: 63_000
                },
                GroupDelta {
                    send_ms: 10.0,
                    arrival_ms: 9.0,
                    arrival_us: 72_000
                },
            ]
        );
        // A packet sent before the current group is ignored.
        assert_eq!(ia.add(5_000, 90_000), None);
    }

    #[test]
    fn the_trend_is_positive_while_a_queue_builds_and_about_zero_on_a_steady_path() {
        let mut steady = Trendline::default();
        let mut growing = Trendline::default();
        let (mut t_steady, mut t_growing) = (0.0, 0.0);
        for i in 0..100i64 {
            let send = i * 10_000;
            t_steady = steady.update(GroupDelta {
                send_ms: 10.0,
                arrival_ms: 10.0,
                arrival_us: send + 40_000,
            });
            // Each group arrives 1 ms later than it was sent apart: a queue growing 10 %.
            t_growing = growing.update(GroupDelta {
                send_ms: 10.0,
                arrival_ms: 11.0,
                arrival_us: send * 11 / 10 + 40_000,
            });
        }
        assert!(t_steady.abs() < 0.01, "{t_steady}");
        assert!(t_growing > 12.5, "{t_growing}");
    }
}
