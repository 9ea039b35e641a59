"""Against a server that allows only patient-scoped searches and Group export (the local HAPI
server with ``strict=True``, behaving like Epic / Oracle Health): the default strategies stop
with one clear line, and ``--group`` / ``--patients`` / ``--bulk-group`` give the same answers
as the open server, for a screen and over several nights with data and membership changing.
"""

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from fhir_matcher.cli import main
from fhir_matcher.rest.client import FhirClient
from fhir_matcher.rest.loader import Loader
from fhir_matcher.rest.transport import Transport
from fhir_matcher.screen import screen_server

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "bundles" / "demo"
START = date(2026, 11, 24)
TAG = "https://fhir-matcher.org/fhir/test-run|strict-ehr"
PREFIX = "se-"
GROUP = f"{PREFIX}registry"
FIRST_MEMBERS = [f"{PREFIX}demo-{n:02d}" for n in range(1, 41, 2)]  # 20 of the 46: every shape of data


def put(base, resource):
    r = requests.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource,
                     headers={"Content-Type": "application/fhir+json"}, timeout=60)
    assert r.status_code in (200, 201), r.text


def put_group(bases, members):
    group = {"resourceType": "Group", "id": GROUP, "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members]}
    for base in bases:
        put(base, group)


def tag():
    system, code = TAG.split("|")
    return {"system": system, "code": code}


@pytest.fixture(scope="module")
def servers(hapi, hapi_strict, tmp_path_factory):
    """The same demo data (same ids) on the open and the strict server, and a Group of 40."""
    for srv in (hapi, hapi_strict):
        report = Loader(FhirClient(srv.base_url), tag=TAG, id_prefix=PREFIX).load([DEMO])
        assert not report.rejected
    put_group([hapi.base_url, hapi_strict.base_url], FIRST_MEMBERS)
    return hapi.base_url, hapi_strict.base_url


def run_cli(*args):
    return main([*args, "-q"])


def rows(out):
    return {r["patient"]: r for r in map(json.loads, (out / "screening.ndjson").read_text(encoding="utf-8").splitlines())}


def open_screen(base, as_of, members):
    """What the open server says for these members (a full Condition-scan screen)."""
    from fhir_matcher.trial import load_trial

    s = screen_server(base, load_trial(), as_of, Transport(), tag=TAG)
    return {r.patient: r.to_json(s.trial, as_of) for r in s.results if r.patient.split("/", 1)[1] in members}


def same_answers(got, want):
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))
    for p, w in want.items():
        assert got[p]["status"] == w["status"], p
        assert got[p]["criteria"] == w["criteria"], p


# ---------------------------------------------------------------- refusals


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_default_screen_is_refused_in_one_line(servers, tmp_path, capsys):
    _, strict = servers
    assert run_cli("screen", "--source", strict, "--out", str(tmp_path / "o"), "--as-of", START.isoformat(), "--tag", TAG) == 2
    err = one_line_error(capsys)
    assert "a Condition search needs a patient" in err  # the server's own message
    assert all(opt in err for opt in ("--group", "--patients", "--bulk-group"))


def test_system_export_is_refused_in_one_line(servers, tmp_path, capsys):
    _, strict = servers
    assert run_cli("screen", "--source", strict, "--bulk", "--out", str(tmp_path / "o"), "--as-of", START.isoformat()) == 2
    err = one_line_error(capsys)
    assert "system-level $export" in err and "--bulk-group" in err and "is not supported" in err


def test_default_nightly_is_refused_in_one_line(servers, tmp_path, capsys):
    _, strict = servers
    assert run_cli("nightly", "--server", strict, "--state", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "o"),
                   "--as-of", START.isoformat(), "--tag", TAG) == 2
    err = one_line_error(capsys)
    assert "--group" in err and "a Condition search needs a patient" in err


# ---------------------------------------------------------------- screen


