"""SMART on FHIR App Launch end to end: the local HAPI server (demo data) behind a recording
proxy that serves the SMART configuration, the test authorization server, and the app.

EHR launch: the EHR (the test) asks the authorization server for a launch id bound to a
patient and opens /smart/launch?iss=...&launch=...; the app goes to authorize (state, PKCE,
aud, launch), the code comes back, the app exchanges it (fhirclient), verifies the id_token,
reads ``patient`` from the token response and opens that patient. The FHIR reads of the live
view carry the launch's bearer token: the proxy saw them.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import requests
from starlette.testclient import TestClient

from fhir_matcher.config import ConfigError
from fhir_matcher.rest.client import FhirClient
from fhir_matcher.rest.loader import Loader
from fhir_matcher.screen import match_patient, match_record_files
from fhir_matcher.trial import default_trial_path, load_trials
from fhir_matcher.web.app import create_app
from fhir_matcher.web.flows import TOKENS
from fhir_matcher.web.settings import WebSettings
from smart_auth import AuthServer, FhirProxy, s256
from web_signin import COOKIE, SECRET, session_of, through_provider

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
AS_OF = date(2026, 11, 24)
PREFIX = "sl-"
CLIENT = "matcher-smart"
TAG = "https://fhir-matcher.org/fhir/test-run|smart-launch"


@pytest.fixture(scope="module")
def trials_dir() -> Path:
    """The bundled portfolio: CAR-T, T2D-CKD, HFrEF (a CAR-T candidate is ineligible for the other two)."""
    return default_trial_path().parent


@pytest.fixture(scope="module")
def ehr(hapi):
    """(authorization server, FHIR proxy) around the HAPI server loaded with the demo."""
    report = Loader(FhirClient(hapi.base_url), tag=TAG, id_prefix=PREFIX).load([DEMO])
    assert not report.rejected
    auth = AuthServer(client_id=CLIENT)
    proxy = FhirProxy(hapi.base_url, auth)
    auth.fhir_base = proxy.base
    auth.redirect_uris.add("https://testserver/smart/callback")
    yield auth, proxy
    proxy.stop()
    auth.stop()


def settings_for(proxy: FhirProxy, trials_dir: Path, tmp_path: Path, **smart) -> WebSettings:
    return WebSettings(server=proxy.base, state=tmp_path / "state.sqlite", secret_key=SECRET, as_of=AS_OF,
                       config={"trial": {"dir": str(trials_dir)}}, smart={"client_id": CLIENT, **smart})


@pytest.fixture()
def app(ehr, trials_dir, tmp_path, monkeypatch):
    auth, proxy = ehr
    auth.client_secret, auth.claims, auth.tamper, auth.patient = "smart-s3cret", {}, False, f"{PREFIX}demo-07"
    (tmp_path / "secret").write_text("smart-s3cret\n", encoding="utf-8")
    settings = settings_for(proxy, trials_dir, tmp_path, client_secret_file=str(tmp_path / "secret"), role="coordinator")
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        yield client


def expected_statuses(trials_dir: Path, patient: str) -> dict[str, str]:
    """What ``match`` says for the same patient from the demo files, as of the same day."""
    record, _ = match_record_files(DEMO, patient)
    return {t.id: (r.status if r else "ineligible") for t, r, _ in match_patient(record, load_trials(None, trials_dir), AS_OF)}


def launch(client: TestClient, auth: AuthServer, proxy: FhirProxy, patient: str) -> tuple:
    launch_id = auth.new_launch(patient)
    back, authorize = through_provider(client, f"/smart/launch?iss={proxy.base}&launch={launch_id}")
    return client.get(back, follow_redirects=False), authorize, launch_id


def test_ehr_launch_opens_the_patient_with_every_trials_status(app, ehr, trials_dir):
    auth, proxy = ehr
    resp, authorize, launch_id = launch(app, auth, proxy, f"{PREFIX}demo-07")
    assert resp.status_code == 303 and resp.headers["location"] == f"/patients/{PREFIX}demo-07"
    # what went to the authorization server
    assert authorize["aud"] == proxy.base and authorize["launch"] == launch_id
    assert {"launch", "openid", "fhirUser", "patient/Observation.rs"} <= set(authorize["scope"].split())
    assert authorize["code_challenge_method"] == "S256"
    exchange = auth.token_requests[-1]
    assert s256(exchange["code_verifier"]) == authorize["code_challenge"]
    # the session: who, how, which patient; the access token is not in the cookie
    session = session_of(app)
    assert session["user"]["name"] == "Practitioner/coord-1"  # fhirUser, relative to the FHIR base it is on
    assert (session["user"]["role"], session["user"]["via"]) == ("coordinator", "smart")
    assert session["smart"]["patient"] == f"{PREFIX}demo-07" and session["smart"]["iss"] == proxy.base
    token = auth.issued[-1]
    assert token not in app.cookies.get(COOKIE) and token not in str(session)
    # the patient in context, every trial, read live with the bearer token
    page = app.get("/smart/patient")
    assert page.status_code == 200, page.text
    want = expected_statuses(trials_dir, "Patient/demo-07")
    assert len(set(want.values())) > 1  # the two trials disagree: the page must show each one's own
    for tid, status in want.items():
        row = re.search(rf'<tr id="trial-{tid}">(.*?)</tr>', page.text, re.S)
        assert row and f"pill-{status}\"" in row.group(1), (tid, status)
        assert "not in this trial's worklist" in row.group(1)  # no nightly state here: nothing to decide on yet
    assert "inc-lymphocytes" in page.text and f"Observation/{PREFIX}demo-07-obs-1" in page.text  # criteria with evidence
    sent = proxy.bearer_requests(token)
    assert "/fhir/Patient" in sent and "/fhir/Observation" in sent and "/fhir/Condition" in sent


def test_standalone_launch_asks_for_a_patient(app, ehr):
    auth, proxy = ehr
    back, authorize = through_provider(app, "/smart/login")
    assert "launch/patient" in authorize["scope"].split() and "launch" not in authorize
    assert authorize["aud"] == proxy.base
    resp = app.get(back, follow_redirects=False)
    assert resp.headers["location"] == f"/patients/{PREFIX}demo-07"
    assert session_of(app)["user"]["via"] == "smart"


def test_a_public_client_signs_in_with_pkce_alone_as_a_viewer(ehr, trials_dir, tmp_path):
    auth, proxy = ehr
    auth.client_secret, auth.claims, auth.tamper, auth.patient = None, {}, False, f"{PREFIX}demo-01"
    with TestClient(create_app(settings_for(proxy, trials_dir, tmp_path)), base_url="https://testserver") as client:
        resp, _, _ = launch(client, auth, proxy, f"{PREFIX}demo-01")
        assert resp.headers["location"] == f"/patients/{PREFIX}demo-01"
        assert session_of(client)["user"]["role"] == "viewer"  # [smart] role defaults to viewer
    assert auth.token_requests[-1]["client_id"] == CLIENT


def refused(client: TestClient, resp, words: str, status: int = 403) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert words in resp.text and "Traceback" not in resp.text
    assert "user" not in session_of(client) and "smart" not in session_of(client)


def test_a_launch_for_another_fhir_server_is_refused(app):
    resp = app.get("/smart/launch?iss=https://other-ehr.example/fhir&launch=abc", follow_redirects=False)
    refused(app, resp, "only that server&#39;s launches are accepted")


def test_a_launch_without_its_parameters_is_refused(app, ehr):
    refused(app, app.get(f"/smart/launch?iss={ehr[1].base}", follow_redirects=False), "needs iss and launch", 400)


def test_a_forged_state_is_refused(app, ehr):
    auth, proxy = ehr
    back, _ = through_provider(app, f"/smart/launch?iss={proxy.base}&launch={auth.new_launch(PREFIX + 'demo-07')}")
    refused(app, app.get(back.replace("state=", "state=forged"), follow_redirects=False), "state mismatch", 400)


def test_an_unknown_launch_is_refused_by_the_authorization_server(app, ehr):
    back, _ = through_provider(app, f"/smart/launch?iss={ehr[1].base}&launch=not-a-launch")
    refused(app, app.get(back, follow_redirects=False), "invalid_request")


def test_a_tampered_id_token_is_refused(app, ehr):
    auth, proxy = ehr
    auth.tamper = True
    resp, _, _ = launch(app, auth, proxy, f"{PREFIX}demo-07")
    refused(app, resp, "signature does not verify")


def test_an_id_token_for_another_client_is_refused(app, ehr):
    auth, proxy = ehr
    auth.claims = {"aud": "another-app"}
    resp, _, _ = launch(app, auth, proxy, f"{PREFIX}demo-07")
    refused(app, resp, "issued to another client")


def test_no_patient_in_the_token_response_is_refused(app, ehr):
    auth, _ = ehr
    auth.patient = None  # the standalone picker chose nobody
    back, _ = through_provider(app, "/smart/login")
    refused(app, app.get(back, follow_redirects=False), "names no patient")


def test_a_wrong_client_secret_is_said(ehr, trials_dir, tmp_path):
    auth, proxy = ehr
    auth.client_secret, auth.claims, auth.tamper = "the-real-one", {}, False
    (tmp_path / "secret").write_text("a-stale-one", encoding="utf-8")
    settings = settings_for(proxy, trials_dir, tmp_path, client_secret_file=str(tmp_path / "secret"))
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        resp, _, _ = launch(client, auth, proxy, f"{PREFIX}demo-07")
        refused(client, resp, "token endpoint refused the code: invalid_client")


def test_the_live_view_needs_the_launch_and_its_token(app, ehr):
    auth, proxy = ehr
    assert app.get("/smart/patient", follow_redirects=False).headers["location"].startswith("/login")
    launch(app, auth, proxy, f"{PREFIX}demo-07")
    TOKENS.pop(session_of(app)["smart"]["key"])  # expired, or the app restarted
    page = app.get("/smart/patient")
    assert page.status_code == 401 and "launch the app again" in page.text


def test_config_mistakes_are_named(ehr, trials_dir, tmp_path):
    _, proxy = ehr
    with pytest.raises(ConfigError, match=r"\[smart\] role must be viewer or coordinator"):
        create_app(settings_for(proxy, trials_dir, tmp_path, role="admin"))
    with pytest.raises(ConfigError, match=r"\[smart\] scope must include openid"):
        create_app(settings_for(proxy, trials_dir, tmp_path, scope="patient/*.rs"))
    with pytest.raises(ConfigError, match=r"\[smart\] needs client_id"):
        create_app(settings_for(proxy, trials_dir, tmp_path, client_id=""))


def test_the_authorization_server_is_not_reachable(trials_dir, tmp_path):
    settings = WebSettings(server="http://127.0.0.1:9/fhir", state=tmp_path / "s.sqlite", secret_key=SECRET,
                           config={"trial": {"dir": str(trials_dir)}}, smart={"client_id": CLIENT})
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        resp = client.get("/smart/launch?iss=http://127.0.0.1:9/fhir&launch=x", follow_redirects=False)
        assert resp.status_code == 502 and "could not be reached" in resp.text
    assert requests  # the reachability check is the app's own, with TLS verification left on
