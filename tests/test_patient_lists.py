"""Patient lists (--patients FILE, --group ID) and telling refused strategies apart, against
responses-mocked servers shaped like Epic / Oracle Health answers."""

import json
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pytest

from fhir_matcher.criteria.cohort import read_plan
import responses

from fhir_matcher.cli import main
from fhir_matcher.rest.capability import StrategyRefused
from fhir_matcher.rest.client import FhirClient, FhirError
from fhir_matcher.rest.transport import Transport
from fhir_matcher.sources.patients import (
    PatientList,
    PatientListError,
    PatientListSource,
    group_members,
    read_patient_file,
)
from fhir_matcher.sources.rest import RestSource

BASE = "https://ehr.example.org/api/FHIR/R4"


def client():
    return FhirClient(BASE, Transport(sleep=lambda s: None, backoff=0.01, retries=0))


def bundle(resources, next_url=None):
    b = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


def outcome(text):
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "required", "diagnostics": text}]}


def capability(condition_interactions=("read", "search-type"), system_ops=("export",), group_ops=("export",)):
    return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": [{
        "mode": "server",
        "operation": [{"name": n, "definition": f"http://x/{n}"} for n in system_ops],
        "resource": [
            {"type": "Patient", "interaction": [{"code": "read"}, {"code": "search-type"}]},
            {"type": "Condition", "interaction": [{"code": c} for c in condition_interactions]},
            *({"type": t, "interaction": [{"code": "read"}, {"code": "search-type"}]} for t in (
                "Observation", "MedicationStatement", "MedicationRequest", "MedicationAdministration", "Procedure", "Consent")),
            {"type": "Group", "interaction": [{"code": "read"}], "operation": [{"name": n, "definition": f"http://x/{n}"} for n in group_ops]},
        ]}]}


# ---------------------------------------------------------------- --patients FILE


