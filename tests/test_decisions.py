"""Coordinators' decisions are the truth: the nightly job never overwrites them (issue 11).

Against the session's local HAPI server, isolated by its own tag and id prefix: statuses a
person sets on ResearchSubjects survive nights with new data, time passing, ``--full`` and a
trial change; a person's edit between the matcher's read and its write is not lost (the
409/412 path, and the re-read path of servers without versioned updates); new data that
contradicts a decision raises exactly one review Task, closed when it no longer does.
"""

import json
import sqlite3
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from fhir_matcher.cli import main
from fhir_matcher.nightly.state import SCHEMA_VERSION, State
from fhir_matcher.outputs.reviews import REVIEW_CODE, REVIEW_CODES

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
START = date(2026, 11, 24)
TAG = "https://fhir-matcher.org/fhir/test-run|decisions"
PREFIX = "dc-"
FHIR = {"Content-Type": "application/fhir+json"}
SCT = "http://snomed.info/sct"

# Every R4 status a person may set (all but the matcher's three).
PERSON_STATUSES = ["eligible", "screening", "pending-on-study", "on-study", "on-study-intervention", "on-study-observation",
                   "follow-up", "off-study", "not-registered", "withdrawn"]


@pytest.fixture(scope="module")
def server(hapi):
    from fhir_matcher.rest.client import FhirClient
    from fhir_matcher.rest.loader import Loader

    report = Loader(FhirClient(hapi.base_url), tag=TAG, id_prefix=PREFIX).load([DEMO])
    assert not report.rejected
    time.sleep(1.1)  # changes are read with second precision: keep the load out of night 1's second
    return hapi


class Nights:
    def __init__(self, base: str, folder: Path):
        self.base = base
        self.folder = folder
        self.state = folder / "state.sqlite"
        self.n = 0

    def __call__(self, as_of: date, *extra: str, expect: int = 0) -> tuple[dict, dict, Path]:
        self.n += 1
        out = self.folder / f"night-{self.n}"
        code = main(["nightly", "--server", self.base, "--state", str(self.state), "--out", str(out), "--as-of", as_of.isoformat(),
                     "--overlap", "0", "--tag", TAG, "-q", *extra])
        assert code == expect
        summary = json.loads((out / "run.json").read_text(encoding="utf-8"))
        rows = {r["patient"]: r for r in map(json.loads, (out / "screening.ndjson").read_text(encoding="utf-8").splitlines())}
        return summary, rows, out


@pytest.fixture(scope="module")
def nights(server, tmp_path_factory):
    return Nights(server.base_url, tmp_path_factory.mktemp("decisions"))


def tag():
    system, code = TAG.split("|")
    return {"system": system, "code": code}


def subjects(base: str) -> dict[str, dict]:
    r = requests.get(f"{base}/ResearchSubject", params={"_count": 1000}, timeout=30).json()
    found = [e["resource"] for e in r.get("entry", [])]
    out = {}
    for s in found:
        p = s["individual"]["reference"]
        if p.startswith(f"Patient/{PREFIX}"):
            assert p not in out, f"two ResearchSubjects for {p}"
            out[p] = s
    return out


def review_tasks(base: str) -> list[dict]:
    r = requests.get(f"{base}/Task", params={"code": f"{REVIEW_CODES}|{REVIEW_CODE}", "_count": 1000}, timeout=30).json()
    return [e["resource"] for e in r.get("entry", []) if e["resource"]["for"]["reference"].startswith(f"Patient/{PREFIX}")]


def set_status(base: str, patient: str, status: str) -> dict:
    """What a coordinator does in the EHR: read the subject, change its status, save it."""
    s = subjects(base)[patient]
    s["status"] = status
    r = requests.put(f"{base}/ResearchSubject/{s['id']}", json=s, headers=FHIR, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def put(base: str, resource: dict) -> None:
    r = requests.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR, timeout=30)
    assert r.status_code in (200, 201), r.text


