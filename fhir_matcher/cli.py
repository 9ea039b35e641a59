"""Command line: ``fhir-matcher screen ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

from . import __version__, synth
from .config import ConfigError, apply_windows, load_config, setting
from .nightly.job import run_night
from .nightly.state import State, StateError, StateLocked
from .outputs.files import write_outputs, write_run_json
from .outputs.terminal import Progress, summary_text
from .engine.cohort import needed_types
from .rest.auth import AuthError, default_scope
from .rest.auth import from_config as auth_from_config
from .rest.client import FhirClient, FhirError
from .rest.loader import Loader
from .rest.transport import Transport, TransportError
from .screen import is_url, screen_bulk, screen_files, screen_server, screen_with_spark
from .trial import TrialError, default_trial_path, load_trial

log = logging.getLogger("fhir_matcher")


EXIT_DATA_PROBLEMS = 3  # the run finished, but some input was malformed or skipped (see run.json)
EXIT_LOCKED = 75  # another nightly run holds the state


class UserError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""


def _as_of(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _server_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server connection")
    g.add_argument("--timeout", type=float, default=None, help="seconds to wait for each HTTP answer (default 60)")
    g.add_argument("--retries", type=int, default=None, help="retries on 429, 5xx and connection errors (default 4)")
    g.add_argument("--workers", type=int, default=None, help="concurrent requests (default 4)")
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
    s.add_argument("--config", type=Path, default=None, help="TOML settings ([server], [auth], [trial], [windows]); flags override it")
    s.add_argument("--bulk", action="store_true", help="server: read a Bulk Data $export instead of searching")
    s.add_argument("--bulk-group", default=None, metavar="ID", help="server: export Group/ID only (implies --bulk)")
    s.add_argument("--bulk-poll-max", type=float, default=60.0, metavar="SECONDS",
                   help="longest wait between export status polls, whatever Retry-After says (default 60)")
    s.add_argument("--engine", choices=("local", "spark"), default="local", help="local (in-process, default) or spark (PySpark)")
    s.add_argument("--master", default=None, help="spark: the master URL (default: local[*], or what spark-submit says)")
    s.add_argument("--all-patients", action="store_true",
                   help="files: evaluate and list every patient, not only those with a target diagnosis")
    _server_options(s)
    _verbosity(s)

    ld = sub.add_parser("load", help="upload FHIR Bundles and NDJSON to a server as transactions")
    ld.add_argument("--server", required=True, help="FHIR R4 base URL")
    ld.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders (what screen reads)")
    ld.add_argument("--chunk", type=int, default=200, help="resources per transaction (default 200)")
    ld.add_argument("--id-prefix", default="", help="prefix every id and reference (test data on a shared server)")
    ld.add_argument("--config", type=Path, default=None, help="TOML settings ([server], [auth]); flags override it")
    _server_options(ld)
    _verbosity(ld)

    synth.add_parser(sub)

    n = sub.add_parser("nightly", help="incremental nightly screen of a server, with write-back and reports")
    n.add_argument("--server", default=None, help="FHIR R4 base URL (or [server] url in --config)")
    n.add_argument("--state", type=Path, default=None, help="SQLite state file (or [output] state)")
    n.add_argument("--out", type=Path, default=None, help="output folder (or [output] dir)")
    n.add_argument("--as-of", type=_as_of, default=None, help="evaluation date YYYY-MM-DD (default: today)")
    n.add_argument("--config", type=Path, default=None, help="TOML settings file; flags override it")
    n.add_argument("--trial", type=Path, default=None, help="trial definition TOML (or [trial] path)")
    n.add_argument("--full", action="store_true", help="re-screen every cohort patient, not only what changed")
    n.add_argument("--overlap", type=float, default=300, metavar="SECONDS",
                   help="re-read changes from this long before the last night started (default 300)")
    _server_options(n)
    _verbosity(n)
    return p


def _verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log details (may include resource references)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    if not verbose:  # urllib3 logs full URLs (with patient ids in queries) on retries
        logging.getLogger("urllib3").setLevel(logging.ERROR)


def _transport(args: argparse.Namespace, config: dict, base_url: str, scope: str) -> Transport:
    workers = setting(args, config, "workers", "server", "workers", 4)
    auth, cert = auth_from_config(config.get("auth", {}), base_url, scope)
    return Transport(
        timeout=float(setting(args, config, "timeout", "server", "timeout", 60.0)),
        retries=int(setting(args, config, "retries", "server", "retries", 4)),
        ca_bundle=setting(args, config, "ca_bundle", "server", "ca_bundle"),
        pool=max(4, int(workers) * 2),
        auth=auth,
        cert=cert,
    )


def cmd_screen(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    as_of = args.as_of or date.today()
    trial = load_trial(setting(args, config, "trial", "trial", "path"))
    apply_windows(trial, config.get("windows", {}))
    quiet = args.quiet
    progress = (None if quiet else Progress("reading  "), None if quiet else Progress("screening"))
    if args.engine == "spark":
        result = screen_with_spark(args.source, trial, as_of, args.master)
    elif is_url(args.source):
        transport = _transport(args, config, args.source, default_scope(needed_types(trial), write=False))
        workers = int(setting(args, config, "workers", "server", "workers", 4))
        tag = setting(args, config, "tag", "server", "tag") or None
        if args.bulk or args.bulk_group:
            result = screen_bulk(args.source, trial, as_of, transport, progress, tag=tag, group=args.bulk_group, poll_max=args.bulk_poll_max)
        else:
            result = screen_server(args.source, trial, as_of, transport, workers, progress, tag=tag)
    else:
        try:
            result = screen_files(args.source, trial, as_of, progress, all_patients=args.all_patients)
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
            extra.append(f"{result.outside} patients have no target diagnosis: counted as ineligible, not listed (--all-patients lists them)")
        if is_url(args.source):
            c = result.cost
            extra.append(f"HTTP: {c.requests} requests ({c.retries} retries), {c.bytes / 1e6:.2f} MB read")
        extra.append(f"Wrote {', '.join(p.name for p in paths.values())}, run.json to {args.out}")
        print(summary_text(trial, result.results, len(result.problems), extra, result.outside))
    return EXIT_DATA_PROBLEMS if result.problems else 0


def cmd_load(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    client = FhirClient(args.server, _transport(args, config, args.server, "system/*.cru"))
    client.capabilities()
    report = Loader(client, chunk=args.chunk, tag=setting(args, config, "tag", "server", "tag"), id_prefix=args.id_prefix).load(args.paths)
    if not args.quiet:
        print(f"Loaded {report.loaded} resources in {report.transactions} transactions to {args.server}")
    for where, message in report.rejected:
        print(f"rejected: {where}: {message}", file=sys.stderr)
    if report.rejected:
        print(f"{len(report.rejected)} resource(s) or file(s) rejected", file=sys.stderr)
        return 1
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    server = setting(args, config, "server", "server", "url")
    state_path = setting(args, config, "state", "output", "state")
    out = setting(args, config, "out", "output", "dir")
    missing = [name for name, v in (("--server", server), ("--state", state_path), ("--out", out)) if not v]
    if missing:
        raise UserError(f"nightly needs {', '.join(missing)} (as flags or in --config)")
    trial = load_trial(setting(args, config, "trial", "trial", "path"))
    apply_windows(trial, config.get("windows", {}))
    as_of = args.as_of or date.today()
    client = FhirClient(server, _transport(args, config, server, default_scope(needed_types(trial), write=True)))
    workers = int(setting(args, config, "workers", "server", "workers", 4))
    tag = setting(args, config, "tag", "server", "tag") or None
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        with State(state_path) as state:
            try:
                report = run_night(client, trial, state, Path(out), as_of, workers=workers, tag=tag, full=args.full, overlap=timedelta(seconds=args.overlap))
            except (FhirError, TransportError, OSError) as e:
                state.record_failure(started_at=started_at, finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), as_of=as_of, error=str(e))
                raise UserError(f"nightly run failed, nothing recorded as done (the next run redoes it): {e}") from None
    except StateLocked as e:
        print(f"fhir-matcher: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except StateError as e:
        raise UserError(str(e)) from None
    if not args.quiet:
        s = report.summary
        print(summary_text(trial, report.results, s["errors"], [
            f"Night {s['as_of']} ({s['mode']}{', ' + s['full_because'] if s['full_because'] else ''}): "
            f"{s['re_evaluated']} re-evaluated, {s['new_candidates']} new candidate(s), {s['dropped']} dropped, {s['written']} ResearchSubject(s) written",
            f"People's decisions on the server: {sum(s['decisions'].values())}"
            + (f" ({', '.join(f'{n} {st}' for st, n in s['decisions'].items())})" if s["decisions"] else "")
            + f"; needs review: {len(s['needs_review'])}" + (" (see report.html; a Task on the server each)" if s["needs_review"] else ""),
            f"HTTP: {s['http']['requests']} requests, {s['http']['bytes'] / 1e6:.2f} MB read; {s['duration_s']:.1f} s",
            f"Wrote report.html, report.csv, screening.ndjson, research-subjects.json, run.json to {out}",
        ]))
    return EXIT_DATA_PROBLEMS if report.summary["errors"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    try:
        return {"screen": cmd_screen, "load": cmd_load, "nightly": cmd_nightly, "synth": synth.run}[args.command](args)
    except (UserError, TrialError, FhirError, TransportError, ConfigError, AuthError, ValueError) as e:
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
