"""Unit normalization: every notation criteria.md names, molar/mass forms, and refusals."""

import pytest

from fhir_matcher.normalize.units import Conversion, QuantitySpec, UnitError, UnitSystem

CELLS = QuantitySpec("cell count", "10^9/L")
HB = QuantitySpec("hemoglobin", "g/L", "16.114 g/mmol")
CREA = QuantitySpec("creatinine", "umol/L", "113.12 g/mol")
BILI = QuantitySpec("bilirubin", "umol/L", "584.66 g/mol")
ENZ = QuantitySpec("enzyme activity", "U/L", equivalent_units=(("[IU]/L", "U/L"),))
ENZ_UNDECLARED = QuantitySpec("enzyme activity", "U/L")
EGFR = QuantitySpec("eGFR", "mL/min/{1.73_m2}", decimals=0)
UACR = QuantitySpec("albumin/creatinine", "mg/g", "113.12 g/mol")
HBA1C = QuantitySpec("HbA1c", "%", decimals=1, conversions=(Conversion("mmol/mol", 0.09148, 2.152, 1),))
HBA1C_BARE = QuantitySpec("HbA1c", "%", decimals=1)
K = QuantitySpec("potassium", "mmol/L", equivalent_units=(("meq/L", "mmol/L"),))
CA = QuantitySpec("calcium", "mmol/L")
SBP = QuantitySpec("systolic blood pressure", "mm[Hg]", decimals=0)
QT = QuantitySpec("interval", "ms")


@pytest.fixture(scope="module")
def units():
    return UnitSystem()


@pytest.mark.parametrize(
    "value, unit, expected",
    [
        (1.2, "10*9/L", 1.2),
        (1.2, "10^9/L", 1.2),
        (1.2, "G/L", 1.2),
        (1.2, "10*3/uL", 1.2),
        (1.2, "10*3/mm3", 1.2),
        (1200, "/uL", 1.2),
        (1200, "/mm3", 1.2),
        (1200, "cells/uL", 1.2),
        (1200, "{cells}/uL", 1.2),
        (1.2, "x10^9/L", 1.2),
        (1.2, "×10⁹/L", 1.2),
        (1.2, "x10E9/L", 1.2),
        (1.2, "K/uL", 1.2),
        (1.2, "10³/µL", 1.2),
    ],
)
def test_cell_counts(units, value, unit, expected):
    assert units.convert(value, unit, None, CELLS) == pytest.approx(expected)


def test_unit_text_used_when_code_absent(units):
    assert units.convert(800, None, "cells/uL", CELLS) == pytest.approx(0.8)


def test_code_preferred_over_text_and_text_is_fallback(units):
    assert units.convert(5, "g/dL", "g/L", HB) == pytest.approx(50)
    assert units.convert(5, "not-a-unit", "g/dL", HB) == pytest.approx(50)


@pytest.mark.parametrize(
    "value, unit, spec, expected",
    [
        (6.0, "g/dL", HB, 60.0),
        (60, "g/L", HB, 60.0),
        (3.724, "mmol/L", HB, 60.01),  # x16.114 (monomer)
        (2.0, "mg/dL", CREA, 176.8),  # x88.40 (113.12 g/mol): the protocol's 176.8 umol/L
        (1.0, "mg/dL", CREA, 88.40),
        (176.8, "umol/L", CREA, 176.8),
        (176.8, "μmol/L", CREA, 176.8),
        (3.0, "mg/dL", BILI, 51.31),  # x17.10
        (51, "umol/L", BILI, 51.0),
        (120, "U/L", ENZ, 120),
        (120, "IU/L", ENZ, 120),
        (120, "[IU]/L", ENZ, 120),
        (2, "ukat/L", ENZ, 120),  # x60
        (0.47, "s", QT, 470),
        (470, "ms", QT, 470),
    ],
)
def test_conversions(units, value, unit, spec, expected):
    assert units.convert(value, unit, None, spec) == pytest.approx(expected, abs=0.01)