def platelets(patient: str, day: date, n: int) -> dict:
    return {"resourceType": "Observation", "id": f"{patient.split('/')[1]}-plt-{n}", "status": "final", "meta": {"tag": [tag()]},
            "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]}, "subject": {"reference": patient},
            "effectiveDateTime": day.isoformat(), "valueQuantity": {"value": 180 + n, "system": "http://unitsofmeasure.org", "code": "10*9/L"}}


def hbsag(patient: str, day: date, status: str = "final") -> dict:
    return {"resourceType": "Observation", "id": f"{patient.split('/')[1]}-hbsag", "status": status, "meta": {"tag": [tag()]},
            "code": {"coding": [{"system": "http://loinc.org", "code": "5196-1", "display": "HBsAg"}]}, "subject": {"reference": patient},
            "effectiveDateTime": day.isoformat(), "valueCodeableConcept": {"coding": [{"system": SCT, "code": "10828004", "display": "Positive"}]}}


def statuses(base: str) -> dict[str, str]:
    return {p: s["status"] for p, s in subjects(base).items()}


def test_decisions_of_every_kind_survive_nights_new_data_time_full_and_trial_change(server, nights, tmp_path):
    base = server.base_url
    summary, rows, _ = nights(START)
    shortlist = sorted(p for p, r in rows.items() if r["status"] != "ineligible")
    assert len(shortlist) >= len(PERSON_STATUSES) + 1, "the demo needs enough candidates for this test"
    decided = dict(zip(shortlist, PERSON_STATUSES))
    untouched = shortlist[len(PERSON_STATUSES)]
    for p, st in decided.items():
        set_status(base, p, st)
    versions = {p: subjects(base)[p]["meta"]["versionId"] for p in decided}

    # Night 2: new data for every decided patient (a fresh platelet count), the next day.
    day = START + timedelta(days=1)
    for i, p in enumerate(decided):
        put(base, platelets(p, day, i))
    summary, rows, out = nights(day)
    assert summary["mode"] == "incremental" and summary["re_evaluated"] >= len(decided)
    assert summary["decisions"] == {st: 1 for st in PERSON_STATUSES}
    assert summary["version_check"] == "if-match" and summary["versioned_updates"] is True
    assert {p: statuses(base)[p] for p in decided} == decided
    assert {p: subjects(base)[p]["meta"]["versionId"] for p in decided} == versions  # not even rewritten as is

    # The report and the CSV show the server's status beside the matcher's, with the day.
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "decided by a person on" in html and "awaiting a decision" in html
    csv_rows = (out / "report.csv").read_text(encoding="utf-8").splitlines()
    assert csv_rows[0].endswith(",server_status,decided_by_person_on")
    on_study = next(p for p, st in decided.items() if st == "on-study")
    assert any(line.startswith(f"{on_study},") and ",on-study," in line for line in csv_rows)
    # research-subjects.json never carries a decided patient (posting it cannot overwrite one).
    bundle = json.loads((out / "research-subjects.json").read_text(encoding="utf-8"))
    in_bundle = {e["resource"].get("individual", {}).get("reference") for e in bundle["entry"]}
    assert not in_bundle & set(decided) and untouched in in_bundle

    # Time passes: six weeks later every lab has aged out of its window; the matcher's own
    # subject follows the data, the people's do not move.
    later = START + timedelta(days=45)
    summary, rows, _ = nights(later)
    assert rows[untouched]["status"] != "candidate"
    assert statuses(base)[untouched] == rows[untouched]["status"]
    assert {p: statuses(base)[p] for p in decided} == decided

    # --full, then a changed trial definition (a full re-screen for another reason).
    summary, rows, _ = nights(later, "--full")
    assert summary["mode"] == "full"
    assert {p: statuses(base)[p] for p in decided} == decided
    trial = tmp_path / "trial.toml"
    trial.write_text((ROOT / "fhir_matcher" / "trials" / "cd19-baff-car-t.toml").read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    summary, rows, _ = nights(later, "--trial", str(trial))
    assert summary["full_because"] == "the trial definition, a value set or the terminology server changed"
    assert {p: statuses(base)[p] for p in decided} == decided
    assert {p: subjects(base)[p]["meta"]["versionId"] for p in decided} == versions

    # screen knows nothing of the server's subjects; posting its research-subjects.json
    # (conditional creates) duplicates nothing and overwrites no decision.
    screened = tmp_path / "screen"
    count = len(subjects(base))
    assert main(["screen", "--source", base, "--tag", TAG, "--as-of", START.isoformat(), "--out", str(screened), "-q"]) == 0
    posted = requests.post(base, data=(screened / "research-subjects.json").read_bytes(), headers=FHIR, timeout=60)
    assert posted.status_code == 200, posted.text
    assert {p: statuses(base)[p] for p in decided} == decided and len(subjects(base)) == count

    # A person's "no" stays no; moved back by a person, the subject is the matcher's again.
    declined = next(p for p, st in decided.items() if st == "not-registered")
    set_status(base, declined, "candidate")
    summary, rows, _ = nights(later + timedelta(days=1))
    assert statuses(base)[declined] == rows[declined]["status"]
    assert "not-registered" not in summary["decisions"]

    # The state remembers each decision with the day it was first seen, and an audit trail.
    with State(nights.state) as state:
        seen = state.decisions("cd19-baff-car-t")
        assert seen[on_study].status == "on-study" and seen[on_study].first_seen_on == START + timedelta(days=1)
        trail = state.audit("cd19-baff-car-t", declined)
        assert [(a.before, a.after, a.actor) for a in trail if a.source == "server"][:2] == [
            ("candidate", "not-registered", "seen on server"), ("not-registered", rows[declined]["status"], "seen on server")]


def test_a_contradiction_raises_one_review_closed_when_the_data_no_longer_contradicts(server, nights):
    base = server.base_url
    day = START + timedelta(days=60)
    summary, rows, _ = nights(day)
    shortlist = sorted(p for p, r in rows.items() if r["status"] != "ineligible" and statuses(base).get(p) == r["status"])
    patient = shortlist[0]
    set_status(base, patient, "on-study")
    before = len(review_tasks(base))

    put(base, hbsag(patient, day))  # a new positive HBsAg: the exclusion now applies
    summary, rows, out = nights(day)
    assert rows[patient]["status"] == "ineligible"
    assert statuses(base)[patient] == "on-study"  # the matcher changed nothing
    [review] = [n for n in summary["needs_review"] if n["patient"] == patient]
    assert review["decision"] == "on-study" and review["criteria"] == ["exc-hepatitis"] and review["task"].startswith("Task/")
    assert summary["reviews_opened"] == 1
    tasks = [t for t in review_tasks(base) if t["for"]["reference"] == patient]
    assert len(tasks) == 1 and len(review_tasks(base)) == before + 1
    task = tasks[0]
    assert task["status"] == "requested" and task["intent"] == "proposal"
    assert task["focus"]["reference"] == f"ResearchSubject/{subjects(base)[patient]['id']}"
    assert any(i.get("valueReference", {}).get("reference") == f"Observation/{PREFIX}{patient.split('/')[1][len(PREFIX):]}-hbsag" for i in task["input"])
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.index("Needs review (1)") < html.index("Attrition")

    # Further nights, the same day, the next day and --full: still exactly one review.
    for extra in ((), ("--full",)):
        summary, _, _ = nights(day + timedelta(days=1), *extra)
        assert summary["reviews_opened"] == 0 and [n["patient"] for n in summary["needs_review"]] == [patient]
    assert len([t for t in review_tasks(base) if t["for"]["reference"] == patient]) == 1

    # The lab was entered in error: the data no longer contradicts; the review is closed.
    put(base, hbsag(patient, day, status="entered-in-error"))
    summary, rows, _ = nights(day + timedelta(days=2))
    assert rows[patient]["status"] != "ineligible"
    assert summary["needs_review"] == [] and summary["reviews_closed"] == 1
    [task] = [t for t in review_tasks(base) if t["for"]["reference"] == patient]
    assert task["status"] == "cancelled" and "no longer contradicts" in task["statusReason"]["text"]
    assert statuses(base)[patient] == "on-study"
    summary, _, _ = nights(day + timedelta(days=3))
    assert summary["reviews_opened"] == 0 and summary["reviews_closed"] == 0
    assert len([t for t in review_tasks(base) if t["for"]["reference"] == patient]) == 1
    with State(nights.state) as state:
        [episode] = [r for r in state.reviews("cd19-baff-car-t") if r.patient == patient]
        assert episode.closed_on == day + timedelta(days=2) and episode.task == f"Task/{task['id']}"


def test_a_review_a_person_closed_is_not_raised_again(server, nights):
    base = server.base_url
    day = START + timedelta(days=70)
    summary, rows, _ = nights(day)
    patient = sorted(p for p, r in rows.items() if r["status"] != "ineligible" and statuses(base).get(p) == r["status"])[0]
    set_status(base, patient, "eligible")
    put(base, hbsag(patient, day))
    summary, _, _ = nights(day)
    assert [n["patient"] for n in summary["needs_review"]] == [patient]
    [task] = [t for t in review_tasks(base) if t["for"]["reference"] == patient]
    task["status"] = "completed"  # the coordinator looked and keeps the patient eligible
    assert requests.put(f"{base}/Task/{task['id']}", json=task, headers=FHIR, timeout=30).status_code == 200
    summary, _, out = nights(day + timedelta(days=1))
    assert summary["needs_review"] == [] and [r["patient"] for r in summary["reviewed"]] == [patient]
    assert "Reviewed: 1 decision(s)" in (out / "report.html").read_text(encoding="utf-8")
    assert summary["reviews_opened"] == 0 and summary["reviews_closed"] == 0
    assert len([t for t in review_tasks(base) if t["for"]["reference"] == patient]) == 1
    assert statuses(base)[patient] == "eligible"


def test_an_edit_between_read_and_write_is_not_lost(server, nights, monkeypatch):
    """The matcher reads a candidate, a coordinator saves it as eligible, the matcher's
    If-Match write is refused (HAPI: 409; FHIR: 412): it reads again and leaves it."""
    from fhir_matcher.nightly import job

    base = server.base_url
    day = START + timedelta(days=80)
    summary, rows, _ = nights(day)
    patient = sorted(p for p, r in rows.items() if r["status"] != "ineligible" and statuses(base).get(p) == r["status"])[0]
    put(base, {"resourceType": "Condition", "id": f"{patient.split('/')[1]}-epilepsy", "subject": {"reference": patient}, "meta": {"tag": [tag()]},
               "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G40.9"}]}, "onsetDateTime": day.isoformat()})
    original = job.subjects_of

    def read_then_person_edits(client, studies):
        found = original(client, studies)
        set_status(base, patient, "eligible")  # after our read, before our write
        return found

    monkeypatch.setattr(job, "subjects_of", read_then_person_edits)
    summary, rows, _ = nights(day)
    monkeypatch.undo()
    assert rows[patient]["status"] == "ineligible"  # the matcher wanted to write ineligible
    assert summary["conflicts"] == 1
    assert statuses(base)[patient] == "eligible"  # the person's edit stands
    # Decided again on what the server holds: a contradicted decision, raised for review.
    assert patient in [n["patient"] for n in summary["needs_review"]]
    summary, _, _ = nights(day)
    assert statuses(base)[patient] == "eligible" and summary["conflicts"] == 0 and summary["reviews_opened"] == 0


