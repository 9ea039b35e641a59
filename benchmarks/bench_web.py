"""The review web app's own cost on a large worklist: a state with N patients in one trial.

    python benchmarks/bench_web.py [--patients 5000] [--decided 500] [--runs 5]

Builds a schema-3 state file with N patients of the bundled CAR-T trial (each with every
criterion's result, as the nightly stores them), signs in through the app, and times the
portfolio page, a worklist page (50 rows) and a patient page, with a stub FHIR server that
answers at once (the server's own latency is not the app's). Prints median milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_matcher.nightly.state import Decision, PatientState, State, TrialRow  # noqa: E402
from fhir_matcher.trial import default_trial_path, load_trial  # noqa: E402
from fhir_matcher.web import users  # noqa: E402
from fhir_matcher.web.app import create_app  # noqa: E402
from fhir_matcher.web.settings import WebSettings  # noqa: E402

AS_OF = date(2026, 11, 24)


class StubClient:
    """Answers every read at once: names for the worklist, a lab for every evidence reference."""

    base = "http://stub"

    def search(self, search):
        if search.resource_type == "Patient":
            ids = dict(search.params).get("_id", "").split(",")
            return iter([{"resourceType": "Patient", "id": i, "name": [{"text": f"Patient {i}"}], "birthDate": "1980-01-01"} for i in ids if i])
        return iter([])

    def transaction(self, bundle):
        return {"entry": [{"response": {"status": "200 OK"}, "resource": {"resourceType": "Observation", "id": e["request"]["url"].split("/")[-1],
                           "code": {"text": "lab"}, "valueQuantity": {"value": 1.0, "unit": "x"}, "effectiveDateTime": "2026-11-01"}}
                          for e in bundle["entry"]]}

    def request(self, method, path, body=None, headers=None):
        return {"resourceType": "Patient", "id": path.split("/")[-1]}


def build(path: Path, n: int, decided: int) -> str:
    trial = load_trial()
    criteria = {c.id: {"result": "manual" if c.manual else ("unknown" if i % 7 == 0 else "met"), "reason": "benchmark",
                       "evidence": [f"Observation/o{i}-1", f"Observation/o{i}-2"], "value": 1.0, "unit": "x"} for i, c in enumerate(trial.criteria)}
    statuses = ["candidate", "potential-candidate", "ineligible", "ineligible"]
    patients = [PatientState(f"Patient/p{i}", statuses[i % 4], "d", None, AS_OF, {"criteria": criteria}, None, None, AS_OF, None, trial.id) for i in range(n)]
    decisions = [Decision(f"Patient/p{i}", f"ResearchSubject/s{i}", "eligible", None, AS_OF, "2026-11-24T02:00:00+00:00", AS_OF, "1", trial.id)
                 for i in range(0, decided * 4, 4)]
    with State(path) as state:
        state.commit_run(trials=[TrialRow(trial.id, trial.title, str(default_trial_path()), "bench", AS_OF, AS_OF)], patients=patients, meta={},
                         started_at="2026-11-24T02:00:00+00:00", finished_at="2026-11-24T02:10:00+00:00", as_of=AS_OF, server_time=None,
                         summary={}, decisions={trial.id: decisions})
        users.add(state.db, "bench", "viewer", "benchmark password")
    return trial.id


def timed(client: TestClient, url: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patients", type=int, default=5000)
    p.add_argument("--decided", type=int, default=500)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.sqlite"
        t = time.perf_counter()
        tid = build(path, args.patients, args.decided)
        print(f"state with {args.patients} patients ({args.decided} decided) built in {time.perf_counter() - t:.1f} s, {path.stat().st_size / 1e6:.1f} MB")
        app = create_app(WebSettings(server="http://stub", state=path, client_factory=StubClient))
        client = TestClient(app, base_url="https://127.0.0.1")
        page = client.get("/login").text
        token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        client.post("/login", data={"csrf": token, "username": "bench", "password": "benchmark password"})
        for name, url in [("portfolio", "/"), ("worklist (shortlist, page 1)", f"/trials/{tid}"), ("worklist (all, page 20)", f"/trials/{tid}?show=all&page=20"),
                          ("patient page", f"/trials/{tid}/patients/p1"), ("patient in every trial", "/patients/p1")]:
            print(f"{name:<32} {timed(client, url, args.runs):8.1f} ms (median of {args.runs})")


if __name__ == "__main__":
    main()
