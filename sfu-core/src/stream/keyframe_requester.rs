//! Aggregation and throttling of keyframe requests toward one publisher (mediasoup's
//! `KeyFrameRequestManager`): however many subscribers send PLI/FIR, the publisher gets at most
//! one PLI per window; a request that arrives inside the window is remembered and sent when the
//! window ends, and repeated every window until a keyframe arrives.

use std::time::{Duration, Instant};

/// Throttle state for one track.
#[derive(Debug)]
pub struct KeyframeRequester {
    window: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeRequester {
    /// At most one upstream request per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last_sent: None,
            pending: false,
        }
    }

    /// A subscriber (or the core itself) wants a keyframe. Returns `true` when a PLI should go
    /// upstream now; `false` when the request was folded into the current window.
    pub fn request(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.poll(now)
    }

    /// Whether a pending request is due now (called from the timer tick too).
    pub fn poll(&mut self, now: Instant) -> bool {
        if !self.pending || self.last_sent.is_some_and(|t| now < t + self.window) {
            return false;
        }
        self.last_sent = Some(now);
        true
    }

    /// A keyframe arrived: nothing is pending any more.
    pub fn keyframe_received(&mut self) {
        self.pending = false;
    }

    /// Whether a request is waiting for a keyframe.
    pub fn is_pending(&self) -> bool {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_window_and_retry_until_keyframe() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut k = KeyframeRequester::new(ms(500));
        // (time ms, action: 'r' request / 'p' poll / 'k' keyframe, expected send)
        let rows = [
            (0, 'r', true),
            (10, 'r', false),
            (499, 'p', false),
            (500, 'p', true),
            (600, 'k', false),
            (1000, 'p', false),
            (1100, 'r', true),
            (1200, 'r', false),
        ];
        for (t, action, want) in rows {
            let now = t0 + ms(t);
            let got = match action {
                'r' => k.request(now),
                'p' => k.poll(now),
                _ => {
                    k.keyframe_received();
                    false
                }
            };
            assert_eq!(got, want, "at {t} ms {action}");
        }
    }
}
