"""The general mechanism for any trial: ranges, logic, UCUM units, components, windows, use over time.

A site's trial is written here as a file with its own value sets (nothing bundled), and each
kind is checked at its edges. As-of 2026-11-24 throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builders import LOINC, SCT, UCUM, cc, condition, med, obs, patient, procedure, run
from fhir_matcher.criteria.kinds.logic import MANUAL
from fhir_matcher.trial import TrialError, load_trial

ATC = "http://www.whocc.no/atc"


def _vs(vs_id: str, system: str, codes: dict[str, str], extra_names: dict[str, list[str]] | None = None) -> dict:
    contains = []
    for code, display in codes.items():
        entry = {"system": system, "code": code, "display": display}
        if extra_names and code in extra_names:
            entry["designation"] = [{"value": n} for n in extra_names[code]]
        contains.append(entry)
    return {
        "resourceType": "ValueSet", "id": vs_id, "url": f"https://site.example/ValueSet/{vs_id}", "status": "active",
        "title": vs_id, "compose": {"include": [{"system": system, "concept": [{"code": c, "display": d} for c, d in codes.items()]}]},
        "expansion": {"timestamp": "2026-11-01T00:00:00Z", "contains": contains},
    }


VALUESETS = [
    _vs("site-t2d", SCT, {"44054006": "Diabetes mellitus type 2"}),
    _vs("site-hba1c", LOINC, {"4548-4": "Hemoglobin A1c/Hemoglobin.total in Blood", "59261-8": "Hemoglobin A1c/Hemoglobin.total in Blood by IFCC protocol"}),
    _vs("site-egfr", LOINC, {"33914-3": "Glomerular filtration rate/1.73 sq M.predicted", "62238-1": "eGFR CKD-EPI"}),
    _vs("site-uacr", LOINC, {"9318-7": "Albumin/Creatinine [Mass Ratio] in Urine", "14959-1": "Microalbumin/Creatinine [Mass Ratio] in Urine"}),
    _vs("site-potassium", LOINC, {"2823-3": "Potassium [Moles/volume] in Serum or Plasma"}),
    _vs("site-sbp", LOINC, {"8480-6": "Systolic blood pressure"}),
    _vs("site-stroke", SCT, {"422504002": "Ischemic stroke"}, {"422504002": ["ischemic stroke"]}),
    _vs("site-acute-stroke", SCT, {"230690007": "Acute ischemic stroke"}, {"230690007": ["acute ischemic stroke"]}),
    _vs("site-pregnancy", SCT, {"77386006": "Pregnancy"}),
    _vs("site-metformin", ATC, {"A10BA02": "metformin"}),
    _vs("site-acei", ATC, {"C09AA": "ACE inhibitors, plain"}),
    _vs("site-dialysis", SCT, {"108241001": "Dialysis procedure"}),
    _vs("site-t1d", SCT, {"46635009": "Diabetes mellitus type 1"}),
]

TRIAL = """
[trial]
id = "site-t2d-ckd"
title = "A site's type 2 diabetes and CKD study"
valueset_dirs = ["vs"]

[quantities.hba1c]
unit = "%"
decimals = 1
  [[quantities.hba1c.conversions]]
  from = "mmol/mol"
  scale = 0.09148
  offset = 2.152
  decimals = 1
[quantities.egfr]
unit = "mL/min/{1.73_m2}"
decimals = 0
[quantities.uacr]
unit = "mg/g"
molar_mass = "113.12 g/mol"
decimals = 0
[quantities.potassium]
unit = "mmol/L"
decimals = 1
equivalent_units = { "meq/L" = "mmol/L" }
[quantities.sbp]
unit = "mm[Hg]"
decimals = 0

[[criteria]]
id = "inc-age"
type = "inclusion"
kind = "age"
min_years = 18
max_years = 75

[[criteria]]
id = "inc-age-under-80"
type = "inclusion"
kind = "age"
max_years = 80
max_inclusive = false

[[criteria]]
id = "inc-t2d"
type = "inclusion"
kind = "condition"
valuesets = ["site-t2d"]

