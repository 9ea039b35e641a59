"""Terminology client, expansion merge, checks and the run-time hook against mocked servers
(the ``responses`` library): paging, servers that cannot page, errors."""

import copy
import json
from pathlib import Path

import pytest
import responses

from fhir_matcher.cli import main
from fhir_matcher.rest.transport import Transport
from fhir_matcher.terminology.check import check_overlaps, check_valueset, name_problem
from fhir_matcher.terminology.expand import refresh
from fhir_matcher.terminology.tx import TerminologyClient, TxError
from fhir_matcher.terminology.txmatch import TxMatcher
from fhir_matcher.terminology.valuesets import ValueSetLibrary

TX = "https://tx.example.org/fhir"
S = "http://snomed.info/sct"
DATA = Path(__file__).parent / "data" / "terminology"


def tx(page_size=1000):
    return TerminologyClient(TX, Transport(retries=1, sleep=lambda s: None, backoff=0.01), page_size=page_size)


def lupus_vs():
    return json.loads((DATA / "vs" / "test-lupus.json").read_text(encoding="utf-8"))


def expansion(codes, total=None, offset=0):
    exp = {"contains": [{"system": s, "code": c, "display": d} for s, c, d in codes], "offset": offset}
    if total is not None:
        exp["total"] = total
    return {"resourceType": "ValueSet", "expansion": exp}


def sent(call):
    return {p["name"]: p for p in json.loads(call.request.body)["parameter"]}


@responses.activate
def test_expand_pages_with_offset_and_count_until_the_total():
    codes = [(S, str(100 + i), f"c{i}") for i in range(5)]
    for offset in (0, 2, 4):
        responses.post(f"{TX}/ValueSet/$expand", json=expansion(codes[offset:offset + 2], 5, offset))
    result = tx(page_size=2).expand(lupus_vs())
    assert [c.code for c in result.codes] == ["100", "101", "102", "103", "104"]
    assert result.pages == 3
    offsets = [sent(c)["offset"]["valueInteger"] for c in responses.calls]
    assert offsets == [0, 2, 4]
    assert all(sent(c)["count"]["valueInteger"] == 2 for c in responses.calls)
    # only the definition is sent, never our stored expansion
    body = sent(responses.calls[0])["valueSet"]["resource"]
    assert "compose" in body and "expansion" not in body and "extension" not in body


@responses.activate
def test_expand_stops_on_a_short_page_without_a_total():
    responses.post(f"{TX}/ValueSet/$expand", json=expansion([(S, "1", "a"), (S, "2", "b")]))
    responses.post(f"{TX}/ValueSet/$expand", json=expansion([(S, "3", "c")]))
    result = tx(page_size=2).expand(lupus_vs())
    assert [c.code for c in result.codes] == ["1", "2", "3"]


@responses.activate
def test_a_server_that_ignores_offset_is_an_error_not_a_loop():
    responses.post(f"{TX}/ValueSet/$expand", json=expansion([(S, "1", "a"), (S, "2", "b")], 10))
    with pytest.raises(TxError, match="ignores paging"):
        tx(page_size=2).expand(lupus_vs())
    assert len(responses.calls) == 2


@responses.activate
def test_a_server_that_cannot_page_is_asked_for_the_whole_expansion():
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                              "diagnostics": "can not combine offset with exclude"}]}
    responses.post(f"{TX}/ValueSet/$expand", json=outcome, status=400)
    responses.post(f"{TX}/ValueSet/$expand", json=expansion([(S, "1", "a"), (S, "2", "b"), (S, "3", "c")], 3))
    result = tx(page_size=2).expand(lupus_vs())
    assert [c.code for c in result.codes] == ["1", "2", "3"]
    assert "offset" not in sent(responses.calls[1])


@responses.activate
def test_refused_expansion_names_the_value_set_and_the_servers_reason():
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "security", "diagnostics": "token expired"}]}
    responses.post(f"{TX}/ValueSet/$expand", json=outcome, status=403)
    with pytest.raises(TxError, match="test-lupus.*403.*token expired"):
        tx().expand(lupus_vs())


@responses.activate
def test_server_errors_are_retried():
    responses.post(f"{TX}/ValueSet/$expand", status=503)
    responses.post(f"{TX}/ValueSet/$expand", json=expansion([(S, "1", "a")], 1))
    client = tx()
    assert [c.code for c in client.expand(lupus_vs()).codes] == ["1"]
    assert client.cost.retries == 1


