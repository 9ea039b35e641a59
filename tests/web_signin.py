"""Helpers for the sign-in tests: the app under Starlette's TestClient, the session cookie read
back, and one step through the provider (a real HTTP server on loopback)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import requests
from itsdangerous import BadSignature, TimestampSigner
from starlette.testclient import TestClient

SECRET = "test-session-secret-" + "x" * 32
COOKIE = "fhir_matcher_session"


def session_of(client: TestClient) -> dict[str, Any]:
    """The app's session as the browser holds it (signed cookie), {} when there is none."""
    raw = client.cookies.get(COOKIE)
    if not raw:
        return {}
    try:
        data = TimestampSigner(SECRET).unsign(raw.encode())
    except BadSignature:
        return {}
    return json.loads(base64.b64decode(data))


def through_provider(client: TestClient, start: str) -> tuple[str, dict[str, Any]]:
    """GET ``start`` on the app, follow it to the provider's authorize endpoint (a real server),
    and return (the app path+query the provider sends the browser back to, authorize query)."""
    resp = client.get(start, follow_redirects=False)
    assert resp.status_code in (302, 303), resp.text
    authorize = resp.headers["location"]
    back = requests.get(authorize, allow_redirects=False, timeout=10)
    assert back.status_code == 302, back.text
    url = urlsplit(back.headers["location"])
    from urllib.parse import parse_qsl

    return f"{url.path}?{url.query}", dict(parse_qsl(urlsplit(authorize).query))
