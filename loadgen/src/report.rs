//! The load report: JSON for scripts, a summary for people.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::{LoadConfig, Role, Scenario, Totals};
use crate::ceiling::Ceiling;
use crate::hostile::HostileReport;
use crate::provenance::Provenance;
use crate::simulcast::SimulcastReport;

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The code, machine and command behind this report.
    pub provenance: Provenance,
    /// The run's parameters.
    pub config: LoadConfig,
    /// Participants that joined, and that failed (with the first errors).
    pub joined: u64,
    /// Participants that failed to join or dropped.
    pub failed: u64,
    /// The first errors, if any.
    pub errors: Vec<String>,
    /// Seconds until every participant joined.
    pub join_all_seconds: f64,
    /// Join time (WebSocket open → media flowing), milliseconds.
    pub join_ms: Percentiles,
    /// Where the receiving participants' join time went, phase by phase.
    pub join_phases_ms: JoinPhases,
    /// Measurement window, seconds.
    pub window_seconds: f64,
    /// RTP packets the publishers sent (whole run).
    pub packets_sent: u64,
    /// RTP packets the subscribers received (whole run).
    pub packets_received: u64,
    /// Packets per second out of the SFU to our subscribers, in the window.
    pub out_packets_per_second: f64,
    /// Loss against what was sent: of the packets publishers sent in the window times each
    /// stream's receivers, the share no subscriber got by the end of the run (late, dropped or
    /// still queued all count), percent.
    pub loss_percent: f64,
    /// Packets publishers sent in the window × each stream's receivers.
    pub packets_expected_in_window: u64,
    /// Of those, distinct packets subscribers received.
    pub packets_received_of_window: u64,
    /// Loss from sequence gaps between each received stream's first and last packet (the old
    /// measure: blind to a stream's missing tail and to streams that never arrived), percent.
    pub gap_loss_percent: f64,
    /// Packets our subscribers dropped on purpose (`--loss`): not counted as received.
    pub dropped_by_induced_loss: u64,
    /// Sequence numbers our subscribers NACKed (each request counted), packets that came back
    /// after a NACK, and receiver reports sent.
    pub nacked_packets: u64,
    pub recovered_packets: u64,
    /// Retransmissions that arrived on an RTX SSRC (RFC 4588; the node sends them there when
    /// RTX is negotiated), counted before deduplication.
    pub rtx_received: u64,
    /// Video packets that went missing and never came back: given up after 3 NACKs, or still
    /// missing when the run stopped (`recoveredPackets` are the ones that did).
    pub unrecovered_packets: u64,
    pub receiver_reports_sent: u64,
    /// Transport-wide-cc feedback packets our subscribers sent (every 100 ms where negotiated).
    pub twcc_feedback_sent: u64,
    /// SRTP packets that failed authentication at our subscribers.
    pub srtp_auth_failures: u64,
    /// One-way latency publisher → SFU → subscriber, milliseconds.
    pub latency_ms: Percentiles,
    /// SFU CPU seconds in the window (from `/proc` with `--sfu-pid`, else its load reports).
    pub sfu_cpu_seconds: Option<f64>,
    /// The core the SFU was pinned to (`taskset -c N`), and that core's busy seconds in the
    /// window from `/proc/stat`, whoever ran there: well above `sfuCpuSeconds` means something
    /// else shared the core (the kernel's softirq work for the SFU's packets counts here too).
    pub sfu_core: Option<usize>,
    /// See `sfuCore`.
    pub sfu_core_busy_seconds: Option<f64>,
    /// Where the SFU's CPU time went in the window, per thread name, busiest first.
    pub sfu_threads: Vec<ThreadCpu>,
    /// SRTP protection profiles our participants negotiated with the target.
    pub srtp_profiles: Vec<String>,
    /// The headline: packets the SFU sent per CPU-second it used.
    pub out_packets_per_sfu_cpu_second: Option<f64>,
    /// SFU resident memory at the end of the window, MiB (with `--sfu-pid`).
    pub sfu_rss_mib: Option<f64>,
    /// The least-squares slope of the SFU's resident memory over the window's per-second
    /// samples, MiB per minute: ≈ 0 in a steady soak; a leak shows as a steady climb.
    pub sfu_rss_slope_mib_per_minute: Option<f64>,
    /// SFU memory per participant: resident growth from before the joins to the end of the
    /// window, divided by the participants that joined, KiB.
    pub sfu_rss_per_participant_kib: Option<f64>,
    /// The SFU's own count of packets sent per second (its load reports, averaged).
    pub sfu_reported_out_pps: Option<f64>,
    /// Generator CPU seconds in the window: near `window × cores` means the generator, not the
    /// SFU, was the limit.
    pub generator_cpu_seconds: Option<f64>,
    /// Generator CPU seconds for the whole run.
    pub generator_total_cpu_seconds: Option<f64>,
    /// This machine's ceiling for the scenario's packet size (`--ceiling`).
    pub ceiling: Option<Ceiling>,
    /// `outPacketsPerSfuCpuSecond` as a fraction of the ceiling's out-packets per CPU-second.
    pub fraction_of_ceiling: Option<f64>,
    /// Per-second rates in the measurement window.
    pub timeline: Vec<Sample>,
    /// Every latency sample's percentile curve: `(percent, milliseconds)` at 0, 1, …, 100 and
    /// 99.9 (for the CDF chart).
    pub latency_cdf_ms: Vec<(f64, f64)>,
    /// What the hostile participant sent (`--hostile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostile: Option<HostileReport>,
    /// The hosting node's kill and each subscriber's media gap (`failover`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverReport>,
    /// The subscribers that joined and left during the window (`churn`); the figures above
    /// (loss, latency, `joined`) are the steady members'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<crate::churn::ChurnReport>,
    /// Each layer's packets per second in and out (`simulcast`); `lossPercent` above is then
    /// the sequence-gap loss (subscribers switch layers inside the window; the node numbers
    /// each subscription's packets in one sequence across switches), and
    /// `packetsExpectedInWindow` each layer's packets × the subscribers that got mostly it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulcast: Option<SimulcastReport>,
    /// Latency split by node and each node's CPU per packet sent (`span`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<crate::span::SpanReport>,
}

