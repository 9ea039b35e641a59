"""``fhir-matcher valuesets expand``: refresh the stored expansions from a terminology server.

For each value set the trial uses, the server expands its ``compose``; the result is merged
into the project's format (see valuesets/README.md):

- top-level concepts are kept as they are (names, designations, extensions, order);
- a code the server no longer returns is removed from under its concept (a top-level code
  the server does not return is kept and named for review);
- a new code is placed under the top-level concept it descends from: the server's own
  hierarchy (nested ``contains``) when it gives one, else ``CodeSystem/$subsumes`` against
  the concept's codes and the compose's ``is-a`` anchors inside that concept; a code with no
  ancestor found becomes its own top-level entry and is named for review;
- every code of the new expansion is listed in ``compose`` (the rule ``check`` enforces).

Nothing is decided silently: the differences are printed and written to
``valuesets-diff.md`` for a person to approve.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from ..fhirjson import Json, as_dict, as_list, as_str
from .tx import Code, TerminologyClient, TxError
from .valuesets import normalize_system, prefix_family

DIFF_FILE = "valuesets-diff.md"
_ANCESTOR_OPS = ("is-a", "descendent-of", "descendant-of")


@dataclass
class ValueSetDiff:
    id: str
    added: list[tuple[str, str, str, str]] = field(default_factory=list)  # system, code, display, placed under
    removed: list[tuple[str, str, str]] = field(default_factory=list)  # system, code, display
    review: list[str] = field(default_factory=list)  # what a person must look at
    error: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def _key(system: Any, code: Any) -> tuple[str, str] | None:
    s, c = normalize_system(as_str(system)), as_str(code)
    return (s, c) if s and c else None


def _walk(entries: Any) -> Iterable[Json]:
    for e in as_list(entries):
        e = as_dict(e)
        yield e
        yield from _walk(e.get("contains"))


def anchors(vs: Json) -> list[tuple[str, str]]:
    """The (system, code) values of the compose's is-a / descendent-of filters."""
    out = []
    for inc in as_list(as_dict(vs.get("compose")).get("include")):
        inc = as_dict(inc)
        for f in as_list(inc.get("filter")):
            f = as_dict(f)
            if f.get("op") in _ANCESTOR_OPS and f.get("property") in ("concept", "code", None) and _key(inc.get("system"), f.get("value")):
                out.append(_key(inc.get("system"), f.get("value")))  # type: ignore[arg-type]
    return out


class Placer:
    """Finds the top-level concept a new code descends from (cached per run)."""

    def __init__(self, vs: Json, tx: TerminologyClient, server_parent: dict[tuple[str, str], tuple[str, str] | None]):
        self.tops = [as_dict(t) for t in as_list(as_dict(vs.get("expansion")).get("contains"))]
        self.tx = tx
        self.server_parent = server_parent
        self.owner: dict[tuple[str, str], int] = {}
        for i, top in enumerate(self.tops):
            for e in _walk([top]):
                k = _key(e.get("system"), e.get("code"))
                if k:
                    self.owner.setdefault(k, i)
        # anchors to test with $subsumes: each top-level code, then the is-a values it holds
        self.candidates: list[tuple[int, tuple[str, str]]] = []
        for i, top in enumerate(self.tops):
            k = _key(top.get("system"), top.get("code"))
            if k:
                self.candidates.append((i, k))
        for a in anchors(vs):
            if a in self.owner and (self.owner[a], a) not in self.candidates:
                self.candidates.append((self.owner[a], a))

    def place(self, key: tuple[str, str]) -> int | None:
        # 1. the server's hierarchy: the nearest ancestor we already hold
        seen = set()
        parent = self.server_parent.get(key)
        while parent and parent not in seen:
            seen.add(parent)
            if parent in self.owner:
                return self.owner[parent]
            parent = self.server_parent.get(parent)
        # 2. $subsumes against the concept codes and anchors of the same system
        for i, (system, code) in self.candidates:
            if system != key[0] or prefix_family(system):
                continue
            if self.tx.subsumes(system, code, key[1]) in ("subsumes", "equivalent"):
                return i
        return None


