"""The nightly job on its own local HAPI server: write-back, incremental nights, failures.

The central property: after any sequence of nights with data changes and time passing, the
nightly snapshot equals a full screen of the server at the same as-of date.
"""

import json
import sqlite3
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from fhir_matcher.cli import main
from fhir_matcher.nightly.state import State
from fhir_matcher.rest.transport import Transport
from fhir_matcher.screen import screen_server

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
START = date(2026, 11, 24)


TAG = "https://fhir-matcher.org/fhir/test-run|nightly"
PREFIX = "nt-"


@pytest.fixture(scope="module")
def server(hapi):
    """The session's HAPI server, with the demo loaded under this module's own tag and ids."""
    from fhir_matcher.rest.client import FhirClient
    from fhir_matcher.rest.loader import Loader

    report = Loader(FhirClient(hapi.base_url), tag=TAG, id_prefix=PREFIX).load([DEMO])
    assert not report.rejected
    time.sleep(1.1)  # changes are read with second precision (ge): keep the load out of night 1's second
    return hapi


@pytest.fixture(scope="module")
def night(server, tmp_path_factory):
    base = tmp_path_factory.mktemp("nights")

    def run(as_of, *extra, expect=0):
        out = base / f"out-{as_of}"
        code = main(["nightly", "--server", server.base_url, "--state", str(base / "state.sqlite"), "--out", str(out), "--as-of", as_of.isoformat(), "--overlap", "0", "--tag", TAG, "-q", *extra])
        assert code == expect
        if expect:
            return None
        summary = json.loads((out / "run.json").read_text(encoding="utf-8"))
        rows = {r["patient"]: r for r in map(json.loads, (out / "screening.ndjson").read_text(encoding="utf-8").splitlines())}
        return summary, rows

    run.state = base / "state.sqlite"
    return run


def subjects(base):
    r = requests.get(f"{base}/ResearchSubject", params={"_count": 1000}, timeout=30).json()
    found = {e["resource"]["individual"]["reference"]: e["resource"] for e in r.get("entry", [])}
    return {p: s for p, s in found.items() if p.startswith(f"Patient/{PREFIX}")}


def full_screen(base, as_of):
    s = screen_server(base, _trial(), as_of, Transport(), tag=TAG)
    return {r.patient: r.to_json(s.trial, as_of) for r in s.results}


_TRIAL = []


def _trial():
    if not _TRIAL:
        from fhir_matcher.trial import load_trial

        _TRIAL.append(load_trial())
    return _TRIAL[0]


def assert_equals_full(server, rows, as_of):
    full = full_screen(server.base_url, as_of)
    for patient, want in full.items():
        got = rows[patient]
        assert got["status"] == want["status"], patient
        assert got["criteria"] == want["criteria"], patient
    for patient in set(rows) - set(full):  # left the cohort: shown as ineligible, never dropped silently
        assert rows[patient]["status"] == "ineligible"


def tag():
    system, code = TAG.split("|")
    return {"system": system, "code": code}


def put(base, resource):
    r = requests.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code in (200, 201), r.text


