"""Sign-in delegated to the hospital's OpenID Connect provider (authorization code + PKCE).

    [oidc]
    issuer = "https://login.hospital.example/realms/staff"   # discovery: ISSUER/.well-known/openid-configuration
    client_id = "fhir-matcher"
    client_secret_file = "/etc/fhir-matcher/oidc-secret"      # or client_secret_env; neither: a public client
    # redirect_uri = "https://trials.hospital.example/login/oidc/callback"  # default: [web] public_url + that path
    # scope = "openid profile email"
    role_claim = "groups"                                     # a claim holding a string or a list of strings
    coordinator_values = ["trial-coordinators"]               # any of these in it: coordinator; else viewer
    # name_claim = "preferred_username"                       # what the app shows and audits (default; then email, sub)
    # name = "Hospital account"                               # the sign-in button says "Sign in with ..."

``GET /login/oidc[?next=/path]`` sends the browser to the provider with ``state``, ``nonce`` and
a PKCE S256 challenge; ``GET /login/oidc/callback`` exchanges the code (client secret by HTTP
basic when there is one), verifies the id_token (signature from the JWKS, issuer, audience,
expiry, nonce) and starts the session. Any failure: a page that says why, and no session.

Hand code over pyjwt + requests rather than a client library: three HTTP calls, and the
verifier and nonce stay in server memory (flows.py) instead of a readable session cookie.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from typing import Any
from urllib.parse import urlencode

import requests
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..rest.auth import post_token_form
from . import security
from .flows import FLOW_TTL, FLOWS
from .idtoken import Provider, SignInError, http_session
from .signin import answered_flow, client_secret, redirect_uri, refused, table

log = logging.getLogger("fhir_matcher")
KEYS = {"issuer", "client_id", "client_secret_file", "client_secret_env", "redirect_uri", "scope", "role_claim",
        "coordinator_values", "name_claim", "role", "name"}  # name: the provider on the sign-in button
CALLBACK = "/login/oidc/callback"


def pkce() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(64)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def role_from(claims: dict[str, Any], claim: str, coordinator_values: list[str], default: str = "viewer") -> str:
    """``coordinator`` when the claim (a string or a list) holds one of ``coordinator_values``."""
    value = claims.get(claim)
    values = value if isinstance(value, list) else [value] if value is not None else []
    return "coordinator" if any(isinstance(v, str) and v in coordinator_values for v in values) else default


class OidcSignIn:
    def __init__(self, cfg: dict[str, Any], ca_bundle: str | None):
        self.cfg = table("oidc", cfg, KEYS, ("issuer", "client_id"))
        self.client_id = str(cfg["client_id"])
        self.secret = client_secret("oidc", cfg)
        values = cfg.get("coordinator_values", [])
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            from ..config import ConfigError

            raise ConfigError("[oidc] coordinator_values must be a list of strings")
        self.coordinator_values: list[str] = values
        self.role_claim = str(cfg.get("role_claim", "groups"))
        self.name_claim = str(cfg.get("name_claim", "preferred_username"))
        self.scope = str(cfg.get("scope", "openid profile email"))
        if "openid" not in self.scope.split():
            self.scope = "openid " + self.scope
        self.provider = Provider(str(cfg["issuer"]), http_session(ca_bundle))

    # ------------------------------------------------------------------ endpoints

    def start(self, request: Request) -> Response:
        try:
            authorize = self.provider.endpoint("authorization_endpoint")
        except SignInError as e:
            return refused(request, str(e), 502)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, challenge = pkce()
        redirect = redirect_uri(request, self.cfg, CALLBACK)
        target = security.safe_next(request.query_params.get("next"))
        FLOWS.put(state, {"kind": "oidc", "nonce": nonce, "verifier": verifier, "redirect": redirect, "next": target}, FLOW_TTL)
        request.session["oidc_flow"] = state  # the callback must come back to this browser
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect, "scope": self.scope,
                  "state": state, "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"}
        sep = "&" if "?" in authorize else "?"
        return RedirectResponse(f"{authorize}{sep}{urlencode(params)}", status_code=303)

    def callback(self, request: Request) -> Response:
        q = request.query_params
        flow, refusal = answered_flow(request, "oidc", "the provider", "a sign-in", "Sign in again.")
        if flow is None:
            return refusal
        if not q.get("code"):
            return refused(request, "the provider sent no authorization code")
        try:
            claims = self.exchange(q["code"], flow)
        except SignInError as e:
            return refused(request, str(e), 403)
        name = next((str(claims[c]) for c in (self.name_claim, "preferred_username", "email", "sub") if claims.get(c)), "")
        role = role_from(claims, self.role_claim, self.coordinator_values, str(self.cfg.get("role", "viewer")))
        security.sign_in(request, name, role, "oidc")
        log.info("signed in via OpenID Connect as %s", role)
        return RedirectResponse(flow["next"], status_code=303)

    def exchange(self, code: str, flow: dict[str, Any]) -> dict[str, Any]:
        """The code for tokens at the token endpoint, then the id_token's verified claims."""
        token_url = self.provider.endpoint("token_endpoint")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": flow["redirect"],
                "code_verifier": flow["verifier"], "client_id": self.client_id}
        auth = (self.client_id, self.secret) if self.secret else None
        try:
            status, body = post_token_form(self.provider.session, token_url, form, auth)
        except requests.RequestException as e:
            raise SignInError(f"the token endpoint {token_url} could not be reached ({type(e).__name__})") from None
        if status != 200 or not isinstance(body, dict):
            detail = (body.get("error_description") or body.get("error")) if isinstance(body, dict) else None
            raise SignInError(f"the token endpoint refused the code: {detail or f'HTTP {status}'}")
        if not body.get("id_token"):
            raise SignInError("the token endpoint returned no id_token (is 'openid' in the scope?)")
        return self.provider.verify(str(body["id_token"]), self.client_id, nonce=flow["nonce"])


def routes(settings: Any) -> list[BaseRoute]:
    """``/login/oidc`` and its callback when the config has an ``[oidc]`` table; none otherwise."""
    cfg = getattr(settings, "oidc", None)
    if not cfg:
        return []
    ca_bundle = (settings.config.get("server") or {}).get("ca_bundle")
    oidc = OidcSignIn(cfg, ca_bundle)

    async def start(request: Request) -> Response:
        return await run_in_threadpool(oidc.start, request)

    async def callback(request: Request) -> Response:
        return await run_in_threadpool(oidc.callback, request)

    return [Route("/login/oidc", start, methods=["GET"], name="oidc_login"),
            Route(CALLBACK, callback, methods=["GET"], name="oidc_callback")]
