//! Telling a stuck worker from a busy one, without asking it anything.
//!
//! Each worker thread bumps its own [`Progress`] counter as it goes: every loop turn, every
//! command, every received batch, every handshake step. An idle worker still turns at least
//! every [`HOUSEKEEPING`](super::thread) second, so a counter that stands still for
//! [`STUCK_AFTER`] means the thread is wedged (an endless loop, a blocking call) whatever it
//! was doing — a busy worker moves its counter all the time. The node's watchdog thread samples
//! the counters every [`LOOK_EVERY`] and reports a stuck worker as a worker failure: the node
//! then exits like one whose worker died, its control links close and signaling moves its
//! rooms within the same budget as a killed node. (A wedged thread cannot be restarted: Rust
//! cannot stop a thread, and its rooms' state is inside it.)
//!
//! The decision is [`StuckWatch`], a state machine with time passed in, unit-tested without
//! threads. If the watchdog itself was not scheduled for a while (the process was stopped, the
//! machine suspended), standing counters prove nothing: it starts its window over.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{FailureSender, WorkerFailure};

/// A worker whose counter has not moved for this long is stuck.
pub(crate) const STUCK_AFTER: Duration = Duration::from_millis(2000);
/// How often the watchdog samples the counters.
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(250);
/// A gap between two looks longer than this means the watchdog itself was held up: the window
/// starts over rather than blaming the workers for the whole process being paused.
const LATE_LOOK: Duration = Duration::from_millis(1000);

/// One worker's progress counter: written by its thread only, read by the watchdog.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    turns: AtomicU64,
    /// Set by the watchdog once it judged the worker stuck: its thread will never end, so the
    /// node must not wait for it when it stops.
    stuck: AtomicBool,
}

impl Progress {
    /// The worker made progress (one relaxed add; never on the per-packet path).
    pub(crate) fn bump(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    fn turns(&self) -> u64 {
        self.turns.load(Ordering::Relaxed)
    }

    /// The watchdog judged this worker stuck.
    pub(crate) fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::Relaxed)
    }
}

/// Each worker's last counter value and since when it has stood still.
#[derive(Debug, Default)]
pub(crate) struct StuckWatch {
    workers: Vec<(u64, Instant)>,
    last_look: Option<Instant>,
}

impl StuckWatch {
    /// One look at the counters at `now`: the first worker stuck, with how long its counter
    /// has stood still.
    pub(crate) fn look(&mut self, now: Instant, turns: &[u64]) -> Option<(usize, Duration)> {
        let late = self
            .last_look
            .is_some_and(|last| now.saturating_duration_since(last) > LATE_LOOK);
        self.last_look = Some(now);
        if late || self.workers.len() != turns.len() {
            self.workers = turns.iter().map(|&t| (t, now)).collect();
            return None;
        }
        let mut stuck = None;
        for (index, (&turn, (last, since))) in turns.iter().zip(&mut self.workers).enumerate() {
            if turn != *last {
                (*last, *since) = (turn, now);
                continue;
            }
            let still = now.saturating_duration_since(*since);
            if still >= STUCK_AFTER && stuck.is_none() {
                stuck = Some((index, still));
            }
        }
        stuck
    }
}

/// Starts the node's watchdog thread over its workers' counters; it ends when the node drops
/// them, or after reporting the first stuck worker on `failures`.
pub(crate) fn spawn(
    progress: Weak<[Arc<Progress>]>,
    failures: FailureSender,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("mooyaho-watchdog".to_owned())
        .spawn(move || {
            let mut watch = StuckWatch::default();
            loop {
                std::thread::sleep(LOOK_EVERY);
                let Some(workers) = progress.upgrade() else {
                    return;
                };
                if failures.borrow().is_some() {
                    return; // already failed: the node is going down
                }
                let turns: Vec<u64> = workers.iter().map(|p| p.turns()).collect();
                if let Some((worker, still)) = watch.look(Instant::now(), &turns) {
                    workers[worker].stuck.store(true, Ordering::Relaxed);
                    let reason = format!(
                        "stuck: no progress for {:.1} s (limit {:.1} s)",
                        still.as_secs_f64(),
                        STUCK_AFTER.as_secs_f64()
                    );
                    tracing::error!(worker, %reason, "media worker stuck; its rooms are lost");
                    failures.send_replace(Some(WorkerFailure { worker, reason }));
                    return;
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_standing_still_for_the_limit_is_stuck_and_a_moving_one_never() {
        let mut watch = StuckWatch::default();
        let t0 = Instant::now();
        assert_eq!(watch.look(t0, &[0, 0]), None);
        // Worker 0 moves at every look (busy or idle, it turns); worker 1 stops at 5.
        let mut now = t0;
        let mut moving = 0;
        let mut stuck = None;
        for _ in 0..40 {
            now += LOOK_EVERY;
            moving += 3;
            stuck = watch.look(now, &[moving, 5]);
            if stuck.is_some() {
                break;
            }
        }
        let (worker, still) = stuck.expect("worker 1 is stuck");
        assert_eq!(worker, 1);
        // Judged at the first look at or past the limit (from the look that saw it at 5).
        assert_eq!(still, STUCK_AFTER);
        assert_eq!(now - t0, LOOK_EVERY + STUCK_AFTER);
    }

    #[test]
    fn a_worker_that_moves_once_in_a_while_is_not_stuck() {
        let mut watch = StuckWatch::default();
        let mut now = Instant::now();
        let mut turns = 0;
        // One turn a second (an idle worker's housekeeping), looked at every 250 ms.
        for look in 0..100u32 {
            now += LOOK_EVERY;
            if look % 4 == 0 {
                turns += 1;
            }
            assert_eq!(watch.look(now, &[turns]), None, "look {look}");
        }
    }

    #[test]
    fn a_late_look_starts_the_window_over() {
        let mut watch = StuckWatch::default();
        let t0 = Instant::now();
        assert_eq!(watch.look(t0, &[7]), None);
        // The whole process was paused for 10 s: nothing moved, but nobody is blamed.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(watch.look(t1, &[7]), None);
        // From there, on-time looks count again: stuck a full window after the late look.
        let mut now = t1;
        let mut stuck = None;
        while stuck.is_none() && now < t1 + 2 * STUCK_AFTER {
            now += LOOK_EVERY;
            stuck = watch.look(now, &[7]);
        }
        assert_eq!(stuck, Some((0, STUCK_AFTER)));
        assert_eq!(now - t1, STUCK_AFTER);
    }
}
