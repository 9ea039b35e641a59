"""Feature check of the local HAPI FHIR server (stdlib only).

    python tests/hapi/verify_server.py                 # starts its own server on a free port
    python tests/hapi/verify_server.py --base-url http://127.0.0.1:8080/fhir

Exercises every feature the matcher relies on and prints one line per check; exit code 0 only
if all pass. Not collected by pytest (no test_ prefix): it is a manual/diagnostic tool.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

FHIR_JSON = "application/fhir+json"


class Client:
    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        url = path if path.startswith("http") else f"{self.base}/{path.lstrip('/')}"
        data = None
        hdrs = {"Accept": FHIR_JSON}
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = FHIR_JSON
        hdrs.update(headers or {})
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                raw = resp.read()
                status, rh = resp.status, dict(resp.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            status, rh = e.code, dict(e.headers)
        text = raw.decode("utf-8", "replace")
        try:
            parsed: Any = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            parsed = text
        return status, rh, parsed

    def get(self, path: str, **kw: Any) -> Any:
        status, _, body = self.request("GET", path, **kw)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {str(body)[:500]}")
        return body

    def search(self, path: str) -> list[dict[str, Any]]:
        """All entries of a search, following Bundle.link next."""
        entries: list[dict[str, Any]] = []
        bundle = self.get(path)
        while True:
            entries.extend(bundle.get("entry", []))
            nxt = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
            if not nxt:
                return entries
            bundle = self.get(nxt[0])


def ids(entries: list[dict[str, Any]], rtype: str | None = None) -> set[str]:
    return {
        e["resource"]["id"]
        for e in entries
        if rtype is None or e["resource"]["resourceType"] == rtype
    }


def run_checks(c: Client) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []
    tag = f"verify-{uuid.uuid4().hex[:8]}"
    tagq = urllib.parse.quote(f"http://example.org/tags|{tag}")
    meta = {"tag": [{"system": "http://example.org/tags", "code": tag}]}
    pa, pb = f"pa-{tag}", f"pb-{tag}"

    def check(name: str, fn: Any) -> None:
        try:
            detail = fn() or ""
            results.append((name, True, str(detail)))
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            results.append((name, False, f"{type(e).__name__}: {e}"))
        ok, detail = results[-1][1], results[-1][2]
        print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail[:200]}", flush=True)

    def metadata() -> str:
        cs = c.get("metadata")
        assert cs["fhirVersion"] == "4.0.1", cs["fhirVersion"]
        return f"{cs['software']['name']} {cs['software']['version']}"

    check("metadata", metadata)

    def put_client_id() -> str:
        for pid, gender in ((pa, "female"), (pb, "male")):
            status, _, body = c.request(
                "PUT",
                f"Patient/{pid}",
                {"resourceType": "Patient", "id": pid, "meta": meta, "gender": gender,
                 "birthDate": "1980-05-01",
                 "identifier": [{"system": "http://example.org/mrn", "value": pid}]},
            )
            assert status in (200, 201), (status, body)
        numeric = str(900000000 + int(uuid.uuid4().int % 1000000))
        status, _, body = c.request(
            "PUT", f"Patient/{numeric}", {"resourceType": "Patient", "id": numeric, "meta": meta})
        assert status in (200, 201), (status, body)
        return f"Patient/{pa}, Patient/{pb}, Patient/{numeric}"

    check("PUT Patient with client-assigned id (alphanumeric and numeric)", put_client_id)

    time.sleep(0.5)
    now = time.time()
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    time.sleep(0.5)

    def transaction() -> str:
        pu, cu1, cu2 = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
        sct = {"system": "http://snomed.info/sct", "code": "55464009",
               "display": "Systemic lupus erythematosus"}
        icd = {"system": "http://hl7.org/fhir/sid/icd-10", "code": "M32.1",
               "display": "Systemic lupus erythematosus with organ involvement"}
        entries = [
            {"fullUrl": pu, "resource": {"resourceType": "Patient", "meta": meta, "gender": "female",
                                         "identifier": [{"system": "http://example.org/mrn",
                                                         "value": f"tx-{tag}"}]},
             "request": {"method": "POST", "url": "Patient",
                         "ifNoneExist": f"identifier=http://example.org/mrn|tx-{tag}"}},
            {"fullUrl": cu1, "resource": {"resourceType": "Condition", "meta": meta,
                                          "code": {"coding": [sct], "text": "Lupus"},
                                          "subject": {"reference": pu}},
             "request": {"method": "POST", "url": "Condition"}},
            {"fullUrl": cu2, "resource": {"resourceType": "Condition", "meta": meta,
                                          "code": {"coding": [icd]},
                                          "subject": {"reference": f"Patient/{pb}"}},
             "request": {"method": "POST", "url": "Condition"}},
        ]
        for i, (subj, val, date) in enumerate(
            [(pu, 1.2, "2026-02-01"), (f"Patient/{pa}", 0.9, "2026-03-01"),
             (f"Patient/{pb}", 2.0, "2025-06-01"), (f"Patient/{pa}", 1.1, "2026-04-01")]
        ):
            entries.append({
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {"resourceType": "Observation", "meta": meta, "status": "final",
                             "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
                             "subject": {"reference": subj}, "effectiveDateTime": date,
                             "valueQuantity": {"value": val, "unit": "mg/dL"}},
                "request": {"method": "POST", "url": "Observation"}})
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        status, _, resp = c.request("POST", "", bundle)
        assert status == 200 and resp["type"] == "transaction-response", (status, resp)
        codes = [e["response"]["status"] for e in resp["entry"]]
        assert all(s.startswith("201") for s in codes), codes
        tx_pid = resp["entry"][0]["response"]["location"].split("/")[1]
        cond = c.get(resp["entry"][1]["response"]["location"].rsplit("/_history", 1)[0])
        assert cond["subject"]["reference"] == f"Patient/{tx_pid}", cond["subject"]
        # same transaction again: the conditional create must match, not duplicate
        status, _, resp2 = c.request("POST", "", bundle)
        assert status == 200, (status, resp2)
        assert resp2["entry"][0]["response"]["status"].startswith("200"), resp2["entry"][0]
        found = c.search(f"Patient?identifier=http://example.org/mrn|tx-{tag}")
        assert len(found) == 1, len(found)
        state["tx_pid"] = tx_pid
        return f"urn:uuid refs resolved; ifNoneExist twice -> 1 Patient ({tx_pid})"

    state: dict[str, Any] = {}
    check("transaction Bundle (urn:uuid refs) + conditional create ifNoneExist twice", transaction)

    def code_or() -> str:
        e = c.search(f"Condition?_tag={tagq}&code=http://snomed.info/sct|55464009,"
                     "http://hl7.org/fhir/sid/icd-10|M32.1")
        assert len(e) == 4, len(e)  # 2 per transaction run
        return f"{len(e)} Conditions"

    check("token search with OR list: Condition?code=sct|55464009,icd-10|M32.1", code_or)

    def code_text() -> str:
        # HAPI without Lucene: :text is a case-insensitive *prefix* match against
        # CodeableConcept.text and each Coding.display (FHIR string-search semantics).
        e = c.search(f"Condition?_tag={tagq}&code:text=lupus")  # code.text "Lupus"
        assert len(e) == 2, len(e)
        e2 = c.search(f"Condition?_tag={tagq}&code:text=systemic%20lupus")  # display prefix
        assert len(e2) == 4, len(e2)
        e3 = c.search(f"Condition?_tag={tagq}&code:text=erythematosus")  # not a prefix
        assert len(e3) == 0, len(e3)
        return "lupus -> 2 (text), 'systemic lupus' -> 4 (text+display), 'erythematosus' -> 0"

    check("token :text modifier (prefix match): Condition?code:text=lupus", code_text)

    def obs_multi() -> str:
        e = c.search(f"Observation?patient={pa},{pb}&code=http://loinc.org|2160-0&date=ge2026-01-01")
        assert len(e) == 4, len(e)  # pa: 2 per run (date ok); pb's is 2025
        subjects = {x["resource"]["subject"]["reference"] for x in e}
        assert subjects == {f"Patient/{pa}"}, subjects
        return f"{len(e)} Observations"

    check("Observation?patient=a,b&code=...&date=ge2026-01-01", obs_multi)

    def chained() -> str:
        e = c.search(f"Condition?_tag={tagq}&subject.gender=female")
        assert len(e) == 2 and all(
            x["resource"]["subject"]["reference"] == f"Patient/{state['tx_pid']}" for x in e), e
        e2 = c.search(f"Condition?_tag={tagq}&subject:Patient.gender=male")
        assert len(e2) == 2, len(e2)
        return "female -> 2, male -> 2"

    check("chained search Condition?subject.gender=female", chained)

    def include() -> str:
        b = c.get(f"Condition?_tag={tagq}&_include=Condition:subject")
        modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in b["entry"]}
        assert ("Patient", "include") in modes and ("Condition", "match") in modes, modes
        return str(sorted(modes))

    check("_include=Condition:subject", include)

    def revinclude() -> str:
        b = c.get(f"Patient?_id={pb}&_revinclude=Condition:subject")
        types = sorted(e["resource"]["resourceType"] for e in b["entry"])
        assert types == ["Condition", "Condition", "Patient"], types
        return str(types)

    check("Patient?_revinclude=Condition:subject", revinclude)

    def last_updated() -> str:
        e = c.search(f"Patient?_tag={tagq}&_lastUpdated=gt{since}")
        got = ids(e)
        assert pa not in got and state["tx_pid"] in got, got
        e_all = c.search(f"Patient?_tag={tagq}&_lastUpdated=gt2000-01-01")
        assert len(e_all) == 4, len(e_all)
        return f"gt{since}: {len(got)} of {len(e_all)}"

    check("_lastUpdated=gt...", last_updated)

    def elements() -> str:
        b = c.get(f"Condition?_tag={tagq}&_elements=code,subject")
        r = b["entry"][0]["resource"]
        assert "code" in r and "subject" in r and "meta" in r
        assert "clinicalStatus" not in r and "recordedDate" not in r
        tags = [t.get("code") for t in r["meta"].get("tag", [])]
        assert "SUBSETTED" in tags, tags
        return f"keys={sorted(r)}"

    check("_elements=code,subject", elements)

    def paging() -> str:
        first = c.get(f"Observation?_tag={tagq}&_count=2")
        assert len(first["entry"]) == 2
        pages = 1
        allids = ids(first["entry"])
        b = first
        while True:
            nxt = [link["url"] for link in b.get("link", []) if link["relation"] == "next"]
            if not nxt:
                break
            assert nxt[0].startswith(c.base), nxt[0]
            b = c.get(nxt[0])
            pages += 1
            allids |= ids(b["entry"])
        assert len(allids) == 8 and pages == 4, (len(allids), pages)
        default = c.get("metadata") and c.get(f"Observation?_tag={tagq}")
        return f"_count=2 -> {pages} pages, {len(allids)} distinct; default page has " \
               f"{len(default.get('entry', []))}"

    check("paging via Bundle.link next (_count=2)", paging)

    def cond_update() -> str:
        ident = f"http://example.org/study|{tag}"
        rs = {"resourceType": "ResearchSubject", "meta": meta, "status": "candidate",
              "identifier": [{"system": "http://example.org/study", "value": tag}],
              "study": {"display": "Lupus trial"},
              "individual": {"reference": f"Patient/{pa}"}}
        s1, _, b1 = c.request("PUT", f"ResearchSubject?identifier={urllib.parse.quote(ident)}", rs)
        rs["status"] = "eligible"
        s2, _, b2 = c.request("PUT", f"ResearchSubject?identifier={urllib.parse.quote(ident)}", rs)
        assert s1 == 201 and s2 == 200, (s1, s2, b1, b2)
        found = c.search(f"ResearchSubject?identifier={urllib.parse.quote(ident)}")
        assert len(found) == 1 and found[0]["resource"]["status"] == "eligible", found
        assert found[0]["resource"]["meta"]["versionId"] == "2"
        return f"201 then 200; one ResearchSubject v2 ({b1['id']})"

    check("conditional update PUT ResearchSubject?identifier=sys|val twice", cond_update)

    def batch() -> str:
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Patient/{pa}"}},
            {"request": {"method": "GET", "url": f"Condition?subject=Patient/{pb}"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist-xyz"}},
            {"resource": {"resourceType": "Patient", "meta": meta},
             "request": {"method": "POST", "url": "Patient"}},
        ]}
        status, _, resp = c.request("POST", "", bundle)
        assert status == 200 and resp["type"] == "batch-response", (status, resp)
        codes = [e["response"]["status"].split()[0] for e in resp["entry"]]
        assert codes == ["200", "200", "404", "201"], codes
        return f"statuses {codes}"

    check("batch Bundle", batch)

    def everything() -> str:
        e = c.search(f"Patient/{pa}/$everything")
        types = sorted({x["resource"]["resourceType"] for x in e})
        assert "Observation" in types and "Patient" in types, types
        return f"{len(e)} resources: {types}"

    check("Patient/{id}/$everything", everything)

    def bulk(kind: str, path: str) -> str:
        status, h, body = c.request(
            "GET", path, headers={"Prefer": "respond-async", "Accept": FHIR_JSON})
        assert status == 202, (status, body)
        loc = h.get("Content-Location") or h.get("content-location")
        assert loc, h
        deadline = time.time() + 180
        while True:
            status, h2, body = c.request("GET", loc)
            if status == 200:
                break
            assert status == 202, (status, body)
            assert time.time() < deadline, "bulk export did not finish in 180 s"
            time.sleep(1)
        outputs = body["output"]
        counts: dict[str, int] = {}
        for out in outputs:
            req = urllib.request.Request(out["url"], headers={"Accept": "application/fhir+ndjson"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                lines = [ln for ln in resp.read().decode().splitlines() if ln.strip()]
            for ln in lines:
                json.loads(ln)
            counts[out["type"]] = counts.get(out["type"], 0) + len(lines)
        assert counts.get("Patient", 0) >= 1, counts
        return f"{kind}: {counts}"

    check("bulk $export (system) kick-off -> poll -> NDJSON",
          lambda: bulk("system", f"$export?_type=Patient,Condition,Observation&_typeFilter="
                                 f"{urllib.parse.quote('Patient?_tag=' + tagq)}"))
    check("bulk Patient/$export", lambda: bulk("patient", "Patient/$export?_type=Patient,Condition"))

    def group_export() -> str:
        grp = {"resourceType": "Group", "meta": meta, "type": "person", "actual": True,
               "member": [{"entity": {"reference": f"Patient/{pa}"}},
                          {"entity": {"reference": f"Patient/{pb}"}}]}
        status, _, g = c.request("POST", "Group", grp)
        assert status == 201, (status, g)
        return bulk("group", f"Group/{g['id']}/$export?_type=Patient,Observation")

    check("bulk Group/{id}/$export", group_export)

    def delete_tag() -> str:
        total = 0
        for rtype in ("Observation", "Condition", "ResearchSubject", "Group", "Patient"):
            status, _, body = c.request("DELETE", f"{rtype}?_tag={tagq}")
            assert status == 200, (rtype, status, body)
            total += 1
        left = c.search(f"Patient?_tag={tagq}") + c.search(f"Observation?_tag={tagq}")
        assert not left, len(left)
        return "all tagged resources deleted"

    check("conditional delete of many: DELETE Type?_tag=...", delete_tag)

    def expunge() -> str:
        params = {"resourceType": "Parameters", "parameter": [
            {"name": "expungeDeletedResources", "valueBoolean": True},
            {"name": "expungePreviousVersions", "valueBoolean": True}]}
        status, _, body = c.request("POST", "Observation/$expunge", params)
        assert status == 200, (status, body)
        return "Observation/$expunge ok"

    check("$expunge (type level)", expunge)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", help="an already running server; default: start one")
    args = ap.parse_args(argv)
    server = None
    if args.base_url:
        base = args.base_url
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import server as hapi  # noqa: PLC0415

        t0 = time.monotonic()
        server = hapi.start(hapi.free_port())
        print(f"server up at {server.base_url} in {time.monotonic() - t0:.1f} s", flush=True)
        base = server.base_url
    try:
        results = run_checks(Client(base))
    finally:
        if server is not None:
            server.stop()
    failed = [r for r in results if not r[1]]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
