"""Screening files in bounded memory, on every core (issue 15).

Pass 1 streams the inputs into K partition spill files by patient (partition/split.py); pass
2 evaluates one partition at a time in worker processes (partition/work.py); the outputs
are merged by patient as the in-memory path orders them (outputs/stream.py). K comes from
the input size and the memory budget; spill files live in a private folder under the output
folder and are removed at the end, on error and on Ctrl-C too.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from .. import record as record_module
from ..criteria.cohort import cohort_valuesets, needed_types
from ..criteria.evaluate import STATUSES
from ..outputs.portfolio import order_shortlist
from ..outputs.stream import write_streamed
from ..rest.transport import Cost
from ..sources.files import _first_type, input_files
from ..partition import work
from ..partition.spill import KEY, LOCAL, MiB, SpillDir, open_private, partition_of, partitions_for
from ..partition.split import SplitConfig, SplitJob, run_split
from ..trial import Trial

log = logging.getLogger("fhir_matcher")
ProgressFn = Callable[[int, int], None]

DEFAULT_MEMORY = 512 * MiB
CHUNK = 32 * MiB  # NDJSON files are split in jobs of about this size (pass 1 in parallel)
SMALL = 16 * MiB  # below this, the default is one process: starting workers costs more


def default_processes() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class StreamedScreening:
    """What a Screening says about one trial, from counts: the results are on disk."""

    source: str
    trial: Trial
    as_of: date
    totals: work.TrialTotals
    problems: list[str]
    outside: int = 0
    cost: Cost = field(default_factory=Cost)
    duration_s: float = 0.0

    @property
    def evaluated(self) -> int:
        return self.totals.evaluated

    def counts(self) -> dict[str, int]:
        return {s: self.totals.counts.get(s, 0) for s in STATUSES}

    def summary(self) -> dict[str, Any]:
        return {
            "trial": self.trial.id,
            "as_of": self.as_of.isoformat(),
            "source": self.source,
            "screened": self.evaluated + self.outside,
            "evaluated": self.evaluated,
            "outside_cohort": self.outside,
            "statuses": self.counts(),
            "problems": self.problems,
            "http": self.cost.to_json(),
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class PartitionedRun:
    screenings: list[StreamedScreening]
    shortlist: list[tuple[str, dict[str, tuple[str, str]]]]  # for the portfolio page
    population: int
    evaluated_any: int
    parts: int
    processes: int
    paths: dict[str, dict[str, Path]]  # trial id -> the files written


def plan(files: list[Path], trials: list[Trial], cohort: bool, chunk: int = CHUNK) -> tuple[list[Path], list[SplitJob], frozenset[bytes] | None, int]:
    """The input files in reading order, pass 1's jobs, the types kept, the bytes to read;
    the same choices as FileSource.read_cohort (or read, outside cohort mode)."""
    keep = None
    if cohort:
        types = set().union(*(needed_types(t) for t in trials))
        keep = frozenset(t.encode() for t in types | {"Patient", "Medication"}) if types else None
        files = [f for f in files if not f.name.endswith(".ndjson")] + [f for f in files if f.name.endswith(".ndjson")]
    jobs: list[SplitJob] = []
    kept = 0
    for fidx, f in enumerate(files):
        size = _size(f)
        if not f.name.endswith(".ndjson"):
            jobs.append(SplitJob(len(jobs), fidx, False))
            kept += size
            continue
        flags: dict[str, bool] = {}
        if cohort:
            try:
                first = _first_type(f)
            except OSError:
                first = None
            conventional = re.match(r"^([A-Z][A-Za-z]+)([._-]|\.ndjson$)", f.name)
            if conventional and first and conventional.group(1).encode() == first and keep is not None and first not in keep:
                continue  # a one-type file of a type no criterion reads
            if first == b"Condition" or not conventional:
                flags = {"pass_a": True, "pass_b": not conventional, "seen": True}
        kept += size
        for start, end, line in _chunks(f, size, chunk):
            jobs.append(SplitJob(len(jobs), fidx, True, start, end, line, **flags))
    return files, jobs, keep, kept


def _size(f: Path) -> int:
    try:
        return f.stat().st_size
    except OSError:
        return 0


def _chunks(f: Path, size: int, chunk: int) -> list[tuple[int, int, int]]:
    """(start, end, first line number) of byte ranges that begin on a line."""
    if size <= chunk:
        return [(0, -1, 1)]
    cuts = [(0, 1)]
    try:
        with open(f, "rb") as fh:
            pos, lines, target = 0, 0, chunk
            while True:
                block = fh.read(8 * MiB)
                if not block:
                    break
                while target < pos + len(block):
                    i = block.find(b"\n", max(target - pos, 0))
                    if i < 0:
                        break
                    cuts.append((pos + i + 1, lines + block.count(b"\n", 0, i + 1) + 1))
                    target = pos + i + 1 + chunk
                lines += block.count(b"\n")
                pos += len(block)
    except OSError:
        return [(0, -1, 1)]  # the job names the file
    return [(s, cuts[n + 1][0] if n + 1 < len(cuts) else -1, line) for n, (s, line) in enumerate(cuts)]


def _init_worker(setup: work.Setup) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    work.init(setup)


def start_method() -> str:
    """fork on Linux when this process runs no other thread; else forkserver (or spawn)."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


