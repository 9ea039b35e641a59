"""The file source: every Bundle type, NDJSON, references, and bad input named and skipped."""

import json
import subprocess
import sys

from builders import SCT, cc, condition, patient

from fhir_matcher.cli import main
from fhir_matcher.sources.files import FileSource


def write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_transaction_urn_uuid_references_resolve(tmp_path):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "gender": "male"}, "request": {"method": "PUT", "url": "Patient/x1"}},
        {"fullUrl": "urn:uuid:c", "resource": {**condition(cc(SCT, "55464009")), "subject": {"reference": "urn:uuid:p"}}, "request": {"method": "POST", "url": "Condition"}},
    ]}
    src = FileSource(write(tmp_path / "t.json", bundle))
    src.read()
    [rec] = list(src.builder.records())
    assert rec.key == "Patient/x1" and len(rec.of_type("Condition")) == 1


def test_absolute_and_versioned_references(tmp_path):
    c = condition(cc(SCT, "55464009"))
    c["subject"] = {"reference": "https://ehr.example.org/fhir/Patient/p1/_history/3"}
    write(tmp_path / "b.json", {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient()}, {"resource": c}]})
    src = FileSource(tmp_path)
    src.read()
    [rec] = list(src.builder.records())
    assert len(rec.of_type("Condition")) == 1


def test_duplicate_resources_counted_once(tmp_path):
    c = condition(cc(SCT, "55464009"))
    (tmp_path / "a.ndjson").write_text("\n".join(json.dumps(x) for x in (patient(), c, c)) + "\n", encoding="utf-8")
    write(tmp_path / "b.json", c)
    src = FileSource(tmp_path)
    src.read()
    [rec] = list(src.builder.records())
    assert len(rec.of_type("Condition")) == 1


def test_bad_inputs_are_named_and_the_rest_screened(tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    (good / "p.ndjson").write_text(
        json.dumps(patient("ok")) + "\n{broken line\n" + json.dumps(["not", "a", "resource"]) + "\n"
        + json.dumps({"resourceType": "Condition", "id": "orphan", "code": {"text": "SLE"}}) + "\n"
        + json.dumps(condition(cc(SCT, "55464009"), pid="missing")) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "broken.json").write_text('{"resourceType": "Bundle", "entry": [', encoding="utf-8")
    (tmp_path / "latin1.json").write_bytes('{"text": "caf\xe9"}'.encode("latin-1"))
    (tmp_path / "notes.txt").write_text("ignored: not .json/.ndjson", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["screen", "--source", str(tmp_path), "--as-of", "2026-11-24", "--out", str(out), "--all-patients"]) == 3  # done, with input problems
    err = capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    problems = "\n".join(run["problems"])
    assert "broken.json: invalid JSON at line 1" in problems
    assert "p.ndjson:2: invalid JSON" in problems
    assert "p.ndjson:3: not a FHIR resource" in problems
    assert "Condition has no subject" in problems
    assert "not in the source" in problems and "missing" not in problems  # no patient id in messages
    assert "latin1.json: not UTF-8" in problems
    assert "Traceback" not in err
    rows = (out / "screening.ndjson").read_text().splitlines()
    assert [json.loads(r)["patient"] for r in rows] == ["Patient/ok"]


def test_module_entry_point_and_clear_errors(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "fhir_matcher", "--version"], capture_output=True, text=True)
    assert ok.returncode == 0 and "fhir-matcher" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "fhir_matcher", "screen", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no such file or directory" in bad.stderr and "Traceback" not in bad.stderr
    date = subprocess.run([sys.executable, "-m", "fhir_matcher", "screen", "--source", ".", "--out", "o", "--as-of", "24/11/2026"], capture_output=True, text=True)
    assert date.returncode == 2 and "not a date" in date.stderr
