"""``screen`` of files and Bulk exports in bounded memory, on every core (issue 15).

The command line's path for ``--source PATH`` and ``--source URL --bulk``: the outputs are
written as results come (runners/partitioned.py), then run.json (and, for several trials,
DIR/run.json and portfolio.html). REST screening of a server keeps its records in memory
(screen.py): its cohort is fetched by searches, not streamed.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

from .outputs.files import write_run_json
from .outputs.portfolio import write_portfolio_index
from .outputs.terminal import summary_text_counts
from .partition.spill import parse_size
from .rest.transport import Cost, Transport
from .runners.partitioned import DEFAULT_MEMORY, PartitionedRun, screen_files_streamed
from .screen import bulk_download
from .trial import Trial


PARTITIONS_ENV = "FHIR_MATCHER_PARTITIONS"  # internal knob: the number of partitions, whatever the budget


def memory_size(text: str) -> int:
    """argparse type for ``--memory``: 512M, 2G ... (at least 64 MiB)."""
    try:
        n = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n < 64 * 1024 * 1024:
        raise argparse.ArgumentTypeError(f"at least 64M is needed (one Python process with the trials): {text!r}")
    return n


def process_count(text: str) -> int:
    """argparse type for ``--processes``: a whole number from 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"at least 1: {text!r}")
    return n


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("bounded memory (files, Bulk exports, servers)")
    g.add_argument("--memory", type=memory_size, default=DEFAULT_MEMORY, metavar="SIZE",
                   help="memory budget for the whole run, all processes together, e.g. 512M or 2G (default 512M); "
                        "larger inputs are spilled by patient to a private folder under --out and screened part by part; "
                        "a server's cohort is read in chunks of patients that fit it")
    g.add_argument("--processes", type=process_count, default=None, metavar="N",
                   help="worker processes that evaluate patients (default: the number of cores; 1 for small inputs and with --tx)")


def screen_bulk_streamed(url: str, trials: list[Trial], as_of: date, out: Path, transport: Transport, *, tag: str | None, group: str | None,
                         poll_max: float, **kw: Any) -> PartitionedRun:
    """``$export``, then the bounded screen of the download (its folder named "$export" in problems)."""
    with bulk_download(url, trials, as_of, transport, tag, group, poll_max) as (folder, export, client):
        run = screen_files_streamed(folder, trials, as_of, out, source=url, rename=lambda p: p.replace(str(folder), "$export"),
                                    extra_problems=list(export.problems), **kw)
    for s in run.screenings:
        s.cost = client.transport.cost
    return run


def run_screen(args: argparse.Namespace, trials: list[Trial], as_of: date, progress: tuple[Any, Any],
               transport: Callable[[], Transport] | None, tag: str | None, tx: dict[str, Any]) -> tuple[PartitionedRun, dict[str, Any]]:
    """Screen and write every output; returns the run and the HTTP cost (bulk) for run.json."""
    started = time.monotonic()
    processes = 1 if any(tx.values()) else args.processes  # a terminology server client stays in this process
    kw = dict(memory=args.memory, processes=processes, progress=progress)
    if os.environ.get(PARTITIONS_ENV):  # tests: force the spill path on small inputs
        kw["parts"] = int(os.environ[PARTITIONS_ENV])
    if transport is not None:
        t = transport()
        run = screen_bulk_streamed(args.source, trials, as_of, args.out, t, tag=tag, group=args.bulk_group, poll_max=args.bulk_poll_max, **kw)
        cost = t.cost.to_json()
    else:
        run = screen_files_streamed(args.source, trials, as_of, args.out, all_patients=args.all_patients, **kw)
        cost = Cost().to_json()
    for s in run.screenings:
        s.duration_s = time.monotonic() - started
    if len(trials) == 1:
        s = run.screenings[0]
        extra = {"terminology": tx[s.trial.id].summary()} if tx.get(s.trial.id) else {}
        write_run_json(args.out, {"command": "screen", **s.summary(), **extra})
    else:
        for s in run.screenings:
            write_run_json(args.out / s.trial.id, {"command": "screen", **s.summary()})
        paths = write_portfolio_index(args.out, run.screenings, run.shortlist, run.population, run.evaluated_any, as_of, args.source, cost,
                                      time.monotonic() - started)
        if any(tx.values()):
            import json

            data = json.loads(paths["run"].read_text(encoding="utf-8"))
            data["terminology"] = {tid: m.summary() for tid, m in tx.items() if m}
            write_run_json(args.out, data)
    return run, cost


def summary_lines(run: PartitionedRun, out: Path, source_is_url: bool) -> str:
    """What a single-trial screen prints (as the in-memory screen does)."""
    s = run.screenings[0]
    extra = []
    if s.outside:
        extra.append(f"{s.outside} patients have no target diagnosis: counted as ineligible, not listed (--all-patients lists them)")
    if source_is_url:
        c = s.cost
        extra.append(f"HTTP: {c.requests} requests ({c.retries} retries), {c.bytes / 1e6:.2f} MB read")
    extra.append(f"Wrote {', '.join(p.name for p in run.paths[s.trial.id].values())}, run.json to {out}")
    return summary_text_counts(s.trial, s.totals.counts, s.totals.reasons, s.evaluated, len(s.problems), extra, s.outside)
