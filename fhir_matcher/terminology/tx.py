"""A FHIR terminology server client: ValueSet $expand (paged), CodeSystem $lookup and $subsumes.

Talks to any FHIR R4 terminology server (Ontoserver, Snowstorm, HAPI, VSAC) through the same
transport as the FHIR client: retries, TLS, ``[auth]``, and the request/byte counters that
end up in ``run.json``. Value sets are sent inline (``POST ValueSet/$expand`` with a
``valueSet`` parameter), so nothing needs to be uploaded to the server first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..fhirjson import Json, as_dict, as_list, as_str
from ..rest.client import FhirClient, FhirError
from ..rest.transport import Cost, Transport

log = logging.getLogger("fhir_matcher")

PAGE_SIZE = 1000  # codes per $expand page (offset/count)
MAX_CODES = 200_000  # a value set larger than this is a mistake in its compose, not a list to keep


class TxError(Exception):
    """The terminology server refused or answered something unusable; the message says what."""


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str | None = None
    parent: tuple[str, str] | None = None  # (system, code) of the entry it was nested under
    inactive: bool = False


@dataclass
class Expansion:
    codes: list[Code] = field(default_factory=list)
    total: int | None = None
    pages: int = 0

    def keys(self) -> set[tuple[str, str]]:
        return {(c.system, c.code) for c in self.codes}


@dataclass
class Lookup:
    display: str | None
    inactive: bool
    properties: dict[str, list[Any]]


def _param(name: str, **value: Any) -> Json:
    return {"name": name, **value}


def _flatten(entries: Any, parent: tuple[str, str] | None, out: list[Code]) -> None:
    """The codes of an expansion's ``contains`` tree, each with the coded entry it sits under."""
    for e in as_list(entries):
        e = as_dict(e)
        system, code = as_str(e.get("system")), as_str(e.get("code"))
        here = parent
        if system and code and not e.get("abstract"):
            out.append(Code(system, code, as_str(e.get("display")), parent, bool(e.get("inactive"))))
        if system and code:
            here = (system, code)
        _flatten(e.get("contains"), here, out)


class TerminologyClient:
    """The operations fhir-matcher needs from a terminology server, with their cost counted."""

    def __init__(self, base_url: str, transport: Transport | None = None, page_size: int = PAGE_SIZE):
        self.client = FhirClient(base_url, transport or Transport())
        self.base = self.client.base
        self.page_size = page_size

    @property
    def cost(self) -> Cost:
        return self.client.transport.cost

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------ $expand

    def expand(self, valueset: Json) -> Expansion:
        """Every code of ``valueset``'s compose, expanded by the server, across pages.

        Sends only what defines the value set (url, version, compose): the server expands
        the definition, not our stored expansion.
        """
        definition = {"resourceType": "ValueSet", "status": as_str(valueset.get("status")) or "active"}
        for key in ("url", "version", "compose"):
            if valueset.get(key) is not None:
                definition[key] = valueset[key]
        result = Expansion()
        seen: set[tuple[str, str]] = set()
        offset = 0
        name = as_str(valueset.get("id")) or as_str(valueset.get("url")) or "value set"
        paged = True
        while True:
            params = [_param("valueSet", resource=definition)]
            if paged:
                params += [_param("offset", valueInteger=offset), _param("count", valueInteger=self.page_size)]
            body = {"resourceType": "Parameters", "parameter": params}
            try:
                answer = self.client.request("POST", "ValueSet/$expand", body)
            except FhirError as e:
                if paged and offset == 0 and e.status is not None and 400 <= e.status < 500 and e.status not in (401, 403):
                    # Some servers cannot page some expansions (HAPI's in-memory expansion
                    # refuses offset with excludes, and count below the total): ask for all.
                    log.info("%s: $expand with offset/count refused (%s); asking for the whole expansion", name, e)
                    paged = False
                    continue
                raise TxError(f"{name}: $expand refused: {e}") from None
            if answer.get("resourceType") != "ValueSet":
                raise TxError(f"{name}: $expand did not answer a ValueSet (got {answer.get('resourceType')!r})")
            result.pages += 1
            expansion = as_dict(answer.get("expansion"))
            total = expansion.get("total")
            result.total = total if isinstance(total, int) else None
            page: list[Code] = []
            _flatten(expansion.get("contains"), None, page)
            fresh = [c for c in page if (c.system, c.code) not in seen]
            for c in fresh:
                seen.add((c.system, c.code))
            result.codes.extend(fresh)
            # A top-level entry counts as one code for offset/count; nested ones do not.
            entries = len(as_list(expansion.get("contains")))
            if not paged or entries == 0 or entries < self.page_size:
                break
            if result.total is not None and offset + entries >= result.total:
                break
            if not fresh:
                raise TxError(f"{name}: $expand returned the same codes again at offset {offset}: the server ignores paging (offset/count)")
            if len(result.codes) > MAX_CODES:
                raise TxError(f"{name}: $expand returned more than {MAX_CODES} codes; check the compose")
            offset += entries
        return result

    # ------------------------------------------------------------ CodeSystem operations

    def lookup(self, system: str, code: str) -> Lookup | None:
        """The code's display and whether it is inactive; None when the server does not know it."""
        query = urlencode({"system": system, "code": code})
        try:
            answer = self.client.request("GET", f"CodeSystem/$lookup?{query}")
        except FhirError as e:
            if e.status in (400, 404, 410, 422):
                return None
            raise TxError(f"$lookup {system}|{code}: {e}") from None
        props: dict[str, list[Any]] = {}
        display = None
        for p in as_list(answer.get("parameter")):
            p = as_dict(p)
            name = as_str(p.get("name"))
            if name == "display":
                display = as_str(p.get("valueString"))
            elif name == "property":
                parts = {as_str(as_dict(x).get("name")): as_dict(x) for x in as_list(p.get("part"))}
                pcode = as_str(parts.get("code", {}).get("valueCode"))
                value_part = parts.get("value", {})
                value = next((v for k, v in value_part.items() if k.startswith("value")), None)
                if pcode:
                    props.setdefault(pcode, []).append(value)
            elif name in ("inactive", "status") and name not in props:
                props[name] = [next((v for k, v in p.items() if k.startswith("value")), None)]
        inactive = any(v in (True, "true") for v in props.get("inactive", []))
        inactive = inactive or any(str(v).lower() in ("retired", "inactive", "deprecated") for v in props.get("status", []))
        return Lookup(display, inactive, props)

    def subsumes(self, system: str, code_a: str, code_b: str) -> str:
        """``equivalent``, ``subsumes`` (A is an ancestor of B), ``subsumed-by`` or ``not-subsumed``."""
        query = urlencode({"system": system, "codeA": code_a, "codeB": code_b})
        try:
            answer = self.client.request("GET", f"CodeSystem/$subsumes?{query}")
        except FhirError as e:
            if e.status in (400, 404, 422):
                return "not-subsumed"  # one of the codes is unknown to the server
            raise TxError(f"$subsumes {system} {code_a} {code_b}: {e}") from None
        for p in as_list(answer.get("parameter")):
            p = as_dict(p)
            if p.get("name") == "outcome":
                return as_str(p.get("valueCode")) or as_str(p.get("valueString")) or "not-subsumed"
        raise TxError(f"$subsumes {system} {code_a} {code_b}: no outcome in the answer")
