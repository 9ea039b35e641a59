"""The bundled worked-example trials, end to end: each trial file screens its own demo folder
and every patient's every criterion must equal the hand-derived oracle.

- fhir_matcher/trials/t2d-ckd.toml       + bundles/demo-t2d-ckd + tests/data/demo-t2d-ckd-expected.json
- fhir_matcher/trials/hf-reduced-ef.toml + bundles/demo-hf      + tests/data/demo-hf-expected.json

The oracles were written by hand from the protocols and the trial-format rules (see each
patient's note and the folders' README), never by running the program.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TRIALS = {
    "t2d-ckd": ("fhir_matcher/trials/t2d-ckd.toml", "bundles/demo-t2d-ckd", "tests/data/demo-t2d-ckd-expected.json"),
    "hf-reduced-ef": ("fhir_matcher/trials/hf-reduced-ef.toml", "bundles/demo-hf", "tests/data/demo-hf-expected.json"),
}
ORACLES = {name: json.loads((ROOT / oracle).read_text(encoding="utf-8")) for name, (_, _, oracle) in TRIALS.items()}
CASES = [(name, patient) for name, oracle in ORACLES.items() for patient in sorted(oracle["patients"])]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command a user types (`fhir-matcher ...`), run as a separate process."""
    return subprocess.run([sys.executable, "-m", "fhir_matcher", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def _criteria_ids(trial_file: str) -> list[str]:
    data = tomllib.loads((ROOT / trial_file).read_text(encoding="utf-8"))
    return [c["id"] for c in data["criteria"]]


@pytest.fixture(scope="module")
def screened(tmp_path_factory) -> dict[str, dict[str, dict]]:
    """Each trial's demo folder screened once: trial name -> patient -> screening.ndjson row."""
    results = {}
    for name, (trial, folder, _) in TRIALS.items():
        out = tmp_path_factory.mktemp(name)
        run = _cli("screen", "--trial", trial, "--source", folder, "--as-of", ORACLES[name]["as_of"],
                   "--out", str(out), "--all-patients", "-q")
        assert run.returncode == 0, f"{name}: exit {run.returncode}\n{run.stdout}\n{run.stderr}"
        rows = [json.loads(line) for line in (out / "screening.ndjson").read_text(encoding="utf-8").splitlines()]
        results[name] = {r["patient"]: r for r in rows}
    return results


BUNDLED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "fhir_matcher" / "trials").glob("*.toml"))


@pytest.mark.parametrize("trial", BUNDLED)
def test_trial_check_accepts_the_bundled_trial(trial):
    assert len(BUNDLED) >= 3
    run = _cli("trial", "check", trial)
    assert run.returncode == 0, f"{trial}: exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    for cid in _criteria_ids(trial):
        assert cid in run.stdout, f"trial check does not list criterion {cid}"


@pytest.mark.parametrize("trial", BUNDLED)
def test_valuesets_check_accepts_the_bundled_trial(trial):
    run = _cli("valuesets", "check", "--trial", trial)
    assert run.returncode == 0, f"{trial}: exit {run.returncode}\n{run.stdout}\n{run.stderr}"


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_oracle_covers_every_criterion_both_ways(name):
    """The demo patients exercise each computable criterion on both sides (met and not met)."""
    trial, _, _ = TRIALS[name]
    ids = _criteria_ids(trial)
    oracle = ORACLES[name]["patients"]
    for patient, want in oracle.items():
        assert list(want["criteria"]) == ids, f"{patient}: oracle criteria differ from the trial file"
        assert want["note"], patient
    manual = {c["id"] for c in tomllib.loads((ROOT / trial).read_text(encoding="utf-8"))["criteria"] if c["kind"] == "manual"}
    for cid in ids:
        seen = {want["criteria"][cid] for want in oracle.values()}
        if cid in manual:
            continue
        assert {"met", "not-met"} <= seen, f"{cid}: the demo patients only give {sorted(seen)}"
    statuses = {want["status"] for want in oracle.values()}
    assert statuses == {"candidate", "potential-candidate", "ineligible"}


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_every_patient_screened_once(screened, name):
    assert sorted(screened[name]) == sorted(ORACLES[name]["patients"])


