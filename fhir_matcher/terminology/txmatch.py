"""Run-time help from a terminology server (``--tx URL`` on ``screen`` and ``nightly``).

A record code that no stored expansion lists may still belong to a value set: a SNOMED CT
descendant newer than the expansion. The library asks this hook about such codes (exact
systems only; ICD-10 and ATC already match by prefix). For each value set whose compose has
an ``is-a`` filter in the code's system, the server expands the compose once per run
(``ValueSet/$expand``, paged): a code in that expansion belongs to the value set, excludes
included. It is attributed to the top-level concept it descends from with
``CodeSystem/$subsumes`` against that concept's codes and anchors. Every answer is cached for
the run, so the cost is a few requests per value set plus a few per new code, whatever the
number of records; it is reported in ``run.json`` (``terminology``).

When the server fails, the run goes on with the stored expansions and says so.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterable

from ..fhirjson import as_str
from ..rest.client import FhirError
from ..rest.transport import TransportError
from .expand import Placer, anchors
from .tx import TerminologyClient, TxError
from .valuesets import Concept, ValueSetLibrary, normalize_system, prefix_family

log = logging.getLogger("fhir_matcher")


class TxMatcher:
    """The ``code_hook`` of a :class:`ValueSetLibrary`: (system, code) -> extra concepts."""

    def __init__(self, library: ValueSetLibrary, tx: TerminologyClient, valuesets: Iterable[str] | None = None):
        self.library = library
        self.tx = tx
        wanted = set(valuesets) if valuesets is not None else set(library.valuesets)
        self._by_system: dict[str, list[str]] = {}
        for vs_id in sorted(wanted):
            vs = library.valuesets.get(vs_id)
            if vs is None:
                continue
            for system in dict.fromkeys(s for s, _ in anchors(vs)):
                if not prefix_family(system):
                    self._by_system.setdefault(system, []).append(vs_id)
        self._members: dict[str, tuple[dict[tuple[str, str], str | None], Placer] | None] = {}
        self._memo: dict[tuple[str, str], tuple[Concept, ...]] = {}
        self._lock = threading.RLock()
        self.codes_checked = 0  # distinct unlisted codes asked about
        self.codes_matched = 0  # of which found in a value set by the server
        self.expanded = 0
        self.error: str | None = None
        self.not_expanded: dict[str, str] = {}  # value set -> why the server did not expand it
        self.matched: list[str] = []  # "system|code -> value set" (codes only, no patient data)

    def attach(self) -> "TxMatcher":
        self.library.code_hook = self
        return self

    def __call__(self, system: str, code: str) -> tuple[Concept, ...]:
        system = normalize_system(system) or system
        key = (system, code)
        if system not in self._by_system or self.error:
            return ()
        with self._lock:
            if key in self._memo:
                return self._memo[key]
            try:
                found = self._lookup(system, code)
            except (TxError, FhirError, TransportError) as e:
                self.error = str(e)
                log.warning("terminology server %s failed (%s); the run goes on with the stored expansions", self.tx.base, e)
                return ()
            self._memo[key] = found
            self.codes_checked += 1
            if found:
                self.codes_matched += 1
                self.matched += [f"{system}|{code} -> {c.valueset} ({c.display})" for c in found]
            return found

    def _lookup(self, system: str, code: str) -> tuple[Concept, ...]:
        out = []
        for vs_id in self._by_system[system]:
            entry = self._expansion(vs_id)
            if entry is None:
                continue
            members, placer = entry
            if (system, code) not in members:
                continue
            where = placer.place((system, code))
            if where is None:  # descends from no concept of the value set: named by the server's display
                out.append(Concept(vs_id, members[(system, code)] or code, system, code))
            else:
                top = placer.tops[where]
                display = as_str(top.get("display")) or as_str(top.get("code")) or code
                out.append(Concept(vs_id, display, normalize_system(as_str(top.get("system"))), as_str(top.get("code"))))
        return tuple(out)

    def _expansion(self, vs_id: str) -> tuple[dict[tuple[str, str], str | None], Placer] | None:
        if vs_id not in self._members:
            vs = self.library.valuesets[vs_id]
            try:
                result = self.tx.expand(vs)
            except TxError as e:  # e.g. a system of this compose the server does not hold
                log.warning("terminology: %s", e)
                self.not_expanded[vs_id] = str(e).split(": ", 1)[-1]
                self._members[vs_id] = None
                return None
            self.expanded += 1
            members = {(normalize_system(c.system) or c.system, c.code): c.display for c in result.codes}
            parents = {(normalize_system(c.system) or c.system, c.code): c.parent for c in result.codes}
            self._members[vs_id] = (members, Placer(vs, self.tx, parents))
        return self._members[vs_id]

    def summary(self) -> dict[str, Any]:
        return {
            "server": self.tx.base,
            "valuesets_expanded": self.expanded,
            "codes_checked": self.codes_checked,
            "codes_matched": self.codes_matched,
            "matched": sorted(self.matched),
            "not_expanded": dict(sorted(self.not_expanded.items())),
            "error": self.error,
            "http": self.tx.cost.to_json(),
        }
