"""``fhir-matcher valuesets expand|check``: value sets against a terminology server.

    fhir-matcher valuesets expand --tx URL [--trial FILE ...] [--out DIR] [--config FILE]
    fhir-matcher valuesets check [--trial FILE ...] [--tx URL] [--config FILE]

Both work on the value sets the trial(s) use, read from the same folders the trial loads
(the bundled ``valuesets/`` and the trial's ``valueset_dirs``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from ..fhirjson import Json, as_dict, as_str
from ..trial import Trial, _valueset_ids, bundled_valuesets_dir, default_trial_path, load_trial, read_toml, TrialError
from .check import ERROR, Finding, check_codes, check_overlaps, check_valueset
from .expand import DIFF_FILE, diff_markdown, diff_text, dump, refresh
from .tx import TerminologyClient, TxError

TX_SCOPE = "system/CodeSystem.rs system/ValueSet.rs"


def add_parser(sub: Any, server_options: Callable[[argparse.ArgumentParser], None], verbosity: Callable[[argparse.ArgumentParser], None]) -> None:
    v = sub.add_parser("valuesets", help="refresh value set expansions from a terminology server, and check value sets")
    vsub = v.add_subparsers(dest="vs_command", required=True, metavar="ACTION")
    e = vsub.add_parser("expand", help="$expand every value set the trial uses and write the refreshed expansions and a diff")
    e.add_argument("--tx", default=None, help="terminology server FHIR base URL (or [terminology] url in --config)")
    e.add_argument("--trial", type=Path, action="append", default=None, help="trial definition TOML (repeatable; default: the bundled trial)")
    e.add_argument("--out", type=Path, default=None,
                   help="write the value sets and valuesets-diff.md here (default: rewrite each value set file in place, diff in the current folder)")
    e.add_argument("--config", type=Path, default=None, help="TOML settings ([terminology], [auth]); flags override it")
    server_options(e)
    verbosity(e)
    c = vsub.add_parser("check", help="validate the value sets the trial uses (exit 1 when a problem is found)")
    c.add_argument("--trial", type=Path, action="append", default=None, help="trial definition TOML (repeatable; default: the bundled trial)")
    c.add_argument("--tx", default=None, help="also look up every code on this terminology server (unknown or inactive codes)")
    c.add_argument("--config", type=Path, default=None, help="TOML settings ([terminology], [auth]); flags override it")
    server_options(c)
    verbosity(c)


def trial_valueset_ids(trial: Trial) -> set[str]:
    """Every value set the trial's criteria and [terminology] name."""
    ids: set[str] = set()
    for c in trial.criteria:
        ids |= _valueset_ids(c)
    ids |= {trial.non_systemic_routes, trial.positive_results, trial.negative_results}
    return {i for i in ids if i in trial.valuesets.valuesets}


def valueset_files(trial: Trial) -> dict[str, Path]:
    """The file each of the trial's value sets was loaded from (the last folder wins, as in load_trial)."""
    meta = read_toml(trial.path, "trial definition", TrialError).get("trial", {})
    dirs = [bundled_valuesets_dir()] + [(trial.path.parent / d).resolve() for d in meta.get("valueset_dirs", [])]
    files: dict[str, Path] = {}
    for d in dirs:
        for f in sorted(Path(d).glob("*.json")) if d.is_dir() else []:
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if as_dict(data).get("resourceType") == "ValueSet" and as_str(data.get("id")):
                files[data["id"]] = f
    return files


def _trials(args: argparse.Namespace, config: dict) -> list[Trial]:
    paths = args.trial or [config.get("trial", {}).get("path") or default_trial_path()]
    return [load_trial(p) for p in paths]


def _collect(trials: list[Trial]) -> tuple[dict[str, Json], dict[str, Path]]:
    valuesets: dict[str, Json] = {}
    files: dict[str, Path] = {}
    for trial in trials:
        where = valueset_files(trial)
        for vs_id in sorted(trial_valueset_ids(trial)):
            valuesets.setdefault(vs_id, trial.valuesets.valuesets[vs_id])
            if vs_id in where:
                files.setdefault(vs_id, where[vs_id])
    return valuesets, files


