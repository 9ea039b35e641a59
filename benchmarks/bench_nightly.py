"""The nightly job at scale: a full night, then a night after 1 % of patients changed.

    python benchmarks/bench_nightly.py [--patients 20000] [--seed 5] [--changed 0.01]
                                       [--work DIR] [--workers 4] [--loaders 2] [--json FILE]

1. Starts the project's HAPI server (tests/hapi) on a loopback port with its database in
   ``WORK/hapi-loaded``; the first time, writes ``--patients`` synthetic patients
   (``fhir-matcher synth``) and loads them (``fhir-matcher load``: Patients and Medications,
   then Encounters, then the other types cut into ``--loaders`` parts loaded in parallel), and times it.
   Later runs with the same ``--work`` reuse that loaded database: each run works on a
   fresh copy of it (``WORK/hapi-run``), so every run starts from the same server.
2. Night 1 (``fhir-matcher nightly``, empty state file): the full night.
3. Changes 1 % of the patients through the REST API, spread over all patients (about one in
   ten is in the cohort, as on the server): half get a new Observation (a platelet count),
   half an updated Condition (its ``recordedDate``), or a new Observation when they have none.
4. Night 2 (the next day): the incremental night.
5. Night 3 (the day after, nothing changed): what an idle night costs.

Prints a table (wall time and ``run.json`` ``http`` figures per night; the ratio of night 2
to night 1) and, with ``--json``, writes the same as JSON. The bar (issue 15): a 1 % night
costs at most 10 % of a full night's requests and time.

Nights run with ``--overlap 0``: the default 5-minute re-read overlap is 0.35 % of a real
day but would cover most of a benchmark's minutes between nights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

AS_OF = date(2026, 11, 24)
CLI = [sys.executable, "-m", "fhir_matcher"]


def load(url: str, data: Path, loaders: int, workers: int) -> float:
    """Load the synth output: referenced types first, then the rest in parallel processes."""
    started = time.perf_counter()
    first = [data / "Patient.ndjson", data / "Medication.ndjson"]
    subprocess.run([*CLI, "load", "--server", url, "--workers", str(workers), "-q", *map(str, first)], check=True)
    subprocess.run([*CLI, "load", "--server", url, "--workers", str(workers), "-q", str(data / "Encounter.ndjson")], check=True)
    # The other types in --loaders parallel processes: every file cut into as many parts.
    parts = data.parent / "load-parts"
    shutil.rmtree(parts, ignore_errors=True)
    groups: list[list[Path]] = [[] for _ in range(max(1, loaders))]
    for f in sorted(data.glob("*.ndjson")):
        if f in first or f.name == "Encounter.ndjson":
            continue
        lines = [line for line in f.read_bytes().splitlines(keepends=True) if line.strip()]
        for i, g in enumerate(groups):
            chunk = lines[i::len(groups)]
            if chunk:
                part = parts / str(i) / f.name
                part.parent.mkdir(parents=True, exist_ok=True)
                part.write_bytes(b"".join(chunk))
                g.append(part)
    procs = [subprocess.Popen([*CLI, "load", "--server", url, "--workers", str(workers), "-q", *map(str, g)]) for g in groups if g]
    if any(p.wait() for p in procs):
        sys.exit("loading failed")
    shutil.rmtree(parts, ignore_errors=True)
    return time.perf_counter() - started


def change(url: str, data: Path, fraction: float, seed: int) -> dict[str, int]:
    """Change ``fraction`` of the patients through the REST API; returns what was done."""
    ids = sorted(json.loads(line)["id"] for line in open(data / "Patient.ndjson", encoding="utf-8") if line.strip())
    chosen = random.Random(seed).sample(ids, max(1, round(len(ids) * fraction)))
    s = requests.Session()
    entries, done = [], {"patients": len(chosen), "observations_added": 0, "conditions_updated": 0}
    for n, pid in enumerate(sorted(chosen)):
        cond = None
        if n % 2:
            bundle = s.get(f"{url}/Condition", params={"subject": f"Patient/{pid}", "_count": 1}, timeout=60).json()
            cond = next((e["resource"] for e in bundle.get("entry", [])), None)
        if cond is not None:
            cond["recordedDate"] = (AS_OF - timedelta(days=1)).isoformat()
            cond.pop("meta", None)
            entries.append({"resource": cond, "request": {"method": "PUT", "url": f"Condition/{cond['id']}"}})
            done["conditions_updated"] += 1
        else:
            obs = {
                "resourceType": "Observation", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "777-3", "display": "Platelets [#/volume] in Blood by Automated count"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": f"{AS_OF - timedelta(days=1)}T08:00:00Z",
                "valueQuantity": {"value": 210, "unit": "10*3/uL", "system": "http://unitsofmeasure.org", "code": "10*3/uL"},
            }
            entries.append({"resource": obs, "request": {"method": "POST", "url": "Observation"}})
            done["observations_added"] += 1
    for i in range(0, len(entries), 50):
        r = s.post(url, json={"resourceType": "Bundle", "type": "transaction", "entry": entries[i:i + 50]}, timeout=300)
        if r.status_code >= 300:
            sys.exit(f"changing patients failed: HTTP {r.status_code}")
    return done


def profiled(log: Path, argv: list[str]) -> int:
    """Run the CLI with every HTTP request recorded (method, path, parameter names, bytes, seconds)."""
    from urllib.parse import parse_qsl, urlsplit

    from fhir_matcher.cli import main as cli
    from fhir_matcher.rest import transport

    rows: list[dict] = []
    send = transport.Transport.request

    def request(self, method: str, url: str, **kwargs):
        t = time.perf_counter()
        resp = send(self, method, url, **kwargs)
        parts = urlsplit(url)
        path = parts.path.split("/fhir", 1)[-1].strip("/") or "(base)"
        path = re.sub(r"^(\w+)/[^/$_][^/]*", r"\1/{id}", path)
        params = sorted({k for k, _ in parse_qsl(parts.query)} | set(kwargs.get("params") or {}))
        data = kwargs.get("data")
        entries = data.count(b'"request"') if isinstance(data, bytes) and data.startswith(b'{"resourceType": "Bundle"') else 0
        detail = f" ({entries} entries)" if entries else ""
        rows.append({"kind": f"{method} {path}?{'&'.join(params)}{detail}", "bytes": len(resp.content or b""), "s": time.perf_counter() - t})
        return resp

    transport.Transport.request = request
    try:
        return cli(argv)
    finally:
        log.write_text(json.dumps(rows))


def profile_table(rows: list[dict]) -> str:
    kinds: dict[str, list[float]] = {}
    for r in rows:
        k = kinds.setdefault(re.sub(r"\(\d+ entries\)", "(batch)", r["kind"]), [0, 0, 0.0])
        k[0] += 1
        k[1] += r["bytes"]
        k[2] += r["s"]
    lines = [f"  {'requests':>8} {'MB':>7} {'s in HTTP':>9}  request"]
    for kind, (n, b, s) in sorted(kinds.items(), key=lambda kv: -kv[1][2]):
        lines.append(f"  {n:8d} {b / 1e6:7.2f} {s:9.1f}  {kind}")
    return "\n".join(lines)


def night(url: str, work: Path, name: str, as_of: date, workers: int, profile: bool = False) -> dict:
    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    prof = work / f"requests-{name}.json"
    cmd = [*([sys.executable, __file__, "--child-profile", str(prof), "--"] if profile else CLI), "nightly", "--server", url, "--state", str(work / "state.sqlite"), "--out", str(out),
           "--as-of", as_of.isoformat(), "--overlap", "0", "--workers", str(workers), "-q"]
    # Run through a small parent that reports its child's peak RSS on its last stderr line.
    peak = ("import resource, subprocess, sys\nrc = subprocess.run(sys.argv[1:]).returncode\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\nsys.exit(rc)")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", peak, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 3):
        sys.exit(f"night {name} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    peak_mib = int(proc.stderr.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux
    summary = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return {"night": name, "as_of": as_of.isoformat(), "wall_s": round(wall, 2), "peak_rss_mib": round(peak_mib), "duration_s": summary.get("duration_s"),
            "requests": summary["http"]["requests"], "bytes": summary["http"]["bytes"], "retries": summary["http"].get("retries", 0),
            "screened": summary.get("screened"), "re_evaluated": summary.get("re_evaluated"), "changed": summary.get("changed"),
            "written": summary.get("written"), "out": str(out), **({"profile": str(prof)} if profile else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--changed", type=float, default=0.01, help="fraction of patients changed before night 2 (default 0.01)")
    ap.add_argument("--work", type=Path, default=None, help="keeps the loaded server between runs (default: a folder in the temp dir named after size and seed)")
    ap.add_argument("--workers", type=int, default=4, help="concurrent requests of load and nightly (default 4)")
    ap.add_argument("--loaders", type=int, default=3, help="parallel load processes (default 3)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--profile", action="store_true", help="record every request of the nights and print them grouped by kind")
    ap.add_argument("--child-profile", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_profile:
        sys.exit(profiled(args.child_profile, [a for a in args.rest if a != "--"]))
    from hapi import server as hapi

    work = args.work or Path(tempfile.gettempdir()) / f"fm-bench-nightly-{args.patients}-{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    loaded_dir, run_dir, marker = work / "hapi-loaded", work / "hapi-run", work / "loaded.json"
    data = work / "synth"
    facts: dict = {"patients": args.patients, "seed": args.seed, "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    if not marker.exists():
        shutil.rmtree(loaded_dir, ignore_errors=True)
        subprocess.run([*CLI, "synth", "--patients", str(args.patients), "--seed", str(args.seed), "--out", str(data)], check=True)
        resources = sum(1 for f in data.glob("*.ndjson") for line in open(f, "rb") if line.strip())
        t = time.perf_counter()
        # Loading only: a bigger heap and HAPI's mass ingestion mode (the nights run on a
        # server started with the tests' defaults).
        load_opts = ["-Xms1g", "-Xmx3g", "-XX:+UseParallelGC", "-XX:+ExitOnOutOfMemoryError", "-Dhapi.test.bulkLoad=true"]
        server = hapi.start(hapi.free_port(), data_dir=str(loaded_dir), java_opts=load_opts)
        print(f"HAPI FHIR started in {time.perf_counter() - t:.1f} s at {server.base_url}", flush=True)
        try:
            seconds = load(server.base_url, data, args.loaders, args.workers)
        finally:
            server.stop()
        marker.write_text(json.dumps({"resources": resources, "load_s": round(seconds, 1), "loaders": args.loaders, "workers": args.workers}))
    loaded = json.loads(marker.read_text())
    facts["load"] = loaded
    print(f"data: {args.patients} patients, {loaded['resources']:,} resources; loaded once in {loaded['load_s']:.0f} s "
          f"({loaded['resources'] / loaded['load_s']:.0f} resources/s, {loaded['loaders']} load processes); {facts['machine']}", flush=True)

    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(loaded_dir, run_dir, ignore=shutil.ignore_patterns("*.log"))
    (work / "state.sqlite").unlink(missing_ok=True)
    t = time.perf_counter()
    server = hapi.start(hapi.free_port(), data_dir=str(run_dir))
    print(f"HAPI FHIR (a fresh copy of the loaded database) started in {time.perf_counter() - t:.1f} s", flush=True)
    try:
        url = server.base_url
        nights = [night(url, work, "1-full", AS_OF, args.workers, args.profile)]
        print(f"night 1 done in {nights[0]['wall_s']:.0f} s", flush=True)
        time.sleep(1.1)  # changes are read with second precision
        facts["changes"] = change(url, data, args.changed, args.seed)
        time.sleep(1.1)
        nights.append(night(url, work, "2-incremental", AS_OF + timedelta(days=1), args.workers, args.profile))
        time.sleep(1.1)
        nights.append(night(url, work, "3-idle", AS_OF + timedelta(days=2), args.workers, args.profile))
    finally:
        server.stop()
    full, inc = nights[0], nights[1]
    facts["nights"] = nights
    facts["ratio"] = {"requests": round(inc["requests"] / full["requests"], 4), "wall": round(inc["wall_s"] / full["wall_s"], 4)}
    c = facts["changes"]
    print(f"\nchanged before night 2: {c['patients']} patients ({c['observations_added']} new Observations, {c['conditions_updated']} updated Conditions)\n")
    print(f"{'night':<16} {'wall s':>8} {'requests':>9} {'MB read':>8} {'re-evaluated':>13} {'written':>8} {'peak RSS':>9}")
    for n in nights:
        print(f"{n['night']:<16} {n['wall_s']:8.1f} {n['requests']:9d} {n['bytes'] / 1e6:8.1f} {str(n['re_evaluated']):>13} {str(n['written']):>8}"
              f" {n.get('peak_rss_mib', 0):>5} MiB")
    ok = facts["ratio"]["requests"] <= 0.10 and facts["ratio"]["wall"] <= 0.10
    print(f"\nnight 2 / night 1: {facts['ratio']['requests']:.1%} of the requests, {facts['ratio']['wall']:.1%} of the wall time "
          f"(bar: at most 10 % each: {'met' if ok else 'NOT met'})")
    if args.profile:
        for n in nights:
            print(f"\nrequests of night {n['night']}, by kind (most time first):\n" + profile_table(json.loads(Path(n["profile"]).read_text())))
    print(json.dumps(facts, indent=1))
    if args.json:
        args.json.write_text(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