def test_nights(server, night):
    base = server.base_url
    # Night 1: everything is new; one ResearchSubject per candidate and potential candidate.
    summary, rows = night(START)
    assert summary["mode"] == "full" and summary["full_because"] == "first night"
    shortlist = {p: r["status"] for p, r in rows.items() if r["status"] != "ineligible"}
    on_server = subjects(base)
    assert {p: s["status"] for p, s in on_server.items()} == shortlist
    assert summary["written"] == len(shortlist) and summary["new_candidates"] == len(shortlist)
    assert all(len(s["identifier"]) == 1 for s in on_server.values())
    versions = {p: s["meta"]["versionId"] for p, s in on_server.items()}
    assert_equals_full(server, rows, START)

    # Night 2, same day, nothing changed: nothing written, nothing new on the server.
    summary, rows2 = night(START)
    assert summary["mode"] == "incremental" and summary["written"] == 0 and summary["new_candidates"] == 0
    assert summary["re_evaluated"] == 0
    assert {p: s["meta"]["versionId"] for p, s in subjects(base).items()} == versions
    assert rows2 == rows

    # A candidate develops epilepsy: re-evaluated, the subject updated to ineligible, kept.
    candidate = next(p for p, st in shortlist.items() if st == "candidate")
    pid = candidate.split("/")[1]
    put(base, {"resourceType": "Condition", "id": f"{pid}-new-epilepsy", "subject": {"reference": candidate}, "meta": {"tag": [tag()]},
               "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G40.9"}]}, "onsetDateTime": "2026-11-20"})
    summary, rows3 = night(START)
    assert rows3[candidate]["status"] == "ineligible" and summary["dropped"] == 1 and summary["written"] == 1
    assert summary["re_evaluated"] == 1
    subject = subjects(base)[candidate]
    assert subject["status"] == "ineligible"
    assert "exc-neuro" in subject["extension"][0]["valueString"]
    assert len(subjects(base)) == len(shortlist)  # nothing deleted, nothing duplicated
    assert_equals_full(server, rows3, START)

    # Six weeks of nights, with data changing and labs ageing out of their windows.
    day = START
    for week in range(1, 7):
        day = START + timedelta(days=7 * week)
        if week == 2:  # a deleted lab and a new one
            obs = requests.get(f"{base}/Observation", params={"code": "http://loinc.org|777-3", "_tag": TAG, "_count": 1}, timeout=30).json()["entry"][0]["resource"]
            assert requests.delete(f"{base}/Observation/{obs['id']}", timeout=30).status_code in (200, 204)
        if week == 4:
            target = next(p for p, r in rows.items() if r["status"] == "potential-candidate")
            put(base, {"resourceType": "Observation", "id": f"{target.split('/')[1]}-late-plt", "status": "final", "meta": {"tag": [tag()]},
                       "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]}, "subject": {"reference": target},
                       "effectiveDateTime": day.isoformat(), "valueQuantity": {"value": 150, "system": "http://unitsofmeasure.org", "code": "10*9/L"}})
        summary, rows_n = night(day)
        assert summary["mode"] == "incremental"
        assert summary["re_evaluated"] < len(rows_n)  # only what changed or what time changed
        assert_equals_full(server, rows_n, day)
    # ResearchSubjects on the server match the final snapshot (former candidates kept as ineligible).
    final = subjects(base)
    for p, s in final.items():
        want = rows_n[p]["status"]
        assert s["status"] == want
    assert len(final) == len(set(final))


def test_second_run_while_one_is_going_exits_at_once(night, capsys):
    with State(night.state):
        assert night(START, expect=75) is None
    assert "another nightly run" in capsys.readouterr().err


def test_failed_night_leaves_the_state_as_it_was(server, night, monkeypatch, capsys):
    night(START)
    before = sqlite3.connect(night.state).execute("SELECT COUNT(*), MAX(id) FROM runs WHERE ok = 1").fetchone()
    patients_before = sqlite3.connect(night.state).execute("SELECT patient, digest, written_digest FROM patients ORDER BY 1").fetchall()
    from fhir_matcher.outputs import writeback
    from fhir_matcher.rest.client import FhirError

    def boom(self, study, items):
        raise FhirError("write-back: HTTP 500: database unavailable")

    monkeypatch.setattr(writeback.WriteBack, "write", boom)
    night(START + timedelta(days=100), expect=2)
    assert "nightly run failed" in capsys.readouterr().err
    assert sqlite3.connect(night.state).execute("SELECT COUNT(*), MAX(id) FROM runs WHERE ok = 1").fetchone() == before
    assert sqlite3.connect(night.state).execute("SELECT patient, digest, written_digest FROM patients ORDER BY 1").fetchall() == patients_before
    monkeypatch.undo()
    summary, _ = night(START + timedelta(days=100))  # the next night does the work
    assert summary["mode"] == "incremental"


def test_config_file_and_flags(server, tmp_path):
    cfg = tmp_path / "matcher.toml"
    cfg.write_text(f"""
[server]
url = "{server.base_url}"
workers = 2
tag = "{TAG}"
[output]
dir = "{tmp_path / 'out'}"
state = "{tmp_path / 'state.sqlite'}"
[windows]
inc-platelets = "14d"
""", encoding="utf-8")
    assert main(["nightly", "--config", str(cfg), "--as-of", START.isoformat(), "-q"]) == 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["server"] == server.base_url and run["screened"] > 0
    assert (tmp_path / "state.sqlite").stat().st_mode & 0o077 == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nurl = 'x'\npasword = 'oops'\n", encoding="utf-8")
    assert main(["nightly", "--config", str(bad), "--state", "s", "--out", "o"]) == 2