[[criteria]]
id = "inc-hba1c"
type = "inclusion"
kind = "lab"
valueset = "site-hba1c"
quantity = "hba1c"
range = { min = 7.0, max = 10.5 }
window_days = 90

[[criteria]]
id = "inc-egfr"
type = "inclusion"
kind = "lab"
valueset = "site-egfr"
quantity = "egfr"
range = { min = 25, max = 75, max_inclusive = false }
window_days = 90

[[criteria]]
id = "inc-uacr"
type = "inclusion"
kind = "lab"
valueset = "site-uacr"
quantity = "uacr"
op = ">="
threshold = 300
window_days = 90

[[criteria]]
id = "exc-potassium"
type = "exclusion"
kind = "lab"
valueset = "site-potassium"
quantity = "potassium"
op = ">"
threshold = 5.5
window_days = 30

[[criteria]]
id = "inc-sbp"
type = "inclusion"
kind = "lab"
valueset = "site-sbp"
quantity = "sbp"
op = ">="
threshold = 95
window_days = 30

[[criteria]]
id = "inc-metformin"
type = "inclusion"
kind = "medication-use"
valuesets = ["site-metformin"]
min_months = 3
max_gap_days = 7

[[criteria]]
id = "exc-stroke"
type = "exclusion"
kind = "condition"
valuesets = ["site-stroke"]
window_months = 6

[[criteria]]
id = "exc-pregnancy"
type = "exclusion"
kind = "condition"
valuesets = ["site-pregnancy"]
applies_to = { sex = "female" }

[[criteria]]
id = "exc-dialysis"
type = "exclusion"
kind = "exposure"
valuesets = ["site-dialysis"]
medications = false
procedures = true
statuses = ["completed"]
met_note = "dialysis excludes"

[[criteria]]
id = "inc-kidney-treatment"
type = "inclusion"
kind = "at-least"
count = 1
  [[criteria.rules]]
  kind = "medication-use"
  valuesets = ["site-acei"]
  min_days = 28
  [[criteria.rules]]
  kind = "all-of"
    [[criteria.rules.rules]]
    kind = "lab"
    valueset = "site-uacr"
    quantity = "uacr"
    op = ">="
    threshold = 1000
    window_days = 90
    [[criteria.rules.rules]]
    kind = "not"
      [[criteria.rules.rules.rules]]
      kind = "condition"
      valuesets = ["site-t1d"]
