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

No criterion is written twice: the executors run the same code, on the same trial file.
"""

from __future__ import annotations

import json
import time
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import orjson

from ..criteria.cohort import cohort_valuesets, in_cohort
from ..criteria.evaluate import PatientResult, evaluate
from ..sources.files import FileSource, input_files
from ..record import RecordBuilder
from ..trial import Trial, load_trial

RESULT_SCHEMA = "patient string, status string, result string, problems string"


@lru_cache(maxsize=4)
def _executor_trial(path: str) -> Trial:
    """Each executor process loads the trial once (the same file the driver loaded)."""
    return load_trial(path)


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
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app).config("spark.sql.execution.arrow.pyspark.enabled", "true")
    builder = builder.config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "8")
    if master:
        builder = builder.master(master)
    return builder.getOrCreate()


def screen_spark(source: str, trial: Trial, as_of: date, master: str | None = None, spark=None) -> tuple[list[PatientResult], list[str], int, float]:
    """(results, problems, population, seconds) for an export at ``source`` (path or URI)."""
    from pyspark.sql import functions as F

    started = time.monotonic()
    spark = spark or spark_session(master)
    sc = spark.sparkContext
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
    trial_path = str(trial.path)
    gates = cohort_valuesets(trial)

    def gate(pdf):
        import pandas as pd

        t = _executor_trial(trial_path)
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

        t = _executor_trial(trial_path)
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
    return results, sorted(set(problems)), population, time.monotonic() - started