/// Which node the `failover` scenario killed, and when.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeKill {
    /// The registry id of the node that hosted the room.
    pub node: u64,
    /// Its PID (SIGKILL).
    pub pid: u32,
    /// Seconds into the measurement window.
    pub at_seconds: f64,
    /// The node the channel was on at the end of the window.
    pub new_node: Option<u64>,
}

/// The `failover` scenario's result: the hosting node was SIGKILLed with media flowing; every
/// subscriber's gap runs from the last packet it received before the kill to the first
/// SRTP-verified packet on its new transport after `sfuRestart`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverReport {
    #[serde(flatten)]
    pub kill: NodeKill,
    /// Subscribers in the run.
    pub subscribers: usize,
    /// Of those, subscribers that had media before the kill (a gap can be measured).
    pub measured: usize,
    /// Subscribers whose media came back (a verified packet on a new transport) by the end of
    /// the window.
    pub recovered: usize,
    /// `recovered` of `subscribers`, percent.
    pub recovered_percent: f64,
    /// The recovered subscribers' media gaps, milliseconds.
    pub gap_ms: GapStats,
    /// Every recovered subscriber's gap, milliseconds, shortest first.
    pub gaps_ms: Vec<f64>,
    /// `sfuRestart` messages our participants received.
    pub restarts_received: u64,
    /// Publishers that published again and connected to the new node.
    pub republished: u64,
    /// Subscribers that connected to the new room's node.
    pub resubscribed: u64,
    /// Recovery steps that failed, with the first errors.
    pub recovery_failures: u64,
    pub recovery_errors: Vec<String>,
}

/// p50, p99 and the largest of a sample.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct GapStats {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl GapStats {
    /// Nearest-rank percentiles of `sorted` (ascending).
    fn of_sorted(sorted: &[f64]) -> Self {
        let Some(&max) = sorted.last() else {
            return Self::default();
        };
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max,
            samples: sorted.len(),
        }
    }
}

