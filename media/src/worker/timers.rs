//! The worker's deadline queue: each transport's next deadline (DTLS retransmission, consent or
//! candidate check, connect/consent expiry) in one min-heap, so a loop turn looks at the
//! earliest deadline only instead of walking every transport.
//!
//! Rescheduling pushes a new heap entry and leaves the old one in place; an entry whose deadline
//! is no longer its key's current one is skipped when it surfaces (quinn's timer table does the
//! same per connection). The heap is rebuilt when stale entries outnumber live ones, so its
//! size stays proportional to the number of keys.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;
use std::time::Instant;

use rustc_hash::FxHashMap;

/// Keys with one deadline each, earliest first.
#[derive(Debug)]
pub(super) struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    /// The current deadline of every scheduled key (heap entries not matching it are stale).
    deadlines: FxHashMap<K, Instant>,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            deadlines: FxHashMap::default(),
        }
    }
}

impl<K: Copy + Ord + Hash> TimerQueue<K> {
    /// Sets `key`'s deadline; `None` cancels it.
    pub(super) fn schedule(&mut self, key: K, deadline: Option<Instant>) {
        let Some(deadline) = deadline else {
            self.deadlines.remove(&key);
            return;
        };
        if self.deadlines.insert(key, deadline) == Some(deadline) {
            return;
        }
        self.heap.push(Reverse((deadline, key)));
        if self.heap.len() > 2 * self.deadlines.len() + 64 {
            self.heap = self
                .deadlines
                .iter()
                .map(|(key, deadline)| Reverse((*deadline, *key)))
                .collect();
        }
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        self.skip_stale();
        self.heap.peek().map(|Reverse((deadline, _))| *deadline)
    }

    /// A key whose deadline is at or before `now`, unscheduled (the caller reschedules it).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<K> {
        self.skip_stale();
        let Reverse((deadline, key)) = *self.heap.peek()?;
        if deadline > now {
            return None;
        }
        self.heap.pop();
        self.deadlines.remove(&key);
        Some(key)
    }

    fn skip_stale(&mut self) {
        while let Some(Reverse((deadline, key))) = self.heap.peek() {
            if self.deadlines.get(key) == Some(deadline) {
                return;
            }
            self.heap.pop();
        }
    }

    /// `key`'s current deadline.
    pub(super) fn deadline(&self, key: &K) -> Option<Instant> {
        self.deadlines.get(key).copied()
    }

    /// Every scheduled key.
    pub(super) fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.deadlines.keys()
    }

    /// Heap entries, stale ones included (tests).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_come_due_in_deadline_order_with_only_their_latest_deadline() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut timers = TimerQueue::default();
        timers.schedule(1u32, Some(at(30)));
        timers.schedule(2, Some(at(10)));
        timers.schedule(3, Some(at(20)));
        // Moved later, moved earlier, cancelled: the old entries never fire.
        timers.schedule(2, Some(at(40)));
        timers.schedule(1, Some(at(5)));
        timers.schedule(3, None);
        assert_eq!(timers.next_deadline(), Some(at(5)));
        assert_eq!(timers.pop_due(at(4)), None);
        assert_eq!(timers.pop_due(at(50)), Some(1));
        assert_eq!(timers.pop_due(at(50)), Some(2));
        assert_eq!(timers.pop_due(at(50)), None);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn rescheduling_does_not_grow_the_heap_without_bound() {
        let t0 = Instant::now();
        let mut timers = TimerQueue::default();
        for i in 0..10_000u64 {
            timers.schedule(i % 10, Some(t0 + Duration::from_millis(i)));
        }
        assert!(timers.entries() <= 2 * 10 + 64 + 1, "{}", timers.entries());
        let mut due = Vec::new();
        while let Some(key) = timers.pop_due(t0 + Duration::from_secs(60)) {
            due.push(key);
        }
        assert_eq!(due, (0..10).collect::<Vec<_>>());
    }
}
