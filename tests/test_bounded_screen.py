"""Issue 15: `screen` of files in bounded memory, on several processes, writes exactly what the
in-memory screen writes.

The reference is the in-memory path (screen_files_many + write_outputs / write_portfolio,
unchanged since before issue 15); the command is run with one partition and one process,
with many partitions (the spill path, forced with FHIR_MATCHER_PARTITIONS) and two worker
processes, and with small pass-1 jobs. All output files must be byte-identical (run.json
but its duration).
"""

from __future__ import annotations

import json
import shutil
import stat
from datetime import date
from pathlib import Path

import pytest

from fhir_matcher.cli import main
from fhir_matcher.outputs.files import write_outputs, write_run_json
from fhir_matcher.outputs.portfolio import write_portfolio
from fhir_matcher.partition import work
from fhir_matcher.partition.spill import MiB, parse_size, partitions_for
from fhir_matcher.runners import partitioned
from fhir_matcher.runners.partitioned import screen_files_streamed
from fhir_matcher.screen import screen_files_many
from fhir_matcher.trial import load_trials

ROOT = Path(__file__).resolve().parent.parent
AS_OF = "2026-11-24"
TRIALS = ROOT / "fhir_matcher" / "trials"
DEMOS = {
    "demo": (ROOT / "bundles" / "demo", TRIALS / "cd19-baff-car-t.toml"),
    "demo-t2d-ckd": (ROOT / "bundles" / "demo-t2d-ckd", TRIALS / "t2d-ckd.toml"),
    "demo-hf": (ROOT / "bundles" / "demo-hf", TRIALS / "hf-reduced-ef.toml"),
}


def _reference(source: Path, trial_files: list[Path], out: Path, all_patients: bool = False) -> None:
    """What the in-memory path writes (the outputs before issue 15)."""
    trials = load_trials([str(t) for t in trial_files])
    results = screen_files_many(source, trials, date.fromisoformat(AS_OF), all_patients=all_patients)
    if len(trials) == 1:
        r = results[0]
        write_outputs(out, r.trial, r.results, r.as_of, str(source), r.problems, outside=r.outside)
        write_run_json(out, {"command": "screen", **r.summary()})
    else:
        write_portfolio(out, results, date.fromisoformat(AS_OF), str(source), results[0].cost.to_json(), 0.0)
        for r in results:
            write_run_json(out / r.trial.id, {"command": "screen", **r.summary()})


def _files(folder: Path) -> dict[str, bytes]:
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            if f.name == "run.json":
                run = json.loads(data)
                run.pop("duration_s", None)
                data = json.dumps(run, sort_keys=True).encode()
            out[str(f.relative_to(folder))] = data
    return out


def _screen(source: Path, trial_files: list[Path], out: Path, *extra: str) -> int:
    args = ["screen", "--source", str(source), "--as-of", AS_OF, "--out", str(out), "-q"]
    for t in trial_files:
        args += ["--trial", str(t)]
    return main(args + list(extra))


WAYS = {
    "one partition, one process": ({}, ["--processes", "1"]),
    "seven partitions, two processes": ({"FHIR_MATCHER_PARTITIONS": "7"}, ["--processes", "2"]),
    "three partitions, one process": ({"FHIR_MATCHER_PARTITIONS": "3"}, ["--processes", "1"]),
}


def _assert_same_as_reference(source: Path, trial_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str,
                              all_patients: bool = False, code: int = 0) -> dict[str, bytes]:
    ref = tmp_path / "reference"
    _reference(source, trial_files, ref, all_patients)
    want = _files(ref)
    assert want
    for way, (env, args) in WAYS.items():
        out = tmp_path / way.replace(" ", "-").replace(",", "")
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            assert _screen(source, trial_files, out, *args, *extra, *(["--all-patients"] if all_patients else [])) == code, way
        got = _files(out)
        assert sorted(got) == sorted(want), way
        for name in want:
            assert got[name] == want[name], f"{way}: {name} differs from the in-memory screen"
        assert not list(out.glob(".fhir-matcher-spill-*")), f"{way}: spill files left behind"
    return want


@pytest.mark.parametrize("demo", sorted(DEMOS))
def test_bundled_demos_screen_byte_for_byte_like_the_in_memory_path(demo, tmp_path, monkeypatch):
    source, trial = DEMOS[demo]
    _assert_same_as_reference(source, [trial], tmp_path, monkeypatch)


