"""Trial definitions: criteria, value sets, quantities and dose equivalents, read from TOML.

The code knows kinds of criteria; a trial is a file naming them with their parameters (see
docs/trial-definition.md). ``load_trial`` checks the file before any patient is screened, so
a typo fails at start with the file and criterion named.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .normalize.units import QuantitySpec, UnitError, default_units
from .terminology.valuesets import ValueSetError, ValueSetLibrary, normalize_text

INCLUSION, EXCLUSION = "inclusion", "exclusion"


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
    rules: list["Criterion"] = field(default_factory=list)  # for kind any-of

    @property
    def manual(self) -> bool:
        return self.kind == "manual"


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

    def criterion(self, cid: str) -> Criterion:
        return next(c for c in self.criteria if c.id == cid)


def bundled_valuesets_dir() -> Path:
    packaged = resources.files("fhir_matcher") / "_data" / "valuesets"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "valuesets"


def default_trial_path() -> Path:
    return Path(__file__).resolve().parent / "trials" / "cd19-baff-car-t.toml"


# Parameters each kind requires (checked at load time).
KINDS: dict[str, set[str]] = {
    "age": {"older_than_years"},
    "condition": {"valuesets"},
    "treatment-history": {"classes", "min_classes", "min_months"},
    "manual": set(),
    "lab": {"valueset", "quantity", "op", "threshold", "window_days"},
    "lab-uln": {"tests", "quantity", "multiple", "default_uln", "window_days"},
    "test-result": {"valueset"},
    "exposure": {"valuesets"},
    "deceased": set(),
    "any-of": set(),
}
_VALUESET_PARAMS = ("valuesets", "valueset", "tests", "possible_valuesets")


def _criterion(raw: dict[str, Any], where: str, parent_type: str | None = None) -> Criterion:
    cid = raw.get("id") or (f"{parent_type}-rule" if parent_type else None)
    if not cid:
        raise TrialError(f"{where}: a criterion has no id")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise TrialError(f"{where}: criterion {cid}: unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    ctype = raw.get("type", parent_type)
    if ctype not in (INCLUSION, EXCLUSION):
        raise TrialError(f"{where}: criterion {cid}: type must be 'inclusion' or 'exclusion'")
    missing = KINDS[kind] - raw.keys()
    if missing:
        raise TrialError(f"{where}: criterion {cid} ({kind}): missing {', '.join(sorted(missing))}")
    reserved = {"id", "type", "kind", "title", "protocol", "washout", "rules"}
    params = {k: v for k, v in raw.items() if k not in reserved}
    rules = [_criterion(r, f"{where} {cid}", ctype) for r in raw.get("rules", [])]
    if kind == "any-of" and not rules:
        raise TrialError(f"{where}: criterion {cid}: any-of needs [[...rules]]")
    return Criterion(
        id=cid,
        type=ctype,
        kind=kind,
        title=raw.get("title", cid),
        protocol=str(raw.get("protocol", "")),
        washout=bool(raw.get("washout", False)),
        params=params,
        rules=rules,
    )


def _valueset_ids(c: Criterion) -> set[str]:
    ids: set[str] = set()
    for key in _VALUESET_PARAMS:
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


def load_trial(path: str | Path | None = None) -> Trial:
    path = Path(path) if path else default_trial_path()
    data = read_toml(path, "trial definition", TrialError)
    meta = data.get("trial", {})
    if not meta.get("id"):
        raise TrialError(f"{path}: [trial] id is required")
    library = ValueSetLibrary()
    dirs = [bundled_valuesets_dir()] + [(path.parent / d).resolve() for d in meta.get("valueset_dirs", [])]
    try:
        for d in dirs:
            if d.is_dir():
                library.load_dir(d)
    except ValueSetError as e:
        raise TrialError(str(e)) from None
    quantities = {}
    for name, spec in data.get("quantities", {}).items():
        quantities[name] = QuantitySpec(name, spec["unit"], spec.get("molar_mass"), int(spec.get("decimals", 2)))
        try:  # check the units parse now, not on the first patient
            default_units().convert(1.0, spec["unit"], None, quantities[name])
        except (UnitError, KeyError) as e:
            raise TrialError(f"{path}: quantity {name}: {e}") from None
    criteria = [_criterion(c, str(path)) for c in data.get("criteria", [])]
    if not criteria:
        raise TrialError(f"{path}: no [[criteria]]")
    ids = [c.id for c in criteria]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise TrialError(f"{path}: duplicate criterion id(s): {', '.join(sorted(dupes))}")
    doses = data.get("dose_equivalents", {})
    terms = data.get("terminology", {})
    needed = set().union(*(_valueset_ids(c) for c in criteria))
    needed |= {v for k, v in terms.items() if k.endswith("valueset")}
    for c in criteria:
        for q in [c.params.get("quantity")] + [r.params.get("quantity") for r in c.rules]:
            if q and q not in quantities:
                raise TrialError(f"{path}: criterion {c.id}: quantity {q!r} is not defined in [quantities]")
    try:
        library.require(needed)
    except ValueSetError as e:
        raise TrialError(f"{path}: {e} (looked in {', '.join(str(d) for d in dirs)})") from None
    return Trial(
        id=meta["id"],
        title=meta.get("title", meta["id"]),
        description=meta.get("description", ""),
        identifier_system=meta.get("identifier_system", "https://fhir-matcher.org/fhir/trial"),
        path=path,
        criteria=criteria,
        quantities=quantities,
        dose_reference=doses.get("reference", "prednisone"),
        dose_reference_mg=float(doses.get("reference_mg", 5)),
        dose_equivalents={normalize_text(k): float(v) for k, v in doses.get("equivalents", {}).items()},
        non_systemic_routes=terms.get("non_systemic_routes_valueset", "route-non-systemic"),
        positive_results=terms.get("positive_valueset", "result-positive"),
        negative_results=terms.get("negative_valueset", "result-negative"),
        conditions=meta.get("conditions", []),
        valuesets=library,
    )
