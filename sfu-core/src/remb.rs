//! What the REMB toward a publisher asks for. Publishers' own send-side estimators (fed by the
//! transport-wide CC feedback the worker sends them) find what their uplink carries; the REMB
//! caps that by what the subscribers can use, so a publisher does not spend its uplink and CPU
//! on bits every subscriber would have to drop:
//!
//! - a simulcast track asks for the configured ceiling: each subscriber gets the layer its
//!   downlink fits, and dynacast stops the layers nobody consumes, so lowering the publisher's
//!   total would only starve the top layer of the subscribers who can take it;
//! - a single-encoding track asks for the most any of its subscribers' downlinks has room for
//!   (the subscriber's estimate less what its other subscriptions receive), within
//!   [`FLOOR_BPS`] and the ceiling: the best-connected subscriber sets it, so a weak (or lying)
//!   one cannot lower what the others get. A subscriber that has no estimate (no transport-wide
//!   CC) leaves the ceiling, and so does a track without subscribers; one whose estimate is
//!   still warming up is not counted yet.
//!
//! The subscribers' estimates grow at most to 1.5× what got through, so a publisher held low
//! by the REMB climbs back within a few reports once its subscribers' paths allow.

/// The least a single-encoding video track is asked for: below this an encoder's pictures are
/// worth little, and a subscriber whose downlink takes less is paused by its own allocation.
pub(crate) const FLOOR_BPS: u64 = 150_000;

/// A subscription paused because its video did not fit asks for this share of its room: it
/// resumes only when the video fits with the upgrade margin (×1.15), and an encoder overshoots
/// its target by a few per cent (headers, keyframes). Without it a publisher following the
/// REMB would settle just above what lets the subscriber resume.
pub(crate) const STARVED_SHARE: f64 = 0.8;

/// What one subscriber's downlink has room for, as far as the REMB is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Room {
    /// Its transport has no estimate (no transport-wide CC): it does not bound the REMB.
    Unbounded,
    /// Its estimate is warming up: it has its say within a second; until then it has none
    /// (a joining viewer must not swing the REMB to the ceiling and back).
    WarmingUp,
    /// Bits per second left for this track by its estimate.
    Bps(u64),
}

/// The most one video track is asked to send: `ceiling` for a simulcast track; for a single
/// encoding the largest of `rooms` within [`FLOOR_BPS`] and `ceiling` (the ceiling when one is
/// unbounded or none has an estimate yet).
pub(crate) fn video_track_allowance(
    simulcast: bool,
    rooms: impl IntoIterator<Item = Room>,
    ceiling: u64,
) -> u64 {
    if simulcast {
        return ceiling;
    }
    let mut most: Option<u64> = None;
    for room in rooms {
        match room {
            Room::Unbounded => return ceiling,
            Room::WarmingUp => {}
            Room::Bps(bps) => most = Some(most.map_or(bps, |m| m.max(bps))),
        }
    }
    most.map_or(ceiling, |m| m.clamp(FLOOR_BPS.min(ceiling), ceiling))
}

#[cfg(test)]
mod tests {
    use super::Room::{Bps, Unbounded, WarmingUp};
    use super::*;

    const CEILING: u64 = 2_500_000;

    #[test]
    fn a_simulcast_track_asks_for_the_ceiling_whatever_its_subscribers_take() {
        assert_eq!(
            video_track_allowance(true, [Bps(300_000), Bps(400_000)], CEILING),
            CEILING
        );
    }

    #[test]
    fn a_single_encoding_asks_for_the_best_subscribers_room() {
        assert_eq!(
            video_track_allowance(false, [Bps(300_000), Bps(900_000), Bps(600_000)], CEILING),
            900_000
        );
    }

    #[test]
    fn nothing_known_leaves_the_ceiling() {
        assert_eq!(video_track_allowance(false, [], CEILING), CEILING, "no one");
        assert_eq!(
            video_track_allowance(false, [Bps(300_000), Unbounded], CEILING),
            CEILING,
            "a subscriber without an estimate is not bounded by one"
        );
        assert_eq!(
            video_track_allowance(false, [WarmingUp], CEILING),
            CEILING,
            "no estimate yet"
        );
    }

    #[test]
    fn a_warming_estimate_has_no_say_until_it_is_warm() {
        assert_eq!(
            video_track_allowance(false, [Bps(400_000), WarmingUp], CEILING),
            400_000
        );
    }

    #[test]
    fn the_allowance_stays_between_the_floor_and_the_ceiling() {
        assert_eq!(video_track_allowance(false, [Bps(0)], CEILING), FLOOR_BPS);
        assert_eq!(
            video_track_allowance(false, [Bps(9_000_000)], CEILING),
            CEILING
        );
        assert_eq!(
            video_track_allowance(false, [Bps(0)], 100_000),
            100_000,
            "a ceiling below the floor wins"
        );
    }
}
