"""``fhir-matcher trial check`` and ``trial export`` as a site would run them."""

from __future__ import annotations

import json

from fhir.resources.R4B.bundle import Bundle

from fhir_matcher.cli import main
from fhir_matcher.trial import default_trial_path
from test_kinds_v2 import TRIAL, VALUESETS


def _site(tmp_path, text=TRIAL):
    (tmp_path / "vs").mkdir(exist_ok=True)
    for vs in VALUESETS:
        (tmp_path / "vs" / f"{vs['id']}.json").write_text(json.dumps(vs), encoding="utf-8")
    path = tmp_path / "trial.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_the_bundled_trial(capsys):
    assert main(["trial", "check"]) == 0
    out = capsys.readouterr().out
    assert "Criteria, in protocol order:" in out and "exc-creatinine" in out and "lab-creatinine" in out
    assert out.index("inc-age") < out.index("exc-deceased")  # protocol order
    assert "OK: no problems found" in out


def test_check_lists_every_problem_and_exits_1(tmp_path, capsys):
    bad = TRIAL.replace('unit = "mm[Hg]"', 'unit = "mm[Hgg]"').replace("threshold = 5.5", 'threshold = "high"').replace("max_gap_days = 7", "max_gap = 7")
    path = _site(tmp_path, bad)
    assert main(["trial", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: [quantities.sbp] unit" in err
    assert f"{path}: criterion exc-potassium: threshold: must be a number" in err
    assert f"{path}: criterion inc-metformin: max_gap: unknown parameter" in err
    assert "internal error" not in err and "Traceback" not in err


def test_check_a_file_that_is_not_toml(tmp_path, capsys):
    path = _site(tmp_path, "[trial\nid = 1")
    assert main(["trial", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "not a readable TOML" in err


def test_check_finds_rival_names(tmp_path, capsys):
    pos = {"resourceType": "ValueSet", "id": "my-pos", "status": "active", "expansion": {"timestamp": "2026-01-01", "contains": [{"code": "p", "system": "urn:x", "display": "reactive"}]}}
    neg = {"resourceType": "ValueSet", "id": "my-neg", "status": "active", "expansion": {"timestamp": "2026-01-01", "contains": [{"code": "n", "system": "urn:x", "display": "Reactive"}]}}
    path = _site(tmp_path, TRIAL + '\n[terminology]\npositive_valueset = "my-pos"\nnegative_valueset = "my-neg"\n')
    for vs in (pos, neg):
        (tmp_path / "vs" / f"{vs['id']}.json").write_text(json.dumps(vs), encoding="utf-8")
    assert main(["trial", "check", str(path)]) == 1
    assert "name 'reactive' is in both my-pos and my-neg" in capsys.readouterr().err


def test_export_is_valid_fhir_r4_with_every_criterion(tmp_path, capsys):
    path = _site(tmp_path)
    out = tmp_path / "trial-fhir.json"
    assert main(["trial", "export", str(path), "--out", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    Bundle.model_validate(data)
    resources = [e["resource"] for e in data["entry"]]
    study = next(r for r in resources if r["resourceType"] == "ResearchStudy")
    group = next(r for r in resources if r["resourceType"] == "Group")
    assert study["enrollment"] == [{"reference": f"Group/{group['id']}"}]
    by_id: dict[str, list[dict]] = {}
    for ch in group["characteristic"]:
        cid = next(e["valueString"] for e in ch["extension"] if e["url"].endswith("/criterion-id"))
        by_id.setdefault(cid, []).append(ch)
    assert set(by_id) >= {"inc-age", "inc-hba1c", "exc-potassium", "inc-metformin", "exc-stroke", "inc-kidney-treatment"}
    hba1c = by_id["inc-hba1c"][0]
    assert hba1c["valueRange"]["low"] == {"value": 7.0, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    assert hba1c["valueRange"]["high"]["value"] == 10.5 and hba1c["exclude"] is False
    k = by_id["exc-potassium"][0]
    assert k["exclude"] is True and k["valueQuantity"]["comparator"] == ">" and k["valueQuantity"]["value"] == 5.5
    assert any(e["url"].endswith("/criterion-window") and e["valueDuration"]["value"] == 30 for e in k["extension"])
    assert len(by_id["inc-kidney-treatment"]) == 3  # at-least over (medication-use, all-of(lab, not(condition)))
    assert {r["id"] for r in resources if r["resourceType"] == "ValueSet"} >= {"site-hba1c", "site-t1d"}


def test_export_the_bundled_trial(tmp_path):
    out = tmp_path / "cart.json"
    assert main(["trial", "export", str(default_trial_path()), "--out", str(out)]) == 0
    Bundle.model_validate(json.loads(out.read_text(encoding="utf-8")))
