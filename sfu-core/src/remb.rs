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
//!   one cannot lower what the others get. A subscriber without an estimate yet counts as
//!   unbounded, and so does a track without subscribers.
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

/// The most one video track is asked to send: `ceiling` for a simulcast track; for a single
/// encoding the largest of `rooms` (each subscriber's room for it, `None` for one without an
/// estimate, which leaves it unbounded) within [`FLOOR_BPS`] and `ceiling`.
pub(crate) fn video_track_allowance(
    simulcast: bool,
    rooms: impl IntoIterator<Item = Option<u64>>,
    ceiling: u64,
) -> u64 {
    if simulcast {
        return ceiling;
    }
    let mut most: Option<u64> = None;
    for room in rooms {
        let Some(room) = room else {
            return ceiling;
        };
        most = Some(most.map_or(room, |m| m.max(room)));
    }
    most.map_or(ceiling, |m| m.clamp(FLOOR_BPS.min(ceiling), ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILING: u64 = 2_500_000;

    #[test]
    fn a_simulcast_track_asks_for_the_ceiling_whatever_its_subscribers_take() {
        assert_eq!(
            video_track_allowance(true, [Some(300_000), Some(400_000)], CEILING),
            CEILING
        );
    }

    #[test]
    fn a_single_encoding_asks_for_the_best_subscribers_room() {
        assert_eq!(
            video_track_allowance(
                false,
                [Some(300_000), Some(900_000), Some(600_000)],
                CEILING
            ),
            900_000
        );
    }

    #[test]
    fn nothing_known_leaves_the_ceiling() {
        assert_eq!(video_track_allowance(false, [], CEILING), CEILING, "no one");
        assert_eq!(
            video_track_allowance(false, [Some(300_000), None], CEILING),
            CEILING,
            "a subscriber without an estimate is not bounded by one"
        );
    }

    #[test]
    fn the_allowance_stays_between_the_floor_and_the_ceiling() {
        assert_eq!(video_track_allowance(false, [Some(0)], CEILING), FLOOR_BPS);
        assert_eq!(
            video_track_allowance(false, [Some(9_000_000)], CEILING),
            CEILING
        );
        assert_eq!(
            video_track_allowance(false, [Some(0)], 100_000),
            100_000,
            "a ceiling below the floor wins"
        );
    }
}
