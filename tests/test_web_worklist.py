"""The worklist and the evidence summaries, without a server: a schema-3 state written the way
the nightly writes it, and FHIR resources as servers return them."""

from datetime import date

import pytest
from starlette.testclient import TestClient

from fhir_matcher.nightly.state import AuditEntry, Decision, PatientState, Review, State, TrialRow
from fhir_matcher.rest.client import FhirError
from fhir_matcher.trial import default_trial_path, load_trial
from fhir_matcher.web import users
from fhir_matcher.web.app import create_app
from fhir_matcher.web.evidence import Resolver, summarize
from fhir_matcher.web.settings import WebSettings
from fhir_matcher.web.store import FILTERS, SORTS, Trials, counts, open_state, worklist

NIGHT1, NIGHT2 = date(2026, 11, 23), date(2026, 11, 24)


def result(trial, unknown=(), not_met=()):
    out = {}
    for c in trial.criteria:
        r = "manual" if c.manual else "unknown" if c.id in unknown else "not-met" if c.id in not_met else "met"
        out[c.id] = {"result": r, "reason": f"{c.id} reason", "evidence": [], "value": None}
    return {"criteria": out}


@pytest.fixture()
def state(tmp_path):
    trial = load_trial()
    manual = [c.id for c in trial.criteria if c.manual]
    path = tmp_path / "state.sqlite"

    def p(pid, status, first, changed=None, **kw):
        return PatientState(f"Patient/{pid}", status, "d", None, NIGHT2, result(trial, **kw), None, None, first, changed, trial.id)

    patients = [
        p("a", "candidate", NIGHT1),
        p("b", "potential-candidate", NIGHT2, unknown=("inc-lymphocytes", "inc-platelets")),  # new tonight
        p("c", "ineligible", NIGHT1, NIGHT2, not_met=("inc-age",)),  # changed tonight, but ineligible: not "new" for the list
        p("d", "ineligible", NIGHT1, not_met=("inc-age",)),  # decided eligible, contradicted: needs review
        p("e", "candidate", NIGHT1),  # decided not-registered
    ]
    decisions = [Decision("Patient/d", "ResearchSubject/sd", "eligible", "2026-11-20T10:00:00Z", NIGHT1, "x", NIGHT2, "3", trial.id),
                 Decision("Patient/e", "ResearchSubject/se", "not-registered", None, NIGHT2, "x", NIGHT2, "2", trial.id)]
    review = Review("Patient/d", "ResearchSubject/sd", "Task/t", "ident", "k", "eligible", ["inc-age"], "inc-age: too young", NIGHT2, "x", trial=trial.id)
    with State(path) as st:
        st.commit_run(trials=[TrialRow(trial.id, trial.title, str(default_trial_path()), "dg", NIGHT1, NIGHT2)], patients=patients, meta={},
                      started_at="s", finished_at="f", as_of=NIGHT2, server_time=None, summary={}, decisions={trial.id: decisions}, reviews=[review])
    with State(path, lock=False) as st:
        st.add_audit(trial.id, [AuditEntry("2026-11-24T09:00:00+00:00", "Patient/a", None, "alice", "web", None, "confirmed", None, f"manual:{manual[0]}"),
                                AuditEntry("2026-11-24T09:01:00+00:00", "Patient/a", None, "alice", "web", None, "rejected", "no", f"manual:{manual[1]}"),
                                AuditEntry("2026-11-24T09:02:00+00:00", "Patient/a", None, "bob", "web", "rejected", "confirmed", "seen", f"manual:{manual[1]}")])
        users.add(st.db, "alice", "viewer", "correct horse battery")
    return path, trial, manual


def test_worklist_rows_counts_and_sorting(state):
    path, trial, manual = state
    with open_state(path) as st:
        info = Trials().info(st.trials()[trial.id])
        rows = {r.id: r for r in worklist(st, info)}
    assert info.last_as_of == NIGHT2.isoformat() and info.trial is not None
    a, b, c, d, e = (rows[k] for k in "abcde")
    # Manual checks: the latest answer per criterion counts (bob confirmed what alice rejected).
    assert a.manual_open == manual[2:] and a.rejected == [] and a.needs == []
    assert b.needs == ["inc-lymphocytes", "inc-platelets"] and b.manual_open == manual
    assert b.new and c.new and not a.new
    assert d.review and d.decision == "eligible" and d.decided_on == "2026-11-20"
    assert e.decision == "not-registered"
    n = counts(list(rows.values()))
    assert n == {"shortlist": 3, "candidate": 1, "potential-candidate": 1, "review": 1, "new": 1, "decided": 2, "ineligible": 1, "all": 5}
    ordered = sorted(rows.values(), key=SORTS["priority"])
    assert [r.id for r in ordered] == ["d", "a", "b", "c", "e"]  # review first, then candidates, potential, the rest
    assert [r.id for r in rows.values() if FILTERS["shortlist"][1](r)] == ["a", "b", "d"]


