"""report.csv: cells a spreadsheet would run as formulas are neutralised, and stay readable."""

import csv
import io
import json

import pytest

from builders import SCT, cc, condition, med, patient
from fhir_matcher.cli import main
from fhir_matcher.criteria.context import Outcome
from fhir_matcher.criteria.evaluate import PatientResult
from fhir_matcher.outputs.report import csv_cell, report_csv

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.mark.parametrize("raw", ["=1+1", "+1+1", "-1+1", "@SUM(A1:A2)", "\t=1+1", "\r=1+1", "=HYPERLINK(\"http://x\",\"y\")",
                                 "-cmd|' /C calc'!A0"])
def test_formula_starts_get_an_apostrophe_and_keep_their_text(raw):
    assert csv_cell(raw) == "'" + raw


@pytest.mark.parametrize("raw", ["-1.5", "+3", "-2e-5", "12", "Patient/demo-01", "met", "", "a=b", "hb 12 g/dL"])
def test_numbers_and_ordinary_text_are_unchanged(raw):
    assert csv_cell(raw) == raw


def test_every_column_is_neutralised(trial):
    evil = "=HYPERLINK(\"http://evil.example\",\"click\")"
    results = [PatientResult("Patient/x", "candidate", {c.id: Outcome("met", evil, [evil], evil, "@unit") for c in trial.criteria})]
    rows = list(csv.DictReader(io.StringIO(report_csv(trial, results, {"Patient/x": "-changed"}))))
    assert len(rows) == len(trial.criteria)
    for row in rows:
        assert row["reason"] == "'" + evil and row["evidence"] == "'" + evil and row["value"] == "'" + evil
        assert row["unit"] == "'@unit" and row["changed"] == "'-changed"
    negative = [PatientResult("Patient/x", "candidate", {c.id: Outcome("met", "ok", [], -1.5, "x ULN") for c in trial.criteria})]
    assert next(csv.DictReader(io.StringIO(report_csv(trial, negative))))["value"] == "-1.5"


def test_screen_neutralises_a_drug_name_from_the_data(tmp_path):
    """End to end: a medication text from the source starts the washout reason in report.csv."""
    evil = "=cmd|' /C calc'!A0 prednisone"
    prednisone = cc(RXNORM, "8640", text=evil)
    items = [patient("p1"), condition(cc(SCT, "55464009")), med(prednisone, start="2026-11-01", dose=30)]
    src = tmp_path / "in.ndjson"
    src.write_text("\n".join(json.dumps(x) for x in items) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["screen", "--source", str(src), "--out", str(out), "--as-of", "2026-11-24", "-q"]) == 0
    rows = list(csv.DictReader((out / "report.csv").open(encoding="utf-8")))
    reasons = [r["reason"] for r in rows if evil in r["reason"]]
    assert reasons, "the drug name should appear in a reason"
    assert all(not r.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for r in row.values())
    assert any(r.startswith("'" + evil) for r in reasons)  # readable: the text follows the apostrophe
