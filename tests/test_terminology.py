"""Code matching: exact, ICD-10/ATC prefixes, national extensions, longest-name-first text."""

from pathlib import Path

import pytest

from fhir_matcher.terminology.valuesets import ICD10, ICD10CM, SNOMED, ValueSetLibrary
from fhir_matcher.trial import load_trial

ROOT = Path(__file__).resolve().parent.parent

TEXT_MATCH = "https://fhir-matcher.org/fhir/StructureDefinition/text-match"


def vs(vs_id, contains, mode=None):
    data = {"resourceType": "ValueSet", "id": vs_id, "title": vs_id, "status": "active", "expansion": {"contains": contains}}
    if mode:
        data["extension"] = [{"url": TEXT_MATCH, "valueCode": mode}]
    return data


def name(value, lang="en"):
    return {"language": lang, "value": value}


@pytest.fixture(scope="module")
def lib():
    lib = ValueSetLibrary()
    lib.add(vs("sle", [{"system": SNOMED, "code": "55464009", "display": "Systemic lupus erythematosus",
                        "designation": [name("SLE"), name("系统性红斑狼疮", "zh")],
                        "contains": [{"system": ICD10, "code": "M32"}, {"system": ICD10CM, "code": "M32"}]}]))
    lib.add(vs("dm", [{"system": SNOMED, "code": "396230008", "display": "Dermatomyositis",
                       "contains": [{"system": ICD10, "code": "M33.0"}, {"system": ICD10, "code": "M33.1"}]}]))
    lib.add(vs("epilepsy", [{"system": SNOMED, "code": "84757009", "display": "Epilepsy",
                             "designation": [name("癫痫", "zh")], "contains": [{"system": ICD10, "code": "G40"}]}]))
    lib.add(vs("steroids", [
        {"abstract": True, "display": "methylprednisolone", "designation": [name("甲泼尼龙", "zh")],
         "contains": [{"system": "http://www.whocc.no/atc", "code": "H02AB04"}]},
        {"abstract": True, "display": "prednisolone", "designation": [name("泼尼松龙", "zh"), name("泼尼龙", "zh")]},
        {"abstract": True, "display": "prednisone", "designation": [name("泼尼松", "zh")],
         "contains": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "8640"}]},
    ], mode="always"))
    lib.add(vs("atc-class", [{"abstract": True, "display": "systemic corticosteroids",
                              "contains": [{"system": "http://www.whocc.no/atc", "code": "H02AB"}]}]))
    lib.add(vs("pos", [{"display": "Positive", "designation": [name("detected"), name("阳性", "zh"), name("检出", "zh")]}], mode="always"))
    lib.add(vs("neg", [{"display": "Negative", "designation": [name("not detected"), name("阴性", "zh"), name("未检出", "zh")]}], mode="always"))
    return lib


def cc(*codings, text=None):
    out = {"coding": [{"system": s, "code": c, **({"display": d} if d else {})} for s, c, d in codings]}
    if text:
        out["text"] = text
    return out


def ids(matches):
    return sorted({(m.concept.valueset, m.by) for m in matches})


def test_exact_snomed(lib):
    assert ids(lib.match(cc((SNOMED, "55464009", None)))) == [("sle", "code")]


def test_snomed_code_not_in_set_does_not_match(lib):
    assert lib.match(cc((SNOMED, "200938002", "Discoid lupus erythematosus"))) == []


@pytest.mark.parametrize("system, code", [
    (ICD10, "M32"), (ICD10, "M32.1"), (ICD10CM, "M32.14"),
    ("http://www.nhc.gov.cn/fhir/CodeSystem/icd-10-cn", "M32.100x001"),
    ("urn:oid:2.16.156.10011.2.3.3.11", "M32.900"), (ICD10, "M321"),
])
def test_icd10_category_and_extensions(lib, system, code):
    assert ids(lib.match(cc((system, code, None)), ["sle"])) in ([("sle", "prefix")], [("sle", "code")])


def test_icd10_sibling_not_matched(lib):
    assert lib.match(cc((ICD10, "M33.2", "Polymyositis"))) == []  # polymyositis is not dermatomyositis
    assert ids(lib.match(cc((ICD10, "M33.10", None)))) == [("dm", "prefix")]
    assert lib.match(cc((ICD10, "M3", None))) == []


def test_atc_prefix(lib):
    found = lib.match(cc(("http://www.whocc.no/atc", "H02AB04", None)))
    assert {(m.concept.valueset, m.concept.display) for m in found} == {("steroids", "methylprednisolone"), ("atc-class", "systemic corticosteroids")}


def test_local_code_matches_by_name_in_chinese(lib):
    found = lib.match(cc(("http://hospital.example.cn/dx", "D0012", "系统性红斑狼疮")))
    assert ids(found) == [("sle", "text")]


def test_text_only_english_on_word_boundaries(lib):
    assert ids(lib.match({"text": "Systemic lupus erythematosus, flare"})) == [("sle", "text")]
    assert lib.match({"text": "SLEEP apnoea"}) == []