impl FailoverReport {
    fn build(kill: NodeKill, config: &LoadConfig, totals: &Totals) -> Self {
        let continuity = totals.failover.continuity.lock().expect("lock").clone();
        let mut gaps_ms: Vec<f64> = continuity
            .iter()
            .filter_map(|c| c.gap_ns())
            .map(|ns| ns as f64 / 1e6)
            .collect();
        gaps_ms.sort_by(f64::total_cmp);
        let recovered = continuity
            .iter()
            .filter(|c| c.first_after_kill_ns.is_some())
            .count();
        let subscribers = config.subscribers;
        Self {
            kill,
            subscribers,
            measured: continuity
                .iter()
                .filter(|c| c.last_before_kill_ns.is_some())
                .count(),
            recovered,
            recovered_percent: if subscribers == 0 {
                0.0
            } else {
                recovered as f64 * 100.0 / subscribers as f64
            },
            gap_ms: GapStats::of_sorted(&gaps_ms),
            gaps_ms,
            restarts_received: totals.failover.restarts.load(Ordering::Relaxed),
            republished: totals.failover.republished.load(Ordering::Relaxed),
            resubscribed: totals.failover.resubscribed.load(Ordering::Relaxed),
            recovery_failures: totals.failover.failures.load(Ordering::Relaxed),
            recovery_errors: totals.failover.errors.lock().expect("lock").clone(),
        }
    }

    /// One line for a terminal.
    pub fn summary(&self) -> String {
        let new_node = self
            .kill
            .new_node
            .map_or_else(|| "no node".to_owned(), |n| format!("node {n}"));
        format!(
            "failover: SIGKILL node {} at {:.1} s → channel on {new_node}; recovered {}/{} \
             subscribers ({:.0} %); media gap p50 {:.0} ms p99 {:.0} ms max {:.0} ms; \
             {} sfuRestart, {} re-published, {} re-subscribed, {} recovery failures",
            self.kill.node,
            self.kill.at_seconds,
            self.recovered,
            self.subscribers,
            self.recovered_percent,
            self.gap_ms.p50,
            self.gap_ms.p99,
            self.gap_ms.max,
            self.restarts_received,
            self.republished,
            self.resubscribed,
            self.recovery_failures,
        )
    }
}

/// CPU seconds of one thread name of the SFU in the window.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ThreadCpu {
    /// The thread's name (threads of one pool share it and are summed).
    pub name: String,
    /// CPU seconds in the window.
    pub cpu_seconds: f64,
}

/// Per-name CPU growth between two samples, busiest first (threads that used nothing left out).
pub(crate) fn thread_deltas(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> Vec<ThreadCpu> {
    let mut deltas: Vec<ThreadCpu> = after
        .iter()
        .map(|(name, end)| ThreadCpu {
            name: name.clone(),
            cpu_seconds: end - before.get(name).copied().unwrap_or(0.0),
        })
        .filter(|t| t.cpu_seconds > 0.0)
        .collect();
    deltas.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds));
    deltas
}

/// What [`crate::run`] measured besides the participants' shared counters.
pub(crate) struct Measurements {
    pub(crate) window: Duration,
    pub(crate) joined_in: Duration,
    pub(crate) sfu_cpu: Option<f64>,
    /// The core the SFU is pinned to and its busy seconds in the window.
    pub(crate) sfu_core: Option<(usize, f64)>,
    pub(crate) sfu_threads: Vec<ThreadCpu>,
    pub(crate) generator_window_cpu: Option<f64>,
    pub(crate) generator_cpu: Option<f64>,
    pub(crate) sfu_loads: Vec<mooyaho_server_sdk::SfuLoad>,
    pub(crate) timeline: Vec<Sample>,
    pub(crate) ceiling: Option<Ceiling>,
    /// SFU resident memory before anyone joined, and at the end of the window, MiB.
    pub(crate) sfu_rss_idle_mib: Option<f64>,
    pub(crate) sfu_rss_loaded_mib: Option<f64>,
    pub(crate) hostile: Option<HostileReport>,
    pub(crate) provenance: Provenance,
    /// The node the `failover` scenario killed.
    pub(crate) kill: Option<NodeKill>,
    /// What the `churn` scenario's movers did.
    pub(crate) churn: Option<crate::churn::ChurnReport>,
    /// The `span` scenario's nodes.
    pub(crate) span: Option<crate::span::SpanReport>,
}

