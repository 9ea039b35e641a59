"""Authorization for hospital endpoints, as requests auth objects the transport attaches.

- ``smart-backend``: SMART Backend Services. A JWT client assertion (RS384 or ES384, private
  key from a file, ``kid``, ``jti``, 5-minute ``exp``) is exchanged for an access token at
  the token endpoint discovered from ``BASE/.well-known/smart-configuration``.
- ``client-secret``: OAuth client credentials with a client secret (HTTP basic at the token
  endpoint).
- ``bearer``: a static token. ``basic``: HTTP basic.
- Mutual TLS (``client_cert`` / ``client_key``) combines with any of them.

Secrets are never written in the config file: it names an environment variable
(``*_env``) or a file (``*_file``) holding them. Tokens are cached and renewed a minute
before they expire, or at once when the server answers 401. Nothing here logs a secret.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import requests
from requests.auth import AuthBase, HTTPBasicAuth

TOKEN_MARGIN = 60.0  # renew this many seconds before expiry
ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_now = time.time  # the clock (tests move it)


class AuthError(Exception):
    """Authorization is misconfigured or refused; the message says what to fix."""


def _secret(cfg: dict[str, Any], name: str, required: bool = True) -> str | None:
    """A secret from ``NAME_env`` (environment variable) or ``NAME_file`` (a file)."""
    if name in cfg:
        raise AuthError(f"[auth] {name}: secrets must not be written in the config file; use {name}_env or {name}_file")
    env, file = cfg.get(f"{name}_env"), cfg.get(f"{name}_file")
    if env:
        value = os.environ.get(env)
        if not value:
            raise AuthError(f"[auth] {name}_env: the environment variable {env} is not set")
        return value.strip()
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise AuthError(f"[auth] {name}_file: cannot read {file} ({e.strerror or e})") from None
    if required:
        raise AuthError(f"[auth] needs {name}_env or {name}_file")
    return None


def post_token_form(session: requests.Session, url: str, data: dict[str, str], auth: Any) -> tuple[int, Any]:
    """POST a form to an OAuth token endpoint: (HTTP status, the JSON answered, {} when the
    body is not JSON). Connection errors are the caller's to word (requests exceptions)."""
    resp = session.post(url, data=data, auth=auth, headers={"Accept": "application/json"}, timeout=30, verify=session.verify)
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, {}


class BearerToken(AuthBase):
    def __init__(self, token: str):
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r


class OAuthClientCredentials(AuthBase):
    """Fetches and caches an access token; subclasses say how the client authenticates."""

    def __init__(self, client_id: str, scope: str, token_url: str | None, base_url: str, session_factory: Callable[[], requests.Session] | None = None):
        self.client_id = client_id
        self.scope = scope
        self.token_url = token_url
        self.base_url = base_url.rstrip("/")
        self._session: requests.Session | None = None
        self._session_factory = session_factory
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.tokens_fetched = 0

    def bind(self, session: requests.Session) -> None:
        """Use the transport's session (TLS settings, client certificate, pool)."""
        self._session = session

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = self._session_factory() if self._session_factory else requests.Session()
        return self._session

    def discover(self) -> str:
        if self.token_url:
            return self.token_url
        url = f"{self.base_url}/.well-known/smart-configuration"
        try:
            resp = self.session.get(url, headers={"Accept": "application/json"}, timeout=30, verify=self.session.verify)
            config = resp.json() if resp.ok else None
        except (requests.RequestException, ValueError) as e:
            raise AuthError(f"cannot read {url} ({type(e).__name__}); set [auth] token_url") from None
        if not isinstance(config, dict) or not config.get("token_endpoint"):
            raise AuthError(f"{url} names no token_endpoint (HTTP {resp.status_code}); set [auth] token_url")
        self.token_url = str(config["token_endpoint"])
        return self.token_url

    def form(self, token_url: str) -> tuple[dict[str, str], AuthBase | None]:
        raise NotImplementedError

    def token(self) -> str:
        with self._lock:
            if self._token and _now() < self._expires - TOKEN_MARGIN:
                return self._token
            token_url = self.discover()
            data, auth = self.form(token_url)
            try:
                status, body = post_token_form(self.session, token_url, data, auth)
            except requests.RequestException as e:
                raise AuthError(f"token endpoint {token_url} unreachable ({type(e).__name__})") from None
            body = body if isinstance(body, dict) else {}
            if status != 200 or not body.get("access_token"):
                detail = body.get("error_description") or body.get("error") or f"HTTP {status}"
                raise AuthError(f"token endpoint {token_url} refused the client {self.client_id!r}: {detail}")
            self._token = str(body["access_token"])
            self._expires = _now() + float(body.get("expires_in", 300))
            self.tokens_fetched += 1
            return self._token

    def invalidate(self) -> None:
        """The server said 401: the next request fetches a new token."""
        with self._lock:
            self._token = None

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token()}"
        return r