@responses.activate
def test_lookup_unknown_and_inactive():
    responses.get(f"{TX}/CodeSystem/$lookup", status=404, json={"resourceType": "OperationOutcome", "issue": []},
                  match=[responses.matchers.query_param_matcher({"system": S, "code": "404"})])
    responses.get(f"{TX}/CodeSystem/$lookup", json={"resourceType": "Parameters", "parameter": [
        {"name": "display", "valueString": "Old"},
        {"name": "property", "part": [{"name": "code", "valueCode": "inactive"}, {"name": "value", "valueBoolean": True}]}]},
        match=[responses.matchers.query_param_matcher({"system": S, "code": "1"})])
    responses.get(f"{TX}/CodeSystem/$lookup", json={"resourceType": "Parameters", "parameter": [{"name": "display", "valueString": "Fine"}]},
                  match=[responses.matchers.query_param_matcher({"system": S, "code": "2"})])
    client = tx()
    assert client.lookup(S, "404") is None
    assert client.lookup(S, "1").inactive is True
    fine = client.lookup(S, "2")
    assert fine.display == "Fine" and not fine.inactive


def subsumes_callback(ancestors):
    """A $subsumes endpoint from a child -> ancestors table."""
    from urllib.parse import parse_qs, urlsplit

    def cb(request):
        q = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        a, b = q["codeA"], q["codeB"]
        outcome = "equivalent" if a == b else "subsumes" if a in ancestors.get(b, ()) else "not-subsumed"
        return 200, {}, json.dumps({"resourceType": "Parameters", "parameter": [{"name": "outcome", "valueCode": outcome}]})
    return cb


@responses.activate
def test_refresh_places_new_codes_under_their_concept_and_keeps_names():
    vs = lupus_vs()
    vs["expansion"]["contains"].append({"system": S, "code": "84757009", "display": "Epilepsy", "designation": [{"language": "zh", "value": "癫痫"}]})
    vs["compose"]["include"][1]["concept"].append({"code": "84757009", "display": "Epilepsy"})
    vs["compose"]["include"].append({"system": S, "filter": [{"property": "concept", "op": "is-a", "value": "84757009"}]})
    responses.post(f"{TX}/ValueSet/$expand", json=expansion([
        (S, "55464009", "SLE"), (S, "239887007", "SLE organ"), (S, "990001", "grandchild"),
        (S, "84757009", "Epilepsy"), (S, "990004", "epilepsy child"), ("http://hl7.org/fhir/sid/icd-10", "M32.1", "x")]))
    responses.add_callback(responses.GET, f"{TX}/CodeSystem/$subsumes", callback=subsumes_callback({"990001": {"55464009", "239887007"}, "990004": {"84757009"}}))
    new, diff = refresh(vs, tx())
    tops = new["expansion"]["contains"]
    assert [t["code"] for t in tops] == ["55464009", "84757009"]
    assert tops[0]["designation"] == vs["expansion"]["contains"][0]["designation"]  # names kept
    assert new["extension"] == vs["extension"]
    under = {t["code"]: [c["code"] for c in t.get("contains", [])] for t in tops}
    assert under["55464009"] == ["239887007", "M32.1", "990001"]  # 990007 (not returned) removed
    assert under["84757009"] == ["990004"]
    assert {a[1] for a in diff.added} == {"990001", "990004"}
    assert [r[1] for r in diff.removed] == ["990007"]
    listed = {c["code"] for inc in new["compose"]["include"] for c in inc.get("concept", [])}
    assert {"990001", "990004"} <= listed and "990007" not in listed
    assert new["expansion"]["total"] == 6
    assert not [f for f in check_valueset(new) if f.severity == "error"]
    assert vs["expansion"]["contains"][0]["contains"][1]["code"] == "990007"  # the input is not modified


@responses.activate
def test_refresh_uses_the_servers_hierarchy_without_subsumes():
    vs = lupus_vs()
    nested = {"resourceType": "ValueSet", "expansion": {"contains": [
        {"system": S, "code": "55464009", "display": "SLE", "contains": [
            {"system": S, "code": "239887007", "display": "organ", "contains": [{"system": S, "code": "990001", "display": "gc"}]}]}]}}
    responses.post(f"{TX}/ValueSet/$expand", json=nested)
    new, diff = refresh(vs, tx())
    assert [a[1] for a in diff.added] == ["990001"]
    assert not [c for c in responses.calls if "$subsumes" in c.request.url]


