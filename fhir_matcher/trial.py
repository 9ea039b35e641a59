"""Trial definitions: criteria, value sets, quantities and dose equivalents, read from TOML.

The code knows kinds of criteria; a trial is a file naming them with their parameters (see
fhir_matcher/trials/README.md). ``load_trial`` checks the file before any patient is screened
(trial_schema), so every mistake is reported at start with the file, criterion and field named.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

from .normalize.units import Conversion, QuantitySpec, default_units
from .terminology.valuesets import ValueSetError, ValueSetLibrary, normalize_text
from .trial_schema import VALUESET_PARAMS, Problem, check_criterion, check_quantity

INCLUSION, EXCLUSION = "inclusion", "exclusion"
KNOWN_SECTIONS = {"trial", "terminology", "quantities", "dose_equivalents", "criteria", "report"}


class TrialError(Exception):
    """The trial definition is unusable; the message names the file and the reason."""


@dataclass
class Criterion:
    id: str
    type: str  # inclusion | exclusion
    kind: str
    title: str
    protocol: str = ""
    washout: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    rules: list["Criterion"] = field(default_factory=list)  # for the logic kinds (any-of, all-of ...)

    @property
    def manual(self) -> bool:
        return self.kind == "manual"

    def walk(self) -> Iterator["Criterion"]:
        """This criterion and every rule nested in it, depth first."""
        yield self
        for r in self.rules:
            yield from r.walk()


@dataclass
class Trial:
    id: str
    title: str
    description: str
    identifier_system: str
    path: Path
    criteria: list[Criterion]
    quantities: dict[str, QuantitySpec]
    dose_reference: str
    dose_reference_mg: float
    dose_equivalents: dict[str, float]  # normalized ingredient name -> mg equal to the reference dose
    non_systemic_routes: str  # value set of routes and dose forms that are not systemic
    positive_results: str
    negative_results: str
    conditions: list[dict[str, str]]  # for ResearchStudy.condition
    valuesets: ValueSetLibrary
    washout_note: str = "drugs to stop before the study treatment"  # [report] washout_note
    manual_note: str = "to be confirmed by a person"  # [report] manual_note: a manual criterion's default reason

    def criterion(self, cid: str) -> Criterion:
        return next(c for c in self.criteria if c.id == cid)


def bundled_valuesets_dir() -> Path:
    packaged = resources.files("fhir_matcher") / "_data" / "valuesets"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "valuesets"


def default_trial_path() -> Path:
    return Path(__file__).resolve().parent / "trials" / "cd19-baff-car-t.toml"


def _criterion(raw: dict[str, Any], parent_type: str | None = None, index: int = 0) -> Criterion:
    """A checked ``[[criteria]]`` table (see trial_schema) as a Criterion, rules included."""
    cid = raw.get("id") or f"{parent_type}-rule-{index}"
    ctype = raw.get("type", parent_type)
    reserved = {"id", "type", "kind", "title", "protocol", "washout", "rules"}
    params = {k: v for k, v in raw.items() if k not in reserved}
    rules = [_criterion(r, ctype, i) for i, r in enumerate(raw.get("rules", []), 1)]
    return Criterion(
        id=cid,
        type=ctype,
        kind=raw["kind"],
        title=raw.get("title", cid),
        protocol=str(raw.get("protocol", "")),
        washout=bool(raw.get("washout", False)),
        params=params,
        rules=rules,
    )


def _valueset_ids(c: Criterion) -> set[str]:
    ids: set[str] = set()
    for key in VALUESET_PARAMS:
        v = c.params.get(key)
        if isinstance(v, str):
            ids.add(v)
        elif isinstance(v, list):
            ids.update(v)
    if isinstance(c.params.get("classes"), dict):
        ids.update(c.params["classes"].values())
    for r in c.rules:
        ids |= _valueset_ids(r)
    return ids


def read_toml(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """A TOML file as a dict; a missing or unreadable file raises ``error`` naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise error(f"{path}: not a readable TOML {what} ({e})") from None


