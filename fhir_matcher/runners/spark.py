"""Screen exports on Apache Spark, with the same pure evaluation functions as in-process.

Pipeline (local mode on a laptop, or any cluster via ``--master``):

1. Read every input as (patient key, resource JSON) rows: Bulk NDJSON lines keyed with
   Spark SQL (``get_json_object`` on subject/patient references, no Python per line);
   JSON Bundles whole (``wholeTextFiles``), resolved with the file source's own Bundle
   logic so ``urn:uuid:`` references work.
2. The cohort: Conditions grouped per patient and passed through the trial's diagnosis gate
   (``applyInPandas`` calling ``engine.cohort.in_cohort``); a small list, broadcast.
3. Only cohort patients' rows are shuffled and grouped per patient; each group becomes a
   ``PatientRecord`` and is evaluated by ``engine.evaluate.evaluate`` on the executors.
   Shared Medications are broadcast.
4. Results stream back to the driver, which writes the same outputs as the in-process engine.

No criterion is written twice: the executors run the same code, on the same trial.

Beyond local mode (a standalone cluster, YARN, Kubernetes), executors are other processes,
often on other machines, with their own Python and working folder:
- their Python is ``PYSPARK_PYTHON`` (or ``spark.pyspark.python``); when neither is set it is
  this interpreter (``sys.executable``), not whatever ``python3`` comes first on a PATH, so a
  virtualenv works without being activated;
- the matcher's own code is zipped and shipped (``addPyFile``): executors need only the
  third-party dependencies (a packed virtualenv on a multi-node cluster: see the README);
- the trial travels as a broadcast object (its definition and every value set, already
  checked), never as a path that exists on the driver's machine only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
import zipfile
from datetime import date
from pathlib import Path
from typing import Any, Iterator

import orjson

from ..criteria.cohort import cohort_valuesets, in_cohort
from ..criteria.evaluate import PatientResult, evaluate
from ..sources.files import FileSource, input_files
from ..record import RecordBuilder
from ..trial import Trial

log = logging.getLogger("fhir_matcher")

RESULT_SCHEMA = "patient string, status string, result string, problems string"


class SparkJobError(ValueError):
    """A Spark job failed; the message is one line (the executors' Python error, and what to do)."""


def package_zip(dest_dir: Path) -> Path:
    """The fhir_matcher package as a zip for ``addPyFile``: every module and data file
    (bundled trials, the bundled value sets as ``fhir_matcher/_data/valuesets`` when the
    package runs from a source checkout), no bytecode caches."""
    import fhir_matcher
    from ..trial import bundled_valuesets_dir

    pkg = Path(fhir_matcher.__file__).resolve().parent
    dest = dest_dir / "fhir_matcher.zip"
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
                z.write(f, Path("fhir_matcher") / f.relative_to(pkg))
        vs = bundled_valuesets_dir()
        if not (pkg / "_data" / "valuesets").is_dir() and vs.is_dir():
            for f in sorted(vs.rglob("*")):
                if f.is_file():
                    z.write(f, Path("fhir_matcher/_data/valuesets") / f.relative_to(vs))
    return dest


def executor_python(conf_value: str | None = None) -> str:
    """The Python the executors run: PYSPARK_PYTHON, else ``spark.pyspark.python``, else this one."""
    return os.environ.get("PYSPARK_PYTHON") or conf_value or sys.executable


def job_error(e: BaseException) -> SparkJobError:
    """One line for a failed Spark job: the Python error raised on an executor when there is one."""
    text = str(e)
    errors = re.findall(r"^\s*((?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception)(?::[^\n]*)?)$", text, re.M)
    python = [x for x in errors if not x.startswith(("org.", "java.", "py4j.", "scala.", "pyspark.errors"))]
    reason = (python or errors or [text.strip().splitlines()[-1] if text.strip() else type(e).__name__])[-1].strip()
    reason = re.sub(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception))", r"\1", reason)
    hint = ""
    if "No module named" in reason:
        hint = (f"; the executors' Python ({os.environ.get('PYSPARK_PYTHON', '?')}) lacks the dependencies: set PYSPARK_PYTHON "
                "to a Python that has them (a packed virtualenv on a cluster, see the README's Spark section)")
    return SparkJobError(f"the Spark job failed: {reason[:300]}{hint}")


