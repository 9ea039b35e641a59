"""fhir-matcher synth: deterministic, valid, streamed synthetic FHIR R4 populations."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from fhir_matcher import synth
from fhir_matcher.normalize.units import default_units

ANCHOR = date(2026, 11, 24)


@pytest.fixture(scope="module")
def pop(tmp_path_factory) -> tuple[Path, dict]:
    """300 patients as NDJSON (seed 11), shared by the read-only tests."""
    out = tmp_path_factory.mktemp("synth") / "ndjson"
    return out, synth.generate(300, 11, out)


def _lines(out: Path) -> list[dict]:
    res = []
    for f in sorted(out.glob("*.ndjson")):
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                res.append(json.loads(line))
    return res


def _references(obj, found: list[str]) -> list[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "reference" and isinstance(v, str):
                found.append(v)
            else:
                _references(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _references(v, found)
    return found


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


# ---------------------------------------------------------------- layout, determinism


def test_ndjson_layout_and_counts(pop):
    out, counts = pop
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.ndjson" for t in synth.NDJSON_TYPES)
    assert counts["patients"] == 300 and counts["files"] == 8
    assert counts["resources"]["Patient"] == 300
    assert counts["resources"]["Medication"] == len(synth.SHARED_MEDS)
    assert counts["resources_total"] == sum(counts["resources"].values())
    on_disk = Counter(r["resourceType"] for r in _lines(out))
    assert dict(on_disk) == counts["resources"]
    assert counts["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    for t in synth.NDJSON_TYPES:  # each file holds its own type only
        with (out / f"{t}.ndjson").open(encoding="utf-8") as fh:
            assert all(json.loads(line)["resourceType"] == t for line in fh)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, pop):
    out, _ = pop
    again = tmp_path / "again"
    synth.generate(300, 11, again)
    assert _files(again) == _files(out)
    other = tmp_path / "other"
    synth.generate(300, 12, other)
    assert _files(other)["Patient.ndjson"] != _files(out)["Patient.ndjson"]
    assert _files(other)["Observation.ndjson"] != _files(out)["Observation.ndjson"]


def test_patients_do_not_depend_on_population_size(tmp_path, pop):
    """Patient k is the same in a population of 100 and of 300 (each patient has its own stream)."""
    out, _ = pop
    small = tmp_path / "small"
    synth.generate(100, 11, small)
    big_lines = (out / "Patient.ndjson").read_text(encoding="utf-8").splitlines()
    assert (small / "Patient.ndjson").read_text(encoding="utf-8").splitlines() == big_lines[:100]


def test_anchor_moves_the_dates(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synth.generate(20, 3, a)
    synth.generate(20, 3, b, anchor=date(2027, 1, 1))
    assert _files(a)["Condition.ndjson"] != _files(b)["Condition.ndjson"]


def test_every_line_is_json_with_a_unique_stable_id(pop):
    out, _ = pop
    seen = set()
    for r in _lines(out):
        rid = r["id"]
        assert (r["resourceType"], rid) not in seen
        seen.add((r["resourceType"], rid))
        assert len(rid) <= 64 and all(ch.isalnum() or ch == "-" for ch in rid)
        if r["resourceType"] == "Patient":
            assert rid.startswith("s11-") and rid.count("-") == 1
        elif r["resourceType"] == "Medication":
            assert rid.startswith("s11-med-")
        else:
            pid = r["subject"]["reference"].split("/", 1)[1]
            kind, k = rid[len(pid) + 1:].split("-")
            assert rid.startswith(pid + "-") and kind.isalpha() and k.isdigit()


def test_every_reference_resolves(pop):
    out, _ = pop
    resources = _lines(out)
    present = {f"{r['resourceType']}/{r['id']}" for r in resources}
    refs = [ref for r in resources for ref in _references(r, [])]
    assert refs
    assert {ref.split("/")[0] for ref in refs} == {"Patient", "Encounter", "Medication"}
    missing = [ref for ref in refs if ref not in present]
    assert not missing, missing[:5]


def test_resources_per_patient_about_20_with_spread(tmp_path):
    counts = synth.generate(1000, 5, tmp_path / "p")
    per_patient = counts["resources_total"] / counts["patients"]
    assert 16 <= per_patient <= 25, per_patient
    sizes = Counter()
    for r in _lines(tmp_path / "p"):
        if r["resourceType"] != "Medication":
            sizes[r["subject"]["reference"] if r["resourceType"] != "Patient" else f"Patient/{r['id']}"] += 1
    values = sorted(sizes.values())
    assert values[0] <= 5 and values[-1] >= 80  # a long tail, not 20 for everyone
    assert values[len(values) // 2] < per_patient  # median below mean: skewed like real records


def test_prevalence_is_honoured(tmp_path):
    n = 2000
    counts = synth.generate(n, 21, tmp_path / "p")
    flags = counts["flags"]
    assert 0.08 <= flags["target"] / n <= 0.12
    for key in ("sle", "ln", "ssc", "dm", "nmosd"):
        assert flags[f"target:{key}"] > 0
    assert sum(flags[f"target:{k}"] for k in ("sle", "ln", "ssc", "dm", "nmosd")) == flags["target"]
    assert 0.015 <= flags["neuro"] / n <= 0.05
    assert 0.015 <= flags["cardiac"] / n <= 0.05
    assert 0.01 <= flags["hbv"] / n <= 0.035
    # the data itself carries the target diagnoses (not only the counters)
    from fhir_matcher.trial import load_trial

    trial = load_trial()
    lib = trial.valuesets
    targets = trial.criterion("inc-diagnosis").params["valuesets"]
    with_target = set()
    with (tmp_path / "p" / "Condition.ndjson").open(encoding="utf-8") as fh:
        for line in fh:
            c = json.loads(line)
            status = c["verificationStatus"]["coding"][0]["code"]
            if status not in ("entered-in-error", "refuted") and lib.match(c["code"], targets):
                with_target.add(c["subject"]["reference"])
    assert abs(len(with_target) - flags["target"]) <= flags["target"] * 0.05


def test_prevalence_overrides(tmp_path):
    counts = synth.generate(400, 2, tmp_path / "p", prevalence={"target": 0.5, "hiv": 0.0, "deceased": 0})
    assert 0.4 <= counts["flags"]["target"] / 400 <= 0.6
    assert "hiv" not in counts["flags"] and "deceased" not in counts["flags"]


def test_bad_options_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown prevalence key"):
        synth.generate(10, 1, tmp_path / "a", prevalence={"tagret": 0.1})
    with pytest.raises(ValueError, match="between 0 and 1"):
        synth.generate(10, 1, tmp_path / "b", prevalence={"target": 1.5})
    with pytest.raises(ValueError, match="at least 1"):
        synth.generate(0, 1, tmp_path / "c")
    with pytest.raises(ValueError, match="seed"):
        synth.generate(10, -1, tmp_path / "d")
    with pytest.raises(ValueError, match="not a number"):
        synth.parse_prevalence("target=lots")
    with pytest.raises(ValueError, match="KEY=P"):
        synth.parse_prevalence("target")
    assert synth.parse_prevalence("target=0.1, hbv_resolved=0.03,") == {"target": 0.1, "hbv-resolved": 0.03}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="did not write"):
        synth.generate(10, 1, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        synth.generate(10, 1, a_file)


def test_rerun_replaces_an_earlier_output(tmp_path):
    out = tmp_path / "o"
    synth.generate(120, 1, out, bundles=True)
    assert len(list(out.glob("bundle-*.json"))) == 3
    synth.generate(30, 1, out)  # NDJSON now: the old bundles must not linger
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.ndjson" for t in synth.NDJSON_TYPES)


# ---------------------------------------------------------------- FHIR validity


def test_resources_are_valid_fhir(pop):
    from fhir.resources.R4B import get_fhir_model_class

    out, _ = pop
    resources = _lines(out)
    sample = resources[::3] + [r for r in resources if r["resourceType"] in ("Patient", "Medication", "Procedure")]
    for r in sample:
        get_fhir_model_class(r["resourceType"]).model_validate(r)


def test_bundles_are_valid_transactions_whose_urns_resolve(tmp_path):
    from fhir.resources.R4B import get_fhir_model_class

    out = tmp_path / "b"
    counts = synth.generate(120, 4, out, bundles=True)
    files = sorted(out.iterdir())
    assert [p.name for p in files] == ["bundle-0001.json", "bundle-0002.json", "bundle-0003.json"]
    assert counts["files"] == 3 and counts["resources"]["Bundle"] == 3
    patients = 0
    total = 0
    for f in files:
        bundle = json.loads(f.read_text(encoding="utf-8"))
        get_fhir_model_class("Bundle").model_validate(bundle)
        assert bundle["type"] == "transaction"
        urls = {e["fullUrl"] for e in bundle["entry"]}
        assert len(urls) == len(bundle["entry"])
        for e in bundle["entry"]:
            res = e["resource"]
            assert e["fullUrl"].startswith("urn:uuid:")
            assert e["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
            for ref in _references(res, []):
                assert ref.startswith("urn:uuid:") and ref in urls, ref
        patients += sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        total += len(bundle["entry"])
    assert patients == 120
    assert total == counts["resources_total"]
    # the same population as NDJSON, apart from the references
    ndjson = synth.generate(120, 4, tmp_path / "n")["resources"]
    assert {k: v for k, v in ndjson.items() if k != "Medication"} == \
        {k: v for k, v in counts["resources"].items() if k not in ("Medication", "Bundle")}


def test_bundles_are_deterministic(tmp_path):
    synth.generate(60, 9, tmp_path / "a", bundles=True)
    synth.generate(60, 9, tmp_path / "b", bundles=True)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


# ---------------------------------------------------------------- the codes really match


@pytest.fixture(scope="module")
def library():
    from fhir_matcher.trial import load_trial

    return load_trial().valuesets


TARGET_SETS = ["target-sle", "target-immune-nephritis", "target-systemic-sclerosis", "target-dermatomyositis", "target-nmosd"]
EXCLUSION_SETS = {
    "epilepsy": "excl-epilepsy", "stroke": "excl-cerebral-ischaemia", "tbi": "excl-brain-injury", "ich": "excl-cerebral-haemorrhage",
    "longqt": "excl-long-qt", "af": "excl-severe-arrhythmia", "hf": "excl-severe-heart-disease", "pregnancy": "excl-pregnancy",
    "hiv": "excl-hiv", "hbv": "excl-hepatitis-b", "hcv": "excl-hepatitis-c",
}
CONDITION_SETS = {"sle": ["target-sle"], "ln": ["target-immune-nephritis", "target-sle"], "ssc": ["target-systemic-sclerosis"],
                  "dm": ["target-dermatomyositis"], "nmosd": ["target-nmosd"], **{k: [v] for k, v in EXCLUSION_SETS.items()}}
CLINICAL_SETS = TARGET_SETS + list(EXCLUSION_SETS.values()) + ["excl-consciousness", "excl-lactation", "cell-therapy-gene-modified"]
DRUG_SETS = {"glucocorticoid": "drug-glucocorticoids", "immunosuppressant": "drug-immunosuppressants",
             "immunomodulator": "drug-immunomodulators", "biologic": "drug-biologics"}
LAB_SETS = {"lym": "lab-lymphocytes", "neu": "lab-neutrophils", "hb": "lab-hemoglobin", "plt": "lab-platelets", "cre": "lab-creatinine",
            "alt": "lab-alt", "ast": "lab-ast", "tbil": "lab-bilirubin-total", "qtc": "lab-qtc"}


def test_every_diagnosis_code_matches_its_value_set(library):
    for key, per_style in synth.CONDITIONS.items():
        for style, variants in per_style.items():
            for concept in variants:
                assert library.match(concept, CONDITION_SETS[key]), (key, style, concept)
        en, zh = synth.TEXT[key]
        for text in (en, zh):
            assert library.match({"text": text}, CONDITION_SETS[key]), (key, text)


def test_noise_and_decoys_match_nothing_clinical(library):
    for key, per_style in synth.NOISE.items():
        for style, variants in per_style.items():
            for concept in variants:
                assert not library.match(concept, CLINICAL_SETS), (key, style, library.match(concept, CLINICAL_SETS))
    for key, (en, zh) in synth.TEXT.items():
        if key in synth.NOISE:
            assert not library.match({"text": en}, CLINICAL_SETS) and not library.match({"text": zh}, CLINICAL_SETS)
    for concept in synth.NOISE_PROCEDURES:
        assert not library.match(concept, CLINICAL_SETS)
    for per_style in synth.NOISE_MEDS.values():
        for concept in per_style.values():
            assert not library.match(concept, list(DRUG_SETS.values()) + ["cell-therapy-gene-modified"]), concept


def test_every_drug_matches_its_class(library):
    for key, spec in synth.DRUGS.items():
        for style in ("us", "eu", "cn"):
            for concept, _strength, _shared in spec[style]:
                found = {m.concept.valueset for m in library.match(concept, list(DRUG_SETS.values()))}
                if spec["class"] is None:
                    assert not found, (key, style, found)  # inhaled budesonide is in no class
                else:
                    assert found == {DRUG_SETS[spec["class"]]}, (key, style, concept, found)
    for key, (concept, _form) in synth.SHARED_MEDS.items():
        assert bool(library.match(concept, list(DRUG_SETS.values()))) == (key not in synth.NOISE_SHARED.values()), key
    inhaled = synth.ROUTES["inh"]
    for style in ("us", "eu", "cn"):
        assert library.match(inhaled[style], ["route-non-systemic"]), style
        assert not library.match(synth.ROUTES["oral"][style], ["route-non-systemic"])


def test_cell_therapy_codes_match(library):
    for key, (_rtype, concept) in synth.CART.items():
        assert library.match(concept, ["cell-therapy-gene-modified"]), key


def test_lab_codes_match_and_units_convert(library):
    from fhir_matcher.trial import load_trial

    trial = load_trial()
    quantity = {"lym": "cell-count", "neu": "cell-count", "plt": "cell-count", "hb": "hemoglobin", "cre": "creatinine",
                "alt": "enzyme-activity", "ast": "enzyme-activity", "tbil": "bilirubin", "qtc": "qt-interval"}
    canonical = {"lym": 1.5, "neu": 3.0, "plt": 200, "hb": 120, "cre": 80, "alt": 30, "ast": 30, "tbil": 12, "qtc": 420}
    units = default_units()
    variants = [(a, code, unit) for a, per_style in synth.LABS.items() for codes, unit_variants in per_style.values()
                for code in codes for unit in unit_variants]
    code, factor, decimals, unit = synth.HB_MMOL
    variants.append(("hb", code, (1, factor, decimals, unit)))
    for a, code, (_w, factor, decimals, unit) in variants:
        assert library.match(code, [LAB_SETS[a]]), (a, code)
        others = [s for k, s in LAB_SETS.items() if s != LAB_SETS[a]]
        assert not library.match(code, others), (a, code)
        spec = trial.quantities[quantity[a]]
        reported = round(canonical[a] * factor, decimals)
        back = units.convert(reported, unit.get("code"), unit.get("unit"), spec)
        assert back == pytest.approx(canonical[a], rel=0.03), (a, unit)
    for key, per_style in synth.SEROLOGY.items():
        target = {"hbsag": "lab-hbsag", "hiv": "lab-hiv-test", "hcg": "lab-hcg"}[key]
        for concept in per_style.values():
            assert library.match(concept, [target]), (key, concept)
    for concept in synth.HBV_DNA.values():
        assert library.match(concept, ["lab-hbv-dna"])
    for concept in synth.HCV_RNA.values():
        assert library.match(concept, ["lab-hcv-rna"])
    assert library.match(synth.PREG_STATUS, ["lab-pregnancy-status"])
    for style in ("us", "eu", "cn"):
        for value, vs in ((synth.POSITIVE[style], "result-positive"), (synth.NEGATIVE[style], "result-negative")):
            concept = value.get("valueCodeableConcept") or {"text": value["valueString"]}
            assert library.match(concept, [vs]), (style, value)
    for code in synth.VITALS.values():
        assert not library.match(code, list(LAB_SETS.values()))


def test_data_is_realistically_imperfect(pop):
    out, _ = pop
    obs = [r for r in _lines(out) if r["resourceType"] == "Observation"]
    statuses = Counter(o["status"] for o in obs)
    assert statuses["final"] > 0.9 * len(obs)
    assert statuses["preliminary"] and statuses["entered-in-error"]
    quantities = [o["valueQuantity"] for o in obs if "valueQuantity" in o]
    assert any("comparator" in q for q in quantities)
    assert any("unit" not in q for q in quantities)
    assert any(q.get("unit") in ("x10^9/L", "×10⁹/L") and "code" not in q for q in quantities)
    assert any("referenceRange" in o for o in obs) and any(o["code"].get("coding", [{}])[0].get("code") == "1742-6" and "referenceRange" not in o for o in obs)
    systems = {c["system"] for r in _lines(out) if r["resourceType"] == "Condition" for c in r["code"].get("coding", [])}
    assert {synth.SCT, synth.ICDCM, synth.ICD10, synth.ICDCN} <= systems
    conditions = [r for r in _lines(out) if r["resourceType"] == "Condition"]
    assert any("coding" not in c["code"] for c in conditions)  # text-only diagnoses
    meds = [r for r in _lines(out) if r["resourceType"] in ("MedicationStatement", "MedicationRequest")]
    assert any("medicationReference" in m for m in meds)
    dosages = [d for m in meds for d in m.get("dosage", m.get("dosageInstruction", []))]
    assert any(d.get("timing", {}).get("repeat", {}).get("frequency", 0) > 1 for d in dosages)
    patients = [r for r in _lines(out) if r["resourceType"] == "Patient"]
    births = sorted(p["birthDate"] for p in patients if "birthDate" in p)
    assert births[0] < "1950" and births[-1] > "2008-11-24"  # the elderly and some minors
    styles = Counter(p["identifier"][0]["system"] for p in patients)
    assert len(styles) == 3


# ---------------------------------------------------------------- CLI and end to end


def test_cli_parser_and_run(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    synth.add_parser(sub)
    args = parser.parse_args(["synth", "--patients", "25", "--seed", "3", "--out", str(tmp_path / "o"),
                              "--prevalence", "target=0.5", "--start-date", "2026-01-31"])
    assert args.command == "synth" and args.start_date == date(2026, 1, 31)
    assert synth.run(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("synth: 25 patients,") and "8 files" in line and "\n" not in line
    args = parser.parse_args(["synth", "--patients", "5", "--out", str(tmp_path / "b"), "--bundles"])
    assert args.seed == 0 and args.start_date == ANCHOR and args.prevalence is None
    assert synth.run(args) == 0
    assert (tmp_path / "b" / "bundle-0001.json").exists()
    with pytest.raises(ValueError):
        synth.run(parser.parse_args(["synth", "--patients", "5", "--out", str(tmp_path / "c"), "--prevalence", "nope=1"]))


def test_engine_screens_it_with_every_status(tmp_path):
    from fhir_matcher.cli import main

    data, out = tmp_path / "data", tmp_path / "out"
    counts = synth.generate(1000, 1, data)
    rc = main(["screen", "--source", str(data), "--as-of", "2026-11-24", "--out", str(out), "-q"])
    assert rc in (0, 3)
    results = [json.loads(line) for line in (out / "screening.ndjson").read_text(encoding="utf-8").splitlines()]
    statuses = Counter(r["status"] for r in results)
    assert statuses["candidate"] > 0 and statuses["potential-candidate"] > 0 and statuses["ineligible"] > 0, statuses
    # the cohort is the target patients (plus, at most, a few whose only diagnosis was refuted)
    assert counts["flags"]["target"] <= len(results) <= counts["flags"]["target"] + 10
    # exclusions and lab thresholds really fire, not only the diagnosis gate
    met = Counter(cid for r in results for cid, c in r["criteria"].items() if c["result"] == "met" and cid.startswith("exc-"))
    not_met = Counter(cid for r in results for cid, c in r["criteria"].items() if c["result"] == "not-met" and cid.startswith("inc-"))
    assert met and not_met


def test_bundles_screen_like_ndjson(tmp_path):
    from fhir_matcher.cli import main

    for kind in ("n", "b"):
        synth.generate(200, 8, tmp_path / f"data-{kind}", bundles=kind == "b")
        assert main(["screen", "--source", str(tmp_path / f"data-{kind}"), "--as-of", "2026-11-24",
                     "--out", str(tmp_path / f"out-{kind}"), "-q"]) in (0, 3)

    def statuses(kind):
        lines = (tmp_path / f"out-{kind}" / "screening.ndjson").read_text(encoding="utf-8").splitlines()
        return {(r := json.loads(line))["patient"]: r["status"] for line in lines}

    assert statuses("n") == statuses("b")