def test_group_and_patient_file_screens_equal_the_open_server(servers, tmp_path):
    open_base, strict = servers
    want = open_screen(open_base, START, set(FIRST_MEMBERS))
    assert len(want) > 15
    assert run_cli("screen", "--source", strict, "--group", GROUP, "--out", str(tmp_path / "g"), "--as-of", START.isoformat(), "--tag", TAG) == 0
    same_answers(rows(tmp_path / "g"), want)
    run = json.loads((tmp_path / "g" / "run.json").read_text())
    assert run["screened"] == len(FIRST_MEMBERS) and run["outside_cohort"] == len(FIRST_MEMBERS) - len(want)
    # One patient per search: at least one Condition search per member.
    assert run["http"]["requests"] >= len(FIRST_MEMBERS)

    listing = tmp_path / "patients.txt"
    listing.write_text("# the registry\n" + "\n".join(f"Patient/{m}" for m in FIRST_MEMBERS) + "\n", encoding="utf-8")
    assert run_cli("screen", "--source", strict, "--patients", str(listing), "--out", str(tmp_path / "p"), "--as-of", START.isoformat(), "--tag", TAG) == 0
    same_answers(rows(tmp_path / "p"), want)

    # The open server takes several patients per search: same answers, far fewer requests.
    assert run_cli("screen", "--source", open_base, "--group", GROUP, "--out", str(tmp_path / "og"), "--as-of", START.isoformat(), "--tag", TAG) == 0
    same_answers(rows(tmp_path / "og"), want)
    assert json.loads((tmp_path / "og" / "run.json").read_text())["http"]["requests"] < len(FIRST_MEMBERS)


def test_bulk_group_screen_equals_the_open_server(servers, tmp_path):
    open_base, strict = servers
    want = open_screen(open_base, START, set(FIRST_MEMBERS))
    for name, base in (("strict", strict), ("open", open_base)):
        out = tmp_path / name
        assert run_cli("screen", "--source", base, "--bulk-group", GROUP, "--bulk-poll-max", "2", "--out", str(out), "--as-of", START.isoformat(), "--tag", TAG) == 0
        got = rows(out)
        assert set(got) == set(want)
        for p in want:
            assert got[p]["status"] == want[p]["status"], (name, p)


# ---------------------------------------------------------------- nights