/// One second of the measurement window.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds since the window opened.
    pub seconds: f64,
    /// Packets our subscribers received per second.
    pub out_packets_per_second: f64,
    /// Packets our publishers sent per second.
    pub sent_packets_per_second: f64,
    /// The SFU's resident memory then (with `--sfu-pid`), MiB.
    pub sfu_rss_mib: Option<f64>,
}

/// p50 and p99 of a sample.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Samples.
    pub samples: usize,
}

/// One receiving participant's join, milliseconds per phase (each from the end of the last).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JoinPhase {
    pub(crate) signaling: u32,
    pub(crate) offer: u32,
    pub(crate) answer: u32,
    pub(crate) connect: u32,
}

/// Where the join time went: p50/p99 of each phase over the receiving participants. The
/// phases follow each other, so a participant's sum is its join time.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinPhases {
    /// WebSocket open → `enterSuccess` (connect, integrate over REST, enter).
    pub signaling: Percentiles,
    /// → the node's subscribe offer arrives (for a publisher, its publish first).
    pub offer: Percentiles,
    /// → the answer is acknowledged (the node has applied it).
    pub answer: Percentiles,
    /// → ICE and DTLS complete on the receiving transport.
    pub connect: Percentiles,
}

impl JoinPhases {
    pub(crate) fn of(phases: &[JoinPhase]) -> Self {
        let each =
            |phase: fn(&JoinPhase) -> u32| Percentiles::of(phases.iter().map(phase).collect(), 1.0);
        Self {
            signaling: each(|p| p.signaling),
            offer: each(|p| p.offer),
            answer: each(|p| p.answer),
            connect: each(|p| p.connect),
        }
    }
}

impl Percentiles {
    pub(crate) fn of(mut values: Vec<u32>, scale: f64) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let at =
            |q: f64| f64::from(values[((values.len() - 1) as f64 * q).round() as usize]) * scale;
        Self {
            p50: at(0.5),
            p99: at(0.99),
            samples: values.len(),
        }
    }
}

