"""The local HAPI server as the terminology server: a small TEST code system with a hierarchy
(made-up 99xxxx descendants under a few SNOMED CT top codes the value sets name; not SNOMED
content), then ``valuesets expand``, ``valuesets check --tx`` and ``screen``/``nightly --tx``."""

import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from fhir_matcher.cli import main

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "terminology"
S = "http://snomed.info/sct"
TAG = "https://fhir-matcher.org/fhir/test-run|terminology"


@pytest.fixture(scope="module")
def tx(hapi):
    """The HAPI server holding the test code system, ready for $subsumes and $expand."""
    cs = json.loads((DATA / "codesystem.json").read_text(encoding="utf-8"))
    r = requests.put(f"{hapi.base_url}/CodeSystem/{cs['id']}", json=cs, headers={"Content-Type": "application/fhir+json"}, timeout=120)
    assert r.status_code in (200, 201), r.text
    deadline = time.monotonic() + 120  # HAPI indexes the concepts after the write; wait until it answers
    while True:
        r = requests.get(f"{hapi.base_url}/CodeSystem/$subsumes", params={"system": S, "codeA": "55464009", "codeB": "990001"}, timeout=60)
        if r.ok and r.json()["parameter"][0]["valueCode"] == "subsumes":
            return hapi.base_url
        assert time.monotonic() < deadline, f"the test code system is not usable: {r.text}"
        time.sleep(0.5)


