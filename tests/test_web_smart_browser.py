"""The EHR launch in a real browser: headless Chromium (Debian's package, Playwright, nothing
downloaded) opens the app's launch URL as an EHR would, goes through the test authorization
server and lands on the patient in context, with last night's status (the nightly state) and
every trial of the portfolio checked live; then the coordinator decides, and the HAPI server
holds the decision. Screenshots go to tests/screenshots/ (not committed)."""

from __future__ import annotations

import re
import threading
import time
from datetime import date
from pathlib import Path

import pytest
import requests

from fhir_matcher.cli import main
from fhir_matcher.rest.client import FhirClient
from fhir_matcher.rest.loader import Loader
from fhir_matcher.screen import match_patient, match_record_files
from fhir_matcher.trial import default_trial_path, load_trials
from fhir_matcher.web.app import create_app
from fhir_matcher.web.settings import WebSettings
from smart_auth import AuthServer, FhirProxy

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
TRIALS = default_trial_path().parent
AS_OF = date(2026, 11, 24)
PREFIX = "sb-"
PATIENT = f"{PREFIX}demo-07"
TAG = "https://fhir-matcher.org/fhir/test-run|smart-browser"
CLIENT = "matcher-ehr"
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent / "screenshots"


@pytest.fixture(scope="module")
def site(hapi, tmp_path_factory):
    """HAPI with the demo and a nightly state; the proxy and authorization server; the app under uvicorn."""
    import uvicorn
    from hapi.server import free_port

    assert not Loader(FhirClient(hapi.base_url), tag=TAG, id_prefix=PREFIX).load([DEMO]).rejected
    time.sleep(1.1)  # the nightly reads changes with second precision
    folder = tmp_path_factory.mktemp("smart-browser")
    state = folder / "state.sqlite"
    assert main(["nightly", "--server", hapi.base_url, "--state", str(state), "--out", str(folder / "out"),
                 "--trials", str(TRIALS), "--as-of", AS_OF.isoformat(), "--tag", TAG, "-q"]) in (0, 3)
    auth = AuthServer(client_id=CLIENT)
    proxy = FhirProxy(hapi.base_url, auth)
    auth.fhir_base = proxy.base
    port = free_port()
    auth.redirect_uris.add(f"http://127.0.0.1:{port}/smart/callback")
    settings = WebSettings(server=proxy.base, state=state, insecure_cookies=True, as_of=AS_OF,
                           config={"trial": {"dir": str(TRIALS)}}, smart={"client_id": CLIENT, "role": "coordinator"})
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the web app did not start"
        time.sleep(0.05)
    yield {"app": f"http://127.0.0.1:{port}", "auth": auth, "proxy": proxy, "hapi": hapi.base_url}
    server.should_exit = True
    thread.join(10)
    proxy.stop()
    auth.stop()


def test_ehr_launch_in_a_browser_then_a_decision(site):
    from playwright.sync_api import sync_playwright

    auth, proxy, app = site["auth"], site["proxy"], site["app"]
    record, _ = match_record_files(DEMO, "Patient/demo-07")
    want = {t.id: (r.status if r else "ineligible") for t, r, _ in match_patient(record, load_trials(None, TRIALS), AS_OF)}
    SHOTS.mkdir(exist_ok=True)
    launch = auth.new_launch(PATIENT)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{app}/smart/launch?iss={proxy.base}&launch={launch}")  # what the EHR opens
            assert page.url == f"{app}/patients/{PATIENT}"
            rows = page.locator("table.worklist tbody tr")
            assert rows.count() == len(want)  # every trial of the portfolio, from last night's state
            assert page.locator(f"tr:has(code:text-is('cd19-baff-car-t')) .pill-{want['cd19-baff-car-t']}").count() == 1
            assert "smart" in page.inner_text("header")  # signed in via the launch
            page.screenshot(path=str(SHOTS / "smart-launch-patient.png"), full_page=True)

            page.locator("#live-check").click()
            assert page.url == f"{app}/smart/patient"
            for tid, status in want.items():
                row = page.locator(f"#trial-{tid}")
                assert row.count() == 1, tid
                assert row.locator(f".pill-{status}").count() == 1, (tid, status)
            page.locator("#trial-cd19-baff-car-t details summary").click()  # the criteria with their evidence
            assert page.locator("#trial-cd19-baff-car-t li.crit").count() > 10
            page.screenshot(path=str(SHOTS / "smart-live-match.png"), full_page=True)

            page.locator("#trial-cd19-baff-car-t a").first.click()  # where the coordinator decides
            assert page.url.endswith(f"/trials/cd19-baff-car-t/patients/{PATIENT}")
            page.get_by_role("button", name="Eligible", exact=True).click()
            assert "Saved: eligible" in page.locator("#flash").inner_text()
            page.screenshot(path=str(SHOTS / "smart-decided.png"), full_page=True)
        finally:
            browser.close()
    found = requests.get(f"{site['hapi']}/ResearchSubject", params={"individual": f"Patient/{PATIENT}"}, timeout=30).json()
    assert [e["resource"]["status"] for e in found["entry"]] == ["eligible"]
    token = auth.issued[-1]
    assert {"/fhir/Patient", "/fhir/Observation"} <= set(proxy.bearer_requests(token))  # the live view used the launch's token
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
