//! Dynacast: which simulcast layers of a track anyone consumes, so the publisher can stop
//! encoding the others. Each subscription consumes the layer it forwards now and the layer it
//! wants next (its wish, or what its downlink estimate allows of it); a track's set is the union
//! over its subscriptions, always with the lowest layer (kept flowing: a joiner's first picture
//! and a starved subscriber's resume need no round trip to the publisher).
//!
//! Announcements are debounced per track ([`Announcer`]): a layer becoming needed is announced
//! at once (its subscriber waits for it), a layer no longer needed at most once per interval.

use std::time::{Duration, Instant};

use crate::subscription::LayerSelector;

/// A set of simulcast layers (0 = lowest), as a bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LayerSet(u8);

impl LayerSet {
    /// No layer.
    pub const EMPTY: Self = Self(0);

    /// The lowest `count` layers.
    pub fn lowest(count: usize) -> Self {
        Self(((1u16 << count.min(8)) - 1) as u8)
    }

    /// This set with `layer` in it (layers past 7 are ignored).
    #[must_use]
    pub fn with(self, layer: u8) -> Self {
        if layer < 8 {
            Self(self.0 | (1 << layer))
        } else {
            self
        }
    }

    /// Whether `layer` is in the set.
    pub fn contains(self, layer: u8) -> bool {
        layer < 8 && self.0 & (1 << layer) != 0
    }

    /// The layers in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..8).filter(move |&l| self.contains(l))
    }

    /// Whether every layer of `other` is in this set.
    pub fn covers(self, other: Self) -> bool {
        other.0 & !self.0 == 0
    }

    /// The union of both sets.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// The layers one subscription consumes: none while paused (by its subscriber or for its
/// downlink); otherwise the layer forwarded now (until a switch away from it completes) and
/// the layer it should get next: `demand` (what its downlink estimate allows within the wish,
/// judged with the last known rates of layers not flowing) when the estimate decides, else
/// the wish itself — a wished layer the publisher stopped is asked back, not substituted.
pub(crate) fn consumed_by(layers: &LayerSelector, demand: Option<u8>) -> LayerSet {
    if layers.paused || layers.starved {
        return LayerSet::EMPTY;
    }
    let next = demand.map_or(layers.wanted, |d| d.min(layers.wanted));
    let set = LayerSet::EMPTY.with(next);
    layers.current.map_or(set, |current| set.with(current))
}

/// Debounces one track's announcements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Announcer {
    /// What the publisher was last told (at publish: every layer, as it starts sending).
    announced: LayerSet,
    /// When: a removal waits until the interval has passed since.
    at: Instant,
}

impl Announcer {
    /// A track publishing `layers` encodings at `now`.
    pub(crate) fn new(now: Instant, layers: usize) -> Self {
        Self {
            announced: LayerSet::lowest(layers),
            at: now,
        }
    }

    /// The set last announced (every layer until the first announcement).
    pub(crate) fn announced(&self) -> LayerSet {
        self.announced
    }

    /// The set to announce now that `consumed` is consumed, if any: at once when it adds a
    /// layer, a removal only `interval` after the previous announcement (a subscriber
    /// switching back and forth costs the publisher at most one stop per interval).
    pub(crate) fn update(
        &mut self,
        now: Instant,
        consumed: LayerSet,
        interval: Duration,
    ) -> Option<LayerSet> {
        if consumed == self.announced {
            return None;
        }
        let adds = !self.announced.covers(consumed);
        if !adds && now.saturating_duration_since(self.at) < interval {
            return None;
        }
        self.announced = consumed;
        self.at = now;
        Some(consumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(wanted: u8, current: Option<u8>) -> LayerSelector {
        LayerSelector {
            wanted,
            target: wanted,
            current,
            needs_keyframe: true,
            paused: false,
            bwe_layer: None,
            demand: None,
            starved: false,
        }
    }

    fn set(layers: &[u8]) -> LayerSet {
        layers.iter().fold(LayerSet::EMPTY, |s, &l| s.with(l))
    }

    #[test]
    fn layer_sets_hold_layers_by_bit() {
        assert_eq!(LayerSet::lowest(3), set(&[0, 1, 2]));
        assert_eq!(LayerSet::lowest(0), LayerSet::EMPTY);
        assert_eq!(set(&[2, 0]).iter().collect::<Vec<_>>(), [0, 2]);
        assert!(set(&[0, 1, 2]).covers(set(&[0, 2])));
        assert!(!set(&[0, 1]).covers(set(&[2])));
        assert!(LayerSet::EMPTY.with(9).iter().next().is_none());
        assert_eq!(set(&[0]).union(set(&[2])), set(&[0, 2]));
    }

    #[test]
    fn a_subscription_consumes_what_it_forwards_and_what_it_should_get_next() {
        // (wanted, current, demand, paused, starved) → consumed
        type Row = (u8, Option<u8>, Option<u8>, bool, bool, &'static [u8]);
        let rows: &[Row] = &[
            (2, Some(2), None, false, false, &[2]),
            // Switching down: the current layer is consumed until the switch completes.
            (0, Some(2), None, false, false, &[0, 2]),
            // Not started yet: the wish.
            (1, None, None, false, false, &[1]),
            // The estimate allows less than the wish.
            (2, Some(1), Some(1), false, false, &[1]),
            // The estimate allows a layer the publisher stopped: asked back.
            (2, Some(1), Some(2), false, false, &[1, 2]),
            // A wish lowered since the estimate decided: the wish bounds it.
            (0, Some(0), Some(2), false, false, &[0]),
            (2, Some(2), None, true, false, &[]),
            (2, None, Some(0), false, true, &[]),
        ];
        for &(wanted, current, demand, paused, starved, expected) in rows {
            let mut l = selector(wanted, current);
            l.paused = paused;
            l.starved = starved;
            assert_eq!(
                consumed_by(&l, demand),
                set(expected),
                "{wanted} {current:?} {demand:?} {paused} {starved}"
            );
        }
    }

    #[test]
    fn additions_are_announced_at_once_removals_once_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let interval = ms(500);
        let mut a = Announcer::new(t0, 3);
        assert_eq!(a.announced(), set(&[0, 1, 2]));
        assert_eq!(a.update(t0, set(&[0, 1, 2]), interval), None);
        // A removal waits for the interval since the last announcement (here: publish).
        assert_eq!(a.update(t0 + ms(250), set(&[0]), interval), None);
        assert_eq!(a.update(t0 + ms(500), set(&[0]), interval), Some(set(&[0])));
        // Needed again: at once, however recent the last announcement.
        assert_eq!(
            a.update(t0 + ms(750), set(&[0, 2]), interval),
            Some(set(&[0, 2]))
        );
        // A flood of switches: one removal per interval, additions at once.
        assert_eq!(a.update(t0 + ms(1000), set(&[0]), interval), None);
        assert_eq!(
            a.update(t0 + ms(1250), set(&[0]), interval),
            Some(set(&[0]))
        );
        // A swap (adds one, drops another) is an addition: at once.
        assert_eq!(
            a.update(t0 + ms(1300), set(&[0, 1]), interval),
            Some(set(&[0, 1]))
        );
        assert_eq!(a.announced(), set(&[0, 1]));
    }
}
