#!/usr/bin/env python3
"""Generate synthetic FHIR R4 patients with Synthea (from Maven Central) as Bulk NDJSON.

    python benchmarks/synthea/run_synthea.py --patients 1000 --seed 42 --out /tmp/synthea-1000

Builds once (``mvn dependency:copy-dependencies`` into ``benchmarks/synthea/target/lib``,
cached), runs Synthea in its own JVM with a fixed seed and a fixed end date, FHIR R4 export
with ``exporter.fhir.bulk_data=true`` (every other exporter off), and writes the NDJSON files
flattened into ``--out`` (``Patient.ndjson``, ``Condition.ndjson``, ...). Standard library only.
See README.md beside this file.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LIB = HERE / "target" / "lib"
STAMP = LIB / ".built-from-pom"
LUPUS_SNOMED_SLE = "55464009"  # Systemic lupus erythematosus
LUPUS_SNOMED_LE = "200936003"  # Lupus erythematosus (what Synthea's lupus module codes)
# Billing and audit resources: about half the bytes, nothing a screener reads.
DEFAULT_EXCLUDED = "Claim,ExplanationOfBenefit,Provenance"


class Failure(Exception):
    """A problem reported as one line, without a traceback."""


def log(msg: str) -> None:
    print(msg, flush=True)


def java_major(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise Failure(f"cannot run {java}: {exc}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise Failure(f"cannot tell the Java version from `{java} -version`")
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    cand = Path(home, "bin", "java") if home else None
    java = str(cand) if cand and cand.exists() else shutil.which("java")
    if not java:
        raise Failure("Java not found: install a JDK/JRE 11+ (e.g. apt-get install openjdk-17-jre-headless)")
    major = java_major(java)
    if major < 11:
        raise Failure(f"Java {major} found at {java}; Synthea 3.x needs Java 11 or newer")
    return java


def synthea_version() -> str:
    text = POM.read_text(encoding="utf-8")
    m = re.search(r"<synthea\.version>([^<]+)</synthea\.version>", text)
    return m.group(1).strip() if m else "?"


def synthea_jar() -> Path:
    jars = sorted(LIB.glob("synthea-*.jar"))
    if not jars:
        raise Failure(f"no synthea-*.jar in {LIB}; remove {LIB} and rerun to rebuild")
    return jars[-1]


def build(force: bool) -> None:
    """mvn dependency:copy-dependencies, skipped when target/lib matches the pom."""
    pom_stamp = f"{POM.stat().st_mtime_ns}:{POM.stat().st_size}"
    if not force and STAMP.exists() and STAMP.read_text() == pom_stamp and any(LIB.glob("synthea-*.jar")):
        log(f"build: cached ({LIB})")
        return
    mvn = shutil.which("mvn")
    if not mvn:
        raise Failure("Maven (mvn) not found: install Maven 3.6+ (e.g. apt-get install maven)")
    if LIB.exists():
        shutil.rmtree(LIB)
    t0 = time.monotonic()
    log(f"build: mvn dependency:copy-dependencies (Synthea {synthea_version()} from Maven Central) ...")
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "ERROR" in l] or \
            (proc.stdout + proc.stderr).strip().splitlines()[-1:]
        raise Failure("Maven build failed: " + (lines[0].strip() if lines else f"exit {proc.returncode}"))
    STAMP.write_text(pom_stamp)
    n = len(list(LIB.glob("*.jar")))
    log(f"build: {n} jars in {LIB} ({time.monotonic() - t0:.1f} s)")


def jar_modules(jar: Path) -> list[str]:
    """Top-level disease modules (``modules/<name>.json``) in the Synthea jar."""
    with zipfile.ZipFile(jar) as zf:
        names = zf.namelist()
    return sorted(n[len("modules/"):-len(".json")] for n in names
                  if re.fullmatch(r"modules/[^/]+\.json", n))


def enriched_lupus_dir(jar: Path, incidence: float, workdir: Path) -> Path:
    """A local module dir with a copy of lupus.json whose incidence is ``incidence``
    for both sexes (the shipped one is ~0.05% of women, ~0.008% of men)."""
    with zipfile.ZipFile(jar) as zf:
        module = json.loads(zf.read("modules/lupus.json"))
    initial = module["states"]["Initial"]
    for branch in initial.get("complex_transition", []):
        for dist in branch.get("distributions", []):
            if dist.get("transition") == "Terminal":
                dist["distribution"] = round(1.0 - incidence, 9)
            else:
                dist["distribution"] = incidence
    out = workdir / "local_modules"
    out.mkdir(parents=True, exist_ok=True)
    (out / "lupus.json").write_text(json.dumps(module, indent=1), encoding="utf-8")
    return out


def run_synthea(args: argparse.Namespace, java: str, jar: Path, workdir: Path) -> tuple[Path, float, str]:
    base = workdir / "output"
    cmd = [
        java, f"-Xmx{args.xmx}", "-cp", str(LIB / "*"), "App",
        "-s", str(args.seed), "-cs", str(args.seed), "-p", str(args.patients),
        # -r (reference date: "now" for ages and birth dates) and -e (end of simulation)
        # both fixed: with only -e, times drift with the wall clock between runs.
        "-r", args.end_date.replace("-", ""), "-e", args.end_date.replace("-", ""),
    ]
    if args.module:
        cmd += ["-m", ":".join(args.module)]
    if args.lupus_incidence is not None:
        cmd += ["-d", str(enriched_lupus_dir(jar, args.lupus_incidence, workdir))]
    config = {
        "exporter.baseDirectory": str(base) + os.sep,
        "exporter.fhir.export": "true",
        "exporter.fhir.bulk_data": "true",
        "exporter.fhir_stu3.export": "false",
        "exporter.fhir_dstu2.export": "false",
        "exporter.hospital.fhir.export": "true",
        "exporter.practitioner.fhir.export": "true",
        "exporter.csv.export": "false",
        "exporter.ccda.export": "false",
        "exporter.json.export": "false",
        "exporter.text.export": "false",
        "exporter.cpcds.export": "false",
        "exporter.bfd.export": "false",
        "exporter.cdw.export": "false",
        "exporter.clinical_note.export": "false",
        "exporter.symptoms.csv.export": "false",
        "exporter.symptoms.text.export": "false",
        "exporter.groups.fhir.export": "false",
        "exporter.metadata.export": "false",
        "exporter.years_of_history": str(args.years_of_history),
        "exporter.fhir.excluded_resources": args.exclude,
        "generate.log_patients.detail": "simple",
    }
    cmd += [f"--{k}={v}" for k, v in config.items()]
    if args.state:
        cmd.append(args.state)
    log("run: " + " ".join(cmd))
    logfile = workdir / "synthea.log"
    t0 = time.monotonic()
    with open(logfile, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir)
        assert proc.stdout is not None
        records = 0
        summary = ""
        for line in proc.stdout:
            fh.write(line)
            if re.match(r"^\d+ -- ", line):
                records += 1
                if not args.quiet and records % 100 == 0:
                    log(f"  ... {records} records simulated ({time.monotonic() - t0:.0f} s)")
            elif line.startswith("Records:"):
                summary = line.strip()
        rc = proc.wait()
    elapsed = time.monotonic() - t0
    if rc != 0:
        tail = logfile.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        raise Failure(f"Synthea exited {rc}: {tail[0] if tail else '(no output)'} (log: {logfile})")
    fhir = base / "fhir"
    if not fhir.is_dir():
        raise Failure(f"Synthea wrote no FHIR output under {base} (log: {logfile})")
    return fhir, elapsed, summary


def flatten(fhir: Path, out: Path) -> dict[str, int]:
    """Copy ``<Type>[.<timestamp>].ndjson`` into ``out/<Type>.ndjson`` (merging)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ndjson"):
        old.unlink()
    groups: dict[str, list[Path]] = collections.defaultdict(list)
    for f in sorted(fhir.glob("*.ndjson")):
        groups[f.name.split(".", 1)[0]].append(f)
    counts: dict[str, int] = {}
    for rtype, files in sorted(groups.items()):
        n = 0
        with open(out / f"{rtype}.ndjson", "wb") as dst:
            for f in files:
                with open(f, "rb") as src:
                    for line in src:
                        if line.strip():
                            dst.write(line if line.endswith(b"\n") else line + b"\n")
                            n += 1
        counts[rtype] = n
    return counts


