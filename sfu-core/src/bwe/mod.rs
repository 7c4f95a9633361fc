//! Send-side bandwidth estimation of one subscriber transport's downlink, from the
//! transport-wide CC feedback the subscriber sends about what we forwarded (GCC-like:
//! draft-ietf-rmcat-gcc-02). Sans-IO: every input carries its time.
//!
//! Per packet sent, [`BandwidthEstimator::on_sent`] writes one slot of a ring (sequence
//! number, send time, size) that feedback sizes to the transport's rate. Everything else runs
//! per feedback message ([`BandwidthEstimator::on_feedback`], ~10 per second): the
//! delay-based chain ([`InterArrival`] groups → [`Trendline`] slope → [`OveruseDetector`] →
//! [`AimdRateControl`]), the [`LossController`] bound, the [`AckedBitrate`], and the result of
//! a probe cluster. The estimate is the smaller of the delay-based rate and the loss bound.
//!
//! Probing ([`BandwidthEstimator::request_probe`]): the worker fills a short cluster up to a
//! target rate with retransmissions of recent packets, so the path's headroom is measured
//! before a subscriber is switched up; failed probes back off.

mod acked;
mod history;
mod loss;
mod overuse;
mod probe;
mod rate_control;
mod trendline;

use std::time::{Duration, Instant};

use crate::rtcp::TwccFeedback;
use crate::{Bitrate, SeqNo};
use acked::AckedBitrate;
use history::SendHistory;
use loss::LossController;
use overuse::{OveruseDetector, Usage};
use probe::{ClusterFeedback, ProbeCluster};
use rate_control::AimdRateControl;
use trendline::{InterArrival, Trendline};

/// Packets remembered between send and feedback, at most (feedback comes every ~100 ms: 1024
/// covers ~10,000 packets per second); the ring grows to this from 128 slots as
/// feedback shows the transport's rate needs it.
const HISTORY: usize = 1024;
/// Packets of one feedback message looked at, at most: no more can match the history, and a
/// forged count (up to 65,535) must not buy the sender that many lookups.
const MAX_FEEDBACK_PACKETS: usize = 2 * HISTORY;
/// How long a probe cluster lasts: long enough for several sends at the worker's tick, short
/// enough that the queue it builds on a path without headroom stays small.
const PROBE_DURATION: Duration = Duration::from_millis(100);
/// The queue a probe builds (on purpose) reads as overuse until it drains: delay-based
/// decreases wait this long after the probe's result (its own measurement of the path).
const PROBE_GRACE: Duration = Duration::from_millis(500);
/// A probe's rate is at most this multiple of the estimate (probing is bounded).
const MAX_PROBE_OVER_ESTIMATE: f64 = 2.0;
/// After a probe, the next waits at least this long; each failed probe doubles it.
const PROBE_BACKOFF_MIN: Duration = Duration::from_millis(500);
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(4);
/// Feedback for this long before the estimate is trusted for allocation.
const WARM_UP: Duration = Duration::from_secs(1);

/// One subscriber transport's downlink estimate.
#[derive(Debug)]
pub struct BandwidthEstimator {
    epoch: Instant,
    history: SendHistory,
    inter_arrival: InterArrival,
    trendline: Trendline,
    detector: OveruseDetector,
    rate: AimdRateControl,
    loss: LossController,
    acked: AckedBitrate,
    first_feedback: Option<Instant>,
    probe: Option<ProbeCluster>,
    /// Feedback about the latest cluster's packets, and its highest sequence number.
    probe_feedback: ClusterFeedback,
    probe_feedback_id: u16,
    probe_last_seq: Option<SeqNo>,
    /// The rate the finished cluster aimed at (its result is judged against it).
    probe_target_bps: f64,
    next_probe_id: u16,
    next_probe_at: Option<Instant>,
    probe_backoff: Duration,
    /// Until when overuse is attributed to the latest probe rather than to the media.
    probe_grace_until: Option<Instant>,
}