@responses.activate
def test_a_system_the_server_does_not_hold_is_kept_as_it_is():
    vs = lupus_vs()
    bad = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found", "diagnostics": "unknown system icd-10"}]}

    def cb(request):
        systems = {inc["system"] for inc in sent_body(request)["compose"]["include"]}
        if "http://hl7.org/fhir/sid/icd-10" in systems:
            return 422, {}, json.dumps(bad)
        return 200, {}, json.dumps(expansion([(S, "55464009", "SLE"), (S, "239887007", "organ")]))

    responses.add_callback(responses.POST, f"{TX}/ValueSet/$expand", callback=cb)
    new, diff = refresh(vs, tx())
    codes = [c["code"] for c in new["expansion"]["contains"][0]["contains"]]
    assert "M32.1" in codes and "990007" not in codes
    assert any("icd-10 not expanded" in r for r in diff.review)


def sent_body(request):
    return {p["name"]: p for p in json.loads(request.body)["parameter"]}["valueSet"]["resource"]


# ---------------------------------------------------------------- run-time hook

def library():
    lib = ValueSetLibrary()
    lib.add(lupus_vs())
    return lib


def condition(code):
    return {"coding": [{"system": S, "code": code, "display": "a made-up display"}]}


@responses.activate
def test_hook_matches_an_unlisted_descendant_once_per_run():
    responses.post(f"{TX}/ValueSet/$expand", json=expansion([(S, "55464009", "SLE"), (S, "239887007", "o"), (S, "990002", "new")]))
    responses.add_callback(responses.GET, f"{TX}/CodeSystem/$subsumes", callback=subsumes_callback({"990002": {"55464009"}}))
    lib = library()
    hook = TxMatcher(lib, tx()).attach()
    assert lib.match(condition("990002"), ["test-lupus"])[0].concept.display == "Systemic lupus erythematosus"
    assert lib.match(condition("990008"), ["test-lupus"]) == []
    requests_after_two = hook.tx.cost.requests
    for _ in range(3):  # cached for the run
        lib.match({"coding": [{"system": S, "code": "990002"}], "text": "other text"}, ["test-lupus"])
        lib.match({"coding": [{"system": S, "code": "990008"}], "text": "more text"}, ["test-lupus"])
    assert hook.tx.cost.requests == requests_after_two
    assert hook.summary()["codes_matched"] == 1 and hook.summary()["codes_checked"] == 2
    assert hook.summary()["http"]["requests"] == requests_after_two


@responses.activate
def test_hook_is_not_asked_about_listed_codes_or_other_systems():
    lib = library()
    hook = TxMatcher(lib, tx()).attach()
    assert lib.match(condition("239887007"), ["test-lupus"])  # listed: offline
    assert lib.match({"coding": [{"system": "http://loinc.org", "code": "1-1"}]}) == []
    assert hook.tx.cost.requests == 0


@responses.activate
def test_hook_failure_leaves_the_stored_expansions_working():
    responses.post(f"{TX}/ValueSet/$expand", status=500)
    lib = library()
    hook = TxMatcher(lib, tx()).attach()
    assert lib.match(condition("990002"), ["test-lupus"]) == []  # not expanded: no match, no crash
    assert lib.match(condition("239887007"), ["test-lupus"])
    assert hook.summary()["codes_matched"] == 0


# ---------------------------------------------------------------- offline checks

def test_bundled_value_sets_pass_check(capsys):
    assert main(["valuesets", "check"]) == 0
    assert "0 problem(s)" in capsys.readouterr().out


