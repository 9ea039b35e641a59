"""SMART on FHIR App Launch (EHR launch and standalone launch), with fhirclient.

    [smart]
    client_id = "fhir-matcher"
    client_secret_file = "/etc/fhir-matcher/smart-secret"   # or client_secret_env; neither: a public client (PKCE)
    # redirect_uri = "https://trials.hospital.example/smart/callback"   # default: [web] public_url + /smart/callback
    # scope = "openid fhirUser patient/Patient.rs ..."      # default: openid fhirUser + read what the trials read
    role = "viewer"                                         # or "coordinator": what a SMART-launched user may do

- ``GET /smart/launch?iss=...&launch=...``: the EHR launch. ``iss`` must be the FHIR server this
  app is set up for (``--server``); any other is refused.
- ``GET /smart/login``: the standalone launch (scope ``launch/patient``: the provider asks
  which patient).
- ``GET /smart/callback``: checks ``state`` against this browser's launch, exchanges the code
  (fhirclient: PKCE S256, client secret by HTTP basic when confidential), verifies the
  id_token against the provider's JWKS, reads ``patient`` from the token response, signs the
  user in (name: the id_token's ``fhirUser``, else ``sub``; role: ``[smart] role``) and
  opens ``/patients/{patient}``.
- ``GET /smart/patient``: the patient in context against every trial of the portfolio, live
  (``match``), read with the launch's access token.

fhirclient reads no ``.well-known/smart-configuration``; the endpoints found there are handed
to its OAuth2 handler. The access token stays server-side (flows.TOKENS), the session cookie
holds only a random key to it.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import date
from typing import Any
from urllib.parse import quote

import requests
from fhirclient.auth import FHIROAuth2Auth
from fhirclient.client import FHIRClient
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import ConfigError
from ..criteria.cohort import needed_types
from ..rest.auth import BearerToken
from ..rest.client import FhirError
from ..rest.transport import Transport, TransportError
from ..nightly.state import StateError
from ..outputs.match import match_reason
from ..screen import match_patient, match_record_server
from ..trial import Trial, TrialError, load_trials
from . import security
from .flows import FLOW_TTL, FLOWS, TOKENS, new_key
from .idtoken import Provider, SignInError, get_json, http_session
from .oidc import routes as oidc_routes
from .signin import answered_flow, client_secret, redirect_uri, refused, table
from .store import open_state

log = logging.getLogger("fhir_matcher")
KEYS = {"client_id", "client_secret_file", "client_secret_env", "redirect_uri", "scope", "role"}
CALLBACK = "/smart/callback"
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class _IdTokenHandledHere(logging.Filter):
    """fhirclient warns that it ignores the id_token; this module verifies it, so the warning misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Received an id_token" not in record.getMessage()


logging.getLogger("fhirclient.client").addFilter(_IdTokenHandledHere())