def test_a_server_without_versioned_updates_is_named_and_read_again_before_each_write(server, nights, monkeypatch):
    from fhir_matcher.nightly import job
    from fhir_matcher.outputs import writeback

    base = server.base_url
    day = START + timedelta(days=90)
    nights(day)
    rows = nights(day)[1]
    patient = sorted(p for p, r in rows.items() if r["status"] != "ineligible" and statuses(base).get(p) == r["status"])[0]
    put(base, {"resourceType": "Condition", "id": f"{patient.split('/')[1]}-epilepsy2", "subject": {"reference": patient}, "meta": {"tag": [tag()]},
               "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G40.9"}]}, "onsetDateTime": day.isoformat()})

    def no_versioning(cs):  # what a server without versioned-update says in its CapabilityStatement
        cs = json.loads(json.dumps(cs))
        for rest in cs.get("rest", []):
            for res in rest.get("resource", []):
                res["versioning"] = "no-version"
        return writeback.version_check(cs)

    original = job.subjects_of
    sent = []

    def read_then_person_edits(client, studies):
        found = original(client, studies)
        set_status(base, patient, "screening")
        return found

    original_tx = job.FhirClient.transaction

    def record(self, bundle):
        sent.extend(e["request"] for e in bundle.get("entry", []))
        return original_tx(self, bundle)

    monkeypatch.setattr(job, "version_check", no_versioning)
    monkeypatch.setattr(job, "subjects_of", read_then_person_edits)
    monkeypatch.setattr(job.FhirClient, "transaction", record)
    summary, rows, _ = nights(day)
    monkeypatch.undo()
    assert summary["version_check"] == "re-read" and summary["versioned_updates"] is False
    assert rows[patient]["status"] == "ineligible"
    assert statuses(base)[patient] == "screening"  # caught by the read right before the write
    assert summary["conflicts"] == 0
    assert not any("ifMatch" in r for r in sent)


