"""Live-server tests: load a few demo patients under a unique tag, screen just those, delete them.

They run against the local HAPI server by default, and against any reachable FHIR R4 server
with ``pytest tests/test_live.py --fhir-server URL`` (e.g. the public HAPI sandbox or a
hospital's test endpoint). Ids get a unique prefix, so nothing collides with other data.
"""

import json
import uuid
from pathlib import Path

import pytest

from fhir_matcher.cli import main
from fhir_matcher.rest.client import FhirClient
from fhir_matcher.rest.loader import Loader
from fhir_matcher.rest.query import Search

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = [ROOT / "bundles" / "demo" / "transaction-us-ehr.json", ROOT / "bundles" / "demo" / "transaction-cn-hospital.json"]
DELETE_ORDER = ("Observation", "Condition", "MedicationStatement", "MedicationRequest", "MedicationAdministration", "Procedure", "Patient", "Medication")


@pytest.fixture()
def tagged_sample(live_server, run_tag):
    client = FhirClient(live_server)
    prefix = f"fm{uuid.uuid4().hex[:8]}-"
    report = Loader(client, tag=run_tag, id_prefix=prefix).load(SAMPLE)
    assert not report.rejected, report.rejected
    yield live_server, run_tag, prefix
    for rtype in DELETE_ORDER:  # delete what this test wrote, dependents first
        for r in list(client.search(Search(rtype).where(_tag=run_tag).elements("id").count(200))):
            client.request("DELETE", f"{rtype}/{r['id']}", expect_json=False)
    left = [r for t in DELETE_ORDER for r in client.search(Search(t).where(_tag=run_tag).elements("id"))]
    assert not left, f"{len(left)} test resources were not deleted"


def rows(out):
    return {r["patient"]: r for r in map(json.loads, (out / "screening.ndjson").read_text(encoding="utf-8").splitlines())}


def test_live_screen_of_tagged_patients(tagged_sample, tmp_path):
    server, tag, prefix = tagged_sample
    assert main(["screen", "--source", server, "--tag", tag, "--as-of", "2026-11-24", "--out", str(tmp_path / "live"), "-q"]) == 0
    assert main(["screen", "--source", str(SAMPLE[0]), "--as-of", "2026-11-24", "--out", str(tmp_path / "a"), "-q"]) == 0
    assert main(["screen", "--source", str(SAMPLE[1]), "--as-of", "2026-11-24", "--out", str(tmp_path / "b"), "-q"]) == 0
    files = {**rows(tmp_path / "a"), **rows(tmp_path / "b")}
    live = rows(tmp_path / "live")
    assert live, "nothing screened on the live server"
    for patient, row in live.items():
        assert patient.startswith(f"Patient/{prefix}")  # only this run's patients
        want = files[patient.replace(prefix, "")]
        assert row["status"] == want["status"]
        assert {k: v["result"] for k, v in row["criteria"].items()} == {k: v["result"] for k, v in want["criteria"].items()}
    with_diagnosis = {p for p, r in files.items() if r["criteria"]["inc-diagnosis"]["result"] != "not-met"}
    assert {p.replace(prefix, "") for p in live} == with_diagnosis
