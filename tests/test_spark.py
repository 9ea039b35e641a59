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


# ---------------------------------------------------------------- beyond the test process
# Both tests run the installed command in a subprocess from a folder outside the repository,
# so nothing is importable by accident (the repo on sys.path, an activated virtualenv).

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

VENV_BIN = Path(sys.executable).parent
SCRIPT = VENV_BIN / "fhir-matcher"


def bare_env(**extra: str) -> dict[str, str]:
    """An environment as cron or systemd gives it: no activated venv, no PYSPARK_* settings."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "JAVA_HOME", "TMPDIR")}
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != VENV_BIN.resolve())
    return {**keep, "PATH": path or "/usr/bin:/bin", **extra}


def screen_cli(out: Path, cwd: Path, env: dict[str, str], *extra: str, source: Path = ROOT / "bundles" / "demo") -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT), "screen", "--source", str(source), "--as-of", "2026-11-24", "--out", str(out), "-q", *extra]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def same_outputs(a: Path, b: Path) -> None:
    for name in ("screening.ndjson", "research-subjects.json", "report.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def local_outputs(tmp_path_factory):
    """--engine local on the demo bundles, and on a folder holding them and a synthetic
    population (every Bundle shape, Bulk NDJSON, enough patients for every partition)."""
    from fhir_matcher import synth

    base = tmp_path_factory.mktemp("local")
    shutil.copytree(ROOT / "bundles" / "demo", base / "all" / "demo")
    synth.generate(400, 23, base / "all" / "pop")
    for name, source in (("demo", ROOT / "bundles" / "demo"), ("all", base / "all")):
        assert main(["screen", "--source", str(source), "--as-of", "2026-11-24", "--out", str(base / "out" / name), "-q"]) in (0, 3)
    return base


def test_engine_spark_from_an_unactivated_virtualenv(local_outputs, tmp_path):
    # As the README's systemd unit runs it: the venv's script by its absolute path, a PATH
    # without the venv, no PYSPARK_PYTHON. The Python workers must be the venv's Python.
    env = bare_env()
    assert "PYSPARK_PYTHON" not in env and shutil.which("python3", path=env["PATH"]) != str(VENV_BIN / "python3")
    proc = screen_cli(tmp_path / "s", tmp_path, env, "--engine", "spark", "--master", "local[2]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    same_outputs(tmp_path / "s", local_outputs / "out" / "demo")


def deps_only_python(where: Path) -> Path:
    """A Python with every third-party dependency but not fhir_matcher: what a cluster node has
    when its environment was installed without the matcher (or a packed venv was shipped).
    The venv's interpreter without site (-S), its site-packages re-exposed minus fhir_matcher."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    deps = where / "site"
    deps.mkdir(parents=True)
    for entry in site.iterdir():
        if entry.name.startswith(("fhir_matcher", "_fhir_matcher", "fhir-matcher")) or entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry)
    python = where / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{deps}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    probe = subprocess.run([str(python), "-c", "import pint, pandas, pyarrow, orjson\nimport fhir_matcher"], cwd=where, capture_output=True, text=True)
    assert "No module named 'fhir_matcher'" in probe.stderr, probe.stderr  # the test could not pass by accident
    return python


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone Spark cluster on loopback: a master and two workers (1 core each), each its
    own JVM started with the PySpark install's bin/spark-class. Stopped in teardown, always.

    The README's way for a multi-node cluster: the executors' Python comes in an archive (here
    a stand-in for a packed virtualenv: bin/python with the dependencies, without fhir_matcher),
    named in spark-defaults.conf; nothing about it in the environment."""
    import spark_cluster

    base = tmp_path_factory.mktemp("spark-cluster")
    python = deps_only_python(base / "py")
    env_dir = base / "pyenv" / "bin"
    env_dir.mkdir(parents=True)
    (env_dir / "python").write_text(f'#!/bin/sh\ntouch "$(dirname "$0")/../used"\nexec "{python}" "$@"\n')  # leaves a mark where it ran
    (env_dir / "python").chmod(0o755)
    subprocess.run(["tar", "-czf", str(base / "pyenv.tar.gz"), "-C", str(base / "pyenv"), "."], check=True)
    conf = {"spark.executor.memory": "512m", "spark.archives": f"{base / 'pyenv.tar.gz'}#environment",
            "spark.pyspark.python": "./environment/bin/python"}
    try:
        with spark_cluster.start(base / "cluster", workers=2, cores=1, memory="1g", conf=conf, env=bare_env()) as c:
            yield {"master": c.master, "env": c.env, "base": c.folder}
    except RuntimeError as e:
        pytest.fail(str(e))


def test_engine_spark_on_a_standalone_cluster(cluster, local_outputs, tmp_path):
    # Executors are other JVMs with their own Python workers and working folders: the package
    # and the trial must be shipped to them, not found on a path; their Python is the one
    # spark-defaults.conf names (spark.pyspark.python), unpacked from spark.archives.
    env = cluster["env"]
    assert "PYSPARK_PYTHON" not in env
    proc = screen_cli(tmp_path / "s", tmp_path, env, "--engine", "spark", "--master", cluster["master"], source=local_outputs / "all")
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    same_outputs(tmp_path / "s", local_outputs / "out" / "all")
    assert json.loads((tmp_path / "s" / "run.json").read_text())["screened"] > 46
    # The work really ran on the workers' executors, with the shipped environment's Python.
    assert list(cluster["base"].glob("worker-*/app-*/*/environment/used"))


def test_engine_spark_with_executors_missing_a_dependency_says_so_in_one_line(tmp_path):
    # A Python without the dependencies on the executors: one line naming what is missing and
    # what to set, no traceback.
    bare = tmp_path / "python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')  # the same interpreter, no site-packages
    bare.chmod(0o755)
    env = bare_env(PYSPARK_PYTHON=str(bare))
    proc = screen_cli(tmp_path / "s", tmp_path, env, "--engine", "spark", "--master", "local[1]")
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr.strip()
    last = err.splitlines()[-1]
    assert "No module named" in last and "PYSPARK_PYTHON" in last and "Traceback" not in err and "at org.apache" not in err, err