def _bundle_rows(item: tuple[str, str]) -> Iterator[tuple[str | None, str, str]]:
    """(patient key or None, resource type, resource JSON) for every resource of one JSON file."""
    name, text = item
    source = FileSource(Path(name))
    try:
        source.add(orjson.loads(text), name)
    except orjson.JSONDecodeError:
        yield None, "Problem", json.dumps({"where": name, "reason": "invalid JSON"})
        return
    b = source.builder
    for key, resource in b.patients.items():
        yield key, "Patient", orjson.dumps(resource).decode()
    for ref, med in b.medications.items():
        if ref.startswith("Medication/"):
            yield None, "Medication", orjson.dumps(med).decode()
    for key, resource in b.pending.items():
        subject = b.aliases.get(b.pending_subject[key], b.pending_subject[key])
        for field in ("subject", "patient", "individual", "beneficiary"):  # urn:uuid -> Patient/<id>
            ref = resource.get(field)
            if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("urn:"):
                resource = {**resource, field: {**ref, "reference": subject}}
                break
        yield subject, resource["resourceType"], orjson.dumps(resource).decode()
    for p in b.problems:
        yield None, "Problem", json.dumps({"where": p.where, "reason": p.reason, "resource": p.resource})


def spark_session(master: str | None, app: str = "fhir-matcher"):
    """A session whose Python workers run this interpreter unless the user chose one, with
    the matcher's code shipped to every executor."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    if (master is None or master.startswith("local")) and not os.environ.get("SPARK_LOCAL_IP"):
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # one machine: listen on loopback only
    _quiet_startup()
    if not os.environ.get("PYSPARK_PYTHON"):
        # pyspark reads only the environment variable here; spark.pyspark.python from
        # spark-defaults.conf is read through the JVM the gateway starts with.
        SparkContext._ensure_initialized()
        os.environ["PYSPARK_PYTHON"] = executor_python(SparkConf().get("spark.pyspark.python", None))
    builder = SparkSession.builder.appName(app).config("spark.sql.execution.arrow.pyspark.enabled", "true")
    builder = builder.config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "8")
    builder = builder.config("spark.pyspark.driver.python", sys.executable).config("spark.ui.showConsoleProgress", "false")
    if master:
        builder = builder.master(master)
    session = builder.getOrCreate()
    # Spark's own log repeats executor errors with their tracebacks (and can quote data):
    # silent at the default level, where a failed job is reported in one line; -v shows it.
    session.sparkContext.setLogLevel("WARN" if log.isEnabledFor(logging.DEBUG) else "OFF")
    ship_package(session.sparkContext)
    return session


def _quiet_startup() -> None:
    """Without -v, and unless the user configured Spark's logging, the JVM this process starts
    logs errors only (cron mails every line a -q run prints)."""
    from pyspark import SparkContext

    if log.isEnabledFor(logging.DEBUG) or SparkContext._gateway is not None or "log4j" in os.environ.get("SPARK_SUBMIT_OPTS", ""):
        return
    home = os.environ.get("SPARK_HOME") or str(Path(__import__("pyspark").__file__).parent)
    conf_dir = Path(os.environ.get("SPARK_CONF_DIR") or Path(home) / "conf")
    if (conf_dir / "log4j2.properties").exists():
        return
    quiet = Path(__file__).with_name("spark-log4j2.properties")
    os.environ["SPARK_SUBMIT_OPTS"] = f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} -Dlog4j2.configurationFile={quiet.as_uri()}".strip()


def ship_package(sc: Any) -> None:
    """``addPyFile`` the matcher's code once per SparkContext."""
    if getattr(sc, "_fhir_matcher_zip", None):
        return
    folder = Path(tempfile.mkdtemp(prefix="fhir-matcher-spark-"))
    sc.addPyFile(str(package_zip(folder)))
    sc._fhir_matcher_zip = True


def screen_spark(source: str, trial: Trial, as_of: date, master: str | None = None, spark=None) -> tuple[list[PatientResult], list[str], int, float]:
    """(results, problems, population, seconds) for an export at ``source`` (path or URI)."""
    started = time.monotonic()
    spark = spark or spark_session(master)
    try:
        return _screen(spark, source, trial, as_of, started)
    except Exception as e:
        if type(e).__module__.startswith(("py4j", "pyspark")):
            raise job_error(e) from None
        raise


