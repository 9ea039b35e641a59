"""Value sets loaded from FHIR ValueSet JSON and matched offline.

Each ValueSet's ``expansion.contains`` is a tree: a top-level entry is one concept (a
disease, an analyte, a drug ingredient) and its nested entries are equivalent or descendant
codes in any system. A coded value matches:

- exactly, by system and code (SNOMED CT, LOINC, RxNorm, local systems);
- by prefix within a hierarchical family: ICD-10 (WHO, CM and national clinical editions
  such as ``M32.100x001`` under ``M32.1``) and ATC (``H02AB07`` under ``H02AB``);
- by name, as a fallback: the display and designations of every entry, longest name first
  across all value sets, ASCII names on word boundaries. The ValueSet extension
  ``text-match`` says when: ``uncoded`` (default) only for concepts that carry no code from a
  standard system; ``always`` also when standard codes did not match (drug value sets: US
  data codes drugs as RxNorm clinical drugs whose names carry the ingredient).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import orjson

from ..fhirjson import Json, as_dict, as_list, as_str, codings, concept_text

TEXT_MATCH_URL = "https://fhir-matcher.org/fhir/StructureDefinition/text-match"
# A designation with this use is a name that must NOT match: a longer phrase that contains a
# real name ("尿肌酐" urine creatinine around "肌酐", "hemoglobin A1c" around "hemoglobin").
DESIGNATION_USE = "https://fhir-matcher.org/fhir/CodeSystem/designation-use"
EXCLUDE_NAME = "exclude-name"

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"

# Other spellings of the same systems seen in real data.
_SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/id": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.73": ATC,
    "http://www.whocc.no/atc/": ATC,
    "urn:oid:2.16.840.1.113883.6.3": ICD10,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
}
_ICD10_OIDS = {"urn:oid:2.16.156.10011.2.3.3.11"}  # China's national ICD-10 clinical edition
STANDARD_SYSTEMS = {SNOMED, LOINC, RXNORM, ATC}


def normalize_system(system: str | None) -> str | None:
    if not system:
        return None
    s = system.strip()
    return _SYSTEM_ALIASES.get(s, s.rstrip("/") if s.startswith("http") else s)


def prefix_family(system: str | None) -> str | None:
    """The hierarchical family whose codes match by prefix, if any."""
    if not system:
        return None
    s = system.lower()
    if s == ATC or "whocc" in s and "atc" in s:
        return "atc"
    if s in _ICD10_OIDS or re.search(r"icd-?10", s):
        return "icd10"
    return None


def is_standard(system: str | None) -> bool:
    return system in STANDARD_SYSTEMS or prefix_family(system) is not None


def _prefix_key(code: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", code.upper())


def normalize_text(text: str) -> str:
    """Case-folded NFKC with single spaces: how names and free text are compared."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


@dataclass(frozen=True)
class Concept:
    """A top-level entry of a value set's expansion."""

    valueset: str
    display: str
    system: str | None = None
    code: str | None = None

    @property
    def key(self) -> str:
        return normalize_text(self.display)


@dataclass(frozen=True)
class Match:
    concept: Concept
    by: str  # "code" | "prefix" | "text"
    matched: str  # "system|code" or the name found in the text

    def describe(self) -> str:
        if self.by == "text":
            return f"text match '{self.matched}'"
        return f"code {self.matched}"


@dataclass(frozen=True)
class TextHit:
    """A name of one value set found in one of a concept's texts (match None: an exclude-name)."""

    text: int  # which of the concept's texts
    start: int
    end: int
    valueset: str
    match: Match | None


class ValueSetError(Exception):
    pass


