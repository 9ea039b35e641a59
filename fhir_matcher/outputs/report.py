"""The coordinator's report: report.html (one self-contained page) and report.csv."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import date
from html import escape
from typing import Any, Sequence

from ..engine.evaluate import CANDIDATE, INELIGIBLE, POTENTIAL, STATUSES, PatientResult, deciding, still_to_do, to_obtain, washouts_due
from ..trial import Trial


def funnel(trial: Trial, results: Sequence[PatientResult], outside: int = 0) -> list[tuple[str, int, int]]:
    """(criterion id, patients it removed first, patients left), in the trial's order.

    ``outside`` patients were never fetched (no target diagnosis): the first diagnosis gate
    removed them.
    """
    first = Counter()
    for r in results:
        ids = deciding(trial, r.criteria)
        if ids:
            first[ids[0]] += 1
    if outside:
        gate = next(c.id for c in trial.criteria if c.kind == "condition" and c.type == "inclusion")
        first[gate] += outside
    left = len(results) + outside
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


CSV_FIELDS = ["patient", "status", "criterion", "type", "result", "value", "unit", "reason", "evidence", "changed"]


def report_csv(trial: Trial, results: Sequence[PatientResult], changes: dict[str, str] | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in results:
        for c in trial.criteria:
            o = r.criteria[c.id]
            row = [r.patient, r.status, c.id, c.type, o.result, o.value, o.unit, o.reason, " ".join(o.evidence), (changes or {}).get(r.patient, "")]
            w.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


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
) -> str:
    changes = changes or {}
    counts = Counter(r.status for r in results)
    titles = {c.id: c.title for c in trial.criteria}
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Screening report: {escape(trial.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(trial.title)}</h1>",
        f"<div class='meta'>As of <b>{as_of}</b> · source {escape(source)} · trial definition {escape(trial.id)} · {len(results) + outside} patients screened"
        + (f" ({outside} without a target diagnosis, not fetched)" if outside else "") + "</div>",
        "<div class='tiles'>",
    ]
    for s in STATUSES:
        out.append(f"<div class='tile s-{s}'><b>{counts.get(s, 0)}</b>{escape(s)}</div>")
    if changes:
        out.append(f"<div class='tile changed'><b>{len(changes)}</b>changed since last run</div>")
    out.append("</div>")

    out.append("<h2>Attrition</h2><table><tr><th>Step</th><th>Criterion</th><th class='num'>Removed</th><th class='num'>Remaining</th><th style='width:35%'></th></tr>")
    total = max(len(results) + outside, 1)
    out.append(f"<tr><td>Screened</td><td></td><td></td><td class='num'>{len(results) + outside}</td><td><div class='bar' style='width:100%'></div></td></tr>")
    for cid, removed, left in funnel(trial, results, outside):
        out.append(
            f"<tr><td>{escape(cid)}</td><td>{escape(titles[cid])}</td><td class='num'>{removed}</td><td class='num'>{left}</td>"
            f"<td><div class='bar' style='width:{100 * left / total:.1f}%'></div></td></tr>"
        )
    out.append(f"</table><p class='meta'>Each patient is counted under the first criterion, in protocol order, that rules them out. Washout criteria ({escape(trial.washout_note)}) and manual checks never remove a patient.</p>")

    shortlist = [r for r in results if r.status in (CANDIDATE, POTENTIAL)]
    out.append(f"<h2>At a glance ({len(shortlist)})</h2><table><tr><th>Patient</th><th>Status</th><th>To obtain (unknown)</th><th>To wash out</th><th>Manual checks</th></tr>")
    for r in shortlist:
        todo = to_obtain(trial, r.criteria)
        washouts = [_washout_label(trial, r, cid) for cid in washouts_due(trial, r.criteria)]
        manual = sum(1 for c in trial.criteria if r.criteria[c.id].result == "manual")
        badge = f" <span class='badge changed'>{escape(changes[r.patient])}</span>" if r.patient in changes else ""
        out.append(
            f"<tr><td class='nowrap'><a href='#{escape(r.patient)}'>{escape(r.patient)}</a>{badge}</td><td class='s-{r.status}'>{escape(r.status)}</td>"
            f"<td>{escape(', '.join(todo))}</td><td>{escape(', '.join(str(w) for w in washouts))}</td><td class='num'>{manual}</td></tr>"
        )
    out.append("</table>")

    for status, heading in ((CANDIDATE, "Candidates"), (POTENTIAL, "Potential candidates (data missing)")):
        group = [r for r in results if r.status == status]
        out.append(f"<h2>{heading} ({len(group)})</h2>")
        if not group:
            out.append("<p class='meta'>None.</p>")
        for r in group:
            badge = f" <span class='badge changed'>{escape(changes[r.patient])}</span>" if r.patient in changes else ""
            notes = still_to_do(trial, r.criteria)
            out.append(f"<h3 id='{escape(r.patient)}'>{escape(r.patient)} <span class='badge s-{r.status}'>{escape(r.status)}</span>{badge}</h3>")
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

    inel = [r for r in results if r.status == INELIGIBLE]
    out.append(f"<h2>Ineligible ({len(inel)})</h2><details><summary>Show the reason for each</summary><table><tr><th>Patient</th><th>Criteria</th><th>Reason</th></tr>")
    for r in inel:
        ids = deciding(trial, r.criteria)
        badge = f" <span class='badge changed'>{escape(changes[r.patient])}</span>" if r.patient in changes else ""
        out.append(
            f"<tr><td>{escape(r.patient)}{badge}</td><td>{escape(', '.join(ids))}</td>"
            f"<td>{'<br>'.join(escape(r.criteria[i].reason) for i in ids)}</td></tr>"
        )
    out.append("</table></details>")
    if problems:
        out.append(f"<h2>Input problems ({len(problems)})</h2><p class='meta'>These inputs were skipped; everything else was screened.</p><ul>")
        out.extend(f"<li>{escape(p)}</li>" for p in problems[:500])
        if len(problems) > 500:
            out.append(f"<li>… and {len(problems) - 500} more (see run.json)</li>")
        out.append("</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)
