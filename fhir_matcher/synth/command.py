"""The command line: ``fhir-matcher synth --patients N --seed S --out DIR ...``."""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

from .population import DEFAULT_ANCHOR, DEFAULT_PREVALENCE, PREVALENCE_HELP, parse_prevalence
from .writers import generate


def _date_arg(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def add_parser(subparsers) -> None:
    """Register ``synth`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "synth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="prevalence keys (default):\n" + "\n".join(
            f"  {k:<13} {DEFAULT_PREVALENCE[k]:<6g} {text}" for k, text in PREVALENCE_HELP.items()),
        help="write a synthetic FHIR R4 population (NDJSON or transaction Bundles) for benchmarks and tests",
        description="Write N made-up patients (deterministic for the seed and start date) as Bulk Data NDJSON "
                    "or, with --bundles, transaction Bundles of 50 patients.",
    )
    p.add_argument("--patients", type=int, required=True, metavar="N", help="number of patients")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created; an earlier synth output there is replaced)")
    p.add_argument("--bundles", action="store_true", help="write transaction Bundles (bundle-0001.json ...) instead of NDJSON")
    p.add_argument("--prevalence", default=None, metavar="KEY=P,...", help="override prevalences, e.g. target=0.1,hiv=0.005 (keys below)")
    p.add_argument("--start-date", type=_date_arg, default=DEFAULT_ANCHOR, metavar="YYYY-MM-DD",
                   help="the anchor date the histories end on (default 2026-11-24; screen with --as-of the same date)")


def run(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments; print a one-line summary."""
    prevalence = parse_prevalence(getattr(args, "prevalence", None))
    anchor = getattr(args, "start_date", None) or DEFAULT_ANCHOR
    started = time.perf_counter()
    counts = generate(args.patients, args.seed, Path(args.out), bundles=args.bundles, prevalence=prevalence, anchor=anchor)
    seconds = time.perf_counter() - started
    total = counts["resources_total"]
    rate = total / seconds if seconds > 0 else float("inf")
    print(f"synth: {counts['patients']} patients, {total} resources, {counts['files']} files, "
          f"{counts['bytes'] / 1e6:.1f} MB in {seconds:.1f} s ({rate:,.0f} resources/s) -> {args.out}")
    return 0
