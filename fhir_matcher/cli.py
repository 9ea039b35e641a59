"""Command line: ``fhir-matcher screen ...``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import date
from pathlib import Path
from typing import Sequence

from . import __version__
from .engine.evaluate import evaluate
from .outputs.files import write_outputs, write_run_json
from .outputs.terminal import Progress, summary_text
from .sources.files import FileSource
from .trial import TrialError, default_trial_path, load_trial

log = logging.getLogger("fhir_matcher")


class UserError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""


def _as_of(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fhir-matcher", description="Screen FHIR R4 patients for clinical-trial eligibility.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("screen", help="screen patients from files (or a server) and write the outputs")
    s.add_argument("--source", required=True, help="a FHIR JSON/NDJSON file or a folder of them")
    s.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    s.add_argument("--as-of", type=_as_of, default=None, help="evaluation date YYYY-MM-DD (default: today)")
    s.add_argument("--trial", type=Path, default=None, help=f"trial definition TOML (default: {default_trial_path().name})")
    s.add_argument("-v", "--verbose", action="store_true", help="log details (may include resource references)")
    s.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)


def cmd_screen(args: argparse.Namespace) -> int:
    started = time.monotonic()
    as_of = args.as_of or date.today()
    trial = load_trial(args.trial)
    source = FileSource(args.source)
    try:
        source.read(Progress("reading ") if not args.quiet else None)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    records = list(source.builder.records())
    progress = Progress("screening") if not args.quiet else None
    results = []
    for n, record in enumerate(records, 1):
        results.append(evaluate(record, trial, as_of))
        if progress:
            progress(n, len(records))
    problems = [str(p) for p in source.builder.problems]
    try:
        paths = write_outputs(args.out, trial, results, as_of, str(args.source), problems)
    except OSError as e:
        raise UserError(f"{args.out}: cannot write outputs ({e.strerror or e})") from None
    counts = {s: sum(1 for r in results if r.status == s) for s in ("candidate", "potential-candidate", "ineligible")}
    summary = {
        "command": "screen",
        "trial": trial.id,
        "as_of": as_of.isoformat(),
        "source": str(args.source),
        "screened": len(results),
        "statuses": counts,
        "problems": problems,
        "http": {"requests": 0, "bytes": 0},
        "duration_s": round(time.monotonic() - started, 3),
    }
    write_run_json(args.out, summary)
    if not args.quiet:
        print(summary_text(trial, results, len(problems), [f"Wrote {', '.join(p.name for p in paths.values())}, run.json to {args.out}"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    try:
        return {"screen": cmd_screen}[args.command](args)
    except (UserError, TrialError) as e:
        print(f"fhir-matcher: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fhir-matcher: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # never a traceback for the user; -v shows it
        log.debug("unexpected error", exc_info=True)
        print(f"fhir-matcher: internal error: {type(e).__name__}: {e} (run with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
