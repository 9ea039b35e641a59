"""What the terminal shows: a progress bar (only on a terminal) and the run summary."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Sequence, TextIO

from ..criteria.evaluate import STATUSES, PatientResult
from ..trial import Trial
from .report import ineligibility_reasons


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = int(width * done / total) if total else width
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def summary_text(trial: Trial, results: Sequence[PatientResult], problems: int, extra: Sequence[str] = (), outside: int = 0) -> str:
    counts = Counter(r.status for r in results)
    return summary_text_counts(trial, counts, ineligibility_reasons(trial, results), len(results), problems, extra, outside)


def summary_text_counts(trial: Trial, counts: Counter, reasons: Counter, evaluated: int, problems: int, extra: Sequence[str] = (), outside: int = 0) -> str:
    """The run summary from counts (a bounded-memory screen keeps no results)."""
    if outside:
        lines = [f"Screened {evaluated + outside} patients for {trial.id}; {evaluated} with a target diagnosis evaluated:"]
    else:
        lines = [f"Screened {evaluated} patients for {trial.id}:"]
    for s in STATUSES:
        lines.append(f"  {s:<20} {counts.get(s, 0):>6}")
    order = {c.id: n for n, c in enumerate(trial.criteria)}
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], order.get(kv[0], 0)))[:5]  # ties in protocol order
    if top:
        titles = {c.id: c.title for c in trial.criteria}
        lines.append("Most common reasons for ineligibility:")
        for cid, n in top:
            lines.append(f"  {n:>6}  {cid}: {titles[cid]}")
    if problems:
        lines.append(f"{problems} input problem(s): listed in report.html and run.json (exit code 3)")
    lines.extend(extra)
    return "\n".join(lines)