def trial_with(tmp_path: Path, valueset: dict) -> Path:
    (tmp_path / "vs").mkdir(exist_ok=True)
    (tmp_path / "vs" / f"{valueset['id']}.json").write_text(json.dumps(valueset, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    trial = tmp_path / "trial.toml"
    trial.write_text((DATA / "trial.toml").read_text(encoding="utf-8"), encoding="utf-8")
    return trial


def test_expand_refreshes_the_expansion_for_review(tx, tmp_path, capsys):
    out = tmp_path / "expanded"
    code = main(["valuesets", "expand", "--tx", tx, "--trial", str(DATA / "trial.toml"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    before = json.loads((DATA / "vs" / "test-lupus.json").read_text(encoding="utf-8"))
    after = json.loads((out / "test-lupus.json").read_text(encoding="utf-8"))
    tops = after["expansion"]["contains"]
    assert len(tops) == 1
    top = tops[0]
    # the top-level concept, its names and the project's extensions are kept
    assert top["code"] == "55464009" and top["designation"] == before["expansion"]["contains"][0]["designation"]
    assert after["extension"] == before["extension"] and after["description"] == before["description"]
    nested = {c["code"] for c in top["contains"]}
    # new descendants (a grandchild too) placed under the concept; excluded branch left out
    assert {"990001", "990002"} <= nested
    assert not {"990003", "201436003"} & nested
    # a code the server does not know is removed; ICD-10 (not on the server) is kept
    assert "990007" not in nested and "M32.1" in nested
    # the diff for a person: printed and written
    diff = (out / "valuesets-diff.md").read_text(encoding="utf-8")
    for text in (diff, printed):
        assert "990001" in text and "990002" in text and "990007" in text
    assert "test-lupus: +2 -1" in printed
    # the refreshed set passes check (every code listed in compose, no duplicates)
    (tmp_path / "recheck").mkdir()
    trial = trial_with(tmp_path / "recheck", after)
    assert main(["valuesets", "check", "--trial", str(trial)]) == 0


def test_expand_twice_changes_nothing_the_second_time(tx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # in place, the diff goes to the current folder
    out = tmp_path / "once"
    assert main(["valuesets", "expand", "--tx", tx, "--trial", str(DATA / "trial.toml"), "--out", str(out), "-q"]) == 0
    trial = trial_with(tmp_path, json.loads((out / "test-lupus.json").read_text(encoding="utf-8")))
    # in place this time (the value set files are the trial's own copies)
    assert main(["valuesets", "expand", "--tx", tx, "--trial", str(trial)]) == 0
    assert "test-lupus: +0 -0" in capsys.readouterr().out
    assert (tmp_path / "valuesets-diff.md").is_file()
    assert json.loads((tmp_path / "vs" / "test-lupus.json").read_text(encoding="utf-8"))["expansion"] == \
        json.loads((out / "test-lupus.json").read_text(encoding="utf-8"))["expansion"]


def test_check_with_tx_names_unknown_and_inactive_codes(tx, tmp_path, capsys):
    vs = json.loads((DATA / "vs" / "test-lupus.json").read_text(encoding="utf-8"))
    vs["expansion"]["contains"][0]["contains"].append({"system": S, "code": "990009", "display": "Test retired concept"})
    vs["compose"]["include"][1]["concept"].append({"code": "990009", "display": "Test retired concept"})
    vs["expansion"]["total"] = 5
    trial = trial_with(tmp_path, vs)
    assert main(["valuesets", "check", "--trial", str(trial)]) == 0  # offline it is fine
    capsys.readouterr()
    assert main(["valuesets", "check", "--trial", str(trial), "--tx", tx]) == 1
    printed = capsys.readouterr().out
    assert "http://snomed.info/sct|990007 (Test code the server does not know) is unknown" in printed
    assert "http://snomed.info/sct|990009 (Test retired concept) is inactive" in printed
    assert not [line for line in printed.splitlines() if "239887007" in line]  # a known, active code is fine
    assert "http://hl7.org/fhir/sid/icd-10 not checked" in printed or "of http://hl7.org/fhir/sid/icd-10 not checked" in printed


def bundle(prefix: str) -> dict:
    def patient(pid, code, display):
        return [
            {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1990-01-01"},
            {"resourceType": "Condition", "id": f"{pid}-c", "subject": {"reference": f"Patient/{pid}"},
             "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
             "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
             "code": {"coding": [{"system": S, "code": code, "display": display}]}, "onsetDateTime": "2020-01-01"},
        ]
    resources = (patient(f"{prefix}new", "990002", "Test newer descendant")  # under 55464009, listed nowhere
                 + patient(f"{prefix}excl", "990003", "Test drug-induced child")  # excluded branch
                 + patient(f"{prefix}other", "990008", "Test unrelated disorder"))
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def rows(out: Path) -> dict:
    return {r["patient"]: r for r in map(json.loads, (out / "screening.ndjson").read_text(encoding="utf-8").splitlines())}


def test_screen_with_tx_matches_a_newer_descendant(tx, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.json").write_text(json.dumps(bundle("p-")), encoding="utf-8")
    # the bundled trial: target-sle lists no 990002, its compose says is-a 55464009
    assert main(["screen", "--source", str(src), "--out", str(tmp_path / "off"), "--as-of", "2026-11-24", "-q"]) == 0
    assert rows(tmp_path / "off") == {}
    assert main(["screen", "--source", str(src), "--out", str(tmp_path / "on"), "--as-of", "2026-11-24", "--tx", tx, "-q"]) == 0
    found = rows(tmp_path / "on")
    assert set(found) == {"Patient/p-new"}
    diag = found["Patient/p-new"]["criteria"]["inc-diagnosis"]
    assert diag["result"] == "met" and "Systemic lupus erythematosus" in diag["reason"]
    run = json.loads((tmp_path / "on" / "run.json").read_text(encoding="utf-8"))
    t = run["terminology"]
    assert t["server"] == tx and t["codes_matched"] == 1 and t["codes_checked"] >= 3
    assert t["http"]["requests"] > 0
    assert "terminology" not in json.loads((tmp_path / "off" / "run.json").read_text(encoding="utf-8"))


def test_nightly_with_tx(tx, hapi, tmp_path):
    from fhir_matcher.rest.client import FhirClient
    from fhir_matcher.rest.loader import Loader

    prefix = f"tx{uuid.uuid4().hex[:6]}-"
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.json").write_text(json.dumps(bundle("")), encoding="utf-8")
    assert not Loader(FhirClient(hapi.base_url), tag=TAG, id_prefix=prefix).load([src]).rejected
    out = tmp_path / "night"
    code = main(["nightly", "--server", hapi.base_url, "--state", str(tmp_path / "state.sqlite"), "--out", str(out),
                 "--as-of", "2026-11-24", "--tag", TAG, "--trial", str(DATA / "trial.toml"), "--tx", tx, "-q"])
    assert code == 0
    found = rows(out)
    assert found[f"Patient/{prefix}new"]["status"] == "candidate"
    assert f"Patient/{prefix}excl" not in found and f"Patient/{prefix}other" not in found
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["terminology"]["codes_matched"] == 1 and run["terminology"]["http"]["requests"] > 0
    assert run["written"] == 1
    # The next night without the terminology server screens in full: its answers were part of the results.
    code = main(["nightly", "--server", hapi.base_url, "--state", str(tmp_path / "state.sqlite"), "--out", str(tmp_path / "night2"),
                 "--as-of", "2026-11-25", "--tag", TAG, "--trial", str(DATA / "trial.toml"), "-q"])
    assert code == 0
    night2 = json.loads((tmp_path / "night2" / "run.json").read_text(encoding="utf-8"))
    assert night2["full_because"] == "the trial definition, a value set or the terminology server changed"
    assert f"Patient/{prefix}new" not in rows(tmp_path / "night2") or rows(tmp_path / "night2")[f"Patient/{prefix}new"]["status"] != "candidate"