class TrialProblems(TrialError):
    """Several problems in one trial file; ``problems`` holds each rendered message."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems) if len(problems) < 2 else f"{len(problems)} problems:\n  " + "\n  ".join(problems))
        self.problems = problems


def _quantity_spec(name: str, raw: dict[str, Any]) -> QuantitySpec:
    return QuantitySpec(
        name,
        raw["unit"],
        raw.get("molar_mass"),
        int(raw.get("decimals", 2)),
        tuple((k, v) for k, v in raw.get("equivalent_units", {}).items()),
        tuple(Conversion(c["from"], float(c["scale"]), float(c.get("offset", 0.0)), c.get("decimals")) for c in raw.get("conversions", [])),
    )


def _has_key(raw: Any, key: str) -> bool:
    """Does a criterion table or any of its nested rules set ``key``?"""
    if not isinstance(raw, dict):
        return False
    return key in raw or any(_has_key(r, key) for r in raw.get("rules", []) if isinstance(raw.get("rules"), list))


def load_trial(path: str | Path | None = None) -> Trial:
    """Read and check a trial file; every problem found is reported at once (TrialProblems)."""
    path = Path(path) if path else default_trial_path()
    data = read_toml(path, "trial definition", TrialError)
    where = str(path)
    problems: list[Problem] = []
    meta = data.get("trial", {})
    if not isinstance(meta, dict) or not meta.get("id"):
        problems.append(Problem("", "[trial] id", "required"))
        meta = meta if isinstance(meta, dict) else {}
    library = ValueSetLibrary()
    dirs = [bundled_valuesets_dir()] + [(path.parent / d).resolve() for d in meta.get("valueset_dirs", [])]
    for d in dirs:
        if not d.is_dir():
            if d != dirs[0]:
                problems.append(Problem("", "[trial] valueset_dirs", f"{d} is not a folder"))
            continue
        try:
            library.load_dir(d)
        except ValueSetError as e:
            problems.append(Problem("", "value sets", str(e)))
    units = default_units()
    raw_quantities = data.get("quantities", {})
    quantities: dict[str, QuantitySpec] = {}
    for name, spec in (raw_quantities.items() if isinstance(raw_quantities, dict) else []):
        found = check_quantity(name, spec, units.check)
        problems += found
        if not found:
            quantities[name] = _quantity_spec(name, spec)
    raw_criteria = data.get("criteria", [])
    if not isinstance(raw_criteria, list) or not raw_criteria:
        problems.append(Problem("", "[[criteria]]", "none defined"))
        raw_criteria = []
    names = set(raw_quantities) if isinstance(raw_quantities, dict) else set()
    for i, raw in enumerate(raw_criteria, 1):
        name = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else f"#{i}"
        problems += check_criterion(raw, name, names)
    ids = [raw.get("id") for raw in raw_criteria if isinstance(raw, dict)]
    for dupe in sorted({i for i in ids if i and ids.count(i) > 1}):
        problems.append(Problem(dupe, "id", "used by more than one criterion"))
    doses = data.get("dose_equivalents", {})
    terms = data.get("terminology", {})
    for key in sorted(set(data) - KNOWN_SECTIONS):
        problems.append(Problem("", f"[{key}]", f"unknown section (known: {', '.join(sorted(KNOWN_SECTIONS))})"))
    uses_dose = [raw.get("id", f"#{i}") for i, raw in enumerate(raw_criteria, 1) if _has_key(raw, "dose")]
    if uses_dose and not (isinstance(doses, dict) and doses.get("reference") and doses.get("equivalents")):
        problems.append(Problem("", "[dose_equivalents]", f"reference, reference_mg and equivalents are required by the dose rule of {', '.join(map(str, uses_dose))}"))
    if problems:
        raise TrialProblems([p.render(where) for p in problems])
    criteria = [_criterion(c) for c in raw_criteria]
    missing_sets = []
    for c in criteria:
        for vs in sorted(_valueset_ids(c) - set(library.valuesets)):
            missing_sets.append(Problem(c.id, "value set", f"{vs!r} not found (looked in {', '.join(str(d) for d in dirs)})"))
    for k, v in terms.items():
        if k.endswith("valueset") and v not in library.valuesets:
            missing_sets.append(Problem("", f"[terminology] {k}", f"{v!r} not found"))
    if missing_sets:
        raise TrialProblems([p.render(where) for p in missing_sets])
    report = data.get("report", {})
    return Trial(
        id=meta["id"],
        title=meta.get("title", meta["id"]),
        description=meta.get("description", ""),
        identifier_system=meta.get("identifier_system", "https://fhir-matcher.org/fhir/trial"),
        path=path,
        criteria=criteria,
        quantities=quantities,
        dose_reference=doses.get("reference", "reference drug"),
        dose_reference_mg=float(doses.get("reference_mg", 1)),
        dose_equivalents={normalize_text(k): float(v) for k, v in doses.get("equivalents", {}).items()},
        non_systemic_routes=terms.get("non_systemic_routes_valueset", "route-non-systemic"),
        positive_results=terms.get("positive_valueset", "result-positive"),
        negative_results=terms.get("negative_valueset", "result-negative"),
        conditions=meta.get("conditions", []),
        valuesets=library,
        washout_note=report.get("washout_note", "drugs to stop before the study treatment"),
        manual_note=report.get("manual_note", "to be confirmed by a person"),
    )


def trial_paths(paths: Sequence[str | Path] | None, folder: str | Path | None) -> list[Path]:
    """The definition files named one by one and every ``*.toml`` in ``folder`` (sorted)."""
    out = [Path(p) for p in paths or []]
    if folder:
        d = Path(folder)
        if not d.is_dir():
            raise TrialError(f"{d}: --trials needs a folder of trial definitions (*.toml)")
        found = sorted(d.glob("*.toml"))
        if not found:
            raise TrialError(f"{d}: no trial definitions (*.toml) in this folder")
        out += found
    return out


def load_trials(paths: Sequence[str | Path] | None, folder: str | Path | None = None) -> list[Trial]:
    """Several trials (a portfolio); the default trial when none is named. Ids must differ."""
    files = trial_paths(paths, folder)
    trials = [load_trial(p) for p in files] if files else [load_trial()]
    seen: dict[str, Path] = {}
    for t in trials:
        if t.id in seen:
            raise TrialError(f"{t.path}: trial id {t.id!r} is also the id of {seen[t.id]}: each trial needs its own id")
        seen[t.id] = t.path
    return trials