def _screen(spark: Any, source: str, trial: Trial, as_of: date, started: float) -> tuple[list[PatientResult], list[str], int, float]:
    from pyspark.sql import functions as F

    sc = spark.sparkContext
    ship_package(sc)
    local = not ("://" in source and not source.startswith("file://"))
    if local:
        files = input_files(Path(source))
        ndjson = [str(f) for f in files if f.name.endswith(".ndjson")]
        bundles = [str(f) for f in files if not f.name.endswith(".ndjson")]
    else:  # a Hadoop URI (hdfs://, s3a://, abfss://...): NDJSON only
        ndjson, bundles = [source], []

    frames = []
    if ndjson:
        lines = spark.read.option("recursiveFileLookup", "true").text(ndjson).where(F.trim("value") != "")
        rtype = F.get_json_object("value", "$.resourceType")
        ref = F.coalesce(F.get_json_object("value", "$.subject.reference"), F.get_json_object("value", "$.patient.reference"))
        pid = F.regexp_extract(ref, r"Patient/([^/]+)", 1)
        key = F.when(rtype == "Patient", F.concat(F.lit("Patient/"), F.get_json_object("value", "$.id"))) \
               .when(pid != "", F.concat(F.lit("Patient/"), pid))
        frames.append(lines.select(key.alias("patient"), F.coalesce(rtype, F.lit("Problem?")).alias("type"), F.col("value").alias("json")))
    if bundles:
        rows = sc.wholeTextFiles(",".join(bundles)).flatMap(_bundle_rows)
        frames.append(spark.createDataFrame(rows, "patient string, type string, json string"))
    data = frames[0]
    for f in frames[1:]:
        data = data.unionByName(f)
    data = data.cache()

    # Stage 1: the cohort (the diagnosis gate on each patient's Condition codes).
    # The trial (definition and value sets) travels with the job: no executor reads a file.
    trial_b = sc.broadcast(trial)
    gates = cohort_valuesets(trial)

    def gate(pdf):
        import pandas as pd

        t = trial_b.value
        codes = [c for c in (orjson.loads(j).get("code") for j in pdf["json"]) if isinstance(c, dict)]
        keep = (not gates) or in_cohort(t, codes, cohort_valuesets(t))
        return pd.DataFrame({"patient": pd.Series([str(pdf["patient"].iloc[0])] if keep else [], dtype=object)})

    conditions = data.where((F.col("type") == "Condition") & F.col("patient").isNotNull())
    if gates:
        cohort = [r.patient for r in conditions.groupBy("patient").applyInPandas(gate, "patient string").collect()]
    else:
        cohort = [r.patient for r in data.where(F.col("type") == "Patient").select("patient").distinct().collect()]
    population = data.where(F.col("type") == "Patient").select("patient").distinct().count()
    medications = [orjson.loads(r.json) for r in data.where(F.col("type") == "Medication").select("json").collect()]
    problems = [f"{p['where']}: {p['reason']}" for p in (json.loads(r.json) for r in data.where(F.col("type") == "Problem").collect())]
    problems += [f"{source}: {n} line(s) that are not FHIR JSON" for n in [data.where(F.col("type") == "Problem?").count()] if n]
    meds_b = sc.broadcast(medications)

    # Stage 2: cohort patients only, grouped and evaluated by the same engine.
    def evaluate_group(pdf):
        import pandas as pd

        t = trial_b.value
        b = RecordBuilder()
        for med in meds_b.value:
            b.add(med, "medication")
        for j in pdf["json"]:
            try:
                b.add(orjson.loads(j), "spark")
            except orjson.JSONDecodeError:
                b.problem("spark", "invalid JSON line")
        out = []
        for rec in b.records():
            r = evaluate(rec, t, as_of)
            out.append((r.patient, r.status, orjson.dumps(r.criteria_json()).decode(),
                        orjson.dumps([str(p) for p in b.problems]).decode()))
        return pd.DataFrame(out, columns=["patient", "status", "result", "problems"])

    ids = spark.createDataFrame([(p,) for p in cohort], "patient string")
    in_cohort_rows = data.join(F.broadcast(ids), "patient")
    results_df = in_cohort_rows.groupBy("patient").applyInPandas(evaluate_group, RESULT_SCHEMA)
    results = []
    for row in results_df.toLocalIterator():
        results.append(PatientResult(row.patient, row.status, PatientResult.criteria_from_json(orjson.loads(row.result))))
        problems += [p for p in orjson.loads(row.problems) if "medication" not in p]
    results.sort(key=lambda r: r.patient)
    data.unpersist()
    trial_b.unpersist()
    meds_b.unpersist()
    return results, sorted(set(problems)), population, time.monotonic() - started

