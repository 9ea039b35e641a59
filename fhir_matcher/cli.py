"""Command line: ``fhir-matcher screen ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path
from typing import Sequence

from . import __version__
from .outputs.files import write_outputs, write_run_json
from .outputs.terminal import Progress, summary_text
from .rest.client import FhirClient, FhirError
from .rest.loader import Loader
from .rest.transport import Transport, TransportError
from .screen import is_url, screen_files, screen_server
from .trial import TrialError, default_trial_path, load_trial

log = logging.getLogger("fhir_matcher")


class UserError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""


def _as_of(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _server_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server connection")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each HTTP answer (default 60)")
    g.add_argument("--retries", type=int, default=4, help="retries on 429, 5xx and connection errors (default 4)")
    g.add_argument("--workers", type=int, default=4, help="concurrent requests (default 4)")
    g.add_argument("--ca-bundle", default=None, help="CA certificates (PEM) to verify the server with; verification is always on")
    g.add_argument("--tag", default=None, metavar="SYSTEM|CODE", help="screen: only resources with this meta.tag; load: add it to every resource")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fhir-matcher", description="Screen FHIR R4 patients for clinical-trial eligibility.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("screen", help="screen patients from files or a FHIR server and write the outputs")
    s.add_argument("--source", required=True, help="a FHIR JSON/NDJSON file, a folder of them, or a FHIR R4 base URL")
    s.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    s.add_argument("--as-of", type=_as_of, default=None, help="evaluation date YYYY-MM-DD (default: today)")
    s.add_argument("--trial", type=Path, default=None, help=f"trial definition TOML (default: {default_trial_path().name})")
    _server_options(s)
    _verbosity(s)

    ld = sub.add_parser("load", help="upload FHIR Bundles and NDJSON to a server as transactions")
    ld.add_argument("--server", required=True, help="FHIR R4 base URL")
    ld.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders (what screen reads)")
    ld.add_argument("--chunk", type=int, default=200, help="resources per transaction (default 200)")
    _server_options(ld)
    _verbosity(ld)
    return p


def _verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log details (may include resource references)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    if not verbose:  # urllib3 logs full URLs (with patient ids in queries) on retries
        logging.getLogger("urllib3").setLevel(logging.ERROR)


def _transport(args: argparse.Namespace) -> Transport:
    return Transport(timeout=args.timeout, retries=args.retries, ca_bundle=args.ca_bundle, pool=max(4, args.workers * 2))


def cmd_screen(args: argparse.Namespace) -> int:
    as_of = args.as_of or date.today()
    trial = load_trial(args.trial)
    quiet = args.quiet
    progress = (None if quiet else Progress("reading  "), None if quiet else Progress("screening"))
    if is_url(args.source):
        result = screen_server(args.source, trial, as_of, _transport(args), args.workers, progress, tag=args.tag)
    else:
        try:
            result = screen_files(args.source, trial, as_of, progress)
        except FileNotFoundError as e:
            raise UserError(str(e)) from None
    try:
        paths = write_outputs(args.out, trial, result.results, as_of, args.source, result.problems, outside=result.outside)
        write_run_json(args.out, {"command": "screen", **result.summary()})
    except OSError as e:
        raise UserError(f"{args.out}: cannot write outputs ({e.strerror or e})") from None
    if not quiet:
        extra = []
        if result.outside:
            extra.append(f"{result.outside} patients on the server have no target diagnosis (not fetched)")
        if is_url(args.source):
            c = result.cost
            extra.append(f"HTTP: {c.requests} requests ({c.retries} retries), {c.bytes / 1e6:.2f} MB read")
        extra.append(f"Wrote {', '.join(p.name for p in paths.values())}, run.json to {args.out}")
        print(summary_text(trial, result.results, len(result.problems), extra))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    client = FhirClient(args.server, _transport(args))
    client.capabilities()
    report = Loader(client, chunk=args.chunk, tag=args.tag).load(args.paths)
    if not args.quiet:
        print(f"Loaded {report.loaded} resources in {report.transactions} transactions to {args.server}")
    for where, message in report.rejected:
        print(f"rejected: {where}: {message}", file=sys.stderr)
    if report.rejected:
        print(f"{len(report.rejected)} resource(s) or file(s) rejected", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    try:
        return {"screen": cmd_screen, "load": cmd_load}[args.command](args)
    except (UserError, TrialError, FhirError, TransportError) as e:
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