def refresh(vs: Json, tx: TerminologyClient) -> tuple[Json, ValueSetDiff]:
    """The value set with its expansion refreshed from ``tx``, and what changed."""
    vs_id = as_str(vs.get("id")) or "?"
    diff = ValueSetDiff(vs_id)
    includes = [as_dict(i) for i in as_list(as_dict(vs.get("compose")).get("include"))]
    if not includes:
        diff.error = "no compose.include: nothing to expand"
        return vs, diff
    expansion = expand_compose(vs, tx, diff)
    if expansion is None:
        return vs, diff
    covered, codes = expansion
    server = {(normalize_system(c.system) or c.system, c.code): c for c in codes}
    # A server that silently returns nothing for a system it does not hold must not empty it.
    returned = {k[0] for k in server}
    stored = {k[0] for k in (_key(e.get("system"), e.get("code")) for e in _walk(as_dict(vs.get("expansion")).get("contains"))) if k}
    for system in sorted((covered & stored) - returned):
        covered.discard(system)
        diff.review.append(f"the server returned no {system} code; those codes were kept as they are")
    server_parent = {k: (_key(*c.parent) if c.parent else None) for k, c in server.items()}

    new = copy.deepcopy(vs)
    tops = [as_dict(t) for t in as_list(as_dict(new.get("expansion")).get("contains"))]
    held: set[tuple[str, str]] = set()
    # removals: nested codes of an expanded system that the server no longer returns
    for top in tops:
        k = _key(top.get("system"), top.get("code"))
        if k:
            held.add(k)
            if k[0] in covered and k not in server:
                diff.review.append(f"top-level concept {k[0]}|{k[1]} ({top.get('display')}) is not in the server's expansion; kept, check it")
        top["contains"] = _prune(top.get("contains"), covered, server, held, diff)
        if not top["contains"]:
            del top["contains"]
    # additions, in the server's order
    placer = Placer(new, tx, server_parent)
    for k, c in server.items():
        if k in held:
            continue
        where = placer.place(k)
        entry = {"system": c.system, "code": c.code}
        if c.display:
            entry["display"] = c.display
        if where is None:
            tops.append(entry)
            placer.owner[k] = len(tops) - 1
            placer.tops = tops
            diff.added.append((c.system, c.code, c.display or "", "(new top-level entry)"))
            diff.review.append(f"{c.system}|{c.code} ({c.display}) descends from no concept of this value set: added at top level, give it names or move it")
        else:
            tops[where].setdefault("contains", []).append(entry)
            placer.owner[k] = where
            diff.added.append((c.system, c.code, c.display or "", str(tops[where].get("display") or tops[where].get("code"))))
        held.add(k)
        if c.inactive:
            diff.review.append(f"{c.system}|{c.code} ({c.display}) is inactive on the server")
    exp = as_dict(new.setdefault("expansion", {}))
    exp["contains"] = tops
    if diff.changed or "timestamp" not in exp:
        exp["timestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        exp["identifier"] = f"urn:uuid:{uuid.uuid4()}"
    exp["total"] = sum(1 for e in _walk(tops) if _key(e.get("system"), e.get("code")))
    _sync_compose(new, diff)
    return new, diff


def expand_compose(vs: Json, tx: TerminologyClient, diff: ValueSetDiff) -> tuple[set[str], list[Code]] | None:
    """The server's expansion of the whole compose; when the server refuses it (often: a
    system it does not hold, such as ICD-10), each include is expanded on its own and the
    systems it cannot expand are left as they are."""
    try:
        result = tx.expand(vs)
        systems = {normalize_system(as_str(as_dict(i).get("system"))) for i in as_list(as_dict(vs.get("compose")).get("include"))}
        return {s for s in systems if s}, result.codes
    except TxError as whole:
        first_error = str(whole)
    compose = as_dict(vs.get("compose"))
    covered: set[str] = set()
    failed: dict[str, str] = {}
    codes: list[Code] = []
    by_system: dict[str, list[Json]] = {}
    for inc in as_list(compose.get("include")):
        system = normalize_system(as_str(as_dict(inc).get("system")))
        if system:
            by_system.setdefault(system, []).append(inc)
    for system, incs in by_system.items():
        part = dict(vs)
        part["compose"] = {"include": incs, "exclude": [e for e in as_list(compose.get("exclude")) if normalize_system(as_str(as_dict(e).get("system"))) == system]}
        if not part["compose"]["exclude"]:
            del part["compose"]["exclude"]
        try:
            codes += tx.expand(part).codes
            covered.add(system)
        except TxError as e:
            failed[system] = str(e).split(": ", 1)[-1]
    if not covered:
        diff.error = first_error
        return None
    for system, why in failed.items():
        diff.review.append(f"{system} not expanded by the server ({why}); its codes were kept as they are")
    return covered, codes


def _prune(entries: Any, covered: set[str], server: dict, held: set, diff: ValueSetDiff) -> list[Json]:
    out = []
    for e in as_list(entries):
        e = as_dict(e)
        k = _key(e.get("system"), e.get("code"))
        children = _prune(e.get("contains"), covered, server, held, diff)
        if k and k[0] in covered and k not in server:
            diff.removed.append((k[0], k[1], as_str(e.get("display")) or ""))
            out.extend(children)  # its own children, if any, move up
            continue
        if children:
            e["contains"] = children
        else:
            e.pop("contains", None)
        if k:
            held.add(k)
        out.append(e)
    return out


def _sync_compose(vs: Json, diff: ValueSetDiff) -> None:
    """List every added code in compose and drop the removed ones from its concept lists."""
    compose = as_dict(vs.get("compose"))
    includes = as_list(compose.get("include"))
    removed = {(normalize_system(s), c) for s, c, _ in diff.removed}
    for inc in includes:
        if "concept" in inc:
            system = normalize_system(as_str(inc.get("system")))
            inc["concept"] = [c for c in as_list(inc["concept"]) if (system, as_str(as_dict(c).get("code"))) not in removed]
    listed = set()
    for inc in includes:
        system = normalize_system(as_str(as_dict(inc).get("system")))
        for c in as_list(as_dict(inc).get("concept")):
            listed.add((system, as_str(as_dict(c).get("code"))))
    for system, code, display, _ in diff.added:
        if (normalize_system(system), code) in listed:
            continue
        target = next((i for i in includes if normalize_system(as_str(i.get("system"))) == normalize_system(system)
                       and "filter" not in i and "valueSet" not in i), None)
        if target is None:
            target = {"system": system, "concept": []}
            includes.append(target)
        target.setdefault("concept", []).append({"code": code, **({"display": display} if display else {})})
        listed.add((normalize_system(system), code))
    compose["include"] = [i for i in includes if not ("concept" in i and not i["concept"] and "filter" not in i and "valueSet" not in i)]


def dump(vs: Json) -> str:
    """The project's file format: 2-space JSON, UTF-8 names as they are."""
    return json.dumps(vs, indent=2, ensure_ascii=False) + "\n"


def diff_markdown(diffs: list[ValueSetDiff], tx_url: str) -> str:
    lines = [f"# Value set expansion from {tx_url}", "",
             "Review every line, then keep the rewritten files (or discard them).", ""]
    for d in diffs:
        lines.append(f"## {d.id}: {len(d.added)} added, {len(d.removed)} removed" + (" (not expanded)" if d.error else ""))
        lines.append("")
        if d.error:
            lines.append(f"- not expanded: {d.error}")
        for s, c, disp, under in d.added:
            lines.append(f"- added `{s}|{c}` {disp} — under {under}")
        for s, c, disp in d.removed:
            lines.append(f"- removed `{s}|{c}` {disp}")
        for r in d.review:
            lines.append(f"- review: {r}")
        if not (d.error or d.added or d.removed or d.review):
            lines.append("- no change")
        lines.append("")
    return "\n".join(lines)


def diff_text(diffs: list[ValueSetDiff]) -> str:
    lines = []
    for d in diffs:
        if d.error:
            lines.append(f"{d.id}: NOT EXPANDED: {d.error}")
            continue
        lines.append(f"{d.id}: +{len(d.added)} -{len(d.removed)}" + (f" ({len(d.review)} to review)" if d.review else ""))
        for s, c, disp, under in d.added:
            lines.append(f"  + {s}|{c} {disp}  [under {under}]")
        for s, c, disp in d.removed:
            lines.append(f"  - {s}|{c} {disp}")
        for r in d.review:
            lines.append(f"  ! {r}")
    return "\n".join(lines)