def lupus_summary(out: Path) -> tuple[int, int, int, collections.Counter]:
    """(Conditions coding SNOMED 55464009, Conditions mentioning lupus, patients with either, codes)."""
    sle = anylupus = 0
    patients: set[str] = set()
    codes: collections.Counter = collections.Counter()
    path = out / "Condition.ndjson"
    if not path.exists():
        return 0, 0, 0, codes
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if "upus" not in line and LUPUS_SNOMED_SLE not in line:
                continue
            res = json.loads(line)
            code = res.get("code") or {}
            codings = code.get("coding") or []
            is_sle = any(c.get("code") == LUPUS_SNOMED_SLE for c in codings)
            texts = [code.get("text") or ""] + [c.get("display") or "" for c in codings]
            is_lupus = is_sle or any("lupus" in t.lower() for t in texts)
            if is_sle:
                sle += 1
            if is_lupus:
                anylupus += 1
                patients.add((res.get("subject") or {}).get("reference", "?"))
                for c in codings:
                    codes[f"{c.get('system', '?')}|{c.get('code')} {c.get('display', '')}"] += 1
    return sle, anylupus, len(patients), codes


def fhir_version_check(out: Path) -> list[str]:
    """A few R4-shape probes on the first lines of the output."""
    notes = []

    def first(rtype: str) -> dict | None:
        p = out / f"{rtype}.ndjson"
        if not p.exists():
            return None
        with open(p, encoding="utf-8") as fh:
            line = fh.readline()
        return json.loads(line) if line.strip() else None

    cond = first("Condition")
    if cond is not None:
        cs = cond.get("clinicalStatus")
        notes.append("Condition.clinicalStatus is a CodeableConcept (R4)" if isinstance(cs, dict)
                     else f"Condition.clinicalStatus is {type(cs).__name__} (not R4)")
    mr = first("MedicationRequest")
    if mr is not None:
        keys = sorted(k for k in mr if k.startswith("medication"))
        notes.append(f"MedicationRequest medication[x]: {', '.join(keys) or 'none'}")
    pat = first("Patient")
    if pat is not None:
        profiles = (pat.get("meta") or {}).get("profile") or []
        if profiles:
            notes.append(f"Patient.meta.profile: {profiles[0]}")
    return notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=100, help="living patients to generate (Synthea -p); "
                    "people who died during the simulation are exported too")
    ap.add_argument("--seed", type=int, default=42, help="Synthea -s and -cs seed (default 42)")
    ap.add_argument("--out", type=Path, help="folder for the flattened NDJSON files")
    ap.add_argument("--module", action="append", default=[],
                    help="restrict Synthea to this disease module (repeatable; Synthea -m). By default "
                         "every module runs, lupus included")
    ap.add_argument("--lupus-incidence", type=float, default=None, metavar="P",
                    help="replace the lupus module's lifetime incidence (about 0.0005 for women) by P "
                         "for everyone, e.g. 0.2, to get lupus patients in a small population")
    ap.add_argument("--end-date", default="2026-11-24", help="simulation reference and end date (Synthea -r and -e), default 2026-11-24")
    ap.add_argument("--years-of-history", type=int, default=10,
                    help="exporter.years_of_history (Synthea default 10; 0 = everything)")
    ap.add_argument("--exclude", default=DEFAULT_EXCLUDED,
                    help=f"resource types not to export (default {DEFAULT_EXCLUDED}; '' keeps all)")
    ap.add_argument("--state", default="", help="US state to simulate (Synthea default Massachusetts)")
    ap.add_argument("--xmx", default="4g", help="JVM heap (default 4g)")
    ap.add_argument("--keep-work", action="store_true", help="keep Synthea's own output and log")
    ap.add_argument("--rebuild", action="store_true", help="rerun the Maven step")
    ap.add_argument("--list-modules", action="store_true", help="list the jar's modules and exit")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)

    if args.out is None and not args.list_modules:
        ap.error("the following arguments are required: --out")
    if args.patients < 1:
        raise Failure("--patients must be at least 1")
    if args.lupus_incidence is not None and not 0 < args.lupus_incidence <= 1:
        raise Failure("--lupus-incidence must be in (0, 1]")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.end_date):
        raise Failure("--end-date must be YYYY-MM-DD")

    t_all = time.monotonic()
    java = find_java()
    build(args.rebuild)
    jar = synthea_jar()
    modules = jar_modules(jar)
    log(f"synthea: {jar.name}, {len(modules)} top-level modules, java {java_major(java)} at {java}")
    if args.list_modules:
        print("\n".join(modules))
        return 0
    if "lupus" in modules:
        log("lupus: modules/lupus.json is in the jar and runs by default "
            f"(codes SNOMED {LUPUS_SNOMED_LE} 'Lupus erythematosus')")
    else:
        log("lupus: NO modules/lupus.json in this jar; modules: " + ", ".join(modules))
        if args.lupus_incidence is not None:
            raise Failure("--lupus-incidence needs modules/lupus.json, which this jar lacks")
    unknown = [m for m in args.module if "*" not in m and m not in modules]
    if unknown:
        raise Failure(f"unknown module(s) {', '.join(unknown)}; see --list-modules")

    work = Path(tempfile.mkdtemp(prefix="synthea-run-"))
    try:
        fhir, elapsed, summary = run_synthea(args, java, jar, work)
        counts = flatten(fhir, args.out)
    except BaseException:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work dir kept: {work}")
        raise
    if args.keep_work:
        log(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)

    size = sum(f.stat().st_size for f in args.out.glob("*.ndjson"))
    log(f"synthea: {elapsed:.1f} s; {summary or 'no summary line'}")
    log(f"wrote {args.out}: {sum(counts.values())} resources, {size / 1e6:.1f} MB")
    for rtype, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        log(f"  {rtype:<26} {n:>9}")
    for note in fhir_version_check(args.out):
        log(f"fhir: {note}")
    sle, anylupus, npat, codes = lupus_summary(args.out)
    log(f"lupus: {sle} Conditions with SNOMED {LUPUS_SNOMED_SLE} (SLE); {anylupus} Conditions mentioning "
        f"lupus in {npat} patients")
    for code, n in codes.most_common(5):
        log(f"  {n:>5}  {code}")
    log(f"total: {time.monotonic() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as exc:
        print(f"run_synthea: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("run_synthea: interrupted", file=sys.stderr)
        sys.exit(130)
