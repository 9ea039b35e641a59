"""The matcher's REST strategy against a naive pull, on the local HAPI FHIR server.

    python benchmarks/bench_server.py [--patients 2000] [--seed 7] [--workers 4] [--url URL]

Starts the project's HAPI server (tests/hapi) on a free loopback port (or uses --url), loads a
synthetic population (about 10 % in the cohort), then measures in one run:
  matcher       fhir-matcher's strategy: one compact Condition scan, then batched searches
                for cohort patients only;
  naive search  one search per resource type the criteria read, per patient;
  $everything   Patient/$everything per patient (all pages).
Each pull builds the records and screens them, with the same worker count. Prints wall
time, HTTP requests, bytes, and requests per cohort patient. Target (issue 6): the matcher
makes at least 5x fewer requests and is at least 3x faster than the naive pulls.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fhir_matcher.criteria.cohort import needed_types  # noqa: E402
from fhir_matcher.criteria.evaluate import evaluate  # noqa: E402
from fhir_matcher.rest.client import FhirClient  # noqa: E402
from fhir_matcher.rest.query import Search  # noqa: E402
from fhir_matcher.rest.transport import Transport  # noqa: E402
from fhir_matcher.screen import screen_server  # noqa: E402
from fhir_matcher.record import RecordBuilder  # noqa: E402
from fhir_matcher.trial import load_trial  # noqa: E402

AS_OF = date(2026, 11, 24)


def naive(url: str, trial, ids: list[str], workers: int, everything: bool) -> tuple[float, dict, int]:
    client = FhirClient(url, Transport(pool=workers * 2))
    started = time.perf_counter()

    def pull(pid: str) -> list[dict]:
        if everything:
            return list(client.search(Search(f"Patient/{pid}/$everything").count(1000)))
        out = list(client.search(Search("Patient").where(_id=pid)))
        for rtype in sorted(needed_types(trial)):
            out += client.search(Search(rtype).where(patient=pid).count(1000))
        return out

    builder = RecordBuilder()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for resources in pool.map(pull, ids):
            for r in resources:
                builder.add(r, url) if r.get("resourceType") != "Patient" else builder.add_patient(r, url)
    results = [evaluate(rec, trial, AS_OF) for rec in builder.records()]
    return time.perf_counter() - started, client.transport.cost.to_json(), len(results)


def all_patient_ids(url: str) -> list[str]:
    client = FhirClient(url)
    return sorted(r["id"] for r in client.search(Search("Patient").elements("id").count(1000)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--url", default=None, help="an already loaded server (skips start and load)")
    args = ap.parse_args()
    trial = load_trial()
    server = None
    url = args.url
    if url is None:
        from hapi import server as hapi

        work = Path(tempfile.mkdtemp(prefix="fm-bench-server-"))
        t = time.perf_counter()
        server = hapi.start(hapi.free_port(), data_dir=str(work / "hapi"))
        print(f"HAPI FHIR started in {time.perf_counter() - t:.1f} s at {server.base_url}")
        url = server.base_url
        data = work / "synth"
        subprocess.run([sys.executable, "-m", "fhir_matcher", "synth", "--patients", str(args.patients), "--seed", str(args.seed), "--out", str(data)], check=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fhir_matcher", "load", "--server", url, str(data), "-q"], check=True)
        lines = sum(1 for f in data.glob("*.ndjson") for _ in open(f, "rb"))
        print(f"loaded {lines} resources in {time.perf_counter() - t:.0f} s ({lines / (time.perf_counter() - t):.0f} resources/s)")
    try:
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; workers {args.workers}")
        t = time.perf_counter()
        screened = screen_server(url, trial, AS_OF, Transport(pool=args.workers * 2), args.workers)
        m_wall = time.perf_counter() - t
        cohort = len(screened.results)
        ids = all_patient_ids(url)
        rows = [("matcher", m_wall, screened.cost.to_json(), cohort)]
        for name, everything in (("naive search", False), ("$everything", True)):
            wall, cost, n = naive(url, trial, ids, args.workers, everything)
            rows.append((name, wall, cost, n))
        print(f"\n{len(ids)} patients on the server, {cohort} in the cohort ({cohort / len(ids):.0%})\n")
        print(f"{'strategy':<14} {'wall s':>8} {'requests':>9} {'MB read':>8} {'req/cohort pt':>14} {'evaluated':>10}")
        for name, wall, cost, n in rows:
            print(f"{name:<14} {wall:8.1f} {cost['requests']:9d} {cost['bytes'] / 1e6:8.1f} {cost['requests'] / max(cohort, 1):14.2f} {n:10d}")
        base_req, base_wall = rows[0][2]["requests"], rows[0][1]
        for name, wall, cost, _ in rows[1:]:
            print(f"matcher vs {name}: {cost['requests'] / base_req:.1f}x fewer requests, {wall / base_wall:.1f}x faster")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
