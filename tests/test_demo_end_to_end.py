"""End to end over bundles/demo: the CLI's outputs against the hand-derived oracle."""

import csv
import json
from pathlib import Path

import pytest

from fhir_matcher.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = json.loads((ROOT / "tests" / "data" / "demo-expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    code = main(["screen", "--source", str(ROOT / "bundles" / "demo"), "--as-of", EXPECTED["as_of"], "--out", str(out), "-q", "--all-patients"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "screening.ndjson").read_text(encoding="utf-8").splitlines()]
    return out, {r["patient"]: r for r in rows}


def test_every_patient_screened_once(demo_run):
    _, rows = demo_run
    assert sorted(rows) == sorted(EXPECTED["patients"])


@pytest.mark.parametrize("patient", sorted(EXPECTED["patients"]))
def test_patient_matches_oracle(demo_run, patient):
    _, rows = demo_run
    want = EXPECTED["patients"][patient]
    got = rows[patient]
    diffs = {cid: (got["criteria"][cid]["result"], exp, got["criteria"][cid]["reason"])
             for cid, exp in want["criteria"].items() if got["criteria"][cid]["result"] != exp}
    assert not diffs, f"{patient} ({want.get('note', '')}): got, expected, reason = {diffs}"
    assert got["status"] == want["status"]


def test_screening_record_shape(demo_run):
    _, rows = demo_run
    for row in rows.values():
        assert set(row) >= {"patient", "status", "criteria"}
        assert row["status"] in ("candidate", "potential-candidate", "ineligible")
        for c in row["criteria"].values():
            assert set(c) >= {"result", "reason", "evidence", "value"}
            assert c["result"] in ("met", "not-met", "unknown", "manual")
            assert isinstance(c["evidence"], list) and c["reason"]


def test_research_subjects_bundle(demo_run):
    from fhir.resources.R4B.bundle import Bundle

    out, rows = demo_run
    data = json.loads((out / "research-subjects.json").read_text(encoding="utf-8"))
    bundle = Bundle.model_validate(data)  # valid R4 (R4B models)
    resources = [e.resource for e in bundle.entry]
    studies = [r for r in resources if r.get_resource_type() == "ResearchStudy"]
    subjects = [r for r in resources if r.get_resource_type() == "ResearchSubject"]
    assert len(studies) == 1
    study_url = bundle.entry[0].fullUrl
    expected = {p: r["status"] for p, r in rows.items() if r["status"] != "ineligible"}
    assert {s.individual.reference: s.status for s in subjects} == expected
    assert all(s.study.reference == study_url for s in subjects)
    assert len({s.identifier[0].value for s in subjects}) == len(subjects)


def test_reports(demo_run):
    out, rows = demo_run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Attrition" in html and "<script" not in html and "http" not in html.split("</style>")[0]
    candidates = [p for p, r in rows.items() if r["status"] == "candidate"]
    assert all(p in html for p in candidates)
    with (out / "report.csv").open(encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows) * 25
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["screened"] == len(rows) and run["problems"] == []


def test_outputs_are_private(demo_run):
    out, _ = demo_run
    for f in out.iterdir():
        assert f.stat().st_mode & 0o077 == 0, f


def test_default_screen_is_the_cohort(tmp_path):
    """Without --all-patients only patients with a target-diagnosis Condition are evaluated;
    the others are counted (and ruled out by inc-diagnosis in the funnel), exactly as on a server."""
    out = tmp_path / "cohort"
    assert main(["screen", "--source", str(ROOT / "bundles" / "demo"), "--as-of", EXPECTED["as_of"], "--out", str(out), "-q"]) == 0
    rows = {r["patient"]: r for r in map(json.loads, (out / "screening.ndjson").read_text(encoding="utf-8").splitlines())}
    diagnosed = {p for p, v in EXPECTED["patients"].items() if v["criteria"]["inc-diagnosis"] == "met"}
    assert diagnosed <= set(rows)
    for p, row in rows.items():
        assert {k: v["result"] for k, v in row["criteria"].items()} == EXPECTED["patients"][p]["criteria"], p
    for p in set(EXPECTED["patients"]) - set(rows):
        assert EXPECTED["patients"][p]["criteria"]["inc-diagnosis"] == "not-met", p
    run = json.loads((out / "run.json").read_text())
    assert run["screened"] == len(EXPECTED["patients"]) and run["outside_cohort"] == len(EXPECTED["patients"]) - len(rows)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f"{len(EXPECTED['patients'])} patients screened" in html
