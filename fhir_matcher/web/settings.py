"""The review web app's settings: command-line flags over the config file's ``[web]`` table.

    [web]
    host = "127.0.0.1"            # behind the hospital's reverse proxy (TLS is there)
    port = 8000
    insecure_cookies = false      # true only for plain-http development on loopback
    session_idle_minutes = 30     # signed out after this long without a request
    session_max_hours = 10        # and this long after signing in, whatever happens
    secret_file = "/etc/fhir-matcher/session.key"   # signs session cookies; default: a new key per start
    # secret_env = "FHIR_MATCHER_SESSION_SECRET"

FHIR server credentials are the ``[auth]`` table, as for every other command.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

WEB_KEYS = {"host", "port", "insecure_cookies", "session_idle_minutes", "session_max_hours", "secret_file", "secret_env", "public_url"}


class SettingsError(Exception):
    """A setting is wrong; the message names it."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class WebSettings:
    server: str  # FHIR R4 base URL
    state: Path  # the nightly state file (schema 3: every trial of the portfolio)
    config: dict[str, Any] = field(default_factory=dict)  # the whole config file ([auth], [oidc], [smart] ...)
    host: str = "127.0.0.1"
    port: int = 8000
    insecure_cookies: bool = False
    session_idle: int = 30 * 60  # seconds
    session_max: int = 10 * 3600  # seconds
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    public_url: str | None = None  # the URL users reach it at (behind a proxy), for redirects that must be absolute
    oidc: dict[str, Any] | None = None  # [oidc] table: the sign-in provider (the SMART/OIDC module reads it)
    smart: dict[str, Any] | None = None  # [smart] table: the SMART App Launch client (smart.py)
    as_of: date | None = None  # the date live evaluations (/smart/patient) are made on; None: today (tests pin it)
    client_factory: Callable[[], Any] | None = field(default=None, repr=False)  # builds the FhirClient (tests may replace it)

    def __post_init__(self) -> None:
        if self.insecure_cookies and not is_loopback(self.host):
            raise SettingsError(f"insecure cookies are for plain-http development on loopback only, not on host {self.host}")
        if self.session_idle <= 0 or self.session_max <= 0:
            raise SettingsError("[web] session_idle_minutes and session_max_hours must be positive")


def _secret(web: dict[str, Any]) -> str | None:
    if web.get("secret_file"):
        path = Path(web["secret_file"])
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise SettingsError(f"[web] secret_file {path}: cannot read ({e.strerror or e})") from None
        if len(value) < 32:
            raise SettingsError(f"[web] secret_file {path}: too short (32 characters at least)")
        return value
    if web.get("secret_env"):
        value = os.environ.get(str(web["secret_env"]), "")
        if len(value) < 32:
            raise SettingsError(f"[web] secret_env {web['secret_env']}: unset or shorter than 32 characters")
        return value
    return None


def from_args(args: Any, config: dict[str, Any]) -> WebSettings:
    """Flags win over ``[web]``/``[server]``/``[output]`` in the config file."""
    web = config.get("web", {}) or {}
    server = getattr(args, "server", None) or config.get("server", {}).get("url")
    state = getattr(args, "state", None) or config.get("output", {}).get("state")
    missing = [n for n, v in (("--server", server), ("--state", state)) if not v]
    if missing:
        raise SettingsError(f"serve needs {', '.join(missing)} (as flags or in --config)")
    host = getattr(args, "host", None) or web.get("host", "127.0.0.1")
    port = getattr(args, "port", None) or web.get("port", 8000)
    insecure = bool(getattr(args, "insecure_cookies", False) or web.get("insecure_cookies", False))
    try:
        idle = int(float(web.get("session_idle_minutes", 30)) * 60)
        absolute = int(float(web.get("session_max_hours", 10)) * 3600)
        port = int(port)
    except (TypeError, ValueError):
        raise SettingsError("[web] port, session_idle_minutes and session_max_hours must be numbers") from None
    kwargs: dict[str, Any] = {}
    if (secret := _secret(web)) is not None:
        kwargs["secret_key"] = secret
    return WebSettings(
        server=str(server), state=Path(state), config=config, host=str(host), port=port, insecure_cookies=insecure,
        session_idle=idle, session_max=absolute, public_url=web.get("public_url"), oidc=config.get("oidc") or None, smart=config.get("smart") or None, **kwargs,
    )