def tx_client(args: argparse.Namespace, config: dict, make_transport: Callable[..., Any], fhir_base: str | None = None) -> TerminologyClient | None:
    """The terminology client for ``--tx`` / ``[terminology] url``, with its own ``[terminology.auth]``,
    else ``[auth]`` when the terminology server is the FHIR server (or no FHIR server is involved)."""
    tsec = config.get("terminology", {})
    url = getattr(args, "tx", None) or tsec.get("url")
    if not url:
        return None
    if "auth" in tsec:
        auth_cfg = tsec["auth"]
    elif fhir_base is None or _origin(url) == _origin(fhir_base):
        auth_cfg = config.get("auth", {})
    else:
        auth_cfg = {}  # never send the FHIR server's credentials to another host
    return TerminologyClient(url, make_transport(args, {**config, "auth": auth_cfg}, url, TX_SCOPE))


def _origin(url: str) -> tuple[str, str]:
    from urllib.parse import urlsplit

    p = urlsplit(url)
    return (p.scheme, p.netloc)


def run(args: argparse.Namespace, load_config: Callable[[Any], dict], make_transport: Callable[..., Any]) -> int:
    config = load_config(args.config)
    try:
        if args.vs_command == "expand":
            return run_expand(args, config, make_transport)
        return run_check(args, config, make_transport)
    except TxError as e:
        print(f"fhir-matcher: error: {e}", file=sys.stderr)
        return 2


def run_expand(args: argparse.Namespace, config: dict, make_transport: Callable[..., Any]) -> int:
    tx = tx_client(args, config, make_transport)
    if tx is None:
        raise ValueError("valuesets expand needs --tx URL (or [terminology] url in --config)")
    valuesets, files = _collect(_trials(args, config))
    diffs = []
    out_dir: Path | None = args.out
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for vs_id, vs in valuesets.items():
        new, diff = refresh(vs, tx)
        diffs.append(diff)
        if diff.error:
            continue
        target = (out_dir / f"{vs_id}.json") if out_dir else files.get(vs_id)
        if target is None:
            diff.review.append("source file unknown: not written (use --out)")
            continue
        if out_dir or diff.changed:
            _write(target, dump(new))
    report = diff_markdown(diffs, tx.base)
    diff_path = (out_dir or Path.cwd()) / DIFF_FILE
    _write(diff_path, report)
    if not args.quiet:
        print(diff_text(diffs))
        added = sum(len(d.added) for d in diffs)
        removed = sum(len(d.removed) for d in diffs)
        failed = sum(1 for d in diffs if d.error)
        c = tx.cost
        print(f"{len(diffs)} value sets: {added} codes added, {removed} removed" + (f", {failed} not expanded" if failed else "")
              + f"; {c.requests} requests to {tx.base}")
        print(f"Review {diff_path} before these expansions are used" + (f" (value sets written to {out_dir})" if out_dir else " (value set files rewritten in place)"))
    return 1 if any(d.error for d in diffs) else 0


def run_check(args: argparse.Namespace, config: dict, make_transport: Callable[..., Any]) -> int:
    valuesets, files = _collect(_trials(args, config))
    findings: list[Finding] = []
    for vs_id, vs in valuesets.items():
        findings += check_valueset(vs, str(files.get(vs_id, "")))
    findings += check_overlaps(valuesets)
    tx = tx_client(args, config, make_transport)
    if tx is not None:
        known: dict[str, bool] = {}
        workers = int(getattr(args, "workers", None) or 4)
        for vs in valuesets.values():
            findings += check_codes(vs, tx, known, workers)
    errors = [f for f in findings if f.severity == ERROR]
    if not args.quiet:
        for f in findings:
            print(f)
        line = f"{len(valuesets)} value sets checked: {len(errors)} problem(s), {len(findings) - len(errors)} note(s)"
        if tx is not None:
            line += f"; {tx.cost.requests} requests to {tx.base}"
        print(line)
    elif errors:
        for f in errors:
            print(f, file=sys.stderr)
    return 1 if errors else 0


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