impl Report {
    pub(crate) fn build(config: &LoadConfig, totals: &Totals, measured: Measurements) -> Self {
        let Measurements {
            window,
            joined_in,
            sfu_cpu,
            sfu_core,
            sfu_threads,
            generator_window_cpu,
            generator_cpu,
            sfu_loads,
            timeline,
            ceiling,
            sfu_rss_idle_mib,
            sfu_rss_loaded_mib,
            hostile,
            provenance,
            kill,
            churn,
            span,
        } = measured;
        let latencies = totals.latency_us.lock().expect("lock").clone();
        let window_s = window.as_secs_f64().max(1e-3);
        let in_window = totals.received_in_window.load(Ordering::Relaxed) as f64;
        let reported_cpu = (!sfu_loads.is_empty()).then(|| {
            sfu_loads.iter().map(|l| l.cpu_percent as f64).sum::<f64>()
                / sfu_loads.len() as f64
                / 100.0
                * window_s
        });
        let sfu_cpu_seconds = sfu_cpu.or(reported_cpu);
        let per_cpu = sfu_cpu_seconds.filter(|c| *c > 0.0).map(|c| in_window / c);
        let expected = totals.expected.load(Ordering::Relaxed);
        let lost = totals.lost.load(Ordering::Relaxed);
        // Simulcast subscribers each receive one layer: judged per layer.
        let simulcast = (config.scenario == Scenario::Simulcast)
            .then(|| SimulcastReport::build(&totals.simulcast, window_s));
        let window_expected = if simulcast.is_some() {
            totals.simulcast.expected()
        } else {
            expected_in_window(
                &totals.window_sent.lock().expect("lock"),
                &totals.room_receivers.lock().expect("lock"),
            )
        };
        let window_received = totals.window_received.load(Ordering::Relaxed);
        let gap_loss_percent = if expected == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / expected as f64
        };
        let window_loss_percent = if simulcast.is_some() {
            // Subscribers switch layers: what the node sent each one is its one renumbered
            // sequence, whose gaps are the loss.
            gap_loss_percent
        } else if window_expected == 0 {
            0.0
        } else {
            window_expected.saturating_sub(window_received) as f64 * 100.0 / window_expected as f64
        };
        let reported_out = (!sfu_loads.is_empty()).then(|| {
            sfu_loads
                .iter()
                .map(|l| l.packets_out_per_sec as f64)
                .sum::<f64>()
                / sfu_loads.len() as f64
        });
        Self {
            provenance,
            config: config.clone(),
            joined: totals.joined.load(Ordering::Relaxed),
            failed: totals.failed.load(Ordering::Relaxed),
            errors: totals.errors.lock().expect("lock").clone(),
            join_all_seconds: joined_in.as_secs_f64(),
            join_ms: Percentiles::of(totals.join_ms.lock().expect("lock").clone(), 1.0),
            join_phases_ms: JoinPhases::of(&totals.join_phases.lock().expect("lock")),
            window_seconds: window_s,
            packets_sent: totals.sent.load(Ordering::Relaxed),
            packets_received: totals.received.load(Ordering::Relaxed),
            out_packets_per_second: in_window / window_s,
            loss_percent: window_loss_percent,
            packets_expected_in_window: window_expected,
            packets_received_of_window: window_received,
            gap_loss_percent,
            srtp_auth_failures: totals.auth_failures.load(Ordering::Relaxed),
            dropped_by_induced_loss: totals.dropped_by_loss.load(Ordering::Relaxed),
            nacked_packets: totals.nacked.load(Ordering::Relaxed),
            recovered_packets: totals.recovered.load(Ordering::Relaxed),
            rtx_received: totals.rtx_received.load(Ordering::Relaxed),
            unrecovered_packets: totals.unrecovered.load(Ordering::Relaxed),
            receiver_reports_sent: totals.receiver_reports.load(Ordering::Relaxed),
            twcc_feedback_sent: totals.twcc_feedback.load(Ordering::Relaxed),
            latency_cdf_ms: cdf(latencies.clone(), 1e-3),
            latency_ms: Percentiles::of(latencies, 1e-3),
            sfu_cpu_seconds,
            sfu_core: sfu_core.map(|(core, _)| core),
            sfu_core_busy_seconds: sfu_core.map(|(_, busy)| busy),
            sfu_threads,
            srtp_profiles: totals
                .srtp_profiles
                .lock()
                .expect("lock")
                .iter()
                .cloned()
                .collect(),
            out_packets_per_sfu_cpu_second: per_cpu,
            fraction_of_ceiling: per_cpu
                .zip(ceiling.as_ref())
                .map(|(ours, c)| ours / c.out_packets_per_cpu_second),
            ceiling,
            sfu_rss_slope_mib_per_minute: rss_slope_per_minute(&timeline),
            timeline,
            sfu_rss_mib: sfu_rss_loaded_mib,
            sfu_rss_per_participant_kib: sfu_rss_loaded_mib
                .zip(sfu_rss_idle_mib)
                .filter(|_| totals.joined.load(Ordering::Relaxed) > 0)
                .map(|(loaded, idle)| {
                    (loaded - idle) * 1024.0 / totals.joined.load(Ordering::Relaxed) as f64
                }),
            sfu_reported_out_pps: reported_out,
            generator_cpu_seconds: generator_window_cpu,
            generator_total_cpu_seconds: generator_cpu,
            hostile,
            failover: kill.map(|kill| FailoverReport::build(kill, config, totals)),
            churn,
            simulcast,
            span,
        }
    }

    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let per_cpu = self
            .out_packets_per_sfu_cpu_second
            .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"));
        format!(
            "{:?}: joined {} (failed {}), out {:.0} pkt/s, loss {:.2} %, latency p50 {:.2} ms p99 {:.2} ms, \
             join p50 {:.0} ms p99 {:.0} ms, SFU CPU {:?} s → {per_cpu} out-pkt per CPU-s, generator CPU {:?} s",
            self.config.scenario,
            self.joined,
            self.failed,
            self.out_packets_per_second,
            self.loss_percent,
            self.latency_ms.p50,
            self.latency_ms.p99,
            self.join_ms.p50,
            self.join_ms.p99,
            self.sfu_cpu_seconds.map(|c| (c * 100.0).round() / 100.0),
            self.generator_cpu_seconds
                .map(|c| (c * 100.0).round() / 100.0),
        ) + &if self.join_phases_ms.connect.samples > 0 {
            let JoinPhases {
                signaling,
                offer,
                answer,
                connect,
            } = &self.join_phases_ms;
            format!(
                "\njoin phases p50/p99 ms: signaling {:.0}/{:.0}, offer {:.0}/{:.0}, answer {:.0}/{:.0}, \
                 ICE+DTLS {:.0}/{:.0}",
                signaling.p50,
                signaling.p99,
                offer.p50,
                offer.p99,
                answer.p50,
                answer.p99,
                connect.p50,
                connect.p99
            )
        } else {
            String::new()
        } + &if self.dropped_by_induced_loss > 0 {
            format!(
                "\ninduced loss: dropped {}, NACKed {}, RTX received {}, recovered {}, unrecovered {}",
                self.dropped_by_induced_loss,
                self.nacked_packets,
                self.rtx_received,
                self.recovered_packets,
                self.unrecovered_packets
            )
        } else {
            String::new()
        } + &self.ceiling.as_ref().map_or_else(String::new, |c| {
            format!(
                "\nceiling ({} B, {} receivers): SRTP {:.0}/CPU-s, UDP {:.0}/CPU-s, both {:.0} \
                 out-pkt/CPU-s → SFU at {:.0} % of the ceiling",
                c.packet_size,
                c.receivers,
                c.srtp_packets_per_cpu_second,
                c.udp_packets_per_cpu_second,
                c.out_packets_per_cpu_second,
                self.fraction_of_ceiling.unwrap_or(0.0) * 100.0
            )
        }) + &self
            .simulcast
            .as_ref()
            .map_or_else(String::new, |s| format!("\n{}", s.summary()))
            + &self
                .hostile
                .as_ref()
                .map_or_else(String::new, |h| format!("\n{}", h.summary()))
            + &self
                .failover
                .as_ref()
                .map_or_else(String::new, |f| format!("\n{}", f.summary()))
            + &self
                .span
                .as_ref()
                .map_or_else(String::new, |s| format!("\n{}", s.summary()))
            + &self.churn.as_ref().map_or_else(String::new, |c| {
                format!(
                    "\n{}; SFU RSS slope {} MiB/min",
                    c.summary(),
                    self.sfu_rss_slope_mib_per_minute
                        .map_or_else(|| "n/a (no --sfu-pid)".to_owned(), |s| format!("{s:.2}"))
                )
            })
    }
}

