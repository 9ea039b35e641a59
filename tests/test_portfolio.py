"""A portfolio of trials in one pass, and one patient against every trial (match)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from fhir_matcher.cli import main
from fhir_matcher.trial import default_trial_path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
AS_OF = "2026-11-24"
FILES = ("screening.ndjson", "research-subjects.json", "report.csv", "report.html")


@pytest.fixture(scope="module")
def trials_dir(tmp_path_factory) -> Path:
    """The bundled trial and a stricter copy of it (another id, lymphocytes > 1.0, no consent check)."""
    d = tmp_path_factory.mktemp("trials")
    text = default_trial_path().read_text(encoding="utf-8")
    (d / "cd19-baff-car-t.toml").write_text(text, encoding="utf-8")
    strict = text.replace('id = "cd19-baff-car-t"', 'id = "cart-strict"').replace("threshold = 0.3\n", "threshold = 1.0\n")
    assert strict != text
    (d / "cart-strict.toml").write_text(strict, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory, trials_dir):
    out = tmp_path_factory.mktemp("portfolio")
    assert main(["screen", "--source", str(DEMO), "--trials", str(trials_dir), "--as-of", AS_OF, "--out", str(out), "-q"]) == 0
    singles = {}
    for f in sorted(trials_dir.glob("*.toml")):
        single = tmp_path_factory.mktemp(f.stem)
        assert main(["screen", "--source", str(DEMO), "--trial", str(f), "--as-of", AS_OF, "--out", str(single), "-q"]) == 0
        singles[f.stem] = single
    return out, singles


def test_each_trial_folder_equals_a_single_trial_run(portfolio):
    out, singles = portfolio
    for trial_id, single in singles.items():
        for name in FILES:
            assert (out / trial_id / name).read_bytes() == (single / name).read_bytes(), (trial_id, name)
        run = json.loads((out / trial_id / "run.json").read_text(encoding="utf-8"))
        alone = json.loads((single / "run.json").read_text(encoding="utf-8"))
        assert run["statuses"] == alone["statuses"] and run["trial"] == trial_id


def test_run_json_totals(portfolio):
    out, singles = portfolio
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert set(run["trials"]) == set(singles)
    for trial_id in singles:
        alone = json.loads((singles[trial_id] / "run.json").read_text(encoding="utf-8"))
        assert run["trials"][trial_id]["statuses"] == alone["statuses"]
    assert run["http"]["requests"] == 0 and run["as_of"] == AS_OF


def test_portfolio_page_matrix(portfolio):
    out, singles = portfolio
    html = (out / "portfolio.html").read_text(encoding="utf-8")
    assert "href='cd19-baff-car-t/report.html'" in html and "href='cart-strict/report.html'" in html
    shortlisted = set()
    for trial_id in singles:
        for line in (out / trial_id / "screening.ndjson").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["status"] != "ineligible":
                shortlisted.add(row["patient"])
    assert shortlisted and all(f"<td>{p}</td>" in html for p in shortlisted)
    assert f"Patients who could join a trial ({len(shortlisted)})" in html


def test_repeated_trial_flags_work_like_a_folder(tmp_path, trials_dir, portfolio):
    out, _ = portfolio
    args = ["screen", "--source", str(DEMO), "--as-of", AS_OF, "--out", str(tmp_path), "-q"]
    for f in sorted(trials_dir.glob("*.toml")):
        args += ["--trial", str(f)]
    assert main(args) == 0
    for trial_id in ("cd19-baff-car-t", "cart-strict"):
        assert (tmp_path / trial_id / "screening.ndjson").read_bytes() == (out / trial_id / "screening.ndjson").read_bytes()


def test_one_trial_writes_the_usual_folder(tmp_path):
    assert main(["screen", "--source", str(DEMO), "--as-of", AS_OF, "--out", str(tmp_path), "-q", "--trial", str(default_trial_path())]) == 0
    assert (tmp_path / "screening.ndjson").exists() and not (tmp_path / "portfolio.html").exists()


def test_two_trials_with_one_id_are_refused(tmp_path, capsys):
    args = ["screen", "--source", str(DEMO), "--as-of", AS_OF, "--out", str(tmp_path), "-q",
            "--trial", str(default_trial_path()), "--trial", str(default_trial_path())]
    assert main(args) == 2
    assert "each trial needs its own id" in capsys.readouterr().err


# ---------------------------------------------------------------- match


def _match(tmp_path, source, patient, trials_dir, *extra):
    out = tmp_path / "match.json"
    code = main(["match", "--patient", patient, "--source", str(source), "--trials", str(trials_dir), "--as-of", AS_OF, "--out", str(out), "-q", *extra])
    assert code in (0, 3)
    data = json.loads(out.read_text(encoding="utf-8"))
    Bundle.model_validate(data)
    return data


def test_match_gives_each_trials_status_with_reasons(tmp_path, trials_dir, portfolio):
    out, _ = portfolio
    by_trial = {t: {json.loads(l)["patient"]: json.loads(l) for l in (out / t / "screening.ndjson").read_text(encoding="utf-8").splitlines()}
                for t in ("cd19-baff-car-t", "cart-strict")}
    # a patient whose statuses differ between the two trials
    patient = next(p for p, row in by_trial["cd19-baff-car-t"].items() if row["status"] != by_trial["cart-strict"][p]["status"])
    data = _match(tmp_path, DEMO, patient, trials_dir)
    assert data["type"] == "searchset"
    subjects = [e for e in data["entry"] if e["search"]["mode"] == "match"]
    studies = [e for e in data["entry"] if e["search"]["mode"] == "include"]
    assert len(subjects) == 2 and len(studies) == 2
    assert data["entry"][:2] == subjects  # subjects first
    ranks = {"candidate": 0, "potential-candidate": 1, "ineligible": 2}
    assert [ranks[e["resource"]["status"]] for e in subjects] == sorted(ranks[e["resource"]["status"]] for e in subjects)
    for e in subjects:
        subject = e["resource"]
        trial_id = subject["identifier"][0]["value"].split("/", 1)[0]
        assert subject["status"] == by_trial[trial_id][patient]["status"]
        assert subject["individual"]["reference"] == patient
        reason = next(x["valueString"] for x in subject["extension"] if x["url"].endswith("/screening-reason"))
        assert reason
        criteria = [x for x in subject["extension"] if x["url"].endswith("/screening-criterion")]
        assert len(criteria) == len(by_trial[trial_id][patient]["criteria"])
    assert {s["resource"]["identifier"][0]["value"] for s in studies} == {"cd19-baff-car-t", "cart-strict"}
    study_urls = {s["fullUrl"] for s in studies}
    assert all(e["resource"]["study"]["reference"] in study_urls for e in subjects)


def test_match_an_unknown_patient(tmp_path, trials_dir, capsys):
    assert main(["match", "--patient", "Patient/nobody", "--source", str(DEMO), "--trials", str(trials_dir), "--as-of", AS_OF, "--out", str(tmp_path / "m.json"), "-q"]) == 2
    assert "Patient/nobody: not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def loaded(hapi):
    assert main(["load", "--server", hapi.base_url, str(DEMO), "-q", "--id-prefix", "pf-"]) == 0
    return hapi.base_url


def test_match_from_a_server_reads_only_that_patient(loaded, tmp_path, trials_dir, capsys):
    files = _match(tmp_path, DEMO, "Patient/demo-07", trials_dir)
    capsys.readouterr()
    out = tmp_path / "server.json"
    assert main(["match", "--patient", "Patient/pf-demo-07", "--source", loaded, "--trials", str(trials_dir), "--as-of", AS_OF, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    server = json.loads(out.read_text(encoding="utf-8"))
    got = {e["resource"]["identifier"][0]["value"].split("/")[0]: e["resource"]["status"] for e in server["entry"] if e["search"]["mode"] == "match"}
    want = {e["resource"]["identifier"][0]["value"].split("/")[0]: e["resource"]["status"] for e in files["entry"] if e["search"]["mode"] == "match"}
    assert got == want
    requests = int(printed.split("HTTP: ")[1].split(" requests")[0])
    assert requests <= 10  # the Patient and one search per resource type: not a screen
