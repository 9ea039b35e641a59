"""Sign-in delegated to an OpenID Connect provider: the test provider (tests/smart_auth.py) on
loopback, the app under TestClient. Every refusal is a page that says why, and no session."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fhir_matcher.config import ConfigError
from fhir_matcher.web.app import create_app
from fhir_matcher.web.settings import WebSettings
from smart_auth import AuthServer
from web_signin import SECRET, session_of, through_provider

CLIENT = "fhir-matcher-web"


@pytest.fixture(scope="module")
def provider():
    srv = AuthServer(client_id=CLIENT, client_secret="s3cret-oidc")
    srv.redirect_uris.add("https://testserver/login/oidc/callback")
    yield srv
    srv.stop()


@pytest.fixture()
def app_client(provider, tmp_path, monkeypatch):
    provider.claims, provider.extra_claims, provider.tamper, provider.foreign_key = {}, {"groups": ["staff", "trial-coordinators"]}, False, False
    monkeypatch.setenv("TEST_OIDC_SECRET", "s3cret-oidc")
    oidc = {"issuer": provider.issuer, "client_id": CLIENT, "client_secret_env": "TEST_OIDC_SECRET",
            "role_claim": "groups", "coordinator_values": ["trial-coordinators"]}
    settings = WebSettings(server="http://127.0.0.1:9/fhir", state=tmp_path / "state.sqlite", secret_key=SECRET, oidc=oidc)
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        yield client


def sign_in(client: TestClient, start: str = "/login/oidc") -> tuple:
    back, authorize = through_provider(client, start)
    return client.get(back, follow_redirects=False), authorize


def test_sign_in_sets_the_session_user_with_the_mapped_role(app_client, provider):
    resp, authorize = sign_in(app_client, "/login/oidc?next=/trials/x")
    assert resp.status_code == 303 and resp.headers["location"] == "/trials/x"
    assert authorize["code_challenge_method"] == "S256" and authorize["nonce"] and authorize["state"]
    assert "openid" in authorize["scope"].split()
    user = session_of(app_client)["user"]
    assert user["name"] == "coord-1" and user["role"] == "coordinator" and user["via"] == "oidc"
    assert abs(user["since"] - time.time()) < 60 and user["seen"] == user["since"]
    exchange = provider.token_requests[-1]
    assert exchange["code_verifier"] and "client_secret" not in exchange  # the secret went by HTTP basic


def test_without_the_coordinator_group_the_user_is_a_viewer(app_client, provider):
    provider.extra_claims = {"groups": ["staff"], "preferred_username": "v.wong"}
    resp, _ = sign_in(app_client)
    assert resp.status_code == 303 and resp.headers["location"] == "/"
    user = session_of(app_client)["user"]
    assert (user["name"], user["role"]) == ("v.wong", "viewer")


def test_an_open_redirect_is_not_followed(app_client):
    resp, _ = sign_in(app_client, "/login/oidc?next=//evil.example/x")
    assert resp.headers["location"] == "/"


def refused(client: TestClient, resp, words: str) -> None:
    assert resp.status_code in (400, 403), resp.status_code
    assert words in resp.text, resp.text
    assert "Traceback" not in resp.text
    assert "user" not in session_of(client)
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")


def test_a_bad_state_is_refused(app_client):
    back, _ = through_provider(app_client, "/login/oidc")
    forged = back.replace("state=", "state=x")
    refused(app_client, app_client.get(forged, follow_redirects=False), "state mismatch")


def test_a_callback_in_another_browser_is_refused(app_client, provider, tmp_path):
    back, _ = through_provider(app_client, "/login/oidc")
    other = TestClient(app_client.app, base_url="https://testserver")  # no cookie: not the browser that started
    refused(other, other.get(back, follow_redirects=False), "state mismatch")


def test_a_state_is_used_once(app_client):
    back, _ = through_provider(app_client, "/login/oidc")
    assert app_client.get(back, follow_redirects=False).status_code == 303
    app_client.cookies.clear()
    refused(app_client, app_client.get(back, follow_redirects=False), "state mismatch")


@pytest.mark.parametrize("change, words", [
    ({"nonce": "another-nonce"}, "nonce"),
    ({"aud": "someone-else"}, "issued to another client"),
    ({"exp": 1_000_000_000, "iat": 999_999_000}, "expired"),
    ({"iss": "http://127.0.0.1:1"}, "issued by someone else"),
])
def test_a_bad_id_token_is_refused(app_client, provider, change, words):
    provider.claims = change
    resp, _ = sign_in(app_client)
    refused(app_client, resp, words)


def test_a_tampered_signature_is_refused(app_client, provider):
    provider.tamper = True
    resp, _ = sign_in(app_client)
    refused(app_client, resp, "signature does not verify")


def test_a_token_signed_with_an_unpublished_key_is_refused(app_client, provider):
    provider.foreign_key = True
    resp, _ = sign_in(app_client)
    refused(app_client, resp, "signature does not verify")


def test_the_provider_refusing_is_said(app_client):
    app_client.get("/login/oidc", follow_redirects=False)
    state = session_of(app_client)["oidc_flow"]
    resp = app_client.get(f"/login/oidc/callback?error=access_denied&error_description=user+cancelled&state={state}", follow_redirects=False)
    refused(app_client, resp, "user cancelled")


def test_a_wrong_client_secret_is_said(app_client, monkeypatch):
    monkeypatch.setenv("TEST_OIDC_SECRET", "wrong")
    settings = app_client.app.state.settings
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        resp, _ = sign_in(client)
        refused(client, resp, "token endpoint refused the code: invalid_client")


def test_config_mistakes_are_named(tmp_path):
    def build(oidc):
        return create_app(WebSettings(server="http://127.0.0.1:9/fhir", state=tmp_path / "s.sqlite", secret_key=SECRET, oidc=oidc))

    with pytest.raises(ConfigError, match=r"\[oidc\] needs issuer"):
        build({"client_id": "x"})
    with pytest.raises(ConfigError, match="must not be written in the config file"):
        build({"issuer": "https://idp.example", "client_id": "x", "client_secret": "plain"})
    with pytest.raises(ConfigError, match="FHIR_MATCHER_NOPE is not set"):
        build({"issuer": "https://idp.example", "client_id": "x", "client_secret_env": "FHIR_MATCHER_NOPE"})
    with pytest.raises(ConfigError, match="cannot read"):
        build({"issuer": "https://idp.example", "client_id": "x", "client_secret_file": str(Path(tmp_path) / "missing")})
    with pytest.raises(ConfigError, match="unknown setting"):
        build({"issuer": "https://idp.example", "client_id": "x", "roles": "x"})
