"""Request cost per patient on a server that allows only patient-scoped searches.

    python benchmarks/bench_strict.py [--patients 300] [--seed 7] [--workers 4] [--url URL --group ID --ids FILE]

Starts the local HAPI server in strict mode (tests/hapi, ``strict=True``: clinical searches must
name exactly one patient, no system-level $export, Group export allowed; as Epic and Oracle
Health endpoints behave), loads a synthetic population, puts every patient in one Group, and
measures what each way of reading it costs:

  screen --group          patient-scoped searches, one patient per search
  screen --bulk-group     Group/[id]/$export
  nightly --patients      first night (full), then a night with nothing changed: per-patient
                          _lastUpdated searches
  nightly --group         a night with nothing changed: Group/[id]/$export?_since=
  nightly --group + edits a night after 5 % of the members got a new Observation

Prints HTTP requests and MB read, per listed patient and per cohort patient. Requests are
counted by the matcher's transport (every page, poll and download).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fhir_matcher.cli import main as cli  # noqa: E402
from fhir_matcher.rest.transport import Transport  # noqa: E402
from fhir_matcher.screen import screen_bulk, screen_server  # noqa: E402
from fhir_matcher.trial import load_trial  # noqa: E402

AS_OF = date(2026, 11, 24)
GROUP = "bench-registry"


def patient_ids(data: Path) -> list[str]:
    ids = []
    for f in sorted(data.glob("Patient*.ndjson")):
        for line in open(f, encoding="utf-8"):
            if line.strip():
                ids.append(json.loads(line)["id"])
    return ids


def put_group(url: str, ids: list[str]) -> None:
    group = {"resourceType": "Group", "id": GROUP, "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{i}"}} for i in ids]}
    r = requests.put(f"{url}/Group/{GROUP}", json=group, headers={"Content-Type": "application/fhir+json"}, timeout=120)
    r.raise_for_status()


def night(url: str, work: Path, name: str, *extra: str) -> dict:
    out = work / f"night-{name}-{time.monotonic_ns()}"
    t = time.perf_counter()
    code = cli(["nightly", "--server", url, "--state", str(work / f"{name}.sqlite"), "--out", str(out), "--as-of", AS_OF.isoformat(),
                "--overlap", "0", "-q", *extra])
    wall = time.perf_counter() - t
    if code not in (0, 3):
        raise SystemExit(f"nightly {name} failed with exit code {code}")
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    run["wall"] = wall
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--url", default=None, help="an already loaded strict server (with --ids: its patient ids, one per line)")
    ap.add_argument("--ids", type=Path, default=None)
    args = ap.parse_args()
    trial = load_trial()
    server = None
    work = Path(tempfile.mkdtemp(prefix="fm-bench-strict-"))
    url = args.url
    if url is None:
        from hapi import server as hapi

        t = time.perf_counter()
        server = hapi.start(hapi.free_port(), data_dir=str(work / "hapi"), strict=True)
        print(f"strict HAPI FHIR started in {time.perf_counter() - t:.1f} s at {server.base_url}")
        url = server.base_url
        data = work / "synth"
        subprocess.run([sys.executable, "-m", "fhir_matcher", "synth", "--patients", str(args.patients), "--seed", str(args.seed), "--out", str(data)], check=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fhir_matcher", "load", "--server", url, str(data), "-q"], check=True)
        print(f"loaded in {time.perf_counter() - t:.0f} s")
        ids = patient_ids(data)
    else:
        ids = [line.strip().removeprefix("Patient/") for line in args.ids.read_text().splitlines() if line.strip()]
    try:
        put_group(url, ids)
        listing = work / "patients.txt"
        listing.write_text("".join(f"Patient/{i}\n" for i in ids), encoding="utf-8")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; workers {args.workers}; {len(ids)} patients in Group/{GROUP}\n")
        rows = []
        t = time.perf_counter()
        s = screen_server(url, trial, AS_OF, Transport(pool=args.workers * 2), args.workers, group=GROUP)
        cohort = len(s.results)
        rows.append(("screen --group", time.perf_counter() - t, s.cost.to_json()))
        t = time.perf_counter()
        b = screen_bulk(url, trial, AS_OF, Transport(), group=GROUP, poll_max=2)
        rows.append(("screen --bulk-group", time.perf_counter() - t, b.cost.to_json()))
        first = night(url, work, "patients", "--patients", str(listing))
        rows.append(("nightly --patients, first (full)", first["wall"], first["http"]))
        quiet = night(url, work, "patients", "--patients", str(listing))
        rows.append(("nightly --patients, nothing changed", quiet["wall"], quiet["http"]))
        night(url, work, "group", "--group", GROUP)
        time.sleep(1.1)
        quiet_g = night(url, work, "group", "--group", GROUP)
        rows.append(("nightly --group, nothing changed", quiet_g["wall"], quiet_g["http"]))
        edited = ids[:: 20]
        for pid in edited:
            obs = {"resourceType": "Observation", "id": f"{pid}-bench-plt", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]}, "subject": {"reference": f"Patient/{pid}"},
                   "effectiveDateTime": AS_OF.isoformat(), "valueQuantity": {"value": 150, "system": "http://unitsofmeasure.org", "code": "10*9/L"}}
            requests.put(f"{url}/Observation/{obs['id']}", json=obs, headers={"Content-Type": "application/fhir+json"}, timeout=60).raise_for_status()
        busy_g = night(url, work, "group", "--group", GROUP)
        rows.append((f"nightly --group, {len(edited)} patients changed", busy_g["wall"], busy_g["http"]))
        busy_p = night(url, work, "patients", "--patients", str(listing))
        rows.append((f"nightly --patients, {len(edited)} patients changed", busy_p["wall"], busy_p["http"]))

        n = len(ids)
        print(f"{n} listed patients, {cohort} in the cohort ({cohort / n:.0%})\n")
        print(f"{'run':<40} {'wall s':>7} {'requests':>9} {'MB read':>8} {'req/listed pt':>14} {'req/cohort pt':>14}")
        for name, wall, cost in rows:
            print(f"{name:<40} {wall:7.1f} {cost['requests']:9d} {cost['bytes'] / 1e6:8.2f} {cost['requests'] / n:14.2f} {cost['requests'] / max(cohort, 1):14.2f}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
