//! Simulation harness (str0m's netem idea): a virtual clock, fake publishers emitting RTP on a
//! synthetic timeline, fake subscribers answering with NACK/PLI, and lossy links with latency.
//! Everything is deterministic: seeded loss, no sleeps, no wall clock.

mod bwe;
mod dynacast;
mod harness;
mod remb;

use std::time::Duration;

use harness::{MS, Sim};
use sfu_core::{Bitrate, Event, MediaKind};

fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
    payload[0] == 0x10 && payload[1] & 1 == 0
}

#[test]
fn nack_recovers_single_loss() {
    let mut sim = Sim::new(1);
    sim.add_publisher(MediaKind::Video, true);
    let s = sim.add_subscriber(true);
    sim.subscribers[s].downlink.drop.insert(30);
    sim.run_for(Duration::from_secs(2));
    let stream = sim.stream(s, 50_000);
    assert_eq!(stream.missing(200 * MS, sim.now), Vec::<u64>::new());
    let c = sim.worker.stats().counters;
    assert_eq!(c.retransmits_sent, 1, "{c:?}");
    assert_eq!(c.retransmit_misses, 0);
    assert_eq!(
        stream.received.len() as u64,
        c.rtp_forwarded,
        "every forwarded packet arrived once"
    );
}

#[test]
fn nack_recovers_uplink_loss_through_publisher_rtx() {
    let mut sim = Sim::new(2);
    let p = sim.add_publisher(MediaKind::Video, true);
    let s = sim.add_subscriber(false);
    sim.publishers[p].uplink.drop.insert(20);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.publishers[p].nacked.len(),
        1,
        "the gap is NACKed once and recovered"
    );
    assert!(sim.stream(s, 50_000).missing(200 * MS, sim.now).is_empty());
    assert_eq!(
        sim.worker
            .track_stats(sim.publishers[p].track)
            .unwrap()
            .missing,
        0
    );
}

#[test]
fn random_loss_on_both_links_is_recovered() {
    let mut sim = Sim::new(3);
    let p = sim.add_publisher(MediaKind::Video, true);
    let s = sim.add_subscriber(true);
    sim.publishers[p].uplink.loss = 0.05;
    sim.subscribers[s].downlink.loss = 0.05;
    sim.run_for(Duration::from_secs(5));
    let stream = sim.stream(s, 50_000);
    assert!(stream.received.len() > 400);
    assert_eq!(
        stream.missing(Duration::from_millis(600), sim.now),
        Vec::<u64>::new()
    );
}

#[test]
fn pli_is_throttled_across_subscribers() {
    let mut sim = Sim::new(4);
    let p = sim.add_publisher(MediaKind::Video, false);
    let subs: Vec<_> = (0..10).map(|_| sim.add_subscriber(false)).collect();
    sim.run_for(Duration::from_millis(200));
    let before = sim.publishers[p].plis;
    for _ in 0..40 {
        for &s in &subs {
            let media = sim.subscribers[s].subscriptions[0].1;
            sim.subscriber_pli(s, media);
        }
        sim.run_for(50 * MS);
    }
    let upstream = sim.publishers[p].plis - before;
    // 2 s of requests from 10 subscribers every 50 ms (400 PLIs) → one per 500 ms window.
    assert!(
        (4..=5).contains(&upstream),
        "{upstream} PLIs reached the publisher"
    );
    assert_eq!(sim.worker.stats().counters.keyframe_requests_received, 400);
}

#[test]
fn late_joiner_waits_for_keyframe() {
    let mut sim = Sim::new(5);
    let p = sim.add_publisher(MediaKind::Video, false);
    let early = sim.add_subscriber(false);
    // The PLI takes 100 ms to reach the publisher, so a few delta frames arrive first.
    sim.publishers[p].downlink.latency = 100 * MS;
    sim.run_for(Duration::from_secs(1));
    let plis = sim.publishers[p].plis;
    let late = sim.add_subscriber(false);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.publishers[p].plis,
        plis + 1,
        "joining asks the publisher for one keyframe"
    );
    let stream = sim.stream(late, 50_100);
    let first = stream.arrivals[0];
    assert!(
        is_vp8_keyframe_start(&stream.received[&first].1),
        "first packet a late joiner sees starts a keyframe"
    );
    assert!(stream.missing(Duration::ZERO, sim.now).is_empty());
    assert!(
        sim.worker.stats().counters.rtp_waiting_for_keyframe > 0,
        "packets before the keyframe were held back"
    );
    assert!(sim.events.contains(&Event::SubscriptionStarted {
        subscription: sim.subscribers[late].subscriptions[0].0
    }));
    // The early subscriber saw an uninterrupted stream meanwhile.
    assert!(
        sim.stream(early, 50_000)
            .missing(Duration::ZERO, sim.now)
            .is_empty()
    );
}

