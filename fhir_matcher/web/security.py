"""Sessions, CSRF and roles.

A signed-in user is ``request.session["user"] = {"name", "role", "via", "since", "seen"}``
(epoch seconds), set by the local sign-in here or by the SMART/OIDC routes. The session
lives in Starlette's signed cookie (itsdangerous); it ends after ``session_idle`` seconds
without a request or ``session_max`` seconds after sign-in, whichever comes first.

CSRF: every session carries a random token; every form sends it back in a hidden field and
every POST is refused (403) unless it matches (compared in constant time).
"""

from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

ROLES = ("viewer", "coordinator")
VIAS = ("local", "oidc", "smart")
_now = time.time  # the clock (tests move it)


MAX_FAILURES, LOCKOUT = 5, 15 * 60  # failed sign-ins per account, and the window (seconds) they count in


class Throttle:
    """Failed local sign-ins per account name: after ``MAX_FAILURES`` within ``LOCKOUT`` seconds
    the name is refused until the oldest failure ages out (slows password guessing; in memory,
    per process)."""

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, name: str) -> list[float]:
        now = _now()
        recent = [t for t in self._failures.get(name.lower(), []) if now - t < LOCKOUT]
        self._failures[name.lower()] = recent
        return recent

    def blocked(self, name: str) -> bool:
        with self._lock:
            return len(self._recent(name)) >= MAX_FAILURES

    def failed(self, name: str) -> None:
        with self._lock:
            self._recent(name).append(_now())
            if len(self._failures) > 10_000:  # names that never exist must not grow memory without end
                self._failures = {k: v for k, v in self._failures.items() if v}

    def clear(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name.lower(), None)


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def check_csrf(request: Request) -> Any:
    """The POSTed form, after its ``csrf`` field is checked against the session's token (403 if not)."""
    form = await request.form()
    sent = str(form.get("csrf") or "")
    token = request.session.get("csrf") or ""
    if not token or not hmac.compare_digest(sent.encode(), token.encode()):
        raise HTTPException(403, "The form's security token is missing or out of date. Reload the page and try again.")
    return form


def sign_in(request: Request, name: str, role: str, via: str) -> None:
    """A fresh session for this user (a new CSRF token too: no token from before sign-in survives)."""
    if role not in ROLES or via not in VIAS:
        raise ValueError(f"bad role or sign-in method: {role}/{via}")
    request.session.clear()
    now = int(_now())
    request.session["user"] = {"name": name, "role": role, "via": via, "since": now, "seen": now}
    csrf_token(request)


def sign_out(request: Request) -> None:
    request.session.clear()


def current_user(request: Request) -> dict[str, Any] | None:
    """The signed-in user, or None when nobody is or the session expired (then it is cleared)."""
    user = request.session.get("user")
    if not isinstance(user, dict) or user.get("role") not in ROLES or not user.get("name"):
        return None
    settings = request.app.state.settings
    now = _now()
    since, seen = float(user.get("since", 0)), float(user.get("seen", 0))
    if now - seen > settings.session_idle or now - since > settings.session_max:
        request.session.clear()
        request.session["expired"] = True
        return None
    if now - seen >= 30:  # refresh the idle clock (at most every 30 s: fewer cookie rewrites)
        user = {**user, "seen": int(now)}
        request.session["user"] = user
    return user


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


Endpoint = Callable[[Request], Awaitable[Response]]


def require_user(role: str | None = None) -> Callable[[Callable[[Request], Response]], Endpoint]:
    """Decorator for a (blocking) view: nobody signed in -> the sign-in page (GET) or 401
    (anything else); ``role="coordinator"``: a viewer gets 403; a POST's CSRF token is
    checked (403) and its form put in ``request.state.form``. The user is
    ``request.state.user``. The view runs in the thread pool (it reads SQLite and the server)."""

    def wrap(view: Callable[[Request], Response]) -> Endpoint:
        @functools.wraps(view)
        async def guarded(request: Request) -> Response:
            user = current_user(request)
            if user is None:
                if request.method in ("GET", "HEAD"):
                    return login_redirect(request)
                raise HTTPException(401, "Sign in first.")
            if role == "coordinator" and user["role"] != "coordinator":
                raise HTTPException(403, "Your account can view but not decide (viewer role).")
            request.state.user = user
            if request.method not in ("GET", "HEAD"):
                request.state.form = await check_csrf(request)
            return await run_in_threadpool(view, request)

        return guarded

    return wrap


def safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no '//'): never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages hold patient data: no copy in the browser's or a proxy's cache
}


class SecurityHeaders:
    """ASGI middleware adding ``SECURITY_HEADERS`` to every HTTP answer (static files may be cached)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if static and name == "Cache-Control":
                        continue
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
