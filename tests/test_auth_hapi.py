"""SMART Backend Services end to end: the local HAPI server behind a bearer-token gate, a token
endpoint on loopback that checks the signed client assertion, and the matcher in between.

This module starts its own server (the session's runs without the gate).
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_matcher.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
FHIR_TOKEN = "hapi-gate-token-7f3a"


class TokenEndpoint:
    """Client-credentials token endpoint: verifies the JWT assertion against registered keys."""

    def __init__(self):
        self.keys = {}  # kid -> public key
        self.issued = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
                try:
                    header = jwt.get_unverified_header(form["client_assertion"])
                    key = outer.keys[header["kid"]]
                    claims = jwt.decode(form["client_assertion"], key, algorithms=["RS384", "ES384"], audience=outer.url)
                    assert claims["iss"] == claims["sub"] == "fhir-matcher" and claims["exp"] - time.time() <= 300
                    outer.issued.append(form["scope"])
                    status, body = 200, {"access_token": FHIR_TOKEN, "token_type": "bearer", "expires_in": 300, "scope": form["scope"]}
                except Exception as e:  # noqa: BLE001 - any failure is an invalid client
                    status, body = 401, {"error": "invalid_client", "error_description": f"assertion rejected ({type(e).__name__})"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    from hapi import server as hapi

    tokens = TokenEndpoint()
    srv = hapi.start(hapi.free_port(), data_dir=str(tmp_path_factory.mktemp("hapi-auth")), auth_token=FHIR_TOKEN, token_endpoint=tokens.url)
    yield srv, tokens
    srv.stop()
    tokens.httpd.shutdown()


def key_files(tmp_path, kind):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "RS384" else ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / f"{kind}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)
    return key, path


def config(tmp_path, url, key_path, kid, alg):
    cfg = tmp_path / f"matcher-{kid}.toml"
    cfg.write_text(f"""
[server]
url = "{url}"
[auth]
method = "smart-backend"
client_id = "fhir-matcher"
private_key_file = "{key_path}"
kid = "{kid}"
alg = "{alg}"
[output]
dir = "{tmp_path / ('out-' + kid)}"
state = "{tmp_path / ('state-' + kid + '.sqlite')}"
""", encoding="utf-8")
    return cfg


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_screen_and_nightly_through_smart_backend_services(gated, tmp_path, alg, capsys):
    srv, tokens = gated
    key, path = key_files(tmp_path, alg)
    tokens.keys[f"k-{alg}"] = key.public_key()
    cfg = config(tmp_path, srv.base_url, path, f"k-{alg}", alg)
    assert main(["load", "--server", srv.base_url, "--config", str(cfg), str(DEMO), "-q"]) == 0
    out = tmp_path / "screen"
    assert main(["screen", "--source", srv.base_url, "--config", str(cfg), "--as-of", "2026-11-24", "--out", str(out), "-q"]) == 0
    assert json.loads((out / "run.json").read_text())["statuses"]["candidate"] == 16
    assert "system/Observation.rs" in tokens.issued[-1] and "ResearchSubject" not in tokens.issued[-1]  # screen only reads
    assert main(["nightly", "--config", str(cfg), "--as-of", "2026-11-24", "-q"]) == 0
    assert "system/ResearchSubject.cru" in tokens.issued[-1]
    assert main(["screen", "--source", srv.base_url, "--config", str(cfg), "--bulk", "--bulk-poll-max", "2", "--as-of", "2026-11-24", "--out", str(tmp_path / "bulk"), "-q"]) == 0
    assert json.loads((tmp_path / "bulk" / "run.json").read_text())["statuses"]["candidate"] == 16
    assert FHIR_TOKEN not in capsys.readouterr().err


def test_unregistered_key_is_refused_clearly(gated, tmp_path, capsys):
    srv, tokens = gated
    _, path = key_files(tmp_path, "RS384")  # never registered
    cfg = config(tmp_path, srv.base_url, path, "unknown-kid", "RS384")
    assert main(["screen", "--source", srv.base_url, "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "refused the client 'fhir-matcher'" in err and "Traceback" not in err


def test_no_credentials_get_a_clear_401(gated, tmp_path, capsys):
    srv, _ = gated
    assert main(["screen", "--source", srv.base_url, "--out", str(tmp_path / "o")]) == 2
    assert "401" in capsys.readouterr().err