"""


@pytest.fixture(scope="module")
def site_trial(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "vs").mkdir()
    for vs in VALUESETS:
        (root / "vs" / f"{vs['id']}.json").write_text(json.dumps(vs), encoding="utf-8")
    (root / "trial.toml").write_text(TRIAL, encoding="utf-8")
    return load_trial(root / "trial.toml")


def outcome(trial, cid, *resources, **kw):
    return run(trial, *resources, **kw).criteria[cid]


def res(trial, cid, *resources, **kw):
    return outcome(trial, cid, *resources, **kw).result


# ---------------------------------------------------------------- age


@pytest.mark.parametrize("birth, expected", [
    ("2008-11-24", "met"),  # 18th birthday today: 18, and 18 is in 18-75
    ("2008-11-25", "not-met"),  # 17 until tomorrow
    ("1951-11-25", "met"),  # 74 (75 tomorrow)
    ("1951-11-24", "met"),  # 75 today: max inclusive
    ("1950-11-25", "met"),  # 75, 76 tomorrow
    ("1950-11-24", "not-met"),  # 76 today
    ("2008", "unknown"),  # 17 or 18
    ("1990", "met"),
])
def test_age_range_both_bounds_inclusive(site_trial, birth, expected):
    assert res(site_trial, "inc-age", patient(birth=birth)) == expected


@pytest.mark.parametrize("birth, expected", [
    ("1946-11-25", "met"),  # 79
    ("1946-11-24", "not-met"),  # 80 today: "under 80" is exclusive
])
def test_age_exclusive_upper_bound(site_trial, birth, expected):
    assert res(site_trial, "inc-age-under-80", patient(birth=birth)) == expected


# ---------------------------------------------------------------- ranges, UCUM units, declared conversions


@pytest.mark.parametrize("value, code, unit, expected", [
    (7.0, "%", None, "met"),  # lower bound inclusive
    (10.5, "%", None, "met"),
    (10.6, "%", None, "not-met"),
    (6.9, "%", None, "not-met"),
    (53, "mmol/mol", None, "met"),  # IFCC 53 = NGSP 7.0 %
    (52, "mmol/mol", None, "not-met"),  # = 6.9 %
    (91, "mmol/mol", None, "met"),  # = 10.5 %
    (92, "mmol/mol", None, "not-met"),  # = 10.6 %, never read as 9.2 %
])
def test_hba1c_range_in_both_scales(site_trial, value, code, unit, expected):
    assert res(site_trial, "inc-hba1c", obs("4548-4", value, code=code, unit=unit)) == expected


def test_hba1c_reason_shows_the_converted_value(site_trial):
    o = outcome(site_trial, "inc-hba1c", obs("4548-4", 53, code="mmol/mol"))
    assert o.value == 7.0 and o.unit == "%" and "in 7-10.5" in o.reason


@pytest.mark.parametrize("value, code, unit, expected", [
    (25, "mL/min/{1.73_m2}", None, "met"),
    (24, "mL/min/{1.73_m2}", None, "not-met"),
    (74, "mL/min/{1.73_m2}", None, "met"),
    (75, "mL/min/{1.73_m2}", None, "not-met"),  # upper bound exclusive
    (50, None, "mL/min/1.73m2", "met"),  # free text
    (50, None, "mL/min/1.73 m²", "met"),
])
def test_egfr_with_the_ucum_annotation(site_trial, value, code, unit, expected):
    assert res(site_trial, "inc-egfr", obs("62238-1", value, code=code, unit=unit)) == expected


@pytest.mark.parametrize("value, code, expected", [
    (300, "mg/g", "met"),
    (299, "mg/g", "not-met"),
    (0.3, "g/g", "met"),
    (0.3, "mg/mg", "met"),
    (34, "mg/mmol", "met"),  # x8.84 = 300.6
    (33.8, "mg/mmol", "not-met"),  # = 298.8 (compared at whole mg/g: 299)
])
def test_uacr_ratios_through_creatinine_molar_mass(site_trial, value, code, expected):
    assert res(site_trial, "inc-uacr", obs("9318-7", value, code=code)) == expected


def test_a_mass_concentration_is_not_a_ratio(site_trial):
    o = outcome(site_trial, "inc-uacr", obs("9318-7", 30, code="mg/dL"))
    assert o.result == "unknown" and "mg/dL" in o.reason


@pytest.mark.parametrize("value, code, unit, expected", [
    (5.6, "meq/L", None, "met"),
    (5.6, None, "mEq/L", "met"),
    (5.5, None, "mEq/L", "not-met"),
    (5.5, "mmol/L", None, "not-met"),
])
def test_potassium_in_milliequivalents_by_declaration(site_trial, value, code, unit, expected):
    assert res(site_trial, "exc-potassium", obs("2823-3", value, code=code, unit=unit)) == expected


# ---------------------------------------------------------------- components


def _bp_panel(systolic, when="2026-11-20"):
    o = obs("85354-9", when=when)
    o["component"] = [
        {"code": cc(LOINC, "8480-6"), "valueQuantity": {"value": systolic, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
        {"code": cc(LOINC, "8462-4"), "valueQuantity": {"value": 70, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
    ]
    return o


def test_systolic_from_a_panel_component(site_trial):
    assert res(site_trial, "inc-sbp", _bp_panel(96)) == "met"
    assert res(site_trial, "inc-sbp", _bp_panel(94)) == "not-met"


def test_the_latest_of_panel_or_standalone_decides(site_trial):
    standalone = obs("8480-6", 120, code="mm[Hg]", when="2026-11-10")
    assert res(site_trial, "inc-sbp", standalone, _bp_panel(90, when="2026-11-20")) == "not-met"
    assert res(site_trial, "inc-sbp", obs("8480-6", 90, code="mm[Hg]", when="2026-11-01"), _bp_panel(110, when="2026-11-20")) == "met"


# ---------------------------------------------------------------- medication use over time

METFORMIN = cc(ATC, "A10BA02", "metformin")


@pytest.mark.parametrize("records, expected", [
    ([dict(start="2026-08-24")], "met"),  # exactly 3 months, ongoing
    ([dict(start="2026-08-25")], "not-met"),  # a day short
    ([dict(start="2025-01-01", end="2026-10-01", status="completed")], "not-met"),  # stopped: not current
    ([dict(start="2026-05-01", end="2026-09-30", status="completed"), dict(start="2026-10-05")], "met"),  # 4-day gap <= 7
    ([dict(start="2026-05-01", end="2026-09-30", status="completed"), dict(start="2026-10-15")], "not-met"),  # 14-day gap
    ([dict(start=None)], "unknown"),
    ([], "not-met"),
])
def test_medication_use_continuous_up_to_today(site_trial, records, expected):
    meds = []
    for r in records:
        m = med(METFORMIN, start=r["start"] or "2026-01-01", end=r.get("end"), status=r.get("status", "active"))
        if r["start"] is None:
            m.pop("effectivePeriod")
        meds.append(m)
    assert res(site_trial, "inc-metformin", *meds) == expected


def test_medication_use_from_requests(site_trial):
    req = med(METFORMIN, start="2026-06-01", rtype="MedicationRequest")
    assert res(site_trial, "inc-metformin", req) == "met"


# ---------------------------------------------------------------- conditions in a window, applies_to, statuses

STROKE = cc(SCT, "422504002", "Ischemic stroke")


@pytest.mark.parametrize("onset, expected", [
    ("2026-05-24", "met"),  # 6 calendar months back, both ends included
    ("2026-05-23", "not-met"),
    ("2026-11-01", "met"),
    (None, "unknown"),  # a qualifying condition with no date: cannot tell
])
def test_condition_recency(site_trial, onset, expected):
    assert res(site_trial, "exc-stroke", condition(STROKE, onset=onset)) == expected


def test_a_month_that_straddles_the_window_start_is_unknown(site_trial):
    assert res(site_trial, "exc-stroke", condition(STROKE, onset="2026-05")) == "unknown"  # 1-31 May; window from 24 May
    assert res(site_trial, "exc-stroke", condition(STROKE, onset="2026-06")) == "met"
    assert res(site_trial, "exc-stroke", condition(STROKE, onset="2026-04")) == "not-met"


def test_recency_falls_back_to_recorded_date(site_trial):
    c = condition(STROKE, onset=None)
    c["recordedDate"] = "2026-10-01"
    assert res(site_trial, "exc-stroke", c) == "met"


def test_a_text_matches_every_value_set_that_names_it(site_trial):
    # "acute ischemic stroke" is a longer name in another set: it must not hide "ischemic stroke"
    assert res(site_trial, "exc-stroke", condition(cc(text="Acute ischemic stroke"), onset="2026-10-01")) == "met"


def test_pregnancy_applies_to_females_only(site_trial):
    preg = condition(cc(SCT, "77386006"))
    assert res(site_trial, "exc-pregnancy", patient(gender="female"), preg) == "met"
    o = outcome(site_trial, "exc-pregnancy", patient(gender="male"), preg)
    assert o.result == "not-met" and "female" in o.reason
    assert res(site_trial, "exc-pregnancy", patient(gender=None), preg) == "met"  # unknown sex: evaluated
    assert res(site_trial, "exc-pregnancy", patient(gender="unknown"), preg) == "met"  # FHIR's "unknown": the same
    assert res(site_trial, "exc-pregnancy", patient(gender="other"), preg) == "not-met"


def test_procedure_status_filter_and_met_note(site_trial):
    dialysis = cc(SCT, "108241001")
    o = outcome(site_trial, "exc-dialysis", procedure(dialysis, when="2026-11-01"))
    assert o.result == "met" and o.reason.endswith("; dialysis excludes")
    assert res(site_trial, "exc-dialysis", procedure(dialysis, status="in-progress")) == "not-met"


# ---------------------------------------------------------------- nested logic in three values


def test_at_least_with_nested_all_of_and_not(site_trial):
    acei = cc(ATC, "C09AA05", "ramipril")
    t1d = condition(cc(SCT, "46635009"))
    high = obs("9318-7", 1200, code="mg/g")
    assert res(site_trial, "inc-kidney-treatment", med(acei, start="2026-10-01")) == "met"
    assert res(site_trial, "inc-kidney-treatment", high) == "met"  # all-of(uacr >= 1000, not T1D)
    assert res(site_trial, "inc-kidney-treatment", high, t1d) == "not-met"
    assert res(site_trial, "inc-kidney-treatment") == "unknown"  # no UACR: the all-of is open


def test_reasons_print_thresholds_as_written(site_trial):
    o = outcome(site_trial, "exc-potassium", obs("2823-3", 5.7, code="mmol/L"))
    assert "> 5.5" in o.reason


# ---------------------------------------------------------------- Kleene truth tables


def _logic_trial(tmp_path: Path, kind: str, extra: str = "") -> object:
    (tmp_path / "vs").mkdir(exist_ok=True)
    for vs in VALUESETS:
        (tmp_path / "vs" / f"{vs['id']}.json").write_text(json.dumps(vs), encoding="utf-8")
    rules = """
  [[criteria.rules]]
  kind = "condition"
  valuesets = ["site-t2d"]
  [[criteria.rules]]
  kind = "condition"
  valuesets = ["site-stroke"]
  window_months = 6