@contextmanager
def _pool(processes: int, setup: work.Setup) -> Iterator[Any]:
    """Worker processes, or None for one process.

    On Linux, a process with no other thread forks its workers: they start at once with the
    package, the trial and the unit registry already loaded (about two seconds each
    otherwise). With threads about (a lock held at the fork would stay held in the child),
    or elsewhere, a forkserver starts them clean with the package preloaded once.
    """
    if processes <= 1:
        work.init(setup)
        yield None
        return
    method = start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["fhir_matcher.partition.work"])
    pool = ctx.Pool(processes, initializer=_init_worker, initargs=(setup,))
    try:
        yield pool
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _run(pool: Any, fn: Callable[[Any], Any], items: list[Any], progress: ProgressFn | None) -> list[Any]:
    out = []
    it = map(fn, items) if pool is None else pool.imap_unordered(fn, items)
    for n, result in enumerate(it, 1):
        out.append(result)
        if progress:
            progress(n, len(items))
    return out


def screen_files_streamed(
    path: str | Path,
    trials: list[Trial],
    as_of: date,
    out: Path,
    *,
    memory: int = DEFAULT_MEMORY,
    processes: int | None = None,
    all_patients: bool = False,
    progress: tuple[ProgressFn | None, ProgressFn | None] = (None, None),
    source: str | None = None,
    rename: Callable[[str], str] = lambda p: p,
    parts: int | None = None,
    chunk: int = CHUNK,
    extra_problems: list[str] | None = None,
) -> PartitionedRun:
    """Screen files for one trial (outputs in ``out``) or several (``out``/<trial id>/).

    ``rename`` rewrites each problem's text (a bulk export's temporary folder); ``parts``
    forces the number of partitions (tests), ``chunk`` the size of pass 1's jobs.
    """
    started = time.monotonic()
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    gates = {t.id: cohort_valuesets(t) for t in trials}
    cohort = not all_patients and all(gates.values())
    files, jobs, keep, kept = plan(input_files(root), trials, cohort, chunk)
    nproc = processes or (1 if kept < SMALL else default_processes())
    nparts = parts or partitions_for(kept, memory, nproc)
    names = [str(f) for f in files]
    level = logging.getLogger("fhir_matcher").getEffectiveLevel()
    with SpillDir.create(near=out) as spill:
        setup = work.Setup(trials, as_of, cohort, all_patients, names, spill.path, record_module._SALT, level)
        cfg = SplitConfig(spill.path, nparts, names, keep, cohort)
        with _pool(nproc, setup) as pool:
            splits = _run(pool, partial(run_split, cfg), jobs, progress[0])
            _resolve_deferred(spill.path, nparts, splits)
            results = _run(pool, work.evaluate_partition, list(range(nparts)), progress[1])
        placed = sorted([p for s in splits for p in s.problems] + [p for r in results for p in r.problems], key=lambda p: p[:5])
        problems = list(extra_problems or [])
        for p in placed:
            text = rename(work.problem_text(p))
            log.warning("%s", rename(work.log_text(p)))
            problems.append(text)
        population = sum(r.population for r in results)
        screenings, paths = [], {}
        for i, t in enumerate(trials):
            totals = work.TrialTotals()
            for r in results:
                totals.add(r.totals[t.id])
            s = StreamedScreening(source or str(path), t, as_of, totals, problems, max(0, population - totals.evaluated))
            folder = out if len(trials) == 1 else out / t.id
            parts_files = [spill.path / f"r{p:04d}-{i:03d}.res" for p in range(nparts)]
            paths[t.id] = write_streamed(folder, t, parts_files, as_of, s.source, totals.counts, totals.first, totals.evaluated, problems, s.outside, spill.path)
            s.duration_s = time.monotonic() - started
            screenings.append(s)
    shortlist = order_shortlist([row for r in results for row in r.shortlist])
    return PartitionedRun(screenings, shortlist, population, sum(r.evaluated_any for r in results), nparts, nproc, paths)


def _resolve_deferred(spill: Path, parts: int, splits: list[Any]) -> None:
    """Resources that named a patient by a urn:uuid their own Bundle does not hold: filed
    under the Patient whose fullUrl it is in any Bundle (as RecordBuilder.records does)."""
    deferred = sorted(spill.glob("deferred-j*.spill"))
    if not deferred:
        return
    aliases: dict[str, str] = {}
    for _, _, url, key in sorted(a for s in splits for a in s.aliases):
        aliases[url] = key
    outs: dict[int, Any] = {}
    try:
        for f in deferred:
            with open(f, "rb") as fh:
                for line in fh:
                    head, raw = line.split(b"\t", 1)
                    h = orjson.loads(head)
                    urn = h[KEY]
                    if urn in aliases:
                        h[KEY] = aliases[urn]
                        h += [None] * (LOCAL + 1 - len(h))
                        h[LOCAL] = {urn: aliases[urn]}
                    p = partition_of(h[KEY], parts)
                    if p not in outs:
                        outs[p] = open_private(spill / f"p{p:04d}-jdefer.spill")
                    outs[p].write(orjson.dumps(h) + b"\t" + raw)
            f.unlink()
    finally:
        for o in outs.values():
            o.close()
