"""The review web app end to end: local HAPI server, a state made by the nightly job over the
demo data, the app under uvicorn on a free loopback port, and headless Chromium (Debian's
package, driven by Playwright; nothing downloaded).

A coordinator signs in, opens a worklist, opens a patient, confirms the manual checks, marks
the patient eligible, and the ResearchSubject on the HAPI server says so (plain GET). Also:
every patient route refuses the unsigned, a viewer cannot decide, a forged token is refused,
and a subject changed behind the page's back gives "changed by someone else".
"""

import re
import threading
import time
from datetime import date
from pathlib import Path

import pytest
import requests

from fhir_matcher.cli import main
from fhir_matcher.nightly.state import State
from fhir_matcher.web.app import create_app
from fhir_matcher.web.settings import WebSettings

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
DEMO_HF = ROOT / "bundles" / "demo-hf"
CART, HF = "cd19-baff-car-t", "hf-reduced-ef-dapagliflozin"
BOTH = "wb-demo-03"  # a CAR-T demo patient given heart failure too
TRIALS = ROOT / "fhir_matcher" / "trials"
START = date(2026, 11, 24)
TAG = "https://fhir-matcher.org/fhir/test-run|web"
PREFIX = "wb-"
PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent / "screenshots"  # not committed (.gitignore); docs/ holds the README's


@pytest.fixture(scope="module")
def night(hapi, tmp_path_factory):
    """The demo on HAPI under this module's tag, screened by a real nightly run."""
    from fhir_matcher.rest.client import FhirClient
    from fhir_matcher.rest.loader import Loader

    report = Loader(FhirClient(hapi.base_url), tag=TAG, id_prefix=PREFIX).load([DEMO, DEMO_HF])
    assert not report.rejected
    # One CAR-T demo patient with heart failure too: in both trials' worklists.
    system, code = TAG.split("|")
    both = {"resourceType": "Condition", "id": f"{BOTH}-hf", "meta": {"tag": [{"system": system, "code": code}]}, "subject": {"reference": f"Patient/{BOTH}"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "84114007", "display": "Heart failure"}]}, "onsetDateTime": "2025-01-10"}
    assert requests.put(f"{hapi.base_url}/Condition/{both['id']}", json=both, headers={"Content-Type": "application/fhir+json"}, timeout=30).status_code in (200, 201)
    time.sleep(1.1)
    folder = tmp_path_factory.mktemp("web")
    state = folder / "state.sqlite"
    args = ["nightly", "--server", hapi.base_url, "--state", str(state), "--out", str(folder / "out"), "--as-of", START.isoformat(),
            "--trial", str(TRIALS / "cd19-baff-car-t.toml"), "--trial", str(TRIALS / "hf-reduced-ef.toml"), "--tag", TAG, "-q"]
    assert main(args) in (0, 3)
    pw = folder / "pw.txt"
    pw.write_text(PASSWORD + "\n", encoding="utf-8")
    assert main(["user", "add", "alice", "--role", "coordinator", "--state", str(state), "--password-file", str(pw), "-q"]) == 0
    assert main(["user", "add", "victor", "--role", "viewer", "--state", str(state), "--password-file", str(pw), "-q"]) == 0
    return {"base": hapi.base_url, "state": state, "args": args, "folder": folder}


@pytest.fixture(scope="module")
def app_url(night):
    """The app under uvicorn in a thread, on a free loopback port (plain http: insecure cookies, loopback only)."""
    import uvicorn
    from hapi.server import free_port

    settings = WebSettings(server=night["base"], state=night["state"], insecure_cookies=True)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the web app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    thread.join(10)


def shortlist(night) -> tuple[str, list[str]]:
    """(trial id, the trial's shortlisted patient ids, candidates first)."""
    with State(night["state"], lock=False) as s:
        assert set(s.trials()) == {CART, HF}
        trial_id = CART
        patients = s.patients(trial_id)
    order = {"candidate": 0, "potential-candidate": 1}
    ids = sorted((p for p, ps in patients.items() if ps.status in order and p != f"Patient/{BOTH}"), key=lambda p: (order[patients[p].status], p))
    assert len(ids) >= 4, "the demo should give a few (potential) candidates"
    return trial_id, [p.split("/", 1)[1] for p in ids]


def subject_on_server(base: str, pid: str) -> dict:
    bundle = requests.get(f"{base}/ResearchSubject", params={"individual": f"Patient/{pid}"}, timeout=30).json()
    found = [e["resource"] for e in bundle.get("entry", [])]
    assert len(found) == 1, found
    return found[0]


def session(url: str, name: str) -> tuple[requests.Session, str]:
    s = requests.Session()
    token = re.search(r'name="csrf" value="([^"]+)"', s.get(f"{url}/login").text).group(1)
    r = s.post(f"{url}/login", data={"csrf": token, "username": name, "password": PASSWORD, "next": "/"}, allow_redirects=False)
    assert r.status_code == 303
    return s, token


def form_fields(html: str, action_end: str) -> dict[str, str]:
    form = re.search(r'<form method="post" action="[^"]*' + re.escape(action_end) + r'".*?</form>', html, re.S).group(0)
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))


