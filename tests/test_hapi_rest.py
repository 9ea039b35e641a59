"""End to end on the local HAPI FHIR server: load, then the REST screen equals the file screen."""

import json
from pathlib import Path

import pytest
import requests

from fhir_matcher.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
AS_OF = "2026-11-24"
TAG = "https://fhir-matcher.org/fhir/test-run|hapi-rest"
PREFIX = "hr-"  # the session's server is shared with other test modules


def screen(source, out, *extra):
    server = str(source).startswith("http")
    args = ["screen", "--source", str(source), "--as-of", AS_OF, "--out", str(out), "-q", *extra] + (["--tag", TAG] if server else [])
    assert main(args) == 0
    text = (out / "screening.ndjson").read_text(encoding="utf-8")
    if server:  # back to the files' ids
        text = text.replace(f"/{PREFIX}", "/")
    rows = [json.loads(line) for line in text.splitlines()]
    return {r["patient"]: r for r in rows}, json.loads((out / "run.json").read_text(encoding="utf-8"))


def count(base, rtype, **params):
    r = requests.get(f"{base}/{rtype}", params={"_summary": "count", "_tag": TAG, **params}, timeout=30)
    r.raise_for_status()
    return r.json()["total"]


@pytest.fixture(scope="module")
def loaded(hapi):
    assert main(["load", "--server", hapi.base_url, str(DEMO), "-q", "--tag", TAG, "--id-prefix", PREFIX]) == 0
    return hapi.base_url


def test_load_twice_creates_nothing_twice(loaded):
    before = {t: count(loaded, t) for t in ("Patient", "Condition", "Observation", "MedicationStatement")}
    assert before["Patient"] == 46 and before["Observation"] > 300
    assert main(["load", "--server", loaded, str(DEMO), "-q", "--tag", TAG, "--id-prefix", PREFIX]) == 0
    assert {t: count(loaded, t) for t in before} == before


def test_rest_screen_equals_file_screen(loaded, tmp_path):
    files, _ = screen(DEMO, tmp_path / "files")
    rest, run = screen(loaded, tmp_path / "rest")
    assert rest, "the REST screen found no patients"
    for patient, row in rest.items():
        want = files[patient]
        assert row["status"] == want["status"], patient
        for cid, c in want["criteria"].items():
            got = row["criteria"][cid]
            assert (got["result"], got["value"], sorted(got["evidence"])) == (c["result"], c["value"], sorted(c["evidence"])), (patient, cid, got, c)
            assert got["reason"] == c["reason"], (patient, cid)
    # Both sources screen the same cohort and count the same population.
    assert set(rest) == set(files)
    files_run = json.loads((tmp_path / "files" / "run.json").read_text(encoding="utf-8"))
    assert (run["screened"], run["outside_cohort"]) == (files_run["screened"], files_run["outside_cohort"])
    assert run["http"]["requests"] > 0 and run["http"]["bytes"] > 0
    # Batched: far fewer requests than one per patient and resource type.
    assert run["http"]["requests"] < len(rest) * 2


def test_research_subjects_match(loaded, tmp_path):
    screen(DEMO, tmp_path / "files")
    screen(loaded, tmp_path / "rest")
    a = json.loads((tmp_path / "files" / "research-subjects.json").read_text())
    b = json.loads((tmp_path / "rest" / "research-subjects.json").read_text())

    def subjects(bundle, prefix=""):
        return {e["resource"]["individual"]["reference"].replace(f"/{prefix}", "/") if prefix else e["resource"]["individual"]["reference"]: e["resource"]["status"]
                for e in bundle["entry"] if e["resource"]["resourceType"] == "ResearchSubject"}

    assert subjects(a) == subjects(b, PREFIX)


def test_load_names_rejected_resources(hapi, tmp_path):
    bad = tmp_path / "bad.ndjson"
    lines = [
        {"resourceType": "Patient", "id": "reject-ok", "gender": "female"},
        {"resourceType": "Observation", "id": "reject-1", "status": "not-a-status", "code": {"text": "x"}, "subject": {"reference": "Patient/reject-ok"}},
        {"resourceType": "Condition", "id": "reject-2", "subject": {"reference": "Patient/does-not-exist"}, "code": {"text": "y"}},
    ]
    bad.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n", encoding="utf-8")
    report_lines = []
    from fhir_matcher.rest.client import FhirClient
    from fhir_matcher.rest.loader import Loader

    loader = Loader(FhirClient(hapi.base_url), problem=lambda w, m: report_lines.append((w, m)))
    report = loader.load([bad])
    where = {w for w, _ in report.rejected}
    assert any("Observation/reject-1" in w for w in where)
    assert any("Condition/reject-2" in w for w in where)
    assert any(w.endswith(":4") for w in where)  # the malformed line
    assert all(m for _, m in report.rejected)
    assert report.loaded == 1  # the good Patient still went in


def test_rest_screen_in_chunks_writes_the_same(loaded, tmp_path, monkeypatch):
    """A server's cohort is read and evaluated a chunk of patients at a time (the chunk follows
    --memory): many small chunks write exactly what one chunk writes, with no more requests."""
    from fhir_matcher import screen as screen_module
    from fhir_matcher.record import RecordBuilder
    from fhir_matcher.sources.rest import RestSource

    _, one = screen(loaded, tmp_path / "one")
    batches = RestSource._batches
    monkeypatch.setattr(RestSource, "_batches", lambda self, ids: [b[i:i + 5] for b in batches(self, ids) for i in range(0, len(b), 5)])
    _, small = screen(loaded, tmp_path / "small-batches")
    forgotten: list[int] = []
    forget = RecordBuilder.forget
    monkeypatch.setattr(RecordBuilder, "forget", lambda self, keys: (forgotten.append(len(keys)), forget(self, keys))[1])
    monkeypatch.setattr(screen_module, "RECORD_BYTES", 2**40)  # a chunk per batch
    _, many = screen(loaded, tmp_path / "chunks")
    assert len(forgotten) > 3 and max(forgotten) <= 5
    for name in ("screening.ndjson", "report.csv", "research-subjects.json"):
        assert (tmp_path / "chunks" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert many["http"]["requests"] <= small["http"]["requests"]  # the same searches (a small chunk's go in one batch)
    assert (many["screened"], many["outside_cohort"], many["statuses"]) == (one["screened"], one["outside_cohort"], one["statuses"])
