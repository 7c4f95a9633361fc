//! The `simulcast` scenario's layers. Each publisher sends one video track as three
//! `a=ssrc-group:SIM` layers, `q`, `h` and `f`, at ¼, ½ and all of `--pps` (lowest first, as the
//! node orders them); [`LOW_SHARE_PERCENT`] of the subscribers ask for `low` with
//! `setSubscription`, the others keep the default (the top layer) and get what the node's
//! downlink estimate allows, switching layers when it changes. The report gives each layer's
//! packets per second in and out of the node and how many subscribers received mostly it. Loss
//! is not judged per layer (a subscriber switched inside the window received part of each
//! layer): the node numbers each subscription's packets in one sequence across layer switches,
//! so the sequence gaps our subscribers saw are what the node sent and did not arrive.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The layers, lowest first.
pub(crate) const RIDS: [&str; 3] = ["q", "h", "f"];
/// Layer `l` goes out on every `EVERY[l]`-th tick of the publisher's `--pps` clock.
pub(crate) const EVERY: [u64; 3] = [4, 2, 1];
/// Share of the subscribers asking for `low`, percent.
pub(crate) const LOW_SHARE_PERCENT: usize = 30;

/// Whether the subscriber with this index (0-based among its room's subscribers) asks `low`:
/// 3 in every 10, spread out.
pub(crate) fn asks_low(subscriber: usize) -> bool {
    subscriber % 10 < LOW_SHARE_PERCENT / 10
}

/// The layers' counts, shared by the run's participants.
#[derive(Debug, Default)]
pub(crate) struct LayerTotals {
    /// Every publisher's layer SSRCs and their layer.
    layers: Mutex<HashMap<u32, u8>>,
    sent_in_window: [AtomicU64; 3],
    received_of_window: [AtomicU64; 3],
    receivers: [AtomicU64; 3],
    /// `setSubscription {video: low}` requests the node acknowledged.
    pub(crate) low_wishes: AtomicU64,
}

impl LayerTotals {
    /// A publisher's layer SSRCs, lowest first.
    pub(crate) fn register(&self, ssrcs: [u32; 3]) {
        let mut layers = self.layers.lock().expect("lock");
        for (layer, ssrc) in ssrcs.into_iter().enumerate() {
            layers.insert(ssrc, layer as u8);
        }
    }

    /// A publisher sent `packets` of `layer` in the window.
    pub(crate) fn sent(&self, layer: usize, packets: u64) {
        self.sent_in_window[layer].fetch_add(packets, Ordering::Relaxed);
    }

    /// One subscriber's distinct window packets per publisher stream (SSRC): added to their
    /// layers, and the subscriber counted as a receiver of the layer it got most of (streams of
    /// no layer, such as audio, are ignored).
    pub(crate) fn received(&self, streams: impl IntoIterator<Item = (u32, u64)>) {
        let layers = self.layers.lock().expect("lock");
        let mut per_layer = [0u64; 3];
        for (ssrc, packets) in streams {
            if let Some(&layer) = layers.get(&ssrc) {
                per_layer[usize::from(layer)] += packets;
            }
        }
        for (layer, &packets) in per_layer.iter().enumerate() {
            self.received_of_window[layer].fetch_add(packets, Ordering::Relaxed);
        }
        let most = (0..3).max_by_key(|&l| per_layer[l]);
        if let Some(layer) = most.filter(|&l| per_layer[l] > 0) {
            self.receivers[layer].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Packets the subscribers would have received had each stayed on the layer it got most
    /// of: each layer's window packets × its receivers.
    pub(crate) fn expected(&self) -> u64 {
        (0..3)
            .map(|l| {
                self.sent_in_window[l].load(Ordering::Relaxed)
                    * self.receivers[l].load(Ordering::Relaxed)
            })
            .sum()
    }
}

/// Per layer, what went in and out of the node in the window.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulcastReport {
    /// Lowest first.
    pub layers: Vec<LayerReport>,
    /// `setSubscription {video: "low"}` requests acknowledged.
    pub low_wishes: u64,
}

/// One layer in the window.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    /// `q`, `h` or `f`.
    pub rid: &'static str,
    /// Packets per second all publishers sent of this layer.
    pub in_packets_per_second: f64,
    /// Distinct packets per second of this layer our subscribers received (a retransmission
    /// counts once).
    pub out_packets_per_second: f64,
    /// Subscribers that received mostly this layer.
    pub receivers: u64,
}

impl SimulcastReport {
    /// One line for a terminal.
    pub fn summary(&self) -> String {
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|l| {
                format!(
                    "{} in {:.0} out {:.0} pkt/s ({} receivers)",
                    l.rid, l.in_packets_per_second, l.out_packets_per_second, l.receivers
                )
            })
            .collect();
        format!(
            "layers: {}; {} low wishes",
            layers.join(", "),
            self.low_wishes
        )
    }

    pub(crate) fn build(totals: &LayerTotals, window_seconds: f64) -> Self {
        let layers = (0..3)
            .map(|l| {
                let sent = totals.sent_in_window[l].load(Ordering::Relaxed);
                let received = totals.received_of_window[l].load(Ordering::Relaxed);
                LayerReport {
                    rid: RIDS[l],
                    in_packets_per_second: sent as f64 / window_seconds,
                    out_packets_per_second: received as f64 / window_seconds,
                    receivers: totals.receivers[l].load(Ordering::Relaxed),
                }
            })
            .collect();
        Self {
            layers,
            low_wishes: totals.low_wishes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_in_ten_subscribers_ask_low() {
        assert_eq!((0..100).filter(|&i| asks_low(i)).count(), 30);
        assert_eq!((0..10).filter(|&i| asks_low(i)).count(), 3);
    }

    #[test]
    fn each_subscriber_counts_for_the_layer_it_got_most_of() {
        let totals = LayerTotals::default();
        totals.register([10, 11, 12]);
        totals.sent(0, 25);
        totals.sent(1, 50);
        totals.sent(2, 100);
        // Two on f (one missed 10 packets, and saw 5 of h while switching), one on q, and an
        // audio stream nobody registered.
        totals.received([(12, 100), (99, 50)]);
        totals.received([(12, 90), (11, 5)]);
        totals.received([(10, 25)]);
        assert_eq!(totals.expected(), 2 * 100 + 25);
        let report = SimulcastReport::build(&totals, 1.0);
        let [q, h, f] = &report.layers[..] else {
            panic!("{report:?}")
        };
        assert_eq!((q.receivers, h.receivers, f.receivers), (1, 0, 2));
        assert_eq!(f.out_packets_per_second, 190.0);
        assert_eq!(h.out_packets_per_second, 5.0);
        assert_eq!(q.out_packets_per_second, 25.0);
        // A subscriber that got nothing counts for no layer.
        totals.received([]);
        assert_eq!(totals.expected(), 225);
    }
}
