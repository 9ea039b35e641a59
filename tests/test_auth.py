"""Authorization against responses-mocked token endpoints, and mutual TLS on a real socket."""

import base64
import json
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs

import jwt
import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from fhir_matcher.rest import auth as authmod
from fhir_matcher.rest.auth import AuthError, default_scope, from_config
from fhir_matcher.rest.client import FhirClient, FhirError
from fhir_matcher.rest.transport import Transport

BASE = "https://ehr.example.org/fhir"
TOKEN_URL = "https://auth.example.org/token"


def pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.fixture(params=["RS384", "ES384"])
def keypair(request, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if request.param == "RS384" else ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / "key.pem"
    path.write_bytes(pem(key))
    return request.param, key, path


def smart_server(alg, key, tokens, expires_in=300):
    """Mocked SMART endpoints; the token endpoint verifies the client assertion for real."""
    responses.get(f"{BASE}/.well-known/smart-configuration", json={"token_endpoint": TOKEN_URL, "grant_types_supported": ["client_credentials"]})

    def token(request):
        form = {k: v[0] for k, v in parse_qs(request.body).items()}
        assert form["grant_type"] == "client_credentials"
        assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        header = jwt.get_unverified_header(form["client_assertion"])
        claims = jwt.decode(form["client_assertion"], key.public_key(), algorithms=[alg], audience=TOKEN_URL)
        assert header["kid"] == "k1" and header["alg"] == alg
        assert claims["iss"] == claims["sub"] == "matcher"
        assert 0 < claims["exp"] - time.time() <= 300 and claims["jti"]
        tokens.append((claims["jti"], form["scope"]))
        return 200, {}, json.dumps({"access_token": f"tok-{len(tokens)}", "token_type": "bearer", "expires_in": expires_in, "scope": form["scope"]})

    responses.add_callback(responses.POST, TOKEN_URL, callback=token)

    def fhir(request):
        ok = request.headers.get("Authorization") == f"Bearer tok-{len(tokens)}"
        if not ok:
            return 401, {}, json.dumps({"resourceType": "OperationOutcome", "issue": [{"diagnostics": "invalid token"}]})
        return 200, {}, json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []})

    responses.add_callback(responses.GET, f"{BASE}/Patient", callback=fhir)


def smart_client(alg, path, scope="system/Patient.rs"):
    cfg = {"method": "smart-backend", "client_id": "matcher", "private_key_file": str(path), "kid": "k1", "alg": alg}
    auth, cert = from_config(cfg, BASE, scope)
    return FhirClient(BASE, Transport(auth=auth, cert=cert, sleep=lambda s: None)), auth


@responses.activate
def test_smart_backend_services_token_is_discovered_signed_and_cached(keypair):
    alg, key, path = keypair
    tokens = []
    smart_server(alg, key, tokens)
    client, auth = smart_client(alg, path)
    for _ in range(3):
        client.request("GET", "Patient")
    assert len(tokens) == 1 and tokens[0][1] == "system/Patient.rs"  # one token, reused


@responses.activate
def test_token_renewed_before_expiry(keypair, monkeypatch):
    alg, key, path = keypair
    tokens = []
    smart_server(alg, key, tokens, expires_in=120)
    client, auth = smart_client(alg, path)
    now = [1_000_000.0]
    monkeypatch.setattr(authmod, "_now", lambda: now[0])
    client.request("GET", "Patient")
    now[0] += 50  # 70 s left: still good
    client.request("GET", "Patient")
    now[0] += 15  # 55 s left: inside the renewal margin
    client.request("GET", "Patient")
    assert len(tokens) == 2 and tokens[0][0] != tokens[1][0]  # a fresh assertion (new jti)


@responses.activate
def test_revoked_token_is_replaced_once_on_401(keypair):
    alg, key, path = keypair
    tokens = []
    smart_server(alg, key, tokens)
    client, auth = smart_client(alg, path)
    client.request("GET", "Patient")
    tokens.append(("revoked", ""))  # the server no longer accepts tok-1
    client.request("GET", "Patient")
    assert len(tokens) == 3


@responses.activate
def test_token_endpoint_refusal_is_clear(keypair):
    alg, key, path = keypair
    responses.get(f"{BASE}/.well-known/smart-configuration", json={"token_endpoint": TOKEN_URL})
    responses.post(TOKEN_URL, status=400, json={"error": "invalid_client", "error_description": "unknown kid"})
    client, _ = smart_client(alg, path)
    with pytest.raises(AuthError, match="refused the client 'matcher': unknown kid"):
        client.request("GET", "Patient")


@responses.activate
def test_no_smart_configuration_says_what_to_set(keypair):
    alg, key, path = keypair
    responses.get(f"{BASE}/.well-known/smart-configuration", status=404)
    client, _ = smart_client(alg, path)
    with pytest.raises(AuthError, match="token_url"):
        client.request("GET", "Patient")