def unlabelled(page) -> list[str]:
    """Form controls a screen reader could not name (no <label for>, no aria-label)."""
    return page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML)""")


def test_unsigned_requests_see_no_patient(night, app_url):
    trial_id, ids = shortlist(night)
    pid = ids[0]
    for path in ["/", f"/trials/{trial_id}", f"/trials/{trial_id}/patients/{pid}", f"/patients/{pid}", f"/trials/{trial_id}?show=all"]:
        r = requests.get(app_url + path, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
        assert pid not in r.text
    for path in [f"/trials/{trial_id}/patients/{pid}/decision", f"/trials/{trial_id}/patients/{pid}/manual"]:
        r = requests.post(app_url + path, data={"status": "eligible"}, allow_redirects=False, timeout=30)
        assert r.status_code == 401, path
    assert subject_on_server(night["base"], pid)["status"] in ("candidate", "potential-candidate")


def test_viewer_sees_but_cannot_decide(night, app_url):
    trial_id, ids = shortlist(night)
    pid = ids[1]
    s, _ = session(app_url, "victor")
    page = s.get(f"{app_url}/trials/{trial_id}/patients/{pid}")
    assert page.status_code == 200
    assert 'name="status"' not in page.text and "can view but not decide" in page.text  # no buttons
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    before = subject_on_server(night["base"], pid)
    r = s.post(f"{app_url}/trials/{trial_id}/patients/{pid}/decision",
               data={"csrf": token, "status": "eligible", "subject": before["id"], "version": before["meta"]["versionId"]}, allow_redirects=False)
    assert r.status_code == 403
    assert subject_on_server(night["base"], pid)["meta"]["versionId"] == before["meta"]["versionId"]
    with State(night["state"], lock=False) as st:  # the viewer's visit is in the access log, under its name
        rows = st.db.execute("SELECT user, patient, trial, what FROM access WHERE user = 'victor'").fetchall()
    assert ("victor", f"Patient/{pid}", trial_id, "view") in rows


def test_forged_token_is_refused(night, app_url):
    trial_id, ids = shortlist(night)
    pid = ids[2]
    s, _ = session(app_url, "alice")
    page = s.get(f"{app_url}/trials/{trial_id}/patients/{pid}").text
    fields = form_fields(page, "/decision")
    for token in ("forged", ""):
        r = s.post(f"{app_url}/trials/{trial_id}/patients/{pid}/decision", data={**fields, "csrf": token, "status": "eligible"}, allow_redirects=False)
        assert r.status_code == 403
    # Another session's token does not work either: tokens are bound to their session.
    other, other_token = session(app_url, "victor")
    r = s.post(f"{app_url}/trials/{trial_id}/patients/{pid}/decision", data={**fields, "csrf": other_token, "status": "eligible"}, allow_redirects=False)
    assert r.status_code == 403
    assert subject_on_server(night["base"], pid)["status"] in ("candidate", "potential-candidate")
    # Not registered needs a reason: refused without one (nothing written), recorded with it.
    r = s.post(f"{app_url}/trials/{trial_id}/patients/{pid}/decision", data={**fields, "status": "not-registered", "reason": " "})
    assert "a reason is needed" in r.text
    assert subject_on_server(night["base"], pid)["status"] in ("candidate", "potential-candidate")
    r = s.post(f"{app_url}/trials/{trial_id}/patients/{pid}/decision", data={**fields, "status": "not-registered", "reason": "declined: lives abroad"})
    assert "Saved: not-registered" in r.text
    subject = subject_on_server(night["base"], pid)
    assert subject["status"] == "not-registered"
    assert any("declined: lives abroad" in e.get("valueString", "") for e in subject.get("extension", []))
    with State(night["state"], lock=False) as st:
        assert st.decisions(trial_id)[f"Patient/{pid}"].status == "not-registered"  # the worklist shows it before the next night
        last = st.audit(trial=trial_id, patient=f"Patient/{pid}")[-1]
    assert (last.actor, last.source, last.after, last.why) == ("alice", "web", "not-registered", "declined: lives abroad")


def test_stale_page_is_never_written_over(night, app_url):
    trial_id, ids = shortlist(night)
    pid = ids[3]
    s, _ = session(app_url, "alice")
    page = s.get(f"{app_url}/trials/{trial_id}/patients/{pid}").text
    fields = form_fields(page, "/decision")
    assert fields["subject"] and fields["version"]
    # Someone else moves the subject on the server behind the page's back.
    subject = subject_on_server(night["base"], pid)
    subject["status"] = "screening"
    r = requests.put(f"{night['base']}/ResearchSubject/{subject['id']}", json=subject, headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code == 200
    r = s.post(f"{app_url}/trials/{trial_id}/patients/{pid}/decision", data={**fields, "status": "eligible", "reason": "seen in clinic"})
    assert r.status_code == 200 and "changed by someone else" in r.text
    assert subject_on_server(night["base"], pid)["status"] == "screening"  # not overwritten
    with State(night["state"], lock=False) as st:
        assert not [a for a in st.audit(trial=trial_id, patient=f"Patient/{pid}") if a.source == "web"]


def test_browser_review_to_eligible(night, app_url):
    """Sign in, worklist, patient, every manual check confirmed, eligible; then the server says eligible."""
    from playwright.sync_api import sync_playwright

    trial_id, ids = shortlist(night)
    pid = ids[0]
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{app_url}/trials/{trial_id}")
            assert "/login" in page.url  # not signed in: the sign-in page, the worklist after it
            # The keyboard alone: the user name has the focus, Tab to the password, Enter signs in.
            page.wait_for_function("document.activeElement && document.activeElement.id === 'username'")
            page.keyboard.type("alice")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "password"
            page.keyboard.type(PASSWORD)
            page.keyboard.press("Enter")
            page.wait_for_url(f"**/trials/{trial_id}")
            assert page.url.endswith(f"/trials/{trial_id}")
            assert page.get_by_role("navigation", name="Which patients").is_visible()
            page.screenshot(path=str(SHOTS / "worklist-1280.png"), full_page=True)
            page.get_by_role("link", name=re.compile("Candidates and potential")).click()
            link = page.locator(f'a[href="/trials/{trial_id}/patients/{pid}"]')
            link.click()
            assert page.url.endswith(f"/patients/{pid}")
            # Evidence is resolved: at least one lab with its value and date, not a bare reference.
            assert page.locator(".evidence dt", has_text="Value").count() > 0
            assert page.locator(".evidence dt", has_text="Date").count() > 0
            page.screenshot(path=str(SHOTS / "patient-1280.png"), full_page=False)
            # Confirm every manual check, with the keyboard-reachable buttons.
            confirms = page.get_by_role("button", name=re.compile("^Confirm: "))
            n = confirms.count()
            assert n > 0
            for i in range(n):
                with page.expect_navigation():
                    page.locator("li.check:not(.check-confirmed)").first.get_by_role("button", name=re.compile("^Confirm: ")).click()
            assert page.locator("details.redo").count() == n  # a check can be changed later, folded away
            assert page.locator(".check-confirmed").count() == n
            assert unlabelled(page) == []
            page.get_by_label("Reason or note").fill("all criteria checked with the investigator")
            page.get_by_role("button", name="Eligible", exact=True).focus()
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert "Saved: eligible" in page.locator("#flash").inner_text()
            assert page.locator("#server-status").inner_text() == "Eligible"
            page.set_viewport_size({"width": 820, "height": 1180})
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(SHOTS / "patient-820.png"), full_page=False)
            page.goto(f"{app_url}/trials/{trial_id}?show=decided")
            assert page.locator(f'a[href="/trials/{trial_id}/patients/{pid}"]').count() == 1  # shown before the next night
            page.screenshot(path=str(SHOTS / "worklist-820.png"), full_page=True)
        finally:
            browser.close()
    # The server holds the decision (plain GET), and the state's audit log says who, when, before, after, why.
    subject = subject_on_server(night["base"], pid)
    assert subject["status"] == "eligible"
    with State(night["state"], lock=False) as st:
        entries = [a for a in st.audit(trial=trial_id, patient=f"Patient/{pid}") if a.source == "web"]
    status = [a for a in entries if a.field == "status"]
    assert len(status) == 1 and status[0].actor == "alice" and status[0].after == "eligible"
    assert status[0].before in ("candidate", "potential-candidate") and status[0].why == "all criteria checked with the investigator"
    assert len([a for a in entries if a.field.startswith("manual:") and a.after == "confirmed"]) == n
    # The next night respects it: the subject stays eligible.
    assert main([*night["args"][:-1], "--out", str(night["folder"] / "out2"), "-q"]) in (0, 3)
    assert subject_on_server(night["base"], pid)["status"] == "eligible"


def test_patient_in_every_trial(night, app_url):
    """/patients/<id> (where a SMART launch lands) and the patient page's "other trials"."""
    s, _ = session(app_url, "victor")
    with State(night["state"], lock=False) as st:
        everywhere = st.patient_everywhere(f"Patient/{BOTH}")
    assert set(everywhere) == {CART, HF}
    page = s.get(f"{app_url}/patients/{BOTH}").text
    for tid, ps in everywhere.items():
        assert f'href="/trials/{tid}/patients/{BOTH}"' in page
    hf_status = everywhere[HF].status
    other = s.get(f"{app_url}/trials/{CART}/patients/{BOTH}").text
    section = other[other.index('id="others"'):other.index('id="history"')]
    assert f'href="/trials/{HF}/patients/{BOTH}"' in section and f"pill-{hf_status}" in section
    # A patient of neither trial: said plainly, nothing invented.
    nobody = s.get(f"{app_url}/patients/no-such-patient")
    assert nobody.status_code == 200 and "not on the FHIR server" in nobody.text
    with State(night["state"], lock=False) as st:
        assert ("victor", f"Patient/{BOTH}", None, "view") in [r[1:] for r in st.access_log(user="victor")]
