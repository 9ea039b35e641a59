"""The review web app without a FHIR server: accounts, sign-in, cookies, sessions, CSRF, roles.

Pages that need no server (sign-in, the portfolio of an empty state) and every refusal
(unsigned, viewer, bad token, expired session) are checked through Starlette's test client.
"""

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fhir_matcher.cli import main
from fhir_matcher.nightly.state import State
from fhir_matcher.web import security, users
from fhir_matcher.web.app import create_app
from fhir_matcher.web.settings import SettingsError, WebSettings

PASSWORD = "correct horse battery"


@pytest.fixture()
def state(tmp_path):
    path = tmp_path / "state.sqlite"
    with State(path, lock=False):
        pass
    pw = tmp_path / "pw.txt"
    pw.write_text(PASSWORD + "\n", encoding="utf-8")
    assert main(["user", "add", "alice", "--role", "coordinator", "--state", str(path), "--password-file", str(pw), "-q"]) == 0
    assert main(["user", "add", "victor", "--role", "viewer", "--state", str(path), "--password-file", str(pw), "-q"]) == 0
    return path


def client(state: Path, **kw) -> TestClient:
    settings = WebSettings(server="http://127.0.0.1:9/fhir", state=state, **kw)
    return TestClient(create_app(settings), base_url="https://127.0.0.1")


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def sign_in(c: TestClient, name: str = "alice", password: str = PASSWORD):
    token = csrf(c.get("/login").text)
    return c.post("/login", data={"csrf": token, "username": name, "password": password, "next": "/"}, follow_redirects=False)


def test_user_commands(state, tmp_path, capsys, monkeypatch):
    assert main(["user", "list", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "coordinator" in out and "victor" in out and "viewer" in out
    with State(state, lock=False) as s:
        stored = s.db.execute("SELECT password_hash FROM users WHERE name = 'alice'").fetchone()[0]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    pw = tmp_path / "pw.txt"
    # A second account of the same name, a short password, a bad role or name: refused with one line.
    assert main(["user", "add", "alice", "--role", "viewer", "--state", str(state), "--password-file", str(pw)]) == 2
    assert "exists already" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("abc\n", encoding="utf-8")
    assert main(["user", "add", "bob", "--role", "viewer", "--state", str(state), "--password-file", str(short)]) == 2
    assert "at least" in capsys.readouterr().err
    assert main(["user", "add", "bad name", "--role", "viewer", "--state", str(state), "--password-file", str(pw)]) == 2
    # No terminal and no --password-file: a clear message, not a hang.
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["user", "add", "carol", "--role", "viewer", "--state", str(state)]) == 2
    assert "--password-file" in capsys.readouterr().err
    # The terminal path reads it twice with getpass.
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["user", "add", "carol", "--role", "viewer", "--state", str(state), "-q"]) == 0
    # Disable, then remove.
    assert main(["user", "remove", "victor", "--disable", "--state", str(state), "-q"]) == 0
    assert main(["user", "list", "--state", str(state)]) == 0
    assert re.search(r"victor\s+viewer.*DISABLED", capsys.readouterr().out)
    c = client(state)
    assert sign_in(c, "victor").status_code == 401
    assert main(["user", "enable", "victor", "--state", str(state), "-q"]) == 0
    assert sign_in(c, "victor").status_code == 303
    assert main(["user", "remove", "victor", "--state", str(state), "-q"]) == 0
    assert main(["user", "remove", "victor", "--state", str(state)]) == 2
    with State(state, lock=False) as s:
        assert users.authenticate(s.db, "alice", PASSWORD).role == "coordinator"
        assert users.authenticate(s.db, "alice", "wrong password!") is None
        assert users.authenticate(s.db, "nobody", PASSWORD) is None


def test_sign_in_and_cookie_flags(state):
    c = client(state)
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    bad = sign_in(c, "alice", "not the password")
    assert bad.status_code == 401 and "Wrong user name or password" in bad.text
    r = sign_in(c)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    page = c.get("/")
    assert page.status_code == 200 and "alice" in page.text
    assert page.headers["cache-control"] == "no-store" and "frame-ancestors" in page.headers["content-security-policy"]
    # Sign-out needs the token too, and ends the session.
    assert c.post("/logout", data={"csrf": "wrong"}).status_code == 403
    c.post("/logout", data={"csrf": csrf(page.text)})
    assert c.get("/", follow_redirects=False).status_code == 303


