"""Structural errors in Bundles (files, NDJSON lines, server pages): named with where, the run goes on."""

import json

import responses

from builders import SCT, cc, condition, obs, patient
from fhir_matcher.cli import main
from fhir_matcher.fhirjson import bundle_entries
from fhir_matcher.rest.client import FhirClient
from fhir_matcher.rest.query import Search
from fhir_matcher.rest.transport import Transport
from fhir_matcher.sources.files import FileSource

SLE = cc(SCT, "55464009")


def _problems(tmp_path, name: str, text: str) -> list[str]:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    src = FileSource(f)
    src.read()
    return [str(p) for p in src.builder.problems]


def test_entry_not_a_list_is_named_not_read_as_empty(tmp_path):
    problems = _problems(tmp_path, "b.json", json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": "oops"}))
    assert problems == [f"{tmp_path / 'b.json'}: Bundle.entry is not a list but a string (no entry read)"]


def test_entry_that_is_one_object_is_named_and_read(tmp_path):
    b = {"resourceType": "Bundle", "type": "collection", "entry": {"resource": patient("p1")}}
    f = tmp_path / "one.json"
    f.write_text(json.dumps(b), encoding="utf-8")
    src = FileSource(f)
    src.read()
    assert [str(p) for p in src.builder.problems] == [f"{f}: Bundle.entry is not a list (read as a single entry)"]
    assert "Patient/p1" in src.builder.patients


def test_each_malformed_entry_is_named_with_its_index_and_the_rest_is_read(tmp_path):
    good_obs = obs("718-7", 13.0, code="g/dL", pid="p1")
    nested = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": condition(SLE, pid="p1")}, "junk"]}
    entries = [
        {"resource": patient("p1")},                                          # 0 fine
        5,                                                                    # 1 not an object
        {"resource": "Observation/1"},                                        # 2 resource not an object
        {"fullUrl": 12, "resource": good_obs},                                # 3 fullUrl ignored, resource kept
        {"request": "POST", "resource": {**good_obs, "id": "o2"}},            # 4 request ignored, resource kept
        {"request": {"method": 7, "url": ["x"]}, "resource": {**good_obs, "id": "o3"}},  # 5 method, url
        {"resource": nested},                                                 # 6 nested Bundle: read, its junk named
        {"fullUrl": "urn:uuid:1"},                                            # 7 no resource
        {"request": {"method": "DELETE", "url": "Observation/9"}},            # 8 a deletion: fine
    ]
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}), encoding="utf-8")
    src = FileSource(f)
    src.read()
    problems = [str(p) for p in src.builder.problems]
    assert problems == [
        f"{f} entry 1: the entry is a number, not an object (skipped)",
        f"{f} entry 2: entry.resource is a string, not an object (skipped)",
        f"{f} entry 3: entry.fullUrl is not a non-empty string (ignored)",
        f"{f} entry 4: entry.request is not an object (ignored)",
        f"{f} entry 5: entry.request.method is not a non-empty string (ignored)",
        f"{f} entry 5: entry.request.url is not a non-empty string (ignored)",
        f"{f} entry 7: the entry has no resource (skipped)",
        f"{f} entry 6 entry 1: the entry is a string, not an object (skipped)",  # read after its parent's entries
    ]
    (record,) = src.builder.records()
    assert sorted(r["id"] for r in record.of_type("Observation")) == sorted(["o2", "o3", good_obs["id"]])
    assert len(record.of_type("Condition")) == 1


def test_bundles_nested_too_deep_are_named(tmp_path):
    b = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient("p1")}]}
    for _ in range(12):
        b = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": b}]}
    problems = _problems(tmp_path, "deep.json", json.dumps(b))
    assert len(problems) == 1 and "nested more than 8 deep (skipped)" in problems[0]


def test_ndjson_line_holding_a_malformed_bundle_is_named_with_its_line(tmp_path):
    lines = [patient("p1"), {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": 3}]}]
    problems = _problems(tmp_path, "x.ndjson", "\n".join(json.dumps(x) for x in lines) + "\n")
    assert problems == [f"{tmp_path / 'x.ndjson'}:2 entry 0: entry.resource is a number, not an object (skipped)"]


def test_screen_names_the_problem_and_exits_3(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": patient("p1")}, {"resource": condition(SLE, pid="p1")}, {"resource": "oops"}]}
    (src / "good.json").write_text(json.dumps(good), encoding="utf-8")
    (src / "bad.json").write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": "oops"}), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["screen", "--source", str(src), "--out", str(out), "--as-of", "2026-11-24", "-q"]) == 3
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert any("bad.json: Bundle.entry is not a list" in p for p in run["problems"])
    assert any("good.json entry 2: entry.resource is a string" in p for p in run["problems"])
    assert run["evaluated"] == 1  # the good patient is still screened


def test_bundle_entries_accepts_responses_and_history_without_resources():
    for bundle in ({"type": "transaction-response", "entry": [{"response": {"status": "201"}}]},
                   {"type": "history", "entry": [{"request": {"method": "DELETE", "url": "Observation/1"}}]}):
        entries, problems = bundle_entries(bundle)
        assert problems == [] and len(entries) == 1


BASE = "https://fhir.example.org/r4"


@responses.activate
def test_server_pages_with_malformed_entries_are_named_per_page_and_entry():
    page1 = {"resourceType": "Bundle", "type": "searchset", "link": [{"relation": "next", "url": f"{BASE}?page=2"}],
             "entry": [{"resource": patient("a")}, "junk", {"resource": [1]}]}
    page2 = {"resourceType": "Bundle", "type": "searchset", "entry": {"resource": patient("b")}}
    responses.get(f"{BASE}/Patient", json=page1)
    responses.get(f"{BASE}", json=page2)
    c = FhirClient(BASE, Transport(sleep=lambda s: None))
    assert [r["id"] for r in c.search(Search("Patient"))] == ["a", "b"]
    assert c.problems == [
        ("Patient search page 1 entry 1", "the entry is a string, not an object (skipped)"),
        ("Patient search page 1 entry 2", "entry.resource is a list, not an object (skipped)"),
        ("Patient search page 2", "Bundle.entry is not a list (read as a single entry)"),
    ]


@responses.activate
def test_bulk_manifest_outputs_without_url_are_named(tmp_path):
    from fhir_matcher.sources.bulk import BulkExport

    status = f"{BASE}/$export-poll-status?_jobId=1"
    responses.get(f"{BASE}/$export", status=202, headers={"Content-Location": status})
    responses.get(status, status=200, json={"requiresAccessToken": False, "output": [
        {"type": "Patient", "url": "https://files.example.org/p.ndjson"}, {"type": "Observation"}, "junk"]})
    responses.get("https://files.example.org/p.ndjson", body='{"resourceType":"Patient","id":"a"}\n')
    responses.delete(status, status=202)
    export = BulkExport(FhirClient(BASE, Transport(sleep=lambda s: None)), types=["Patient"], sleep=lambda s: None)
    job = export.run(tmp_path)
    assert len(job.files) == 1
    assert export.problems == ["bulk export manifest: output 1 has no url (skipped)", "bulk export manifest: output 2 has no url (skipped)"]