@responses.activate
def test_client_secret(monkeypatch):
    monkeypatch.setenv("MATCHER_SECRET", "s3cret")
    seen = []

    def token(request):
        seen.append(request.headers["Authorization"])
        return 200, {}, json.dumps({"access_token": "abc", "expires_in": 3600})

    responses.add_callback(responses.POST, TOKEN_URL, callback=token)
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"}, match=[responses.matchers.header_matcher({"Authorization": "Bearer abc"})])
    auth, _ = from_config({"method": "client-secret", "client_id": "matcher", "client_secret_env": "MATCHER_SECRET", "token_url": TOKEN_URL}, BASE, "system/*.rs")
    FhirClient(BASE, Transport(auth=auth)).capabilities()
    assert seen == ["Basic " + base64.b64encode(b"matcher:s3cret").decode()]


@responses.activate
def test_static_bearer_and_basic(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("static-token\n")
    monkeypatch.setenv("MATCHER_PASSWORD", "pw")
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"}, match=[responses.matchers.header_matcher({"Authorization": "Bearer static-token"})])
    auth, _ = from_config({"method": "bearer", "token_file": str(tmp_path / "token")}, BASE, "")
    FhirClient(BASE, Transport(auth=auth)).capabilities()
    responses.get(f"{BASE}/Patient", json={"resourceType": "Bundle"}, match=[responses.matchers.header_matcher({"Authorization": "Basic " + base64.b64encode(b"svc:pw").decode()})])
    auth, _ = from_config({"method": "basic", "username": "svc", "password_env": "MATCHER_PASSWORD"}, BASE, "")
    FhirClient(BASE, Transport(auth=auth)).request("GET", "Patient")


@pytest.mark.parametrize("cfg, message", [
    ({"method": "bearer", "token": "abc"}, "must not be written in the config file"),
    ({"method": "client-secret", "client_id": "x", "client_secret": "abc"}, "must not be written in the config file"),
    ({"method": "bearer", "token_env": "NOPE_NOT_SET"}, "NOPE_NOT_SET is not set"),
    ({"method": "smart-backend", "client_id": "x", "private_key_file": "/nonexistent.pem", "kid": "k"}, "cannot read /nonexistent.pem"),
    ({"method": "smart-backend", "client_id": "x", "private_key_file": __file__, "kid": "k"}, "not an unencrypted PEM"),
    ({"method": "oauth1"}, "method must be one of"),
])
def test_misconfiguration_is_named(cfg, message):
    with pytest.raises(AuthError, match=message):
        from_config(cfg, BASE, "")


def test_default_scopes():
    assert default_scope({"Observation", "Condition"}, write=False) == "system/Condition.rs system/Observation.rs system/Patient.rs"
    assert default_scope({"Condition"}, write=True).endswith("system/ResearchStudy.cru system/ResearchSubject.cru system/Task.cru")


@responses.activate
def test_secrets_never_logged(keypair, caplog):
    alg, key, path = keypair
    tokens = []
    smart_server(alg, key, tokens)
    client, _ = smart_client(alg, path)
    caplog.set_level("DEBUG")
    client.request("GET", "Patient")
    assert "tok-1" not in caplog.text and "BEGIN" not in caplog.text


# ---------------------------------------------------------------- mutual TLS, on a real socket


def _cert(subject, issuer_key, key, issuer=None, ca=False, san=None):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        import ipaddress

        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture()
def mtls_server(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, ca_key, ca=True)
    files = {}
    for name, san in (("server", "127.0.0.1"), ("client", None)):
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(name, ca_key, k, issuer=ca.subject, san=san)
        (tmp_path / f"{name}.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{name}.key").write_bytes(pem(k))
        files[name] = (str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key"))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*files["server"])
    ctx.load_verify_locations(str(tmp_path / "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED  # the server demands a client certificate
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}/fhir", str(tmp_path / "ca.pem"), files["client"]
    httpd.shutdown()


def test_mutual_tls_with_a_custom_ca(mtls_server):
    url, ca, client_cert = mtls_server
    _, cert = from_config({"client_cert": client_cert[0], "client_key": client_cert[1]}, url, "")
    cs = FhirClient(url, Transport(ca_bundle=ca, cert=cert, retries=0)).capabilities()
    assert cs["fhirVersion"] == "4.0.1"


def test_tls_is_verified_and_client_cert_required(mtls_server):
    url, ca, client_cert = mtls_server
    from fhir_matcher.rest.transport import TransportError

    with pytest.raises(TransportError):  # unknown CA: verification stays on
        FhirClient(url, Transport(cert=tuple(client_cert), retries=0)).capabilities()
    with pytest.raises((TransportError, FhirError)):  # no client certificate
        FhirClient(url, Transport(ca_bundle=ca, retries=0)).capabilities()
