"""A small OAuth 2 / OpenID Connect / SMART App Launch authorization server for tests, on loopback.

- ``GET /.well-known/openid-configuration``, ``/.well-known/smart-configuration``, ``/jwks``;
- ``GET /authorize``: checks the client, redirect URI, state, PKCE (S256 only), the SMART
  ``aud`` (the FHIR base) and ``launch`` (issued by :meth:`AuthServer.new_launch`); then
  "signs the user in" at once and redirects back with a one-time code;
- ``POST /token``: checks the code, redirect URI, client (HTTP basic when confidential) and
  the PKCE verifier; answers ``access_token``, ``scope``, ``expires_in``, ``patient`` (launch
  context) and an RS256 ``id_token`` (``nonce`` echoed) when ``openid`` was asked for.

Knobs for the negative tests: ``claims`` (merged into every id_token: a wrong ``aud``, an
``exp`` in the past, another ``nonce``), ``tamper`` (corrupt the signature), ``foreign_key``
(sign with a key not in the JWKS).

:class:`FhirProxy` sits in front of the HAPI server: it serves the SMART discovery document
at ``BASE/.well-known/smart-configuration`` (HAPI has none), forwards everything else and
records each request's ``Authorization`` header, so a test can assert the bearer token went out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa


def _rsa() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 with a free port, served from a daemon thread."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(h: BaseHTTPRequestHandler, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    if body is not None and not (headers or {}).get("Content-Type"):
        h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


class AuthServer(_Server):
    def __init__(self, client_id: str = "fhir-matcher-web", client_secret: str | None = None,
                 fhir_base: str | None = None, user: str = "Practitioner/coord-1", patient: str | None = None):
        self.client_id = client_id
        self.client_secret = client_secret
        self.fhir_base = fhir_base  # the SMART audience; None: a plain OpenID Connect provider
        self.user = user  # sub / fhirUser of whoever signs in
        self.patient = patient  # the patient a standalone launch picks
        self.redirect_uris: set[str] = set()
        self.extra_claims: dict[str, Any] = {}  # e.g. {"groups": ["trial-coordinators"]}
        self.claims: dict[str, Any] = {}  # overrides (negative tests)
        self.tamper = False
        self.foreign_key = False
        self.key, self.kid = _rsa(), "test-key-1"
        self.launches: dict[str, str] = {}  # launch id -> patient
        self.codes: dict[str, dict[str, Any]] = {}
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.issued: list[str] = []  # access tokens
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    _reply(self, 200, outer.openid_configuration())
                elif url.path == "/.well-known/smart-configuration":
                    _reply(self, 200, outer.smart_configuration())
                elif url.path == "/jwks":
                    _reply(self, 200, outer.jwks())
                elif url.path == "/authorize":
                    outer.authorize(self, q)
                else:
                    _reply(self, 404, {"error": "not found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if urlsplit(self.path).path != "/token":
                    _reply(self, 404, {"error": "not found"})
                    return
                form = {k: v[0] for k, v in parse_qs(body).items()}
                status, answer = outer.token(form, self.headers.get("Authorization"))
                _reply(self, status, answer, {"Cache-Control": "no-store"})

            def log_message(self, *a: Any) -> None:
                pass

        self._serve(Handler)
        self.issuer = f"http://127.0.0.1:{self.port}"

    # discovery
    def openid_configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "fhirUser", "launch", "launch/patient"],
        }

    def smart_configuration(self) -> dict[str, Any]:
        return {
            **self.openid_configuration(),
            "grant_types_supported": ["authorization_code"],
            "capabilities": ["launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
                             "context-ehr-patient", "context-standalone-patient", "sso-openid-connect", "permission-v2"],
        }

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def new_launch(self, patient: str) -> str:
        """What the EHR does before opening the app: a launch id bound to the patient in context."""
        launch = secrets.token_urlsafe(12)
        self.launches[launch] = patient
        return launch

    # the flow
    def authorize(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        self.authorize_requests.append(q)
        redirect = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id or redirect not in self.redirect_uris:
            _reply(h, 400, b"unknown client or redirect_uri", {"Content-Type": "text/plain"})
            return
        problem = None
        if q.get("response_type") != "code" or not q.get("state"):
            problem = "invalid_request"
        elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            problem = "invalid_request"  # PKCE S256 required
        elif self.fhir_base is not None and q.get("aud") != self.fhir_base:
            problem = "invalid_request"  # SMART: aud must be the FHIR server the token is for
        elif "launch" in q and q["launch"] not in self.launches:
            problem = "invalid_request"
        if problem:
            _reply(h, 302, None, {"Location": f"{redirect}?{urlencode({'error': problem, 'state': q.get('state', '')})}"})
            return
        scopes = q.get("scope", "").split()
        patient = self.launches.get(q["launch"]) if "launch" in q else (self.patient if "launch/patient" in scopes else None)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"q": q, "patient": patient, "scopes": scopes}
        _reply(h, 302, None, {"Location": f"{redirect}?{urlencode({'code': code, 'state': q['state']})}"})

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.token_requests.append(form)
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        if self.client_secret is not None:
            want = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if authorization != want:
                return 401, {"error": "invalid_client"}
        grant = self.codes.pop(form.get("code", ""), None)  # one use only
        if grant is None:
            return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
        q = grant["q"]
        if form.get("redirect_uri") != q["redirect_uri"] or form.get("client_id", self.client_id) != self.client_id:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri or client_id differs"}
        if s256(form.get("code_verifier", "")) != q["code_challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        access = secrets.token_urlsafe(24)
        self.issued.append(access)
        answer: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": 3600, "scope": " ".join(grant["scopes"])}
        if grant["patient"]:
            answer["patient"] = grant["patient"]
        if "openid" in grant["scopes"]:
            answer["id_token"] = self.id_token(q)
        return 200, answer

    def id_token(self, q: dict[str, str]) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": self.user.rsplit("/", 1)[-1], "aud": self.client_id,
                                  "iat": now, "exp": now + 300, **self.extra_claims}
        if "fhirUser" in q.get("scope", "").split():
            claims["fhirUser"] = f"{self.fhir_base}/{self.user}" if self.fhir_base else self.user
        if q.get("nonce"):
            claims["nonce"] = q["nonce"]
        claims.update(self.claims)
        key = _rsa() if self.foreign_key else self.key
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})
        if self.tamper:
            head, body, sig = token.split(".")
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            payload["sub"] = "someone-else"  # a changed claim under the original signature
            body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
            token = f"{head}.{body}.{sig}"
        return token


class FhirProxy(_Server):
    """``http://127.0.0.1:PORT/fhir`` in front of an upstream FHIR base (the HAPI server)."""

    def __init__(self, upstream: str, auth: AuthServer):
        self.upstream = upstream.rstrip("/")
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path without query, Authorization)
        outer = self
        session = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                path = urlsplit(self.path).path
                outer.seen.append((self.command, path, self.headers.get("Authorization")))
                if path == "/fhir/.well-known/smart-configuration":
                    _reply(self, 200, auth.smart_configuration())
                    return
                if not path.startswith("/fhir"):
                    _reply(self, 404, {"error": "not found"})
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "content-type", "if-match", "prefer", "if-none-exist")}
                resp = session.request(self.command, outer.upstream + self.path[len("/fhir"):], data=body, headers=headers, timeout=60)
                data = resp.content.replace(outer.upstream.encode(), outer.base.encode())  # paging links come back here
                out = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "etag", "location", "last-modified")}
                if "Location" in out:
                    out["Location"] = out["Location"].replace(outer.upstream, outer.base)
                _reply(self, resp.status_code, data, out)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *a: Any) -> None:
                pass

        self._serve(Handler)
        self.base = f"http://127.0.0.1:{self.port}/fhir"

    def bearer_requests(self, token: str) -> list[str]:
        """Paths of the requests that carried ``Bearer token``."""
        return [p for _, p, a in self.seen if a == f"Bearer {token}"]