def test_uncoded_sets_ignore_text_when_standard_code_present(lib):
    # A SNOMED-coded family history must not match epilepsy by its words.
    assert lib.match(cc((SNOMED, "160314009", "Family history of epilepsy"))) == []


def test_always_sets_read_rxnorm_clinical_drug_names(lib):
    found = lib.match(cc(("http://www.nlm.nih.gov/research/umls/rxnorm", "198145", "predniSONE 10 MG Oral Tablet")))
    assert [(m.concept.display, m.by) for m in found] == [("prednisone", "text")]


@pytest.mark.parametrize("text, expected", [
    ("甲泼尼龙片 4mg", "methylprednisolone"),
    ("泼尼松龙片", "prednisolone"),
    ("醋酸泼尼松片 5mg", "prednisone"),
    ("Methylprednisolone 4 MG Oral Tablet", "methylprednisolone"),
])
def test_longest_name_first(lib, text, expected):
    assert [m.concept.display for m in lib.match({"text": text}, ["steroids"])] == [expected]


@pytest.mark.parametrize("text, vs_id", [("阳性", "pos"), ("阴性", "neg"), ("未检出", "neg"), ("检出", "pos"),
                                         ("Not detected", "neg"), ("DETECTED", "pos")])
def test_results_negation_by_longest_name(lib, text, vs_id):
    assert [m.concept.valueset for m in lib.match_text(text, ["pos", "neg"])] == [vs_id]


def test_excluded_names_block_a_shorter_name_inside_them():
    lib = ValueSetLibrary()
    lib.add(vs("crea", [{"display": "creatinine", "designation": [
        name("肌酐", "zh"),
        {"use": {"system": "https://fhir-matcher.org/fhir/CodeSystem/designation-use", "code": "exclude-name"}, "value": "尿肌酐"},
    ]}]))
    assert [m.concept.display for m in lib.match({"text": "血肌酐"})] == ["creatinine"]
    assert lib.match({"text": "尿肌酐"}) == []


def test_bundled_value_sets_block_lookalike_tests(trial):
    lib = trial.valuesets
    for text, vs_id in [("糖化血红蛋白", "lab-hemoglobin"), ("Hemoglobin A1c", "lab-hemoglobin"), ("尿肌酐", "lab-creatinine"),
                        ("乙肝疫苗接种", "excl-hepatitis-b"), ("直接胆红素", "lab-bilirubin-total"), ("妊娠试验", "excl-pregnancy")]:
        assert lib.match({"text": text}, [vs_id]) == [], text
    assert lib.match({"text": "血红蛋白"}, ["lab-hemoglobin"])
    assert lib.match({"text": "总胆红素"}, ["lab-bilirubin-total"])


def test_bundled_value_sets_are_valid_r4():
    import json
    from pathlib import Path

    from fhir.resources.R4B.valueset import ValueSet

    files = sorted((Path(__file__).resolve().parent.parent / "valuesets").glob("*.json"))
    assert len(files) >= 40
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        ValueSet.model_validate(data)
        assert data["id"] == f.stem and data["url"].endswith("/" + f.stem)


def test_trie_pattern_finds_what_the_longest_first_alternation_finds():
    """Names are found by a trie-shaped pattern; it must agree with the plain alternation
    (longest name first, word edges for names starting or ending with a letter or digit)."""
    import random

    from fhir_matcher.terminology.valuesets import ValueSetLibrary, normalize_text

    names = ["lupus", "lupus nephritis", "systemic lupus erythematosus", "sle", "sles", "ra", "a", "ab", "abc", "abd",
             "c3", "c3 low", "(c3)", "-x-", "狼疮", "系统性红斑狼疮", "狼疮性肾炎", "il-6", "il", "6", "x.y", "x.yz", "é", "ée"]
    trial = load_trial(ROOT / "fhir_matcher" / "trials" / "cd19-baff-car-t.toml")
    names += random.Random(3).sample(sorted(trial.valuesets._names), 300)
    rng = random.Random(7)
    seps = [" ", "", "-", "x", "1", ", ", "(", ")", "狼", "."]
    texts = list(names)
    for _ in range(1500):
        parts = [rng.choice(names) for _ in range(rng.randint(1, 4))]
        text = "".join(p + rng.choice(seps) for p in parts)
        if rng.random() < 0.4 and len(text) > 2:
            i = rng.randrange(len(text))
            text = text[:i] + text[i + 1 :]
        texts.append(normalize_text(text))
    for subset in (names, names[:24], [n for n in names if not n[0].isalnum()], ["lupus"], []):
        trie, plain = ValueSetLibrary._alternation(subset), ValueSetLibrary._sorted_alternation(subset)
        for text in texts:
            assert [m.span() for m in trie.finditer(text)] == [m.span() for m in plain.finditer(text)], (text, len(subset))
