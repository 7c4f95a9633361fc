#!/usr/bin/env python3
"""Summarises criterion's results into one JSON committed beside BENCHMARKS.md's tables.

    python3 benches/criterion_summary.py target/criterion benches/results/criterion-summary.json

For every benchmark criterion last ran (`<group>/<bench>/new/estimates.json` with its
`benchmark.json`): the mean and median with the mean's 95 % confidence interval (criterion's
unit: nanoseconds, or the custom measurement's — CPU-time benches say so in BENCHMARKS.md),
the throughput per iteration when declared, and the commit and date of the summary.
"""

import json
import pathlib
import subprocess
import sys
from datetime import datetime, timezone


def summarise(root):
    benches = []
    for estimates in sorted(root.glob("**/new/estimates.json")):
        new = estimates.parent
        meta_path = new / "benchmark.json"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        data = json.loads(estimates.read_text())
        mean, median = data["mean"], data["median"]
        benches.append({
            "id": meta["full_id"],
            "mean": mean["point_estimate"],
            "meanLow": mean["confidence_interval"]["lower_bound"],
            "meanHigh": mean["confidence_interval"]["upper_bound"],
            "median": median["point_estimate"],
            "throughput": meta.get("throughput"),
        })
    return benches


def commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    root, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    benches = summarise(root)
    if not benches:
        sys.exit(f"no criterion results under {root}")
    summary = {
        "commit": commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "benches": benches,
    }
    target.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(benches)} benchmarks → {target}")


if __name__ == "__main__":
    main()