def same_base(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def default_scope(trials: list[Trial]) -> str:
    """openid fhirUser, and read/search (SMART v2) what the trials read about the patient."""
    types = sorted(set().union(*(needed_types(t) for t in trials)) | {"Patient"})
    return " ".join(["openid", "fhirUser", *(f"patient/{t}.rs" for t in types)])


class SmartApp:
    def __init__(self, settings: Any):
        self.settings = settings
        self.cfg = table("smart", settings.smart, KEYS, ("client_id",))
        self.client_id = str(self.cfg["client_id"])
        self.secret = client_secret("smart", self.cfg)
        self.role = str(self.cfg.get("role", "viewer"))
        self.ca_bundle = (settings.config.get("server") or {}).get("ca_bundle")
        self.session = http_session(self.ca_bundle)
        self.trials = _trials(settings.config)
        self.scope = str(self.cfg.get("scope") or default_scope(self.trials))
        for s in ("launch", "launch/patient"):  # fhirclient adds the one each launch needs
            self.scope = " ".join(x for x in self.scope.split() if x != s)
        if "openid" not in self.scope.split():
            raise ConfigError("[smart] scope must include openid (and fhirUser): the id_token names who signed in")

    # ------------------------------------------------------------------ launch

    def discover(self, iss: str) -> dict[str, Any]:
        meta = get_json(self.session, f"{iss.rstrip('/')}/.well-known/smart-configuration", "the SMART configuration")
        for key in ("authorization_endpoint", "token_endpoint"):
            if not meta.get(key):
                raise SignInError(f"the SMART configuration of {iss} names no {key}")
        return meta

    def begin(self, request: Request, iss: str, launch: str | None) -> Response:
        try:
            meta = self.discover(iss)
        except SignInError as e:
            return refused(request, str(e), 502)
        redirect = redirect_uri(request, self.cfg, CALLBACK)
        client = FHIRClient(settings={"app_id": self.client_id, "app_secret": self.secret, "api_base": iss,
                                      "redirect_uri": redirect, "scope": self.scope, "launch_token": launch}, save_func=lambda s: None)
        client.server.auth = FHIROAuth2Auth(state={"app_id": self.client_id, "app_secret": self.secret, "aud": iss,
                                                   "authorize_uri": meta["authorization_endpoint"],
                                                   "token_uri": meta["token_endpoint"], "redirect_uri": redirect})
        url = client.authorize_url  # adds state, PKCE S256, aud, launch, and launch or launch/patient to the scope
        state = client.server.auth.auth_state
        FLOWS.put(state, {"kind": "smart", "client": client.state, "iss": iss, "meta": meta}, FLOW_TTL)
        request.session["smart_flow"] = state
        return RedirectResponse(url, status_code=303)

    def launch(self, request: Request) -> Response:
        iss, launch = request.query_params.get("iss"), request.query_params.get("launch")
        if not iss or not launch:
            return refused(request, "an EHR launch needs iss and launch parameters (open the app from the EHR, or use /smart/login)")
        if not same_base(iss, self.settings.server):
            return refused(request, f"the EHR launched this app for the FHIR server {iss[:200]}, but it is set up for "
                                    f"{self.settings.server} (serve --server): only that server's launches are accepted", 403)
        return self.begin(request, self.settings.server, launch)

    def standalone(self, request: Request) -> Response:
        return self.begin(request, self.settings.server, None)

    # ------------------------------------------------------------------ callback

    def callback(self, request: Request) -> Response:
        flow, refusal = answered_flow(request, "smart", "the authorization server", "a launch", "Launch the app again.")
        if flow is None:
            return refusal
        client = FHIRClient(state=flow["client"], save_func=lambda s: None)
        client.server.session.verify = self.ca_bundle or True
        try:
            client.handle_callback(str(request.url))  # state again, then the code exchange
        except (requests.ConnectionError, requests.Timeout) as e:
            return refused(request, f"the token endpoint could not be reached ({type(e).__name__})", 502)
        except Exception as e:  # noqa: BLE001 - fhirclient raises bare Exceptions, or ones carrying the response
            answer = getattr(e, "response", None)
            if isinstance(answer, requests.Response):  # HTTPError, FHIRUnauthorizedException (401) ...
                return refused(request, f"the token endpoint refused the code: {_oauth_error(answer)}", 403)
            return refused(request, f"the code exchange failed ({str(e).split(':')[0][:120]})", 403)
        ctx = client.launch_context or {}
        auth = client.server.auth
        patient = ctx.get("patient")
        if not isinstance(patient, str) or not FHIR_ID.match(patient):
            return refused(request, "the token response names no patient in context (launch the app from a patient's chart, or pick a patient)", 403)
        if not ctx.get("id_token"):
            return refused(request, "the token response has no id_token: add 'openid fhirUser' to [smart] scope and allow them for this client", 403)
        try:
            claims = self.provider(flow["meta"]).verify(str(ctx["id_token"]), self.client_id)
        except SignInError as e:
            return refused(request, str(e), 403)
        expires = auth.expires_at.timestamp() if auth.expires_at else time.time() + 3600
        security.sign_in(request, user_name(claims, flow["iss"]), self.role, "smart")
        key = new_key()
        TOKENS.put(key, {"access_token": auth.access_token, "iss": flow["iss"], "patient": patient}, max(0.0, expires - time.time()))
        request.session["smart"] = {"patient": patient, "iss": flow["iss"], "token_expires": int(expires), "key": key}
        log.info("SMART launch: signed in as %s", self.role)
        return RedirectResponse(f"/patients/{quote(patient, safe='')}", status_code=303)

    def provider(self, meta: dict[str, Any]) -> Provider:
        """The id_token's issuer from the SMART configuration; its keys from jwks_uri there, else its OIDC discovery."""
        issuer = meta.get("issuer")
        if not issuer:
            raise SignInError("the SMART configuration names no issuer: id_tokens cannot be verified")
        known = {"issuer": str(issuer).rstrip("/"), "jwks_uri": meta["jwks_uri"],
                 "id_token_signing_alg_values_supported": meta.get("id_token_signing_alg_values_supported", ["RS256"])} if meta.get("jwks_uri") else None
        return Provider(str(issuer), self.session, known)

    # ------------------------------------------------------------------ the patient in context, live

    def patient_match(self, request: Request) -> Response:
        smart = request.session.get("smart") or {}
        token = TOKENS.get(smart.get("key"))
        web = request.app.state.web
        if not token:
            return web.render(request, "error.html", status_code=401, code=401,
                              message="The EHR's access for this launch has ended: launch the app again from the EHR.")
        as_of = getattr(self.settings, "as_of", None) or date.today()
        types = set().union(*(needed_types(t) for t in self.trials))
        transport = Transport(timeout=60.0, retries=2, ca_bundle=self.ca_bundle, auth=BearerToken(token["access_token"]))
        patient = f"Patient/{token['patient']}"
        try:
            record, problems = match_record_server(token["iss"], patient, types, transport)
        except (TransportError, FhirError) as e:
            return web.render(request, "error.html", status_code=502, code=502, message=f"The FHIR server could not be read: {e}")
        finally:
            transport.close()
        if record is None:
            return web.render(request, "error.html", status_code=404, code=404, message="The patient in context is not on the FHIR server.")
        outcomes = match_patient(record, self.trials, as_of)
        rank = {"candidate": 0, "potential-candidate": 1}
        outcomes.sort(key=lambda o: (rank.get(o[1].status if o[1] else "", 2), o[0].id))
        listed = self.worklists(patient)
        rows = [{"trial": t, "result": r, "status": r.status if r else "ineligible", "why": match_reason(t, r) if r else note,
                 "listed": t.id in listed} for t, r, note in outcomes]
        return web.render(request, "smart_patient.html", patient=token["patient"], as_of=as_of, rows=rows, problems=problems)

    def worklists(self, patient: str) -> set[str]:
        """The trials whose worklist (the nightly state) holds the patient: there a coordinator decides."""
        try:
            with open_state(self.settings.state) as state:
                return {tid for tid in state.trials() if patient in state.patients(tid)}
        except StateError:
            return set()


def user_name(claims: dict[str, Any], iss: str) -> str:
    """Who signed in: ``fhirUser`` (relative to the FHIR base when it is on it: Practitioner/123), else ``sub``."""
    user = str(claims.get("fhirUser") or "")
    if user.lower().startswith(iss.rstrip("/").lower() + "/"):
        user = user[len(iss.rstrip("/")) + 1:]
    return user or str(claims["sub"])


def _oauth_error(resp: requests.Response | None) -> str:
    if resp is None:
        return "no answer"
    try:
        body = resp.json()
    except ValueError:
        body = {}
    detail = (body.get("error_description") or body.get("error")) if isinstance(body, dict) else None
    return str(detail or f"HTTP {resp.status_code}")[:200]


def _trials(config: dict[str, Any]) -> list[Trial]:
    """The portfolio, as every command reads it: ``[trial] path`` (one or a list) and ``dir``."""
    section = config.get("trial") or {}
    paths = section.get("path") or section.get("paths")
    try:
        return load_trials([paths] if isinstance(paths, str) else paths, section.get("dir"))
    except TrialError as e:
        raise ConfigError(f"[trial]: {e}") from None


def routes(settings: Any) -> list[BaseRoute]:
    """The SMART launch routes when the config has a ``[smart]`` table, and the OpenID Connect
    sign-in (oidc.py) when it has ``[oidc]``."""
    out: list[BaseRoute] = list(oidc_routes(settings))
    if not getattr(settings, "smart", None):
        return out
    app = SmartApp(settings)

    def threaded(fn: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            return await run_in_threadpool(fn, request)
        return endpoint

    @security.require_user()
    def patient(request: Request) -> Response:  # a blocking view: require_user runs it in the thread pool
        if request.state.user.get("via") != "smart" or not request.session.get("smart"):
            return request.app.state.web.render(request, "error.html", status_code=404, code=404,
                                                message="No patient in context: this page follows a launch from the EHR.")
        return app.patient_match(request)

    return out + [
        Route("/smart/launch", threaded(app.launch), methods=["GET"], name="smart_launch"),
        Route("/smart/login", threaded(app.standalone), methods=["GET"], name="smart_login"),
        Route(CALLBACK, threaded(app.callback), methods=["GET"], name="smart_callback"),
        Route("/smart/patient", patient, methods=["GET"], name="smart_patient"),
    ]
