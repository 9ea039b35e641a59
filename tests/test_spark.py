"""The Spark engine gives the in-process engine's answers, patient by patient (local mode)."""

import json
from datetime import date
from pathlib import Path

import pytest

from fhir_matcher.cli import main
from fhir_matcher.screen import screen_files, screen_with_spark

ROOT = Path(__file__).resolve().parent.parent
AS_OF = date(2026, 11, 24)


@pytest.fixture(scope="module")
def spark():
    from fhir_matcher.runners.spark import spark_session

    session = spark_session("local[2]", "fhir-matcher-tests")
    yield session
    session.stop()


def as_rows(screening):
    return {r.patient: (r.status, {k: o.to_json() for k, o in r.criteria.items()}) for r in screening.results}


def assert_same(a, b):
    assert set(a.results and as_rows(a)) == set(as_rows(b))
    ra, rb = as_rows(a), as_rows(b)
    for patient in ra:
        assert ra[patient] == rb[patient], patient
    assert a.outside == b.outside


def test_spark_equals_in_process_on_the_demo_bundles(spark, trial):
    # Every shape: transaction/batch/collection/searchset Bundles and Bulk NDJSON.
    demo = ROOT / "bundles" / "demo"
    assert_same(screen_with_spark(str(demo), trial, AS_OF, spark=spark), screen_files(demo, trial, AS_OF))


def test_spark_equals_in_process_on_a_synthetic_population(spark, trial, tmp_path):
    from fhir_matcher import synth

    synth.generate(1500, 11, tmp_path / "pop")
    a = screen_with_spark(str(tmp_path / "pop"), trial, AS_OF, spark=spark)
    b = screen_files(tmp_path / "pop", trial, AS_OF)
    assert len(b.results) > 100 and {r.status for r in b.results} == {"candidate", "potential-candidate", "ineligible"}
    assert_same(a, b)


def test_cli_engine_spark_writes_the_same_outputs(spark, tmp_path):
    demo = ROOT / "bundles" / "demo"
    assert main(["screen", "--engine", "spark", "--source", str(demo), "--as-of", "2026-11-24", "--out", str(tmp_path / "s"), "-q"]) == 0
    assert main(["screen", "--source", str(demo), "--as-of", "2026-11-24", "--out", str(tmp_path / "l"), "-q"]) == 0
    for name in ("screening.ndjson", "research-subjects.json", "report.csv"):
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "l" / name).read_bytes(), name
    assert json.loads((tmp_path / "s" / "run.json").read_text())["screened"] == 46


def test_spark_refuses_a_server_url(tmp_path, capsys):
    assert main(["screen", "--engine", "spark", "--source", "https://fhir.example.org/r4", "--out", str(tmp_path)]) == 2
    assert "--bulk" in capsys.readouterr().err
