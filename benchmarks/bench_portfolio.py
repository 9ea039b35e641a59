"""Ten trials screened together against each alone, on the local HAPI FHIR server.

    python benchmarks/bench_portfolio.py [--patients 2000] [--seed 7] [--workers 4] [--runs 1] [--url URL]

Starts the project's HAPI server (tests/hapi) on a free loopback port (or uses --url), loads a
synthetic population, and writes a portfolio of ten trials: the bundled ones
(fhir_matcher/trials/*.toml) and variants of the CAR-T trial that each target a subset of its
diseases with other thresholds and windows (so cohorts and read types differ). Then measures,
each in a fresh `fhir-matcher screen` process:
  alone     every trial by itself (requests, bytes, wall time);
  together  all ten with --trials DIR (one read).
Target (issue 13): together costs at most 1.3x the requests and 1.5x the time of the costliest
trial alone; and each trial's screening.ndjson is identical either way.

With --nightly the same comparison runs `fhir-matcher nightly` (a state file per run): the
first (full) night, then a second night with nothing changed. Together runs first, so the
nights alone find every ResearchSubject already written: the comparison favours them.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
AS_OF = "2026-11-24"

DISEASES = ["target-sle", "target-immune-nephritis", "target-systemic-sclerosis", "target-dermatomyositis", "target-nmosd"]


def write_portfolio(folder: Path, size: int = 10) -> list[Path]:
    """The bundled trials plus CAR-T variants, ``size`` files in all."""
    folder.mkdir(parents=True, exist_ok=True)
    bundled = sorted((ROOT / "fhir_matcher" / "trials").glob("*.toml"))
    out = []
    for f in bundled[:size]:
        out.append(folder / f.name)
        out[-1].write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    base = (ROOT / "fhir_matcher" / "trials" / "cd19-baff-car-t.toml").read_text(encoding="utf-8")
    all_sets = ", ".join(f'"{d}"' for d in DISEASES)
    k = 0
    while len(out) < size:
        targets = [DISEASES[k % len(DISEASES)], DISEASES[(k + 2) % len(DISEASES)]]
        text = base.replace('id = "cd19-baff-car-t"', f'id = "variant-{k + 1:02d}"')
        text = text.replace(f"valuesets = [{all_sets}]", "valuesets = [" + ", ".join(f'"{t}"' for t in targets) + "]")
        text = text.replace("threshold = 0.3\n", f"threshold = {0.3 + 0.1 * k:.1f}\n").replace("window_days = 30\n", f"window_days = {30 + 15 * (k % 3)}\n")
        path = folder / f"variant-{k + 1:02d}.toml"
        path.write_text(text, encoding="utf-8")
        out.append(path)
        k += 1
    return out


def screen(url: str, out: Path, trial_args: list[str], workers: int) -> tuple[float, dict]:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fhir_matcher", "screen", "--source", url, "--as-of", AS_OF, "--out", str(out), "-q",
                    "--workers", str(workers), *trial_args], check=True)
    wall = time.perf_counter() - t
    return wall, json.loads((out / "run.json").read_text(encoding="utf-8"))


def nightly(url: str, out: Path, state: Path, trial_args: list[str], workers: int) -> tuple[float, dict]:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fhir_matcher", "nightly", "--server", url, "--state", str(state), "--as-of", AS_OF, "--out", str(out), "-q",
                    "--workers", str(workers), "--overlap", "0", *trial_args], check=False)
    wall = time.perf_counter() - t
    return wall, json.loads((out / "run.json").read_text(encoding="utf-8"))


def bench_nightly(url: str, work: Path, trials: list[Path], workers: int) -> None:
    """First and second night, together then each alone."""
    rows = []
    for night in (1, 2):
        wall, run = nightly(url, work / f"n{night}-together", work / "together.sqlite", ["--trials", str(work / "trials")], workers)
        rows.append((night, "together", wall, run["http"]["requests"], run["re_evaluated"]))
    for f in trials:
        for night in (1, 2):
            wall, run = nightly(url, work / f"n{night}-{f.stem}", work / f"{f.stem}.sqlite", ["--trial", str(f)], workers)
            rows.append((night, f.stem, wall, run["http"]["requests"], run["re_evaluated"]))
    print(f"\n{'night':<6} {'trials':<22} {'wall s':>7} {'requests':>9} {'re-evaluated':>12}")
    for night, name, wall, req, n in rows:
        print(f"{night:<6} {name:<22} {wall:7.1f} {req:9d} {n:12d}")
    for night in (1, 2):
        together = next(r for r in rows if r[0] == night and r[1] == "together")
        alone = [r for r in rows if r[0] == night and r[1] != "together"]
        print(f"night {night}: together / costliest alone {together[3] / max(r[3] for r in alone):.2f}x requests, "
              f"{together[2] / max(r[2] for r in alone):.2f}x wall time; together / all one by one {together[3] / sum(r[3] for r in alone):.2f}x requests")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=1, help="runs of each screen (median wall time)")
    ap.add_argument("--url", default=None, help="an already loaded server (skips start and load)")
    ap.add_argument("--nightly", action="store_true", help="compare nightly runs (first and second night) instead of screens")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fm-bench-portfolio-"))
    server = None
    url = args.url
    if url is None:
        from hapi import server as hapi

        server = hapi.start(hapi.free_port(), data_dir=str(work / "hapi"))
        url = server.base_url
        data = work / "synth"
        subprocess.run([sys.executable, "-m", "fhir_matcher", "synth", "--patients", str(args.patients), "--seed", str(args.seed), "--out", str(data)], check=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fhir_matcher", "load", "--server", url, str(data), "-q"], check=True)
        print(f"loaded {args.patients} patients in {time.perf_counter() - t:.0f} s")
    try:
        trials = write_portfolio(work / "trials")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; workers {args.workers}; {len(trials)} trials")
        if args.nightly:
            bench_nightly(url, work, trials, args.workers)
            return
        alone = {}
        for f in trials:
            walls, run = [], {}
            for i in range(args.runs):
                wall, run = screen(url, work / "alone" / f.stem, ["--trial", str(f)], args.workers)
                walls.append(wall)
            alone[f.stem] = (statistics.median(walls), run)
        walls = []
        for i in range(args.runs):
            wall, together = screen(url, work / "together", ["--trials", str(work / "trials")], args.workers)
            walls.append(wall)
        t_wall = statistics.median(walls)
        print(f"\n{'trial':<22} {'wall s':>7} {'requests':>9} {'MB':>6} {'evaluated':>9}")
        for name, (wall, run) in alone.items():
            print(f"{name:<22} {wall:7.1f} {run['http']['requests']:9d} {run['http']['bytes'] / 1e6:6.1f} {run['evaluated']:9d}")
        print(f"{'together (' + str(len(trials)) + ')':<22} {t_wall:7.1f} {together['http']['requests']:9d} {together['http']['bytes'] / 1e6:6.1f} {together['evaluated_any_trial']:9d}")
        worst_req = max(run["http"]["requests"] for _, run in alone.values())
        worst_wall = max(wall for wall, _ in alone.values())
        sum_req = sum(run["http"]["requests"] for _, run in alone.values())
        print(f"\ntogether / costliest alone: {together['http']['requests'] / worst_req:.2f}x requests (target <= 1.3), "
              f"{t_wall / worst_wall:.2f}x wall time (target <= 1.5)")
        print(f"together / all ten one by one: {together['http']['requests'] / sum_req:.2f}x requests, {t_wall / sum(w for w, _ in alone.values()):.2f}x wall time")
        same = all((work / "together" / name / "screening.ndjson").read_bytes() == (work / "alone" / name / "screening.ndjson").read_bytes() for name in alone)
        print(f"each trial's screening.ndjson identical alone and together: {same}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