def test_patient_file(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("\ufeff# registry, 2026-11\nPatient/a\n\n  Patient/b  # comment\nhttps://ehr.example.org/fhir/Patient/c\nPatient/a\n", encoding="utf-8")
    assert read_patient_file(f).ids == ["a", "b", "c"]
    f.write_text("Patient/a\nObservation/x\n", encoding="utf-8")
    with pytest.raises(PatientListError, match=r"list.txt:2: not a Patient reference"):
        read_patient_file(f)
    f.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(PatientListError, match="empty"):
        read_patient_file(f)
    with pytest.raises(PatientListError, match="no such"):
        read_patient_file(tmp_path / "missing.txt")


def test_bad_patient_file_is_one_line_exit_2(tmp_path, capsys):
    f = tmp_path / "list.txt"
    f.write_text("Patient/a b\n", encoding="utf-8")
    assert main(["screen", "--source", BASE, "--patients", str(f), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "list.txt:1" in err


# ---------------------------------------------------------------- --group ID


@responses.activate
def test_group_members_direct_contained_nested_and_inactive():
    responses.get(f"{BASE}/Group/registry", json={
        "resourceType": "Group", "id": "registry", "type": "person", "actual": True,
        "contained": [{"resourceType": "Patient", "id": "m1", "identifier": [{"system": "urn:mrn", "value": "123"}]}],
        "member": [
            {"entity": {"reference": "Patient/a"}},
            {"entity": {"reference": f"{BASE}/Patient/b"}},
            {"entity": {"reference": "Patient/gone"}, "inactive": True},
            {"entity": {"reference": "Patient/ended"}, "period": {"end": "2026-01-01"}},
            {"entity": {"reference": "#m1"}},
            {"entity": {"identifier": {"system": "urn:mrn", "value": "456"}}},
            {"entity": {"reference": "Device/pump"}},
            {"entity": {"reference": "Group/clinic"}},
            {"entity": {"reference": "Patient/a"}},
        ]})
    responses.get(f"{BASE}/Group/clinic", json={"resourceType": "Group", "id": "clinic", "member": [
        {"entity": {"reference": "Patient/d"}}, {"entity": {"reference": "Group/registry"}}]})
    responses.get(f"{BASE}/Patient", match=[responses.matchers.query_param_matcher({"identifier": "urn:mrn|123", "_elements": "id"})],
                  json=bundle([{"resourceType": "Patient", "id": "c"}]))
    responses.get(f"{BASE}/Patient", match=[responses.matchers.query_param_matcher({"identifier": "urn:mrn|456", "_elements": "id"})],
                  json=bundle([{"resourceType": "Patient", "id": "e"}]))
    members = group_members(client(), "registry")
    assert members.ids == ["a", "b", "c", "e", "d"]
    assert members.origin == "Group/registry" and members.group == "registry"
    assert any("1 member(s) are not Patients" in n for n in members.notes), members.notes


@responses.activate
def test_group_members_over_bundle_pages():
    responses.get(f"{BASE}/Group/big", json=bundle([{"resourceType": "Group", "id": "big", "member": [{"entity": {"reference": "Patient/a"}}]}],
                                                   f"{BASE}/Group?_id=big&page=2"))
    responses.get(f"{BASE}/Group", json=bundle([{"resourceType": "Group", "id": "big", "member": [{"entity": {"reference": "Patient/b"}}]}]))
    assert group_members(client(), "big").ids == ["a", "b"]


@responses.activate
def test_empty_group_is_a_clear_error():
    responses.get(f"{BASE}/Group/none", json={"resourceType": "Group", "id": "none", "member": []})
    with pytest.raises(PatientListError, match="no Patient members"):
        group_members(client(), "none")


# ---------------------------------------------------------------- patient-scoped reading


def _patient_param(request):
    q = parse_qs(urlsplit(request.url).query)
    return q.get("patient", q.get("_id", [""]))[0]


def _ehr(one_per_search: bool):
    """A mocked EHR: Conditions, Patients and empty other types; refuses patient=a,b when strict."""
    data = {
        "a": [{"resourceType": "Condition", "id": "ca", "subject": {"reference": "Patient/a"},
               "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]}}],
        "b": [{"resourceType": "Condition", "id": "cb", "subject": {"reference": "Patient/b"}, "code": {"text": "Hypertension"}}],
        "c": [],
    }

    def search(request):
        rtype = urlsplit(request.url).path.rsplit("/", 1)[-1]
        ids = [i for i in _patient_param(request).split(",") if i]
        if not ids:
            return 400, {}, json.dumps(outcome(f"{rtype}: a patient is required"))
        if one_per_search and len(ids) > 1:
            return 400, {}, json.dumps(outcome("only one patient per request"))
        if "_lastUpdated" in request.url:
            found = []  # nothing changed lately
        elif rtype == "Condition":
            found = [c for i in ids for c in data.get(i, [])]
        elif rtype == "Patient":
            found = [{"resourceType": "Patient", "id": i, "birthDate": "1980-01-01", "gender": "female"} for i in ids if i in data]
        else:
            found = []
        return 200, {}, json.dumps(bundle(found))

    responses.get(f"{BASE}/metadata", json=capability())
    for rtype in ("Condition", "Patient", "Observation", "MedicationStatement", "MedicationRequest", "MedicationAdministration",
                  "Procedure", "Consent"):
        responses.add_callback(responses.GET, f"{BASE}/{rtype}", callback=search)


@pytest.mark.parametrize("one_per_search", [True, False])
@responses.activate
def test_patient_list_source_batches_where_allowed_and_gates_on_conditions(trial, one_per_search):
    _ehr(one_per_search)
    source = PatientListSource(client(), read_plan(trial), PatientList(["a", "b", "c"], "--patients"))
    records = source.read()
    assert [r.key for r in records] == ["Patient/a"]  # b (hypertension) and c (nothing) are outside the cohort
    assert source.outside == 2
    assert source.per_search == (1 if one_per_search else 0)
    searches = [c.request for c in responses.calls if "/metadata" not in c.request.url]
    scoped = [r for r in searches if "_elements=id&_count=1" not in r.url]  # the probe is asked once
    widths = {len(_patient_param(r).split(",")) for r in scoped}
    assert widths == ({1} if one_per_search else {1, 3})  # later batches hold only the cohort
    # Only the cohort patient's other types were read.
    assert all(_patient_param(r) in ("a", "a,b,c", "b", "c") for r in scoped)
    assert not any(urlsplit(r.url).path.endswith("Observation") and _patient_param(r) != "a" for r in scoped)


# ---------------------------------------------------------------- refused strategies


@responses.activate
def test_refused_scan_names_the_server_message_and_the_options(trial):
    responses.get(f"{BASE}/metadata", json=capability())
    responses.get(f"{BASE}/Condition", status=400, json=outcome("Must have either patient or subject."))
    source = RestSource(client(), read_plan(trial))
    source.check_server()
    with pytest.raises(StrategyRefused) as e:
        source.cohort()
    msg = str(e.value)
    assert "Must have either patient or subject." in msg and "\n" not in msg
    assert all(o in msg for o in ("--group ID", "--patients FILE", "--bulk-group ID"))


@responses.activate
def test_capability_statement_without_condition_search_is_refused_before_asking(trial):
    responses.get(f"{BASE}/metadata", json=capability(condition_interactions=("read",)))
    source = RestSource(client(), read_plan(trial))
    source.check_server()
    with pytest.raises(StrategyRefused, match="CapabilityStatement offers no such search"):
        source.cohort()
    assert len(responses.calls) == 1


@responses.activate
def test_forbidden_stays_an_authorization_error(trial):
    responses.get(f"{BASE}/metadata", json=capability())
    responses.get(f"{BASE}/Condition", status=403, json=outcome("insufficient scope"))
    source = RestSource(client(), read_plan(trial))
    source.check_server()
    with pytest.raises(FhirError) as e:
        source.cohort()
    assert not isinstance(e.value, StrategyRefused) and "403" in str(e.value)


@responses.activate
def test_group_only_bulk_server_is_told_apart(tmp_path, capsys):
    responses.get(f"{BASE}/metadata", json=capability(system_ops=()))
    assert main(["screen", "--source", BASE, "--bulk", "--out", str(tmp_path / "o"), "--as-of", "2026-11-24", "-q"]) == 2
    err = capsys.readouterr().err
    assert "system-level $export" in err and "--bulk-group ID" in err and err.count("\n") == 1
    assert not any("$export" in c.request.url for c in responses.calls)  # told by the statement, never asked


@responses.activate
def test_refused_system_export_kick_off_is_told_apart(tmp_path, capsys):
    responses.get(f"{BASE}/metadata", json=capability())
    responses.get(f"{BASE}/$export", status=403, json=outcome("Bulk export is only available for Groups"))
    assert main(["screen", "--source", BASE, "--bulk", "--out", str(tmp_path / "o"), "--as-of", "2026-11-24", "-q"]) == 2
    err = capsys.readouterr().err
    assert "Bulk export is only available for Groups" in err and "--bulk-group ID" in err and err.count("\n") == 1


def test_list_options_need_a_server(tmp_path, capsys):
    assert main(["screen", "--source", str(tmp_path), "--group", "g", "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "--source is not a URL" in capsys.readouterr().err


@responses.activate
def test_per_patient_changes_use_lastupdated_and_screen_new_members(trial):
    _ehr(True)
    source = PatientListSource(client(), read_plan(trial), PatientList(["a", "b", "c"], "--patients"))
    source.check_server()
    source.previous = {"a", "b", "gone"}
    source.evidence = {"b": ["Patient/b", "Observation/deleted-lab"]}  # what b's last result cited
    changed, entering = source.changes_since("2026-11-24T00:00:00Z")
    # c is new: screened (its Conditions read); gone left: not read at all.
    assert "c" in changed and not any("gone" in c.request.url for c in responses.calls)
    lastupdated = [c.request.url for c in responses.calls if "_lastUpdated" in c.request.url]
    assert lastupdated and all(_patient_param(c.request) in ("a", "b") for c in responses.calls if "_lastUpdated" in c.request.url)
    # a has no stored result (outside the cohort): only its Conditions are asked about.
    asked_a = {urlsplit(c.request.url).path.rsplit("/", 1)[-1] for c in responses.calls
               if "_lastUpdated" in c.request.url and _patient_param(c.request) == "a"}
    assert asked_a == {"Condition"}
    # Nothing changed for a; b's cited lab is gone (deleted: no history on such servers).
    assert changed == {"b", "c"}
    assert any("_id=deleted-lab" in c.request.url for c in responses.calls)
    assert entering == set()  # c has no target diagnosis


@responses.activate
def test_records_for_reads_every_listed_patient_without_the_gate(trial):
    """The reusable reading (for match): every listed patient, the types asked for."""
    _ehr(True)
    source = PatientListSource(client(), read_plan(trial), PatientList(["a", "b"], "--patients"), types={"Patient", "Condition", "Observation"})
    records = source.records_for()
    assert [r.key for r in records] == ["Patient/a", "Patient/b"]
    assert [c["id"] for c in records[1].of_type("Condition")] == ["cb"]
    asked = {urlsplit(c.request.url).path.rsplit("/", 1)[-1] for c in responses.calls}
    assert asked == {"metadata", "Condition", "Observation", "Patient"}
