"""The pages: the portfolio, a trial's worklist, a patient in one trial and across trials, and
the two forms that change something (a manual check, a decision)."""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..nightly.state import State
from ..rest.client import FhirError
from ..rest.query import Search
from ..rest.transport import TransportError
from .app import Web, web
from .decide import CHOICES, NEEDS_REASON, NEXT, DecisionError, Stale, choices, shown_subject, study_ref, subjects_of, write_decision
from .evidence import Resolver, patient_label
from .security import require_user
from .store import FILTERS, SORTS, TrialInfo, counts, decision_counts, manual_checks, open_state, record_check, record_status, worklist

log = logging.getLogger("fhir_matcher")
PAGE = 50


def _trial(w: Web, state: State, trial_id: str) -> TrialInfo:
    row = state.trials().get(trial_id)
    if row is None:
        raise HTTPException(404, f"No trial {trial_id} in this portfolio.")
    return w.trials.info(row)


FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 id


def _patient_key(pid: str) -> str:
    if not FHIR_ID.fullmatch(pid or ""):
        raise HTTPException(404, "No such patient.")
    return f"Patient/{pid}"


def _state(w: Web):
    return open_state(w.settings.state)  # StateError: a 503 page (app.py)


def _server_problem(e: Exception) -> str:
    return f"The FHIR server could not be read ({type(e).__name__}: {str(e)[:200]})."


@require_user()
def portfolio(request: Request) -> Response:
    w = web(request)
    items = []
    with _state(w) as state:
        for row in state.trials().values():
            info = w.trials.info(row)
            rows = worklist(state, info)
            items.append({"info": info, "counts": counts(rows), "decisions": decision_counts(rows)})
    return w.render(request, "portfolio.html", items=items, filters=FILTERS)


