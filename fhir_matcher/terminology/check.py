"""``fhir-matcher valuesets check``: the rules of valuesets/README.md, checked before a night runs.

Offline, for each value set:
- valid FHIR R4 (parsed with ``fhir.resources.R4B``);
- no code twice in the expansion, nor twice in one compose concept list;
- every expansion code listed in ``compose`` (an explicit concept of the same system);
- every ``is-a`` anchor of the compose present in the expansion (so new descendants can be
  placed under it);
- names not shorter than the README allows (see ``name_problem``);
And across value sets: a name that appears in several sets is reported (a note, not a
failure: the README explains why some are deliberate), and a name blocked (``exclude-name``)
in one set but real in another is named.

With a terminology server, each code of a system the server holds is looked up
(``CodeSystem/$lookup``): unknown and inactive codes are errors.
"""

from __future__ import annotations

import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

from urllib.parse import urlencode

from ..fhirjson import Json, as_dict, as_list, as_str
from ..rest.client import FhirError
from .expand import anchors
from .tx import TerminologyClient
from .valuesets import DESIGNATION_USE, EXCLUDE_NAME, normalize_system, normalize_text

ERROR, NOTE = "error", "note"



def ambiguous_names() -> set[str]:
    """Names valuesets/README.md forbids outright (too general to mean one concept): data in
    valuesets/ambiguous-names.txt, one per line, beside the value sets it guards."""
    from ..trial import bundled_valuesets_dir

    path = bundled_valuesets_dir() / "ambiguous-names.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return set()
    return {normalize_text(line) for line in lines if line.strip() and not line.startswith("#")}


_AMBIGUOUS = ambiguous_names()


@dataclass(frozen=True)
class Finding:
    valueset: str
    severity: str  # error | note
    message: str

    def __str__(self) -> str:
        return f"{self.valueset}: {self.severity}: {self.message}"


def _walk(entries: object, depth: int = 0) -> Iterable[tuple[Json, int]]:
    for e in as_list(entries):
        e = as_dict(e)
        yield e, depth
        yield from _walk(e.get("contains"), depth + 1)


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "")


def name_problem(name: str) -> str | None:
    """Why a name is too short or too general to be a text name (valuesets/README.md rule 5)."""
    norm = normalize_text(name)
    if norm in _AMBIGUOUS:
        return "is one of the names the README forbids (too general)"
    if not norm:
        return "is empty"
    if any(_is_cjk(ch) for ch in norm):
        return "is a single Chinese character (at least 2)" if len(norm) < 2 else None
    letters = re.sub(r"[^0-9a-z]", "", norm)
    if len(norm) < 2 or not letters:
        return "is shorter than 2 characters" if len(norm) < 2 else "has no letters"
    if len(norm) == 2 and not any(ch.isupper() for ch in name):
        return "has 2 characters and is not an abbreviation in capitals (like AF, Hb)"
    return None


def _names(entry: Json) -> list[tuple[str, bool]]:
    """(name, is a blocker) for an expansion entry."""
    out = []
    if as_str(entry.get("display")):
        out.append((as_str(entry.get("display")) or "", False))
    for d in as_list(entry.get("designation")):
        d = as_dict(d)
        use = as_dict(d.get("use"))
        value = as_str(d.get("value"))
        if value:
            out.append((value, use.get("system") == DESIGNATION_USE and use.get("code") == EXCLUDE_NAME))
    return out