#[test]
fn room_teardown_frees_state() {
    let mut sim = Sim::new(6);
    for _ in 0..3 {
        sim.add_publisher(MediaKind::Video, true);
        sim.add_publisher(MediaKind::Audio, false);
    }
    for _ in 0..5 {
        sim.add_subscriber(true);
    }
    sim.run_for(Duration::from_secs(1));
    let s = sim.worker.stats();
    assert_eq!(
        (s.rooms, s.transports, s.tracks, s.subscriptions),
        (1, 11, 6, 30)
    );
    sim.worker.close_room(sim.room).unwrap();
    sim.drain();
    let s = sim.worker.stats();
    assert_eq!(
        (s.rooms, s.transports, s.tracks, s.subscriptions),
        (0, 0, 0, 0)
    );
    assert_eq!(
        sim.events
            .iter()
            .filter(|e| matches!(e, Event::SubscriptionClosed { .. }))
            .count(),
        30
    );
    assert_eq!(
        sim.events
            .iter()
            .filter(|e| matches!(e, Event::TrackClosed { .. }))
            .count(),
        6
    );
    // In-flight packets to the closed transports are dropped and counted, not a panic.
    let before = sim.worker.stats().counters.rtp_unknown_transport;
    sim.publishers
        .iter_mut()
        .for_each(|p| p.next_frame = sim.now + Duration::from_secs(3600));
    sim.run_for(Duration::from_millis(100));
    assert!(sim.worker.stats().counters.rtp_unknown_transport > before);
    assert_eq!(
        sim.worker.poll_timeout(),
        None,
        "an empty worker has no timer"
    );
    sim.worker.check_invariants();
}

#[test]
fn rewriting_keeps_seq_contiguous_across_publisher_restart() {
    let mut sim = Sim::new(7);
    let p = sim.add_publisher(MediaKind::Audio, false);
    let s = sim.add_subscriber(false);
    sim.subscribers[s].send_nacks = false;
    for _ in 0..3 {
        sim.run_for(Duration::from_millis(700));
        // Encoder restart: unrelated sequence number and timestamp.
        let publisher = &mut sim.publishers[p];
        publisher.seq = sim.rng.next_u64() as u16;
        publisher.ts = sim.rng.next_u64() as u32;
    }
    sim.run_for(Duration::from_millis(700));
    let stream = sim.stream(s, 50_000);
    let seqs: Vec<u64> = stream.arrivals.clone();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "output seq must be contiguous: {seqs:?}"
    );
    let ts: Vec<u32> = seqs.iter().map(|s| stream.received[s].0).collect();
    assert!(
        ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) as i32 > 0),
        "timestamps move forward"
    );
    assert_eq!(
        sim.worker.stats().counters.rtp_probation,
        3,
        "each restart costs one probation packet"
    );
}

#[test]
fn publisher_gets_receiver_reports_remb_and_twcc_feedback() {
    let mut sim = Sim::new(8);
    let p = sim.add_publisher(MediaKind::Video, false);
    sim.add_subscriber(false);
    sim.run_for(Duration::from_secs(3));
    let publisher = &sim.publishers[p];
    assert!((3..=4).contains(&publisher.rrs), "{}", publisher.rrs);
    assert_eq!(publisher.remb, Some(Bitrate(2_500_000)));
    assert!(
        publisher.twcc >= 25,
        "TWCC feedback every ~100 ms, got {}",
        publisher.twcc
    );
}

