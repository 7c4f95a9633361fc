#!/usr/bin/env python3
"""Regenerates the generated part of BENCHMARKS.md from `mooyaho loadgen` JSON reports.

    python3 benches/render.py benches/results BENCHMARKS.md

Everything between the `<!-- generated:begin -->` and `<!-- generated:end -->` markers is
replaced (the markers are appended when missing); the hand-written rest is left alone. Tables
per scenario (ours, Janus, this machine's ceiling, LiveKit's published per-vCPU figure for
context), Janus ratios, the charts in docs/bench/, the machine and the exact commands.
"""

import json
import pathlib
import platform
import subprocess
import sys
from datetime import datetime, timezone

BEGIN, END = "<!-- generated:begin -->", "<!-- generated:end -->"
SCENARIOS = ["fanout", "livestream", "audio", "meeting"]
# anchors.md: LiveKit's published benchmark (c2-standard-16), per busy vCPU, with SRTP.
LIVEKIT = {
    "audio": "≈ 75k out-pkt/s per busy vCPU (10 × 3000 audio, 959k pps at 80 % of 16 vCPU)",
    "fanout": "≈ 40k out-pkt/s per busy vCPU for video (≈ 300 Mbps)",
    "livestream": "≈ 40k out-pkt/s per busy vCPU for video (≈ 300 Mbps)",
    "meeting": "≈ 60k out-pkt/s per busy vCPU (150 × 150 meeting)",
}


LIVEKIT_SOURCE = "https://docs.livekit.io/home/self-hosting/benchmark/"


def fmt(value, digits=0, scale=1.0):
    if value is None:
        return "–"
    return f"{value * scale:,.{digits}f}"


def size_of(report):
    config = report["config"]
    rooms = config.get("rooms", 1)
    if config["scenario"] == "meeting":
        size, shape = config["publishers"], f"{config['publishers']} × {config['publishers']}"
    else:
        size, shape = config["subscribers"], f"{config['publishers']} × {config['subscribers']}"
    if rooms > 1:
        shape += f" × {rooms} rooms"
    if config.get("loss_percent"):
        shape += f", {config['loss_percent']:g} % loss"
    return size * rooms, shape


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def spread(runs, get, digits=0, scale=1.0):
    """The median of a figure over repeated runs, with min–max when there are several."""
    values = [get(r) for r in runs]
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    text = fmt(median(values), digits, scale)
    if len(values) > 1:
        text += f" ({fmt(min(values), digits, scale)}–{fmt(max(values), digits, scale)})"
    return text


# Efficiency is quoted only at a load the target held: loss at most this, percent.
MAX_LOSS = 0.5


def held(runs):
    return median(r["lossPercent"] for r in runs) <= MAX_LOSS


def row(runs):
    """One table row for the repeats of one configuration: medians, (min–max) where it matters."""
    first = runs[0]
    config, ceiling = first["config"], first.get("ceiling")
    _, shape = size_of(first)
    per_cpu = spread(runs, lambda r: r.get("outPacketsPerSfuCpuSecond"))
    per_cpu = f"**{per_cpu}**" if held(runs) else f"{per_cpu} ⚠ loss > {MAX_LOSS} %"
    profiles = sorted({p for r in runs for p in r.get("srtpProfiles", [])})
    return (
        f"| {config['target']} | {shape} | {config['pps']} × {config['size']} B | {len(runs)} "
        f"| {spread(runs, lambda r: r['outPacketsPerSecond'])} "
        f"| {spread(runs, lambda r: r['lossPercent'], 2)} "
        f"| {fmt(median(r['latencyMs']['p50'] for r in runs), 2)} / "
        f"{spread(runs, lambda r: r['latencyMs']['p99'], 2)} "
        f"| {fmt(median(r['joinMs']['p50'] for r in runs), 0)} / "
        f"{fmt(median(r['joinMs']['p99'] for r in runs), 0)} "
        f"| {fmt(median(r.get('sfuCpuSeconds') for r in runs), 2)} "
        f"| {fmt(median(r.get('sfuCoreBusySeconds') for r in runs), 2)} | {per_cpu} "
        f"| {fmt(ceiling and ceiling['outPacketsPerCpuSecond'])} "
        f"| {fmt(median(r.get('fractionOfCeiling') for r in runs), 0, 100)} % "
        f"| {fmt(median(r.get('sfuRssMib') for r in runs), 0)} "
        f"| {fmt(median(r.get('sfuRssPerParticipantKib') for r in runs), 0)} "
        f"| {fmt(median(r.get('generatorCpuSeconds') for r in runs), 2)} "
        f"| {sum(r['failed'] for r in runs)} | {', '.join(profiles) or '–'} |"
    )


def configuration(report):
    """What makes runs repeats of each other."""
    config = report["config"]
    return (config["target"], config["scenario"], config["publishers"], config["subscribers"],
            config["pps"], config["size"], config.get("rooms", 1), config.get("loss_percent", 0),
            config["duration"]["secs"])


def machine():
    cpu = "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        cores = "?"
    return f"{cores} × {cpu}, Linux {platform.release()}"


def command(report):
    config = report["config"]
    parts = [f"--target {config['target']}", f"--scenario {config['scenario']}"]
    parts.append(f"--publishers {config['publishers']}")
    if config["scenario"] != "meeting":
        parts.append(f"--subscribers {config['subscribers']}")
    parts += [f"--pps {config['pps']}", f"--size {config['size']}"]
    if config.get("rooms", 1) > 1:
        parts.append(f"--rooms {config['rooms']}")
    if config.get("loss_percent"):
        parts.append(f"--loss {config['loss_percent']:g}")
    return " ".join(parts)


