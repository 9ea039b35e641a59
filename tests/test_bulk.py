"""Bulk Data: $export from the local HAPI server, then screen the export; and the protocol
against a mocked server (polling with Retry-After, tokens only where required)."""

import json
from pathlib import Path

import pytest

from fhir_matcher.criteria.cohort import read_plan
import responses

from fhir_matcher.cli import main
from fhir_matcher.rest.client import FhirClient, FhirError
from fhir_matcher.rest.transport import Transport
from fhir_matcher.sources.bulk import BulkExport, type_filters

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
TAG = "https://fhir-matcher.org/fhir/test-run|bulk"
PREFIX = "bk-"


def rows(out, prefix=""):
    text = (out / "screening.ndjson").read_text(encoding="utf-8")
    if prefix:
        text = text.replace(f"/{prefix}", "/")
    return {r["patient"]: r for r in map(json.loads, text.splitlines())}


def test_bulk_export_of_the_local_server_screens_like_the_files(hapi, tmp_path):
    assert main(["load", "--server", hapi.base_url, str(DEMO), "-q", "--tag", TAG, "--id-prefix", PREFIX]) == 0
    out = tmp_path / "bulk"
    assert main(["screen", "--source", hapi.base_url, "--bulk", "--bulk-poll-max", "2", "--tag", TAG, "--as-of", "2026-11-24", "--out", str(out), "-q"]) == 0
    files = tmp_path / "files"
    assert main(["screen", "--source", str(DEMO), "--as-of", "2026-11-24", "--out", str(files), "-q"]) == 0
    got, want = rows(out, PREFIX), rows(files)
    assert set(got) == set(want)
    for p in want:
        assert got[p]["status"] == want[p]["status"]
        assert got[p]["criteria"] == want[p]["criteria"], p
    run = json.loads((out / "run.json").read_text())
    assert run["http"]["requests"] < 40 and run["http"]["bytes"] > 100_000
    assert run["screened"] == 46  # the tag filter kept other tests' data out


BASE = "https://ehr.example.org/fhir"


@responses.activate
def test_bulk_protocol_polls_with_retry_after_and_sends_tokens_only_when_required(tmp_path):
    status = f"{BASE}/$export-poll-status?_jobId=1"
    responses.get(f"{BASE}/$export", status=202, headers={"Content-Location": status})
    responses.get(status, status=202, headers={"Retry-After": "3", "X-Progress": "50%"})
    responses.get(status, status=200, json={"transactionTime": "2026-11-24T00:00:00Z", "requiresAccessToken": False,
                                            "output": [{"type": "Patient", "url": "https://files.example.org/p.ndjson"}]})
    responses.get("https://files.example.org/p.ndjson", body='{"resourceType":"Patient","id":"a"}\n')
    responses.delete(status, status=202)
    sleeps = []

    class Token:  # would add an Authorization header
        def __call__(self, r):
            r.headers["Authorization"] = "Bearer t"
            return r

    client = FhirClient(BASE, Transport(auth=Token(), sleep=sleeps.append))
    job = BulkExport(client, types=["Patient"], sleep=sleeps.append).run(tmp_path)
    assert sleeps == [3.0]
    assert [f.read_text() for f in job.files] == ['{"resourceType":"Patient","id":"a"}\n']
    download = next(c for c in responses.calls if c.request.url.startswith("https://files.example.org"))
    assert "Authorization" not in download.request.headers  # requiresAccessToken false: no token sent to file storage
    kick = responses.calls[0].request
    assert kick.headers["Prefer"] == "respond-async" and "_type=Patient" in kick.url
    assert (tmp_path / job.files[0].name).stat().st_mode & 0o077 == 0


@responses.activate
def test_bulk_not_supported_is_clear():
    responses.get(f"{BASE}/$export", status=404, json={"resourceType": "OperationOutcome", "issue": [{"diagnostics": "Unknown operation"}]})
    with pytest.raises(FhirError, match="does the server support"):  # it offers no Group export either
        BulkExport(FhirClient(BASE, Transport(sleep=lambda s: None)), types=["Patient"], group_export=False).kick_off()
    # Whether it exports Groups is unknown: the refusal names the server's message and the options.
    with pytest.raises(FhirError, match=r"refuses system-level \$export \(.*Unknown operation\); export a Group there: --bulk-group ID"):
        BulkExport(FhirClient(BASE, Transport(sleep=lambda s: None)), types=["Patient"]).kick_off()


def test_type_filters(trial):
    from datetime import date

    assert type_filters(read_plan(trial), date(2026, 11, 24), None, ["Observation"]) == []  # HIV tests look at any date
    assert type_filters(read_plan(trial), date(2026, 11, 24), "s|c", ["Patient", "Observation"]) == ["Patient?_tag=s|c", "Observation?_tag=s|c"]


