"""The coordinator's report: report.html (one self-contained page) and report.csv."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import date
from html import escape
from typing import Any, Sequence

from ..criteria.evaluate import CANDIDATE, INELIGIBLE, POTENTIAL, STATUSES, PatientResult, deciding, still_to_do, to_obtain, washouts_due
from ..trial import Trial


def funnel(trial: Trial, results: Sequence[PatientResult], outside: int = 0) -> list[tuple[str, int, int]]:
    """(criterion id, patients it removed first, patients left), in the trial's order.

    ``outside`` patients were never fetched (no target diagnosis): the first diagnosis gate
    removed them.
    """
    first: Counter = Counter()
    for r in results:
        ids = deciding(trial, r.criteria)
        if ids:
            first[ids[0]] += 1
    return funnel_rows(trial, first, len(results), outside)


def funnel_rows(trial: Trial, first: Counter, evaluated: int, outside: int = 0) -> list[tuple[str, int, int]]:
    """The funnel from counts: ``first`` criterion id -> patients it ruled out first."""
    first = Counter(first)
    if outside:
        gate = next(c.id for c in trial.criteria if c.kind == "condition" and c.type == "inclusion")
        first[gate] += outside
    left = evaluated + outside
    rows = []
    for c in trial.criteria:
        if c.washout or c.manual:
            continue
        left -= first[c.id]
        rows.append((c.id, first[c.id], left))
    return rows


def ineligibility_reasons(trial: Trial, results: Sequence[PatientResult]) -> Counter:
    """How many ineligible patients each criterion excludes (a patient may count under several)."""
    counts: Counter = Counter()
    for r in results:
        for cid in deciding(trial, r.criteria):
            counts[cid] += 1
    return counts


def _value(o: Any) -> str:
    if o.value is None:
        return ""
    v = f"{o.value:g}" if isinstance(o.value, float) else str(o.value)
    return f"{v} {o.unit}" if o.unit and o.unit != "a" else v


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # OWASP: what spreadsheets read as a formula
_PLAIN_NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text, never runs: data from a server is untrusted.

    A cell starting with = + - @, a tab or a carriage return gets a leading apostrophe (OWASP
    CSV injection advice), so it reads as written; plain numbers such as -1.5 stay numbers.
    """
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text


CSV_FIELDS = ["patient", "status", "criterion", "type", "result", "value", "unit", "reason", "evidence", "changed", "server_status", "decided_by_person_on"]


def report_csv(trial: Trial, results: Sequence[PatientResult], changes: dict[str, str] | None = None, subjects: dict[str, dict[str, Any]] | None = None) -> str:
    """One row per patient and criterion; ``server_status`` is the ResearchSubject's status on
    the server now (nightly), ``decided_by_person_on`` the day a person set it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in results:
        write_csv_rows(w, trial, r, changes, subjects)
    return buf.getvalue()


def write_csv_rows(w: Any, trial: Trial, r: PatientResult, changes: dict[str, str] | None = None, subjects: dict[str, dict[str, Any]] | None = None) -> None:
    """One patient's rows of report.csv, through a csv writer."""
    on_server = (subjects or {}).get(r.patient, {})
    for c in trial.criteria:
        o = r.criteria[c.id]
        row = [r.patient, r.status, c.id, c.type, o.result, o.value, o.unit, o.reason, " ".join(o.evidence), (changes or {}).get(r.patient, ""),
               on_server.get("status", ""), on_server.get("decided_on") or ""]
        w.writerow([csv_cell(v) for v in row])


def _server_cell(view: dict[str, Any] | None) -> str:
    """The subject's status on the server; a person's decision says so, with its day."""
    if not view:
        return "<td class='meta'>—</td>"
    if view.get("by_person"):
        when = f"decided by a person on {view['decided_on']}" if view.get("decided_on") else "by a person"
        return (f"<td class='d-person'><span class='badge person'>{escape(view['status'])}</span>"
                f"<div class='meta'>{escape(when)}</div></td>")
    return f"<td class='s-{escape(view['status'])}'>{escape(view['status'])}</td>"


