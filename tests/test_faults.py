"""Faults on the local HAPI server: down at start, restarted mid-run, dying during write-back.

The run retries what is worth retrying, otherwise ends with a clear message; the state never
advances past work not done; the next run finishes the job with nothing duplicated or lost.
"""

import json
import threading
from pathlib import Path

import pytest
import requests

from fhir_matcher.cli import main
from fhir_matcher.rest.client import FhirClient
from fhir_matcher.rest.loader import Loader

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
TAG = "https://fhir-matcher.org/fhir/test-run|faults"
PREFIX = "ft-"


@pytest.fixture(scope="module")
def server(hapi):
    report = Loader(FhirClient(hapi.base_url), tag=TAG, id_prefix=PREFIX).load([DEMO])
    assert not report.rejected
    return hapi


def rows(out):
    return {r["patient"]: r for r in map(json.loads, (out / "screening.ndjson").read_text(encoding="utf-8").splitlines())}


def subjects(base):
    r = requests.get(f"{base}/ResearchSubject", params={"_count": 1000}, timeout=30).json()
    found = [e["resource"] for e in r.get("entry", [])]
    return [s for s in found if s["individual"]["reference"].startswith(f"Patient/{PREFIX}")]


def test_server_down_at_start(tmp_path, capsys):
    from hapi import server as hapi

    url = f"http://127.0.0.1:{hapi.free_port()}/fhir"
    assert main(["screen", "--source", url, "--out", str(tmp_path), "--retries", "1"]) == 2
    err = capsys.readouterr().err
    assert "connection refused" in err and "Traceback" not in err
    assert not (tmp_path / "screening.ndjson").exists()


def test_server_restarted_mid_run_is_ridden_out(server, tmp_path, monkeypatch):
    from fhir_matcher.rest.client import FhirClient as Client

    calls = {"n": 0}
    restarter = []
    original = Client.request

    def request(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # metadata read, the cohort found; the server goes down while records are fetched
            t = threading.Thread(target=server.restart)
            restarter.append(t)
            server.stop()
            t.start()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Client, "request", request)
    out = tmp_path / "rest"
    code = main(["screen", "--source", server.base_url, "--tag", TAG, "--as-of", "2026-11-24", "--out", str(out), "-q", "--retries", "12", "--workers", "1"])
    for t in restarter:
        t.join()
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["http"]["retries"] > 0  # it did meet the outage
    monkeypatch.undo()
    clean = tmp_path / "clean"
    assert main(["screen", "--source", server.base_url, "--tag", TAG, "--as-of", "2026-11-24", "--out", str(clean), "-q"]) == 0
    assert rows(out) == rows(clean)


def test_write_back_interrupted_then_finished_by_the_next_run(server, tmp_path, monkeypatch, capsys):
    from fhir_matcher.outputs import writeback

    state = tmp_path / "state.sqlite"
    args = ["nightly", "--server", server.base_url, "--tag", TAG, "--state", str(state), "--as-of", "2026-11-24", "-q", "--retries", "1"]
    original_init = writeback.WriteBack.__init__
    original_tx = FhirClient.transaction
    sent = {"n": 0}

    def small_chunks(self, client, trial, chunk=100):
        original_init(self, client, trial, chunk=4)

    def dying(self, bundle):
        if any(e["request"]["url"].startswith("ResearchSubject") for e in bundle.get("entry", [])):
            sent["n"] += 1
            if sent["n"] == 3:  # two transactions of subjects went in; then the server dies
                server.stop()
        return original_tx(self, bundle)

    monkeypatch.setattr(writeback.WriteBack, "__init__", small_chunks)
    monkeypatch.setattr(FhirClient, "transaction", dying)
    assert main([*args, "--out", str(tmp_path / "night1")]) == 2
    assert "nightly run failed" in capsys.readouterr().err
    partial = len(subjects(server.base_url)) if server.is_running() else None
    assert partial is None
    server.restart()
    assert 0 < len(subjects(server.base_url)) < 30  # some subjects were written before the failure
    monkeypatch.undo()
    import sqlite3

    assert sqlite3.connect(state).execute("SELECT COUNT(*) FROM runs WHERE ok = 1").fetchone()[0] == 0
    assert main([*args, "--out", str(tmp_path / "night2")]) == 0
    final = rows(tmp_path / "night2")
    shortlist = {p: r["status"] for p, r in final.items() if r["status"] != "ineligible"}
    on_server = subjects(server.base_url)
    assert len(on_server) == len({s["individual"]["reference"] for s in on_server})  # no duplicates
    assert {s["individual"]["reference"]: s["status"] for s in on_server} == shortlist  # none lost
