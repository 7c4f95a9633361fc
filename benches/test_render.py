"""Unit tests of benches/render.py (run by scripts/test.sh): repeats fold into medians with
min–max, efficiency is quoted (and Janus ratios drawn) only where the median loss held."""

import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import criterion_summary  # noqa: E402
import render  # noqa: E402


def report(target, per_cpu, loss, p99=1.0, subscribers=50):
    return {
        "config": {"target": target, "scenario": "fanout", "publishers": 1,
                   "subscribers": subscribers, "pps": 500, "size": 1200,
                   "duration": {"secs": 8, "nanos": 0}},
        "outPacketsPerSecond": 25000.0, "lossPercent": loss,
        "latencyMs": {"p50": 0.5, "p99": p99, "samples": 10},
        "joinMs": {"p50": 40.0, "p99": 90.0, "samples": 51},
        "sfuCpuSeconds": 1.0, "sfuCoreBusySeconds": 1.1,
        "outPacketsPerSfuCpuSecond": per_cpu, "failed": 0,
        "srtpProfiles": ["Srtp_Aead_Aes_128_Gcm"],
    }


class RenderTest(unittest.TestCase):
    def test_median_and_spread(self):
        self.assertEqual(render.median([3, 1, 2]), 2)
        self.assertEqual(render.median([4, 1, 2, 3]), 2.5)
        self.assertIsNone(render.median([None]))
        runs = [report("mooyaho", v, 0.0) for v in (200000, 180000, 220000)]
        self.assertEqual(render.spread(runs, lambda r: r["outPacketsPerSfuCpuSecond"]),
                         "200,000 (180,000–220,000)")
        self.assertEqual(render.spread(runs[:1], lambda r: r["outPacketsPerSfuCpuSecond"]), "200,000")

    def test_repeats_make_one_row_and_loss_gates_the_ratio(self):
        ours = [report("mooyaho", v, 0.0) for v in (200000, 180000, 220000)]
        janus_held = [report("janus", v, 0.2) for v in (40000, 50000, 45000)]
        text = render.render(ours + janus_held)
        rows = [line for line in text.splitlines() if line.startswith("| mooyaho |")]
        self.assertEqual(len(rows), 1, text)
        self.assertIn("| 3 |", rows[0])
        self.assertIn("**200,000 (180,000–220,000)**", rows[0])
        self.assertIn("1 × 50: **4.4×**", text)

        janus_lossy = [report("janus", 40000, loss) for loss in (2.0, 3.0, 0.1)]
        text = render.render(ours + janus_lossy)
        janus_row = next(line for line in text.splitlines() if line.startswith("| janus |"))
        self.assertIn("⚠ loss > 0.5 %", janus_row)
        self.assertNotIn("Mooyaho vs Janus", text, "no ratio against a run that did not hold")


class CriterionSummaryTest(unittest.TestCase):
    def test_reads_each_benchmarks_latest_estimates(self):
        import json
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            new = pathlib.Path(tmp, "worker", "fanout_1", "new")
            new.mkdir(parents=True)
            estimate = lambda v: {"point_estimate": v, "confidence_interval": {
                "lower_bound": v - 1, "upper_bound": v + 1, "confidence_level": 0.95}}
            (new / "estimates.json").write_text(json.dumps(
                {"mean": estimate(10.0), "median": estimate(9.0)}))
            (new / "benchmark.json").write_text(json.dumps(
                {"full_id": "worker/fanout/1", "throughput": {"Elements": 1}}))
            # A baseline directory without benchmark.json is skipped.
            pathlib.Path(tmp, "report").mkdir()
            benches = criterion_summary.summarise(pathlib.Path(tmp))
        self.assertEqual(benches, [{"id": "worker/fanout/1", "mean": 10.0, "meanLow": 9.0,
                                    "meanHigh": 11.0, "median": 9.0,
                                    "throughput": {"Elements": 1}}])


if __name__ == "__main__":
    unittest.main()
