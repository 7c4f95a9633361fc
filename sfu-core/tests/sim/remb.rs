//! The REMB toward publishers follows what their subscribers can take: a single-encoding
//! publisher whose encoder follows the REMB (as a browser's does) is brought down to a shaped
//! subscriber's downlink, so the subscriber keeps receiving without loss, and released when
//! the path recovers; a weak subscriber does not hold back a well-connected one; a simulcast
//! publisher is always asked for the ceiling (dynacast decides its layers).

use std::time::Duration;

use sfu_core::{Bitrate, MediaKind};

use crate::harness::{Bottleneck, MS, Sim};

const K: u64 = 1000;
/// `Config::default().remb_bitrate`.
const CEILING: u64 = 2_500_000;
/// What the scripted encoder sends at most.
const ENCODER_MAX: u64 = 1_500 * K;

/// A single-encoding video publisher (with RTX) whose encoder follows the REMB, starting at
/// its maximum.
fn following_publisher(sim: &mut Sim) -> usize {
    let p = sim.add_publisher(MediaKind::Video, true);
    sim.set_bitrate(p, ENCODER_MAX);
    sim.publishers[p].follows_remb = Some(ENCODER_MAX);
    p
}

fn shaped_subscriber(sim: &mut Sim, capacity: u64) -> usize {
    let s = sim.add_subscriber(true);
    sim.subscribers[s].bottleneck = Some(Bottleneck::new(
        capacity,
        Duration::from_millis(300),
        Duration::from_millis(20),
    ));
    sim.send_feedback(s);
    s
}

fn remb(sim: &Sim, p: usize) -> u64 {
    sim.publishers[p].remb.map_or(0, |b: Bitrate| b.0)
}

/// Runs `seconds`, noting the REMB every 500 ms.
fn run_noting(sim: &mut Sim, p: usize, seconds: u64, rembs: &mut Vec<u64>) {
    for _ in 0..seconds * 2 {
        sim.run_for(500 * MS);
        rembs.push(remb(sim, p));
    }
}

#[test]
fn a_single_encoding_publisher_is_held_to_its_subscribers_downlink_and_released_after() {
    let mut sim = Sim::new(21);
    let p = following_publisher(&mut sim);
    let s = shaped_subscriber(&mut sim, 600 * K);
    let (video, ssrc) = sim.subscribers[s].subscriptions[0];
    let mut rembs = vec![];
    run_noting(&mut sim, p, 15, &mut rembs);
    // The REMB came down from the ceiling to about the shaped downlink.
    assert_eq!(rembs[0], CEILING, "before the estimate is warm: {rembs:?}");
    assert!(
        rembs[20..]
            .iter()
            .all(|&r| (300 * K..=660 * K).contains(&r)),
        "{rembs:?}"
    );
    // The last 5 s: the subscriber receives the video, without loss at its bottleneck.
    let link = |sim: &Sim| {
        let l = sim.subscribers[s].bottleneck.as_ref().unwrap();
        (l.offered, l.dropped)
    };
    let before = link(&sim);
    let received = sim.stream(s, ssrc).received.len();
    run_noting(&mut sim, p, 5, &mut rembs);
    let after = link(&sim);
    let loss = (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64;
    assert!(loss < 0.01, "loss {loss}: {rembs:?}");
    let stats = sim.worker.subscription_stats(video).unwrap();
    assert!(!stats.starved, "{stats:?} {rembs:?}");
    assert!(
        sim.stream(s, ssrc).received.len() > received + 5 * 30,
        "video flows"
    );

    // The path recovers: the REMB climbs back (each step at most 1.5× what got through) and
    // the encoder returns to its maximum.
    sim.subscribers[s]
        .bottleneck
        .as_mut()
        .unwrap()
        .set_capacity(10_000 * K);
    let from = rembs.len();
    run_noting(&mut sim, p, 25, &mut rembs);
    let back = rembs[from..].iter().position(|&r| r >= ENCODER_MAX);
    assert!(back.is_some(), "{rembs:?}");
    assert!(
        rembs[rembs.len() - 4..].iter().all(|&r| r >= ENCODER_MAX),
        "{rembs:?}"
    );
    eprintln!(
        "REMB every 500 ms: {:?}; back at the encoder's max after {} ms",
        rembs.iter().map(|r| r / K).collect::<Vec<_>>(),
        back.unwrap_or(0) * 500
    );
}

#[test]
fn a_weak_subscriber_does_not_hold_back_the_publisher_of_a_well_connected_one() {
    let mut sim = Sim::new(22);
    let p = following_publisher(&mut sim);
    let weak = shaped_subscriber(&mut sim, 300 * K);
    let free = sim.add_subscriber(true);
    sim.send_feedback(free);
    let mut rembs = vec![];
    run_noting(&mut sim, p, 15, &mut rembs);
    assert!(
        rembs[10..].iter().all(|&r| r >= ENCODER_MAX),
        "the free subscriber's room sets it: {rembs:?}"
    );
    let free_video = sim.subscribers[free].subscriptions[0].0;
    let weak_video = sim.subscribers[weak].subscriptions[0].0;
    assert!(!sim.worker.subscription_stats(free_video).unwrap().starved);
    assert!(
        sim.worker.subscription_stats(weak_video).unwrap().starved,
        "the weak one's own allocation pauses it instead"
    );

    // A subscriber asking for none of the video has no say: the weak one's room alone sets it.
    sim.worker.set_paused(sim.now, free_video, true).unwrap();
    run_noting(&mut sim, p, 10, &mut rembs);
    assert!(
        rembs[rembs.len() - 4..].iter().all(|&r| r < 450 * K),
        "the weak subscriber's room alone: {rembs:?}"
    );
}

#[test]
fn a_simulcast_publisher_is_asked_for_the_ceiling_whatever_its_subscribers_take() {
    let mut sim = Sim::new(23);
    let layers = sim.add_simulcast_publisher();
    for (&p, bps) in layers.iter().zip([150 * K, 500 * K, 1500 * K]) {
        sim.set_bitrate(p, bps);
    }
    shaped_subscriber(&mut sim, 400 * K);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(remb(&sim, layers[0]), CEILING);
}