#[test]
fn simulcast_switch_keeps_seq_contiguous() {
    let mut sim = Sim::new(9);
    let layers = sim.add_simulcast_publisher();
    let s = sim.add_subscriber(false);
    sim.subscribers[s].send_nacks = false;
    let (subscription, ssrc) = sim.subscribers[s].subscriptions[0];
    sim.run_for(Duration::from_secs(1));
    let layer = |sim: &Sim| {
        sim.worker
            .subscription_stats(subscription)
            .unwrap()
            .current_layer
    };
    assert_eq!(layer(&sim), Some(2), "starts on the highest layer");
    for (target, entry) in [(0u8, layers[0]), (1, layers[1])] {
        let plis = sim.publishers[entry].plis;
        sim.worker
            .set_preferred_layer(sim.now, subscription, target)
            .unwrap();
        sim.drain();
        sim.run_for(Duration::from_secs(1));
        assert_eq!(layer(&sim), Some(target));
        assert_eq!(
            sim.publishers[entry].plis,
            plis + 1,
            "the new layer is asked for a keyframe"
        );
        assert!(sim.events.contains(&Event::LayerSwitched {
            subscription,
            layer: target
        }));
    }
    let c = sim.worker.stats().counters;
    assert_eq!(
        c.rtp_unknown_ssrc, 0,
        "layer SSRCs were learned from the rid extension"
    );
    let stream = sim.stream(s, ssrc);
    assert!(
        stream.arrivals.windows(2).all(|w| w[1] == w[0] + 1),
        "output seq contiguous across layer switches"
    );
    let ts: Vec<u32> = stream
        .arrivals
        .iter()
        .map(|s| stream.received[s].0)
        .collect();
    assert!(
        ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) as i32 >= 0),
        "timestamps never go back"
    );
    // Packets of a frame: layer 2 sends 3, layer 0 sends 1, layer 1 sends 2; a switch shows in
    // how many packets share a timestamp.
    let last_frame = ts.iter().filter(|&&t| t == *ts.last().unwrap()).count();
    assert_eq!(last_frame, 2, "layer 1 is being forwarded at the end");
}

/// The publisher entry (simulcast layer) behind each packet the subscriber received, in
/// arrival order.
fn layers_received(sim: &Sim, s: usize, ssrc: u32) -> Vec<u8> {
    let stream = sim.stream(s, ssrc);
    stream
        .arrivals
        .iter()
        .map(|seq| stream.received[seq].1[4])
        .collect()
}

#[test]
fn simulcast_switch_waits_for_a_keyframe_of_the_target_layer() {
    let mut sim = Sim::new(21);
    let layers = sim.add_simulcast_publisher();
    let s = sim.add_subscriber(false);
    sim.subscribers[s].send_nacks = false;
    let (subscription, ssrc) = sim.subscribers[s].subscriptions[0];
    sim.run_for(Duration::from_secs(1));
    // The low layer's encoder is slow: it hears the PLIs but sends no keyframe yet.
    sim.publishers[layers[0]].ignores_pli = true;
    sim.worker
        .set_preferred_layer(sim.now, subscription, 0)
        .unwrap();
    sim.drain();
    let before = sim.stream(s, ssrc).arrivals.len();
    sim.run_for(Duration::from_secs(2));
    let stats = sim.worker.subscription_stats(subscription).unwrap();
    assert_eq!(stats.current_layer, Some(2), "no keyframe of layer 0 yet");
    assert_eq!(stats.target_layer, 0);
    let received = layers_received(&sim, s, ssrc);
    assert!(
        received.len() > before + 100,
        "the current layer keeps flowing while the switch waits"
    );
    assert!(received.iter().all(|&l| l == layers[2] as u8));
    assert!(
        sim.publishers[layers[0]].plis >= 2,
        "the keyframe request is repeated while it stays unanswered"
    );
    // The keyframe comes: the switch happens at it, and only layer 0 flows from then on.
    sim.publishers[layers[0]].keyframe_pending = true;
    sim.run_for(Duration::from_secs(1));
    let received = layers_received(&sim, s, ssrc);
    let first_low = received
        .iter()
        .position(|&l| l == layers[0] as u8)
        .expect("switched to layer 0");
    assert!(received[first_low..].iter().all(|&l| l == layers[0] as u8));
    let stream = sim.stream(s, ssrc);
    let seq = stream.arrivals[first_low];
    assert!(
        is_vp8_keyframe_start(&stream.received[&seq].1),
        "the first packet of the new layer starts a keyframe"
    );
    assert!(
        stream.arrivals.windows(2).all(|w| w[1] == w[0] + 1),
        "output seq contiguous across the switch"
    );
}