def test_worklist_page_filters(state):
    path, trial, _ = state

    class NoNames:
        def search(self, search):
            raise FhirError("GET Patient: HTTP 503", 503)

    app = create_app(WebSettings(server="http://x", state=path, client_factory=NoNames))
    c = TestClient(app, base_url="https://127.0.0.1")
    token = c.get("/login").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    c.post("/login", data={"csrf": token, "username": "alice", "password": "correct horse battery"})
    page = c.get(f"/trials/{trial.id}?show=review").text
    assert 'href="/trials/cd19-baff-car-t/patients/d"' in page and 'patients/a"' not in page
    assert "Names are not shown" in page  # the server failed: said, the list still shown
    page = c.get(f"/trials/{trial.id}?show=potential-candidate").text
    assert "Lymphocytes" in page and "6 manual checks" in page
    assert c.get(f"/trials/{trial.id}?show=all&q=zzz").text.count("/patients/") == 0
    assert c.get("/trials/no-such-trial").status_code == 404


def test_evidence_summaries():
    obs = summarize({"resourceType": "Observation", "id": "o1", "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "26515-7", "display": "Platelets"}]},
                     "valueQuantity": {"value": 142, "unit": "10*9/L"}, "effectivePeriod": {"start": "2026-11-02T08:00:00Z"},
                     "referenceRange": [{"low": {"value": 150, "unit": "10*9/L"}, "high": {"value": 400, "unit": "10*9/L"}}],
                     "interpretation": [{"coding": [{"code": "L", "display": "Low"}]}]})
    facts = dict(obs.facts)
    assert obs.title == "Platelets" and obs.codes == ["LOINC 26515-7 (Platelets)"]
    assert facts["Value"] == "142 10*9/L" and facts["Reference range"] == "150 10*9/L – 400 10*9/L" and facts["Interpretation"] == "Low"
    assert facts["Date"].startswith("2026-11-02")
    cond = summarize({"resourceType": "Condition", "id": "c1", "code": {"text": "Lupus nephritis class IV",
                      "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "M32.14"}]}, "onsetDateTime": "2021-03-04"})
    assert cond.title == "Lupus nephritis class IV" and "ICD-10 M32.14" in cond.codes and dict(cond.facts)["Onset"] == "2021-03-04"
    med = summarize({"resourceType": "MedicationRequest", "id": "m1", "status": "active", "medicationReference": {"reference": "Medication/x"},
                     "authoredOn": "2026-10-01", "dosageInstruction": [{"text": "5 mg daily", "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}]}]},
                    {"Medication/x": {"code": {"text": "prednisolone 5 mg tablet"}}})
    assert med.title == "prednisolone 5 mg tablet" and dict(med.facts)["Dose"] == "5 mg daily; 5 mg" and dict(med.facts)["Dates"] == "2026-10-01"


def test_resolver_batches_and_names_what_is_missing():
    calls = []

    class Server:
        def transaction(self, bundle):
            calls.append(len(bundle["entry"]))
            out = []
            for e in bundle["entry"]:
                url = e["request"]["url"]
                if url == "Observation/gone":
                    out.append({"response": {"status": "404 Not Found"}})
                else:
                    t, i = url.split("/")
                    out.append({"response": {"status": "200 OK"}, "resource": {"resourceType": t, "id": i, "code": {"text": i}}})
            return {"resourceType": "Bundle", "entry": out}

    r = Resolver(Server())
    ev = r.evidence(["Observation/a", "https://ehr.example/fhir/Observation/b/_history/2", "Observation/gone", "Observation/a"])
    assert [e.ref for e in ev] == ["Observation/a", "Observation/b", "Observation/gone", "Observation/a"]
    assert ev[1].title == "b" and "not found" in ev[2].problem
    assert calls == [3]  # one batch, each reference once
    r.evidence(["Observation/a"])
    assert calls == [3]  # cached for the page