/// What a finished probe cluster showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// The rate the path carried.
    pub bitrate: Bitrate,
    /// Whether it carried (about) all the cluster was sent at.
    pub succeeded: bool,
}

impl BandwidthEstimator {
    /// An estimator starting at `start` (the estimate before any feedback).
    pub fn new(now: Instant, start: Bitrate) -> Self {
        Self {
            epoch: now,
            history: SendHistory::new(HISTORY),
            inter_arrival: InterArrival::default(),
            trendline: Trendline::default(),
            detector: OveruseDetector::default(),
            rate: AimdRateControl::new(start.0 as f64),
            loss: LossController::default(),
            acked: AckedBitrate::default(),
            first_feedback: None,
            probe: None,
            probe_feedback: ClusterFeedback::default(),
            probe_feedback_id: 0,
            probe_last_seq: None,
            probe_target_bps: 0.0,
            next_probe_id: 1,
            next_probe_at: None,
            probe_backoff: PROBE_BACKOFF_MIN,
            probe_grace_until: None,
        }
    }

    fn micros(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.epoch).as_micros() as i64
    }

    /// A packet of `size` bytes carrying transport-wide sequence number `wire` was sent.
    pub fn on_sent(&mut self, now: Instant, wire: u16, size: usize) {
        let send_us = self.micros(now);
        let cluster = match &mut self.probe {
            Some(c) if send_us < c.end_us => {
                c.sent_bytes += size as u64;
                c.id
            }
            _ => 0,
        };
        let seq = self.history.record(wire, send_us, size, cluster);
        if cluster != 0 {
            self.probe_last_seq = Some(seq);
        }
    }

    /// Feedback arrived: updates the estimate. Returns a probe's result when this feedback
    /// completed one.
    pub fn on_feedback(
        &mut self,
        now: Instant,
        feedback: &TwccFeedback<'_>,
    ) -> Option<ProbeResult> {
        self.first_feedback.get_or_insert(now);
        // Sized here, once per message, so recording a packet stays one write.
        self.history
            .reach_back_to(self.history.extend(feedback.base));
        let (mut sent, mut lost, mut overused) = (0u32, 0u32, false);
        let mut usage = None;
        let mut highest = None;
        for (wire, arrival) in feedback.packets().take(MAX_FEEDBACK_PACKETS) {
            let seq = self.history.extend(wire);
            let Some(packet) = self.history.get(seq) else {
                continue; // not ours, or too old
            };
            highest = highest.max(Some(seq));
            sent += 1;
            let Some(arrival_us) = arrival else {
                lost += 1;
                continue;
            };
            self.acked.add(arrival_us, packet.size);
            if packet.cluster != 0 && packet.cluster == self.probe_feedback_id {
                self.probe_feedback
                    .add(packet.send_us, arrival_us, packet.size);
            }
            if let Some(delta) = self.inter_arrival.add(packet.send_us, arrival_us) {
                let trend = self.trendline.update(delta);
                let u = self
                    .detector
                    .detect(trend, delta.send_ms, arrival_us as f64 / 1000.0);
                overused |= u == Usage::Overusing;
                usage = Some(u);
            }
        }
        let now_ms = self.micros(now) as f64 / 1000.0;
        let usage = if overused {
            Some(Usage::Overusing)
        } else {
            usage
        };
        let probe_queue = self.probe_last_seq.is_some()
            || self.probe_grace_until.is_some_and(|until| now < until);
        if let Some(usage) = usage.filter(|&u| !(probe_queue && u == Usage::Overusing)) {
            self.rate.update(usage, self.acked.bps(), now_ms);
        }
        let delay_bps = self.rate.estimate_bps();
        let current = self
            .loss
            .bound_bps()
            .map_or(delay_bps, |b| b.min(delay_bps));
        self.loss
            .update(sent, lost, current, delay_bps, self.acked.bps(), now_ms);
        self.finish_probe(now, highest)
    }

    /// Judges the latest cluster once feedback covered its last packet.
    fn finish_probe(&mut self, now: Instant, highest: Option<SeqNo>) -> Option<ProbeResult> {
        let last = self.probe_last_seq?;
        if self.probe.is_some() || highest.is_none_or(|h| h < last) {
            return None;
        }
        self.probe_last_seq = None;
        let result = self.probe_feedback.result_bps();
        self.probe_feedback = ClusterFeedback::default();
        let succeeded = result.is_some_and(|r| r >= 0.9 * self.probe_target_bps);
        self.probe_backoff = if succeeded {
            PROBE_BACKOFF_MIN
        } else {
            (self.probe_backoff * 2).min(PROBE_BACKOFF_MAX)
        };
        self.next_probe_at = Some(now + self.probe_backoff);
        self.probe_grace_until = Some(now + PROBE_GRACE);
        let bps = result?;
        self.rate.set_at_least(bps);
        self.loss.set_at_least(bps);
        Some(ProbeResult {
            bitrate: Bitrate(bps as u64),
            succeeded,
        })
    }

    /// The estimate: the smaller of the delay-based rate and the loss bound.
    pub fn estimate(&self) -> Bitrate {
        let delay = self.rate.estimate_bps();
        let bps = self.loss.bound_bps().map_or(delay, |b| b.min(delay));
        Bitrate(bps as u64)
    }

    /// Whether feedback has been flowing long enough for the estimate to decide layers.
    pub fn is_warm(&self, now: Instant) -> bool {
        self.first_feedback
            .is_some_and(|at| now.saturating_duration_since(at) >= WARM_UP)
    }

    /// The loss fraction of the latest judged batch of packets.
    pub fn loss(&self) -> f64 {
        self.loss.last_loss()
    }

    /// Asks for a probe toward `target` (what an upgrade needs in all). Starts a cluster, at
    /// most [`MAX_PROBE_OVER_ESTIMATE`] × the estimate, unless one is running, its result is
    /// pending, or the backoff after the last has not passed. Returns whether one started.
    pub fn request_probe(&mut self, now: Instant, target: Bitrate) -> bool {
        if self.probe.is_some()
            || self.probe_last_seq.is_some()
            || self.next_probe_at.is_some_and(|at| now < at)
        {
            return false;
        }
        let bps = (target.0 as f64).min(MAX_PROBE_OVER_ESTIMATE * self.estimate().0 as f64);
        if bps <= self.estimate().0 as f64 {
            return false;
        }
        let id = self.next_probe_id;
        self.next_probe_id = self.next_probe_id.wrapping_add(1).max(1);
        let start_us = self.micros(now);
        self.probe = Some(ProbeCluster {
            id,
            bps,
            start_us,
            end_us: start_us + PROBE_DURATION.as_micros() as i64,
            sent_bytes: 0,
        });
        self.probe_feedback = ClusterFeedback::default();
        self.probe_feedback_id = id;
        self.probe_target_bps = bps;
        // A cluster that never gets a packet out is judged a failure after its feedback time.
        self.next_probe_at = Some(now + PROBE_DURATION + PROBE_BACKOFF_MAX);
        true
    }

    /// Bytes of probe packets to send now to keep the running cluster at its rate (0 when
    /// none runs). Ends the cluster once its time is up.
    pub fn probe_deficit(&mut self, now: Instant) -> usize {
        let now_us = self.micros(now);
        match &self.probe {
            Some(c) if now_us < c.end_us => c.deficit(now_us) as usize,
            Some(_) => {
                self.probe = None;
                if self.probe_last_seq.is_none() {
                    // Nothing went out in the cluster: nothing to judge; back off.
                    self.probe_backoff = (self.probe_backoff * 2).min(PROBE_BACKOFF_MAX);
                    self.next_probe_at = Some(now + self.probe_backoff);
                }
                0
            }
            None => 0,
        }
    }

    /// Whether a probe cluster is being sent.
    pub fn is_probing(&self) -> bool {
        self.probe.is_some()
    }
}

#[cfg(test)]
mod tests;