"""
    (tmp_path / "t.toml").write_text(f"""
[trial]
id = "logic"
valueset_dirs = ["vs"]
[[criteria]]
id = "x"
type = "inclusion"
kind = "{kind}"
{extra}
{rules}
""", encoding="utf-8")
    return load_trial(tmp_path / "t.toml")


T2D = cc(SCT, "44054006")
# operand values: A = T2D present (met) / absent (not-met); B = stroke recent (met), old (not-met), undated (unknown)
A_VALUES = {"met": [condition(T2D)], "not-met": []}
B_VALUES = {"met": [condition(STROKE, onset="2026-10-01")], "not-met": [condition(STROKE, onset="2020-01-01")], "unknown": [condition(STROKE, onset=None)]}
TABLES = {
    ("all-of", ""): {("met", "met"): "met", ("met", "not-met"): "not-met", ("met", "unknown"): "unknown",
                     ("not-met", "met"): "not-met", ("not-met", "not-met"): "not-met", ("not-met", "unknown"): "not-met"},
    ("any-of", ""): {("met", "met"): "met", ("met", "not-met"): "met", ("met", "unknown"): "met",
                     ("not-met", "met"): "met", ("not-met", "not-met"): "not-met", ("not-met", "unknown"): "unknown"},
    ("at-least", "count = 2"): {("met", "met"): "met", ("met", "not-met"): "not-met", ("met", "unknown"): "unknown",
                                ("not-met", "met"): "not-met", ("not-met", "not-met"): "not-met", ("not-met", "unknown"): "not-met"},
    ("at-most", "count = 1"): {("met", "met"): "not-met", ("met", "not-met"): "met", ("met", "unknown"): "unknown",
                               ("not-met", "met"): "met", ("not-met", "not-met"): "met", ("not-met", "unknown"): "met"},
}


@pytest.mark.parametrize("kind, extra", list(TABLES))
def test_kleene_truth_tables(tmp_path, kind, extra):
    trial = _logic_trial(tmp_path, kind, extra)
    for (a, b), want in TABLES[(kind, extra)].items():
        got = res(trial, "x", *A_VALUES[a], *B_VALUES[b])
        assert got == want, f"{kind} {extra}: {a}, {b} -> {got}, expected {want}"


def test_not_flips_and_keeps_unknown(tmp_path):
    (tmp_path / "vs").mkdir()
    for vs in VALUESETS:
        (tmp_path / "vs" / f"{vs['id']}.json").write_text(json.dumps(vs), encoding="utf-8")
    (tmp_path / "t.toml").write_text("""
