"""The nightly job for a portfolio of trials: one state file, one read of the server per night,
each trial's outputs and write-back equal to its own nightly, and a change to one trial
re-screening that trial only."""

import json
import shutil
import sqlite3
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from fhir_matcher.cli import main
from fhir_matcher.nightly.state import SCHEMA_VERSION, State

ROOT = Path(__file__).resolve().parent.parent
TRIALS = ROOT / "fhir_matcher" / "trials"
DEMOS = {"cd19-baff-car-t": ROOT / "bundles" / "demo", "t2d-ckd": ROOT / "bundles" / "demo-t2d-ckd", "hf-reduced-ef": ROOT / "bundles" / "demo-hf"}
ID = {"cd19-baff-car-t": "cd19-baff-car-t", "t2d-ckd": "t2d-ckd-finerenone", "hf-reduced-ef": "hf-reduced-ef-dapagliflozin"}  # file -> trial id
START = date(2026, 11, 24)
TAG = "https://fhir-matcher.org/fhir/test-run|portfolio-nightly"
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def server(hapi):
    """The session's HAPI server with the three demos loaded under this module's tag."""
    from fhir_matcher.rest.client import FhirClient
    from fhir_matcher.rest.loader import Loader

    for n, folder in enumerate(DEMOS.values()):
        report = Loader(FhirClient(hapi.base_url), tag=TAG, id_prefix=f"pf{n}-").load([folder])
        assert not report.rejected
    time.sleep(1.1)  # changes are read with second precision (ge): keep the load out of night 1's second
    return hapi


@pytest.fixture()
def trials(tmp_path):
    """Copies of the bundled trials, so a test can change or add one."""
    folder = tmp_path / "trials"
    folder.mkdir()
    for tid in DEMOS:
        shutil.copy(TRIALS / f"{tid}.toml", folder / f"{tid}.toml")
    return folder


def run(server, base: Path, as_of: date, *args: str, state: str = "state.sqlite", expect: int = 0) -> dict:
    out = base / f"out-{as_of}-{time.monotonic_ns()}"
    code = main(["nightly", "--server", server.base_url, "--state", str(base / state), "--out", str(out), "--as-of", as_of.isoformat(),
                 "--overlap", "0", "--tag", TAG, "-q", *args])
    assert code == expect
    summary = json.loads((out / "run.json").read_text(encoding="utf-8"))
    summary["_out"] = out
    return summary


def rows(folder: Path) -> dict[str, dict]:
    return {r["patient"]: r for r in map(json.loads, (folder / "screening.ndjson").read_text(encoding="utf-8").splitlines())}


def subjects(base: str, trial_id: str) -> dict[str, dict]:
    """This module's ResearchSubjects of one trial on the server, by patient."""
    r = requests.get(f"{base}/ResearchSubject", params={"identifier": "https://fhir-matcher.org/fhir/research-subject|", "_count": 1000}, timeout=30).json()
    out = {}
    for e in r.get("entry", []):
        s = e["resource"]
        value = s["identifier"][0]["value"]
        patient = s["individual"]["reference"]
        if value.startswith(f"{trial_id}/") and patient.startswith("Patient/pf"):
            out[patient] = s
    return out


def test_a_portfolio_night_equals_each_trial_alone_at_the_cost_of_one_read(server, trials, tmp_path):
    night = run(server, tmp_path, START, "--trials", str(trials))
    out = night["_out"]
    assert set(night["trials"]) == set(ID.values()) and night["mode"] == "full"
    assert (out / "portfolio.html").is_file()
    total_requests = night["http"]["requests"]
    for name, tid in ID.items():
        folder = out / tid
        for file in ("screening.ndjson", "research-subjects.json", "report.html", "report.csv", "run.json"):
            assert (folder / file).is_file(), (tid, file)
        alone = run(server, tmp_path, START, "--trial", str(trials / f"{name}.toml"), state=f"alone-{tid}.sqlite")
        assert rows(folder) == rows(alone["_out"]), tid
        assert night["trials"][tid]["statuses"] == alone["statuses"]
        # written once: the trial's own nightly, run after, found nothing to write
        assert alone["written"] == 0
        on_server = subjects(server.base_url, tid)
        shortlisted = {p for p, r in rows(folder).items() if r["status"] != "ineligible"}
        assert shortlisted and shortlisted <= set(on_server)
        assert all(on_server[p]["status"] == rows(folder)[p]["status"] for p in shortlisted)
        assert total_requests < 2 * alone["http"]["requests"]
    html = (out / "portfolio.html").read_text(encoding="utf-8")
    assert all(f"{tid}/report.html" in html for tid in ID.values())

    with State(tmp_path / "state.sqlite", lock=False) as state:
        assert set(state.trials()) == set(ID.values())
        for tid in ID.values():
            assert {k for k in state.patients(tid)} == set(rows(out / tid))
            assert all(p.first_seen_on == START for p in state.patients(tid).values())


