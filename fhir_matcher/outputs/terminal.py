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
    if outside:
        lines = [f"Screened {len(results) + outside} patients for {trial.id}; {len(results)} with a target diagnosis evaluated:"]
    else:
        lines = [f"Screened {len(results)} patients for {trial.id}:"]
    for s in STATUSES:
        lines.append(f"  {s:<20} {counts.get(s, 0):>6}")
    reasons = ineligibility_reasons(trial, results).most_common(5)
    if reasons:
        titles = {c.id: c.title for c in trial.criteria}
        lines.append("Most common reasons for ineligibility:")
        for cid, n in reasons:
            lines.append(f"  {n:>6}  {cid}: {titles[cid]}")
    if problems:
        lines.append(f"{problems} input problem(s): listed in report.html and run.json (exit code 3)")
    lines.extend(extra)
    return "\n".join(lines)