def check_valueset(vs: Json, source: str = "") -> list[Finding]:
    vs_id = as_str(vs.get("id")) or source or "?"
    found: list[Finding] = []

    def err(msg: str) -> None:
        found.append(Finding(vs_id, ERROR, msg))

    try:
        from fhir.resources.R4B.valueset import ValueSet

        ValueSet.model_validate(vs)
    except Exception as e:  # pydantic's ValidationError, or anything the model rejects
        text = str(e).replace("\n", " ")
        err(f"not a valid FHIR R4 ValueSet: {text[:400]}")
    if vs.get("resourceType") != "ValueSet":
        err("resourceType is not ValueSet")
    if source and as_str(vs.get("id")) and not source.endswith(f"{vs.get('id')}.json"):
        err(f"file name {source} does not match the id {vs.get('id')}")

    # compose: explicit concepts per system, duplicates inside one list
    compose = as_dict(vs.get("compose"))
    listed: set[tuple[str | None, str]] = set()
    for inc in as_list(compose.get("include")):
        inc = as_dict(inc)
        system = normalize_system(as_str(inc.get("system")))
        seen_here: set[str] = set()
        for c in as_list(inc.get("concept")):
            code = as_str(as_dict(c).get("code"))
            if not code:
                continue
            if code in seen_here:
                err(f"compose lists {system}|{code} twice in one include")
            seen_here.add(code)
            listed.add((system, code))

    # expansion: codes once, each listed in compose, names long enough
    codes: dict[tuple[str | None, str], str] = {}
    for entry, depth in _walk(as_dict(vs.get("expansion")).get("contains")):
        system = normalize_system(as_str(entry.get("system")))
        code = as_str(entry.get("code"))
        where = f"{system}|{code}" if code else repr(as_str(entry.get("display")))
        if code:
            if (system, code) in codes:
                err(f"code {where} appears twice in the expansion (under {codes[(system, code)]!r} and again)")
            codes.setdefault((system, code), as_str(entry.get("display")) or "")
            if (system, code) not in listed:
                err(f"expansion code {where} is not listed in compose")
        elif depth == 0 and not entry.get("abstract"):
            err(f"top-level entry {where} has no code and is not marked abstract")
        for name, blocker in _names(entry):
            why = name_problem(name)
            if why and not blocker:
                err(f"name {name!r} of {where} {why}")
    for system, code in anchors(vs):
        if (system, code) not in codes:
            err(f"compose is-a anchor {system}|{code} is not in the expansion: its descendants have no concept to sit under")
    total = as_dict(vs.get("expansion")).get("total")
    if isinstance(total, int) and total != len(codes):
        err(f"expansion.total is {total} but the expansion holds {len(codes)} codes")
    return found


def check_overlaps(valuesets: dict[str, Json]) -> list[Finding]:
    """Names found in more than one value set (notes), and blockers that block a real name."""
    real: dict[str, set[str]] = {}
    blocked: dict[str, set[str]] = {}
    for vs_id, vs in valuesets.items():
        for entry, _ in _walk(as_dict(vs.get("expansion")).get("contains")):
            for name, blocker in _names(entry):
                key = normalize_text(name)
                (blocked if blocker else real).setdefault(key, set()).add(vs_id)
    found = []
    for name, sets in sorted(real.items()):
        if len(sets) > 1:
            found.append(Finding(", ".join(sorted(sets)), NOTE, f"name {name!r} is in {len(sets)} value sets"))
        if name in blocked:
            found.append(Finding(", ".join(sorted(blocked[name])), NOTE,
                                 f"name {name!r} is blocked here (exclude-name) but a real name in {', '.join(sorted(sets))}: text with it matches only there"))
    return found


def check_codes(vs: Json, tx: TerminologyClient, known_systems: dict[str, bool], workers: int = 4) -> list[Finding]:
    """Look up every expansion code of a system the server holds: unknown or inactive codes."""
    vs_id = as_str(vs.get("id")) or "?"
    todo: list[tuple[str, str, str]] = []
    for entry, _ in _walk(as_dict(vs.get("expansion")).get("contains")):
        system, code = as_str(entry.get("system")), as_str(entry.get("code"))
        if system and code:
            todo.append((system, code, as_str(entry.get("display")) or ""))
    found: list[Finding] = []
    skipped: dict[str, int] = {}
    for system in dict.fromkeys(s for s, _, _ in todo):
        if system not in known_systems:
            known_systems[system] = system_known(tx, system)
    checkable = []
    for system, code, display in todo:
        if known_systems[system]:
            checkable.append((system, code, display))
        else:
            skipped[system] = skipped.get(system, 0) + 1
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda t: (t, tx.lookup(t[0], t[1])), checkable))
    for (system, code, display), answer in results:
        if answer is None:
            found.append(Finding(vs_id, ERROR, f"{system}|{code} ({display}) is unknown to the terminology server"))
        elif answer.inactive:
            found.append(Finding(vs_id, ERROR, f"{system}|{code} ({display}) is inactive on the terminology server"))
    for system, n in skipped.items():
        found.append(Finding(vs_id, NOTE, f"{n} code(s) of {system} not checked: the server does not hold that code system"))
    return found


def system_known(tx: TerminologyClient, system: str) -> bool:
    """Whether the server holds a code system (a CodeSystem search by url). A server that
    does not answer that search is assumed to hold it: the lookups then tell."""
    try:
        bundle = tx.client.request("GET", f"CodeSystem?{urlencode({'url': system, '_summary': 'count'})}")
    except FhirError:
        return True
    total = bundle.get("total")
    return total > 0 if isinstance(total, int) else True