def test_check_finds_each_kind_of_problem():
    vs = lupus_vs()
    bad = copy.deepcopy(vs)
    top = bad["expansion"]["contains"][0]
    top["contains"].append({"system": S, "code": "239887007", "display": "twice"})
    top["contains"].append({"system": S, "code": "555", "display": "not in compose"})
    top["designation"].append({"language": "zh", "value": "孕"})
    top["designation"].append({"language": "en", "value": "lupus"})
    bad["compose"]["include"][0]["filter"][0]["value"] = "12345"  # an anchor not in the expansion
    bad["status"] = 5
    messages = "\n".join(f.message for f in check_valueset(bad))
    assert "not a valid FHIR R4 ValueSet" in messages
    assert "239887007 appears twice" in messages
    assert "555 is not listed in compose" in messages
    assert "'孕'" in messages and "'lupus'" in messages
    assert "anchor http://snomed.info/sct|12345" in messages
    assert "expansion.total" in messages
    assert not [f for f in check_valueset(vs) if f.severity == "error"]


def test_name_rules():
    assert name_problem("AF") is None and name_problem("Hb") is None and name_problem("癫痫") is None
    assert name_problem("af") and name_problem("孕") and name_problem("x") and name_problem("HIV") and name_problem("DM")


def test_overlaps_are_reported():
    a, b = lupus_vs(), lupus_vs()
    b["id"] = "other"
    b["expansion"]["contains"][0]["designation"] = [{"language": "en", "value": "drug-induced lupus"}]
    notes = [f.message for f in check_overlaps({"test-lupus": a, "other": b})]
    assert any("'systemic lupus erythematosus' is in 2 value sets" in n for n in notes)
    assert any("'drug-induced lupus' is blocked here" in n for n in notes)


def test_check_exit_code_is_1_on_problems(tmp_path, capsys):
    vs = lupus_vs()
    vs["expansion"]["contains"][0]["contains"].append({"system": S, "code": "555", "display": "not in compose"})
    (tmp_path / "vs").mkdir()
    (tmp_path / "vs" / "test-lupus.json").write_text(json.dumps(vs), encoding="utf-8")
    (tmp_path / "trial.toml").write_text((DATA / "trial.toml").read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["valuesets", "check", "--trial", str(tmp_path / "trial.toml")]) == 1
    assert "555 is not listed in compose" in capsys.readouterr().out


def test_expand_without_a_server_is_a_clear_error(capsys):
    assert main(["valuesets", "expand"]) == 2
    assert "needs --tx" in capsys.readouterr().err


# ---------------------------------------------------------------- auth

@responses.activate
def test_tx_auth_from_terminology_auth_and_never_the_fhir_servers_token_elsewhere(monkeypatch):
    import argparse

    from fhir_matcher.cli import _transport
    from fhir_matcher.terminology.commands import tx_client

    monkeypatch.setenv("TX_TOKEN", "tx-secret")
    monkeypatch.setenv("FHIR_TOKEN", "fhir-secret")
    responses.get(f"{TX}/CodeSystem/$lookup", json={"resourceType": "Parameters", "parameter": []})
    args = argparse.Namespace(tx=TX, timeout=None, retries=0, workers=None, ca_bundle=None)
    fhir_auth = {"method": "bearer", "token_env": "FHIR_TOKEN"}

    own = tx_client(args, {"auth": fhir_auth, "terminology": {"auth": {"method": "bearer", "token_env": "TX_TOKEN"}}}, _transport, "https://fhir.example.org/r4")
    own.lookup(S, "1")
    other_host = tx_client(args, {"auth": fhir_auth}, _transport, "https://fhir.example.org/r4")
    other_host.lookup(S, "1")
    same_host = tx_client(args, {"auth": fhir_auth}, _transport, f"{TX}/other")
    same_host.lookup(S, "1")
    standalone = tx_client(args, {"auth": fhir_auth}, _transport)  # valuesets commands: [auth] is the tx server's
    standalone.lookup(S, "1")
    sent_auth = [c.request.headers.get("Authorization") for c in responses.calls]
    assert sent_auth == ["Bearer tx-secret", None, "Bearer fhir-secret", "Bearer fhir-secret"]


@responses.activate
def test_a_system_the_server_silently_leaves_out_is_not_emptied():
    responses.post(f"{TX}/ValueSet/$expand", json=expansion([(S, "55464009", "SLE"), (S, "239887007", "organ")]))
    new, diff = refresh(lupus_vs(), tx())
    codes = [c["code"] for c in new["expansion"]["contains"][0]["contains"]]
    assert "M32.1" in codes and "990007" not in codes
    assert [r[1] for r in diff.removed] == ["990007"]
    assert any("returned no http://hl7.org/fhir/sid/icd-10 code" in r for r in diff.review)