def test_no_unit_is_missing(units):
    with pytest.raises(UnitError) as e:
        units.convert(1.0, None, None, CELLS)
    assert e.value.kind == "missing"


def test_unknown_unit_is_refused(units):
    with pytest.raises(UnitError) as e:
        units.convert(1.0, "blargs/L", None, CELLS)
    assert e.value.kind == "unknown"


@pytest.mark.parametrize("unit", ["%", "g/L", "mmol/L"])
def test_other_dimension_is_incompatible(units, unit):
    with pytest.raises(UnitError) as e:
        units.convert(1.0, unit, None, CELLS)
    assert e.value.kind == "incompatible"


def test_doses_in_mg(units):
    assert units.to_mg(1, "g", None) == 1000
    assert units.to_mg(500, "ug", None) == pytest.approx(0.5)
    assert units.to_mg(500, None, "mcg") == pytest.approx(0.5)
    assert units.to_mg(4, None, "毫克") == 4


@pytest.mark.parametrize(
    "value, code, text, spec, expected",
    [
        (45, "mL/min/{1.73_m2}", None, EGFR, 45),  # UCUM annotation: per 1.73 m2
        (45, None, "mL/min/1.73m2", EGFR, 45),
        (45, None, "mL/min/1.73 m²", EGFR, 45),
        (45, "mL/min", None, EGFR, 45),
        (120, "mm[Hg]", None, SBP, 120),
        (120, None, "mmHg", SBP, 120),
        (16, "kPa", None, SBP, 120.01),
        (30, "mg/mmol", None, UACR, 265.2),  # x8.84 through creatinine's molar mass
        (0.5, "g/g", None, UACR, 500),
        (0.5, "mg/mg", None, UACR, 500),
        (300, "mg/g{creat}", None, UACR, 300),
        (5.6, "meq/L", None, K, 5.6),  # declared: monovalent
        (5.6, None, "mEq/L", K, 5.6),
        (53, "mmol/mol", None, HBA1C, 7.0),  # declared affine: 0.09148 x + 2.152
        (7.1, "%", None, HBA1C, 7.1),
        (55, "[IU]/L", None, ENZ, 55),
    ],
)
def test_ucum_codes_and_declared_equivalences(units, value, code, text, spec, expected):
    assert round(units.convert(value, code, text, spec), 2) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize(
    "code, spec, why",
    [
        ("mmol/mol", HBA1C_BARE, "IFCC and NGSP are two scales: no declared conversion, no conversion"),
        ("%", UACR, "a pure number is not a mass ratio"),
        ("mmol/mol", UACR, "an amount ratio is not a mass ratio"),
        ("mg/dL", UACR, "a mass concentration is not a ratio"),
        ("meq/L", CA, "equivalents need a declared valence"),
        ("[IU]/L", ENZ_UNDECLARED, "international units are not enzyme units unless declared"),
        ("[IU]/L", CELLS, "an arbitrary unit is never a count"),
    ],
)
def test_scales_that_share_a_dimension_are_never_one_quantity(units, code, spec, why):
    with pytest.raises(UnitError) as e:
        units.convert(1.0, code, None, spec)
    assert e.value.kind == "incompatible", why


def test_affine_conversion_carries_its_rounding(units):
    c = units.converter("mmol/mol", None, HBA1C)
    assert c.decimals == 1 and c(53) == pytest.approx(7.00044)


@pytest.mark.parametrize("unit", ["mL/min/{1.73_m2}", "mm[Hg]", "10*9/L", "[IU]/L", "meq/L", "mg/g{creat}", "%", "{ratio}"])
def test_ucum_units_parse(units, unit):
    units.check(unit)


@pytest.mark.parametrize("unit", ["blargs", "mg//L", "10^^9", ""])
def test_bad_units_are_named(units, unit):
    with pytest.raises(UnitError):
        units.check(unit)
