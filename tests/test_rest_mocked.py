"""Transport, client and REST source against responses-mocked servers: paging, retries, errors."""

import json

import pytest

from fhir_matcher.criteria.cohort import read_plan
import requests
import responses

from fhir_matcher.rest.client import FhirClient, FhirError
from fhir_matcher.rest.query import Search
from fhir_matcher.rest.transport import Transport, TransportError

BASE = "https://fhir.example.org/r4"


def client(**kw):
    sleeps = []
    t = Transport(sleep=sleeps.append, backoff=0.01, **kw)
    return FhirClient(BASE, t), sleeps


def bundle(resources, next_url=None, total=None):
    b = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}
    if next_url:
        b["link"] = [{"relation": "self", "url": "x"}, {"relation": "next", "url": next_url}]
    if total is not None:
        b["total"] = total
    return b


def patient(pid):
    return {"resourceType": "Patient", "id": pid}


@responses.activate
def test_search_follows_next_links_across_pages():
    responses.get(f"{BASE}/Patient", json=bundle([patient("a"), patient("b")], f"{BASE}?_getpages=x&_getpagesoffset=2"))
    responses.get(f"{BASE}", json=bundle([patient("c")]))
    c, _ = client()
    assert [r["id"] for r in c.search(Search("Patient").count(2))] == ["a", "b", "c"]
    assert c.transport.cost.requests == 2
    assert c.transport.cost.bytes > 0


@responses.activate
def test_next_link_to_another_host_is_followed_on_our_base():
    responses.get(f"{BASE}/Patient", json=bundle([patient("a")], "http://internal-node:8080/r4?page=2"))
    responses.get("https://fhir.example.org/r4?page=2", json=bundle([patient("b")]))
    c, _ = client()
    assert [r["id"] for r in c.search(Search("Patient"))] == ["a", "b"]


@responses.activate
def test_repeating_next_link_is_an_error_not_a_loop():
    responses.get(f"{BASE}/Patient", json=bundle([patient("a")], f"{BASE}/Patient"))
    c, _ = client()
    with pytest.raises(FhirError, match="repeats"):
        list(c.search(Search("Patient")))


@responses.activate
def test_429_honours_retry_after_then_succeeds():
    responses.get(f"{BASE}/metadata", status=429, headers={"Retry-After": "7"})
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
    c, sleeps = client()
    assert c.capabilities()["resourceType"] == "CapabilityStatement"
    assert sleeps == [7.0]
    assert c.transport.cost.to_json() == {"requests": 2, "bytes": c.transport.cost.bytes, "retries": 1}


@responses.activate
def test_5xx_retried_with_growing_backoff_then_gives_up():
    for _ in range(3):
        responses.get(f"{BASE}/metadata", status=503, json={"resourceType": "OperationOutcome", "issue": [{"diagnostics": "down for maintenance"}]})
    c, sleeps = client(retries=2)
    with pytest.raises(FhirError, match="HTTP 503: down for maintenance"):
        c.capabilities()
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9


@responses.activate
def test_connection_errors_retried_then_clear_error():
    responses.get(f"{BASE}/metadata", body=requests.ConnectionError("Connection refused"))
    c, sleeps = client(retries=3)
    with pytest.raises(TransportError, match="connection refused.*4 attempts"):
        c.capabilities()
    assert len(sleeps) == 3


@responses.activate
def test_timeout_is_retried():
    responses.get(f"{BASE}/metadata", body=requests.Timeout("read timed out"))
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement"})
    c, sleeps = client()
    c.capabilities()
    assert len(sleeps) == 1


@responses.activate
def test_4xx_not_retried_and_outcome_named():
    responses.get(f"{BASE}/Observation", status=400, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": "Unknown search parameter \"foo\""}]})
    c, sleeps = client()
    with pytest.raises(FhirError, match='HTTP 400: Unknown search parameter "foo"'):
        list(c.search(Search("Observation").where(foo="1")))
    assert sleeps == []


@responses.activate
def test_refused_credentials_say_so():
    responses.get(f"{BASE}/metadata", status=401, body="")
    c, _ = client()
    with pytest.raises(FhirError, match="401: not authorized"):
        c.capabilities()


@responses.activate
def test_not_fhir_answer():
    responses.get(f"{BASE}/metadata", body="<html>login</html>", content_type="text/html")
    c, _ = client()
    with pytest.raises(FhirError, match="not FHIR JSON"):
        c.capabilities()


def test_tls_verification_on_and_custom_ca():
    assert Transport().session.verify is True
    assert Transport(ca_bundle="/etc/ssl/site-ca.pem").session.verify == "/etc/ssl/site-ca.pem"


def test_search_chunks_stay_under_the_url_limit():
    ids = [f"patient-{i:05d}" for i in range(500)]
    chunks = list(Search("Observation").count(1000).chunked("patient", ids, 400, BASE))
    assert len(chunks) > 5
    assert all(len(s.url(BASE)) <= 400 for s in chunks)
    assert [i for s in chunks for i in dict(s.params)["patient"].split(",")] == ids


def test_query_objects_compose():
    s = Search("Condition").where(code__text="lupus").elements("code", "subject").count(50)
    assert s.url(BASE) == f"{BASE}/Condition?code:text=lupus&_elements=code,subject&_count=50"
    assert Search("Patient").where(_id=["a", "b"]).query_string() == "_id=a,b"


# ---------------------------------------------------------------- the REST source


def cond(cid, pid, code):
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"}, "code": code}