[trial]
id = "logic-not"
valueset_dirs = ["vs"]
[[criteria]]
id = "x"
type = "inclusion"
kind = "not"
  [[criteria.rules]]
  kind = "condition"
  valuesets = ["site-stroke"]
  window_months = 6
""", encoding="utf-8")
    trial = load_trial(tmp_path / "t.toml")
    assert res(trial, "x", *B_VALUES["met"]) == "not-met"
    assert res(trial, "x", *B_VALUES["not-met"]) == "met"
    assert res(trial, "x", *B_VALUES["unknown"]) == "unknown"


def test_manual_rules_leave_a_group_manual(tmp_path):
    trial = _logic_trial(tmp_path, "all-of")
    # replace the second rule by a manual one
    text = (tmp_path / "t.toml").read_text(encoding="utf-8").replace('kind = "condition"\n  valuesets = ["site-stroke"]\n  window_months = 6', 'kind = "manual"')
    (tmp_path / "t.toml").write_text(text, encoding="utf-8")
    trial = load_trial(tmp_path / "t.toml")
    assert res(trial, "x", condition(T2D)) == MANUAL
    assert res(trial, "x") == "not-met"


# ---------------------------------------------------------------- the trial file is checked


@pytest.mark.parametrize("old, new, message", [
    ('unit = "mm[Hg]"', 'unit = "mm[Hgg]"', "[quantities.sbp] unit: unit 'mm[Hgg]' does not parse"),
    ("threshold = 5.5", 'threshold = "5.5"', "criterion exc-potassium: threshold: must be a number"),
    ("max_gap_days = 7", "max_gap_day = 7", "criterion inc-metformin: max_gap_day: unknown parameter"),
    ('valuesets = ["site-t2d"]', 'valuesets = ["site-t2dd"]', "criterion inc-t2d: value set: 'site-t2dd' not found"),
    ("count = 1", "count = 3", "criterion inc-kidney-treatment: count: 3 is more than the 2 rules"),
    ('kind = "not"', 'kind = "nott"', "criterion inc-kidney-treatment rule 2 rule 2: kind: unknown kind 'nott'"),
    ("range = { min = 7.0, max = 10.5 }", "range = { min = 10.5, max = 7.0 }", "criterion inc-hba1c: range: min 10.5 is above max 7.0"),
    ('applies_to = { sex = "female" }', 'applies_to = { sex = "woman" }', "criterion exc-pregnancy: applies_to: unknown sex(es) 'woman'"),
])
def test_every_mistake_is_named_with_file_criterion_and_field(tmp_path, site_trial, old, new, message):
    (tmp_path / "vs").mkdir()
    for vs in VALUESETS:
        (tmp_path / "vs" / f"{vs['id']}.json").write_text(json.dumps(vs), encoding="utf-8")
    assert old in TRIAL
    (tmp_path / "trial.toml").write_text(TRIAL.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(TrialError) as e:
        load_trial(tmp_path / "trial.toml")
    assert message in str(e.value) and str(tmp_path / "trial.toml") in str(e.value)
    assert "internal error" not in str(e.value)


def test_all_mistakes_are_reported_at_once(tmp_path):
    (tmp_path / "vs").mkdir()
    for vs in VALUESETS:
        (tmp_path / "vs" / f"{vs['id']}.json").write_text(json.dumps(vs), encoding="utf-8")
    bad = TRIAL.replace("threshold = 5.5", "threshold = []").replace("min_months = 3", "min_month = 3")
    (tmp_path / "trial.toml").write_text(bad, encoding="utf-8")
    with pytest.raises(TrialError) as e:
        load_trial(tmp_path / "trial.toml")
    assert "exc-potassium: threshold" in str(e.value) and "inc-metformin: min_month" in str(e.value)