/// Packets the subscribers should have received: each stream's packets sent in the window
/// times its room's receivers (every receiver there but the publisher itself).
fn expected_in_window(sent: &[(u64, Role)], room_receivers: &[u64]) -> u64 {
    sent.iter()
        .map(|&(packets, role)| {
            let receivers = room_receivers.get(role.room).copied().unwrap_or(0);
            packets * receivers.saturating_sub(u64::from(role.subscribe))
        })
        .sum()
}

/// Least-squares slope of the samples' RSS against time, per minute (at least 3 samples).
fn rss_slope_per_minute(timeline: &[Sample]) -> Option<f64> {
    let points: Vec<(f64, f64)> = timeline
        .iter()
        .filter_map(|s| Some((s.seconds, s.sfu_rss_mib?)))
        .collect();
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (mean_t, mean_m) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_m)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    (variance > 0.0).then(|| covariance / variance * 60.0)
}

/// The percentile curve of `values` (scaled): every whole percent, plus 99.9.
fn cdf(mut values: Vec<u32>, scale: f64) -> Vec<(f64, f64)> {
    if values.is_empty() {
        return Vec::new();
    }
    values.sort_unstable();
    let at = |q: f64| f64::from(values[((values.len() - 1) as f64 * q).round() as usize]) * scale;
    let mut curve: Vec<(f64, f64)> = (0..=100)
        .map(|p| (f64::from(p), at(f64::from(p) / 100.0)))
        .collect();
    curve.insert(100, (99.9, at(0.999)));
    curve
}

pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The SFU nodes' load as the signaling server reports it (first node with a report).
pub(crate) async fn sfu_load(
    rest: &mooyaho_server_sdk::Mooyaho,
) -> Option<mooyaho_server_sdk::SfuLoad> {
    let nodes = rest.list_sfu_servers().await.ok()?;
    let mut loads = nodes.into_iter().filter_map(|n| n.load);
    let first = loads.next()?;
    Some(loads.fold(first, |mut a, b| {
        a.packets_out_per_sec += b.packets_out_per_sec;
        a.cpu_percent += b.cpu_percent;
        a
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_slope_is_a_least_squares_fit_per_minute() {
        let sample = |seconds: f64, rss: Option<f64>| Sample {
            seconds,
            out_packets_per_second: 0.0,
            sent_packets_per_second: 0.0,
            sfu_rss_mib: rss,
        };
        // +0.5 MiB a second = 30 MiB a minute, noise around it cancels.
        let rising: Vec<_> = (0..10)
            .map(|i| {
                sample(
                    f64::from(i),
                    Some(100.0 + 0.5 * f64::from(i) + [0.1, -0.1][i as usize % 2]),
                )
            })
            .collect();
        let slope = rss_slope_per_minute(&rising).unwrap();
        assert!((slope - 30.0).abs() < 1.0, "{slope}");
        let flat: Vec<_> = (0..5).map(|i| sample(f64::from(i), Some(80.0))).collect();
        assert_eq!(rss_slope_per_minute(&flat), Some(0.0));
        assert_eq!(rss_slope_per_minute(&flat[..2]), None, "too few samples");
        let unknown: Vec<_> = (0..5).map(|i| sample(f64::from(i), None)).collect();
        assert_eq!(rss_slope_per_minute(&unknown), None);
    }

    #[test]
    fn gap_stats_are_nearest_rank_with_the_maximum() {
        assert_eq!(GapStats::of_sorted(&[]), GapStats::default());
        let one = GapStats::of_sorted(&[7.0]);
        assert_eq!((one.p50, one.p99, one.max, one.samples), (7.0, 7.0, 7.0, 1));
        let gaps: Vec<f64> = (1..=100).map(f64::from).collect();
        let stats = GapStats::of_sorted(&gaps);
        assert_eq!((stats.p50, stats.p99, stats.max), (51.0, 99.0, 100.0));
    }

    #[test]
    fn thread_deltas_are_per_name_growth_busiest_first() {
        let before = [("a".to_owned(), 1.0), ("b".to_owned(), 5.0)].into();
        let after = [
            ("a".to_owned(), 4.0),
            ("b".to_owned(), 5.0),
            ("c".to_owned(), 0.5),
        ]
        .into();
        let deltas = thread_deltas(&before, &after);
        let names: Vec<_> = deltas
            .iter()
            .map(|t| (t.name.as_str(), t.cpu_seconds))
            .collect();
        assert_eq!(
            names,
            [("a", 3.0), ("c", 0.5)],
            "b used nothing in the window"
        );
    }

    #[test]
    fn expected_packets_are_each_stream_times_its_other_receivers() {
        let role = |subscribe, room| Role {
            publish: true,
            subscribe,
            room,
            asks_low: false,
        };
        // Fan-out: 1 publisher (not receiving), 50 receivers.
        assert_eq!(expected_in_window(&[(100, role(false, 0))], &[50]), 5000);
        // Meeting: 4 participants all publish and receive the 3 others.
        assert_eq!(expected_in_window(&[(10, role(true, 0)); 4], &[4]), 120);
        assert_eq!(expected_in_window(&[], &[9]), 0);
        assert_eq!(expected_in_window(&[(10, role(true, 0))], &[0]), 0);
        // Two rooms: each stream reaches only its own room's receivers.
        let sent = [
            (10, role(true, 0)),
            (10, role(true, 0)),
            (10, role(false, 1)),
        ];
        assert_eq!(expected_in_window(&sent, &[2, 5]), 10 + 10 + 50);
        assert_eq!(
            expected_in_window(&sent, &[2]),
            20,
            "a room nobody received in"
        );
    }
}
