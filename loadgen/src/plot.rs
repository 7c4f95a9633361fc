//! `--plot`: SVG charts (plotters). One run: packets per second over the window and the
//! latency percentile curve. A sweep (several reports, e.g. by `benches/run.sh`): out-packets
//! per SFU CPU-second and latency p99 against subscriber count, one line per target.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde_json::Value;

use crate::Report;

const SIZE: (u32, u32) = (1100, 420);

/// A line to draw: its label, colour and how to read its value.
type Series<T> = (&'static str, RGBColor, fn(&T) -> f64);
const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// The charts of one run: rates over time (left) and the latency curve (right).
pub fn run_chart(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);

    let t_max = report.timeline.last().map_or(1.0, |s| s.seconds).max(1.0);
    let pps_max = report
        .timeline
        .iter()
        .map(|s| s.out_packets_per_second.max(s.sent_packets_per_second))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!("{:?}: packets per second", report.config.scenario),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..pps_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("packets/s")
        .draw()?;
    let series: [Series<crate::Sample>; 2] = [
        ("out of the SFU", PALETTE[0], |s| s.out_packets_per_second),
        ("into the SFU", PALETTE[1], |s| s.sent_packets_per_second),
    ];
    for (label, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                report.timeline.iter().map(|s| (s.seconds, value(s))),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let lat_max = report
        .latency_cdf_ms
        .iter()
        .map(|&(_, ms)| ms)
        .fold(0.1, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            format!(
                "one-way latency (p50 {:.2} ms, p99 {:.2} ms)",
                report.latency_ms.p50, report.latency_ms.p99
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..lat_max, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("percentile")
        .draw()?;
    chart.draw_series(LineSeries::new(
        report.latency_cdf_ms.iter().map(|&(p, ms)| (ms, p)),
        PALETTE[0].stroke_width(2),
    ))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One point of a sweep chart.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    subscribers: f64,
    out_pps: f64,
    per_cpu: f64,
    p99_ms: f64,
}

/// Groups JSON reports by target (and scenario) into sorted series of points.
fn sweep_series(reports: &[Value]) -> BTreeMap<String, Vec<Point>> {
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for report in reports {
        let config = &report["config"];
        let target = config["target"]
            .as_str()
            .or_else(|| config["target"]["kind"].as_str())
            .unwrap_or("mooyaho");
        let scenario = config["scenario"].as_str().unwrap_or("?");
        // A meeting's size is its participant count (everyone publishes and subscribes).
        let size = if scenario == "meeting" {
            &config["publishers"]
        } else {
            &config["subscribers"]
        };
        let (Some(subscribers), Some(per_cpu)) =
            (size.as_f64(), report["outPacketsPerSfuCpuSecond"].as_f64())
        else {
            continue;
        };
        let p99_ms = report["latencyMs"]["p99"].as_f64().unwrap_or(0.0);
        let out_pps = report["outPacketsPerSecond"].as_f64().unwrap_or(0.0);
        series
            .entry(format!("{target} {scenario}"))
            .or_default()
            .push(Point {
                subscribers,
                out_pps,
                per_cpu,
                p99_ms,
            });
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.subscribers.total_cmp(&b.subscribers));
    }
    series
}

/// Out-packets per second, out-packets per SFU CPU-second and latency p99 against subscriber
/// count.
pub fn sweep_chart(reports: &[Value], path: &Path) -> anyhow::Result<()> {
    let series = sweep_series(reports);
    anyhow::ensure!(
        !series.is_empty(),
        "no report has subscribers and out-packets per SFU CPU-second"
    );
    let points = || series.values().flatten();
    let x_max = points().map(|p| p.subscribers).fold(1.0, f64::max) * 1.05;
    let root = SVGBackend::new(path, (SIZE.0 * 3 / 2, SIZE.1)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, 3));
    let panels: [(&str, Series<Point>); 3] = [
        (
            "out-packets per second",
            ("packets/s", PALETTE[0], |p| p.out_pps),
        ),
        (
            "out-packets per SFU CPU-second",
            ("packets per CPU-s", PALETTE[0], |p| p.per_cpu),
        ),
        ("latency p99", ("milliseconds", PALETTE[0], |p| p.p99_ms)),
    ];
    for (area, (caption, (y_desc, _, value))) in areas.iter().zip(panels) {
        let y_max = points().map(value).fold(0.1, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("subscribers (meeting: participants)")
            .y_desc(y_desc)
            .draw()?;
        for (i, (label, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.subscribers, value(p))),
                    color.stroke_width(2),
                ))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.subscribers, value(p)), 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(target: &str, subscribers: u32, per_cpu: f64) -> Value {
        json!({
            "config": { "target": target, "scenario": "fanout", "subscribers": subscribers },
            "outPacketsPerSfuCpuSecond": per_cpu,
            "latencyMs": { "p50": 1.0, "p99": 2.0 },
        })
    }

    #[test]
    fn sweep_groups_by_target_and_sorts_by_subscribers() {
        let reports = [
            report("mooyaho", 500, 3.0),
            report("janus", 100, 1.0),
            report("mooyaho", 100, 2.0),
            json!({ "config": {} }),
            json!({
                "config": { "target": "mooyaho", "scenario": "meeting", "publishers": 10, "subscribers": 0 },
                "outPacketsPerSfuCpuSecond": 5.0,
            }),
        ];
        let series = sweep_series(&reports);
        assert_eq!(series.len(), 3);
        assert_eq!(series["mooyaho meeting"][0].subscribers, 10.0);
        let ours: Vec<f64> = series["mooyaho fanout"]
            .iter()
            .map(|p| p.subscribers)
            .collect();
        assert_eq!(ours, [100.0, 500.0]);
        assert_eq!(series["janus fanout"][0].per_cpu, 1.0);
    }

    #[test]
    fn sweep_chart_writes_an_svg_with_every_series() {
        let dir = std::env::temp_dir().join(format!("mooyaho-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sweep.svg");
        sweep_chart(
            &[report("mooyaho", 100, 2.0), report("janus", 100, 1.0)],
            &path,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("mooyaho fanout"));
        assert!(svg.contains("janus fanout"));
        assert!(sweep_chart(&[json!({})], &path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