class SmartBackendServices(OAuthClientCredentials):
    def __init__(self, client_id: str, key_pem: bytes, kid: str, alg: str, scope: str, token_url: str | None, base_url: str):
        super().__init__(client_id, scope, token_url, base_url)
        if alg not in ("RS384", "ES384"):
            raise AuthError(f"[auth] alg must be RS384 or ES384, not {alg!r}")
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            self._key = load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as e:
            raise AuthError(f"[auth] private_key_file is not an unencrypted PEM private key ({e})") from None
        self.kid = kid
        self.alg = alg

    def assertion(self, token_url: str) -> str:
        import jwt

        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": token_url, "exp": now + ASSERTION_LIFETIME, "iat": now, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})

    def form(self, token_url: str) -> tuple[dict[str, str], AuthBase | None]:
        return {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": self.assertion(token_url),
        }, None


class ClientSecret(OAuthClientCredentials):
    def __init__(self, client_id: str, secret: str, scope: str, token_url: str | None, base_url: str):
        super().__init__(client_id, scope, token_url, base_url)
        self._secret = secret

    def form(self, token_url: str) -> tuple[dict[str, str], AuthBase | None]:
        return {"grant_type": "client_credentials", "scope": self.scope}, HTTPBasicAuth(self.client_id, self._secret)


def default_scope(read_types: set[str], write: bool) -> str:
    """SMART v2 system scopes: read/search what the criteria read, create/update what is written."""
    scopes = [f"system/{t}.rs" for t in sorted(read_types | {"Patient"})]
    if write:
        scopes += ["system/ResearchStudy.cru", "system/ResearchSubject.cru", "system/Task.cru"]  # Task: reviews (issue 11)
    return " ".join(scopes)


def from_config(cfg: dict[str, Any], base_url: str, scope: str) -> tuple[AuthBase | None, tuple[str, str] | None]:
    """(auth for requests, client certificate) from an ``[auth]`` table."""
    cert = None
    if cfg.get("client_cert"):
        cert = (str(cfg["client_cert"]), str(cfg.get("client_key") or cfg["client_cert"]))
        for path in cert:
            if not Path(path).is_file():
                raise AuthError(f"[auth] client certificate file not found: {path}")
    method = cfg.get("method", "none")
    if method not in ("none", "bearer", "basic", "client-secret", "smart-backend"):
        raise AuthError(f"[auth] method must be one of none, bearer, basic, client-secret, smart-backend (not {method!r})")
    scope = cfg.get("scope", scope)
    if method == "none":
        return None, cert
    if method == "bearer":
        return BearerToken(_secret(cfg, "token") or ""), cert
    if method == "basic":
        user = cfg.get("username")
        if not user:
            raise AuthError("[auth] basic needs username")
        return HTTPBasicAuth(user, _secret(cfg, "password") or ""), cert
    client_id = cfg.get("client_id")
    if not client_id:
        raise AuthError(f"[auth] {method} needs client_id")
    if method == "client-secret":
        return ClientSecret(client_id, _secret(cfg, "client_secret") or "", scope, cfg.get("token_url"), base_url), cert
    # smart-backend
    key_file = cfg.get("private_key_file")
    if not key_file:
        raise AuthError("[auth] smart-backend needs private_key_file")
    try:
        pem = Path(key_file).read_bytes()
    except OSError as e:
        raise AuthError(f"[auth] private_key_file: cannot read {key_file} ({e.strerror or e})") from None
    kid = cfg.get("kid")
    if not kid:
        raise AuthError("[auth] smart-backend needs kid (the key id registered with the server)")
    return SmartBackendServices(client_id, pem, kid, cfg.get("alg", "RS384"), scope, cfg.get("token_url"), base_url), cert