def test_nights_on_the_strict_server_equal_the_open_server(servers, tmp_path):
    open_base, strict = servers
    listing = tmp_path / "patients.txt"
    modes = {
        "group": ["--group", GROUP],  # changes from Group/[id]/$export?_since= (the server offers it)
        "patients": ["--patients", str(listing)],  # changes from per-patient _lastUpdated searches
        "bulk-group": ["--bulk-group", GROUP, "--bulk-poll-max", "2"],  # records and changes by Group export
    }

    def members_are(members):
        put_group([open_base, strict], members)
        listing.write_text("\n".join(f"Patient/{m}" for m in members) + "\n", encoding="utf-8")

    def night(as_of, members):
        want = open_screen(open_base, as_of, set(members))
        out = {}
        for mode, extra in modes.items():
            o = tmp_path / f"{mode}-{as_of}-{len(list(tmp_path.glob(f'{mode}-*')))}"
            code = run_cli("nightly", "--server", strict, "--state", str(tmp_path / f"{mode}.sqlite"), "--out", str(o),
                           "--as-of", as_of.isoformat(), "--overlap", "0", "--tag", TAG, *extra)
            assert code == 0, mode
            got, summary = rows(o), json.loads((o / "run.json").read_text())
            for p in set(got) - set(want):  # left the cohort: shown as ineligible
                assert got.pop(p)["status"] == "ineligible"
            same_answers(got, want)
            assert all(p.split("/", 1)[1] in members for p in got)
            out[mode] = summary
        return out

    members = list(FIRST_MEMBERS)
    members_are(members)
    import time

    time.sleep(1.1)  # changes are read with second precision
    s = night(START, members)
    assert all(x["mode"] == "full" for x in s.values())

    s = night(START, members)  # nothing changed
    assert all(x["mode"] == "incremental" and x["re_evaluated"] == 0 for x in s.values()), s

    # A candidate develops epilepsy; two patients join the registry, one leaves.
    first = open_screen(open_base, START, set(members))
    leaver = f"Patient/{PREFIX}demo-03"
    candidate = next(p for p, r in sorted(first.items()) if r["status"] == "candidate" and p != leaver)
    for base in (open_base, strict):
        put(base, {"resourceType": "Condition", "id": f"{candidate.split('/')[1]}-epilepsy", "subject": {"reference": candidate},
                   "meta": {"tag": [tag()]},
                   "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                   "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G40.9"}]}, "onsetDateTime": "2026-11-20"})
    before = requests.get(f"{strict}/ResearchSubject", params={"_count": 1000}, timeout=60).json()
    leaver_subjects = {e["resource"]["id"]: e["resource"]["meta"]["versionId"] for e in before.get("entry", [])
                       if e["resource"]["individual"]["reference"] == leaver}
    assert leaver_subjects  # demo-03 is a candidate: it has a ResearchSubject
    members = [m for m in members if m != leaver.split("/")[1]] + [f"{PREFIX}demo-42", f"{PREFIX}demo-44"]
    members_are(members)
    s = night(START, members)
    for mode, x in s.items():
        assert x["mode"] == "incremental", mode
        assert (x["joined_list"], x["left_list"]) == (2, 1), mode
        assert x["re_evaluated"] <= 3, (mode, x["re_evaluated"])  # the changed patient and the newcomers in the cohort
    after = requests.get(f"{strict}/ResearchSubject", params={"_count": 1000}, timeout=60).json()
    kept = {e["resource"]["id"]: e["resource"]["meta"]["versionId"] for e in after.get("entry", [])
            if e["resource"]["individual"]["reference"] == leaver}
    assert kept == leaver_subjects  # a patient who left the list: subject neither deleted nor rewritten

    # Two weeks later a potential candidate gets a new platelet count; labs age out meanwhile.
    day = START + timedelta(days=14)
    target = next(p for p, r in sorted(first.items()) if r["status"] == "potential-candidate" and p.split("/")[1] in members)
    for base in (open_base, strict):
        put(base, {"resourceType": "Observation", "id": f"{target.split('/')[1]}-late-plt", "status": "final", "meta": {"tag": [tag()]},
                   "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]}, "subject": {"reference": target},
                   "effectiveDateTime": day.isoformat(), "valueQuantity": {"value": 150, "system": "http://unitsofmeasure.org", "code": "10*9/L"}})
    # ... and another candidate's platelet count is deleted (no history on such servers: the
    # result's evidence is looked up again).
    other = next(p for p, r in sorted(first.items()) if r["status"] == "candidate" and p not in (leaver, candidate) and p.split("/")[1] in members)
    platelets = first[other]["criteria"]["inc-platelets"]["evidence"]
    assert platelets
    for base in (open_base, strict):
        for ref in platelets:
            assert requests.delete(f"{base}/{ref}", timeout=60).status_code in (200, 204)
    s = night(day, members)
    assert all(x["mode"] == "incremental" for x in s.values())
    assert all(x["statuses"]["candidate"] < sum(1 for r in first.values() if r["status"] == "candidate") for x in s.values())
    s = night(START + timedelta(days=35), members)
    assert all(x["mode"] == "incremental" and x["re_evaluated"] < len(members) for x in s.values())


# ---------------------------------------------------------------- match


def test_match_on_a_patient_scoped_server_equals_the_open_server(servers, tmp_path, capsys):
    """match reads only patient-scoped searches: it works on the strict server unchanged, and
    with --group it first checks that the patient is on the list."""
    open_base, strict_base = servers
    put_group([open_base, strict_base], FIRST_MEMBERS)
    patient = f"Patient/{FIRST_MEMBERS[0]}"
    answers = {}
    for name, base, extra in (("open", open_base, []), ("strict", strict_base, ["--group", GROUP])):
        out = tmp_path / f"{name}.json"
        assert main(["match", "--patient", patient, "--source", base, "--as-of", START.isoformat(), "--out", str(out), "-q", *extra]) == 0
        bundle = json.loads(out.read_text(encoding="utf-8"))
        answers[name] = [(e["resource"]["status"], [x for x in e["resource"].get("extension", []) if x["url"].endswith("screening-criterion")])
                         for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert answers["strict"] == answers["open"]
    outsider = f"Patient/{PREFIX}demo-02"  # not on the list
    assert main(["match", "--patient", outsider, "--source", strict_base, "--as-of", START.isoformat(),
                 "--out", str(tmp_path / "x.json"), "-q", "--group", GROUP]) == 2
    assert f"{outsider} is not a member of Group/{GROUP}" in capsys.readouterr().err
