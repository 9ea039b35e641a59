"""Every exit code, reached through the command line, and documented in --help and the README."""

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from builders import SCT, cc, condition, patient
from fhir_matcher import screen_bounded
from fhir_matcher.cli import EXIT_CODES, main
from fhir_matcher.nightly.state import State

ROOT = Path(__file__).resolve().parent.parent
AS_OF = ["--as-of", "2026-11-24"]


def _clean(tmp_path) -> Path:
    f = tmp_path / "clean.ndjson"
    f.write_text("\n".join(json.dumps(x) for x in [patient("p1"), condition(cc(SCT, "55464009"))]) + "\n", encoding="utf-8")
    return f


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_0_done(tmp_path):
    assert main(["screen", "--source", str(_clean(tmp_path)), "--out", str(tmp_path / "out"), *AS_OF, "-q"]) == 0


def test_3_done_with_malformed_input(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "clean.ndjson").write_text(_clean(tmp_path).read_text(encoding="utf-8"), encoding="utf-8")
    (src / "broken.json").write_text("{oops", encoding="utf-8")
    assert main(["screen", "--source", str(src), "--out", str(tmp_path / "out"), *AS_OF, "-q"]) == 3
    assert (tmp_path / "out" / "report.csv").exists()  # the run went on


@pytest.mark.parametrize("argv, message", [
    (["screen", "--source", "/nonexistent/input", "--out", "OUT"], "no such file"),
    (["screen", "--source", "SRC", "--out", "OUT", "--trial", "/nonexistent/trial.toml"], "trial"),
    (["screen", "--source", "SRC", "--out", "OUT", "--config", "/nonexistent/matcher.toml"], "matcher.toml"),
    (["nightly", "--out", "OUT"], "nightly needs --server, --state"),
])
def test_2_a_problem_to_fix(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "out") if a == "OUT" else str(_clean(tmp_path)) if a == "SRC" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "internal error" not in err


def test_2_unreachable_server(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/fhir"
    assert main(["screen", "--source", url, "--out", str(tmp_path / "out"), "--retries", "0", "--timeout", "5", "-q"]) == 2
    assert main(["load", "--server", url, str(_clean(tmp_path)), "--retries", "0", "--timeout", "5", "-q"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_2_wrong_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["screen", "--source", "x", "--out", "y", "--as-of", "24/11/2026"])
    assert e.value.code == 2
    assert "not a date" in capsys.readouterr().err


def test_1_internal_error(tmp_path, capsys, monkeypatch):
    def broken(*a, **kw):
        raise RuntimeError("a bug")

    monkeypatch.setattr(screen_bounded, "screen_files_streamed", broken)  # files: the bounded path (issue 15)
    assert main(["screen", "--source", str(_clean(tmp_path)), "--out", str(tmp_path / "out"), *AS_OF]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: a bug (run with -v for details)" in err and "Traceback" not in err


def test_1_load_rejected(hapi, tmp_path, capsys):
    bad = tmp_path / "bad.ndjson"
    bad.write_text("{not json\n", encoding="utf-8")
    assert main(["load", "--server", hapi.base_url, str(bad), "-q"]) == 1
    assert "rejected" in capsys.readouterr().err


def test_75_another_nightly_holds_the_state(tmp_path, capsys):
    state = tmp_path / "state.sqlite"
    url = f"http://127.0.0.1:{_closed_port()}/fhir"  # never contacted: the lock is checked first
    with State(state):
        assert main(["nightly", "--server", url, "--state", str(state), "--out", str(tmp_path / "out"), *AS_OF, "-q"]) == 75
    assert str(state) in capsys.readouterr().err


def test_130_interrupted(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(screen_bounded, "screen_files_streamed", interrupted)
    assert main(["screen", "--source", str(_clean(tmp_path)), "--out", str(tmp_path / "out"), *AS_OF]) == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("command, codes", [
    ([], [0, 1, 2, 3, 75, 130]),
    (["screen"], [0, 1, 2, 3, 130]),
    (["load"], [0, 1, 2, 130]),
    (["nightly"], [0, 1, 2, 3, 75, 130]),
    (["synth"], [0, 1, 2, 130]),
])
def test_help_lists_the_exit_codes(command, codes):
    out = subprocess.run([sys.executable, "-m", "fhir_matcher", *command, "--help"], capture_output=True, text=True, check=True).stdout
    listed = [int(c) for c in re.findall(r"^  (\d+) ", out.split("exit codes:")[1], re.M)]
    assert listed == codes


def test_readme_documents_every_exit_code():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Exit codes")[1].split("\n## ")[0]
    documented = {int(c) for c in re.findall(r"^\| `(\d+)` \|", table, re.M)}
    assert documented == set(EXIT_CODES)
