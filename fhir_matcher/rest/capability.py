"""What a server's CapabilityStatement says it offers, and how a refused strategy is told.

Hospital EHR endpoints (Epic, Oracle Health) allow only patient-scoped searches and Group-level
Bulk export. When the matcher's default strategy (a patient-less Condition scan, system-level
``$export``) meets such a server, the run stops with one line that names the server's own
message and the options that work there, never a traceback or a bare HTTP error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..fhirjson import Json, as_dict, as_list, as_str
from .client import FhirError

# Answers that mean "not this kind of request" (not "who are you": 401/403 stay auth errors).
REFUSAL_STATUSES = frozenset({400, 404, 405, 422, 501})

LIST_OPTIONS = "--group ID (a Group of patients on the server), --patients FILE (one Patient/<id> per line) or --bulk-group ID (Group Bulk export)"


class StrategyRefused(FhirError):
    """The server does not allow this way of reading the population; the message says what does."""


def is_refusal(error: FhirError) -> bool:
    return error.status in REFUSAL_STATUSES


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def search_refused(error: FhirError | None, what: str = "searches that name no patient") -> StrategyRefused:
    said = f" ({_one_line(str(error))})" if error is not None else " (its CapabilityStatement offers no such search)"
    return StrategyRefused(f"the server refuses {what}{said}; screen a patient list there: {LIST_OPTIONS}",
                           error.status if error is not None else None, error.outcome if error is not None else None)


def export_refused(error: FhirError | None) -> StrategyRefused:
    said = f" ({_one_line(str(error))})" if error is not None else " (its CapabilityStatement offers only Group export)"
    return StrategyRefused(f"the server refuses system-level $export{said}; export a Group there: --bulk-group ID "
                           f"(or search a patient list: --group ID, --patients FILE)",
                           error.status if error is not None else None, error.outcome if error is not None else None)


@dataclass
class Capabilities:
    types: set[str] = field(default_factory=set)  # resource types listed (empty: not said)
    interactions: dict[str, set[str]] = field(default_factory=dict)  # type -> interaction codes, when listed
    system_operations: set[str] = field(default_factory=set)
    type_operations: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, cs: Json) -> "Capabilities":
        caps = cls()
        for rest in as_list(cs.get("rest")):
            rest = as_dict(rest)
            if as_str(rest.get("mode")) not in (None, "server"):
                continue
            caps.system_operations |= {n.lstrip("$") for n in (as_str(as_dict(o).get("name")) for o in as_list(rest.get("operation"))) if n}
            for res in as_list(rest.get("resource")):
                res = as_dict(res)
                t = as_str(res.get("type"))
                if not t:
                    continue
                caps.types.add(t)
                codes = {c for c in (as_str(as_dict(i).get("code")) for i in as_list(res.get("interaction"))) if c}
                if codes:
                    caps.interactions[t] = codes
                ops = {n.lstrip("$") for n in (as_str(as_dict(o).get("name")) for o in as_list(res.get("operation"))) if n}
                if ops:
                    caps.type_operations[t] = ops
        return caps

    def supports(self, rtype: str) -> bool:
        return not self.types or rtype in self.types

    def can_search(self, rtype: str) -> bool:
        """False only when the server lists the type's interactions and search-type is not one."""
        codes = self.interactions.get(rtype)
        return codes is None or "search-type" in codes

    def system_export(self) -> bool | None:
        """Whether system-level $export is offered; None when the statement names no operations."""
        if not self.system_operations and not self.type_operations:
            return None
        return "export" in self.system_operations

    def group_export(self) -> bool | None:
        if not self.system_operations and not self.type_operations:
            return None
        return "export" in self.type_operations.get("Group", set())
