"""What the OpenID Connect sign-in and the SMART launch share: their config tables, secrets,
redirect URIs and the page that says why a sign-in was refused."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..config import ConfigError
from .flows import FLOW_TTL, claim_flow
from .security import ROLES

log = logging.getLogger("fhir_matcher")


def table(section: str, cfg: Any, known: set[str], required: tuple[str, ...]) -> dict[str, Any]:
    """A ``[section]`` table after checking its keys; ConfigError names what is wrong."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"[{section}] must be a table")
    if "client_secret" in cfg:
        raise ConfigError(f"[{section}] client_secret: secrets must not be written in the config file; use client_secret_file or client_secret_env")
    extra = set(cfg) - known
    if extra:
        raise ConfigError(f"[{section}] has unknown setting(s): {', '.join(sorted(extra))}")
    for key in required:
        if not cfg.get(key) or not isinstance(cfg[key], str):
            raise ConfigError(f"[{section}] needs {key}")
    role = cfg.get("role", "viewer")
    if role not in ROLES:
        raise ConfigError(f"[{section}] role must be viewer or coordinator, not {role!r}")
    return cfg


def client_secret(section: str, cfg: dict[str, Any]) -> str | None:
    """The client secret from ``client_secret_file`` or ``client_secret_env``; None: a public client."""
    if cfg.get("client_secret_file"):
        path = Path(str(cfg["client_secret_file"]))
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"[{section}] client_secret_file {path}: cannot read ({e.strerror or e})") from None
        if not value:
            raise ConfigError(f"[{section}] client_secret_file {path}: empty")
        return value
    if cfg.get("client_secret_env"):
        value = os.environ.get(str(cfg["client_secret_env"]), "").strip()
        if not value:
            raise ConfigError(f"[{section}] client_secret_env: the environment variable {cfg['client_secret_env']} is not set")
        return value
    return None


def redirect_uri(request: Request, cfg: dict[str, Any], path: str) -> str:
    """``redirect_uri`` as configured (it must be the one registered with the provider), else
    this app's public URL (``[web] public_url`` behind a proxy), else the URL it was reached at."""
    if cfg.get("redirect_uri"):
        return str(cfg["redirect_uri"])
    settings = request.app.state.settings
    base = (getattr(settings, "public_url", None) or str(request.base_url)).rstrip("/")
    return base + path


def refused(request: Request, message: str, status: int = 400) -> Response:
    """The page saying why a sign-in was refused. No session is created: the flow's keys are dropped."""
    message = " ".join(message.split())  # one line: text from the provider cannot forge log lines
    for key in ("oidc_flow", "smart_flow"):
        request.session.pop(key, None)
    log.warning("sign-in refused: %s", message)  # messages name no patient and carry no token
    web = getattr(request.app.state, "web", None)
    if web is None:
        return HTMLResponse(f"<h1>Sign-in refused</h1><p>{_escape(message)}</p>", status_code=status)
    return web.render(request, "error.html", status_code=status, code=status, message=f"Sign-in refused: {message}")


def answered_flow(request: Request, kind: str, server: str, started: str, again: str) -> tuple[dict[str, Any] | None, Response | None]:
    """(the sign-in flow a callback answers, None), or (None, the page refusing it): the
    server answered with an error, or the ``state`` is not one this browser started (or it
    came too late). The flow is claimed either way: it can be answered once."""
    q = request.query_params
    flow = claim_flow(request.session, q.get("state") or "", kind)
    if q.get("error"):
        return None, refused(request, f"{server} answered {q.get('error', '')[:60]}: {(q.get('error_description') or 'no description')[:300]}", 403)
    if flow is None:
        return None, refused(request, f"this answer does not belong to {started} started in this browser, or it took more than "
                                      f"{FLOW_TTL // 60} minutes (state mismatch). {again}")
    return flow, None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