#[test]
fn repeating_a_layer_choice_neither_switches_nor_asks_for_keyframes() {
    let mut sim = Sim::new(22);
    let layers = sim.add_simulcast_publisher();
    let s = sim.add_subscriber(false);
    let (subscription, _) = sim.subscribers[s].subscriptions[0];
    sim.run_for(Duration::from_secs(1));
    sim.worker
        .set_preferred_layer(sim.now, subscription, 1)
        .unwrap();
    sim.drain();
    sim.run_for(Duration::from_secs(1));
    let plis: Vec<usize> = layers.iter().map(|&p| sim.publishers[p].plis).collect();
    let switches = |sim: &Sim| {
        sim.events
            .iter()
            .filter(|e| matches!(e, Event::LayerSwitched { .. }))
            .count()
    };
    assert_eq!(switches(&sim), 1);
    for _ in 0..20 {
        sim.worker
            .set_preferred_layer(sim.now, subscription, 1)
            .unwrap();
        sim.drain();
        sim.run_for(100 * MS);
    }
    let after: Vec<usize> = layers.iter().map(|&p| sim.publishers[p].plis).collect();
    assert_eq!(
        after, plis,
        "no keyframe requests for the layer already flowing"
    );
    assert_eq!(switches(&sim), 1, "no flapping");
    let stats = sim.worker.subscription_stats(subscription).unwrap();
    assert_eq!(stats.current_layer, Some(1));
}

#[test]
fn a_stopped_layer_falls_back_to_the_best_flowing_one_and_comes_back_when_it_resumes() {
    let mut sim = Sim::new(24);
    let layers = sim.add_simulcast_publisher();
    let s = sim.add_subscriber(false);
    sim.subscribers[s].send_nacks = false;
    let (subscription, ssrc) = sim.subscribers[s].subscriptions[0];
    sim.run_for(Duration::from_secs(1));
    let current = |sim: &Sim| {
        let stats = sim.worker.subscription_stats(subscription).unwrap();
        (stats.current_layer, stats.wanted_layer)
    };
    assert_eq!(current(&sim), (Some(2), 2));
    // The publisher stops its top layer (bandwidth or CPU): the middle one takes over.
    sim.publishers[layers[2]].stopped = true;
    sim.run_for(Duration::from_secs(3));
    assert_eq!(
        current(&sim),
        (Some(1), 2),
        "falls back to the best flowing layer"
    );
    let arrived = sim.stream(s, ssrc).arrivals.len();
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.stream(s, ssrc).arrivals.len() > arrived + 40,
        "video keeps flowing"
    );
    // It comes back: so does the subscriber, at one of its keyframes.
    sim.publishers[layers[2]].stopped = false;
    sim.run_for(Duration::from_secs(2));
    assert_eq!(current(&sim), (Some(2), 2));
    // Only the top layer flows: a viewer asking for the lowest gets it rather than nothing.
    sim.publishers[layers[0]].stopped = true;
    sim.publishers[layers[1]].stopped = true;
    sim.worker
        .set_preferred_layer(sim.now, subscription, 0)
        .unwrap();
    sim.drain();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(current(&sim), (Some(2), 0));
    let received = layers_received(&sim, s, ssrc);
    let switches = received.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches <= 4, "no flapping: {switches} switches");
    let stream = sim.stream(s, ssrc);
    assert!(
        stream.arrivals.windows(2).all(|w| w[1] == w[0] + 1),
        "output seq contiguous across fallbacks"
    );
}