def test_portfolio_of_every_demo_is_identical(tmp_path, monkeypatch):
    source = tmp_path / "all-demos"
    for name, (folder, _) in DEMOS.items():
        shutil.copytree(folder, source / name)
    want = _assert_same_as_reference(source, [t for _, t in DEMOS.values()], tmp_path, monkeypatch)
    assert "portfolio.html" in want and "cd19-baff-car-t/report.html" in want


def _synthetic_export(tmp_path: Path) -> Path:
    """A synthetic Bulk export with bad lines, a mixed file, a patient that is not there and
    transaction Bundles whose entries reference their Patient by urn:uuid."""
    data = tmp_path / "export"
    assert main(["synth", "--patients", "160", "--seed", "7", "--prevalence", "target=0.6", "--out", str(data)]) == 0
    assert main(["synth", "--patients", "60", "--seed", "8", "--bundles", "--out", str(tmp_path / "bundles")]) == 0
    for f in (tmp_path / "bundles").iterdir():
        shutil.copy(f, data / f"b-{f.name}")
    obs = (data / "Observation.ndjson").read_bytes().split(b"\n")
    obs[4:4] = [b'{"resourceType":"Observation", broken', b"[1, 2]", b'{"resourceType":"Observation","id":"no-subject","status":"final"}']
    (data / "Observation.ndjson").write_bytes(b"\n".join(obs))
    sle = b'"code":{"coding":[{"system":"http://snomed.info/sct","code":"55464009"}]}'
    (data / "extra.ndjson").write_bytes(
        b'{"resourceType":"Observation","id":"x1","subject":{"reference":"Patient/not-there"},"status":"final"}\n'
        b"not json\n"
        b'{"resourceType":"Condition","id":"x2","subject":{"reference":"Patient/not-there"},' + sle + b"}\n")
    return data


def test_synthetic_export_with_bad_lines_is_identical_and_names_each_line(tmp_path, monkeypatch):
    data = _synthetic_export(tmp_path)
    want = _assert_same_as_reference(data, [TRIALS / "cd19-baff-car-t.toml"], tmp_path, monkeypatch, code=3)
    problems = json.loads(want["run.json"])["problems"]
    obs = data / "Observation.ndjson"
    assert f"{obs}:5: invalid JSON (unexpected character, expected a string key)" in problems
    assert f"{obs}:6: not a FHIR resource (JSON is not an object)" in problems
    assert f"{obs}:7 (Observation/no-subject): Observation has no subject or patient reference (skipped)" in problems
    assert any(p.startswith(f"{data / 'extra.ndjson'}:2: invalid JSON") for p in problems)
    assert any("reference a patient who is not in the source" in p for p in problems)
    statuses = json.loads(want["run.json"])["statuses"]
    assert statuses["candidate"] and statuses["potential-candidate"] and statuses["ineligible"]


def test_synthetic_export_all_patients_and_portfolio_are_identical(tmp_path, monkeypatch):
    data = _synthetic_export(tmp_path)
    _assert_same_as_reference(data, [TRIALS / "cd19-baff-car-t.toml"], tmp_path / "all", monkeypatch, all_patients=True, code=3)
    _assert_same_as_reference(data, [TRIALS / "cd19-baff-car-t.toml", TRIALS / "t2d-ckd.toml"], tmp_path / "two", monkeypatch, code=3)


