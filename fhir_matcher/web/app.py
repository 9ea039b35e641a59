"""The coordinator's review web app: Starlette, server-rendered Jinja2 pages, no JavaScript build.

``create_app(settings)`` is the whole app; ``fhir-matcher serve`` runs it under uvicorn.
The SMART on FHIR / OpenID Connect sign-in lives in ``fhir_matcher.web.smart`` (when present,
its ``routes(settings)`` are mounted here); it signs users in with the same session dict.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..nightly.state import StateError
from ..rest.auth import default_scope
from ..rest.auth import from_config as auth_from_config
from ..rest.client import FhirClient
from ..rest.transport import Transport
from . import security, users
from .decide import LABELS
from .settings import WebSettings
from .store import Trials, open_state

log = logging.getLogger("fhir_matcher")
HERE = Path(__file__).resolve().parent
READ_TYPES = {"Patient", "Condition", "Observation", "MedicationStatement", "MedicationRequest", "MedicationAdministration", "Medication", "Procedure"}


def default_client(settings: WebSettings) -> FhirClient:
    """A client for the FHIR server with the config's ``[auth]`` and ``[server]`` settings, as every command."""
    server = settings.config.get("server", {})
    auth, cert = auth_from_config(settings.config.get("auth", {}), settings.server, default_scope(READ_TYPES, write=True))
    transport = Transport(timeout=float(server.get("timeout", 60.0)), retries=int(server.get("retries", 2)),
                          ca_bundle=server.get("ca_bundle"), auth=auth, cert=cert, pool=8)
    return FhirClient(settings.server, transport)


class Web:
    """What every view shares: settings, the FHIR client, trial definitions, templates."""

    def __init__(self, settings: WebSettings):
        self.settings = settings
        self._client: FhirClient | None = None
        self._lock = threading.Lock()
        self.trials = Trials()
        self.studies: dict[str, str] = {}  # trial id -> ResearchStudy/<id>
        self.throttle = security.Throttle()
        env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))
        self.templates = Jinja2Templates(env=env)
        env.globals["status_label"] = lambda s: LABELS.get(s or "", s or "")

    @property
    def client(self) -> FhirClient:
        with self._lock:
            if self._client is None:
                factory = self.settings.client_factory or (lambda: default_client(self.settings))
                self._client = factory()
            return self._client

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        user = security.current_user(request) if "user" in request.session else None
        context.update(user=user, csrf=security.csrf_token(request), settings=self.settings)
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)


def web(request: Request) -> Web:
    return request.app.state.web


# ------------------------------------------------------------------ sign-in


async def login_page(request: Request) -> Response:
    if security.current_user(request):
        return RedirectResponse(security.safe_next(request.query_params.get("next")), status_code=303)
    expired = request.session.pop("expired", False)
    return web(request).render(request, "login.html", next=security.safe_next(request.query_params.get("next")), expired=expired, error=None)


def _authenticate(w: Web, name: str, password: str) -> users.User | None:
    try:
        with open_state(w.settings.state) as state:
            user = users.authenticate(state.db, name, password)
            if user is not None:
                state.record_access(user.name, None, None, "sign-in")
            return user
    except StateError as e:
        log.error("sign-in: %s", e)
        return None


async def login_submit(request: Request) -> Response:
    form = await security.check_csrf(request)
    name, password = str(form.get("username") or "").strip(), str(form.get("password") or "")
    target = security.safe_next(str(form.get("next") or "/"))
    w = web(request)
    if w.throttle.blocked(name):
        log.warning("sign-in refused: too many failed attempts for one account")
        return w.render(request, "login.html", status_code=429, next=target, expired=False,
                        error=f"Too many failed attempts: wait {security.LOCKOUT // 60} minutes, or ask an administrator.")
    user = await run_in_threadpool(_authenticate, w, name, password) if name and password else None  # Argon2 takes a while: not on the event loop
    if user is None:
        w.throttle.failed(name)
        log.warning("sign-in refused")  # no user name in the log: it may be a password typed in the wrong field
        return w.render(request, "login.html", status_code=401, next=target, expired=False, error="Wrong user name or password, or the account is disabled.")
    w.throttle.clear(name)
    security.sign_in(request, user.name, user.role, "local")
    return RedirectResponse(target, status_code=303)


async def logout(request: Request) -> Response:
    await security.check_csrf(request)
    security.sign_out(request)
    return RedirectResponse("/login", status_code=303)


# ------------------------------------------------------------------ errors

MESSAGES = {401: "Sign in first.", 403: "Not allowed.", 404: "Not found.", 405: "Method not allowed."}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else MESSAGES.get(exc.status_code, "Error.")
    if "session" not in request.scope:
        return HTMLResponse(f"<p>{exc.status_code}</p>", status_code=exc.status_code)
    return web(request).render(request, "error.html", status_code=exc.status_code, code=exc.status_code, message=detail)


async def state_error(request: Request, exc: Exception) -> Response:
    log.error("state: %s", exc)
    return web(request).render(request, "error.html", status_code=503, code=503, message=f"The nightly state cannot be read: {exc}")


async def server_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s: %s", request.method, request.url.path.split("/")[1] if "/" in request.url.path else "", type(exc).__name__)
    log.debug("internal error", exc_info=exc)
    return HTMLResponse("<h1>Internal error</h1><p>The error is in the server's log (run with -v for details).</p>", status_code=500)


# ------------------------------------------------------------------ the app


def extra_routes(settings: WebSettings) -> list[BaseRoute]:
    """The SMART on FHIR / OpenID Connect routes, when that module is installed."""
    try:
        smart = importlib.import_module("fhir_matcher.web.smart")
    except ModuleNotFoundError as e:
        if e.name != "fhir_matcher.web.smart":
            raise
        return []
    return list(smart.routes(settings)) if hasattr(smart, "routes") else []


def create_app(settings: WebSettings) -> Starlette:
    from . import views

    routes: list[BaseRoute] = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *views.routes(),
        *extra_routes(settings),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(security.SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=settings.secret_key, session_cookie="fhir_matcher_session",
                   max_age=settings.session_max, same_site="lax", https_only=not settings.insecure_cookies),
    ]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error, StateError: state_error, Exception: server_error})
    app.state.settings = settings
    app.state.web = Web(settings)
    return app
