"""Throughput of the Spark engine (local[1], local[2], a standalone cluster) against the in-process engine.

    python benchmarks/bench_spark.py [--patients 200000] [--seed 3] [--keep DIR] [--no-cluster]

Generates the population once (fhir-matcher synth), then screens it in fresh processes:
in-process, Spark local[1], Spark local[2], and a standalone Spark cluster on loopback (a
master and two workers of one core each, each its own JVM, started from the PySpark
install's bin/spark-class; tests/spark_cluster.py). Prints wall time and patients per
second, and checks they all give the same screening.ndjson.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=200000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--no-cluster", action="store_true", help="skip the standalone cluster run")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fm-bench-spark-"))
    data = work / f"synth-{args.patients}-{args.seed}"
    if not (data / "Patient.ndjson").exists():
        subprocess.run([sys.executable, "-m", "fhir_matcher", "synth", "--patients", str(args.patients), "--seed", str(args.seed), "--out", str(data)], check=True)
    size = sum(f.stat().st_size for f in data.glob("*.ndjson"))
    print(f"data: {args.patients} patients, {size / 1e9:.2f} GB NDJSON; machine {platform.machine()}, {os.cpu_count()} cores")
    import spark_cluster

    runs = {"in-process": [], "spark local[1]": ["--engine", "spark", "--master", "local[1]"], "spark local[2]": ["--engine", "spark", "--master", "local[2]"]}
    digests = {}
    print(f"\n{'engine':<30} {'wall s':>8} {'patients/s':>11}")
    with (nullcontext() if args.no_cluster else spark_cluster.start(work / "cluster", workers=2, cores=1, memory="2g")) as cluster:
        env = dict(os.environ)
        if cluster:
            runs["spark standalone 2 workers x 1 core"] = ["--engine", "spark", "--master", cluster.master]
            env = cluster.env
        for name, extra in runs.items():
            out = work / name.replace(" ", "-").replace("[", "").replace("]", "")
            cmd = [sys.executable, "-m", "fhir_matcher", "screen", "--source", str(data), "--as-of", "2026-11-24", "--out", str(out), "-q", *extra]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t
            if proc.returncode not in (0, 3):
                sys.exit(f"{name} failed: {proc.stderr[-2000:]}")
            digests[name] = hashlib.sha256((out / "screening.ndjson").read_bytes()).hexdigest()[:12]
            print(f"{name:<30} {wall:8.1f} {args.patients / wall:11,.0f}", flush=True)
    same = len(set(digests.values())) == 1
    print(f"\nscreening.ndjson identical across engines: {same} ({', '.join(f'{k}={v}' for k, v in digests.items())})")


if __name__ == "__main__":
    main()