@pytest.mark.parametrize("name,patient", CASES)
def test_patient_matches_oracle(screened, name, patient):
    want = ORACLES[name]["patients"][patient]
    got = screened[name][patient]
    assert set(got["criteria"]) == set(want["criteria"])
    diffs = {cid: {"got": got["criteria"][cid]["result"], "expected": exp, "reason": got["criteria"][cid]["reason"]}
             for cid, exp in want["criteria"].items() if got["criteria"][cid]["result"] != exp}
    assert not diffs, f"{patient} ({want['note']}): {json.dumps(diffs, indent=1, ensure_ascii=False)}"
    assert got["status"] == want["status"], f"{patient}: status {got['status']}, expected {want['status']}"


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_rows_carry_reasons_and_evidence(screened, name):
    for row in screened[name].values():
        assert row["trial"] and row["as_of"] == ORACLES[name]["as_of"]
        for cid, c in row["criteria"].items():
            assert c["reason"], f"{row['patient']} {cid}: no reason"
            assert isinstance(c["evidence"], list)
            assert all(not e.endswith("/?") for e in c["evidence"]), f"{row['patient']} {cid}: {c['evidence']}"
            if c["result"] == "met" and cid.startswith("exc-"):
                assert c["evidence"], f"{row['patient']} {cid}: an exclusion met without evidence"


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_default_screen_is_the_cohort(screened, tmp_path, name):
    """Without --all-patients only the diagnosis cohort is listed, with the same results as the
    full screen; the rest are counted as outside the cohort (each is ruled out by the diagnosis
    criterion in the oracle)."""
    trial, folder, _ = TRIALS[name]
    oracle = ORACLES[name]
    gate = {"t2d-ckd": "inc-t2d", "hf-reduced-ef": "inc-hf"}[name]
    run = _cli("screen", "--trial", trial, "--source", folder, "--as-of", oracle["as_of"], "--out", str(tmp_path), "-q")
    assert run.returncode == 0, run.stderr
    rows = {r["patient"]: r for r in map(json.loads, (tmp_path / "screening.ndjson").read_text(encoding="utf-8").splitlines())}
    in_cohort = {p for p, want in oracle["patients"].items() if want["criteria"][gate] == "met"}
    assert set(rows) == in_cohort
    for p, row in rows.items():
        assert row["status"] == screened[name][p]["status"], p
        assert row["criteria"] == screened[name][p]["criteria"], p
    summary = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert summary["screened"] == len(oracle["patients"])
    assert summary["outside_cohort"] == len(oracle["patients"]) - len(in_cohort)


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_trial_export_is_valid_fhir(tmp_path, name):
    from fhir.resources.R4B.bundle import Bundle

    trial, _, _ = TRIALS[name]
    out = tmp_path / "export.json"
    run = _cli("trial", "export", trial, "--out", str(out))
    assert run.returncode == 0, run.stderr
    bundle = Bundle.model_validate(json.loads(out.read_text(encoding="utf-8")))
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds.count("ResearchStudy") == 1 and kinds.count("Group") == 1


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_report_carries_no_other_trials_wording(screened, tmp_path, name):
    trial, folder, _ = TRIALS[name]
    run = _cli("screen", "--trial", trial, "--source", folder, "--as-of", ORACLES[name]["as_of"], "--out", str(tmp_path), "--all-patients", "-q")
    assert run.returncode == 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    for phrase in ("cell collection", "CAR-T", "CD19", "prednisone"):
        assert phrase not in html, phrase


def test_met_note_is_appended_when_met(screened):
    """exc-dual-ras carries a met_note: it ends the reason when the exclusion applies, only then."""
    note = tomllib.loads((ROOT / TRIALS["t2d-ckd"][0]).read_text(encoding="utf-8"))
    note = next(c["met_note"] for c in note["criteria"] if c["id"] == "exc-dual-ras")
    for patient, row in screened["t2d-ckd"].items():
        c = row["criteria"]["exc-dual-ras"]
        assert c["reason"].endswith(note) == (c["result"] == "met"), (patient, c["reason"])


def test_portfolio_of_the_bundled_trials_equals_single_runs(screened, tmp_path):
    """All bundled trials (fhir_matcher/trials/*.toml) in one pass over both demo folders: each
    trial gives its own patients exactly what the single-trial screen gave them."""
    import shutil

    source = tmp_path / "source"
    for _, folder, _ in TRIALS.values():
        shutil.copytree(ROOT / folder, source / Path(folder).name)
    out = tmp_path / "portfolio"
    as_of = {o["as_of"] for o in ORACLES.values()}
    assert len(as_of) == 1
    run = _cli("screen", "--source", str(source), "--trials", "fhir_matcher/trials", "--as-of", as_of.pop(),
               "--out", str(out), "--all-patients", "-q")
    assert run.returncode == 0, run.stderr
    for name, (trial, _, _) in TRIALS.items():
        trial_id = tomllib.loads((ROOT / trial).read_text(encoding="utf-8"))["trial"]["id"]
        rows = {r["patient"]: r for r in map(json.loads, (out / trial_id / "screening.ndjson").read_text(encoding="utf-8").splitlines())}
        assert set(screened[name]) <= set(rows)
        for patient, single in screened[name].items():
            assert rows[patient]["criteria"] == single["criteria"], (name, patient)
            assert rows[patient]["status"] == single["status"], (name, patient)
