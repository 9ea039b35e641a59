"""What the terminal shows: a progress bar (only on a terminal) and the run summary."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, Sequence, TextIO

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


def night_text(trials: Sequence[Trial], report: Any, out: Any) -> str:
    """The nightly job's summary: one trial as a screen's, a portfolio as one line per trial."""
    s = report.summary
    if not report.trials:
        return summary_text(trials[0], report.results, s["errors"], [
            f"Night {s['as_of']} ({s['mode']}{', ' + s['full_because'] if s['full_because'] else ''}): "
            f"{s['re_evaluated']} re-evaluated, {s['new_candidates']} new candidate(s), {s['dropped']} dropped, {s['written']} ResearchSubject(s) written",
            f"People's decisions on the server: {sum(s['decisions'].values())}"
            + (f" ({', '.join(f'{n} {st}' for st, n in s['decisions'].items())})" if s["decisions"] else "")
            + f"; needs review: {len(s['needs_review'])}" + (" (see report.html; a Task on the server each)" if s["needs_review"] else ""),
            f"HTTP: {s['http']['requests']} requests, {s['http']['bytes'] / 1e6:.2f} MB read; {s['duration_s']:.1f} s",
            f"Wrote report.html, report.csv, screening.ndjson, research-subjects.json, run.json to {out}",
        ])
    lines = [f"Night {s['as_of']}: {len(report.trials)} trials in one pass ({s['mode']})"]
    for tid, part in report.trials.items():
        t = part.summary
        c = t["statuses"]
        how = t["mode"] + (f": {t['full_because']}" if t["full_because"] else "")
        lines.append(f"  {tid:<28} {c['candidate']:>5} candidate  {c['potential-candidate']:>5} potential  {c['ineligible']:>6} ineligible  "
                     f"{t['re_evaluated']:>5} re-evaluated ({how}), {t['written']} written, {sum(t['decisions'].values())} decided, {len(t['needs_review'])} to review")
    if s.get("trials_removed"):
        lines.append(f"Taken out of the portfolio (no longer screened; their subjects stay on the server): {', '.join(s['trials_removed'])}")
    if s["errors"]:
        lines.append(f"{s['errors']} input problem(s): listed in each trial's report.html and in run.json (exit code 3)")
    lines.append(f"HTTP: {s['http']['requests']} requests, {s['http']['bytes'] / 1e6:.2f} MB read, for all trials; {s['duration_s']:.1f} s")
    lines.append(f"Wrote {', '.join(f'{t}/' for t in report.trials)}, run.json and portfolio.html to {out}")
    return "\n".join(lines)