def test_changing_adding_and_removing_one_trial_rescreens_that_trial_only(server, trials, tmp_path):
    two = ["--trial", str(trials / "cd19-baff-car-t.toml"), "--trial", str(trials / "t2d-ckd.toml")]
    first = run(server, tmp_path, START, *two)
    assert set(first["trials"]) == {"cd19-baff-car-t", ID["t2d-ckd"]}

    quiet = run(server, tmp_path, START + timedelta(days=1), *two)
    assert quiet["mode"] == "incremental"
    assert all(t["mode"] == "incremental" for t in quiet["trials"].values())

    # Adding a trial: that trial is screened in full, the others stay incremental.
    added = run(server, tmp_path, START + timedelta(days=1), "--trials", str(trials))
    assert added["trials"][ID["hf-reduced-ef"]]["mode"] == "full"
    assert added["trials"][ID["hf-reduced-ef"]]["full_because"] == "the trial is new in the portfolio"
    assert added["trials"]["cd19-baff-car-t"]["mode"] == "incremental" and added["trials"][ID["t2d-ckd"]]["mode"] == "incremental"
    assert added["trials"]["cd19-baff-car-t"]["re_evaluated"] < first["trials"]["cd19-baff-car-t"]["re_evaluated"]
    alone = run(server, tmp_path, START + timedelta(days=1), "--trial", str(trials / "hf-reduced-ef.toml"), state="alone-hf.sqlite")
    assert rows(added["_out"] / ID["hf-reduced-ef"]) == rows(alone["_out"])
    assert added["http"]["requests"] < quiet["http"]["requests"] + alone["http"]["requests"]

    # Changing one trial's definition: that trial only.
    (trials / "t2d-ckd.toml").write_text((trials / "t2d-ckd.toml").read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    changed = run(server, tmp_path, START + timedelta(days=2), "--trials", str(trials))
    assert changed["trials"][ID["t2d-ckd"]]["full_because"] == "the trial definition, a value set or the terminology server changed"
    assert changed["trials"]["cd19-baff-car-t"]["mode"] == "incremental" and changed["trials"][ID["hf-reduced-ef"]]["mode"] == "incremental"

    # Removing one: no longer screened, its subjects stay on the server; its decisions and audit stay.
    before = subjects(server.base_url, ID["hf-reduced-ef"])
    removed = run(server, tmp_path, START + timedelta(days=3), *two)
    assert removed["trials_removed"] == [ID["hf-reduced-ef"]]
    assert subjects(server.base_url, ID["hf-reduced-ef"]) == before
    with State(tmp_path / "state.sqlite", lock=False) as state:
        assert set(state.trials()) == {"cd19-baff-car-t", ID["t2d-ckd"]}
        assert state.patients(ID["hf-reduced-ef"]) == {}
    back = run(server, tmp_path, START + timedelta(days=4), "--trials", str(trials))
    assert back["trials"][ID["hf-reduced-ef"]]["full_because"] == "the trial is back in the portfolio"


def test_a_decision_in_one_trial_is_kept_there_and_touches_no_other(server, trials, tmp_path):
    base = server.base_url
    run(server, tmp_path, START, "--trials", str(trials))
    car_t = subjects(base, "cd19-baff-car-t")
    t2d = subjects(base, ID["t2d-ckd"])
    patient = sorted(car_t)[0]
    s = dict(car_t[patient])
    was = s["status"]
    s["status"] = "on-study"
    assert requests.put(f"{base}/ResearchSubject/{s['id']}", json=s, headers=FHIR, timeout=30).status_code == 200
    night = run(server, tmp_path, START + timedelta(days=1), "--trials", str(trials))
    assert night["trials"]["cd19-baff-car-t"]["decisions"] == {"on-study": 1}
    assert night["trials"][ID["t2d-ckd"]]["decisions"] == {}
    full = run(server, tmp_path, START + timedelta(days=1), "--trials", str(trials), "--full")
    assert subjects(base, "cd19-baff-car-t")[patient]["status"] == "on-study"
    assert {p: x["status"] for p, x in subjects(base, ID["t2d-ckd"]).items()} == {p: x["status"] for p, x in t2d.items()}
    assert full["trials"]["cd19-baff-car-t"]["decisions"] == {"on-study": 1}
    with State(tmp_path / "state.sqlite", lock=False) as state:
        assert set(state.decisions("cd19-baff-car-t")) == {patient} and state.decisions(ID["t2d-ckd"]) == {}
        trail = state.audit("cd19-baff-car-t", patient)
        assert [(a.before, a.after) for a in trail if a.source == "server"] == [(was, "on-study")]
        assert all(a.trial == "cd19-baff-car-t" for a in trail)


def test_a_version_2_state_file_moves_to_its_trial(tmp_path):
    """A state file of one trial (schema 2) opens as a portfolio of that one trial, every row kept."""
    path = tmp_path / "state.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V2)
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with State(path) as state:
        assert list(state.trials()) == ["t1"]
        assert state.trials()["t1"].digest == "dg" and state.trials()["t1"].added_on == date(2026, 11, 20)
        assert state.patients("t1")["Patient/a"].status == "candidate"
        assert state.decisions("t1")["Patient/a"].status == "on-study"
        assert [r.trial for r in state.reviews("t1")] == ["t1"]
        assert [(a.trial, a.after) for a in state.audit()] == [("t1", "on-study")]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert not {r[0] for r in db.execute("SELECT name FROM sqlite_master")} & {"patients_v2", "decisions_v2", "reviews_v2", "audit_v2"}


def test_the_web_app_reads_while_a_night_holds_the_lock(tmp_path):
    """lock=False shares the file with a running night (WAL): reads and audit writes both work."""
    from fhir_matcher.nightly.state import AuditEntry

    path = tmp_path / "state.sqlite"
    with State(path) as night:
        with State(path, lock=False) as web:
            web.add_audit("t1", [AuditEntry("2026-11-25T09:00:00+00:00", "Patient/a", "ResearchSubject/1", "alice", "web", "candidate", "eligible", "checked")])
            web.record_access("alice", "Patient/a", "t1", "patient page")
        assert [(a.actor, a.trial) for a in night.audit("t1")] == [("alice", "t1")]
        assert night.access_log(user="alice")[0][1:] == ("alice", "Patient/a", "t1", "patient page")


V2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT, as_of TEXT NOT NULL, server_time TEXT, ok INTEGER NOT NULL, summary TEXT NOT NULL);
CREATE TABLE patients (patient TEXT PRIMARY KEY, status TEXT NOT NULL, digest TEXT NOT NULL, recheck_on TEXT, evaluated_as_of TEXT NOT NULL, result TEXT NOT NULL, written_status TEXT, written_digest TEXT);
CREATE TABLE decisions (patient TEXT PRIMARY KEY, subject TEXT NOT NULL, status TEXT NOT NULL, changed_at TEXT, first_seen_on TEXT NOT NULL, first_seen_at TEXT NOT NULL, last_seen_on TEXT NOT NULL, version TEXT);
CREATE TABLE reviews (id INTEGER PRIMARY KEY AUTOINCREMENT, patient TEXT NOT NULL, subject TEXT NOT NULL, task TEXT, identifier TEXT NOT NULL, key TEXT NOT NULL, decision TEXT NOT NULL, criteria TEXT NOT NULL, reason TEXT NOT NULL, opened_on TEXT NOT NULL, opened_at TEXT NOT NULL, closed_on TEXT, closed_why TEXT);
CREATE INDEX reviews_patient ON reviews (patient);
CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, patient TEXT NOT NULL, subject TEXT, actor TEXT NOT NULL, source TEXT NOT NULL, field TEXT NOT NULL DEFAULT 'status', before TEXT, after TEXT, why TEXT);
CREATE INDEX audit_patient ON audit (patient, at);
INSERT INTO meta VALUES ('trial', 't1'), ('trial_digest', 'dg'), ('server', 'http://x/fhir');
INSERT INTO runs (started_at, finished_at, as_of, server_time, ok, summary) VALUES ('2026-11-20T02:00:00+00:00', NULL, '2026-11-20', '2026-11-20T02:00:00+00:00', 1, '{}');
INSERT INTO runs (started_at, finished_at, as_of, server_time, ok, summary) VALUES ('2026-11-21T02:00:00+00:00', NULL, '2026-11-21', '2026-11-21T02:00:00+00:00', 1, '{}');
INSERT INTO patients VALUES ('Patient/a', 'candidate', 'd', NULL, '2026-11-21', '{"criteria": {}}', 'candidate', 'w');
INSERT INTO decisions VALUES ('Patient/a', 'ResearchSubject/9', 'on-study', NULL, '2026-11-21', '2026-11-21T02:00:00+00:00', '2026-11-21', '2');
INSERT INTO reviews (patient, subject, task, identifier, key, decision, criteria, reason, opened_on, opened_at) VALUES ('Patient/a', 'ResearchSubject/9', 'Task/1', 'i', 'k', 'on-study', '[]', 'r', '2026-11-21', '2026-11-21T02:00:00+00:00');
INSERT INTO audit (at, patient, subject, actor, source, before, after, why) VALUES ('2026-11-21T02:00:00+00:00', 'Patient/a', 'ResearchSubject/9', 'seen on server', 'server', 'candidate', 'on-study', 'x');
"""
