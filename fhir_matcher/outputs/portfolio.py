"""A portfolio of trials screened in one pass: one folder per trial, the totals, one overview page.

``DIR/<trial id>/`` holds exactly the files a single-trial run writes; ``DIR/run.json`` the
totals, each trial's counts and the one HTTP cost; ``DIR/portfolio.html`` the trials with
links to their reports and a patient-by-trial matrix for every patient who is a candidate or
potential candidate somewhere.
"""

from __future__ import annotations

import json
from datetime import date
from html import escape
from pathlib import Path
from typing import Any, Sequence

from ..criteria.evaluate import CANDIDATE, INELIGIBLE, POTENTIAL, STATUSES, still_to_do
from .files import prepare_dir, write_outputs, write_private, write_run_json

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1a1a1a;max-width:1200px}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.15rem;margin:28px 0 8px}
.meta{color:#555;font-size:.9rem}table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{border-bottom:1px solid #ddd;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0}td:first-child{white-space:nowrap}td.num,th.num{text-align:right}
.s{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85rem;white-space:nowrap}
.candidate{background:#d8f3dc;color:#1b4332}.potential-candidate{background:#fff3bf;color:#5c4400}
.ineligible{background:#f1f1f1;color:#666}.outside{color:#999}
"""


def write_portfolio(out: Path, screenings: Sequence[Any], as_of: date, source: str, cost: dict[str, Any], duration_s: float, command: str = "screen") -> dict[str, Path]:
    """Each trial's usual files under out/<trial id>/, then run.json and portfolio.html."""
    prepare_dir(out)
    paths: dict[str, Path] = {}
    for s in screenings:
        folder = out / s.trial.id
        write_outputs(folder, s.trial, s.results, as_of, source, s.problems, outside=s.outside)
        write_run_json(folder, {"command": command, **s.summary()})
        paths[s.trial.id] = folder
    patients = {r.patient for s in screenings for r in s.results}
    population = max((len(s.results) + s.outside for s in screenings), default=0)
    paths.update(write_portfolio_index(out, screenings, shortlist_rows(screenings), population, len(patients), as_of, source, cost, duration_s, command))
    return paths


def shortlist_rows(screenings: Sequence[Any]) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Every patient who is a candidate or potential candidate in some trial: patient ->
    trial id -> (status, what it still needs), most promising first."""
    status: dict[str, dict[str, tuple[str, str]]] = {}
    for s in screenings:
        for r in s.results:
            todo = "; ".join(still_to_do(s.trial, r.criteria)) if r.status != INELIGIBLE else ""
            status.setdefault(r.patient, {})[s.trial.id] = (r.status, todo)
    return order_shortlist([(p, by) for p, by in status.items() if any(st != INELIGIBLE for st, _ in by.values())])


def order_shortlist(rows: list[tuple[str, dict[str, tuple[str, str]]]]) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Most candidacies first, then most potential ones, then by patient."""
    return sorted(rows, key=lambda row: (-sum(st == CANDIDATE for st, _ in row[1].values()), -sum(st == POTENTIAL for st, _ in row[1].values()), row[0]))


def write_portfolio_index(out: Path, screenings: Sequence[Any], shortlist: list[tuple[str, dict[str, tuple[str, str]]]], population: int,
                          evaluated_any: int, as_of: date, source: str, cost: dict[str, Any], duration_s: float, command: str = "screen") -> dict[str, Path]:
    """DIR/run.json and DIR/portfolio.html from each trial's counts and the shortlist only."""
    problems = list(dict.fromkeys(p for s in screenings for p in s.problems))
    summary = {
        "command": command,
        "as_of": as_of.isoformat(),
        "source": source,
        "trials": {s.trial.id: {"title": s.trial.title, "evaluated": s.evaluated, "outside_cohort": s.outside, "statuses": s.counts()} for s in screenings},
        "screened": population,
        "evaluated_any_trial": evaluated_any,
        "shortlisted_any_trial": len(shortlist),
        "problems": problems,
        "http": cost,
        "duration_s": round(duration_s, 3),
    }
    paths = {"run": out / "run.json", "portfolio": out / "portfolio.html"}
    write_private(paths["run"], json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_private(paths["portfolio"], portfolio_page(screenings, shortlist, as_of, source))
    return paths


def portfolio_html(screenings: Sequence[Any], as_of: date, source: str) -> str:
    return portfolio_page(screenings, shortlist_rows(screenings), as_of, source)


def portfolio_page(screenings: Sequence[Any], shortlist: list[tuple[str, dict[str, tuple[str, str]]]], as_of: date, source: str) -> str:
    trials = [s.trial for s in screenings]
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Trial portfolio, {as_of.isoformat()}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Trial portfolio</h1><p class='meta'>{len(trials)} trials screened on {escape(as_of.isoformat())} from {escape(source)} in one pass. "
        "Each trial's full report (criteria, reasons, evidence) is linked below.</p>",
        "<h2>Trials</h2><table><tr><th>Trial</th><th>Title</th>"
        + "".join(f"<th class='num'>{escape(st)}</th>" for st in STATUSES)
        + "<th class='num'>outside cohort</th><th>Report</th></tr>",
    ]
    for s in screenings:
        counts = s.counts()
        out.append(
            f"<tr><td>{escape(s.trial.id)}</td><td>{escape(s.trial.title)}</td>"
            + "".join(f"<td class='num'>{counts[st]}</td>" for st in STATUSES)
            + f"<td class='num'>{s.outside}</td><td><a href='{escape(s.trial.id)}/report.html'>report</a> · "
            f"<a href='{escape(s.trial.id)}/report.csv'>CSV</a></td></tr>"
        )
    out.append("</table>")
    out.append(f"<h2>Patients who could join a trial ({len(shortlist)})</h2>")
    if not shortlist:
        out.append("<p class='meta'>No candidate or potential candidate in any trial.</p>")
    else:
        out.append("<table><tr><th>Patient</th>" + "".join(f"<th>{escape(t.id)}</th>" for t in trials) + "</tr>")
        for p, by in shortlist:
            cells = []
            for s in screenings:
                got = by.get(s.trial.id)
                if got is None:
                    cells.append("<td class='outside' title='no target diagnosis for this trial'>not in cohort</td>")
                    continue
                status, todo = got
                title = f" title='{escape(todo)}'" if todo else ""
                cells.append(f"<td><span class='s {status}'{title}>{escape(status)}</span></td>")
            out.append(f"<tr><td>{escape(p)}</td>{''.join(cells)}</tr>")
        out.append("</table><p class='meta'>Hover a potential candidate's status to see what it still needs; the trial's report has the evidence.</p>")
    out.append("</body></html>")
    return "\n".join(out)
