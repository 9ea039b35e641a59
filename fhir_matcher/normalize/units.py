"""Unit normalization: UCUM first (through ucumvert, which maps UCUM onto pint), free text second.

A lab value arrives with a UCUM code, with free unit text only, or both. ``UnitSystem``
parses a UCUM code with the UCUM grammar (annotations such as ``{1.73_m2}``, bracketed atoms
such as ``mm[Hg]`` and ``[IU]``, ``10*9``); free text (``x10^9/L``, ``×10⁹/L``, ``G/L``,
``K/uL``, ``μmol/L``, ``mL/min/1.73m2``, Chinese unit names) is rewritten and parsed by pint
on the same registry. It converts to the canonical unit the trial names for a quantity.

What is data, not code: a quantity's molar mass (mass and amount forms, including ratios
such as mg/mmol creatinine), its declared equivalent units (mEq/L read as mmol/L for a
monovalent ion, [IU]/L as U/L for an enzyme) and its declared affine conversions (HbA1c IFCC
mmol/mol to NGSP %). Nothing is guessed: two scales that merely share a dimension (% and
mmol/mol, or IU and cells per litre) are never one quantity; no unit, an unknown unit or a
unit of another kind is reported as such.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pint

_UCUM: tuple[Any, Any] | None = None


def _registry() -> tuple[Any, Any]:
    """(a pint registry with UCUM's units, a UCUM code -> Quantity function on it), per process.

    ucumvert's own ``from_ucum`` builds its quantities on pint's application registry, not on
    the registry it is called on; the transformer is bound to our registry here instead.
    """
    global _UCUM
    if _UCUM is None:
        from ucumvert import PintUcumRegistry
        from ucumvert.parser import get_ucum_parser, parse_ucum
        from ucumvert.ucum_pint import UcumToPintTransformer

        try:  # pint caches the parsed definitions on disk: 1.8 s -> 0.2 s for every later process
            ureg = PintUcumRegistry(cache_folder=":auto:")
        except Exception:  # an unwritable cache folder (a locked-down service account) only costs time
            ureg = PintUcumRegistry()
        parser = get_ucum_parser()
        transform = UcumToPintTransformer(ureg=ureg).transform
        _UCUM = (ureg, lambda code: transform(parse_ucum(code, parser)))
    return _UCUM


@dataclass(frozen=True)
class Conversion:
    """A declared affine conversion into a quantity's unit: ``unit = scale * x + offset``."""

    source: str  # the unit it converts from, e.g. "mmol/mol"
    scale: float
    offset: float = 0.0
    decimals: int | None = None  # rounding the protocol uses after converting


@dataclass(frozen=True)
class QuantitySpec:
    """A kind of quantity a criterion compares: its canonical unit and how other units reach it."""

    name: str
    unit: str
    molar_mass: str | None = None
    decimals: int = 2  # converted values are compared at the precision a lab reports
    equivalent_units: tuple[tuple[str, str], ...] = ()  # (read this unit, as this unit)
    conversions: tuple[Conversion, ...] = field(default_factory=tuple)


class UnitError(Exception):
    """A value could not be converted; ``kind`` is missing, unknown or incompatible."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Converter:
    """value in the source unit -> value in the quantity's unit, and the rounding to apply."""

    scale: float
    offset: float = 0.0
    decimals: int | None = None
    via: str = ""  # the unit string that was understood

    def __call__(self, value: float) -> float:
        return value * self.scale + self.offset


_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_SUPERSCRIPT_RUN = re.compile(r"[⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_POWER_OF_TEN = re.compile(r"10\s*(?:\*|\^|\*\*|e|E)\s*(-?\d+)")
_TEXT_REWRITES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\{[^}]*\}"), ""),  # UCUM annotations: {cells}/uL -> /uL
    (re.compile(r"/\s*1\.73\s*(?:m2|m\^2|m²|m\*\*2|sq\.?\s*m)\b", re.I), ""),  # per 1.73 m2 body surface
    (re.compile(r"\[(iu|IU)\]"), "IU"),
    (re.compile(r"\b(?:iu|Iu)\b"), "IU"),
    (re.compile(r"\bm?[Ee]q\b"), lambda m: m.group(0).lower()),  # mEq -> meq
    (re.compile(r"mm\s*\[?Hg\]?", re.I), "mmHg"),
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


# Dimensionless units that are pure numbers: any of them is "a number", and they convert.
_PURE_NUMBERS = {"percent", "permille", "ppm", "ppb", "ppth", "pptr", "dimensionless", "_10", "_10_6", "radian"}


def _swap_amount_mass(dims: dict[str, float]) -> dict[str, float]:
    out = dict(dims)
    if out.get("[substance]"):
        out["[mass]"] = out.get("[mass]", 0) + out.pop("[substance]")
    elif out.get("[mass]"):
        out["[substance]"] = out.pop("[mass]")
    return out


def _is_equivalent_unit(name: str) -> bool:
    return name.endswith("equivalents") or name.endswith("equivalent")


class UnitSystem:
    """Parses unit strings and converts values to a quantity's canonical unit."""

    def __init__(self) -> None:
        self.ureg, self._from_ucum = _registry()
        self._converter = lru_cache(maxsize=8192)(self._converter_uncached)
        self._parse_cached = lru_cache(maxsize=8192)(self._parse_uncached)

    # ------------------------------------------------------------ parsing

    def _ucum(self, unit: str) -> Any:
        q = self._from_ucum(unit)
        if not hasattr(q, "units"):  # a bare annotation such as {ratio} is the number 1
            q = 1.0 * self.ureg.dimensionless
        return q

    def _text(self, unit: str) -> Any:
        rewritten = _rewrite(unit)
        if not rewritten:
            if unit.strip().startswith("{"):
                return 1.0 * self.ureg.dimensionless
            raise UnitError("unknown", f"unit {unit!r} names no unit")
        q = self.ureg.parse_expression(rewritten)
        if isinstance(q, (int, float)):
            return q * self.ureg.dimensionless
        return q

    def _parse_uncached(self, unit: str, ucum_first: bool) -> Any:
        attempts = (self._ucum, self._text) if ucum_first else (self._text, self._ucum)
        for attempt in attempts:
            try:
                q = attempt(unit)
            except UnitError:
                continue
            except Exception:  # the UCUM grammar and pint raise several error types for bad input
                continue
            if hasattr(q, "units"):
                if not (isinstance(q.magnitude, (int, float)) and math.isfinite(q.magnitude) and q.magnitude > 0):
                    raise UnitError("unknown", f"unit {unit!r} is not a unit (a zero, negative or infinite factor)")
                return q
        raise UnitError("unknown", f"unit {unit!r} is not recognised")

    def parse(self, unit: str, ucum_first: bool = True) -> Any:
        """One unit string as a pint Quantity (magnitude carries factors such as 10*9).

        A UCUM code is read with the UCUM grammar first; free text is rewritten first.
        Raises UnitError('unknown').
        """
        if not isinstance(unit, str) or not unit.strip():
            raise UnitError("missing", "no unit given")
        return self._parse_cached(unit.strip(), ucum_first)

    def check(self, unit: str) -> None:
        """Raise UnitError when a unit written in a trial file does not parse."""
        self.parse(unit)

    # ------------------------------------------------------------ conversion

    def _arbitrary(self, q: Any) -> dict[str, float]:
        """Arbitrary units ([IU], [arb'U]) with exponents: dimensionless in pint, never a number."""
        out: dict[str, float] = {}
        for name, exp in q.units._units.items():
            if not self.ureg.get_dimensionality(name) and name not in _PURE_NUMBERS:
                out[name] = out.get(name, 0) + exp
        return out

    def numerator_kind(self, unit: str, ucum_first: bool = True) -> dict[str, float]:
        """The dimensions of what a ratio unit counts (its numerator, before any cancelling).

        pint calls mg/g, mmol/mol and % all dimensionless; the numerator tells a mass ratio
        from an amount ratio and from a pure number.
        """
        body = re.sub(r"\{[^}]*\}", "", unit).strip()
        top = body.split("/", 1)[0].strip()
        if not top or top in ("1", "%"):
            return {}
        try:
            q = self.parse(top, ucum_first)
        except UnitError:
            return {"?": 1.0}
        return {d: e for d, e in q.dimensionality.items() if e}

    def _factor(self, source: Any, source_num: dict[str, float], target: Any, target_num: dict[str, float], molar_mass: str | None) -> float | None:
        """The factor from ``source`` to ``target``, or None when they are not one quantity."""
        if self._arbitrary(source) != self._arbitrary(target):
            return None
        q = 1.0 * source
        k = 0
        if molar_mass:
            mw = self.ureg.parse_expression(molar_mass)
            k = q.dimensionality.get("[substance]", 0) - target.dimensionality.get("[substance]", 0)
            if k:
                q = q * mw**k  # amount <-> mass of the analyte, in numerator or denominator
        if target.dimensionless and q.dimensionless and source_num != target_num:
            # Ratios: mass to mass, amount to amount, number to number; a molar mass may turn
            # the numerator's amount into mass (or back), nothing else.
            if not (k and _swap_amount_mass(source_num) == target_num):
                return None
        try:
            value = q.to(target.units).magnitude / target.magnitude
        except pint.DimensionalityError:
            return None
        return float(value)

    def _declared(self, q: Any, spec: QuantitySpec) -> tuple[Any, dict[str, float]] | None:
        """The unit a quantity declares a unit to be read as (mEq/L as mmol/L), if any."""
        for read, as_unit in spec.equivalent_units:
            declared = self.parse(read)
            if declared.units == q.units and abs(declared.magnitude - q.magnitude) <= 1e-12 * abs(q.magnitude or 1):
                return self.parse(as_unit) * 1.0, self.numerator_kind(as_unit)
        return None

    def _converter_uncached(self, code: str | None, text: str | None, spec: QuantitySpec) -> Converter:
        # A code is read as UCUM first, text as text first; each is also tried the other way
        # (servers put "G/L" in Quantity.code: gauss per litre in UCUM, giga-cells as text).
        readings = ((code, True), (code, False), (text, False), (text, True))
        candidates = [(u, ucum) for u, ucum in readings if isinstance(u, str) and u.strip()]
        if not candidates:
            raise UnitError("missing", "no unit given")
        target = self.parse(spec.unit)
        target_num = self.numerator_kind(spec.unit)
        last: UnitError | None = None
        for raw, ucum_first in candidates:
            try:
                source = self.parse(raw, ucum_first)
            except UnitError as e:
                last = e
                continue
            source_num = self.numerator_kind(raw, ucum_first)
            declared = self._declared(source, spec)
            if declared is not None:
                source, source_num = declared
            elif any(_is_equivalent_unit(n) for n in source.units._units):
                last = UnitError("incompatible", f"unit {raw!r} counts equivalents, and {spec.name} declares no equivalent_units for it")
                continue
            try:
                factor = self._factor(source, source_num, target, target_num, spec.molar_mass)
                if factor is not None and not (math.isfinite(factor) and factor > 0):
                    raise ArithmeticError("degenerate factor")
                if factor is not None:
                    return Converter(factor, 0.0, None, raw)
                for conv in spec.conversions:
                    to_from = self._factor(source, source_num, self.parse(conv.source), self.numerator_kind(conv.source), spec.molar_mass)
                    if to_from is not None and math.isfinite(to_from) and to_from > 0:
                        return Converter(conv.scale * to_from, conv.offset, conv.decimals, raw)
            except (ArithmeticError, ValueError, TypeError):  # pint on degenerate input
                last = UnitError("unknown", f"unit {raw!r} cannot be converted to {spec.unit}")
                continue
            last = UnitError("incompatible", f"unit {raw!r} is not a {spec.name} unit (expected {spec.unit})")
        assert last is not None
        raise last

    def converter(self, code: str | None, text: str | None, spec: QuantitySpec) -> Converter:
        """How to bring a value in the unit ``code`` (UCUM) or ``text`` to ``spec.unit``."""
        return self._converter(code, text, spec)

    def convert(self, value: float, code: str | None, text: str | None, spec: QuantitySpec) -> float:
        """``value`` in the unit named by ``code`` (UCUM) or ``text``, expressed in ``spec.unit``."""
        out = self._converter(code, text, spec)(value)
        if not math.isfinite(out):
            raise UnitError("unknown", "the value is out of range")
        return out

    def to_mg(self, value: float, code: str | None, text: str | None) -> float:
        """A dose in mass units (mg, g, ug, mcg, 毫克) expressed in mg."""
        return self.convert(value, code, text, _DOSE)


_DOSE = QuantitySpec("dose", "mg")


@lru_cache(maxsize=1)
def default_units() -> UnitSystem:
    """The process-wide unit system (building the UCUM registry takes about a second)."""
    return UnitSystem()