#[test]
fn a_paused_subscription_gets_nothing_and_resumes_at_a_keyframe_with_contiguous_seq() {
    let mut sim = Sim::new(23);
    let layers = sim.add_simulcast_publisher();
    let s = sim.add_subscriber(false);
    sim.subscribers[s].send_nacks = false;
    let (subscription, ssrc) = sim.subscribers[s].subscriptions[0];
    sim.run_for(Duration::from_secs(1));
    sim.worker.set_paused(sim.now, subscription, true).unwrap();
    sim.drain();
    // What was already on the wire lands; nothing after it.
    sim.run_for(100 * MS);
    let paused_at = sim.stream(s, ssrc).arrivals.len();
    let waiting = sim.worker.stats().counters.rtp_waiting_for_keyframe;
    let plis: usize = layers.iter().map(|&p| sim.publishers[p].plis).sum();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.stream(s, ssrc).arrivals.len(), paused_at);
    let stats = sim.worker.subscription_stats(subscription).unwrap();
    assert!(stats.paused && stats.current_layer.is_none());
    assert_eq!(
        sim.worker.stats().counters.rtp_waiting_for_keyframe,
        waiting,
        "a paused subscription is not counted as waiting"
    );
    // Pausing again, or asking for another layer meanwhile, requests no keyframe.
    sim.worker.set_paused(sim.now, subscription, true).unwrap();
    sim.worker
        .set_preferred_layer(sim.now, subscription, 0)
        .unwrap();
    sim.drain();
    sim.run_for(Duration::from_secs(1));
    let plis_paused: usize = layers.iter().map(|&p| sim.publishers[p].plis).sum();
    assert_eq!(plis_paused, plis, "no keyframe requests while paused");
    let low_plis = sim.publishers[layers[0]].plis;
    sim.worker.set_paused(sim.now, subscription, false).unwrap();
    sim.drain();
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.publishers[layers[0]].plis > low_plis,
        "the resume asks the target layer for a keyframe"
    );
    let stream = sim.stream(s, ssrc);
    assert!(stream.arrivals.len() > paused_at + 20, "resumed");
    let resumed = stream.arrivals[paused_at];
    assert!(is_vp8_keyframe_start(&stream.received[&resumed].1));
    assert_eq!(stream.received[&resumed].1[4], layers[0] as u8);
    assert!(
        stream.arrivals.windows(2).all(|w| w[1] == w[0] + 1),
        "output seq continues across the pause"
    );
    let ts: Vec<u32> = stream
        .arrivals
        .iter()
        .map(|s| stream.received[s].0)
        .collect();
    assert!(ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) as i32 >= 0));
}

#[test]
fn nack_recovers_uplink_burst_at_high_packet_rate() {
    // ~900 packets/s and 80 ms each way: recovered packets arrive ~150 sequence numbers behind
    // the newest, further than RFC 3550's MAX_MISORDER, and must not look like a restart.
    let mut sim = Sim::new(10);
    let p = sim.add_publisher(MediaKind::Video, true);
    let s = sim.add_subscriber(false);
    sim.publishers[p].packets_per_frame = 30;
    sim.publishers[p].uplink.latency = 80 * MS;
    sim.publishers[p].downlink.latency = 80 * MS;
    sim.publishers[p].uplink.drop.extend(300..310);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.worker.stats().counters.rtp_probation, 0);
    assert!(sim.stream(s, 50_000).missing(300 * MS, sim.now).is_empty());
    assert_eq!(
        sim.worker
            .track_stats(sim.publishers[p].track)
            .unwrap()
            .missing,
        0
    );
}

#[test]
fn honest_nacks_at_5_percent_loss_recover_within_the_retransmit_budget() {
    let mut sim = Sim::new(11);
    sim.add_publisher(MediaKind::Video, true);
    let with_rtx = sim.add_subscriber(true);
    let without_rtx = sim.add_subscriber(false);
    for s in [with_rtx, without_rtx] {
        sim.subscribers[s].downlink.loss = 0.05;
    }
    sim.run_for(Duration::from_secs(10));
    for (s, ssrc) in [(with_rtx, 50_000), (without_rtx, 50_100)] {
        let stream = sim.stream(s, ssrc);
        assert!(stream.received.len() > 900, "subscriber {s}");
        assert_eq!(
            stream.missing(Duration::from_millis(600), sim.now),
            Vec::<u64>::new(),
            "subscriber {s}"
        );
    }
    let c = sim.worker.stats().counters;
    assert!(c.retransmits_sent > 50, "{c:?}");
    assert_eq!(
        (c.retransmits_over_budget, c.retransmits_unrepeatable),
        (0, 0),
        "{c:?}"
    );
}
