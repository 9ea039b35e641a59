"""Local HAPI FHIR JPA server (R4, H2) for the tests.

Command line (foreground, Ctrl-C / SIGTERM stops the JVM cleanly):

    python tests/hapi/server.py --port 8080 [--data-dir DIR] [--build-only]
                                [--auth-token TOKEN] [--token-endpoint URL] [--strict]

Python API (stdlib only), e.g. for pytest fixtures:

    from tests.hapi import server as hapi      # or put tests/hapi on sys.path
    jar = hapi.build()                         # builds target/hapi-test-server.jar if stale
    srv = hapi.start(hapi.free_port(), data_dir=str(tmp_path))
    srv.base_url                               # "http://127.0.0.1:PORT/fhir"
    srv.restart()                              # same port, same (file) database
    srv.stop()

Optional authorization gate (SMART Backend Services tests): ``start(port, auth_token="...",
token_endpoint="http://127.0.0.1:PORT/token")`` makes every request under /fhir/* need
``Authorization: Bearer <auth_token>`` (401 otherwise), except GET /fhir/metadata (so the readiness
probe still works) and GET /fhir/.well-known/smart-configuration, which names token_endpoint. The
token is never written to the terminal or the log.

Strict mode (``start(port, strict=True)`` / ``--strict``): the server behaves like the hospital
EHR endpoints that only allow patient-scoped access (Epic, Oracle Health): searches on clinical
types need ``patient``/``subject``/``_id`` (Patient: ``_id`` or ``identifier``) and name at most
one patient; type/system ``_history``, system-level and ``Patient/$export`` and type-level
``$everything`` are refused (HTTP 400 + OperationOutcome); reads, paging, writes, searches on
non-clinical types and ``Group/[id]/$export`` are allowed. restart() keeps it.

The H2 database is always file-based: in ``data_dir`` when given, else in a private temporary
directory that ``stop()`` deletes. So ``restart()`` keeps the data either way. The server log is
written to ``<dir>/hapi-server.log`` (never to the terminal); if startup fails, the error raised
carries the tail of that log.

Environment overrides: ``HAPI_JAVA`` (java executable, default ``java`` on PATH),
``HAPI_MVN`` (maven executable, default ``mvn``), ``HAPI_JAVA_OPTS`` (JVM options, replacing the
defaults below), ``HAPI_CDS=0`` (do not write/use the class-data-sharing archive).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = [
    "HapiError",
    "HapiServer",
    "JAR_PATH",
    "build",
    "free_port",
    "start",
]

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
SRC = HERE / "src"
TARGET = HERE / "target"
JAR_PATH = TARGET / "hapi-test-server.jar"
LIB_DIR = TARGET / "lib"
# Class-data-sharing archive of the server's classes (AppCDS): written by the first JVM that
# runs after a build (at its exit), used by every later start; cuts startup ~11 s -> ~7 s.
CDS_PATH = TARGET / "hapi-test-server.jsa"
HOST = "127.0.0.1"
LOG_NAME = "hapi-server.log"

# Modest heap (the machines have 2 cores); SerialGC keeps the footprint small.
DEFAULT_JAVA_OPTS = ["-Xms256m", "-Xmx1g", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError"]

_build_lock = threading.Lock()
_running: set[HapiServer] = set()


class HapiError(RuntimeError):
    """Java/Maven missing, build failed, or the server did not start."""


# --------------------------------------------------------------------------- build


def _java() -> str:
    java = os.environ.get("HAPI_JAVA") or shutil.which("java")
    if java and not (os.path.isfile(java) and os.access(java, os.X_OK)):
        java = shutil.which(java)
    if not java:
        raise HapiError(
            "java not found: install a JDK 17 (e.g. apt-get install openjdk-17-jdk-headless) "
            "or set HAPI_JAVA"
        )
    return java


def _mvn() -> str:
    mvn = os.environ.get("HAPI_MVN") or shutil.which("mvn")
    if mvn and not (os.path.isfile(mvn) and os.access(mvn, os.X_OK)):
        mvn = shutil.which(mvn)
    if not mvn:
        raise HapiError("mvn not found: install Maven (e.g. apt-get install maven) or set HAPI_MVN")
    return mvn


def _sources() -> list[Path]:
    return [POM, *(p for p in SRC.rglob("*") if p.is_file())]


def _is_stale() -> bool:
    if not JAR_PATH.is_file() or not LIB_DIR.is_dir() or not any(LIB_DIR.glob("hapi-fhir-*.jar")):
        return True
    jar_mtime = JAR_PATH.stat().st_mtime
    return any(p.stat().st_mtime >= jar_mtime for p in _sources())


def build(*, force: bool = False, quiet: bool = True) -> Path:
    """Build the server jar with Maven unless it is newer than pom.xml and every source file.

    Returns the jar path. Raises HapiError if java or mvn is missing or the build fails.
    Safe to call from several processes at once (an flock serialises the builds).
    """
    _java()
    with _build_lock:
        if not force and not _is_stale():
            return JAR_PATH
        mvn = _mvn()
        TARGET.mkdir(exist_ok=True)
        with open(TARGET / ".build.lock", "w") as lock:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not on Linux
                pass
            if not force and not _is_stale():  # built by another process meanwhile
                return JAR_PATH
            cmd = [mvn, "-q", "-B", "-DskipTests", "package"]
            if not quiet:
                print(f"building HAPI test server: {' '.join(cmd)} (in {HERE})", flush=True)
            proc = subprocess.run(
                cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                check=False,
            )
            if proc.returncode != 0 or not JAR_PATH.is_file():
                out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)  # Maven's colour codes
                tail = "\n".join(out.splitlines()[-40:])
                raise HapiError(f"mvn package failed (exit {proc.returncode}) in {HERE}:\n{tail}")
            JAR_PATH.touch()  # newer than every source even if mvn left the jar as it was
    return JAR_PATH


# --------------------------------------------------------------------------- run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class HapiServer:
    """A running HAPI FHIR server JVM. Use start() to create one."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        *,
        own_dir: bool,
        java_opts: list[str],
        auth_token: str | None = None,
        token_endpoint: str | None = None,
        strict: bool = False,
    ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.base_url = f"http://{HOST}:{port}/fhir"
        self.log_path = data_dir / LOG_NAME
        self.startup_seconds: float | None = None
        self._own_dir = own_dir
        self._java_opts = java_opts
        self._auth_token = auth_token
        self.token_endpoint = token_endpoint
        self.strict = strict
        self._proc: subprocess.Popen[bytes] | None = None
        self._cds_tmp: Path | None = None

    def __repr__(self) -> str:
        return f"HapiServer({self.base_url!r}, data_dir={str(self.data_dir)!r}, running={self.is_running()})"

    def __enter__(self) -> HapiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def auth_required(self) -> bool:
        """True if the server was started with an auth token (the token itself is not exposed)."""
        return self._auth_token is not None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self, timeout: float) -> None:
        if not _port_is_free(self.port):
            raise HapiError(f"port {self.port} on {HOST} is already in use")
        cmd = [
            _java(), *self._cds_args(), *self._java_opts, "-jar", str(JAR_PATH),
            "--port", str(self.port), "--data-dir", str(self.data_dir),
        ]
        if self.strict:
            cmd.append("--strict")
        shown = list(cmd)  # what the log gets: the token replaced by ***
        if self.token_endpoint is not None:
            cmd += ["--token-endpoint", self.token_endpoint]
            shown += ["--token-endpoint", self.token_endpoint]
        if self._auth_token is not None:
            cmd += ["--auth-token", self._auth_token]
            shown += ["--auth-token", "***"]
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(shown)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        _running.add(self)
        deadline = t0 + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                _running.discard(self)
                self._publish_cds(False)
                raise HapiError(
                    f"HAPI server exited with code {code} during startup; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self._ready():
                self.startup_seconds = time.monotonic() - t0
                return
            if time.monotonic() > deadline:
                self._terminate()
                raise HapiError(
                    f"HAPI server not ready after {timeout:.0f} s; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.25)

    def _cds_args(self) -> list[str]:
        self._cds_tmp = None
        if os.environ.get("HAPI_CDS", "1") == "0":
            return []
        if CDS_PATH.is_file() and CDS_PATH.stat().st_mtime >= JAR_PATH.stat().st_mtime:
            # -Xshare:auto (the default): a stale or unusable archive is ignored with a warning
            return [f"-XX:SharedArchiveFile={CDS_PATH}"]
        self._cds_tmp = TARGET / f".cds-{os.getpid()}-{self.port}-{time.monotonic_ns()}.jsa"
        return [f"-XX:ArchiveClassesAtExit={self._cds_tmp}"]

    def _publish_cds(self, clean_exit: bool) -> None:
        tmp, self._cds_tmp = self._cds_tmp, None
        if tmp is None:
            return
        try:
            if clean_exit and tmp.is_file() and tmp.stat().st_size > 0:
                os.replace(tmp, CDS_PATH)  # atomic; concurrent writers: last one wins
            else:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass

    def _ready(self) -> bool:
        req = urllib.request.Request(
            f"{self.base_url}/metadata", headers={"Accept": "application/fhir+json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _terminate(self, timeout: float = 30) -> None:
        proc = self._proc
        if proc is None:
            return
        clean = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # JVM shutdown hook: Jetty, Spring, H2 closed
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                clean = False
                proc.kill()
                proc.wait(10)
        self._publish_cds(clean)
        self._proc = None
        _running.discard(self)

    def stop(self, timeout: float = 30) -> None:
        """Stop the JVM (SIGTERM, then SIGKILL after timeout). Deletes the private temp dir,
        if start() made one; a caller-given data_dir is kept."""
        self._terminate(timeout)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, timeout: float = 300) -> None:
        """Stop and start again on the same port with the same database."""
        self._terminate()
        self._wait_port_free()
        self._launch(timeout)

    def _wait_port_free(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not _port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.2)


def _check_auth(auth_token: str | None, token_endpoint: str | None) -> None:
    if auth_token is not None and (
        not auth_token or any(not (0x20 < ord(c) < 0x7F) for c in auth_token)
    ):
        # the message never contains the token
        raise ValueError("auth_token must be non-empty printable ASCII without spaces")
    if token_endpoint is not None:
        parts = urllib.parse.urlsplit(token_endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"token_endpoint must be an absolute http(s) URL: {token_endpoint!r}")


def start(
    port: int,
    *,
    data_dir: str | None = None,
    timeout: float = 300,
    java_opts: list[str] | None = None,
    auth_token: str | None = None,
    token_endpoint: str | None = None,
    strict: bool = False,
) -> HapiServer:
    """Build if needed, start the server on 127.0.0.1:port, wait until GET /fhir/metadata
    answers, and return the HapiServer. Raises HapiError (with the log tail) on failure.

    auth_token: every request under /fhir/* then needs ``Authorization: Bearer <auth_token>``
    (401 + OperationOutcome otherwise), except GET /fhir/metadata and GET
    /fhir/.well-known/smart-configuration. token_endpoint: an absolute http(s) URL that
    GET /fhir/.well-known/smart-configuration advertises (404 without it). restart() keeps both.
    strict: behave like Epic / Oracle Health (patient-scoped searches only, Group export only;
    see the module docstring).
    ValueError for an empty/whitespace token or a token_endpoint that is not an http(s) URL.
    """
    _check_auth(auth_token, token_endpoint)
    build()
    if data_dir is None:
        ddir, own = Path(tempfile.mkdtemp(prefix="hapi-fhir-")), True
    else:
        ddir, own = Path(data_dir).resolve(), False
        ddir.mkdir(parents=True, exist_ok=True)
    if java_opts is None:
        env_opts = os.environ.get("HAPI_JAVA_OPTS")
        java_opts = shlex.split(env_opts) if env_opts else list(DEFAULT_JAVA_OPTS)
    srv = HapiServer(
        port, ddir, own_dir=own, java_opts=java_opts, auth_token=auth_token,
        token_endpoint=token_endpoint, strict=strict,
    )
    try:
        srv._launch(timeout)
    except BaseException:
        if own:
            shutil.rmtree(ddir, ignore_errors=True)
        raise
    return srv


@atexit.register
def _stop_all() -> None:
    for srv in list(_running):
        with contextlib.suppress(Exception):
            srv.stop()


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the local HAPI FHIR R4 test server.")
    ap.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    ap.add_argument("--data-dir", help="keep the H2 database and log here (default: temp dir)")
    ap.add_argument("--timeout", type=float, default=300, help="startup timeout, seconds")
    ap.add_argument("--build-only", action="store_true", help="build the jar and exit")
    ap.add_argument(
        "--auth-token", metavar="TOKEN",
        help="require 'Authorization: Bearer TOKEN' on /fhir/* (except GET metadata and "
        "smart-configuration); never printed",
    )
    ap.add_argument(
        "--token-endpoint", metavar="URL",
        help="serve GET /fhir/.well-known/smart-configuration naming this token endpoint",
    )
    ap.add_argument(
        "--strict", action="store_true",
        help="behave like Epic / Oracle Health: clinical searches must name one patient; "
        "no system-level $export (Group export and reads allowed)",
    )
    args = ap.parse_args(argv)
    try:
        _check_auth(args.auth_token, args.token_endpoint)
    except ValueError as e:
        ap.error(str(e))

    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stale = _is_stale()
        if stale:
            print("building the server jar with Maven (a first build with an empty ~/.m2 "
                  "downloads ~350 MB from Maven Central)...", flush=True)
        jar = build(quiet=False)
        if args.build_only:
            print(f"jar: {jar}")
            return 0
        print(f"starting HAPI FHIR on {HOST}:{args.port} ...", flush=True)
        srv = start(
            args.port, data_dir=args.data_dir, timeout=args.timeout,
            auth_token=args.auth_token, token_endpoint=args.token_endpoint, strict=args.strict,
        )
    except HapiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"ready: {srv.base_url} (started in {srv.startup_seconds:.1f} s; log {srv.log_path})",
          flush=True)
    if srv.strict:
        print("strict: clinical searches must name one patient; system-level $export refused",
              flush=True)
    if srv.auth_required or srv.token_endpoint:
        print("auth: "
              + ("bearer token required (except GET /metadata, /.well-known/smart-configuration)"
                 if srv.auth_required else "no token required")
              + (f"; token_endpoint {srv.token_endpoint}" if srv.token_endpoint else ""),
              flush=True)
    try:
        while not stop_requested.wait(1.0):
            if not srv.is_running():
                print(f"error: the server JVM exited; log {srv.log_path}:\n{_tail(srv.log_path)}",
                      file=sys.stderr)
                srv.stop()
                return 1
    finally:
        if srv.is_running():
            print("stopping...", flush=True)
        srv.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