def decision_rows(results: Sequence[PatientResult], subjects: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    """(status, patients) for the statuses people set, in enrolment order, then what awaits one."""
    from ..nightly.decisions import DECISION_ORDER

    decided = Counter(v["status"] for v in subjects.values() if v.get("by_person"))
    rows = [(s, decided[s]) for s in DECISION_ORDER if decided[s]]
    rows += [(s, n) for s, n in sorted(decided.items()) if s not in DECISION_ORDER]
    return rows


def _needs_review_html(needs_review: Sequence[dict[str, Any]]) -> list[str]:
    out = [f"<section class='review'><h2>Needs review ({len(needs_review)})</h2>"
           "<p class='meta'>A person's decision that new data contradicts. The matcher changed nothing: "
           "each is a Task on the server (intent proposal) for a coordinator to look at and close.</p>",
           "<table><tr><th>Patient</th><th>Decision on the server</th><th>Matcher now</th><th>Why</th><th>Evidence</th><th>Task</th></tr>"]
    for n in needs_review:
        out.append(
            f"<tr><td class='nowrap'>{escape(n['patient'])}</td><td><span class='badge person'>{escape(n['decision'])}</span>"
            f"<div class='meta'>{escape(n['subject'])}, decided on {escape(n.get('decided_on') or '?')}</div></td>"
            f"<td class='s-ineligible'>{escape(n['matcher_status'])}</td><td>{escape(n['reason'])}</td>"
            f"<td class='ev'>{'<br>'.join(escape(e) for e in n['evidence'])}</td><td class='ev'>{escape(n.get('task') or '')}</td></tr>"
        )
    out.append("</table></section>")
    return out


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC",sans-serif;margin:24px auto;max-width:1200px;color:#1f2328;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}.meta{color:#57606a;margin-bottom:16px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.nowrap{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
.tiles{display:flex;gap:12px;flex-wrap:wrap}.tile{border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:150px}
.tile b{display:block;font-size:26px}.bar{background:#0969da;height:12px;border-radius:2px}
.r-met,.r-not-met,.r-unknown,.r-manual,.x-met,.x-not-met{white-space:nowrap}
.r-met{color:#1a7f37;font-weight:600}.r-not-met{color:#cf222e;font-weight:600}.r-unknown{color:#9a6700;font-weight:600}.r-manual{color:#57606a}
.x-met{color:#cf222e;font-weight:600}.x-not-met{color:#1a7f37;font-weight:600}
.s-candidate{background:#dafbe1}.s-potential-candidate{background:#fff8c5}.s-ineligible{background:#ffebe9}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;border:1px solid #d0d7de}
.ev{font-family:ui-monospace,monospace;font-size:12px;color:#57606a}.changed{background:#ddf4ff;border-color:#54aeff}
.person{background:#fbefff;border-color:#d8b9ff}.tile.person b{color:#8250df}.d-person .meta{margin:0;font-size:12px}
.review{border:2px solid #cf222e;border-radius:8px;padding:4px 16px 8px;margin:12px 0 20px;background:#fff8f8}.review h2{color:#cf222e;border:0;margin-top:8px}
details{margin:4px 0}summary{cursor:pointer}
"""


def _washout_label(trial: Trial, r: PatientResult, cid: str) -> str:
    """The drug to stop: its name, or the drug class and dose when the rule is a dose."""
    o = r.criteria[cid]
    if isinstance(o.value, str):
        return o.value
    label = trial.criterion(cid).params.get("label", cid)
    return f"{label} {_value(o)}".strip()


def _result_cell(ctype: str, result: str) -> str:
    # For exclusions "met" is bad news: colour by what it means for the patient.
    cls = f"x-{result}" if ctype == "exclusion" and result in ("met", "not-met") else f"r-{result}"
    return f'<td class="{cls}">{escape(result)}</td>'


def report_html(
    trial: Trial,
    results: Sequence[PatientResult],
    as_of: date,
    source: str,
    problems: Sequence[str] = (),
    changes: dict[str, str] | None = None,
    outside: int = 0,
    subjects: dict[str, dict[str, Any]] | None = None,
    needs_review: Sequence[dict[str, Any]] = (),
    reviewed: Sequence[dict[str, Any]] = (),
) -> str:
    """``subjects`` (nightly): patient -> the ResearchSubject on the server now; ``needs_review``:
    decisions the data contradicts, listed first."""
    changes = changes or {}
    nightly = subjects is not None
    subjects = subjects or {}
    counts = Counter(r.status for r in results)
    first: Counter = Counter()
    for r in results:
        ids = deciding(trial, r.criteria)
        if ids:
            first[ids[0]] += 1
    shortlist = [r for r in results if r.status in (CANDIDATE, POTENTIAL)]
    waiting = sum(1 for r in shortlist if not subjects.get(r.patient, {}).get("by_person"))
    out = head_lines(trial, as_of, source, counts, first, len(results), outside, changes, subjects if nightly else None, needs_review, reviewed, waiting)
    out.append(glance_header(len(shortlist), nightly))
    out.extend(glance_row(trial, r, changes, subjects if nightly else None) for r in shortlist)
    out.append("</table>")
    for status in (CANDIDATE, POTENTIAL):
        group = [r for r in results if r.status == status]
        out.append(detail_header(status, len(group)))
        for r in group:
            out.extend(detail_lines(trial, r, changes, subjects))
    inel = [r for r in results if r.status == INELIGIBLE]
    out.append(ineligible_header(len(inel), nightly))
    out.extend(ineligible_row(trial, r, changes, subjects if nightly else None) for r in inel)
    out.extend(tail_lines(problems))
    return "\n".join(out)


def head_lines(
    trial: Trial,
    as_of: date,
    source: str,
    counts: Counter,
    first: Counter,
    evaluated: int,
    outside: int,
    changes: dict[str, str],
    subjects: dict[str, dict[str, Any]] | None,
    needs_review: Sequence[dict[str, Any]] = (),
    reviewed: Sequence[dict[str, Any]] = (),
    waiting: int = 0,
) -> list[str]:
    """The page up to the patient lists, from counts only: ``counts`` per status, ``first``
    criterion id -> patients it ruled out first (the funnel), ``waiting``: nightly only."""
    nightly = subjects is not None
    subjects = subjects or {}
    titles = {c.id: c.title for c in trial.criteria}
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Screening report: {escape(trial.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(trial.title)}</h1>",
        f"<div class='meta'>As of <b>{as_of}</b> · source {escape(source)} · trial definition {escape(trial.id)} · {evaluated + outside} patients screened"
        + (f" ({outside} without a target diagnosis, not fetched)" if outside else "") + "</div>",
    ]
    if nightly:
        out.extend(_needs_review_html(needs_review) if needs_review else ["<p class='meta'>Needs review: none (no person's decision is contradicted by the data).</p>"])
        if reviewed:
            out.append(f"<p class='meta'>Reviewed: {len(reviewed)} decision(s) the data contradicts, whose review a person has closed and kept: "
                       + escape(", ".join(f"{n['patient']} ({n['decision']}; {', '.join(n['criteria'])})" for n in reviewed)) + ".</p>")
    out.append("<div class='tiles'>")
    for s in STATUSES:
        out.append(f"<div class='tile s-{s}'><b>{counts.get(s, 0)}</b>{escape(s)} (matcher)</div>" if nightly else f"<div class='tile s-{s}'><b>{counts.get(s, 0)}</b>{escape(s)}</div>")
    people = decision_rows((), subjects)
    if nightly:
        detail = ", ".join(f"{n} {st}" for st, n in people)
        out.append(f"<div class='tile person'><b>{sum(n for _, n in people)}</b>decided by people{': ' + escape(detail) if detail else ''}</div>")
    if changes:
        out.append(f"<div class='tile changed'><b>{len(changes)}</b>changed since last run</div>")
    out.append("</div>")

    out.append("<h2>Attrition</h2><table><tr><th>Step</th><th>Criterion</th><th class='num'>Removed</th><th class='num'>Remaining</th><th style='width:35%'></th></tr>")
    total = max(evaluated + outside, 1)
    out.append(f"<tr><td>Screened</td><td></td><td></td><td class='num'>{evaluated + outside}</td><td><div class='bar' style='width:100%'></div></td></tr>")
    for cid, removed, left in funnel_rows(trial, first, evaluated, outside):
        out.append(
            f"<tr><td>{escape(cid)}</td><td>{escape(titles[cid])}</td><td class='num'>{removed}</td><td class='num'>{left}</td>"
            f"<td><div class='bar' style='width:{100 * left / total:.1f}%'></div></td></tr>"
        )
    if nightly:
        out.append("<tr><th colspan='5'>People's decisions (the ResearchSubject's status a coordinator set on the server)</th></tr>")
        for st, n in people:
            out.append(f"<tr><td>{escape(st)}</td><td>decided by a person</td><td></td><td class='num'>{n}</td>"
                       f"<td><div class='bar' style='width:{100 * n / total:.1f}%;background:#8250df'></div></td></tr>")
        out.append(f"<tr><td>awaiting a decision</td><td>candidates and potential candidates no person has decided on yet</td><td></td><td class='num'>{waiting}</td>"
                   f"<td><div class='bar' style='width:{100 * waiting / total:.1f}%'></div></td></tr>")
    out.append(f"</table><p class='meta'>Each patient is counted under the first criterion, in protocol order, that rules them out. Washout criteria ({escape(trial.washout_note)}) and manual checks never remove a patient."
               + (" People's decisions are counted whatever the matcher finds now; the matcher never changes them." if nightly else "") + "</p>")
    return out


def glance_header(shortlisted: int, nightly: bool = False) -> str:
    server_th = "<th>On the server</th>" if nightly else ""
    return (f"<h2>At a glance ({shortlisted})</h2><table><tr><th>Patient</th><th>{'Matcher' if nightly else 'Status'}</th>{server_th}"
            "<th>To obtain (unknown)</th><th>To wash out</th><th>Manual checks</th></tr>")


def glance_row(trial: Trial, r: PatientResult, changes: dict[str, str] | None = None, subjects: dict[str, dict[str, Any]] | None = None) -> str:
    """A (potential) candidate's line in the at-a-glance table; ``subjects`` (nightly) adds the server's column."""
    changes = changes or {}
    todo = to_obtain(trial, r.criteria)
    washouts = [_washout_label(trial, r, cid) for cid in washouts_due(trial, r.criteria)]
    manual = sum(1 for c in trial.criteria if r.criteria[c.id].result == "manual")
    badge = f" <span class='badge changed'>{escape(changes[r.patient])}</span>" if r.patient in changes else ""
    return (
        f"<tr><td class='nowrap'><a href='#{escape(r.patient)}'>{escape(r.patient)}</a>{badge}</td><td class='s-{r.status}'>{escape(r.status)}</td>"
        + (_server_cell(subjects.get(r.patient)) if subjects is not None else "") + f"<td>{escape(', '.join(todo))}</td><td>{escape(', '.join(str(w) for w in washouts))}</td><td class='num'>{manual}</td></tr>"
    )


_HEADINGS = {CANDIDATE: "Candidates", POTENTIAL: "Potential candidates (data missing)"}


def detail_header(status: str, count: int) -> str:
    """The heading of the candidates' (or potential candidates') section; "None." when empty."""
    return f"<h2>{_HEADINGS[status]} ({count})</h2>" + ("" if count else "\n<p class='meta'>None.</p>")


def detail_lines(trial: Trial, r: PatientResult, changes: dict[str, str] | None = None, subjects: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """A (potential) candidate's full detail: every criterion with result, value, reason, evidence."""
    changes, subjects = changes or {}, subjects or {}
    badge = f" <span class='badge changed'>{escape(changes[r.patient])}</span>" if r.patient in changes else ""
    notes = still_to_do(trial, r.criteria)
    view = subjects.get(r.patient)
    person = (f" <span class='badge person'>{escape(view['status'])}: decided by a person on {escape(view.get('decided_on') or '?')}</span>"
              if view and view.get("by_person") else "")
    out = [f"<h3 id='{escape(r.patient)}'>{escape(r.patient)} <span class='badge s-{r.status}'>{escape(r.status)}</span>{person}{badge}</h3>"]
    if notes:
        out.append(f"<div class='meta'>{escape('; '.join(notes))}</div>")
    out.append("<table><tr><th>Criterion</th><th>Result</th><th>Value</th><th>Reason</th><th>Evidence</th></tr>")
    for c in trial.criteria:
        o = r.criteria[c.id]
        out.append(
            f"<tr><td title='{escape(c.title)}'>{escape(c.id)}</td>{_result_cell(c.type, o.result)}<td>{escape(_value(o))}</td>"
            f"<td>{escape(o.reason)}</td><td class='ev'>{'<br>'.join(escape(e) for e in o.evidence)}</td></tr>"
        )
    out.append("</table>")
    return out


def ineligible_header(count: int, nightly: bool = False) -> str:
    server_th = "<th>On the server</th>" if nightly else ""
    return f"<h2>Ineligible ({count})</h2><details><summary>Show the reason for each</summary><table><tr><th>Patient</th>{server_th}<th>Criteria</th><th>Reason</th></tr>"


def ineligible_row(trial: Trial, r: PatientResult, changes: dict[str, str] | None = None, subjects: dict[str, dict[str, Any]] | None = None) -> str:
    """One line per ineligible patient: the criteria that rule them out and why."""
    changes = changes or {}
    ids = deciding(trial, r.criteria)
    badge = f" <span class='badge changed'>{escape(changes[r.patient])}</span>" if r.patient in changes else ""
    return (
        f"<tr><td>{escape(r.patient)}{badge}</td>" + (_server_cell(subjects.get(r.patient)) if subjects is not None else "") + f"<td>{escape(', '.join(ids))}</td>"
        f"<td>{'<br>'.join(escape(r.criteria[i].reason) for i in ids)}</td></tr>"
    )


def tail_lines(problems: Sequence[str]) -> list[str]:
    """The end of the page: the ineligible table's close, the input problems (first 500)."""
    out = ["</table></details>"]
    if problems:
        out.append(f"<h2>Input problems ({len(problems)})</h2><p class='meta'>These inputs were skipped; everything else was screened.</p><ul>")
        out.extend(f"<li>{escape(p)}</li>" for p in problems[:500])
        if len(problems) > 500:
            out.append(f"<li>… and {len(problems) - 500} more (see run.json)</li>")
        out.append("</ul>")
    out.append("</body></html>\n")
    return out
