"""Discovery documents, JWKS and id_token verification, shared by the OIDC sign-in and the SMART launch.

PyJWT (already a dependency) checks the signature, ``iss``, ``aud``, ``exp`` and ``iat``; the
keys come from the provider's ``jwks_uri`` over requests (TLS verified, the configured CA
bundle honoured), cached, and fetched again once when a token names an unknown ``kid`` (key
rotation). Only asymmetric algorithms are accepted: never ``none`` nor an HMAC whose key an
attacker could guess from the public JWKS.
"""

from __future__ import annotations

import hmac
import threading
from typing import Any

import jwt
import requests

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY = 60  # seconds of clock skew tolerated on exp / iat
TIMEOUT = 30


class SignInError(Exception):
    """Sign-in failed or is misconfigured; the message is shown to the user as it is."""


def http_session(ca_bundle: str | None = None) -> requests.Session:
    """A session for the provider's endpoints: TLS verification on (a hospital CA bundle if given)."""
    s = requests.Session()
    s.verify = ca_bundle or True
    s.headers["User-Agent"] = "fhir-matcher"
    return s


def get_json(session: requests.Session, url: str, what: str) -> dict[str, Any]:
    """GET a JSON object, or a SignInError naming ``what`` and the reason."""
    try:
        resp = session.get(url, headers={"Accept": "application/json"}, timeout=TIMEOUT)
    except requests.RequestException as e:
        raise SignInError(f"{what} {url} could not be reached ({type(e).__name__})") from None
    if resp.status_code != 200:
        raise SignInError(f"{what} {url} answered HTTP {resp.status_code}")
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SignInError(f"{what} {url} is not a JSON object")
    return body


class Provider:
    """An OpenID provider: its metadata (given, or discovered from the issuer) and signing keys."""

    def __init__(self, issuer: str, session: requests.Session, metadata: dict[str, Any] | None = None):
        self.issuer = issuer.rstrip("/")
        self.session = session
        self._metadata = metadata
        self._keys: jwt.PyJWKSet | None = None
        self._lock = threading.Lock()

    def metadata(self) -> dict[str, Any]:
        """``ISSUER/.well-known/openid-configuration``; its ``issuer`` must be the configured one."""
        if self._metadata is None:
            doc = get_json(self.session, f"{self.issuer}/.well-known/openid-configuration", "the OpenID discovery document")
            if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
                raise SignInError(f"the OpenID discovery document names issuer {doc.get('issuer')!r}, not the configured {self.issuer!r}")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not doc.get(key):
                    raise SignInError(f"the OpenID discovery document of {self.issuer} names no {key}")
            self._metadata = doc
        return self._metadata

    def endpoint(self, name: str) -> str:
        return str(self.metadata()[name])

    def _jwks(self, refresh: bool) -> jwt.PyJWKSet:
        with self._lock:
            if self._keys is None or refresh:
                uri = self.metadata().get("jwks_uri")
                if not uri:
                    raise SignInError(f"{self.issuer} publishes no jwks_uri: id_tokens cannot be verified")
                doc = get_json(self.session, str(uri), "the signing keys (JWKS)")
                try:
                    self._keys = jwt.PyJWKSet.from_dict(doc)
                except jwt.PyJWTError as e:
                    raise SignInError(f"the signing keys at {uri} are unusable ({e})") from None
            return self._keys

    def signing_key(self, kid: str | None) -> Any:
        for refresh in (False, True):  # an unknown kid: the keys may have rotated, fetch them once more
            keys = [k for k in self._jwks(refresh).keys if k.public_key_use in (None, "sig")]
            match = [k for k in keys if kid is None or k.key_id == kid]
            if kid is None and len(match) > 1:
                raise SignInError("the id_token names no key (kid) and the provider has several")
            if match:
                return match[0]
        raise SignInError("the id_token is signed with a key the provider does not publish")

    def verify(self, token: str, audience: str, nonce: str | None = None) -> dict[str, Any]:
        """The id_token's claims, after checking signature, issuer, audience, expiry (and nonce)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SignInError("the id_token is not a well-formed JWT") from None
        algs = [a for a in self.metadata().get("id_token_signing_alg_values_supported", ["RS256"]) if a in ASYMMETRIC] or ["RS256"]
        if header.get("alg") not in algs:
            raise SignInError(f"the id_token is signed with {header.get('alg')!r}, not one of {', '.join(algs)}")
        key = self.signing_key(header.get("kid"))
        try:
            claims = jwt.decode(token, key.key, algorithms=algs, audience=audience, issuer=self.issuer, leeway=LEEWAY,
                                options={"require": ["iss", "sub", "aud", "exp", "iat"]})
        except jwt.ExpiredSignatureError:
            raise SignInError("the id_token has expired (check the clocks of this server and the provider)") from None
        except jwt.InvalidAudienceError:
            raise SignInError("the id_token was issued to another client (audience is not this app's client_id)") from None
        except jwt.InvalidIssuerError:
            raise SignInError(f"the id_token was issued by someone else than {self.issuer}") from None
        except jwt.InvalidSignatureError:
            raise SignInError("the id_token's signature does not verify: it was altered or not signed by the provider") from None
        except jwt.MissingRequiredClaimError as e:
            raise SignInError(f"the id_token lacks the {e.claim!r} claim") from None
        except jwt.PyJWTError as e:
            raise SignInError(f"the id_token was refused ({type(e).__name__})") from None
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != audience:
            raise SignInError("the id_token names several audiences and this app is not its authorized party (azp)")
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise SignInError("the id_token's nonce is not the one this sign-in sent (a replayed or foreign token)")
        return claims