def test_group_export(hapi, tmp_path):
    """Group/<id>/$export: only the group's members are exported and screened. demo-43 takes
    hydroxychloroquine through a medicationReference: the Medication is in no patient's
    compartment, so it is read by id after the export (or its refractory criterion would fail)."""
    import requests

    assert main(["load", "--server", hapi.base_url, str(DEMO), "-q", "--tag", TAG, "--id-prefix", PREFIX]) == 0
    members = ["demo-01", "demo-02", "demo-30", "demo-43"]
    group = {"resourceType": "Group", "id": f"{PREFIX}trial-group", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{PREFIX}{m}"}} for m in members]}
    r = requests.put(f"{hapi.base_url}/Group/{group['id']}", json=group, headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code in (200, 201), r.text
    out = tmp_path / "group"
    assert main(["screen", "--source", hapi.base_url, "--bulk-group", group["id"], "--bulk-poll-max", "2", "--as-of", "2026-11-24", "--out", str(out), "-q"]) == 0
    got = rows(out, PREFIX)
    files = tmp_path / "files"
    assert main(["screen", "--source", str(DEMO), "--as-of", "2026-11-24", "--out", str(files), "-q"]) == 0
    want = rows(files)
    assert set(got) == {f"Patient/{m}" for m in members} & set(want)
    assert "Patient/demo-43" in got and want["Patient/demo-43"]["status"] == "candidate"
    for p in got:
        assert got[p]["criteria"] == want[p]["criteria"], p
        assert got[p]["status"] == want[p]["status"], p


@responses.activate
def test_group_export_reads_the_medications_it_references(tmp_path):
    """Medications referenced by exported statements and not in the export are read by id in
    one search per URL-sized chunk; contained, urn and foreign references are left alone;
    what the server does not have is named."""
    status = "https://fhir.example.org/status/9"
    responses.get(f"{BASE}/Group/g1/$export", status=202, headers={"Content-Location": status})
    responses.get(status, status=200, json={"transactionTime": "2026-11-24T00:00:00Z", "requiresAccessToken": False, "output": [
        {"type": "MedicationStatement", "url": "https://files.example.org/ms.ndjson"},
        {"type": "MedicationRequest", "url": "https://files.example.org/mr.ndjson"}]})
    lines = [
        {"resourceType": "MedicationStatement", "id": "s1", "medicationReference": {"reference": "Medication/m1"}},
        {"resourceType": "MedicationStatement", "id": "s2", "medicationReference": {"reference": f"{BASE}/Medication/m2/_history/3"}},
        {"resourceType": "MedicationStatement", "id": "s3", "medicationReference": {"reference": "#contained"}},
        {"resourceType": "MedicationStatement", "id": "s4", "medicationReference": {"reference": "https://other.example.org/fhir/Medication/x"}},
        {"resourceType": "MedicationStatement", "id": "s5", "medicationReference": {"reference": "Medication/gone"}},
    ]
    responses.get("https://files.example.org/ms.ndjson", body="\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    responses.get("https://files.example.org/mr.ndjson", body=json.dumps(
        {"resourceType": "MedicationRequest", "id": "r1", "medicationReference": {"reference": "Medication/m1"}}) + "\n")
    responses.delete(status, status=202)
    found = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "Medication", "id": "m1", "code": {"text": "hydroxychloroquine"}}},
        {"resource": {"resourceType": "Medication", "id": "m2", "code": {"text": "rituximab"}}}]}
    search = responses.get(f"{BASE}/Medication", json=found)
    export = BulkExport(FhirClient(BASE, Transport()), types=["MedicationRequest", "MedicationStatement", "Patient"], group="g1", sleep=lambda s: None)
    job = export.run(tmp_path)
    assert search.call_count == 1
    assert sorted(search.calls[0].request.params["_id"].split(",")) == ["gone", "m1", "m2"]
    written = [json.loads(x) for x in (tmp_path / "Medication.referenced.ndjson").read_text().splitlines()]
    assert [m["id"] for m in written] == ["m1", "m2"] and tmp_path / "Medication.referenced.ndjson" in job.files
    assert export.problems == ["bulk export: 1 Medication(s) that medication resources reference are not on the server"]
    # A system export has the Medications already; a Group export told not to reads none.
    (tmp_path / "n").mkdir()
    BulkExport(FhirClient(BASE, Transport()), types=["MedicationStatement", "Patient"], group="g1", medications=False).run(tmp_path / "n")
    assert search.call_count == 1
