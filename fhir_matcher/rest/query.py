"""FHIR searches as small immutable, composable query objects.

    Search("Observation").where(patient=["a", "b"]).where(date="ge2026-10-25").count(500)

Values given as lists are joined with commas (FHIR "or"); repeated keys are kept in order.
``chunked`` splits a long "or" list over several searches so every URL stays under a limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence
from urllib.parse import urlencode


@dataclass(frozen=True)
class Search:
    resource_type: str
    params: tuple[tuple[str, str], ...] = ()

    def where(self, **kwargs: str | Sequence[str]) -> "Search":
        extra = []
        for key, value in kwargs.items():
            key = key.replace("__", ":")  # code__text="x" -> code:text=x
            extra.append((key, value if isinstance(value, str) else ",".join(value)))
        return Search(self.resource_type, self.params + tuple(extra))

    def param(self, key: str, value: str) -> "Search":
        return Search(self.resource_type, self.params + ((key, value),))

    def count(self, n: int) -> "Search":
        return self.param("_count", str(n))

    def elements(self, *names: str) -> "Search":
        return self.param("_elements", ",".join(names))

    def include(self, what: str) -> "Search":
        return self.param("_include", what)

    def query_string(self) -> str:
        return urlencode(self.params, safe=",:|/")

    def url(self, base: str) -> str:
        qs = self.query_string()
        return f"{base.rstrip('/')}/{self.resource_type}" + (f"?{qs}" if qs else "")

    def chunked(self, key: str, values: Sequence[str], max_url: int = 1900, base: str = "") -> Iterator["Search"]:
        """This search with ``key`` set to successive slices of ``values``, each URL within ``max_url``."""
        room = max_url - len(self.url(base)) - len(key) - 2
        chunk: list[str] = []
        size = 0
        for v in values:
            cost = len(urlencode({"": v}, safe=",:|/")) + 1
            if chunk and size + cost > room:
                yield self.where(**{key: chunk})
                chunk, size = [], 0
            chunk.append(v)
            size += cost
        if chunk:
            yield self.where(**{key: chunk})
