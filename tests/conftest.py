import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption(
        "--fhir-server",
        default=None,
        metavar="URL",
        help="run the live-server tests against this FHIR R4 base URL (default: the local HAPI server)",
    )


@pytest.fixture(scope="session")
def trial():
    from fhir_matcher.trial import load_trial

    return load_trial()


@pytest.fixture(scope="session")
def hapi(tmp_path_factory):
    """The local HAPI FHIR server (built from tests/hapi on first use), for the whole session.

    Never skipped: without Java or Maven this fails, as CI must.
    """
    from hapi import server

    srv = server.start(server.free_port(), data_dir=str(tmp_path_factory.mktemp("hapi")))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def hapi_strict(tmp_path_factory):
    """A second local HAPI server that behaves like Epic / Oracle Health (``strict=True``):
    clinical searches must name one patient, no system-level $export, Group export allowed."""
    from hapi import server

    srv = server.start(server.free_port(), data_dir=str(tmp_path_factory.mktemp("hapi-strict")), strict=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def live_server(request):
    """The server live tests run against: --fhir-server URL, else the local HAPI server."""
    return request.config.getoption("--fhir-server") or request.getfixturevalue("hapi").base_url


@pytest.fixture()
def run_tag():
    """A tag unique to one test, so test data never mixes with anyone else's."""
    return f"https://fhir-matcher.org/fhir/test-run|{uuid.uuid4().hex[:12]}"