def test_insecure_cookies_only_on_loopback(state):
    c = client(state, insecure_cookies=True)
    assert "secure" not in sign_in(c).headers["set-cookie"].lower()
    with pytest.raises(SettingsError):
        WebSettings(server="http://x", state=state, host="0.0.0.0", insecure_cookies=True)
    assert main(["serve", "--server", "http://127.0.0.1:9", "--state", str(state), "--host", "0.0.0.0", "--insecure-cookies"]) == 2


def test_login_refuses_a_missing_or_wrong_token_and_open_redirects(state):
    c = client(state)
    c.get("/login")
    r = c.post("/login", data={"csrf": "forged", "username": "alice", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403
    token = csrf(c.get("/login").text)
    r = c.post("/login", data={"csrf": token, "username": "alice", "password": PASSWORD, "next": "//evil.example/x"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_session_expires_when_idle_and_absolutely(state, monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr(security, "_now", lambda: clock[0])
    c = client(state, session_idle=600, session_max=3600)
    sign_in(c)
    assert c.get("/").status_code == 200
    clock[0] += 599
    assert c.get("/").status_code == 200  # activity keeps it alive
    clock[0] += 601
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303
    assert "session ended" in c.get("/login").text
    sign_in(c)
    for _ in range(7):  # active all along, but the absolute limit ends it
        clock[0] += 550
        last = c.get("/", follow_redirects=False)
    assert last.status_code == 303


def test_roles_and_tokens_guard_every_post(state):
    routes = ["/trials/t/patients/p/decision", "/trials/t/patients/p/manual"]
    anonymous = client(state)
    for r in routes:
        assert anonymous.post(r, data={"csrf": "x", "status": "eligible"}, follow_redirects=False).status_code == 401
    viewer = client(state)
    sign_in(viewer, "victor")
    token = csrf(viewer.get("/").text)
    for r in routes:
        assert viewer.post(r, data={"csrf": token, "status": "eligible"}).status_code == 403
    coord = client(state)
    sign_in(coord)
    for r in routes:
        assert coord.post(r, data={"status": "eligible"}).status_code == 403  # no token
        assert coord.post(r, data={"csrf": "forged", "status": "eligible"}).status_code == 403


def test_serve_command_runs_the_app(state, tmp_path):
    """`fhir-matcher serve` as a user starts it: a process on a loopback port, the sign-in page, no patient ids in its output."""
    import subprocess
    import sys
    import time

    import requests
    from hapi.server import free_port

    port = free_port()
    config = tmp_path / "matcher.toml"
    config.write_text(f'[server]\nurl = "http://127.0.0.1:9/fhir"\n[output]\nstate = "{state}"\n[web]\nport = {port}\ninsecure_cookies = true\n', encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "fhir_matcher", "serve", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/login", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert r.status_code == 200 and "Sign in" in r.text and r.headers.get("server") is None
        assert requests.get(f"http://127.0.0.1:{port}/trials/x/patients/secret-id", allow_redirects=False, timeout=5).status_code == 303
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"127.0.0.1:{port}" in out and "secret-id" not in out  # no access log of URLs at the default level


def test_password_guessing_is_slowed(state, monkeypatch):
    clock = [2_000_000.0]
    monkeypatch.setattr(security, "_now", lambda: clock[0])
    c = client(state)
    for _ in range(security.MAX_FAILURES):
        assert sign_in(c, "alice", "wrong password!").status_code == 401
    r = sign_in(c)  # the right password, but the account is held for a while
    assert r.status_code == 429 and "Too many failed attempts" in r.text
    assert sign_in(c, "victor").status_code == 303  # other accounts are not held
    clock[0] += security.LOCKOUT + 1
    assert sign_in(client(state)).status_code == 303
    with State(state, lock=False) as s:
        assert [r[1:] for r in s.access_log(user="alice")] == [("alice", None, None, "sign-in")]