def test_a_subject_deleted_on_the_server_is_not_recreated(server, nights):
    base = server.base_url
    day = START + timedelta(days=100)
    summary, rows, _ = nights(day)
    patient = sorted(p for p, r in rows.items() if r["status"] != "ineligible" and statuses(base).get(p) == r["status"])[0]
    assert requests.delete(f"{base}/ResearchSubject/{subjects(base)[patient]['id']}", timeout=30).status_code in (200, 204)
    for extra in ((), ("--full",)):
        summary, rows, out = nights(day, *extra)
        assert summary["subjects_deleted_on_server"] == [patient] and summary["errors"] == 0
        assert patient not in subjects(base)
        bundle = json.loads((out / "research-subjects.json").read_text(encoding="utf-8"))
        assert patient not in {e["resource"].get("individual", {}).get("reference") for e in bundle["entry"]}


def test_a_lost_state_file_raises_no_second_review(server, nights, tmp_path):
    base = server.base_url
    day = START + timedelta(days=110)
    summary, rows, _ = nights(day)
    patient = sorted(p for p, r in rows.items() if r["status"] != "ineligible" and statuses(base).get(p) == r["status"])[0]
    set_status(base, patient, "pending-on-study")
    put(base, hbsag(patient, day))
    summary, _, _ = nights(day)
    assert summary["reviews_opened"] == 1
    tasks = len(review_tasks(base))
    fresh = Nights(base, tmp_path)  # the state file is gone: a first night again
    summary, _, _ = fresh(day)
    assert summary["full_because"] == "first night"
    # (It may recreate the subject deleted in an earlier test: only the state remembered that.)
    assert summary["reviews_opened"] == 0 and summary["reviews_closed"] == 0
    assert patient in [n["patient"] for n in summary["needs_review"]]
    assert len(review_tasks(base)) == tasks and statuses(base)[patient] == "pending-on-study"
    summary, _, _ = fresh(day + timedelta(days=1))
    assert summary["reviews_opened"] == 0


