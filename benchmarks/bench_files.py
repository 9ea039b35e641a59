"""Screening a Bulk NDJSON export: time against a plain json parse, and peak memory.

    python benchmarks/bench_files.py [--patients 20000] [--seed 1] [--runs 3] [--keep DIR]

Generates a synthetic population (fhir-matcher synth), then, each in a fresh process:
  1. parse:  every line of every file with the standard json module (the yardstick);
  2. screen: `fhir-matcher screen` on the same folder (cohort first, default);
  3. screen --all-patients: every patient evaluated.
Prints wall time (min / median / max over --runs), the ratio to the parse, peak RSS, and
throughput. Target (issue 6): screen <= 3 x parse, peak memory < 1 GiB at 20,000 patients.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARSE = """
import json, sys, pathlib
n = 0
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.ndjson")):
    with open(f, "rb") as fh:
        for line in fh:
            json.loads(line)
            n += 1
print(n)
"""


def measured(cmd: list[str]) -> tuple[float, int, str]:
    wrapper = [sys.executable, "-c",
               "import resource, subprocess, sys, time\n"
               "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "w = time.perf_counter() - t\n"
               "print(p.returncode, w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.stdout.write(p.stdout)", *cmd]
    proc = subprocess.run(wrapper, capture_output=True, text=True)
    first, _, rest = proc.stdout.partition("\n")
    code, wall, rss = first.split()
    if int(code) not in (0, 3):
        sys.exit(f"command failed ({code}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return float(wall), int(rss), rest


def stats(xs: list[float]) -> str:
    return f"{min(xs):7.2f} / {statistics.median(xs):7.2f} / {max(xs):7.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the population in this folder")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="fm-bench-"))
    data = work / f"synth-{args.patients}-{args.seed}"
    if not (data / "Patient.ndjson").exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fhir_matcher", "synth", "--patients", str(args.patients), "--seed", str(args.seed), "--out", str(data)], check=True)
        print(f"generated in {time.perf_counter() - t:.1f} s")
    lines = sum(1 for f in data.glob("*.ndjson") for _ in open(f, "rb"))
    size = sum(f.stat().st_size for f in data.glob("*.ndjson"))
    print(f"data: {args.patients} patients, {lines} resources ({lines / args.patients:.1f} per patient), {size / 1e6:.0f} MB NDJSON")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")

    out = work / "out"
    commands = {
        "parse (json module)": [sys.executable, "-c", PARSE, str(data)],
        "screen (cohort first)": [sys.executable, "-m", "fhir_matcher", "screen", "--source", str(data), "--as-of", "2026-11-24", "--out", str(out), "-q"],
        "screen --all-patients": [sys.executable, "-m", "fhir_matcher", "screen", "--source", str(data), "--as-of", "2026-11-24", "--out", str(out), "-q", "--all-patients"],
    }
    results = {}
    for name, cmd in commands.items():
        walls, rss = [], 0
        for _ in range(args.runs):
            wall, peak, _ = measured(cmd)
            walls.append(wall)
            rss = max(rss, peak)
        results[name] = (walls, rss)
    base = statistics.median(results["parse (json module)"][0])
    print(f"\n{'step':<24} {'wall min / median / max':>30} {'x parse':>8} {'peak RSS':>10} {'resources/s':>12}")
    for name, (walls, rss) in results.items():
        med = statistics.median(walls)
        print(f"{name:<24} {stats(walls):>30} {med / base:8.2f} {rss / 1024:8.0f} MB {lines / med:12,.0f}")
    run_json = json.loads((out / "run.json").read_text())
    print(f"\nlast screen: {run_json['screened']} patients, {run_json['evaluated']} evaluated, statuses {run_json['statuses']}")


if __name__ == "__main__":
    main()
