"""Command line: ``fhir-matcher screen ...``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

from . import __version__, gcmode, synth
from .config import ConfigError, apply_windows_all, load_config, setting
from .nightly.job import run_night
from .nightly.state import State, StateError, StateLocked
from .outputs.files import write_outputs, write_private, write_run_json
from .outputs.match import match_bundle, match_reason
from .outputs.portfolio import write_portfolio
from .outputs.terminal import Progress, night_text, summary_text
from .criteria.cohort import needed_types
from .rest.auth import AuthError, default_scope
from .rest.auth import from_config as auth_from_config
from .rest.client import FhirClient, FhirError
from .rest.loader import Loader
from .rest.transport import Transport, TransportError
from .screen import (
    is_url,
    match_patient,
    match_record_files,
    match_record_server,
    screen_server,
    screen_server_many,
    screen_with_spark,
)
from .trial import TrialError, default_trial_path, load_trials
from . import screen_bounded, trial_commands
from .terminology import commands as valuesets_commands
from .sources.patients import resolve_patient_list
from .web import commands as web_commands

log = logging.getLogger("fhir_matcher")


EXIT_DATA_PROBLEMS = 3  # the run finished, but some input was malformed or skipped (see run.json)
EXIT_LOCKED = 75  # another nightly run holds the state

EXIT_CODES = {  # shown in --help and the README; tests/test_exit_codes.py reaches each one
    0: "done",
    1: "internal error (run with -v for details); for load also: the server rejected some resources; for trial check and valuesets check: problems were found, each named",
    2: "a problem to fix: a wrong option, config, trial file or credentials, an unreachable or refusing server; nothing recorded as done",
    3: "done, but some input was malformed or skipped (listed in run.json and the report)",
    75: "another nightly run holds the state file (try again later)",
    130: "interrupted (Ctrl-C)",
}


def _exit_epilog(*codes: int) -> str:
    return "exit codes:\n" + "\n".join(textwrap.fill(EXIT_CODES[c], 79, initial_indent=f"  {c:<4} ", subsequent_indent=" " * 7) for c in codes)


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
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="fhir-matcher", description="Screen FHIR R4 patients for clinical-trial eligibility.",
                                epilog=_exit_epilog(*EXIT_CODES), formatter_class=raw)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("screen", help="screen patients from files or a FHIR server and write the outputs",
                       epilog=_exit_epilog(0, 1, 2, 3, 130), formatter_class=raw)
    s.add_argument("--source", required=True, help="a FHIR JSON/NDJSON file, a folder of them, or a FHIR R4 base URL")
    s.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    s.add_argument("--as-of", type=_as_of, default=None, help="evaluation date YYYY-MM-DD (default: today)")
    s.add_argument("--trial", type=Path, action="append", default=None,
                   help=f"trial definition TOML; give it several times to screen a portfolio in one pass (default: {default_trial_path().name})")
    s.add_argument("--trials", type=Path, default=None, metavar="DIR", help="every trial definition (*.toml) in this folder, screened in one pass")
    s.add_argument("--config", type=Path, default=None, help="TOML settings ([server], [auth], [trial], [windows]); flags override it")
    _list_options(s)
    s.add_argument("--bulk", action="store_true", help="server: read a Bulk Data $export instead of searching")
    s.add_argument("--bulk-group", default=None, metavar="ID", help="server: export Group/ID only (implies --bulk)")
    s.add_argument("--bulk-poll-max", type=float, default=60.0, metavar="SECONDS",
                   help="longest wait between export status polls, whatever Retry-After says (default 60)")
    s.add_argument("--engine", choices=("local", "spark"), default="local", help="local (in-process, default) or spark (PySpark)")
    s.add_argument("--master", default=None, help="spark: the master URL (default: local[*], or what spark-submit says)")
    s.add_argument("--all-patients", action="store_true",
                   help="files: evaluate and list every patient, not only those with a target diagnosis")
    s.add_argument("--tx", default=None, metavar="URL", help="terminology server: codes no expansion lists are checked there (or [terminology] url)")
    screen_bounded.add_options(s)
    _server_options(s)
    _verbosity(s)

    ld = sub.add_parser("load", help="upload FHIR Bundles and NDJSON to a server as transactions",
                        epilog=_exit_epilog(0, 1, 2, 130), formatter_class=raw)
    ld.add_argument("--server", required=True, help="FHIR R4 base URL")
    ld.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders (what screen reads)")
    ld.add_argument("--chunk", type=int, default=200, help="resources per transaction (default 200)")
    ld.add_argument("--id-prefix", default="", help="prefix every id and reference (test data on a shared server)")
    ld.add_argument("--config", type=Path, default=None, help="TOML settings ([server], [auth]); flags override it")
    _server_options(ld)
    _verbosity(ld)

    synth.add_parser(sub)
    sp = sub.choices["synth"]
    sp.epilog = (sp.epilog + "\n\n" if sp.epilog else "") + _exit_epilog(0, 1, 2, 130)

    n = sub.add_parser("nightly", help="incremental nightly screen of a server, with write-back and reports",
                       epilog=_exit_epilog(0, 1, 2, 3, 75, 130), formatter_class=raw)
    n.add_argument("--server", default=None, help="FHIR R4 base URL (or [server] url in --config)")
    n.add_argument("--state", type=Path, default=None, help="SQLite state file (or [output] state)")
    n.add_argument("--out", type=Path, default=None, help="output folder (or [output] dir)")
    n.add_argument("--as-of", type=_as_of, default=None, help="evaluation date YYYY-MM-DD (default: today)")
    n.add_argument("--config", type=Path, default=None, help="TOML settings file; flags override it")
    n.add_argument("--trial", type=Path, action="append", default=None, help="trial definition TOML (repeatable; or [trial] path)")
    n.add_argument("--trials", type=Path, default=None, metavar="DIR", help="every trial definition (*.toml) in this folder (or [trial] dir)")
    n.add_argument("--full", action="store_true", help="re-screen every cohort patient, not only what changed")
    _list_options(n)
    n.add_argument("--bulk-group", default=None, metavar="ID", help="screen Group/ID's members, read with Group/ID/$export (changes: $export?_since=)")
    n.add_argument("--bulk-poll-max", type=float, default=60.0, metavar="SECONDS", help="longest wait between export status polls (default 60)")
    n.add_argument("--overlap", type=float, default=300, metavar="SECONDS",
                   help="re-read changes from this long before the last night started (default 300)")
    n.add_argument("--tx", default=None, metavar="URL", help="terminology server: codes no expansion lists are checked there (or [terminology] url)")
    _server_options(n)
    _verbosity(n)
    trial_commands.add_parser(sub, _exit_epilog(0, 1, 2, 130))

    m = sub.add_parser("match", help="one patient against every trial: which trials could this patient join?",
                       epilog=_exit_epilog(0, 1, 2, 3, 130), formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--patient", required=True, metavar="Patient/ID", help="the patient (Patient/<id> or <id>)")
    m.add_argument("--source", required=True, help="a FHIR JSON/NDJSON file or folder, or a FHIR R4 base URL")
    m.add_argument("--trial", type=Path, action="append", default=None, help="trial definition TOML (repeatable; default: the bundled trial)")
    m.add_argument("--trials", type=Path, default=None, metavar="DIR", help="every trial definition (*.toml) in this folder")
    m.add_argument("--as-of", type=_as_of, default=None, help="evaluation date YYYY-MM-DD (default: today)")
    m.add_argument("--out", required=True, type=Path, help="the searchset Bundle to write (JSON)")
    m.add_argument("--config", type=Path, default=None, help="TOML settings ([server], [auth], [trial]); flags override it")
    _list_options(m)
    _server_options(m)
    _verbosity(m)

    valuesets_commands.add_parser(sub, _server_options, _verbosity)
    vp = sub.choices["valuesets"]
    vp.epilog, vp.formatter_class = _exit_epilog(0, 1, 2, 130), argparse.RawDescriptionHelpFormatter
    web_commands.add_parsers(sub, _verbosity)
    return p


def _list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", default=None, metavar="ID",
                   help="server: screen only the members of Group/ID (Group.member.entity), with patient-scoped searches")
    p.add_argument("--patients", default=None, type=Path, metavar="FILE",
                   help="server: screen only these patients (one Patient/<id> per line), with patient-scoped searches")


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


def _trials(args: argparse.Namespace, config: dict) -> list:
    """--trial (repeatable) and --trials DIR, else [trial] path (one or a list) and dir."""
    paths, folder = getattr(args, "trial", None), getattr(args, "trials", None)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths and not folder:
        section = config.get("trial", {})
        configured = section.get("path") or section.get("paths")
        paths = [configured] if isinstance(configured, str) else configured
        folder = section.get("dir")
    trials = load_trials(paths, folder)
    apply_windows_all(trials, config.get("windows", {}))
    return trials


def cmd_screen(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    as_of = args.as_of or date.today()
    trials = _trials(args, config)
    if args.engine == "spark" and (args.tx or config.get("terminology", {}).get("url")):
        raise UserError("--tx works with the local engine only (the Spark executors have no terminology client)")
    if args.engine == "local" and (not is_url(args.source) or args.bulk or args.bulk_group):
        return _screen_bounded(args, config, trials, as_of)
    if len(trials) > 1:
        return _screen_portfolio(args, config, trials, as_of)
    trial = trials[0]
    tx = _tx_matcher(args, config, trial, args.source if is_url(args.source) else None)
    quiet = args.quiet
    progress = (None if quiet else Progress("reading  "), None if quiet else Progress("screening"))
    if args.engine == "spark":
        result = screen_with_spark(args.source, trial, as_of, args.master)
    elif is_url(args.source):
        transport = _transport(args, config, args.source, default_scope(needed_types(trial), write=False))
        workers = int(setting(args, config, "workers", "server", "workers", 4))
        tag = setting(args, config, "tag", "server", "tag") or None
        result = screen_server(args.source, trial, as_of, transport, workers, progress, tag=tag,
                               group=args.group, patients_file=args.patients, memory=args.memory)
    else:
        raise UserError("--source is not a URL")  # files are screened by _screen_bounded
    try:
        paths = write_outputs(args.out, trial, result.results, as_of, args.source, result.problems, outside=result.outside)
        write_run_json(args.out, {"command": "screen", **result.summary(), **({"terminology": tx.summary()} if tx else {})})
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


def _screen_portfolio(args: argparse.Namespace, config: dict, trials: list, as_of: date) -> int:
    """Several trials: the data is read once; DIR/<trial id>/ per trial, run.json, portfolio.html."""
    quiet = args.quiet
    progress = (None if quiet else Progress("reading  "), None if quiet else Progress("screening"))
    started = time.monotonic()
    if args.engine == "spark":
        raise UserError("--engine spark screens one trial at a time; run it once per --trial")
    txs = {t.id: _tx_matcher(args, config, t, args.source if is_url(args.source) else None) for t in trials}
    if is_url(args.source):
        types = set().union(*(needed_types(t) for t in trials))
        transport = _transport(args, config, args.source, default_scope(types, write=False))
        workers = int(setting(args, config, "workers", "server", "workers", 4))
        tag = setting(args, config, "tag", "server", "tag") or None
        results = screen_server_many(args.source, trials, as_of, transport, workers, progress, tag=tag, memory=args.memory)
        cost = transport.cost.to_json()
    else:
        raise UserError("--source is not a URL")  # files are screened by _screen_bounded
    try:
        paths = write_portfolio(args.out, results, as_of, args.source, cost, time.monotonic() - started)
        if any(txs.values()):
            run = json.loads(paths["run"].read_text(encoding="utf-8"))
            run["terminology"] = {tid: tx.summary() for tid, tx in txs.items() if tx}
            write_private(paths["run"], json.dumps(run, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise UserError(f"{args.out}: cannot write outputs ({e.strerror or e})") from None
    if not quiet:
        _print_portfolio(args, trials, as_of, results, cost)
    problems = results[0].problems if results else []
    return EXIT_DATA_PROBLEMS if problems else 0


def _screen_bounded(args: argparse.Namespace, config: dict, trials: list, as_of: date) -> int:
    """Files and Bulk exports: outputs written as results come, bounded memory, every core."""
    url = is_url(args.source)
    if url:
        if args.patients:
            raise UserError("--patients reads patient by patient; it does not combine with --bulk or --bulk-group")
        if args.bulk and args.group and not args.bulk_group:
            args.bulk_group, args.group = args.group, None  # --bulk --group ID: a Group export
        if args.group and args.bulk_group:
            raise UserError("give --group or --bulk-group, not both")
    elif args.group or args.patients:
        raise UserError("--group and --patients select patients on a FHIR server; --source is not a URL")
    tx = {t.id: _tx_matcher(args, config, t, args.source if url else None) for t in trials}
    progress = (None, None) if args.quiet else (Progress("reading  "), Progress("screening"))
    scope = default_scope(set().union(*(needed_types(t) for t in trials)), write=False)
    transport = (lambda: _transport(args, config, args.source, scope)) if url else None
    try:
        run, cost = screen_bounded.run_screen(args, trials, as_of, progress, transport, setting(args, config, "tag", "server", "tag") or None, tx)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"{args.out}: cannot write ({e.strerror or e})") from None
    if not args.quiet and len(trials) == 1:
        print(screen_bounded.summary_lines(run, args.out, url))
    elif not args.quiet:
        _print_portfolio(args, trials, as_of, run.screenings, cost)
    return EXIT_DATA_PROBLEMS if run.screenings[0].problems else 0


def _print_portfolio(args: argparse.Namespace, trials: list, as_of: date, results: list, cost: dict) -> None:
    print(f"Portfolio: {len(trials)} trials screened in one pass from {args.source} (as of {as_of})")
    for r in results:
        c = r.counts()
        print(f"  {r.trial.id:<32} {c['candidate']:>5} candidate  {c['potential-candidate']:>5} potential  {c['ineligible']:>6} ineligible  ({r.outside} outside its cohort)")
    if is_url(args.source):
        print(f"HTTP: {cost['requests']} requests ({cost['retries']} retries), {cost['bytes'] / 1e6:.2f} MB read, for all trials")
    print(f"Wrote {', '.join(f'{t.id}/' for t in trials)}, run.json and portfolio.html to {args.out}")


def cmd_match(args: argparse.Namespace) -> int:
    """One patient against every trial: a searchset Bundle of ResearchSubjects."""
    config = load_config(args.config)
    as_of = args.as_of or date.today()
    trials = _trials(args, config)
    patient = args.patient if args.patient.startswith("Patient/") else f"Patient/{args.patient}"
    if (args.group or args.patients) and not is_url(args.source):
        raise UserError("--group and --patients name patient lists on a FHIR server; --source is not a URL")
    if is_url(args.source):
        types = set().union(*(needed_types(t) for t in trials))
        transport = _transport(args, config, args.source, default_scope(types, write=False))
        if args.group or args.patients:  # the patient must be on the list (a research registry, a panel)
            listed = resolve_patient_list(FhirClient(args.source, transport), group=args.group, patients_file=args.patients)
            if listed is not None and patient.split("/", 1)[1] not in listed.ids:
                raise UserError(f"{patient} is not a member of {listed.origin}")
        record, problems = match_record_server(args.source, patient, types, transport)
        cost = transport.cost
    else:
        try:
            record, problems = match_record_files(args.source, patient)
        except FileNotFoundError as e:
            raise UserError(str(e)) from None
        cost = None
    if record is None:
        raise UserError(f"{patient}: not found in {args.source}")
    outcomes = match_patient(record, trials, as_of)
    bundle = match_bundle(patient, outcomes, as_of)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_private(args.out, json.dumps(bundle, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise UserError(f"{args.out}: cannot write ({e.strerror or e})") from None
    if not args.quiet:
        for trial, result, note in sorted(outcomes, key=lambda o: ({"candidate": 0, "potential-candidate": 1}.get(o[1].status if o[1] else "", 2), o[0].id)):
            status = result.status if result else "ineligible"
            print(f"  {trial.id:<32} {status:<20} {match_reason(trial, result) if result else note}")
        extra = f"; HTTP: {cost.requests} requests, {cost.bytes / 1e6:.2f} MB read" if cost else ""
        print(f"Wrote {args.out} ({len(trials)} trials{extra})")
    for p in problems:
        print(f"input problem: {p}", file=sys.stderr)
    return EXIT_DATA_PROBLEMS if problems else 0


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
    trials = _trials(args, config)
    as_of = args.as_of or date.today()
    txs = {t.id: _tx_matcher(args, config, t, server) for t in trials}
    client = FhirClient(server, _transport(args, config, server, default_scope(set().union(*(needed_types(t) for t in trials)), write=True)))
    workers = int(setting(args, config, "workers", "server", "workers", 4))
    tag = setting(args, config, "tag", "server", "tag") or None
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        with State(state_path) as state:
            try:
                patients = resolve_patient_list(client, group=setting(args, config, "group", "server", "group"),
                                                patients_file=setting(args, config, "patients", "server", "patients"),
                                                bulk_group=setting(args, config, "bulk_group", "server", "bulk_group"))
                if patients is not None:
                    patients.poll_max = args.bulk_poll_max
                report = run_night(client, trials, state, Path(out), as_of, workers=workers, tag=tag, full=args.full, overlap=timedelta(seconds=args.overlap),
                                   patients=patients, terminology=next((tx.tx.base for tx in txs.values() if tx), ""))
            except (FhirError, TransportError, OSError) as e:
                state.record_failure(started_at=started_at, finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), as_of=as_of, error=str(e))
                raise UserError(f"nightly run failed, nothing recorded as done (the next run redoes it): {e}") from None
    except StateLocked as e:
        print(f"fhir-matcher: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except StateError as e:
        raise UserError(str(e)) from None
    if any(txs.values()):  # the night's run.json, with the terminology server's part
        for tid, tx in txs.items():
            if tx:
                part = report.trials.get(tid, report)
                part.summary["terminology"] = tx.summary()
                write_run_json(Path(out) / tid if report.trials else Path(out), part.summary)
        if report.trials:
            report.summary["terminology"] = {tid: tx.summary() for tid, tx in txs.items() if tx}
            write_run_json(Path(out), report.summary)
    if not args.quiet:
        print(night_text(trials, report, out))
    return EXIT_DATA_PROBLEMS if report.summary["errors"] else 0


def _tx_matcher(args: argparse.Namespace, config: dict, trial, fhir_base: str | None):
    """``--tx``: codes no expansion lists are checked on the terminology server (terminology/txmatch.py)."""
    from .terminology.txmatch import TxMatcher

    client = valuesets_commands.tx_client(args, config, _transport, fhir_base)
    if client is None:
        return None
    return TxMatcher(trial.valuesets, client, valuesets_commands.trial_valueset_ids(trial)).attach()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    commands = {"screen": cmd_screen, "load": cmd_load, "nightly": cmd_nightly, "synth": synth.run, "trial": trial_commands.run, "match": cmd_match,
                "valuesets": lambda a: valuesets_commands.run(a, load_config, _transport), **web_commands.COMMANDS}
    try:
        with gcmode.batch():
            return commands[args.command](args)
    except (UserError, TrialError, FhirError, TransportError, ConfigError, AuthError, ValueError) as e:
        print(f"fhir-matcher: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fhir-matcher: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head, less ...: the reader is gone
        sys.stderr.close()
        return 0
    except Exception as e:  # never a traceback for the user; -v shows it
        log.debug("unexpected error", exc_info=True)
        print(f"fhir-matcher: internal error: {type(e).__name__}: {e} (run with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
