"""Issue 15: peak memory and time of `screen` on Bulk exports where nearly everyone is in the cohort.

    python benchmarks/bench_memory.py [--patients 6000 18000] [--seed 1] [--target 0.97]
                                      [--keep DIR] [--before SRC] [--runs 1]

For each size, a synthetic export (fhir-matcher synth, target prevalence --target, so nearly
every patient passes the diagnosis gate) is screened, each command in a fresh process:
  1. parse:  every line of every file with the standard json module (the yardstick);
  2. screen --processes 1;
  3. screen --processes 2;
  4. with --before SRC: the same screen with that checkout's defaults, run from another
     checkout of the package (e.g. a worktree of an older commit), to show what changed.
Peak memory is that of the whole process tree (the command and every worker it starts),
sampled from /proc every 20 ms: the sum of RSS (counts pages workers share with each other
more than once: an upper bound) and the sum of PSS (shared pages split between processes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
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


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """User + system seconds of one process so far (its own, not its children's)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return 0.0


def _memory(pids: list[int]) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith(b"Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float, int, int, str]:
    """Wall time, CPU time (user + system of every process of the tree, sampled: workers are
    children of the command or of a fork server), peak RSS and PSS, stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, cwd=cwd)
    peak = [0, 0]
    cpu_by_pid: dict[int, float] = {}

    def sample() -> None:
        while proc.poll() is None:
            pids = _tree(proc.pid)
            rss, pss = _memory(pids)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            for pid in pids:  # each process's own time (never its children's: workers may be either)
                cpu_by_pid[pid] = max(cpu_by_pid.get(pid, 0.0), _cpu(pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    t.join()
    cpu = sum(cpu_by_pid.values())  # sampled every 20 ms: the last few ms of each process are missed
    if proc.returncode not in (0, 3):
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return wall, cpu, peak[0], peak[1], out.decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, nargs="+", default=[6000, 18000])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.97, help="prevalence of the target diseases (default 0.97)")
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the exports in this folder")
    ap.add_argument("--before", type=Path, default=None, help="another checkout's folder (holding fhir_matcher/) to compare with")
    ap.add_argument("--before-label", default="other checkout's", help="how the table names --before (e.g. a commit)")
    ap.add_argument("--runs", type=int, default=1, help="runs of each command (the fastest is shown)")
    ap.add_argument("--memory", default="512M", help="screen --memory (default 512M)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="fm-bench-mem-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rows = []
    for n in args.patients:
        data = work / f"synth-{n}-{args.seed}-{args.target}"
        if not (data / "Patient.ndjson").exists():
            subprocess.run([sys.executable, "-m", "fhir_matcher", "synth", "--patients", str(n), "--seed", str(args.seed),
                            "--prevalence", f"target={args.target}", "--out", str(data)], check=True, stdout=subprocess.DEVNULL)
        size = sum(f.stat().st_size for f in data.glob("*.ndjson"))
        out = work / "out"
        screen = [sys.executable, "-m", "fhir_matcher", "screen", "--source", str(data), "--as-of", "2026-11-24", "--out", str(out), "-q",
                  "--memory", args.memory]
        commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "json.loads every line": ([sys.executable, "-c", PARSE, str(data)], None),
            "screen --processes 1": (screen + ["--processes", "1"], None),
            "screen --processes 2": (screen + ["--processes", "2"], None),
        }
        if args.before:
            # run in the other checkout, with -S: no site (.pth) processing, so an editable install of this one cannot shadow it
            site = next(p for p in sys.path if p.endswith("site-packages"))
            commands[f"before: {args.before_label} screen"] = ([sys.executable, "-S", "-m", "fhir_matcher", "screen", "--source", str(data.resolve()), "--as-of", "2026-11-24",
                                               "--out", str((work / "out-before").resolve()), "-q"], {"PYTHONPATH": site})
        base = None
        cohort = 0
        for name, (cmd, env) in commands.items():
            best = None
            for _ in range(args.runs):
                wall, cpu, rss, pss, _ = measured(cmd, env, args.before if name.startswith("before") else None)
                if best is None or wall < best[0]:
                    best = (wall, cpu, rss, pss)
            assert best is not None
            if base is None:
                base = best
            if name.startswith("screen") and not cohort:
                cohort = json.loads((out / "run.json").read_text())["evaluated"]
            rows.append((n, size, name, *best, best[0] / base[0], best[1] / base[1]))
            print(f"  {n} patients: {name:<24} {best[0]:7.1f} s wall ({best[0] / base[0]:5.2f}x)  {best[1]:7.1f} s CPU ({best[1] / base[1]:5.2f}x)"
                  f"  RSS {best[2] / 2**20:6.0f} MiB  PSS {best[3] / 2**20:6.0f} MiB  load {os.getloadavg()[0]:.1f}", flush=True)
        rows = [(*r[:2], cohort, *r[2:]) if r[0] == n and len(r) == 9 else r for r in rows]
        if args.before:
            a = (out / "screening.ndjson").read_bytes()
            b = (work / "out-before" / "screening.ndjson").read_bytes()
            print(f"  screening.ndjson identical to --before: {a == b}")
    print("\n| export | patients (in cohort) | step | wall | x json.loads | CPU (tree) | x json.loads | peak RSS (tree) | peak PSS (tree) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, size, cohort, name, wall, cpu, rss, pss, xwall, xcpu in rows:
        print(f"| {size / 1e6:,.0f} MB | {n:,} ({cohort:,}) | {name} | {wall:.1f} s | {xwall:.2f} | {cpu:.1f} s | {xcpu:.2f} | {rss / 2**20:,.0f} MiB | {pss / 2**20:,.0f} MiB |")


if __name__ == "__main__":
    main()