def test_small_pass_one_jobs_give_the_same_outputs(tmp_path):
    """Large NDJSON files are cut into byte ranges read in parallel: line numbers and order hold."""
    data = _synthetic_export(tmp_path)
    trials = load_trials([str(TRIALS / "cd19-baff-car-t.toml")])
    a = screen_files_streamed(data, trials, date.fromisoformat(AS_OF), tmp_path / "a", processes=1, parts=1)
    b = screen_files_streamed(data, trials, date.fromisoformat(AS_OF), tmp_path / "b", processes=2, parts=5, chunk=4096)
    assert a.screenings[0].problems == b.screenings[0].problems
    for name in ("screening.ndjson", "report.csv", "report.html", "research-subjects.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_spill_files_are_private_and_removed_after_a_failure(tmp_path, monkeypatch):
    source, trial = DEMOS["demo"]
    out = tmp_path / "out"
    seen = {}
    real = work.evaluate_partition

    def failing(part):
        spill = next(out.glob(".fhir-matcher-spill-*"))
        seen["dir"] = stat.S_IMODE(spill.stat().st_mode)
        seen["files"] = {stat.S_IMODE(f.stat().st_mode) for f in spill.iterdir()}
        real(part)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(work, "evaluate_partition", failing)
    monkeypatch.setenv("FHIR_MATCHER_PARTITIONS", "3")
    assert _screen(source, [trial], out, "--processes", "1") == 1
    assert seen["dir"] == 0o700 and seen["files"] == {0o600}
    assert out.exists() and not list(out.glob(".fhir-matcher-spill-*"))
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_spill_files_are_removed_on_ctrl_c(tmp_path, monkeypatch):
    source, trial = DEMOS["demo"]
    out = tmp_path / "out"

    def interrupted(part):
        raise KeyboardInterrupt

    monkeypatch.setattr(work, "evaluate_partition", interrupted)
    assert _screen(source, [trial], out, "--processes", "1") == 130
    assert not list(out.glob(".fhir-matcher-spill-*"))


@pytest.mark.parametrize("option,value,message", [
    ("--memory", "lots", "argument --memory: not a size (e.g. 512M, 2G): 'lots'"),
    ("--memory", "0", "argument --memory: the memory budget must be more than 0: '0'"),
    ("--memory", "10M", "argument --memory: at least 64M is needed"),
    ("--processes", "0", "argument --processes: at least 1: '0'"),
    ("--processes", "two", "argument --processes: not a whole number: 'two'"),
])
def test_bad_memory_and_processes_are_usage_errors(option, value, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["screen", "--source", str(DEMOS["demo"][0]), "--out", str(tmp_path), option, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_sizes_and_partition_counts():
    assert parse_size("512M") == 512 * MiB and parse_size("2G") == 2048 * MiB and parse_size("1.5GiB") == 1536 * MiB
    assert parse_size("800MB") == 800 * MiB and parse_size("4096") == 4096
    assert partitions_for(5 * MiB, 512 * MiB, 1) == 1  # a small input: one partition, nothing to balance
    big = partitions_for(735 * 1000 * 1000, 512 * MiB, 2)
    assert big >= 8 and big == partitions_for(735 * 1000 * 1000, 512 * MiB, 2)
    assert partitions_for(3 * 735 * 1000 * 1000, 512 * MiB, 2) > big  # three times the data: more partitions, not more memory
    assert partitions_for(735 * 1000 * 1000, 4096 * MiB, 2) < big


def test_default_processes_are_the_cores_this_process_may_use():
    assert partitioned.default_processes() >= 1


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_workers_forked_or_from_a_forkserver_write_the_same(method, tmp_path, monkeypatch):
    """Workers fork from a process with no other thread (starting warm), else come from a forkserver."""
    data = _synthetic_export(tmp_path)
    trials = load_trials([str(TRIALS / "cd19-baff-car-t.toml")])
    monkeypatch.setattr(partitioned, "start_method", lambda: method)
    a = screen_files_streamed(data, trials, date.fromisoformat(AS_OF), tmp_path / "a", processes=1, parts=1)
    b = screen_files_streamed(data, trials, date.fromisoformat(AS_OF), tmp_path / "b", processes=2, parts=3)
    assert a.screenings[0].problems == b.screenings[0].problems
    for name in ("screening.ndjson", "report.csv", "report.html", "research-subjects.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_workers_never_fork_a_process_running_threads():
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    before = threading.active_count()
    t.start()
    try:
        assert partitioned.start_method() in ("forkserver", "spawn")
    finally:
        stop.set()
        t.join()
    if before == 1:
        assert partitioned.start_method() == "fork"


def test_commands_collect_garbage_in_batches_and_restore_the_thresholds(tmp_path):
    import gc

    from fhir_matcher import gcmode

    before = gc.get_threshold()
    seen = []
    with gcmode.batch():
        seen.append(gc.get_threshold())
    assert seen == [gcmode.BATCH] and gc.get_threshold() == before


@pytest.mark.parametrize("patient", ["Patient/p-001", "Patient/A.b-9", "urn:uuid:6f1c2a44-5a0e-4b8e-9a53-2f7f3c1d9e10",
                                     'Patient/say "hi"', "Patient/病人 一", "Patient/back\\slash", "Patient/fhir-matcher-stand-in"])
@pytest.mark.parametrize("status", ["candidate", "potential-candidate"])
def test_subject_entries_are_the_validated_entry_for_any_patient(patient, status):
    """research-subjects.json entries come from a template validated once per trial and status:
    for every patient they are the bytes a Bundle validated for that patient alone gives."""
    from fhir.resources.R4B.bundle import Bundle

    from fhir_matcher.outputs import subjects

    trial = load_trials([str(TRIALS / "cd19-baff-car-t.toml")])[0]
    text = subjects.subject_entry_text(trial, patient, status)
    assert text == subjects._validated_entry_text(trial, patient, status)
    entry = json.loads(text)
    assert entry["resource"]["individual"]["reference"] == patient and entry["resource"]["status"] == status
    Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