@responses.activate
def test_rest_source_cohort_then_batched_fetch(trial):
    from fhir_matcher.sources.rest import RestSource

    sle = {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]}
    local = {"coding": [{"system": "http://hospital.example.cn/dx", "code": "D1", "display": "系统性红斑狼疮"}]}
    other = {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}
    responses.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                                            "rest": [{"resource": [{"type": t} for t in ("Patient", "Condition", "Observation", "MedicationStatement", "MedicationRequest", "Procedure", "Consent")]}]})
    responses.get(f"{BASE}/Condition", match=[responses.matchers.query_param_matcher({"_elements": "code,subject", "_count": "1000"})],
                  json=bundle([cond("c1", "a", sle), cond("c2", "b", local), cond("c3", "c", other)]))
    seen = []

    def answer(request):
        seen.append(request.url)
        rtype = request.path_url.split("?")[0].rsplit("/", 1)[-1]
        if rtype == "Patient":
            return 200, {}, json.dumps(bundle([patient("a"), patient("b")]))
        return 200, {}, json.dumps(bundle([]))

    for rtype in ("Patient", "Condition", "Observation", "MedicationStatement", "MedicationRequest", "Procedure", "Consent"):
        responses.add_callback(responses.GET, f"{BASE}/{rtype}", callback=answer)
    src = RestSource(FhirClient(BASE, Transport(sleep=lambda s: None)), read_plan(trial), workers=2)
    src.check_server()
    assert src.cohort() == ["a", "b"]  # the local-coded Chinese diagnosis counts; "c" has none
    src.fetch(["a", "b"])
    assert all("patient=a,b" in u or "_id=a,b" in u for u in seen)
    assert not any("MedicationAdministration" in u for u in seen)  # the server does not support it
    assert any("_include=MedicationStatement:medication" in u for u in seen)
    assert any("MedicationAdministration" in n for n in src.notes)
    assert [r.key for r in src.builder.records()] == ["Patient/a", "Patient/b"]


@responses.activate
def test_truncated_page_is_read_again():
    responses.get(f"{BASE}/Patient", body=requests.exceptions.ChunkedEncodingError("connection broken: IncompleteRead"))
    responses.get(f"{BASE}/Patient", body='{"resourceType": "Bundle", "entry": [{"resou', content_type="application/fhir+json")
    responses.get(f"{BASE}/Patient", json=bundle([patient("a")]))
    c, sleeps = client()
    assert [r["id"] for r in c.search(Search("Patient"))] == ["a"]


@responses.activate
def test_write_back_refusal_names_the_servers_reason(trial):
    from fhir_matcher.criteria.evaluate import PatientResult
    from fhir_matcher.outputs.writeback import WriteBack

    responses.post(BASE, status=422, json={"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "processing", "diagnostics": "ResearchSubject.individual: Patient/x does not exist"}]})
    wb = WriteBack(FhirClient(BASE, Transport(sleep=lambda s: None)), trial)
    with pytest.raises(FhirError) as e:
        wb.write("ResearchStudy/1", [(PatientResult("Patient/x", "candidate", {}), "candidate", "manual checks remain")])
    assert "HTTP 422: ResearchSubject.individual: Patient/x does not exist" in str(e.value)


def _caps(*interactions):
    return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": [{"mode": "server", "interaction": [{"code": i} for i in interactions]}]}


@responses.activate
def test_first_pages_of_several_searches_come_in_one_batch_and_later_pages_as_usual():
    responses.get(f"{BASE}/metadata", json=_caps("transaction"))
    batch = {"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"response": {"status": "200 OK"}, "resource": bundle([patient("a")], f"{BASE}?page=2")},
        {"response": {"status": "400 Bad Request"}, "resource": {"resourceType": "OperationOutcome"}},
    ]}
    responses.post(f"{BASE}", json=batch)
    responses.get(f"{BASE}", json=bundle([patient("b")]))  # page 2 of the first search
    responses.get(f"{BASE}/Observation", json=bundle([{"resourceType": "Observation", "id": "o"}]))  # the refused entry, alone
    c, _ = client()
    c.capabilities()
    first, second = Search("Patient").count(1), Search("Observation").count(1)
    c.prefetch([first, second])
    assert [r["id"] for r in c.search(first)] == ["a", "b"]
    assert [r["id"] for r in c.search(second)] == ["o"]
    sent = json.loads(responses.calls[1].request.body)
    assert [e["request"] for e in sent["entry"]] == [{"method": "GET", "url": "Patient?_count=1"}, {"method": "GET", "url": "Observation?_count=1"}]
    assert len(responses.calls) == 4  # metadata, the batch, page 2, the refused search alone
    assert c._prefetched == {}  # each first page is used once: the same search again goes to the server


@responses.activate
def test_a_server_that_refuses_batches_gets_searches_one_by_one_and_is_not_asked_again():
    responses.get(f"{BASE}/metadata", json=_caps("transaction"))
    responses.post(f"{BASE}", status=400, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "no batch"}]})
    responses.get(f"{BASE}/Patient", json=bundle([patient("a")]))
    responses.get(f"{BASE}/Observation", json=bundle([]))
    c, _ = client(retries=0)
    c.capabilities()
    searches = [Search("Patient"), Search("Observation")]
    assert c.search_all(searches) == [[patient("a")], []]
    assert c.search_all(searches) == [[patient("a")], []]
    assert sum(1 for call in responses.calls if call.request.method == "POST") == 1


@responses.activate
def test_a_server_listing_neither_batch_nor_transaction_is_never_sent_one():
    responses.get(f"{BASE}/metadata", json=_caps("history-system"))
    responses.get(f"{BASE}/Patient", json=bundle([patient("a")]))
    responses.get(f"{BASE}/Observation", json=bundle([]))
    c, _ = client()
    c.capabilities()
    assert c.search_all([Search("Patient"), Search("Observation")]) == [[patient("a")], []]
    assert all(call.request.method == "GET" for call in responses.calls)