class ValueSetLibrary:
    """All value sets a trial can name, indexed for offline matching."""

    def __init__(self) -> None:
        self.valuesets: dict[str, Json] = {}
        self.titles: dict[str, str] = {}
        self._mode: dict[str, str] = {}
        self._exact: dict[tuple[str, str], list[Concept]] = {}
        self._prefix: dict[str, dict[str, list[Concept]]] = {"icd10": {}, "atc": {}}
        self._names: dict[str, list[Concept]] = {}
        self._set_names: dict[str, dict[str, list[Concept]]] = {}  # value set -> name -> concepts
        self._pattern: re.Pattern[str] | None = None
        self._set_patterns: dict[str, re.Pattern[str]] = {}
        self._by_raw: dict[bytes, tuple[Match, ...]] = {}
        self.match_concept = lru_cache(maxsize=65536)(self._match_key)  # type: ignore[method-assign]
        # Optional: (system, code) -> concepts for codes no expansion lists (a terminology server, txmatch.py)
        self.code_hook: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for worker processes and Spark executors (issue 15): the caches stay
        behind, and so does a terminology server hook (--tx screens run in one process; the
        Spark engine refuses --tx)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("match_concept", "_by_raw", "code_hook")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._by_raw = {}
        self.code_hook = None
        self.match_concept = lru_cache(maxsize=65536)(self._match_key)  # type: ignore[method-assign]

    # ------------------------------------------------------------ loading

    def load_dir(self, path: Path) -> None:
        for file in sorted(Path(path).glob("*.json")):
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ValueSetError(f"{file}: not readable JSON ({e})") from None
            if as_dict(data).get("resourceType") != "ValueSet":
                continue
            self.add(data, source=str(file))

    def add(self, vs: Json, source: str = "<memory>") -> None:
        vs_id = as_str(vs.get("id"))
        if not vs_id:
            raise ValueSetError(f"{source}: ValueSet has no id")
        self.valuesets[vs_id] = vs
        self.titles[vs_id] = as_str(vs.get("title")) or vs_id
        mode = "uncoded"
        for ext in as_list(vs.get("extension")):
            if as_dict(ext).get("url") == TEXT_MATCH_URL:
                mode = as_str(ext.get("valueCode")) or mode
        self._mode[vs_id] = mode
        for top in as_list(as_dict(vs.get("expansion")).get("contains")):
            top = as_dict(top)
            display = as_str(top.get("display")) or as_str(top.get("code"))
            if not display:
                continue
            concept = Concept(vs_id, display, normalize_system(as_str(top.get("system"))), as_str(top.get("code")))
            self._index_entry(top, concept)
        self._pattern = None
        self._set_patterns.clear()
        self._by_raw.clear()
        self.match_concept.cache_clear()

    def _index_entry(self, entry: Json, concept: Concept) -> None:
        system = normalize_system(as_str(entry.get("system")))
        code = as_str(entry.get("code"))
        if system and code:
            family = prefix_family(system)
            if family:
                self._prefix[family].setdefault(_prefix_key(code), []).append(concept)
            else:
                self._exact.setdefault((system, code), []).append(concept)
        names = [as_str(entry.get("display"))]
        for d in as_list(entry.get("designation")):
            d = as_dict(d)
            use = as_dict(d.get("use"))
            value = as_str(d.get("value"))
            if use.get("system") == DESIGNATION_USE and use.get("code") == EXCLUDE_NAME:
                if value:  # in its own value set: matches, and means nothing
                    self._names.setdefault(normalize_text(value), [])
                    self._set_names.setdefault(concept.valueset, {}).setdefault(normalize_text(value), [])
            else:
                names.append(value)
        for name in names:
            if name and len(normalize_text(name)) >= 2:
                self._names.setdefault(normalize_text(name), []).append(concept)
                self._set_names.setdefault(concept.valueset, {}).setdefault(normalize_text(name), []).append(concept)
        for child in as_list(entry.get("contains")):
            self._index_entry(as_dict(child), concept)

    def require(self, ids: Iterable[str]) -> None:
        missing = [i for i in ids if i not in self.valuesets]
        if missing:
            raise ValueSetError(f"value set(s) not found: {', '.join(sorted(missing))}")

    # ------------------------------------------------------------ matching

    @staticmethod
    def _alternation(names: Iterable[str]) -> re.Pattern[str]:
        """One pattern finding, at each place, the longest of ``names`` that is there.

        Names are put in a trie: at each character the pattern tries the longer names first
        and ending there last. Two names found at the same place are always one a prefix of
        the other, so this is the same as an alternation sorted longest first, and a trie of
        hundreds of names compiles and searches many times faster. A name starting or ending
        with a letter or digit must not be part of a longer word there.
        """
        names = {n for n in names if n}
        if any(len(n) > 400 for n in names):  # deeper than the trie's recursion should go
            return ValueSetLibrary._sorted_alternation(names)
        trie: dict[str, Any] = {}
        for name in names:
            node = trie
            for ch in name:
                node = node.setdefault(ch, {})
            node[""] = name[-1].isascii() and name[-1].isalnum()
        if not trie:
            return re.compile(r"(?!x)x")

        def branch(node: dict[str, Any]) -> str:
            parts = [re.escape(ch) + branch(child) for ch, child in sorted(node.items()) if ch]
            if "" in node:  # a name ends here: tried after every longer one
                parts.append(r"(?![0-9a-z])" if node[""] else "")
            return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"

        top = [(r"(?<![0-9a-z])" if ch.isascii() and ch.isalnum() else "") + re.escape(ch) + branch(child)
               for ch, child in sorted(trie.items())]
        return re.compile("|".join(top))

    @staticmethod
    def _sorted_alternation(names: Iterable[str]) -> re.Pattern[str]:
        """The plain alternation, longest name first (the reference the trie is tested against)."""
        parts = []
        for name in sorted(names, key=lambda n: (-len(n), n)):
            esc = re.escape(name)
            if name[0].isascii() and name[0].isalnum():
                esc = r"(?<![0-9a-z])" + esc
            if name[-1].isascii() and name[-1].isalnum():
                esc = esc + r"(?![0-9a-z])"
            parts.append(esc)
        return re.compile("|".join(parts) if parts else r"(?!x)x")

    def _compiled(self) -> re.Pattern[str]:
        if self._pattern is None:
            self._pattern = self._alternation(self._names)
        return self._pattern

    def _compiled_for(self, vs: str) -> re.Pattern[str]:
        pattern = self._set_patterns.get(vs)
        if pattern is None:
            pattern = self._set_patterns[vs] = self._alternation(self._set_names.get(vs, {}))
        return pattern

    def text_hits(self, text: str) -> list[tuple[str, int, int, Concept | None]]:
        """Names of every value set found in ``text``: (value set, start, end, concept).

        Each value set reads the text on its own, longest name first, so a longer name in
        one set ("acute ischemic stroke") never hides a shorter name of another ("ischemic
        stroke"). An exclude-name comes back with concept None: within its own set it hides
        lookalikes; across sets, ``match`` lets the longest name win among the sets asked
        about together ("not detected" over "detected" when asking positive or negative).
        """
        norm = normalize_text(text)
        if not self._compiled().search(norm):  # no name of any set occurs anywhere
            return []
        out: list[tuple[str, int, int, Concept | None]] = []
        for vs, names in self._set_names.items():
            for m in self._compiled_for(vs).finditer(norm):
                concepts = names.get(m.group(0), [])
                if not concepts:
                    out.append((vs, m.start(), m.end(), None))
                for concept in concepts:
                    out.append((vs, m.start(), m.end(), concept))
        return out

    def find_names(self, text: str) -> list[tuple[str, Concept]]:
        """Every name found in ``text`` (each value set on its own), with its concept."""
        norm = normalize_text(text)
        return [(norm[a:b], c) for _, a, b, c in self.text_hits(text) if c is not None]

    def _code_matches(self, system: str | None, code: str) -> list[Match]:
        system = normalize_system(system)
        family = prefix_family(system)
        out: list[Match] = []
        if family:
            key = _prefix_key(code)
            table = self._prefix[family]
            for n in range(len(key), 2, -1):  # categories have 3+ characters
                for concept in table.get(key[:n], []):
                    out.append(Match(concept, "prefix" if n < len(key) else "code", f"{system}|{code}"))
        elif system:
            for concept in self._exact.get((system, code), []):
                out.append(Match(concept, "code", f"{system}|{code}"))
            if not out and self.code_hook is not None:  # not listed: ask the terminology server
                out += [Match(concept, "code", f"{system}|{code}") for concept in self.code_hook(system, code)]
        return list(dict.fromkeys(out))  # the same code listed under WHO and CM: one match

    def _match_key(self, key: tuple[tuple[tuple[str | None, str | None, str | None], ...], str | None]) -> tuple[tuple[Match, ...], tuple[TextHit, ...]]:
        """(code matches, text hits) of one concept, against every value set."""
        coding_list, text = key
        matches: list[Match] = []
        coded_sets: set[str] = set()
        standard = False
        for system, code, _ in coding_list:
            standard = standard or is_standard(normalize_system(system))
            if code:
                for m in self._code_matches(system, code):
                    matches.append(m)
                    coded_sets.add(m.concept.valueset)
        texts_any = [text] if text else []
        texts_any += [d for s, _, d in coding_list if d and not is_standard(normalize_system(s))]
        texts_always = texts_any + [d for s, _, d in coding_list if d and is_standard(normalize_system(s))]
        hits: list[TextHit] = []
        seen: set[tuple[str, str]] = set()
        for i, t in enumerate(texts_always):
            local_text = t in texts_any
            norm = normalize_text(t)
            for vs, a, b, concept in self.text_hits(t):
                if (standard or not local_text) and self._mode.get(vs) != "always":
                    continue
                if vs in coded_sets:  # matched by code: its names still outrank shorter rivals
                    hits.append(TextHit(i, a, b, vs, None))
                    continue
                if concept is not None:
                    if (concept.display, vs) in seen:
                        continue
                    seen.add((concept.display, vs))
                hits.append(TextHit(i, a, b, vs, Match(concept, "text", norm[a:b]) if concept else None))
        return tuple(matches), tuple(hits)

    def match(self, concept: Any, valuesets: Iterable[str] | None = None) -> list[Match]:
        """Matches of a CodeableConcept (JSON) against the named value sets (all if None).

        Codes match on their own. Names found in text compete only among the value sets asked
        about: a name inside a longer name of another of those sets is not a match.
        """
        try:  # the same concept recurs across records: look it up by its bytes first
            raw = orjson.dumps(concept, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            raw = None
        found = self._by_raw.get(raw) if raw is not None else None
        if found is None:
            key = (tuple((c.system, c.code, c.display) for c in codings(concept)), concept_text(concept))
            found = self.match_concept(key)
            if raw is not None and len(self._by_raw) < 200_000:
                self._by_raw[raw] = found
        coded, hits = found
        if valuesets is None:
            return list(coded) + [h.match for h in hits if h.match is not None]
        wanted = set(valuesets)
        out = [m for m in coded if m.concept.valueset in wanted]
        asked = [h for h in hits if h.valueset in wanted]
        for h in asked:
            if h.match is None:
                continue
            hidden = any(
                g.text == h.text and g.valueset != h.valueset and g.start <= h.start and h.end <= g.end and (g.end - g.start) > (h.end - h.start)
                for g in asked
            )
            if not hidden:
                out.append(h.match)
        return out

    def match_text(self, text: str, valuesets: Iterable[str]) -> list[Match]:
        """Matches of free text (e.g. valueString) against the named value sets."""
        return self.match({"text": text}, valuesets)
