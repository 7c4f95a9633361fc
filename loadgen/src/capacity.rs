//! `--find-capacity`: one load point says little (a figure at 2 % loss flatters whoever drops
//! most). This raises the load run by run until loss or latency breaks a bound, narrows the
//! step once, and reports the last load that held, with every step's figures.

use serde::Serialize;

use crate::provenance::Provenance;
use crate::{LoadConfig, Report, Scenario};

/// When a run counts as holding its load.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bounds {
    /// Loss against what was sent, percent (the comparisons use 0.5).
    pub max_loss_percent: f64,
    /// One-way latency p99, milliseconds.
    pub max_latency_p99_ms: f64,
    /// Never try more than this load.
    pub max_load: usize,
}

/// One run of the search.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Subscribers (`meeting`: participants).
    pub load: usize,
    pub loss_percent: f64,
    pub latency_p99_ms: f64,
    pub out_packets_per_sfu_cpu_second: Option<f64>,
    /// Participants that failed to join or dropped.
    pub failed: u64,
    /// Within the bounds, nobody failed.
    pub held: bool,
}

/// The search's result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityReport {
    pub provenance: Provenance,
    pub bounds: Bounds,
    /// What was varied: `subscribers`, or `publishers` for a meeting.
    pub varied: &'static str,
    /// Every run, in order.
    pub steps: Vec<Step>,
    /// The largest load that held (none if the first run did not).
    pub capacity: Option<usize>,
    /// The full report of the run at `capacity` (efficiency is quoted from this one).
    pub at_capacity: Option<Report>,
}

impl CapacityReport {
    /// One line per step and the result, for a terminal.
    pub fn summary(&self) -> String {
        let mut lines: Vec<String> = self
            .steps
            .iter()
            .map(|s| {
                format!(
                    "{} {}: loss {:.2} %, p99 {:.2} ms, failed {}, {} out-pkt per CPU-s → {}",
                    s.load,
                    self.varied,
                    s.loss_percent,
                    s.latency_p99_ms,
                    s.failed,
                    s.out_packets_per_sfu_cpu_second
                        .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}")),
                    if s.held { "held" } else { "broke" }
                )
            })
            .collect();
        lines.push(match self.capacity {
            Some(n) => format!("capacity: {n} {}", self.varied),
            None => "capacity: none (the first load already broke a bound)".to_owned(),
        });
        lines.join("\n")
    }
}

/// The load a scenario scales with.
fn varied(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Meeting => "publishers",
        _ => "subscribers",
    }
}

fn with_load(config: &LoadConfig, load: usize) -> LoadConfig {
    let mut config = config.clone();
    match config.scenario {
        Scenario::Meeting => config.publishers = load,
        _ => config.subscribers = load,
    }
    config
}

fn held(report: &Report, bounds: &Bounds) -> bool {
    report.failed == 0
        && report.joined > 0
        && report.loss_percent <= bounds.max_loss_percent
        && report.latency_ms.p99 <= bounds.max_latency_p99_ms
}

/// The next load to try: ×1.5 while everything held, then the middle of the last held and the
/// first broken load, until they are within 10 % (or adjacent) — at most two narrowing runs.
pub(crate) fn next_load(
    held: Option<usize>,
    broke: Option<usize>,
    narrowed: usize,
    max: usize,
) -> Option<usize> {
    match (held, broke) {
        (Some(good), None) => {
            let next = (good + good / 2).max(good + 1);
            (good < max).then(|| next.min(max))
        }
        (Some(good), Some(bad)) => {
            let close = bad - good <= (good / 10).max(1);
            (!close && narrowed < 2).then_some(good + (bad - good) / 2)
        }
        _ => None,
    }
}

/// Runs the search from `config`'s load.
pub async fn find(
    config: LoadConfig,
    bounds: Bounds,
    progress: bool,
) -> anyhow::Result<CapacityReport> {
    let provenance = Provenance::collect();
    let varied = varied(config.scenario);
    let mut load = match config.scenario {
        Scenario::Meeting => config.publishers,
        _ => config.subscribers,
    }
    .clamp(1, bounds.max_load.max(1));
    let (mut steps, mut good, mut bad, mut narrowed) = (Vec::new(), None, None, 0);
    let mut at_capacity = None;
    loop {
        let report = crate::run(with_load(&config, load), false).await?;
        let step = Step {
            load,
            loss_percent: report.loss_percent,
            latency_p99_ms: report.latency_ms.p99,
            out_packets_per_sfu_cpu_second: report.out_packets_per_sfu_cpu_second,
            failed: report.failed,
            held: held(&report, &bounds),
        };
        if progress {
            eprintln!(
                "{load} {varied}: loss {:.2} %, p99 {:.2} ms → {}",
                step.loss_percent,
                step.latency_p99_ms,
                if step.held { "held" } else { "broke" }
            );
        }
        if bad.is_some() {
            narrowed += 1;
        }
        if step.held {
            good = Some(load);
            at_capacity = Some(report);
        } else {
            bad = Some(load);
        }
        steps.push(step);
        match next_load(good, bad, narrowed, bounds.max_load) {
            Some(next) => load = next,
            None => break,
        }
        // Let the last run's sessions leave before the next one joins.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Ok(CapacityReport {
        provenance,
        bounds,
        varied,
        steps,
        capacity: good,
        at_capacity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_grows_by_half_then_narrows_twice_at_most() {
        assert_eq!(next_load(Some(100), None, 0, 1000), Some(150));
        assert_eq!(next_load(Some(1), None, 0, 1000), Some(2));
        assert_eq!(next_load(Some(900), None, 0, 1000), Some(1000), "capped");
        assert_eq!(next_load(Some(1000), None, 0, 1000), None, "at the cap");
        assert_eq!(next_load(Some(100), Some(150), 0, 1000), Some(125));
        assert_eq!(next_load(Some(125), Some(150), 1, 1000), Some(137));
        assert_eq!(
            next_load(Some(125), Some(137), 2, 1000),
            None,
            "two narrowings"
        );
        assert_eq!(
            next_load(Some(100), Some(105), 0, 1000),
            None,
            "within 10 %"
        );
        assert_eq!(next_load(Some(1), Some(2), 0, 1000), None, "adjacent");
        assert_eq!(
            next_load(None, Some(50), 0, 1000),
            None,
            "the first load broke"
        );
    }
}