def test_version_check_from_the_capability_statement():
    from fhir_matcher.outputs.writeback import version_check

    def cs(versioning):
        res = {"type": "ResearchSubject"}
        if versioning:
            res["versioning"] = versioning
        return {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": [res]}]}

    assert version_check(cs("versioned-update")) == "if-match"
    assert version_check(cs("versioned")) == "re-read"
    assert version_check(cs("no-version")) == "re-read"
    assert version_check(cs(None)) == "re-read"
    assert version_check({}) == "re-read"


def test_a_412_is_read_again_and_decided_again(trial):
    """The FHIR status for a stale If-Match (412) takes the same path as HAPI's 409."""
    import responses

    from fhir_matcher.criteria.evaluate import PatientResult
    from fhir_matcher.nightly.decisions import parse_subject
    from fhir_matcher.outputs.subjects import SUBJECT_SYSTEM
    from fhir_matcher.outputs.writeback import SubjectWrite, WriteBack
    from fhir_matcher.rest.client import FhirClient
    from fhir_matcher.rest.transport import Transport

    base = "http://fhir.test/r4"
    ident = [{"system": SUBJECT_SYSTEM, "value": f"{trial.id}/Patient/x"}]
    old = {"resourceType": "ResearchSubject", "id": "rs1", "meta": {"versionId": "1"}, "identifier": ident, "status": "candidate",
           "study": {"reference": "ResearchStudy/1"}, "individual": {"reference": "Patient/x"}}
    now = {**old, "meta": {"versionId": "2"}, "status": "on-study"}
    with responses.RequestsMock() as rsps:
        batch = rsps.post(base, json={"resourceType": "Bundle", "type": "batch-response", "entry": [{"response": {"status": "412 Precondition Failed"}}]})
        rsps.get(f"{base}/ResearchSubject", json={"resourceType": "Bundle", "entry": [{"resource": now}]})
        wb = WriteBack(FhirClient(base, Transport(sleep=lambda s: None)), trial)
        written = wb.write("ResearchStudy/1", [SubjectWrite(PatientResult("Patient/x", "ineligible", {}), "ineligible", "exc-x", parse_subject(old, SUBJECT_SYSTEM))])
        sent = json.loads(batch.calls[0].request.body)
    assert sent["entry"][0]["request"] == {"method": "PUT", "url": "ResearchSubject/rs1", "ifMatch": 'W/"1"'}
    assert written == 0 and wb.conflicts == 1 and wb.turned["Patient/x"].status == "on-study"
    assert len(batch.calls) == 1  # not sent again over the person's decision


# The schema of every state file written before decisions were tracked (user_version 0).
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    as_of TEXT NOT NULL,
    server_time TEXT,
    ok INTEGER NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS patients (
    patient TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    digest TEXT NOT NULL,
    recheck_on TEXT,
    evaluated_as_of TEXT NOT NULL,
    result TEXT NOT NULL,
    written_status TEXT,
    written_digest TEXT
);
"""


def test_a_state_file_from_before_decisions_is_migrated(tmp_path):
    path = tmp_path / "state.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('trial_digest', 'abc')")
    db.execute("INSERT INTO meta VALUES ('trial', 't1')")
    db.execute("INSERT INTO runs (started_at, finished_at, as_of, server_time, ok, summary) VALUES ('2026-11-24T02:30:00+00:00', '2026-11-24T02:31:00+00:00', '2026-11-24', '2026-11-24T02:30:00+00:00', 1, '{}')")
    db.execute("INSERT INTO patients VALUES ('Patient/a', 'candidate', 'd1', NULL, '2026-11-24', '{\"criteria\": {}}', 'candidate', 'w1')")
    db.commit()
    db.close()
    with State(path) as state:
        assert state.meta("trial_digest") == "abc"
        assert state.last_success().as_of == date(2026, 11, 24)
        assert state.patients("t1")["Patient/a"].written_status == "candidate"
        assert state.decisions("t1") == {} and state.reviews("t1") == [] and state.audit() == []
        assert state.trials()["t1"].digest == "abc"  # the trial it kept is the portfolio's one trial
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} >= {"meta", "runs", "patients", "decisions", "reviews", "audit"}
    db.close()
    with State(path) as state:  # opening again changes nothing
        assert state.patients("t1")["Patient/a"].digest == "d1"


def test_who_owns_a_status(trial):
    """The matcher's three statuses on its own subjects; everything else is a person's."""
    from fhir_matcher.criteria.context import Outcome
    from fhir_matcher.criteria.evaluate import PatientResult
    from fhir_matcher.nightly.decisions import contradiction, decision_of, parse_subject
    from fhir_matcher.outputs.subjects import SUBJECT_SYSTEM

    def subject(sid, status, ours=True):
        r = {"resourceType": "ResearchSubject", "id": sid, "status": status, "study": {"reference": "ResearchStudy/1"},
             "individual": {"reference": "Patient/x"}}
        if ours:
            r["identifier"] = [{"system": SUBJECT_SYSTEM, "value": f"{trial.id}/Patient/x"}]
        return parse_subject(r, SUBJECT_SYSTEM)

    for status in ("candidate", "potential-candidate", "ineligible"):
        assert decision_of([subject("a", status)]) is None
    for status in PERSON_STATUSES:
        assert decision_of([subject("a", status)]).status == status
    # A subject someone else created for the study is a decision whatever its status.
    assert decision_of([subject("a", "candidate"), subject("b", "candidate", ours=False)]).id == "b"
    assert decision_of([subject("a", "withdrawn"), subject("b", "on-study", ours=False)]).status == "on-study"

    ineligible = {c.id: Outcome("met" if c.type == "inclusion" else "not-met", "fine") for c in trial.criteria}
    ineligible["exc-hepatitis"] = Outcome("met", "latest HBsAg positive", evidence=["Observation/h"])
    result = PatientResult("Patient/x", "ineligible", ineligible)
    found = contradiction(trial, result, subject("a", "eligible"))
    assert found and found.criteria == ["exc-hepatitis"] and found.evidence == ["Observation/h"]
    for status in ("not-registered", "withdrawn", "off-study", "follow-up"):  # a stopped decision is never raised
        assert contradiction(trial, result, subject("a", status)) is None
    assert contradiction(trial, PatientResult("Patient/x", "potential-candidate", ineligible), subject("a", "on-study")) is None


def test_review_evidence_falls_back_to_text_when_a_reference_is_refused(trial):
    import responses

    from fhir_matcher.criteria.context import Outcome
    from fhir_matcher.criteria.evaluate import PatientResult
    from fhir_matcher.nightly.decisions import contradiction, parse_subject
    from fhir_matcher.outputs.reviews import Reviews
    from fhir_matcher.outputs.subjects import SUBJECT_SYSTEM
    from fhir_matcher.rest.client import FhirClient
    from fhir_matcher.rest.transport import Transport

    base = "http://fhir.test/r4"
    criteria = {c.id: Outcome("met" if c.type == "inclusion" else "not-met", "fine") for c in trial.criteria}
    criteria["exc-hepatitis"] = Outcome("met", "latest HBsAg positive", evidence=["Observation/gone"])
    decided = parse_subject({"resourceType": "ResearchSubject", "id": "rs1", "status": "on-study", "individual": {"reference": "Patient/x"},
                             "study": {"reference": "ResearchStudy/1"}}, SUBJECT_SYSTEM)
    c = contradiction(trial, PatientResult("Patient/x", "ineligible", criteria), decided)
    with responses.RequestsMock() as rsps:
        refused = rsps.post(base, status=400, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                                                                   "diagnostics": "Resource Observation/gone not found"}]})
        rsps.post(base, json={"resourceType": "Bundle", "type": "transaction-response",
                              "entry": [{"response": {"status": "201 Created", "location": "Task/t1/_history/1"}}]})
        api = Reviews(FhirClient(base, Transport(sleep=lambda s: None)), trial)
        assert api.create([(c, "id-1", "2026-11-24")], "2026-11-25T02:30:00+00:00") == {"id-1": "Task/t1"}
        assert refused.call_count == 1 and len(rsps.calls) == 2
        first, second = (json.loads(call.request.body)["entry"][0]["resource"] for call in rsps.calls)
    assert {"type": {"text": "evidence"}, "valueReference": {"reference": "Observation/gone"}} in first["input"]
    assert {"type": {"text": "evidence"}, "valueString": "Observation/gone"} in second["input"]
    assert second["intent"] == "proposal" and second["focus"] == {"reference": "ResearchSubject/rs1"} and api.opened == 1
