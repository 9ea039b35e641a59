"""The pieces of the OIDC / SMART sign-in on their own: flow memory, role mapping, names,
scopes, and id_token checks (key rotation, algorithms) against the test provider."""

from __future__ import annotations

import time

import jwt
import pytest

from fhir_matcher.trial import load_trials
from fhir_matcher.web.flows import ExpiringStore
from fhir_matcher.web.idtoken import Provider, SignInError, http_session
from fhir_matcher.web.oidc import role_from
from fhir_matcher.web.smart import default_scope, same_base, user_name
from smart_auth import AuthServer, _rsa


def test_flows_expire_and_are_used_once():
    now = [1000.0]
    store = ExpiringStore(clock=lambda: now[0])
    store.put("a", {"x": 1}, ttl=600)
    store.put("b", {"x": 2}, ttl=600)
    assert store.get("a") == {"x": 1}
    assert store.pop("a") == {"x": 1} and store.pop("a") is None  # once
    now[0] += 601
    assert store.get("b") is None and store.pop(None) is None
    store.put("c", 3, ttl=10)
    assert len(store) == 1  # expired entries are dropped on the next put


@pytest.mark.parametrize("claims, role", [
    ({"groups": ["staff", "trial-coordinators"]}, "coordinator"),
    ({"groups": "trial-coordinators"}, "coordinator"),
    ({"groups": ["staff"]}, "viewer"),
    ({}, "viewer"),
    ({"groups": [{"name": "trial-coordinators"}]}, "viewer"),  # not a string: not a match
])
def test_roles_from_a_claim(claims, role):
    assert role_from(claims, "groups", ["trial-coordinators"]) == role


def test_user_names_and_bases():
    base = "https://ehr.example/fhir/r4"
    assert user_name({"sub": "u1", "fhirUser": f"{base}/Practitioner/9"}, base + "/") == "Practitioner/9"
    assert user_name({"sub": "u1", "fhirUser": "https://other.example/Practitioner/9"}, base) == "https://other.example/Practitioner/9"
    assert user_name({"sub": "u1"}, base) == "u1"
    assert same_base("https://EHR.example/fhir/", "https://ehr.example/fhir") and not same_base("https://ehr.example/fhir2", "https://ehr.example/fhir")


def test_default_scope_reads_what_the_trials_read():
    scope = default_scope(load_trials(None)).split()
    assert scope[:2] == ["openid", "fhirUser"]
    assert {"patient/Patient.rs", "patient/Condition.rs", "patient/Observation.rs"} <= set(scope)
    assert not any(s.startswith(("user/", "system/")) or s.endswith(("*.rs", ".cruds")) for s in scope[2:])


@pytest.fixture()
def idp():
    srv = AuthServer(client_id="app")
    yield srv
    srv.stop()


def token(idp: AuthServer, key=None, alg="RS256", kid=None, **claims) -> str:
    now = int(time.time())
    body = {"iss": idp.issuer, "sub": "u1", "aud": "app", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key or idp.key, algorithm=alg, headers={"kid": kid or idp.kid})


def test_a_rotated_key_is_fetched_again(idp):
    provider = Provider(idp.issuer, http_session())
    assert provider.verify(token(idp), "app")["sub"] == "u1"
    idp.key, idp.kid = _rsa(), "test-key-2"  # the provider rotates its signing key
    assert provider.verify(token(idp), "app")["sub"] == "u1"


def test_symmetric_or_unsigned_tokens_are_refused(idp):
    provider = Provider(idp.issuer, http_session())
    with pytest.raises(SignInError, match="signed with 'HS256'"):
        provider.verify(token(idp, key="a-guessable-secret-of-32-bytes-xx", alg="HS256"), "app")
    unsigned = jwt.encode({"iss": idp.issuer, "sub": "u1", "aud": "app", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(SignInError, match="signed with 'none'"):
        provider.verify(unsigned, "app")
    with pytest.raises(SignInError, match="not a well-formed JWT"):
        provider.verify("not.a.token", "app")


def test_a_discovery_document_for_another_issuer_is_refused(idp):
    provider = Provider(idp.issuer + "/realm", http_session())
    with pytest.raises(SignInError, match="answered HTTP 404"):
        provider.metadata()
    idp_doc = idp.openid_configuration
    idp.openid_configuration = lambda: {**idp_doc(), "issuer": "https://evil.example"}
    with pytest.raises(SignInError, match="names issuer 'https://evil.example'"):
        Provider(idp.issuer, http_session()).metadata()
