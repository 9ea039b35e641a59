import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def trial():
    from fhir_matcher.trial import load_trial

    return load_trial()
