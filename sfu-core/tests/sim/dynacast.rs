//! Dynacast end to end in the worker: a simulcast publisher that stops the layers nobody
//! consumes when told (as the browser SDK does) and starts them again with a keyframe; viewers
//! whose wishes, or downlink estimates, decide what is consumed.

use std::time::Duration;

use sfu_core::{Event, LayerSet, MediaKind, TrackId};

use crate::harness::{Bottleneck, MS, Sim};

const K: u64 = 1000;

fn set(layers: &[u8]) -> LayerSet {
    layers.iter().fold(LayerSet::EMPTY, |s, &l| s.with(l))
}

/// The announcements for `track` among the events since index `from`.
fn announced(sim: &Sim, track: TrackId, from: usize) -> Vec<LayerSet> {
    sim.events[from..]
        .iter()
        .filter_map(|e| match e {
            Event::SubscribedLayersChanged {
                track: t, layers, ..
            } if *t == track => Some(*layers),
            _ => None,
        })
        .collect()
}

/// Runs `ms` in 50 ms steps, the publisher (`layers`, lowest first) obeying the latest
/// announcement after each: a layer told unneeded stops, one needed again starts with a
/// keyframe.
fn run_obeying(sim: &mut Sim, layers: &[usize], ms: u64) {
    for _ in 0..ms / 50 {
        sim.run_for(50 * MS);
        let track = sim.publishers[layers[0]].track;
        let Some(&wanted) = announced(sim, track, 0).last() else {
            continue;
        };
        for (i, &p) in layers.iter().enumerate() {
            let publisher = &mut sim.publishers[p];
            let stop = !wanted.contains(i as u8);
            if publisher.stopped && !stop {
                publisher.keyframe_pending = true;
            }
            publisher.stopped = stop;
        }
    }
}

#[test]
fn viewers_all_on_thumbnails_stop_the_upper_layers_and_one_asking_high_brings_the_top_back() {
    let mut sim = Sim::new(31);
    let layers = sim.add_simulcast_publisher();
    let track = sim.publishers[layers[0]].track;
    let (a, b) = (sim.add_subscriber(false), sim.add_subscriber(false));
    let video = |sim: &Sim, s: usize| sim.subscribers[s].subscriptions[0].0;
    let (va, vb) = (video(&sim, a), video(&sim, b));
    run_obeying(&mut sim, &layers, 1000);
    // Both forward the top layer: nobody consumes the middle one.
    assert_eq!(announced(&sim, track, 0), [set(&[0, 2])]);
    assert!(sim.publishers[layers[1]].stopped);

    for v in [va, vb] {
        sim.worker.set_preferred_layer(sim.now, v, 0).unwrap();
    }
    sim.drain();
    run_obeying(&mut sim, &layers, 2000);
    assert_eq!(announced(&sim, track, 0), [set(&[0, 2]), set(&[0])]);
    assert!(sim.publishers[layers[1]].stopped && sim.publishers[layers[2]].stopped);
    for v in [va, vb] {
        assert_eq!(
            sim.worker.subscription_stats(v).unwrap().current_layer,
            Some(0)
        );
    }

    // A asks for the top layer: announced at the next layer check, the publisher starts it,
    // and A switches to it at its first keyframe; B stays on the lowest.
    let before = sim.events.len();
    sim.worker.set_preferred_layer(sim.now, va, 2).unwrap();
    sim.drain();
    run_obeying(&mut sim, &layers, 300);
    assert_eq!(announced(&sim, track, before), [set(&[0, 2])]);
    run_obeying(&mut sim, &layers, 1000);
    assert_eq!(
        sim.worker.subscription_stats(va).unwrap().current_layer,
        Some(2)
    );
    assert_eq!(
        sim.worker.subscription_stats(vb).unwrap().current_layer,
        Some(0)
    );
    assert!(sim.publishers[layers[1]].stopped, "nobody wants the middle");

    // `off` consumes nothing: the lowest stays, for joiners.
    sim.worker.set_paused(sim.now, va, true).unwrap();
    sim.worker.set_paused(sim.now, vb, true).unwrap();
    sim.drain();
    run_obeying(&mut sim, &layers, 1000);
    assert_eq!(sim.worker.subscribed_layers(track), Some(set(&[0])));
    assert!(!sim.publishers[layers[0]].stopped);
}

#[test]
fn a_viewer_flipping_its_wish_costs_the_publisher_at_most_one_stop_per_interval() {
    let mut sim = Sim::new(32);
    let layers = sim.add_simulcast_publisher();
    let track = sim.publishers[layers[0]].track;
    let s = sim.add_subscriber(false);
    let video = sim.subscribers[s].subscriptions[0].0;
    run_obeying(&mut sim, &layers, 1000);
    let before = sim.events.len();
    // 200 flips in 2 s.
    for i in 0..200u32 {
        let layer = if i % 2 == 0 { 0 } else { 2 };
        sim.worker
            .set_preferred_layer(sim.now, video, layer)
            .unwrap();
        sim.drain();
        sim.run_for(10 * MS);
    }
    let flood = announced(&sim, track, before);
    let removals = flood.windows(2).filter(|w| !w[1].covers(w[0])).count();
    // Announcements are decided at the layer check (every 250 ms): at most 8 in 2 s, of
    // which at most one removal per 500 ms.
    assert!(flood.len() <= 9, "{flood:?}");
    assert!(removals <= 4, "{flood:?}");
    // Settled on the lowest: announced once the interval has passed.
    sim.worker.set_preferred_layer(sim.now, video, 0).unwrap();
    sim.drain();
    run_obeying(&mut sim, &layers, 1500);
    assert_eq!(sim.worker.subscribed_layers(track), Some(set(&[0])));
}

#[test]
fn a_bottlenecked_viewer_consumes_what_its_downlink_takes_and_gets_the_top_back_when_it_grows() {
    let mut sim = Sim::new(33);
    let layers = sim.add_simulcast_publisher();
    let track = sim.publishers[layers[0]].track;
    for (&p, bps) in layers.iter().zip([150 * K, 500 * K, 1500 * K]) {
        sim.set_bitrate(p, bps);
    }
    sim.add_publisher(MediaKind::Audio, false);
    let s = sim.add_subscriber(true);
    sim.subscribers[s].bottleneck = Some(Bottleneck::new(
        1000 * K,
        Duration::from_millis(300),
        Duration::from_millis(20),
    ));
    sim.send_feedback(s);
    let video = sim.subscribers[s].subscriptions[0].0;
    run_obeying(&mut sim, &layers, 8000);
    // h fits 1 Mbps, f does not: the publisher stops f (and does not start it again).
    assert_eq!(sim.worker.subscribed_layers(track), Some(set(&[0, 1])));
    let settled = sim.events.len();
    run_obeying(&mut sim, &layers, 7000);
    assert_eq!(announced(&sim, track, settled), [], "no flapping");
    assert!(sim.publishers[layers[2]].stopped);
    let stats = sim.worker.subscription_stats(video).unwrap();
    assert_eq!(stats.current_layer, Some(1), "{stats:?}");

    // More room: probing toward f (at its last measured rate) finds it, f is asked back and
    // forwarded.
    sim.subscribers[s]
        .bottleneck
        .as_mut()
        .unwrap()
        .set_capacity(4000 * K);
    run_obeying(&mut sim, &layers, 12_000);
    assert_eq!(
        sim.worker.subscribed_layers(track),
        Some(set(&[2])).map(|s| s.with(0))
    );
    let stats = sim.worker.subscription_stats(video).unwrap();
    assert_eq!(stats.current_layer, Some(2), "{stats:?}");
}
