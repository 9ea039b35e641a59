"""Upload Bundles and NDJSON (what ``screen`` reads) to a FHIR server as transactions.

Every resource that has an id is written with ``PUT Type/id``, so loading twice updates
instead of duplicating, and the server's ids are the files' ids (the same evidence references
either way). ``urn:uuid:`` references inside a Bundle are rewritten to those ids. Resources
without an id are POSTed. NDJSON Patients and Medications go first, so references resolve.
When a transaction is refused, its entries are retried as a batch to name each rejected
resource with the server's OperationOutcome message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..fhirjson import Json, as_dict, as_str, iter_entries
from ..sources.files import input_files, parse_file
from .client import FhirClient, FhirError, outcome_text

FIRST = ("Patient", "Medication", "Practitioner", "Organization", "Location", "Encounter")


@dataclass
class Item:
    where: str
    resource: Json
    full_url: str | None = None


@dataclass
class LoadReport:
    loaded: int = 0
    transactions: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (where, server message)


def _rewrite(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, refs) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in refs:
            out["reference"] = refs[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, refs) for v in value]
    return value


def _entry(item: Item) -> Json:
    r = item.resource
    rtype, rid = r.get("resourceType"), as_str(r.get("id"))
    entry: Json = {"resource": r, "request": {"method": "PUT", "url": f"{rtype}/{rid}"} if rid else {"method": "POST", "url": rtype}}
    if item.full_url and not rid:
        entry["fullUrl"] = item.full_url
    return entry


def _prefixed(value: Any, prefix: str) -> Any:
    """Prefix every resource id and relative ``Type/id`` reference (test data on shared servers)."""
    if isinstance(value, dict):
        out = {k: _prefixed(v, prefix) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and "/" in ref and not ref.startswith(("urn:", "#", "http")):
            rtype, rid = ref.split("/", 1)
            out["reference"] = f"{rtype}/{prefix}{rid}"
        return out
    if isinstance(value, list):
        return [_prefixed(v, prefix) for v in value]
    return value


class Loader:
    """Uploads files; ``tag`` (``system|code``) is added to every resource's meta, ``id_prefix``
    to every id and reference (so test data can share a server with other people's data)."""

    def __init__(
        self,
        client: FhirClient,
        *,
        chunk: int = 200,
        problem: Callable[[str, str], None] | None = None,
        tag: str | None = None,
        id_prefix: str = "",
    ):
        self.client = client
        self.chunk = chunk
        self.report = LoadReport()
        self._problem = problem
        self.tag = tag
        self.id_prefix = id_prefix

    def _prepare(self, resource: Json) -> Json:
        if self.id_prefix:
            resource = _prefixed(resource, self.id_prefix)
            if as_str(resource.get("id")):
                resource["id"] = self.id_prefix + resource["id"]
        if self.tag:
            system, _, code = self.tag.partition("|")
            meta = dict(as_dict(resource.get("meta")))
            meta["tag"] = list(meta.get("tag") or []) + [{"system": system, "code": code}]
            resource = {**resource, "meta": meta}
        return resource

    def reject(self, where: str, message: str) -> None:
        self.report.rejected.append((where, message))
        if self._problem:
            self._problem(where, message)

    # ------------------------------------------------------------ reading

    def _bundle_items(self, bundle: Json, where: str) -> list[Item]:
        items = []
        refs: dict[str, str] = {}
        for i, (full_url, res) in enumerate(iter_entries(bundle)):
            if not isinstance(res, dict) or not res.get("resourceType"):
                if res is not None:
                    self.reject(f"{where} entry {i}", "not a FHIR resource")
                continue
            res = self._prepare(res)
            if full_url and as_str(res.get("id")):
                refs[full_url] = f"{res['resourceType']}/{res['id']}"
            items.append(Item(f"{where} entry {i}", res, full_url))
        for item in items:
            item.resource = _rewrite(item.resource, refs)
        return items

    def load(self, paths: Iterable[Path]) -> LoadReport:
        loose: list[Item] = []
        for path in paths:
            if not path.exists():
                self.reject(str(path), "no such file or directory")
                continue
            for file in input_files(path):
                for where, data in parse_file(file, self.reject):
                    if not isinstance(data, dict) or not data.get("resourceType"):
                        self.reject(where, "not a FHIR resource")
                    elif data["resourceType"] == "Bundle":
                        self._send(self._bundle_items(data, where))
                    else:
                        loose.append(Item(where, self._prepare(data)))
        order = {t: i for i, t in enumerate(FIRST)}
        loose.sort(key=lambda it: order.get(it.resource["resourceType"], len(order)))
        for i in range(0, len(loose), self.chunk):
            self._send(loose[i : i + self.chunk])
        return self.report

    # ------------------------------------------------------------ writing

    def _send(self, items: list[Item]) -> None:
        for i in range(0, len(items), self.chunk):
            part = items[i : i + self.chunk]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [_entry(it) for it in part]}
            self.report.transactions += 1
            try:
                self.client.transaction(bundle)
                self.report.loaded += len(part)
            except FhirError as e:
                if e.status is None or e.status >= 500:
                    raise
                self._as_batch(part)

    def _as_batch(self, items: list[Item]) -> None:
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [_entry(it) for it in items]}
        try:
            answer = self.client.transaction(bundle)
        except FhirError as e:
            if e.status is None or e.status >= 500:
                raise
            # The server refused the whole batch (e.g. one entry does not parse): one by one.
            for item in items:
                self._one(item)
            return
        for item, entry in zip(items, answer.get("entry") or []):
            response = as_dict(as_dict(entry).get("response"))
            status = as_str(response.get("status")) or ""
            if status[:1] in ("2",):
                self.report.loaded += 1
            else:
                message = outcome_text(response.get("outcome")) or status or "rejected"
                rtype, rid = item.resource.get("resourceType"), item.resource.get("id", "(no id)")
                self.reject(f"{item.where} ({rtype}/{rid})", message)

    def _one(self, item: Item) -> None:
        entry = _entry(item)
        try:
            self.client.request(entry["request"]["method"], entry["request"]["url"], item.resource)
            self.report.loaded += 1
        except FhirError as e:
            if e.status is None or e.status >= 500:
                raise
            rtype, rid = item.resource.get("resourceType"), item.resource.get("id", "(no id)")
            self.reject(f"{item.where} ({rtype}/{rid})", outcome_text(e.outcome) or str(e))
