"""``fhir-matcher trial check`` and ``trial export``: a site's trial file, checked and shared."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .trial import default_trial_path, load_trial
from .trial_check import check_trial
from .trial_export import trial_bundle


def add_parser(sub: argparse._SubParsersAction, epilog: str) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    t = sub.add_parser("trial", help="check a trial definition, or export it as FHIR R4", epilog=epilog, formatter_class=raw)
    tsub = t.add_subparsers(dest="trial_command", required=True, metavar="ACTION")
    c = tsub.add_parser("check", help="load a trial and its value sets; list criteria, value sets and every problem (exit 1 if any)")
    c.add_argument("path", type=Path, nargs="?", default=None, metavar="PATH", help=f"trial definition TOML (default: {default_trial_path().name})")
    c.add_argument("--strict", action="store_true", help="also fail on names shared by value sets of different criteria")
    c.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    e = tsub.add_parser("export", help="write the trial as FHIR R4: ResearchStudy, enrollment Group, value sets (a collection Bundle)")
    e.add_argument("path", type=Path, nargs="?", default=None, metavar="PATH", help=f"trial definition TOML (default: {default_trial_path().name})")
    e.add_argument("--out", required=True, type=Path, help="the Bundle file to write (JSON)")


def run(args: argparse.Namespace) -> int:
    if args.trial_command == "check":
        report = check_trial(args.path)
        if not args.quiet:
            print("\n".join(report.lines))
            if report.notes:
                print(f"\nNames shared by value sets of different criteria ({len(report.notes)}; a concept may rightly be in both):")
                print("\n".join(f"  {n}" for n in report.notes))
        problems = report.problems + ([f"{args.path or default_trial_path()}: {n}" for n in report.notes] if args.strict else [])
        for line in problems:
            print(f"problem: {line}", file=sys.stderr)
        if problems:
            print(f"{len(problems)} problem(s) found", file=sys.stderr)
            return 1
        if not args.quiet:
            print("\nOK: no problems found")
        return 0
    trial = load_trial(args.path)
    bundle = trial_bundle(trial)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{args.out}: cannot write ({err.strerror or err})") from None
    groups = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Group")
    chars = sum(len(e["resource"].get("characteristic", [])) for e in bundle["entry"] if e["resource"]["resourceType"] == "Group")
    print(f"Wrote {args.out}: ResearchStudy, {groups} Group with {chars} characteristics, {len(bundle['entry']) - 2} value sets")
    return 0
