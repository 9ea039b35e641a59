"""``fhir-matcher serve`` (the review web app) and ``fhir-matcher user`` (its local accounts).

Only argparse and the standard library are imported here: the web stack loads when a
command runs, so other commands start as fast as before.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any, Callable

EXIT_USAGE = 2


def add_parsers(sub: Any, verbosity: Callable[[argparse.ArgumentParser], None]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser("serve", help="the coordinators' review web app over the nightly state and the FHIR server", formatter_class=raw,
                       epilog="Put it behind the hospital's reverse proxy (TLS there) and keep --host 127.0.0.1; see the README's\n"
                              "'Review web app'. Accounts: fhir-matcher user add NAME --role coordinator --state PATH.\n\n"
                              "exit codes:\n  0    stopped\n  2    a problem to fix (option, config, state file)")
    s.add_argument("--server", default=None, help="FHIR R4 base URL (or [server] url in --config)")
    s.add_argument("--state", type=Path, default=None, help="the nightly state file (or [output] state)")
    s.add_argument("--config", type=Path, default=None, help="TOML settings ([server], [auth], [web], [output]); flags override it")
    s.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1: the reverse proxy's side only)")
    s.add_argument("--port", type=int, default=None, help="port (default 8000)")
    s.add_argument("--insecure-cookies", action="store_true",
                   help="send the session cookie over plain http (development on loopback only; refused on any other host)")
    verbosity(s)

    u = sub.add_parser("user", help="local accounts of the review web app (add, list, remove, disable)", formatter_class=raw,
                       epilog="exit codes:\n  0    done\n  2    a problem to fix (name, role, password, state file)")
    us = u.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state", type=Path, default=None, help="the nightly state file that holds the accounts (or [output] state)")
        p.add_argument("--config", type=Path, default=None, help="TOML settings ([output] state)")
        verbosity(p)

    a = us.add_parser("add", help="add an account; the password is read from the terminal (or --password-file)")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=("viewer", "coordinator"), help="viewer: sees everything, decides nothing; coordinator: decides")
    a.add_argument("--password-file", type=Path, default=None, help="read the password from this file's first line (for provisioning scripts)")
    common(a)
    ls = us.add_parser("list", help="list accounts (name, role, created, disabled)")
    common(ls)
    rm = us.add_parser("remove", help="delete an account (or --disable it and keep its name in the audit trail)")
    rm.add_argument("name")
    rm.add_argument("--disable", action="store_true", help="keep the account but refuse its sign-in")
    common(rm)
    en = us.add_parser("enable", help="allow a disabled account to sign in again")
    en.add_argument("name")
    common(en)


def _password(args: argparse.Namespace) -> str:
    from .users import UserError

    if args.password_file:
        try:
            lines = args.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise UserError(f"{args.password_file}: cannot read ({e.strerror or e})") from None
        return lines[0] if lines else ""
    if not sys.stdin.isatty():
        raise UserError("no terminal to read the password from: give --password-file FILE")
    first = getpass.getpass(f"Password for {args.name}: ")
    if first != getpass.getpass("Again: "):
        raise UserError("the two passwords differ; nothing changed")
    return first


def _state_path(args: argparse.Namespace, config: dict[str, Any]) -> Path:
    from .users import UserError

    path = args.state or config.get("output", {}).get("state")
    if not path:
        raise UserError("give --state (or [output] state in --config)")
    return Path(path)


def run_user(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..nightly.state import State
    from . import users

    config = load_config(args.config)
    path = _state_path(args, config)
    if args.user_command != "add" and not path.exists():
        raise users.UserError(f"{path}: no state file")
    with State(path, lock=False) as state:
        db = state.db
        if args.user_command == "add":
            users.check_name(args.name)
            user = users.add(db, args.name, args.role, _password(args))
            if not args.quiet:
                print(f"Added {user.name} ({user.role})")
        elif args.user_command == "list":
            rows = users.all_users(db)
            if not rows and not args.quiet:
                print("No accounts yet: fhir-matcher user add NAME --role coordinator --state ...")
            for u in rows:
                print(f"{u.name:<24} {u.role:<12} created {u.created_at}{'  DISABLED' if u.disabled else ''}")
        elif args.user_command == "remove":
            if args.disable:
                users.set_disabled(db, args.name, True)
            else:
                users.remove(db, args.name)
            if not args.quiet:
                print(f"{'Disabled' if args.disable else 'Removed'} {args.name}")
        elif args.user_command == "enable":
            users.set_disabled(db, args.name, False)
            if not args.quiet:
                print(f"Enabled {args.name}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from ..config import load_config
    from ..nightly.state import State
    from . import users
    from .app import create_app
    from .settings import from_args

    config = load_config(args.config)
    settings = from_args(args, config)
    if not settings.state.exists():
        raise users.UserError(f"{settings.state}: no state file (run the nightly job first)")
    with State(settings.state, lock=False) as state:  # fail now, not at the first page, on a bad file
        trials = state.trials()
        accounts = users.all_users(state.db)
    if not accounts and not settings.oidc and not settings.smart:  # SMART or OIDC users need no local account
        print("fhir-matcher: warning: no accounts yet; add one with: fhir-matcher user add NAME --role coordinator "
              f"--state {settings.state}", file=sys.stderr)
    app = create_app(settings)
    if not args.quiet:
        print(f"Review app on http://{settings.host}:{settings.port}/ ({len(trials)} trial(s) from {settings.state}; FHIR server {settings.server})")
        if settings.insecure_cookies:
            print("Session cookies without Secure: plain-http development only", file=sys.stderr)
    # uvicorn's access log names every URL, and URLs carry patient ids: only with -v.
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=bool(args.verbose), log_level="info" if args.verbose else "warning",
                proxy_headers=True, forwarded_allow_ips="127.0.0.1", server_header=False)
    logging.getLogger("fhir_matcher").debug("stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..nightly.state import StateError, StateLocked
    from .settings import SettingsError
    from .users import UserError

    try:
        return run_serve(args) if args.command == "serve" else run_user(args)
    except (UserError, SettingsError, StateError, StateLocked) as e:
        print(f"fhir-matcher: error: {e}", file=sys.stderr)
        return EXIT_USAGE


COMMANDS = {"serve": run, "user": run}