def signaling_section(idle):
    """The idle-session table (`--scenario signaling` reports)."""
    if not idle:
        return []
    out = ["", "### signaling (idle WebSocket sessions)", ""]
    out.append("| sessions | connected | failed | sources | KiB per session | server RSS MiB | "
               "server CPU % while idle | connect p50 / p99 ms | commit |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(idle, key=lambda r: r["sessions"]):
        commit = (r.get("provenance") or {}).get("commit") or "–"
        out.append(f"| {r['sessions']:,} | {r['connected']:,} | {r['failed']} | {r['sources']} "
                   f"| {fmt(r.get('kibPerSession'), 1)} | {fmt(r.get('serverRssConnectedMib'), 0)} "
                   f"| {fmt(r.get('serverCpuPercentIdle'), 1)} "
                   f"| {fmt(r['connectMsP50'], 1)} / {fmt(r['connectMsP99'], 1)} | {commit[:10]} |")
    out.append("")
    out.append("`mooyaho server` (embedded store) on CPU 0, `mooyaho loadgen --scenario signaling` on CPU 1: "
               "every session connects, reads `connected` and pings every 5 s; KiB per session is the "
               "server's RSS growth divided by the sessions, CPU is over the hold window.")
    return out


def render(reports):
    # Media runs have a `config`; idle-session runs (`--scenario signaling`) do not.
    idle = [r for r in reports if "config" not in r]
    reports = [r for r in reports if "config" in r]
    out = [BEGIN, ""]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.append(f"_Generated by `benches/run.sh` on {stamp} — {machine()}. The SFU (`mooyaho dev "
               "--workers 1`, or Janus) runs pinned to CPU 0 with `taskset`, the load generator to CPU 1; "
               "every run is a fresh server; real ICE, DTLS and SRTP (AES-128-GCM) both ways over loopback._")
    out.append("")
    out.append("Columns: *out pkt/s* is what our subscribers received per second in the window; *out per "
               "CPU-s* divides it by the SFU process's CPU seconds (`/proc/<pid>/stat`) — the headline; "
               "*ceiling* is this machine's best possible out-packets per CPU-second for that packet size "
               "(SRTP encrypt + batched `sendmmsg` to loopback receivers, `--ceiling`, measured in the same "
               "run); latency is one-way publisher → SFU → subscriber as the generator sees it. *runs*: "
               "repeats of the configuration (each a fresh server); figures are medians, with (min–max) "
               "where several runs disagree. *core busy s* is CPU 0's busy time from `/proc/stat` in the "
               f"window, whoever ran there. Efficiency is bold only where the median loss is ≤ {MAX_LOSS} %; "
               "loss counts against what was sent (older reports counted sequence gaps).")
    for scenario in SCENARIOS:
        groups = {}
        for r in reports:
            if r["config"]["scenario"] == scenario:
                groups.setdefault(configuration(r), []).append(r)
        runs = sorted(groups.values(),
                      key=lambda g: (g[0]["config"]["target"] != "mooyaho", size_of(g[0])[0]))
        if not runs:
            continue
        out += ["", f"### {scenario}", ""]
        out.append("| target | pub × sub | packets | runs | out pkt/s | loss % | latency p50 / p99 ms "
                   "| join p50 / p99 ms | SFU CPU-s | core busy s | out per CPU-s | ceiling | of ceiling "
                   "| RSS MiB | KiB per participant | generator CPU-s | failed | SRTP |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        out += [row(g) for g in runs]
        out.append("")
        ratios = []
        for ours in (g for g in runs if g[0]["config"]["target"] == "mooyaho"):
            for janus in (g for g in runs if g[0]["config"]["target"] == "janus"):
                if configuration(janus[0])[1:] != configuration(ours[0])[1:] or not (held(ours) and held(janus)):
                    continue
                a = median(r.get("outPacketsPerSfuCpuSecond") for r in ours)
                b = median(r.get("outPacketsPerSfuCpuSecond") for r in janus)
                if a and b:
                    ratios.append(f"{size_of(ours[0])[1]}: **{a / b:.1f}×**")
        if ratios:
            out.append("Mooyaho vs Janus, out-packets per CPU-second (medians; only sizes where both "
                       f"lost ≤ {MAX_LOSS} %): " + ", ".join(ratios) + ".")
            out.append("")
        out.append(f"LiveKit's published figure for context: {LIVEKIT[scenario]} — derived from "
                   f"{LIVEKIT_SOURCE} (GCP c2-standard-16, 16 vCPU; a different machine and load, "
                   "so context, not a comparison).")
        out.append("")
        out.append(f"![{scenario}: out-packets per CPU-second and latency p99 against size]"
                   f"(docs/bench/{scenario}.svg)")
    out += signaling_section(idle)
    out += ["", "Commands (`benches/run.sh` runs exactly these, each against a fresh server):", "", "```sh"]
    out.append("taskset -c 0 target/release/mooyaho dev --listen 127.0.0.1:PORT --workers 1   # or benches/janus/start.sh PORT")
    seen = set()
    for r in sorted(reports, key=lambda r: (r["config"]["scenario"], r["config"]["target"], size_of(r)[0])):
        if configuration(r) in seen:
            continue
        seen.add(configuration(r))
        out.append(f"taskset -c 1 target/release/mooyaho loadgen {command(r)} --duration "
                   f"{r['config']['duration']['secs']} --ceiling --sfu-pid PID …")
    out += ["```", "", END]
    return "\n".join(out)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    results, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    reports = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    if not reports:
        sys.exit(f"no reports in {results}")
    text = target.read_text() if target.exists() else "# Benchmarks\n"
    generated = render(reports)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + generated + tail
    else:
        text = text.rstrip("\n") + "\n\n## Standard set (generated)\n\n" + generated + "\n"
    target.write_text(text)


if __name__ == "__main__":
    main()
