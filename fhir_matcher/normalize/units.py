"""Unit normalization on pint: one registry, per-analyte molar-mass contexts.

A lab value arrives with a UCUM code, with free unit text only, or both. ``UnitSystem``
turns either into a pint unit (after rewriting the notations hospitals use: ``10*9/L``,
``x10^9/L``, ``×10⁹/L``, ``G/L``, ``K/uL``, ``cells/uL``, ``μmol/L`` ...) and converts to
the canonical unit the trial names for that quantity. Molar and mass forms convert through
pint's ``chemistry`` context with the analyte's molar mass. Nothing is guessed: no unit, an
unknown unit or a unit of another dimension is reported as such.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import pint

_EXTRA_DEFINITIONS = [
    # Clinical chemistry writes IU/L and U/L interchangeably for enzyme activity.
    "international_unit = enzyme_unit = IU",
]


@dataclass(frozen=True)
class QuantitySpec:
    """A kind of quantity a criterion compares: its canonical unit and molar mass, if any."""

    name: str
    unit: str
    molar_mass: str | None = None
    decimals: int = 2  # converted values are compared at the precision a lab reports


class UnitError(Exception):
    """A value could not be converted; ``kind`` is missing, unknown or incompatible."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_SUPERSCRIPT_RUN = re.compile(r"[⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_POWER_OF_TEN = re.compile(r"10\s*(?:\*|\^|\*\*|e|E)\s*(-?\d+)")
_TEXT_REWRITES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\{[^}]*\}"), ""),  # UCUM annotations: {cells}/uL -> /uL
    (re.compile(r"\[(iu|IU)\]"), "IU"),
    (re.compile(r"\b(?:cells?|细胞)\b", re.I), ""),
    (re.compile(r"^\s*[x×*]\s*(?=10)"), ""),  # x10^9/L -> 10^9/L
    (re.compile(r"^G/L$"), "1e9/L"),  # giga-cells per litre
    (re.compile(r"^T/L$"), "1e12/L"),
    (re.compile(r"^(?:K|k|thou|thousand)\s*/", re.I), "1e3/"),
    (re.compile(r"(?:mcg)"), "ug"),
    (re.compile(r"\bcu\.?\s*mm\b|\bcmm\b|mm3\b|mm\^3"), "mm**3"),
    (re.compile(r"\bmsec\b"), "ms"),
    (re.compile(r"\bsec\b"), "s"),
    (re.compile(r"毫秒"), "ms"),
    (re.compile(r"秒"), "s"),
    (re.compile(r"升"), "L"),
    (re.compile(r"毫克"), "mg"),
]


def _rewrite(unit: str) -> str:
    # Superscripts first: NFKC would turn "10⁹" into "109".
    s = _SUPERSCRIPT_RUN.sub(lambda m: "^" + m.group(0).translate(_SUPERSCRIPTS), unit)
    s = unicodedata.normalize("NFKC", s)
    s = s.replace("μ", "u").replace("µ", "u").strip()
    for pattern, repl in _TEXT_REWRITES:
        s = pattern.sub(repl, s).strip()
    s = _POWER_OF_TEN.sub(lambda m: f"1e{m.group(1)}", s)
    s = re.sub(r"(1e-?\d+)\s*(?=[A-Za-z/])", r"\1 ", s)
    if s.startswith("/"):
        s = "1" + s
    return s


class UnitSystem:
    """Parses unit strings and converts values to a quantity's canonical unit."""

    def __init__(self) -> None:
        self.ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
        for line in _EXTRA_DEFINITIONS:
            self.ureg.define(line)
        self.ureg.enable_contexts("chemistry")
        self._factor = lru_cache(maxsize=4096)(self._factor_uncached)

    def parse(self, unit: str) -> pint.Unit:
        """Parse one unit string (UCUM code or free text); raises UnitError('unknown')."""
        rewritten = _rewrite(unit)
        if not rewritten:
            raise UnitError("unknown", f"unit {unit!r} names no unit")
        try:
            q = self.ureg.parse_expression(rewritten)
        except Exception:  # pint raises several error types for bad input
            raise UnitError("unknown", f"unit {unit!r} is not recognised") from None
        if isinstance(q, (int, float)):
            q = q * self.ureg.dimensionless
        if not (isinstance(q.magnitude, (int, float)) and math.isfinite(q.magnitude) and q.magnitude > 0):
            raise UnitError("unknown", f"unit {unit!r} is not a unit (a zero, negative or infinite factor)")
        return q

    def _factor_uncached(self, code: str | None, text: str | None, spec: QuantitySpec) -> tuple[float, str]:
        candidates = [u for u in (code, text) if u and u.strip()]
        if not candidates:
            raise UnitError("missing", "no unit given")
        target = self.ureg.parse_expression(_rewrite(spec.unit))
        last: UnitError | None = None
        for raw in candidates:
            try:
                source = self.parse(raw)
            except UnitError as e:
                last = e
                continue
            try:
                if spec.molar_mass:
                    mw = self.ureg.parse_expression(spec.molar_mass)
                    with self.ureg.context("chemistry", mw=mw):
                        factor = (1.0 * source).to(target.units).magnitude / target.magnitude
                else:
                    factor = (1.0 * source).to(target.units).magnitude / target.magnitude
            except pint.DimensionalityError:
                last = UnitError(
                    "incompatible", f"unit {raw!r} is not a {spec.name} unit (expected {spec.unit})"
                )
                continue
            except (ArithmeticError, ValueError, TypeError):  # pint on degenerate input
                last = UnitError("unknown", f"unit {raw!r} cannot be converted to {spec.unit}")
                continue
            if not (math.isfinite(factor) and factor > 0):
                last = UnitError("unknown", f"unit {raw!r} cannot be converted to {spec.unit}")
                continue
            return float(factor), raw
        assert last is not None
        raise last

    def convert(self, value: float, code: str | None, text: str | None, spec: QuantitySpec) -> float:
        """``value`` in the unit named by ``code`` (UCUM) or ``text``, expressed in ``spec.unit``."""
        factor, _ = self._factor(code, text, spec)
        if not math.isfinite(value * factor):
            raise UnitError("unknown", "the value is out of range")
        return value * factor

    def to_mg(self, value: float, code: str | None, text: str | None) -> float:
        """A dose in mass units (mg, g, ug, mcg, 毫克) expressed in mg."""
        return self.convert(value, code, text, QuantitySpec("dose", "mg"))


@lru_cache(maxsize=1)
def default_units() -> UnitSystem:
    """The process-wide unit system (building a pint registry takes ~0.3 s)."""
    return UnitSystem()