@require_user()
def trial_worklist(request: Request) -> Response:
    w = web(request)
    tid = request.path_params["trial_id"]
    q = request.query_params
    show = q.get("show", "shortlist") if q.get("show", "shortlist") in FILTERS else "shortlist"
    sort = q.get("sort", "priority") if q.get("sort", "priority") in SORTS else "priority"
    needle = (q.get("q") or "").strip()
    try:
        page = max(1, int(q.get("page", "1")))
    except ValueError:
        page = 1
    with _state(w) as state:
        info = _trial(w, state, tid)
        rows = worklist(state, info)
        state.record_access(request.state.user["name"], None, tid, "worklist")
    all_counts = counts(rows)
    shown = [r for r in rows if FILTERS[show][1](r) and (not needle or needle.lower() in r.id.lower())]
    shown.sort(key=SORTS[sort], reverse=(sort == "changed"))
    pages = max(1, (len(shown) + PAGE - 1) // PAGE)
    page = min(page, pages)
    part = shown[(page - 1) * PAGE : page * PAGE]
    names: dict[str, dict[str, str]] = {}
    problem = None
    if part:  # names for this page only: one search
        try:
            for p in w.client.search(Search("Patient").where(_id=[r.id for r in part]).elements("name", "birthDate", "gender").count(PAGE)):
                names[f"Patient/{p.get('id')}"] = patient_label(p)
        except (FhirError, TransportError) as e:
            problem = _server_problem(e) + " Names are not shown."
    titles = {c.id: c.title for c in info.trial.criteria} if info.trial else {}
    return w.render(request, "worklist.html", info=info, rows=part, names=names, counts=all_counts, decisions=decision_counts(rows), filters=FILTERS,
                    show=show, sort=sort, q=needle, page=page, pages=pages, total=len(shown), titles=titles, problem=problem)


def _patient_context(w: Web, state: State, info: TrialInfo, key: str, user: dict[str, Any]) -> dict[str, Any]:
    everywhere = state.patient_everywhere(key)  # one query, not every patient of the trial
    p = everywhere.get(info.id)
    if p is None:
        raise HTTPException(404, f"{key} is not in the worklist of {info.id}.")
    decision = state.decisions(info.id).get(key)
    reviews = [r for r in state.reviews(info.id, open_only=True) if r.patient == key]
    history = state.audit(trial=info.id, patient=key)
    checks = manual_checks(history).get(key, {})
    others = []
    for tid, row in state.trials().items():
        if tid == info.id:
            continue
        op = everywhere.get(tid)
        od = state.decisions(tid).get(key)
        if op or od:
            others.append({"id": tid, "title": row.title, "status": od.status if od else op.status, "by_person": bool(od)})
    state.record_access(user["name"], key, info.id, "view")
    criteria = p.result.get("criteria", {})
    trial = info.trial
    rows = []
    resolver = Resolver(w.client)
    refs = [e for c in criteria.values() for e in c.get("evidence", [])]
    problem = None
    try:
        resolver.read([key, *refs])
    except (FhirError, TransportError) as e:
        problem = _server_problem(e)
    order = [(c.id, c) for c in trial.criteria if c.id in criteria] if trial else []
    order += [(cid, None) for cid in criteria if not any(cid == o[0] for o in order)]  # whatever the definition no longer names
    for cid, c in order:
        o = criteria.get(cid, {})
        rows.append({"id": cid, "title": c.title if c else cid, "type": c.type if c else "", "protocol": c.protocol if c else "",
                     "manual": (c.manual if c else o.get("result") == "manual"), "washout": c.washout if c else False,
                     "result": o.get("result", "?"), "reason": o.get("reason", ""), "value": o.get("value"), "unit": o.get("unit"),
                     "evidence": resolver.evidence(o.get("evidence", [])) if not problem else [], "refs": o.get("evidence", []),
                     "check": checks.get(cid)})
    subject = None
    if not problem:
        try:
            study = w.studies.get(info.id) or (study_ref(w.client, trial) if trial else None)
            if study:
                w.studies[info.id] = study
                subject = shown_subject(subjects_of(w.client, study, key))
        except (FhirError, TransportError) as e:
            problem = _server_problem(e)
    current = subject.status if subject else None
    return {"info": info, "p": p, "key": key, "pid": key.split("/", 1)[1], "person": patient_label(resolver.resource(key)),
            "rows": rows, "decision": decision, "reviews": reviews, "history": history, "others": others, "subject": subject,
            "choices": choices(current) if trial and not problem else [], "next": NEXT.get(current), "needs_reason": NEEDS_REASON,
            "problem": problem, "manual_open": [r for r in rows if r["manual"] and not r["check"]],
            "to_obtain": [r for r in rows if r["result"] == "unknown" and not (r["manual"] or r["washout"])]}


@require_user()
def patient_in_trial(request: Request) -> Response:
    w = web(request)
    key = _patient_key(request.path_params["patient_id"])
    with _state(w) as state:
        info = _trial(w, state, request.path_params["trial_id"])
        ctx = _patient_context(w, state, info, key, request.state.user)
    flash = request.session.pop("flash", None)
    return w.render(request, "patient.html", flash=flash, **ctx)


@require_user()
def patient_everywhere(request: Request) -> Response:
    """The patient across every trial of the portfolio (where a SMART launch lands)."""
    w = web(request)
    key = _patient_key(request.path_params["patient_id"])
    items = []
    with _state(w) as state:
        everywhere = state.patient_everywhere(key)
        for tid, row in state.trials().items():
            info = w.trials.info(row)
            p = everywhere.get(tid)
            d = state.decisions(tid).get(key)
            review = any(r.patient == key for r in state.reviews(tid, open_only=True))
            items.append({"info": info, "p": p, "decision": d, "review": review})
        state.record_access(request.state.user["name"], key, None, "view")
    person, problem = {}, None
    try:
        person = patient_label(w.client.request("GET", key))
    except FhirError as e:
        problem = "This patient is not on the FHIR server." if e.status in (404, 410) else _server_problem(e)
    except TransportError as e:
        problem = _server_problem(e)
    order = {"candidate": 0, "potential-candidate": 1}
    items.sort(key=lambda i: (i["p"] is None, order.get(i["p"].status if i["p"] else "", 2), i["info"].id))
    return w.render(request, "patient_all.html", key=key, pid=key.split("/", 1)[1], person=person, items=items, problem=problem)


def _back(tid: str, pid: str) -> str:
    return f"/trials/{tid}/patients/{pid}"


@require_user(role="coordinator")
def manual_check(request: Request) -> Response:
    form = request.state.form
    w = web(request)
    tid, pid = request.path_params["trial_id"], request.path_params["patient_id"]
    key = _patient_key(pid)
    cid, verdict, note = str(form.get("criterion") or ""), str(form.get("verdict") or ""), str(form.get("note") or "").strip()[:2000]
    if verdict not in ("confirmed", "rejected"):
        raise HTTPException(400, "Confirm or reject: nothing else.")
    with _state(w) as state:
        info = _trial(w, state, tid)
        if info.trial is None or not any(c.id == cid and c.manual for c in info.trial.criteria):
            raise HTTPException(400, f"{cid or '(none)'} is not a manual criterion of {tid}.")
        if tid not in state.patient_everywhere(key):
            raise HTTPException(404, f"{key} is not in the worklist of {tid}.")
        if verdict == "rejected" and not note:
            request.session["flash"] = {"kind": "error", "text": f"Say why {cid} is rejected (a note is needed)."}
            return RedirectResponse(_back(tid, pid) + f"#manual-{cid}", status_code=303)
        before = manual_checks(state.audit(trial=tid, patient=key)).get(key, {}).get(cid)
        record_check(state, tid, key, cid, verdict, request.state.user["name"], note, before.verdict if before else None)
        state.record_access(request.state.user["name"], key, tid, f"manual:{cid}")
    request.session["flash"] = {"kind": "ok", "text": f"{cid}: {verdict}."}
    return RedirectResponse(_back(tid, pid) + "#manual", status_code=303)


@require_user(role="coordinator")
def decide(request: Request) -> Response:
    form = request.state.form
    w = web(request)
    tid, pid = request.path_params["trial_id"], request.path_params["patient_id"]
    key = _patient_key(pid)
    status, reason = str(form.get("status") or ""), str(form.get("reason") or "").strip()[:2000]
    subject_id, version = str(form.get("subject") or "") or None, str(form.get("version") or "") or None
    user = request.state.user["name"]
    if status not in CHOICES:
        raise HTTPException(400, "Not a status a coordinator sets here.")
    with _state(w) as state:
        info = _trial(w, state, tid)
        if info.trial is None:
            raise HTTPException(409, info.problem or "The trial definition cannot be read.")
        if tid not in state.patient_everywhere(key):
            raise HTTPException(404, f"{key} is not in the worklist of {tid}.")
        try:
            study = w.studies.get(tid) or study_ref(w.client, info.trial)
            written = write_decision(w.client, info.trial, study, key, subject_id, version, status, reason, user)
        except Stale as e:
            request.session["flash"] = {"kind": "stale", "text": f"Not saved: {e}. This page now shows what the server holds; decide again if you still want to."}
            return RedirectResponse(_back(tid, pid) + "#decision", status_code=303)
        except DecisionError as e:
            request.session["flash"] = {"kind": "error", "text": f"Not saved: {e}."}
            return RedirectResponse(_back(tid, pid) + "#decision", status_code=303)
        except (FhirError, TransportError) as e:
            request.session["flash"] = {"kind": "error", "text": f"Not saved: {_server_problem(e)}"}
            return RedirectResponse(_back(tid, pid) + "#decision", status_code=303)
        record_status(state, tid, key, written.subject, written.before, written.after, user, reason, written.version, written.last_updated)
        state.record_access(user, key, tid, f"decide:{status}")
    log.info("decision recorded on the server and in the audit log")
    request.session["flash"] = {"kind": "ok", "text": f"Saved: {written.after} on {written.subject} (the server now holds version {written.version})."}
    return RedirectResponse(_back(tid, pid) + "#decision", status_code=303)


def routes() -> list[Route]:
    return [
        Route("/", portfolio, methods=["GET"]),
        Route("/trials/{trial_id}", trial_worklist, methods=["GET"]),
        Route("/trials/{trial_id}/patients/{patient_id}", patient_in_trial, methods=["GET"]),
        Route("/trials/{trial_id}/patients/{patient_id}/manual", manual_check, methods=["POST"]),
        Route("/trials/{trial_id}/patients/{patient_id}/decision", decide, methods=["POST"]),
        Route("/patients/{patient_id}", patient_everywhere, methods=["GET"]),
    ]
