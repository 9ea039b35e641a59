"""Synthetic FHIR R4 populations for benchmarks and end-to-end tests: ``fhir-matcher synth``.

``generate(n, seed, out)`` writes ``n`` made-up patients (no real person's data) as Bulk Data
NDJSON (one file per resource type) or, with ``bundles=True``, as transaction Bundles of about
50 patients. Output is streamed: one patient is built, written and forgotten at a time, so a
million patients need no more memory than one. The same (n, seed, anchor) always gives
byte-identical files; patient ``k`` is the same whatever ``n`` is (each patient has its own
random stream).

The data is meant to be as awkward as hospital data, so a benchmark does not flatter the
matcher: about 20 resources per patient with a long tail; three "site styles" per patient
(US: SNOMED CT + ICD-10-CM, RxNorm clinical drugs, US units; EU: ICD-10 WHO, ATC, SI units;
CN: national ICD-10 clinical edition codes, local lab and drug codes with Chinese names,
text-only units) and some text-only diagnoses; labs spread over years whose most recent set
is 0-120 days old, with values crossing the protocol thresholds, comparators, missing units,
preliminary and entered-in-error results; medication histories with doses, tapers, ended
and active drugs; decoy diagnoses (discoid lupus, polymyositis, optic neuritis, MS) and
exclusions (neuro, cardiac, pregnancy, HIV, hepatitis B/C, prior CAR-T, deceased) at
configurable prevalences. Every code that should match a value set is one the bundled
value sets contain.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

try:  # orjson is ~10x faster; the stdlib gives the same bytes (compact, UTF-8, key order kept)
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


Json = dict[str, Any]

DEFAULT_ANCHOR = date(2026, 11, 24)
PATIENTS_PER_BUNDLE = 50

# Fraction of patients with each feature. "target" is among everyone; "pregnancy" among women
# aged 18-45; "labs" is the fraction of patients outside the target cohort with a lab history;
# "text-only" the fraction of diagnoses recorded as free text only.
DEFAULT_PREVALENCE: dict[str, float] = {
    "target": 0.10,
    "neuro": 0.03,
    "cardiac": 0.03,
    "pregnancy": 0.01,
    "hiv": 0.005,
    "hbv": 0.02,
    "hbv-resolved": 0.02,
    "hcv": 0.01,
    "car-t": 0.002,
    "deceased": 0.01,
    "labs": 0.25,
    "text-only": 0.05,
}
PREVALENCE_HELP = {
    "target": "target disease (SLE, lupus nephritis, systemic sclerosis, dermatomyositis, NMOSD)",
    "neuro": "epilepsy, stroke, brain injury or cerebral haemorrhage (any date)",
    "cardiac": "long QT, atrial fibrillation or heart failure (condition or QTc)",
    "pregnancy": "currently pregnant, among women aged 18-45",
    "hiv": "HIV infection",
    "hbv": "active hepatitis B",
    "hbv-resolved": "resolved hepatitis B (must not exclude)",
    "hcv": "active hepatitis C",
    "car-t": "prior CAR-T therapy (half of them within 3 months)",
    "deceased": "deceased",
    "labs": "patients outside the cohort with a lab history",
    "text-only": "diagnoses recorded as free text only",
}
TARGET_SPLIT = (("sle", 0.50), ("ln", 0.20), ("ssc", 0.12), ("dm", 0.10), ("nmosd", 0.08))
STYLE_SPLIT = (("us", 0.40), ("eu", 0.25), ("cn", 0.35))

NDJSON_TYPES = (
    "Patient", "Condition", "Observation", "MedicationStatement", "MedicationRequest",
    "Procedure", "Encounter", "Medication",
)
_OWN_FILE = re.compile(r"^(?:(?:%s)\.ndjson|bundle-\d{4,}\.json)$" % "|".join(NDJSON_TYPES))
_OWN_CONTENT = re.compile(rb'^\{"resourceType":"[A-Za-z]+","id":"s\d+-')  # how every file synth writes begins

# ---------------------------------------------------------------------------- systems

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICDCM = "http://hl7.org/fhir/sid/icd-10-cm"
ICDCN = "http://www.nhc.gov.cn/fhir/CodeSystem/icd-10-cn"
UCUM = "http://unitsofmeasure.org"
CPT = "http://www.ama-assn.org/go/cpt"
CN_DX = "http://hospital.example.cn/fhir/CodeSystem/diagnosis"
CN_LAB = "http://hospital.example.cn/fhir/CodeSystem/lab"
CN_DRUG = "http://hospital.example.cn/fhir/CodeSystem/drug"
CN_PROC = "http://hospital.example.cn/fhir/CodeSystem/procedure"
MRN = {
    "us": "http://hospital.example.org/fhir/sid/mrn",
    "eu": "http://klinikum.example.eu/fhir/sid/patient-id",
    "cn": "http://hospital.example.cn/fhir/sid/mrn",
}
_NS = uuid.UUID("6f1c3b1e-3d1a-5b8e-9a57-1f0e5c9d2a44")


def _c(system: str, code: str, display: str) -> Json:
    return {"system": system, "code": code, "display": display}


def _cc(*codings: Json, text: str | None = None) -> Json:
    out: Json = {"coding": list(codings)}
    if text:
        out["text"] = text
    return out


def _t(text: str) -> Json:
    return {"text": text}


# ---------------------------------------------------------------------------- conditions
# key -> style -> CodeableConcept variants. TEXT[key] = (English, Chinese) name for text-only records.

CONDITIONS: dict[str, dict[str, list[Json]]] = {
    # ---- target diseases
    "sle": {
        "us": [
            _cc(_c(SCT, "55464009", "Systemic lupus erythematosus"), _c(ICDCM, "M32.9", "Systemic lupus erythematosus, unspecified"), text="Systemic lupus erythematosus"),
            _cc(_c(SCT, "239887007", "Systemic lupus erythematosus with organ/system involvement"), _c(ICDCM, "M32.10", "Systemic lupus erythematosus, organ or system involvement unspecified")),
            _cc(_c(ICDCM, "M32.19", "Other organ or system involvement in systemic lupus erythematosus")),
        ],
        "eu": [
            _cc(_c(ICD10, "M32.9", "Systemic lupus erythematosus, unspecified")),
            _cc(_c(ICD10, "M32.1", "Systemic lupus erythematosus with organ or system involvement")),
            _cc(_c(ICD10, "M32.8", "Other forms of systemic lupus erythematosus")),
        ],
        "cn": [
            _cc(_c(ICDCN, "M32.100x001", "系统性红斑狼疮伴器官或系统受累"), text="系统性红斑狼疮伴器官或系统受累"),
            _cc(_c(ICDCN, "M32.900", "系统性红斑狼疮"), text="系统性红斑狼疮"),
            _cc(_c(CN_DX, "D0012", "系统性红斑狼疮"), text="系统性红斑狼疮"),
        ],
    },
    "ln": {
        "us": [
            _cc(_c(SCT, "68815009", "Systemic lupus erythematosus glomerulonephritis syndrome"), _c(ICDCM, "M32.14", "Glomerular disease in systemic lupus erythematosus")),
            _cc(_c(SCT, "36402006", "Systemic lupus erythematosus glomerulonephritis syndrome, World Health Organization class IV"), _c(ICDCM, "M32.14", "Glomerular disease in systemic lupus erythematosus")),
        ],
        "eu": [
            _cc(_c(ICD10, "M32.1", "Systemic lupus erythematosus with organ or system involvement"), _c(ICD10, "N08.5", "Glomerular disorders in systemic connective tissue disorders"), text="Lupus nephritis"),
        ],
        "cn": [
            _cc(_c(ICDCN, "M32.101", "狼疮性肾炎"), text="狼疮性肾炎"),
            _cc(_c(CN_DX, "D0013", "系统性红斑狼疮性肾炎"), text="系统性红斑狼疮性肾炎"),
        ],
    },
    "ssc": {
        "us": [
            _cc(_c(SCT, "89155008", "Systemic sclerosis"), _c(ICDCM, "M34.9", "Systemic sclerosis, unspecified")),
            _cc(_c(SCT, "128460000", "Systemic sclerosis, diffuse"), _c(ICDCM, "M34.0", "Progressive systemic sclerosis")),
        ],
        "eu": [
            _cc(_c(ICD10, "M34.0", "Progressive systemic sclerosis")),
            _cc(_c(ICD10, "M34.1", "CR(E)ST syndrome")),
            _cc(_c(ICD10, "M34.9", "Systemic sclerosis, unspecified")),
        ],
        "cn": [
            _cc(_c(ICDCN, "M34.900", "系统性硬化症"), text="系统性硬化症"),
            _cc(_c(ICDCN, "M34.000", "进行性系统性硬化症"), text="进行性系统性硬化症"),
        ],
    },
    "dm": {
        "us": [
            _cc(_c(SCT, "396230008", "Dermatomyositis"), _c(ICDCM, "M33.10", "Other dermatomyositis, organ involvement unspecified")),
            _cc(_c(SCT, "402425006", "Adult onset dermatomyositis"), _c(ICDCM, "M33.19", "Other dermatomyositis with other organ involvement")),
        ],
        "eu": [_cc(_c(ICD10, "M33.1", "Other dermatomyositis"))],
        "cn": [
            _cc(_c(ICDCN, "M33.100", "皮肌炎"), text="皮肌炎"),
            _cc(_c(ICDCN, "M33.101", "无肌病性皮肌炎"), text="无肌病性皮肌炎"),
        ],
    },
    "nmosd": {
        "us": [_cc(_c(SCT, "25044007", "Neuromyelitis optica"), _c(ICDCM, "G36.0", "Neuromyelitis optica [Devic]"))],
        "eu": [_cc(_c(ICD10, "G36.0", "Neuromyelitis optica [Devic]"))],
        "cn": [
            _cc(_c(ICDCN, "G36.000", "视神经脊髓炎"), text="视神经脊髓炎"),
            _cc(_c(CN_DX, "D0301", "视神经脊髓炎谱系疾病"), text="视神经脊髓炎谱系疾病"),
        ],
    },
    # ---- exclusions
    "epilepsy": {
        "us": [_cc(_c(SCT, "84757009", "Epilepsy"), _c(ICDCM, "G40.909", "Epilepsy, unspecified, not intractable, without status epilepticus"))],
        "eu": [_cc(_c(ICD10, "G40.9", "Epilepsy, unspecified"))],
        "cn": [_cc(_c(ICDCN, "G40.900", "癫痫"), text="癫痫")],
    },
    "stroke": {
        "us": [
            _cc(_c(SCT, "432504007", "Cerebral infarction"), _c(ICDCM, "I63.9", "Cerebral infarction, unspecified")),
            _cc(_c(ICDCM, "Z86.73", "Personal history of transient ischemic attack (TIA), and cerebral infarction without residual deficits")),
        ],
        "eu": [_cc(_c(ICD10, "I63.9", "Cerebral infarction, unspecified")), _cc(_c(ICD10, "G45.9", "Transient cerebral ischaemic attack, unspecified"))],
        "cn": [_cc(_c(ICDCN, "I63.900", "脑梗死"), text="脑梗死"), _cc(_c(CN_DX, "D0511", "脑梗死"), text="脑梗死")],
    },
    "tbi": {
        "us": [_cc(_c(SCT, "127295002", "Traumatic brain injury"), _c(ICDCM, "S06.9X0A", "Unspecified intracranial injury without loss of consciousness, initial encounter"))],
        "eu": [_cc(_c(ICD10, "S06.0", "Concussion"))],
        "cn": [_cc(_c(ICDCN, "S06.000", "脑震荡"), text="脑震荡")],
    },
    "ich": {
        "us": [_cc(_c(SCT, "274100004", "Cerebral hemorrhage"), _c(ICDCM, "I61.9", "Nontraumatic intracerebral hemorrhage, unspecified"))],
        "eu": [_cc(_c(ICD10, "I61.9", "Intracerebral haemorrhage, unspecified"))],
        "cn": [_cc(_c(ICDCN, "I61.900", "脑出血"), text="脑出血")],
    },
    "longqt": {
        "us": [_cc(_c(SCT, "9651007", "Long QT syndrome"), _c(ICDCM, "I45.81", "Long QT syndrome"))],
        "eu": [_cc(_c(SCT, "111975006", "Prolonged QT interval"))],
        "cn": [_cc(_c(CN_DX, "D0702", "QT间期延长"), text="QT间期延长")],
    },
    "af": {
        "us": [_cc(_c(SCT, "49436004", "Atrial fibrillation"), _c(ICDCM, "I48.91", "Unspecified atrial fibrillation"))],
        "eu": [_cc(_c(ICD10, "I48.0", "Paroxysmal atrial fibrillation")), _cc(_c(ICD10, "I48.1", "Persistent atrial fibrillation"))],
        "cn": [_cc(_c(ICDCN, "I48.x00", "心房颤动"), text="心房颤动")],
    },
    "hf": {
        "us": [_cc(_c(SCT, "84114007", "Heart failure"), _c(ICDCM, "I50.9", "Heart failure, unspecified"))],
        "eu": [_cc(_c(ICD10, "I50.0", "Congestive heart failure"))],
        "cn": [_cc(_c(ICDCN, "I50.900", "心力衰竭"), text="心力衰竭")],
    },
    "pregnancy": {
        "us": [_cc(_c(SCT, "77386006", "Pregnant"), _c(ICDCM, "Z33.1", "Pregnant state, incidental"))],
        "eu": [_cc(_c(ICD10, "Z33", "Pregnant state, incidental"))],
        "cn": [_cc(_c(ICDCN, "Z33.x00", "妊娠状态"), text="妊娠状态")],
    },
    "hiv": {
        "us": [_cc(_c(SCT, "86406008", "Human immunodeficiency virus infection"), _c(ICDCM, "B20", "Human immunodeficiency virus [HIV] disease")), _cc(_c(ICDCM, "Z21", "Asymptomatic human immunodeficiency virus [HIV] infection status"))],
        "eu": [_cc(_c(ICD10, "B24", "Unspecified human immunodeficiency virus [HIV] disease"))],
        "cn": [_cc(_c(ICDCN, "B24.x01", "艾滋病"), text="艾滋病")],
    },
    "hbv": {
        "us": [_cc(_c(SCT, "61977001", "Chronic type B viral hepatitis"), _c(ICDCM, "B18.1", "Chronic viral hepatitis B without delta-agent"))],
        "eu": [_cc(_c(ICD10, "B18.1", "Chronic viral hepatitis B without delta-agent"))],
        "cn": [_cc(_c(ICDCN, "B18.100", "慢性乙型病毒性肝炎"), text="慢性乙型病毒性肝炎")],
    },
    "hcv": {
        "us": [_cc(_c(SCT, "128302006", "Chronic hepatitis C"), _c(ICDCM, "B18.2", "Chronic viral hepatitis C"))],
        "eu": [_cc(_c(ICD10, "B18.2", "Chronic viral hepatitis C"))],
        "cn": [_cc(_c(ICDCN, "B18.200", "慢性丙型病毒性肝炎"), text="慢性丙型病毒性肝炎")],
    },
}

# Noise: common conditions and decoys that must match no target or exclusion value set.
NOISE: dict[str, dict[str, list[Json]]] = {
    "htn": {"us": [_cc(_c(SCT, "38341003", "Hypertensive disorder, systemic arterial"), _c(ICDCM, "I10", "Essential (primary) hypertension"))],
            "eu": [_cc(_c(ICD10, "I10", "Essential (primary) hypertension"))], "cn": [_cc(_c(ICDCN, "I10.x00", "高血压"), text="高血压")]},
    "t2dm": {"us": [_cc(_c(SCT, "44054006", "Diabetes mellitus type 2"), _c(ICDCM, "E11.9", "Type 2 diabetes mellitus without complications"))],
             "eu": [_cc(_c(ICD10, "E11.9", "Type 2 diabetes mellitus without complications"))], "cn": [_cc(_c(ICDCN, "E11.900", "2型糖尿病"), text="2型糖尿病")]},
    "asthma": {"us": [_cc(_c(SCT, "195967001", "Asthma"), _c(ICDCM, "J45.909", "Unspecified asthma, uncomplicated"))],
               "eu": [_cc(_c(ICD10, "J45.9", "Asthma, unspecified"))], "cn": [_cc(_c(ICDCN, "J45.900", "支气管哮喘"), text="支气管哮喘")]},
    "gerd": {"us": [_cc(_c(SCT, "235595009", "Gastroesophageal reflux disease"), _c(ICDCM, "K21.9", "Gastro-esophageal reflux disease without esophagitis"))],
             "eu": [_cc(_c(ICD10, "K21.9", "Gastro-oesophageal reflux disease without oesophagitis"))], "cn": [_cc(_c(ICDCN, "K21.900", "胃食管反流病"), text="胃食管反流病")]},
    "hld": {"us": [_cc(_c(SCT, "55822004", "Hyperlipidemia"), _c(ICDCM, "E78.5", "Hyperlipidemia, unspecified"))],
            "eu": [_cc(_c(ICD10, "E78.5", "Hyperlipidaemia, unspecified"))], "cn": [_cc(_c(ICDCN, "E78.500", "高脂血症"), text="高脂血症")]},
    "oa": {"us": [_cc(_c(SCT, "396275006", "Osteoarthritis"), _c(ICDCM, "M19.90", "Unspecified osteoarthritis, unspecified site"))],
           "eu": [_cc(_c(ICD10, "M19.9", "Arthrosis, unspecified"))], "cn": [_cc(_c(ICDCN, "M19.900", "骨关节炎"), text="骨关节炎")]},
    "depression": {"us": [_cc(_c(SCT, "35489007", "Depressive disorder"), _c(ICDCM, "F32.A", "Depression, unspecified"))],
                   "eu": [_cc(_c(ICD10, "F32.9", "Depressive episode, unspecified"))], "cn": [_cc(_c(ICDCN, "F32.900", "抑郁发作"), text="抑郁发作")]},
    "hypothyroid": {"us": [_cc(_c(SCT, "40930008", "Hypothyroidism"), _c(ICDCM, "E03.9", "Hypothyroidism, unspecified"))],
                    "eu": [_cc(_c(ICD10, "E03.9", "Hypothyroidism, unspecified"))], "cn": [_cc(_c(ICDCN, "E03.900", "甲状腺功能减退症"), text="甲状腺功能减退症")]},
    "obesity": {"us": [_cc(_c(SCT, "414916001", "Obesity"), _c(ICDCM, "E66.9", "Obesity, unspecified"))],
                "eu": [_cc(_c(ICD10, "E66.9", "Obesity, unspecified"))], "cn": [_cc(_c(ICDCN, "E66.900", "肥胖症"), text="肥胖症")]},
    "anemia": {"us": [_cc(_c(SCT, "271737000", "Anemia"), _c(ICDCM, "D64.9", "Anemia, unspecified"))],
               "eu": [_cc(_c(ICD10, "D64.9", "Anaemia, unspecified"))], "cn": [_cc(_c(ICDCN, "D64.900", "贫血"), text="贫血")]},
    "lbp": {"us": [_cc(_c(SCT, "279039007", "Low back pain"), _c(ICDCM, "M54.50", "Low back pain, unspecified"))],
            "eu": [_cc(_c(ICD10, "M54.5", "Low back pain"))], "cn": [_cc(_c(ICDCN, "M54.500", "腰痛"), text="腰痛")]},
    "rhinitis": {"us": [_cc(_c(SCT, "61582004", "Allergic rhinitis"), _c(ICDCM, "J30.9", "Allergic rhinitis, unspecified"))],
                 "eu": [_cc(_c(ICD10, "J30.4", "Allergic rhinitis, unspecified"))], "cn": [_cc(_c(ICDCN, "J30.400", "变应性鼻炎"), text="变应性鼻炎")]},
    "migraine": {"us": [_cc(_c(SCT, "37796009", "Migraine"), _c(ICDCM, "G43.909", "Migraine, unspecified, not intractable, without status migrainosus"))],
                 "eu": [_cc(_c(ICD10, "G43.9", "Migraine, unspecified"))], "cn": [_cc(_c(ICDCN, "G43.900", "偏头痛"), text="偏头痛")]},
    "osteoporosis": {"us": [_cc(_c(SCT, "64859006", "Osteoporosis"), _c(ICDCM, "M81.0", "Age-related osteoporosis without current pathological fracture"))],
                     "eu": [_cc(_c(ICD10, "M81.9", "Osteoporosis, unspecified"))], "cn": [_cc(_c(ICDCN, "M81.900", "骨质疏松"), text="骨质疏松")]},
    "ckd": {"us": [_cc(_c(SCT, "709044004", "Chronic kidney disease"), _c(ICDCM, "N18.9", "Chronic kidney disease, unspecified"))],
            "eu": [_cc(_c(ICD10, "N18.9", "Chronic kidney disease, unspecified"))], "cn": [_cc(_c(ICDCN, "N18.900", "慢性肾脏病"), text="慢性肾脏病")]},
    "uti": {"us": [_cc(_c(SCT, "68566005", "Urinary tract infectious disease"), _c(ICDCM, "N39.0", "Urinary tract infection, site not specified"))],
            "eu": [_cc(_c(ICD10, "N39.0", "Urinary tract infection, site not specified"))], "cn": [_cc(_c(ICDCN, "N39.000", "泌尿道感染"), text="泌尿道感染")]},
    # decoys: close to a target or exclusion, and in none of them
    "ra": {"us": [_cc(_c(SCT, "69896004", "Rheumatoid arthritis"), _c(ICDCM, "M06.9", "Rheumatoid arthritis, unspecified"))],
           "eu": [_cc(_c(ICD10, "M06.9", "Rheumatoid arthritis, unspecified"))], "cn": [_cc(_c(ICDCN, "M06.900", "类风湿关节炎"), text="类风湿关节炎")]},
    "sjogren": {"us": [_cc(_c(SCT, "83901003", "Sjogren's syndrome"), _c(ICDCM, "M35.00", "Sjogren syndrome, unspecified"))],
                "eu": [_cc(_c(ICD10, "M35.0", "Sicca syndrome [Sjögren]"))], "cn": [_cc(_c(ICDCN, "M35.000", "干燥综合征"), text="干燥综合征")]},
    "discoid": {"us": [_cc(_c(ICDCM, "L93.0", "Discoid lupus erythematosus"))],
                "eu": [_cc(_c(ICD10, "L93.0", "Discoid lupus erythematosus"))], "cn": [_cc(_c(ICDCN, "L93.000", "盘状红斑狼疮"), text="盘状红斑狼疮")]},
    "polymyositis": {"us": [_cc(_c(ICDCM, "M33.20", "Polymyositis, organ involvement unspecified"))],
                     "eu": [_cc(_c(ICD10, "M33.2", "Polymyositis"))], "cn": [_cc(_c(ICDCN, "M33.200", "多发性肌炎"), text="多发性肌炎")]},
    "morphea": {"us": [_cc(_c(ICDCM, "L94.0", "Localized scleroderma [morphea]"))],
                "eu": [_cc(_c(ICD10, "L94.0", "Localized scleroderma [morphea]"))], "cn": [_cc(_c(ICDCN, "L94.000", "局限性硬皮病"), text="局限性硬皮病")]},
    "ms": {"us": [_cc(_c(SCT, "24700007", "Multiple sclerosis"), _c(ICDCM, "G35", "Multiple sclerosis"))],
           "eu": [_cc(_c(ICD10, "G35", "Multiple sclerosis"))], "cn": [_cc(_c(ICDCN, "G35.x00", "多发性硬化"), text="多发性硬化")]},
    "optic-neuritis": {"us": [_cc(_c(ICDCM, "H46.9", "Unspecified optic neuritis"))],
                       "eu": [_cc(_c(ICD10, "H46", "Optic neuritis"))], "cn": [_cc(_c(ICDCN, "H46.x00", "视神经炎"), text="视神经炎")]},
    "convulsion": {"us": [_cc(_c(ICDCM, "R56.9", "Unspecified convulsions"))],
                   "eu": [_cc(_c(ICD10, "R56.8", "Other and unspecified convulsions"))], "cn": [_cc(_c(ICDCN, "R56.900", "抽搐"), text="抽搐")]},
    "pvc": {"us": [_cc(_c(SCT, "17338001", "Ventricular premature beats"), _c(ICDCM, "I49.3", "Ventricular premature depolarization"))],
            "eu": [_cc(_c(ICD10, "I49.3", "Premature ventricular depolarization"))], "cn": [_cc(_c(ICDCN, "I49.300", "室性早搏"), text="室性早搏")]},
}
# (key, weight) for noise diagnoses; decoys are rarer
NOISE_WEIGHTS = (
    ("htn", 20), ("hld", 14), ("t2dm", 10), ("gerd", 9), ("asthma", 8), ("oa", 8), ("depression", 7),
    ("hypothyroid", 6), ("obesity", 7), ("anemia", 5), ("lbp", 8), ("rhinitis", 7), ("migraine", 5),
    ("osteoporosis", 4), ("ckd", 3), ("uti", 6), ("ra", 2), ("sjogren", 1), ("discoid", 0.6),
    ("polymyositis", 0.4), ("morphea", 0.4), ("ms", 0.5), ("optic-neuritis", 0.4), ("convulsion", 1.2), ("pvc", 2),
)
TEXT: dict[str, tuple[str, str]] = {
    "sle": ("Systemic lupus erythematosus", "系统性红斑狼疮"),
    "ln": ("Lupus nephritis", "狼疮性肾炎"),
    "ssc": ("Systemic sclerosis", "系统性硬化症"),
    "dm": ("Dermatomyositis", "皮肌炎"),
    "nmosd": ("Neuromyelitis optica spectrum disorder", "视神经脊髓炎谱系疾病"),
    "epilepsy": ("Epilepsy", "癫痫"),
    "stroke": ("History of stroke", "脑梗死"),
    "tbi": ("Traumatic brain injury", "颅脑损伤"),
    "ich": ("Intracerebral hemorrhage", "脑出血"),
    "longqt": ("Long QT syndrome", "QT间期延长"),
    "af": ("Paroxysmal atrial fibrillation", "阵发性房颤"),
    "hf": ("Congestive heart failure", "心力衰竭"),
    "pregnancy": ("Pregnancy", "妊娠"),
    "hiv": ("HIV infection", "艾滋病"),
    "hbv": ("Chronic hepatitis B", "慢性乙型肝炎"),
    "hcv": ("Chronic hepatitis C", "慢性丙型肝炎"),
    "htn": ("Essential hypertension", "高血压"),
    "t2dm": ("Type 2 diabetes", "2型糖尿病"),
    "asthma": ("Asthma", "哮喘"),
    "gerd": ("Reflux esophagitis", "反流性食管炎"),
}

# ---------------------------------------------------------------------------- status codes

_CS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_VS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CLINICAL = {k: {"coding": [{"system": _CS, "code": k}]} for k in ("active", "recurrence", "relapse", "inactive", "remission", "resolved")}
VERIFICATION = {k: {"coding": [{"system": _VS, "code": k}]} for k in ("confirmed", "provisional", "differential", "refuted", "entered-in-error", "unconfirmed")}
_CC = "http://terminology.hl7.org/CodeSystem/condition-category"
COND_CATEGORY = {
    "problem-list-item": [{"coding": [_c(_CC, "problem-list-item", "Problem List Item")]}],
    "encounter-diagnosis": [{"coding": [_c(_CC, "encounter-diagnosis", "Encounter Diagnosis")]}],
}
_OC = "http://terminology.hl7.org/CodeSystem/observation-category"
CAT_LAB = [{"coding": [_c(_OC, "laboratory", "Laboratory")]}]
CAT_VITAL = [{"coding": [_c(_OC, "vital-signs", "Vital Signs")]}]
CAT_PROC = [{"coding": [_c(_OC, "procedure", "Procedure")]}]
_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ENC_CLASS = {"AMB": _c(_ACT, "AMB", "ambulatory"), "EMER": _c(_ACT, "EMER", "emergency"), "IMP": _c(_ACT, "IMP", "inpatient encounter")}
ENC_TYPE = {
    "AMB": [_cc(_c(SCT, "185349003", "Encounter for check up (procedure)"), text="Outpatient visit")],
    "EMER": [_cc(_c(SCT, "50849002", "Emergency room admission (procedure)"), text="Emergency visit")],
    "IMP": [_cc(_c(SCT, "32485007", "Hospital admission (procedure)"), text="Inpatient stay")],
}
ENC_TYPE_CN = {
    "AMB": [_cc(_c("http://hospital.example.cn/fhir/CodeSystem/visit-type", "MZ", "门诊"), text="门诊")],
    "EMER": [_cc(_c("http://hospital.example.cn/fhir/CodeSystem/visit-type", "JZ", "急诊"), text="急诊")],
    "IMP": [_cc(_c("http://hospital.example.cn/fhir/CodeSystem/visit-type", "ZY", "住院"), text="住院")],
}
DOSE_ORDERED = {"coding": [_c("http://terminology.hl7.org/CodeSystem/dose-rate-type", "ordered", "Ordered")]}
ROUTES = {
    "oral": {"us": _cc(_c(SCT, "26643006", "Oral route"), text="oral"), "eu": _cc(_c(SCT, "26643006", "Oral route"), text="oral"), "cn": _t("口服")},
    "iv": {"us": _cc(_c(SCT, "47625008", "Intravenous route"), text="intravenous"), "eu": _cc(_c(SCT, "47625008", "Intravenous route"), text="i.v."), "cn": _t("静脉滴注")},
    "sc": {"us": _cc(_c(SCT, "34206005", "Subcutaneous route"), text="subcutaneous"), "eu": _cc(_c(SCT, "34206005", "Subcutaneous route"), text="s.c."), "cn": _t("皮下注射")},
    "inh": {"us": _cc(_c(SCT, "18679011000001101", "Inhalation"), text="inhalation"), "eu": _cc(_c(SCT, "447694001", "Respiratory tract route"), text="inhaled"), "cn": _t("吸入")},
}

# ---------------------------------------------------------------------------- units and labs

def _u(code: str, text: str | None = None) -> Json:
    return {"unit": text or code, "system": UCUM, "code": code}


U = {
    "10*3/uL": _u("10*3/uL"), "/uL": _u("/uL", "cells/uL"), "10*9/L": _u("10*9/L"), "g/dL": _u("g/dL"), "g/L": _u("g/L"),
    "mmol/L": _u("mmol/L"), "mg/dL": _u("mg/dL"), "umol/L": _u("umol/L"), "U/L": _u("U/L"), "IU/L": _u("[IU]/L", "IU/L"),
    "ukat/L": _u("ukat/L"), "ms": _u("ms"), "s": _u("s"), "mm[Hg]": _u("mm[Hg]"), "/min": _u("/min", "beats/minute"),
    "kg": _u("kg"), "kg/m2": _u("kg/m2"), "cm": _u("cm"), "[IU]/mL": _u("[IU]/mL", "IU/mL"),
    "x10^9/L": {"unit": "x10^9/L"}, "×10⁹/L": {"unit": "×10⁹/L"}, "10^9/L": {"unit": "10^9/L"}, "μmol/L": {"unit": "μmol/L"},
    "mg": _u("mg"), "g": _u("g"), "ug": _u("ug", "mcg"), "tbl": _u("{tbl}", "tablet"), "片": {"unit": "片"}, "粒": {"unit": "粒"},
}

ANALYTES = ("lym", "neu", "hb", "plt", "cre", "alt", "ast", "tbil")
# analyte -> style -> list of (weight, code CodeableConcept, unit variants [(weight, factor, decimals, unit)])
# factor converts the canonical value (10^9/L, g/L, umol/L, U/L, ms) to the reported unit.
def _l(code: str, display: str) -> Json:
    return _c(LOINC, code, display)


def _cn(code: str, name: str, loinc: Json | None) -> list[Json]:
    """A Chinese local lab code, with and without a LOINC mapping."""
    local = _c(CN_LAB, code, name)
    out = [_cc(local, text=name)]
    if loinc:
        out.append(_cc(local, loinc, text=name))
    return out


_CN_COUNT_UNITS = [(5, 1, 2, U["x10^9/L"]), (4, 1, 2, U["×10⁹/L"]), (2, 1, 2, U["10^9/L"]), (2, 1, 2, U["10*9/L"])]
LABS: dict[str, dict[str, tuple[list[Json], list[tuple[float, float, int, Json]]]]] = {
    "lym": {
        "us": ([_cc(_l("731-0", "Lymphocytes [#/volume] in Blood by Automated count"))], [(18, 1, 2, U["10*3/uL"]), (2, 1000, 0, U["/uL"])]),
        "eu": ([_cc(_l("26474-7", "Lymphocytes [#/volume] in Blood"))], [(1, 1, 2, U["10*9/L"])]),
        "cn": (_cn("L0101", "淋巴细胞绝对值", _l("731-0", "Lymphocytes [#/volume] in Blood by Automated count")), _CN_COUNT_UNITS),
    },
    "neu": {
        "us": ([_cc(_l("751-8", "Neutrophils [#/volume] in Blood by Automated count"))], [(18, 1, 2, U["10*3/uL"]), (2, 1000, 0, U["/uL"])]),
        "eu": ([_cc(_l("26499-4", "Neutrophils [#/volume] in Blood"))], [(1, 1, 2, U["10*9/L"])]),
        "cn": (_cn("L0102", "中性粒细胞绝对值", _l("751-8", "Neutrophils [#/volume] in Blood by Automated count")), _CN_COUNT_UNITS),
    },
    "hb": {
        "us": ([_cc(_l("718-7", "Hemoglobin [Mass/volume] in Blood"))], [(1, 0.1, 1, U["g/dL"])]),
        "eu": ([_cc(_l("718-7", "Hemoglobin [Mass/volume] in Blood"))], [(1, 1, 0, U["g/L"])]),
        "cn": (_cn("L0103", "血红蛋白", _l("718-7", "Hemoglobin [Mass/volume] in Blood")), [(1, 1, 0, U["g/L"])]),
    },
    "plt": {
        "us": ([_cc(_l("777-3", "Platelets [#/volume] in Blood by Automated count"))], [(1, 1, 0, U["10*3/uL"])]),
        "eu": ([_cc(_l("26515-7", "Platelets [#/volume] in Blood"))], [(1, 1, 0, U["10*9/L"])]),
        "cn": (_cn("L0104", "血小板计数", _l("777-3", "Platelets [#/volume] in Blood by Automated count")), _CN_COUNT_UNITS),
    },
    "cre": {
        "us": ([_cc(_l("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"))], [(1, 1 / 88.42, 2, U["mg/dL"])]),
        "eu": ([_cc(_l("14682-9", "Creatinine [Moles/volume] in Serum or Plasma"))], [(1, 1, 0, U["umol/L"])]),
        "cn": (_cn("L0201", "肌酐", _l("14682-9", "Creatinine [Moles/volume] in Serum or Plasma")), [(1, 1, 1, U["μmol/L"]), (1, 1, 1, U["umol/L"])]),
    },
    "alt": {
        "us": ([_cc(_l("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma"))], [(9, 1, 0, U["U/L"]), (1, 1, 0, U["IU/L"])]),
        "eu": ([_cc(_l("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma"))], [(4, 1, 0, U["U/L"]), (1, 1 / 60, 2, U["ukat/L"])]),
        "cn": (_cn("L0202", "丙氨酸氨基转移酶", _l("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma")), [(1, 1, 0, U["U/L"])]),
    },
    "ast": {
        "us": ([_cc(_l("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma"))], [(9, 1, 0, U["U/L"]), (1, 1, 0, U["IU/L"])]),
        "eu": ([_cc(_l("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma"))], [(4, 1, 0, U["U/L"]), (1, 1 / 60, 2, U["ukat/L"])]),
        "cn": (_cn("L0203", "天门冬氨酸氨基转移酶", _l("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma")), [(1, 1, 0, U["U/L"])]),
    },
    "tbil": {
        "us": ([_cc(_l("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma"))], [(1, 1 / 17.1, 1, U["mg/dL"])]),
        "eu": ([_cc(_l("14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma"))], [(1, 1, 0, U["umol/L"])]),
        "cn": (_cn("L0204", "总胆红素", _l("14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma")), [(1, 1, 1, U["μmol/L"]), (1, 1, 1, U["umol/L"])]),
    },
    "qtc": {
        "us": ([_cc(_l("8636-3", "Q-T interval corrected"))], [(1, 1, 0, U["ms"])]),
        "eu": ([_cc(_l("8636-3", "Q-T interval corrected")), _cc(_l("76634-5", "Q-T interval corrected by Fridericia formula"))], [(1, 1, 0, U["ms"])]),
        "cn": (_cn("L0301", "QTc间期", _l("8636-3", "Q-T interval corrected")), [(7, 1, 0, U["ms"]), (3, 0.001, 2, U["s"])]),
    },
}
HB_MMOL = (_cc(_l("59260-0", "Hemoglobin [Moles/volume] in Blood")), 1 / 16.114, 1, U["mmol/L"])
# thresholds a tail value crosses (canonical units), and the exact boundary values labs report
TAIL = {
    "lym": (0.03, 0.04, lambda r: round(r.uniform(0.05, 0.29), 2), 0.3),
    "neu": (0.015, 0.02, lambda r: round(r.uniform(0.1, 0.49), 2), 0.5),
    "hb": (0.01, 0.015, lambda r: round(r.uniform(42, 59)), 60),
    "plt": (0.015, 0.025, lambda r: round(r.uniform(6, 29)), 30),
    "cre": (0.02, 0.04, lambda r: round(r.uniform(180, 480)), 176.8),
    "alt": (0.015, 0.025, None, None),
    "ast": (0.01, 0.015, None, None),
    "tbil": (0.01, 0.015, lambda r: round(r.uniform(52, 130)), 51),
}
POSITIVE = {
    "us": {"valueCodeableConcept": _cc(_c(SCT, "10828004", "Positive"), text="Positive")},
    "eu": {"valueCodeableConcept": _cc(_c(SCT, "10828004", "Positive"), text="positiv")},
    "cn": {"valueString": "阳性"},
}
NEGATIVE = {
    "us": {"valueCodeableConcept": _cc(_c(SCT, "260385009", "Negative"), text="Negative")},
    "eu": {"valueCodeableConcept": _cc(_c(SCT, "260385009", "Negative"), text="negativ")},
    "cn": {"valueString": "阴性"},
}
SEROLOGY = {
    "hbsag": {"us": _cc(_l("5196-1", "Hepatitis B virus surface Ag [Presence] in Serum or Plasma by Immunoassay")),
              "eu": _cc(_l("5196-1", "Hepatitis B virus surface Ag [Presence] in Serum or Plasma by Immunoassay"), text="HBsAg"),
              "cn": _cc(_c(CN_LAB, "L0501", "乙肝表面抗原"), text="乙肝表面抗原")},
    "hiv": {"us": _cc(_l("56888-1", "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay")),
            "eu": _cc(_l("56888-1", "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay"), text="HIV Ag/Ab"),
            "cn": _cc(_c(CN_LAB, "L0503", "HIV抗体"), text="HIV抗体")},
    "hcg": {"us": _cc(_l("2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine")),
            "eu": _cc(_l("2118-8", "Choriogonadotropin (pregnancy test) [Presence] in Serum or Plasma")),
            "cn": _cc(_c(CN_LAB, "L0601", "人绒毛膜促性腺激素"), _l("2118-8", "Choriogonadotropin (pregnancy test) [Presence] in Serum or Plasma"), text="人绒毛膜促性腺激素")},
}
HBV_DNA = {"us": _cc(_l("29615-2", "Hepatitis B virus DNA [#/volume] (viral load) in Serum or Plasma by NAA with probe detection")),
           "eu": _cc(_l("42595-9", "Hepatitis B virus DNA [Units/volume] (viral load) in Serum or Plasma by NAA with probe detection")),
           "cn": _cc(_c(CN_LAB, "L0502", "乙肝病毒DNA"), text="乙肝病毒DNA")}
HCV_RNA = {"us": _cc(_l("11011-4", "Hepatitis C virus RNA [Units/volume] (viral load) in Serum or Plasma by NAA with probe detection")),
           "eu": _cc(_l("11011-4", "Hepatitis C virus RNA [Units/volume] (viral load) in Serum or Plasma by NAA with probe detection")),
           "cn": _cc(_c(CN_LAB, "L0504", "丙肝病毒RNA"), text="丙肝病毒RNA")}
PREG_STATUS = _cc(_l("82810-3", "Pregnancy status"))
PREGNANT = {"valueCodeableConcept": _cc(_c(SCT, "77386006", "Pregnant"))}
NOT_PREGNANT = {"valueCodeableConcept": _cc(_c(SCT, "60001007", "Not pregnant"))}
VITALS = {
    "bp": _cc(_l("85354-9", "Blood pressure panel with all children optional"), text="Blood pressure"),
    "sys": _cc(_l("8480-6", "Systolic blood pressure")),
    "dia": _cc(_l("8462-4", "Diastolic blood pressure")),
    "hr": _cc(_l("8867-4", "Heart rate")),
    "wt": _cc(_l("29463-7", "Body weight")),
    "ht": _cc(_l("8302-2", "Body height")),
    "bmi": _cc(_l("39156-5", "Body mass index (BMI) [Ratio]")),
}

# ---------------------------------------------------------------------------- drugs
# Per style a list of products: (concept, strength mg per tablet or None, shared Medication key or None).

def _rx(code: str, display: str) -> Json:
    return _cc(_c(RXN, code, display), text=display)


def _atc(code: str, display: str, text: str) -> Json:
    return _cc(_c(ATC, code, display), text=text)


def _cnd(code: str, name: str) -> Json:
    return _cc(_c(CN_DRUG, code, name), text=name)


DRUGS: dict[str, Json] = {
    # glucocorticoids: "pe" = mg equal to 5 mg prednisone
    "prednisone": {"class": "glucocorticoid", "pe": 5, "route": "oral",
                   "us": [(_rx("312617", "prednisone 5 MG Oral Tablet"), 5, "pred5"), (_rx("198145", "prednisone 10 MG Oral Tablet"), 10, None),
                          (_rx("312615", "prednisone 20 MG Oral Tablet"), 20, None), (_rx("198146", "prednisone 2.5 MG Oral Tablet"), 2.5, None)],
                   "eu": [(_atc("H02AB07", "prednisone", "Prednison 5 mg Tabletten"), 5, None)],
                   "cn": [(_cnd("YP0101", "醋酸泼尼松片 5mg"), 5, None)]},
    "prednisolone": {"class": "glucocorticoid", "pe": 5, "route": "oral",
                     "us": [(_rx("198142", "prednisolone 5 MG Oral Tablet"), 5, None)],
                     "eu": [(_atc("H02AB06", "prednisolone", "Prednisolon 5 mg Tabletten"), 5, None), (_atc("H02AB06", "prednisolone", "Prednisolone 1 mg tablets"), 1, None)],
                     "cn": [(_cnd("YP0102", "泼尼松龙片 5mg"), 5, None)]},
    "methylprednisolone": {"class": "glucocorticoid", "pe": 4, "route": "oral",
                           "us": [(_rx("259966", "methylprednisolone 4 MG Oral Tablet"), 4, None), (_rx("328161", "methylprednisolone 16 MG Oral Tablet"), 16, None)],
                           "eu": [(_atc("H02AB04", "methylprednisolone", "Medrol 4 mg"), 4, None), (_atc("H02AB04", "methylprednisolone", "Urbason 16 mg"), 16, None)],
                           "cn": [(_cnd("YP0457", "甲泼尼龙片 4mg"), 4, "mp4cn"), (_cnd("YP0458", "甲泼尼龙片 16mg"), 16, None)]},
    "dexamethasone": {"class": "glucocorticoid", "pe": 0.75, "route": "oral",
                      "us": [(_rx("197582", "dexamethasone 4 MG Oral Tablet"), 4, None)],
                      "eu": [(_atc("H02AB02", "dexamethasone", "Fortecortin 4 mg"), 4, None)],
                      "cn": [(_cnd("YP0120", "醋酸地塞米松片 0.75mg"), 0.75, None)]},
    "mp-pulse": {"class": "glucocorticoid", "pe": 4, "route": "iv",
                 "us": [(_cc(_c(RXN, "6902", "methylprednisolone"), text="methylprednisolone sodium succinate 500 MG Injection"), None, None)],
                 "eu": [(_atc("H02AB04", "methylprednisolone", "Urbason solubile 500 mg"), None, None)],
                 "cn": [(_cnd("YP0460", "注射用甲泼尼龙琥珀酸钠 40mg"), None, None)]},
    # immunosuppressants
    "mmf": {"class": "immunosuppressant", "route": "oral",
            "us": [(_rx("200060", "mycophenolate mofetil 500 MG Oral Tablet"), 500, "mmf500"), (_rx("199058", "mycophenolate mofetil 250 MG Oral Capsule"), 250, None)],
            "eu": [(_atc("L04AA06", "mycophenolic acid", "CellCept 500 mg Filmtabletten"), 500, None), (_atc("L04AA06", "mycophenolic acid", "Myfortic 360 mg"), 360, None)],
            "cn": [(_cnd("YP0601", "吗替麦考酚酯胶囊 0.25g"), 250, None), (_cnd("YP0602", "吗替麦考酚酯分散片 0.5g"), 500, None)]},
    "aza": {"class": "immunosuppressant", "route": "oral",
            "us": [(_rx("197388", "azathioprine 50 MG Oral Tablet"), 50, "aza50")],
            "eu": [(_atc("L04AX01", "azathioprine", "Imurek 50 mg"), 50, None)],
            "cn": [(_cnd("YP0610", "硫唑嘌呤片 50mg"), 50, None)]},
    "tac": {"class": "immunosuppressant", "route": "oral",
            "us": [(_rx("198377", "tacrolimus 1 MG Oral Capsule"), 1, "tac1")],
            "eu": [(_atc("L04AD02", "tacrolimus", "Prograf 1 mg Hartkapseln"), 1, None)],
            "cn": [(_cnd("YP0620", "他克莫司胶囊 1mg"), 1, None)]},
    "mtx": {"class": "immunosuppressant", "route": "oral",
            "us": [(_rx("105585", "methotrexate 2.5 MG Oral Tablet"), 2.5, "mtx25")],
            "eu": [(_atc("L04AX03", "methotrexate", "Methotrexat 7.5 mg Tabletten"), 7.5, None)],
            "cn": [(_cnd("YP0630", "甲氨蝶呤片 2.5mg"), 2.5, None)]},
    "cyc": {"class": "immunosuppressant", "route": "iv",
            "us": [(_rx("1734917", "cyclophosphamide 500 MG Injection"), None, None)],
            "eu": [(_atc("L01AA01", "cyclophosphamide", "Endoxan 500 mg"), None, None)],
            "cn": [(_cnd("YP0640", "注射用环磷酰胺 0.2g"), None, None)]},
    "lef": {"class": "immunosuppressant", "route": "oral",
            "us": [(_rx("205285", "leflunomide 20 MG Oral Tablet"), 20, None)],
            "eu": [(_atc("L04AA13", "leflunomide", "Arava 20 mg"), 20, None)],
            "cn": [(_cnd("YP0650", "来氟米特片 10mg"), 10, None)]},
    # immunomodulators
    "hcq": {"class": "immunomodulator", "route": "oral",
            "us": [(_cc(_c(RXN, "5521", "hydroxychloroquine"), text="hydroxychloroquine sulfate 200 MG Oral Tablet"), 200, "hcq")],
            "eu": [(_atc("P01BA02", "hydroxychloroquine", "Quensyl 200 mg"), 200, None), (_atc("P01BA02", "hydroxychloroquine", "Plaquenil 200 mg"), 200, None)],
            "cn": [(_cnd("YP0701", "羟氯喹片 0.2g"), 200, None), (_cnd("YP0702", "硫酸羟氯喹片 0.1g"), 100, None)]},
    "ivig": {"class": "immunomodulator", "route": "iv",
             "us": [(_t("immune globulin intravenous (human) 10% 10 GM/100ML Injection"), None, None)],
             "eu": [(_atc("J06BA02", "immunoglobulins, normal human, for intravascular adm.", "Privigen 100 mg/ml"), None, None)],
             "cn": [(_cnd("YP0710", "静注人免疫球蛋白(pH4) 2.5g"), None, None)]},
    # biologics
    "belimumab": {"class": "biologic", "route": "sc",
                  "us": [(_t("belimumab 200 MG/ML Auto-Injector"), None, None)],
                  "eu": [(_atc("L04AG04", "belimumab", "Benlysta 200 mg Injektionslösung"), None, None)],
                  "cn": [(_cnd("YP0801", "注射用贝利尤单抗 120mg"), None, None)]},
    "rituximab": {"class": "biologic", "route": "iv",
                  "us": [(_rx("1657862", "10 ML rituximab 10 MG/ML Injection"), None, "rtx")],
                  "eu": [(_atc("L01FA01", "rituximab", "MabThera 500 mg"), None, None)],
                  "cn": [(_cnd("YP0802", "利妥昔单抗注射液 100mg"), None, None)]},
    "telitacicept": {"class": "biologic", "route": "sc",
                     "us": [(_t("telitacicept 80 MG Injection"), None, None)],
                     "eu": [(_t("Telitacicept 80 mg"), None, None)],
                     "cn": [(_cnd("YP0803", "注射用泰它西普 80mg"), None, None)]},
    "anifrolumab": {"class": "biologic", "route": "iv",
                    "us": [(_t("anifrolumab-fnia 300 MG/2ML Injection"), None, None)],
                    "eu": [(_t("Saphnelo 300 mg (anifrolumab)"), None, None)],
                    "cn": [(_cnd("YP0804", "阿尼鲁单抗注射液 300mg"), None, None)]},
    "tocilizumab": {"class": "biologic", "route": "iv",
                    "us": [(_rx("1657979", "10 ML tocilizumab 20 MG/ML Injection"), None, None)],
                    "eu": [(_atc("L04AC07", "tocilizumab", "RoActemra 20 mg/ml"), None, None)],
                    "cn": [(_cnd("YP0805", "托珠单抗注射液 80mg"), None, None)]},
    "inebilizumab": {"class": "biologic", "route": "iv",
                     "us": [(_t("inebilizumab-cdon 100 MG/10ML Injection"), None, None)],
                     "eu": [(_t("Uplizna 100 mg (inebilizumab)"), None, None)],
                     "cn": [(_cnd("YP0806", "伊奈利珠单抗注射液 100mg"), None, None)]},
    "satralizumab": {"class": "biologic", "route": "sc",
                     "us": [(_t("satralizumab-mwge 120 MG/ML Prefilled Syringe"), None, None)],
                     "eu": [(_t("Enspryng 120 mg (satralizumab)"), None, None)],
                     "cn": [(_cnd("YP0807", "萨特利珠单抗注射液 120mg"), None, None)]},
    # not systemic, not in any drug class value set
    "budesonide-inh": {"class": None, "route": "inh",
                       "us": [(_cc(_c(RXN, "19831", "budesonide"), text="budesonide 0.18 MG/ACTUAT Dry Powder Inhaler"), None, None)],
                       "eu": [(_atc("R03BA02", "budesonide", "Pulmicort Turbohaler 200 Mikrogramm"), None, None)],
                       "cn": [(_cnd("YP0901", "布地奈德吸入气雾剂 200μg"), None, None)]},
}
# regimens: drug -> [(weight, dose value, dose unit key or None for mg, frequency, period, periodUnit)]
# glucocorticoid doses are chosen as mg/day separately.
REGIMENS: dict[str, list[tuple[float, float, str, int, float, str]]] = {
    "mmf": [(5, 1000, "mg", 2, 1, "d"), (3, 750, "mg", 2, 1, "d"), (2, 500, "mg", 2, 1, "d")],
    "aza": [(5, 50, "mg", 2, 1, "d"), (3, 100, "mg", 1, 1, "d"), (2, 50, "mg", 1, 1, "d")],
    "tac": [(6, 1, "mg", 2, 1, "d"), (3, 2, "mg", 2, 1, "d")],
    "mtx": [(6, 15, "mg", 1, 1, "wk"), (3, 10, "mg", 1, 1, "wk"), (2, 20, "mg", 1, 1, "wk")],
    "cyc": [(6, 500, "mg", 1, 2, "wk"), (3, 750, "mg", 1, 1, "mo")],
    "lef": [(1, 20, "mg", 1, 1, "d")],
    "hcq": [(6, 200, "mg", 2, 1, "d"), (4, 200, "mg", 1, 1, "d")],
    "ivig": [(1, 2, "g", 1, 1, "mo")],
    "belimumab": [(6, 200, "mg", 1, 1, "wk"), (4, 600, "mg", 1, 4, "wk")],
    "rituximab": [(6, 1000, "mg", 1, 2, "wk"), (4, 500, "mg", 1, 6, "mo")],
    "telitacicept": [(1, 160, "mg", 1, 1, "wk")],
    "anifrolumab": [(1, 300, "mg", 1, 4, "wk")],
    "tocilizumab": [(1, 560, "mg", 1, 4, "wk")],
    "inebilizumab": [(1, 300, "mg", 1, 6, "mo")],
    "satralizumab": [(1, 120, "mg", 1, 4, "wk")],
    "budesonide-inh": [(1, 200, "ug", 2, 1, "d")],
    "mp-pulse": [(1, 500, "mg", 1, 1, "d")],
}
# Treatment plans per target: (probability, [(weight, drug)])
PLANS: dict[str, list[tuple[float, list[tuple[float, str]]]]] = {
    "sle": [(0.92, [(5, "prednisone"), (4, "methylprednisolone"), (1, "prednisolone")]), (0.78, [(1, "hcq")]),
            (0.50, [(4, "mmf"), (3, "aza"), (2, "tac"), (1, "mtx"), (1, "cyc"), (0.5, "lef")]),
            (0.18, [(5, "belimumab"), (2, "telitacicept"), (2, "rituximab"), (1, "anifrolumab")])],
    "ln": [(0.95, [(5, "prednisone"), (4, "methylprednisolone"), (1, "prednisolone")]), (0.70, [(1, "hcq")]),
           (0.85, [(6, "mmf"), (3, "cyc"), (3, "tac")]), (0.20, [(5, "belimumab"), (3, "rituximab"), (1, "telitacicept")])],
    "ssc": [(0.55, [(1, "prednisone"), (1, "methylprednisolone")]), (0.75, [(6, "mmf"), (3, "mtx"), (2, "cyc")]),
            (0.10, [(1, "hcq")]), (0.12, [(1, "tocilizumab"), (1, "rituximab")])],
    "dm": [(0.95, [(5, "prednisone"), (4, "methylprednisolone")]), (0.75, [(5, "mtx"), (3, "aza"), (3, "tac"), (2, "mmf")]),
           (0.20, [(1, "hcq")]), (0.15, [(1, "ivig")]), (0.10, [(1, "rituximab")])],
    "nmosd": [(0.90, [(5, "prednisone"), (4, "methylprednisolone")]), (0.60, [(5, "aza"), (4, "mmf")]),
              (0.45, [(5, "rituximab"), (2, "inebilizumab"), (2, "satralizumab")])],
}
# Noise medications: condition -> per style concept (US RxNorm / text, EU ATC, CN local)
NOISE_MEDS: dict[str, dict[str, Json]] = {
    "htn": {"us": _rx("314076", "lisinopril 10 MG Oral Tablet"), "eu": _atc("C09AA03", "lisinopril", "Lisinopril 10 mg Tabletten"), "cn": _cnd("YP1001", "苯磺酸氨氯地平片 5mg")},
    "hld": {"us": _rx("617310", "atorvastatin 20 MG Oral Tablet"), "eu": _atc("C10AA05", "atorvastatin", "Sortis 20 mg"), "cn": _cnd("YP1002", "阿托伐他汀钙片 20mg")},
    "t2dm": {"us": _rx("861007", "metformin hydrochloride 500 MG Oral Tablet"), "eu": _atc("A10BA02", "metformin", "Metformin 500 mg"), "cn": _cnd("YP1003", "盐酸二甲双胍片 0.5g")},
    "gerd": {"us": _t("omeprazole 20 MG Delayed Release Oral Capsule"), "eu": _atc("A02BC01", "omeprazole", "Omeprazol 20 mg"), "cn": _cnd("YP1004", "奥美拉唑肠溶胶囊 20mg")},
    "asthma": {"us": _t("albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"), "eu": _atc("R03AC02", "salbutamol", "Salbutamol Dosieraerosol"), "cn": _cnd("YP1005", "硫酸沙丁胺醇吸入气雾剂")},
    "hypothyroid": {"us": _t("levothyroxine sodium 0.05 MG Oral Tablet"), "eu": _atc("H03AA01", "levothyroxine sodium", "L-Thyroxin 50 µg"), "cn": _cnd("YP1006", "左甲状腺素钠片 50μg")},
    "depression": {"us": _t("sertraline 50 MG Oral Tablet"), "eu": _atc("N06AB06", "sertraline", "Sertralin 50 mg"), "cn": _cnd("YP1007", "盐酸舍曲林片 50mg")},
    "oa": {"us": _rx("310965", "ibuprofen 200 MG Oral Tablet"), "eu": _atc("M01AE01", "ibuprofen", "Ibuprofen 400 mg"), "cn": _cnd("YP1008", "布洛芬缓释胶囊 0.3g")},
    "lbp": {"us": _rx("313782", "acetaminophen 325 MG Oral Tablet"), "eu": _atc("N02BE01", "paracetamol", "Paracetamol 500 mg"), "cn": _cnd("YP1009", "对乙酰氨基酚片 0.5g")},
}
# Shared Medication resources (referenced by medicationReference): key -> (concept, form)
_FORM_TAB = _cc(_c(SCT, "385055001", "Tablet"), text="tablet")
_FORM_CAP = _cc(_c(SCT, "385049006", "Capsule"), text="capsule")
_FORM_INJ = _cc(_c(SCT, "385219001", "Solution for injection"), text="injection")
SHARED_MEDS: dict[str, tuple[Json, Json]] = {
    "hcq": (_rx("5521", "hydroxychloroquine"), _FORM_TAB),
    "mmf500": (_rx("200060", "mycophenolate mofetil 500 MG Oral Tablet"), _FORM_TAB),
    "pred5": (_rx("312617", "prednisone 5 MG Oral Tablet"), _FORM_TAB),
    "tac1": (_rx("198377", "tacrolimus 1 MG Oral Capsule"), _FORM_CAP),
    "mtx25": (_rx("105585", "methotrexate 2.5 MG Oral Tablet"), _FORM_TAB),
    "aza50": (_rx("197388", "azathioprine 50 MG Oral Tablet"), _FORM_TAB),
    "rtx": (_rx("1657862", "10 ML rituximab 10 MG/ML Injection"), _FORM_INJ),
    "mp4cn": (_cnd("YP0457", "甲泼尼龙片 4mg"), _cc(_c(SCT, "385055001", "Tablet"), text="片剂")),
    "lis10": (_rx("314076", "lisinopril 10 MG Oral Tablet"), _FORM_TAB),  # noise: in no drug class
}
NOISE_SHARED = {"htn": "lis10"}  # noise medications that US records also name by reference
SHARED_MED_KEYS = tuple(SHARED_MEDS)

CART = {
    "us": ("Procedure", _cc(_c(CPT, "0540T", "Chimeric antigen receptor T-cell (CAR-T) therapy; CAR-T cell administration, autologous"))),
    "eu": ("Procedure", _t("CAR-T cell infusion (tisagenlecleucel)")),
    "cn": ("Procedure", _cc(_c(CN_PROC, "P9301", "CD19 CAR-T 细胞回输"), text="CD19 CAR-T 细胞回输")),
    "cn-product": ("MedicationStatement", _cnd("YP0990", "瑞基奥仑赛注射液")),
}
NOISE_PROCEDURES = (
    _cc(_c(SCT, "73761001", "Colonoscopy"), text="Colonoscopy"),
    _cc(_c(SCT, "80146002", "Appendectomy"), text="Appendectomy"),
    _cc(_c(SCT, "38102005", "Cholecystectomy"), text="Cholecystectomy"),
    _cc(_c(SCT, "40701008", "Echocardiography"), text="Echocardiography"),
)

# ---------------------------------------------------------------------------- names

NAMES = {
    "us": (("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Lee", "Walker"),
           ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth", "Maria", "Daniel")),
    "eu": (("Müller", "Schmidt", "Rossi", "Dubois", "García", "Jansen", "Nowak", "Fischer", "Bianchi", "Lefebvre", "Novák", "Weber"),
           ("Anna", "Lukas", "Sofia", "Jan", "Marie", "Luca", "Emma", "Pierre", "Elena", "Tomasz", "Julia", "Matteo")),
    "cn": (("王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙"),
           ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "艳", "杰", "娟", "涛", "明")),
}
CITIES = {"us": (("Boston", "US"), ("Chicago", "US"), ("Houston", "US"), ("Denver", "US")),
          "eu": (("Berlin", "DE"), ("Milano", "IT"), ("Lyon", "FR"), ("Utrecht", "NL")),
          "cn": (("上海", "CN"), ("北京", "CN"), ("广州", "CN"), ("成都", "CN"))}
TZ = {"us": ("-05:00", "-06:00", "-08:00"), "eu": ("+01:00",), "cn": ("+08:00",)}


def _weighted(pairs: tuple | list) -> tuple[tuple, tuple]:
    keys = tuple(k for k, _ in pairs)
    cum, total = [], 0.0
    for _, w in pairs:
        total += w
        cum.append(total)
    return keys, tuple(cum)


_NOISE_KEYS, _NOISE_CUM = _weighted(NOISE_WEIGHTS)
_PLAN_TABLES = {t: [(prob, _weighted([(d, w) for w, d in choices])) for prob, choices in plan] for t, plan in PLANS.items()}
_REGIMEN_TABLES = {d: _weighted([(tuple(reg), w) for w, *reg in regs]) for d, regs in REGIMENS.items()}
_UNIT_TABLES = {a: {st: _weighted([((f, d, u), w) for w, f, d, u in variants[1]]) for st, variants in per_style.items()}
                for a, per_style in LABS.items()}
_TARGET_KEYS, _TARGET_CUM = _weighted(TARGET_SPLIT)
_STYLE_KEYS, _STYLE_CUM = _weighted(STYLE_SPLIT)


# ============================================================================ generation


class _Patient:
    """Builds one patient's resources, in order, from its own random stream."""

    def __init__(self, gen: "_Generator", n: int):
        self.g = gen
        self.rng = rng = random.Random(f"fhir-matcher-synth:{gen.seed}:{n}")
        self.r = rng.random
        self.pid = f"s{gen.seed}-{n}"
        self.out: list[tuple[str, Json]] = []
        self.counters: dict[str, int] = {}
        self.flags: list[str] = []
        self.style = _STYLE_KEYS[_bisect(_STYLE_CUM, self.r() * _STYLE_CUM[-1])]
        self.tz = rng.choice(TZ[self.style])
        self.subject = {"reference": gen.ref("Patient", self.pid)}

    # ---- helpers
    def next_id(self, kind: str) -> str:
        k = self.counters.get(kind, 0) + 1
        self.counters[kind] = k
        return f"{self.pid}-{kind}-{k}"

    def day(self, off: int) -> str:
        """ISO date ``off`` days before the patient's last day (anchor, or death)."""
        return self.g.iso[self.base + off]

    def dt(self, off: int, hour: int, minute: int = 0) -> str:
        return f"{self.g.iso[self.base + off]}T{hour:02d}:{minute:02d}:00{self.tz}"

    def emit(self, rtype: str, res: Json) -> None:
        self.out.append((rtype, res))

    def pick(self, seq):
        return seq[int(self.r() * len(seq))]

    def concept(self, table: dict[str, dict[str, list[Json]]], key: str, text_only: bool | None = None) -> Json:
        if text_only is None:
            text_only = self.r() < self.g.p_text
        if text_only and key in TEXT:
            return _t(TEXT[key][1 if self.style == "cn" else 0])
        return self.pick(table[key][self.style])

    # ---- the patient
    def build(self) -> list[tuple[str, Json]]:
        g, r, rng = self.g, self.r, self.rng
        p = g.prevalence
        # demographics
        target = None
        if r() < p["target"]:
            target = _TARGET_KEYS[_bisect(_TARGET_CUM, r() * _TARGET_CUM[-1])]
            self.flags += ["target", f"target:{target}"]
        female_p = {"sle": 0.9, "ln": 0.85, "ssc": 0.8, "dm": 0.65, "nmosd": 0.85}.get(target, 0.52)
        x = r()
        gender = "female" if x < female_p else ("male" if x < 0.995 else rng.choice(("unknown", "other")))
        birth_off = rng.randint(16 * 365 + 4, 86 * 365 + 20)  # days before the anchor
        age_y = birth_off / 365.25
        self.base = 0
        deceased = r() < p["deceased"]
        if deceased:
            self.base = rng.randint(5, 1800)
            self.flags.append("deceased")
        self.female = gender == "female"
        self.age_y = age_y
        self.target = target
        self.span = min(3650, birth_off - 5 * 365 - self.base)  # history reaches back at most 10 years
        self.emit("Patient", self.patient_resource(gender, birth_off, deceased))

        # encounters (with vitals) over the history
        n_enc = min(60, int(rng.lognormvariate(0.6 + age_y / 120, 0.8)))
        if target:
            n_enc = n_enc * 2 + 2
        for off in sorted((rng.randint(0, self.span) for _ in range(n_enc)), reverse=True):
            self.encounter(off)

        # diagnoses
        noise_keys: list[str] = []
        n_noise = min(12, int(rng.expovariate(1 / (0.8 + age_y / 22))))
        for _ in range(n_noise):
            key = _NOISE_KEYS[_bisect(_NOISE_CUM, r() * _NOISE_CUM[-1])]
            if key not in noise_keys:
                noise_keys.append(key)
        for key in noise_keys:
            onset = rng.randint(0, self.span)
            resolved = key in ("uti", "lbp", "convulsion", "anemia") and r() < 0.7 or r() < 0.1
            self.condition(NOISE, key, onset, "resolved" if resolved else "active", abate=rng.randint(0, onset) if resolved else None)
        if target:
            self.target_conditions(target)
        elif r() < 0.003:  # hygiene decoy: an SLE diagnosis that was entered in error or refuted
            self.condition(CONDITIONS, "sle", rng.randint(30, self.span), "active", verification=rng.choice(("entered-in-error", "refuted")))
        self.exclusions()

        # medications
        if target:
            self.treatment(target)
        for key in noise_keys:
            if key in NOISE_MEDS and r() < 0.6:
                self.noise_med(key)
        if "asthma" in noise_keys and r() < 0.4:
            start = rng.randint(0, self.span)
            if r() < 0.6:
                self.drug("budesonide-inh", start, None, 0)
            else:
                self.drug("budesonide-inh", start, rng.randint(0, start), 1)
        # labs, ECGs, serology
        latest = None
        if target or r() < p["labs"]:
            latest = self.labs(cohort=bool(target))
        if target and r() < 0.88 or not target and r() < 0.04 or self.qtc_high:
            self.ecg(latest)
        self.serology()
        # procedures
        if r() < 0.08:
            self.emit("Procedure", {
                "resourceType": "Procedure", "id": self.next_id("proc"), "status": "completed",
                "code": self.pick(NOISE_PROCEDURES), "subject": self.subject,
                "performedDateTime": self.dt(rng.randint(0, self.span), rng.randint(8, 16)),
            })
        return self.out

    def patient_resource(self, gender: str, birth_off: int, deceased: bool) -> Json:
        g, r, style = self.g, self.r, self.style
        families, givens = NAMES[style]
        family, given = self.pick(families), self.pick(givens)
        name: Json = {"use": "official", "family": family, "given": [given]}
        if style == "cn":
            name = {"use": "official", "text": family + given, "family": family, "given": [given]}
        city, country = self.pick(CITIES[style])
        res: Json = {
            "resourceType": "Patient", "id": self.pid,
            "identifier": [{"system": MRN[style], "value": f"{style.upper()}{g.seed}-{self.pid.rsplit('-', 1)[1].zfill(8)}"}],
            "active": True, "name": [name], "gender": gender,
        }
        if r() > 0.003:
            res["birthDate"] = g.birth_iso(birth_off)
        if deceased:
            if r() < 0.8:
                res["deceasedDateTime"] = self.day(0)
            else:
                res["deceasedBoolean"] = True
        res["address"] = [{"city": city, "country": country}]
        return res

    def encounter(self, off: int) -> None:
        r, rng = self.r, self.rng
        x = r()
        cls = "AMB" if x < 0.86 else ("EMER" if x < 0.94 else "IMP")
        eid = self.next_id("enc")
        hour = rng.randint(7, 17)
        start = self.dt(off, hour, rng.choice((0, 15, 30, 45)))
        if cls == "IMP" and off > 0:
            end = self.dt(off - rng.randint(1, min(14, off)), rng.randint(9, 15))
        else:
            end = self.dt(off, hour + 1)
        res: Json = {
            "resourceType": "Encounter", "id": eid, "status": "finished", "class": ENC_CLASS[cls],
            "type": (ENC_TYPE_CN if self.style == "cn" else ENC_TYPE)[cls], "subject": self.subject,
            "period": {"start": start, "end": end},
        }
        self.emit("Encounter", res)
        ref = {"reference": self.g.ref("Encounter", eid)}
        if cls != "EMER" and r() < 0.62:
            self.vitals(off, hour, ref)

    def vitals(self, off: int, hour: int, enc: Json) -> None:
        r, rng = self.r, self.rng
        eff = self.dt(off, hour, 5)
        if not hasattr(self, "bp0"):
            self.bp0 = rng.gauss(118 + self.age_y * 0.3, 12)
            self.wt0 = rng.gauss(62 if self.female else 76, 12) * (0.85 if self.style == "cn" else 1.0)
            self.ht0 = rng.gauss(162 if self.female else 175, 7)
        base = {"status": "final", "category": CAT_VITAL}
        if r() < 0.92:
            sys_ = round(self.bp0 + rng.gauss(0, 8))
            dia = round(sys_ * 0.62 + rng.gauss(0, 5))
            self.emit("Observation", {
                "resourceType": "Observation", "id": self.next_id("obs"), **base, "code": VITALS["bp"],
                "subject": self.subject, "encounter": enc, "effectiveDateTime": eff,
                "component": [
                    {"code": VITALS["sys"], "valueQuantity": {"value": sys_, **U["mm[Hg]"]}},
                    {"code": VITALS["dia"], "valueQuantity": {"value": dia, **U["mm[Hg]"]}},
                ],
            })
        if r() < 0.7:
            self.emit("Observation", {
                "resourceType": "Observation", "id": self.next_id("obs"), **base, "code": VITALS["hr"],
                "subject": self.subject, "encounter": enc, "effectiveDateTime": eff,
                "valueQuantity": {"value": round(rng.gauss(74, 10)), **U["/min"]},
            })
        if r() < 0.55:
            wt = round(max(35.0, self.wt0 + rng.gauss(0, 2)), 1)
            self.emit("Observation", {
                "resourceType": "Observation", "id": self.next_id("obs"), **base, "code": VITALS["wt"],
                "subject": self.subject, "encounter": enc, "effectiveDateTime": eff,
                "valueQuantity": {"value": wt, **U["kg"]},
            })
            if r() < 0.5:
                self.emit("Observation", {
                    "resourceType": "Observation", "id": self.next_id("obs"), **base, "code": VITALS["bmi"],
                    "subject": self.subject, "encounter": enc, "effectiveDateTime": eff,
                    "valueQuantity": {"value": round(wt / (self.ht0 / 100) ** 2, 1), **U["kg/m2"]},
                })

    def condition(self, table, key: str, onset: int, status: str = "active", *, abate: int | None = None,
                  verification: str = "confirmed", text_only: bool | None = None) -> None:
        r = self.r
        res: Json = {"resourceType": "Condition", "id": self.next_id("cond")}
        if verification != "entered-in-error":  # con-5: no clinicalStatus on entered-in-error
            res["clinicalStatus"] = CLINICAL[status]
        res["verificationStatus"] = VERIFICATION[verification]
        res["category"] = COND_CATEGORY["problem-list-item" if r() < 0.6 else "encounter-diagnosis"]
        res["code"] = self.concept(table, key, text_only)
        res["subject"] = self.subject
        if r() < 0.97:
            res["onsetDateTime"] = self.day(onset)
        if abate is not None and status in ("resolved", "inactive", "remission"):
            res["abatementDateTime"] = self.day(min(abate, onset))
        res["recordedDate"] = self.day(max(0, onset - int(r() * 20)))
        self.emit("Condition", res)

    def target_conditions(self, target: str) -> None:
        r, rng = self.r, self.rng
        # onset: 0.5-15 years ago (a few recent diagnoses), after the age of 6
        max_onset = max(60, min(15 * 365, int((self.age_y - 6) * 365)) - self.base)
        if r() < 0.06:
            self.onset = rng.randint(20, min(170, max_onset))
        else:
            self.onset = rng.randint(min(180, max_onset), max_onset)
        x = r()
        status = "active" if x < 0.85 else ("remission" if x < 0.93 else ("recurrence" if x < 0.97 else "inactive"))
        ver = "confirmed" if r() < 0.93 else "provisional"
        self.condition(CONDITIONS, target, min(self.onset, self.span), status, verification=ver)
        if target == "ln" and r() < 0.7:  # lupus nephritis patients usually carry SLE too
            self.condition(CONDITIONS, "sle", min(self.onset + rng.randint(0, 700), self.span))
        if r() < 0.03:  # another target diagnosis entered in error / refuted
            other = self.pick(("sle", "ssc", "dm"))
            self.condition(CONDITIONS, other, rng.randint(0, self.span), "active", verification=self.pick(("entered-in-error", "refuted")))

    def exclusions(self) -> None:
        g, r, rng = self.g, self.r, self.rng
        p = g.prevalence
        span = self.span
        if r() < p["neuro"]:
            self.flags.append("neuro")
            key = self.pick(("epilepsy", "epilepsy", "stroke", "stroke", "tbi", "ich"))
            onset = rng.randint(0, span)
            if key != "epilepsy" and r() < 0.6:
                self.condition(CONDITIONS, key, onset, "resolved", abate=rng.randint(0, onset))
            else:
                self.condition(CONDITIONS, key, onset, "active")
        self.qtc_high = False
        if r() < p["cardiac"]:
            self.flags.append("cardiac")
            key = self.pick(("longqt", "af", "af", "af", "hf", "hf"))
            if key == "longqt" and r() < 0.5:
                self.qtc_high = True  # only a long QTc on a recent ECG
            else:
                self.condition(CONDITIONS, key, rng.randint(0, span), "active")
        self.pregnant = False
        if self.female and 18 <= self.age_y <= 45 and r() < p["pregnancy"]:
            self.flags.append("pregnancy")
            self.pregnant = True
            if r() < 0.8:
                self.condition(CONDITIONS, "pregnancy", rng.randint(20, 240), "active")
        elif self.female and 20 <= self.age_y <= 55 and r() < 0.06:  # a past pregnancy: resolved
            onset = rng.randint(400, max(401, span))
            self.condition(CONDITIONS, "pregnancy", onset, "resolved", abate=onset - rng.randint(200, 280))
        self.hiv = r() < p["hiv"]
        if self.hiv:
            self.flags.append("hiv")
            if r() < 0.8:
                self.condition(CONDITIONS, "hiv", rng.randint(0, span), "active")
        self.hbv = r() < p["hbv"]
        if self.hbv:
            self.flags.append("hbv")
            if r() < 0.75:
                self.condition(CONDITIONS, "hbv", rng.randint(0, span), "active")
        self.hbv_resolved = not self.hbv and r() < p["hbv-resolved"]
        if self.hbv_resolved:
            self.flags.append("hbv-resolved")
            onset = rng.randint(200, max(201, span))
            self.condition(CONDITIONS, "hbv", onset, "resolved", abate=rng.randint(100, onset))
        self.hcv = r() < p["hcv"]
        if self.hcv:
            self.flags.append("hcv")
            if r() < 0.7:
                self.condition(CONDITIONS, "hcv", rng.randint(0, span), "active")
        if r() < p["car-t"]:
            self.flags.append("car-t")
            off = rng.randint(0, 85) if r() < 0.5 else rng.randint(95, max(96, min(span, 1100)))
            if self.style == "cn" and r() < 0.4:
                _, concept = CART["cn-product"]
                self.emit("MedicationStatement", {
                    "resourceType": "MedicationStatement", "id": self.next_id("ms"), "status": "completed",
                    "medicationCodeableConcept": concept, "subject": self.subject,
                    "effectiveDateTime": self.day(off), "dateAsserted": self.day(max(0, off - 1)),
                })
            else:
                _, concept = CART[self.style]
                self.emit("Procedure", {
                    "resourceType": "Procedure", "id": self.next_id("proc"), "status": "completed",
                    "code": concept, "subject": self.subject, "performedDateTime": self.dt(off, 10),
                })

    # ---- medications
    def treatment(self, target: str) -> None:
        r, rng = self.r, self.rng
        if r() < 0.04:
            return  # no medication data at all
        onset = self.onset
        one_class = r() < 0.05
        drugs: list[str] = []
        for prob, (keys, cum) in _PLAN_TABLES[target]:
            if r() < prob:
                drugs.append(keys[_bisect(cum, r() * cum[-1])])
        if not drugs:
            drugs = ["prednisone"]
        if one_class:
            drugs = drugs[:1]
        for i, drug in enumerate(drugs):
            # the first line starts near the diagnosis, later lines later
            lag = int(r() * min(onset, 365)) if i == 0 else int(r() * onset)
            start = max(1, onset - lag)
            if DRUGS[drug]["class"] == "glucocorticoid":
                self.steroid_course(drug, start)
                continue
            if drug in ("rituximab", "cyc", "ivig", "inebilizumab") and r() < 0.7:
                end = max(0, start - rng.randint(14, 180))  # a course, completed
                self.drug(drug, start, end, 1 if drug != "cyc" else 2)
                continue
            x = r()
            if x < 0.58:
                self.drug(drug, start, None, 0)
            else:
                self.drug(drug, start, max(0, start - rng.randint(30, max(31, start))), 1 if x < 0.85 else 3)
        if r() < 0.05:  # inhaled budesonide: not systemic
            self.drug("budesonide-inh", rng.randint(30, self.span), None, 0)

    def steroid_course(self, drug: str, start: int) -> None:
        r, rng = self.r, self.rng
        pe = DRUGS[drug]["pe"]
        # induction: high dose for weeks, then a taper, then maintenance (active, or stopped)
        segments: list[tuple[int, int | None, float]] = []
        off = start
        if r() < 0.6 and start > 60:
            length = rng.randint(21, min(120, start - 1))
            segments.append((off, off - length, rng.choice((30, 40, 50, 60))))
            off -= length
            if r() < 0.5 and off > 60:
                length = rng.randint(21, min(120, off - 1))
                segments.append((off, off - length, rng.choice((15, 20, 25))))
                off -= length
        x = r()
        maint = 5 if x < 0.35 else (7.5 if x < 0.5 else (10 if x < 0.72 else (15 if x < 0.8 else (20 if x < 0.86 else rng.choice((25, 30, 40))))))
        if r() < 0.7 or off < 30:
            segments.append((off, None, maint))
        else:
            segments.append((off, max(0, off - rng.randint(30, off)), maint))
        if r() < 0.1 and start > 400:  # an IV pulse at the start
            self.drug("mp-pulse", start + 3, start, 1)
        for s, e, pred_mg in segments:
            mg_day = pred_mg * pe / 5
            self.drug(drug, s, e, 0 if e is None else 1, mg_day=mg_day)

    def drug(self, drug: str, start: int, end: int | None, status_kind: int, mg_day: float | None = None) -> None:
        """status_kind: 0 active, 1 completed, 2 completed course, 3 stopped."""
        g, r, style = self.g, self.r, self.style
        spec = DRUGS[drug]
        concept, strength, shared = self.pick(spec[style])
        dosage = self.dosage(drug, spec, strength, mg_day)
        use_request = style == "us" and r() < 0.8 or style != "us" and r() < 0.1
        x = r()
        if x < 0.006:
            status = "entered-in-error"
        else:
            status = ("active", "completed", "completed", "stopped")[status_kind]
            if status == "active" and x < 0.02:
                status = "on-hold"
        med: Json
        if shared and r() < 0.3:
            med = {"medicationReference": {"reference": g.ref("Medication", g.med_id(shared))}}
            if concept.get("text"):
                med["medicationReference"]["display"] = concept["text"]
            g.used_meds.append(shared)
        else:
            med = {"medicationCodeableConcept": concept}
        if use_request:
            res: Json = {"resourceType": "MedicationRequest", "id": self.next_id("mr"),
                         "status": "cancelled" if status_kind == 3 and r() < 0.1 else status, "intent": "order", **med,
                         "subject": self.subject, "authoredOn": self.day(start)}
            if dosage is not None:
                if "timing" in dosage and (end is not None or r() < 0.5):
                    bounds: Json = {"start": self.day(start)}
                    if end is not None:
                        bounds["end"] = self.day(end)
                    dosage["timing"]["repeat"]["boundsPeriod"] = bounds  # dosage is built fresh per record
                res["dosageInstruction"] = [dosage]
            if end is not None and r() < 0.5:
                res["dispenseRequest"] = {"validityPeriod": {"start": self.day(start), "end": self.day(end)}}
            self.emit("MedicationRequest", res)
        else:
            res = {"resourceType": "MedicationStatement", "id": self.next_id("ms"), "status": status, **med, "subject": self.subject}
            if end is not None and end == start:
                res["effectiveDateTime"] = self.day(start)
            else:
                period: Json = {"start": self.day(start)}
                if end is not None:
                    period["end"] = self.day(end)
                res["effectivePeriod"] = period
            res["dateAsserted"] = self.day(end if end is not None else int(r() * start))
            if dosage is not None:
                res["dosage"] = [dosage]
            self.emit("MedicationStatement", res)

    def dosage(self, drug: str, spec: Json, strength: float | None, mg_day: float | None) -> Json | None:
        r, style = self.r, self.style
        x = r()
        if x < 0.02:
            return None  # no dosage recorded
        route = ROUTES[spec["route"]][style]
        if x < 0.03:
            return {"text": "遵医嘱" if style == "cn" else "as directed", "route": route}
        if mg_day is not None:  # glucocorticoid: mg/day split into 1-4 doses
            y = r()
            freq = 1 if y < 0.6 or mg_day < 5 else (2 if y < 0.85 else (3 if y < 0.93 else 4))
            dose = mg_day / freq
            if strength and r() < (0.5 if style == "cn" else 0.15) and dose % strength == 0:
                unit = U["片"] if style == "cn" else U["tbl"]
                q: Json = {"value": _num(dose / strength), **unit}
            else:
                q = {"value": _num(round(dose, 2)), **U["mg"]}
            repeat: Json = {"frequency": freq, "period": 1, "periodUnit": "d"}
        else:
            table = _REGIMEN_TABLES.get(drug)
            if not table:
                return None
            keys, cum = table
            value, unit_key, freq, period, period_unit = keys[_bisect(cum, r() * cum[-1])]
            if unit_key == "mg" and style == "cn" and value >= 250 and r() < 0.5:
                q = {"value": _num(value / 1000), **U["g"]}
            else:
                q = {"value": _num(value), **U[unit_key]}
            repeat = {"frequency": freq, "period": _num(period), "periodUnit": period_unit}
        return {"timing": {"repeat": repeat}, "route": route, "doseAndRate": [{"type": DOSE_ORDERED, "doseQuantity": q}]}

    def noise_med(self, key: str) -> None:
        r, rng = self.r, self.rng
        concept = NOISE_MEDS[key][self.style]
        start = rng.randint(0, self.span)
        active = r() < 0.7
        end = None if active else rng.randint(0, start)
        med: Json = {"medicationCodeableConcept": concept}
        if self.style == "us" and key in NOISE_SHARED and r() < 0.3:
            shared = NOISE_SHARED[key]
            med = {"medicationReference": {"reference": self.g.ref("Medication", self.g.med_id(shared)), "display": concept["text"]}}
            self.g.used_meds.append(shared)
        if self.style == "us" and r() < 0.85:
            res: Json = {"resourceType": "MedicationRequest", "id": self.next_id("mr"), "status": "active" if active else "completed",
                         "intent": "order", **med, "subject": self.subject, "authoredOn": self.day(start)}
            if end is not None:
                res["dispenseRequest"] = {"validityPeriod": {"start": self.day(start), "end": self.day(end)}}
            self.emit("MedicationRequest", res)
        else:
            period: Json = {"start": self.day(start)}
            if end is not None:
                period["end"] = self.day(end)
            self.emit("MedicationStatement", {
                "resourceType": "MedicationStatement", "id": self.next_id("ms"), "status": "active" if active else "completed",
                **med, "subject": self.subject, "effectivePeriod": period,
                "dateAsserted": self.day(end if end is not None else int(r() * start)),
            })

    # ---- labs
    def labs(self, cohort: bool) -> int:
        r, rng, style = self.r, self.rng, self.style
        # per-patient baselines (canonical units)
        male = not self.female
        lnorm = rng.lognormvariate
        if cohort:
            base = {"lym": lnorm(math.log(1.15), 0.42), "neu": lnorm(math.log(3.6), 0.38),
                    "hb": rng.gauss(136 if male else 121, 14), "plt": lnorm(math.log(205), 0.33),
                    "cre": lnorm(math.log((92 if self.target == "ln" else 68) * (1.2 if male else 1.0)), 0.3 if self.target != "ln" else 0.45),
                    "alt": lnorm(math.log(22), 0.42), "ast": lnorm(math.log(24), 0.36), "tbil": lnorm(math.log(10), 0.38)}
        else:
            base = {"lym": lnorm(math.log(1.9), 0.3), "neu": lnorm(math.log(3.8), 0.3),
                    "hb": rng.gauss(148 if male else 134, 11), "plt": lnorm(math.log(250), 0.25),
                    "cre": lnorm(math.log(75 * (1.2 if male else 1.0)), 0.2),
                    "alt": lnorm(math.log(21), 0.4), "ast": lnorm(math.log(22), 0.33), "tbil": lnorm(math.log(10), 0.35)}
        # per-patient reporting choices
        units = {}
        codes = {}
        for a in ANALYTES:
            codes[a] = self.pick(LABS[a][style][0])
            keys, cum = _UNIT_TABLES[a][style]
            units[a] = keys[_bisect(cum, r() * cum[-1])]
        if style == "eu" and r() < 0.4:  # Dutch-style hemoglobin in mmol/L
            codes["hb"], f, d, u = HB_MMOL
            units["hb"] = (f, d, u)
        uln = {}
        for a in ("alt", "ast"):
            x = r()
            uln[a] = None if x < 0.4 else (35 if x < 0.55 else (40 if x < 0.8 else 50))
        # lab sets: the most recent 0-120 days old (often recent for cohort patients), then back in time
        if cohort:
            latest = rng.randint(0, 30) if r() < 0.6 else rng.randint(0, 120)
            n_sets = 2 + min(14, int(rng.lognormvariate(1.0, 0.7)))
        else:
            latest = rng.randint(0, 720)
            n_sets = 1 + min(4, int(rng.expovariate(1.2)))
        latest = min(latest, self.span)
        offs = [latest]
        for _ in range(n_sets - 1):
            o = offs[-1] + rng.randint(20, 400)
            if o > self.span:
                break
            offs.append(o)
        tails = {}
        for a in ANALYTES:
            p_other, p_cohort, draw, boundary = TAIL[a]
            if r() < (p_cohort if cohort else p_other):
                tails[a] = (draw, boundary)
        for i, off in enumerate(offs):
            hour = rng.randint(6, 11)
            eff = self.dt(off, hour, rng.randint(0, 59))
            iss = self.dt(off, hour + rng.randint(1, 6), rng.randint(0, 59))
            chem = i == 0 or r() < 0.85
            for a in ANALYTES:
                if a in ("cre", "alt", "ast", "tbil") and not chem:
                    continue
                if i == 0 and cohort and r() < 0.012:
                    continue  # one analyte missing from the latest set
                b = base[a]
                if a == "hb":
                    v = b + rng.gauss(0, 5)
                else:
                    v = b * lnorm(0, 0.12)
                if i == 0 and a in tails:
                    draw, boundary = tails[a]
                    if a in ("alt", "ast"):
                        limit = 3 * (uln[a] or 40)
                        v = limit + 1 if r() < 0.1 else round(limit * rng.uniform(1.05, 3.0))
                    elif r() < 0.12:
                        v = boundary  # exactly on the protocol threshold
                    else:
                        v = draw(rng)
                self.lab(a, codes[a], units[a], v, eff, iss, uln.get(a))
        return latest

    def ecg(self, latest: int | None) -> None:
        """QTc from 1-3 ECGs; the latest on the day of the latest labs, or 0-400 days old."""
        r, rng, style = self.r, self.rng, self.style
        code = self.pick(LABS["qtc"][style][0])
        keys, cum = _UNIT_TABLES["qtc"][style]
        unit = keys[_bisect(cum, r() * cum[-1])]
        q0 = rng.gauss(422 if self.female else 414, 14)
        off = latest if latest is not None and r() < 0.7 else rng.randint(0, min(self.span, 400))
        if self.qtc_high:
            off = rng.randint(0, 80)
        for k in range(1 + int(r() * 3)):
            v = q0 + rng.gauss(0, 8)
            if k == 0 and self.qtc_high:
                v = rng.uniform(485, 540)
            eff = self.dt(off, rng.randint(8, 16), rng.randint(0, 59))
            self.lab("qtc", code, unit, v, eff, eff, None, category=CAT_PROC)
            off += rng.randint(60, 700)
            if off > self.span:
                break

    def lab(self, a: str, code: Json, unit: tuple, v: float, eff: str, iss: str, uln: float | None, category=CAT_LAB) -> None:
        r = self.r
        factor, decimals, u = unit
        value = round(v * factor, decimals) if decimals else round(v * factor)
        if value <= 0:
            value = 10 ** -decimals if decimals else 1
        x = r()
        status = "final"
        if x < 0.03:
            status = "preliminary" if x < 0.012 else ("entered-in-error" if x < 0.02 else ("amended" if x < 0.026 else "corrected"))
        q: Json
        if a in ("lym", "neu") and v < 0.5 and self.style != "us" and r() < 0.3:
            q = {"value": _num(round(0.5 * factor, decimals)), "comparator": "<", **u}
        elif r() < 0.006:
            q = {"value": _num(value)}  # no unit at all
        else:
            q = {"value": _num(value), **u}
        res: Json = {"resourceType": "Observation", "id": self.next_id("obs"), "status": status, "category": category,
                     "code": code, "subject": self.subject, "effectiveDateTime": eff, "issued": iss, "valueQuantity": q}
        if uln is not None:
            res["referenceRange"] = [{"high": {"value": _num(round(uln * factor, decimals) if decimals else uln), **u}}]
        self.emit("Observation", res)

    def serology(self) -> None:
        """HBsAg / HBV DNA / HCV RNA / HIV / hCG tests: screening negatives and the positives of the flags."""
        r, rng, style = self.r, self.rng, self.style
        cohort = self.target is not None
        recent = lambda: rng.randint(0, min(self.span, 700))  # noqa: E731
        if self.hbv or self.hbv_resolved or (cohort and r() < 0.5) or r() < 0.05:
            positive = self.hbv and r() < 0.6
            self.qual(SEROLOGY["hbsag"][style], positive, recent())
            if self.hbv and not positive or self.hbv_resolved and r() < 0.5 or cohort and r() < 0.2:
                detectable = self.hbv and not positive
                value = rng.randint(200, 2_000_000) if detectable else 20
                q = {"value": value, **U["[IU]/mL"]} if detectable else {"value": value, "comparator": "<", **U["[IU]/mL"]}
                self.obs(HBV_DNA[style], {"valueQuantity": q}, recent())
        if self.hcv or cohort and r() < 0.2:
            if self.hcv and r() < 0.6 or not self.hcv:
                q = {"value": rng.randint(800, 5_000_000), **U["[IU]/mL"]} if self.hcv else {"value": 15, "comparator": "<", **U["[IU]/mL"]}
                self.obs(HCV_RNA[style], {"valueQuantity": q}, recent())
        if self.hiv and r() < 0.6 or cohort and r() < 0.4 or r() < 0.03:
            self.qual(SEROLOGY["hiv"][style], self.hiv, rng.randint(0, self.span))
        if self.female and 15 <= self.age_y <= 50 and (self.pregnant or cohort and r() < 0.3 or r() < 0.02):
            off = rng.randint(0, 25) if self.pregnant else rng.randint(0, min(self.span, 400))
            if r() < 0.7 or style == "cn":
                self.qual(SEROLOGY["hcg"][style], self.pregnant, off)
            else:
                self.obs(PREG_STATUS, PREGNANT if self.pregnant else NOT_PREGNANT, off)

    def qual(self, code: Json, positive: bool, off: int) -> None:
        self.obs(code, (POSITIVE if positive else NEGATIVE)[self.style], off)

    def obs(self, code: Json, value: Json, off: int) -> None:
        eff = self.dt(off, self.rng.randint(7, 12), self.rng.randint(0, 59))
        self.emit("Observation", {"resourceType": "Observation", "id": self.next_id("obs"), "status": "final", "category": CAT_LAB,
                                  "code": code, "subject": self.subject, "effectiveDateTime": eff, "issued": eff, **value})


def _num(x: float) -> float | int:
    """An integral float as an int (``10`` not ``10.0``), else the float."""
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


def _bisect(cum: tuple | list, x: float) -> int:
    lo, hi = 0, len(cum) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


class _Generator:
    def __init__(self, seed: int, anchor: date, prevalence: dict[str, float], bundles: bool):
        self.seed = seed
        self.anchor = anchor
        self.prevalence = prevalence
        self.p_text = prevalence["text-only"]
        self.bundles = bundles
        self.used_meds: list[str] = []
        self._uuid_cache: dict[str, str] = {}
        # dates as ISO strings, by days before the anchor (history, and deceased patients' offsets)
        self.iso = [(anchor - timedelta(days=i)).isoformat() for i in range(8000)]
        self._birth_iso: dict[int, str] = {}

    def birth_iso(self, off: int) -> str:
        s = self._birth_iso.get(off)
        if s is None:
            s = self._birth_iso[off] = (self.anchor - timedelta(days=off)).isoformat()
        return s

    def med_id(self, key: str) -> str:
        return f"s{self.seed}-med-{SHARED_MED_KEYS.index(key) + 1}"

    def urn(self, rtype: str, rid: str) -> str:
        return "urn:uuid:" + str(uuid.uuid5(_NS, f"{rtype}/{rid}"))

    def ref(self, rtype: str, rid: str) -> str:
        if self.bundles:
            return self.urn(rtype, rid)
        return f"{rtype}/{rid}"

    def medication(self, key: str) -> Json:
        concept, form = SHARED_MEDS[key]
        return {"resourceType": "Medication", "id": self.med_id(key), "code": concept, "form": form}


# ============================================================================ API


def parse_prevalence(text: str | None) -> dict[str, float]:
    """``"target=0.1,hiv=0.005"`` -> overrides; unknown keys and bad numbers raise ValueError."""
    out: dict[str, float] = {}
    if not text:
        return out
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower().replace("_", "-")
        if not sep:
            raise ValueError(f"--prevalence: {part!r} is not KEY=P (keys: {', '.join(DEFAULT_PREVALENCE)})")
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"--prevalence: {key}={value.strip()!r} is not a number") from None
    return out


def _check_prevalence(prevalence: dict[str, float] | None) -> dict[str, float]:
    merged = dict(DEFAULT_PREVALENCE)
    for key, value in (prevalence or {}).items():
        k = str(key).lower().replace("_", "-")
        if k not in DEFAULT_PREVALENCE:
            raise ValueError(f"unknown prevalence key {key!r} (known: {', '.join(DEFAULT_PREVALENCE)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0 or value != value:
            raise ValueError(f"prevalence {k}={value!r} must be a number between 0 and 1")
        merged[k] = float(value)
    return merged


def _is_own(path: Path) -> bool:
    """A file an earlier synth run wrote: its name, and how its content begins."""
    if not _OWN_FILE.match(path.name) or not path.is_file():
        return False
    with path.open("rb") as fh:
        head = fh.read(200)
    return not head or bool(_OWN_CONTENT.match(head))


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not _is_own(p))
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise ValueError(f"{out}: folder holds files synth did not write ({shown}); use an empty or new folder")
        for p in out.iterdir():  # an earlier synth run: replace it entirely
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(n: int, seed: int, out: Path, *, bundles: bool = False, prevalence: dict[str, float] | None = None,
             anchor: date = DEFAULT_ANCHOR) -> dict:
    """Write ``n`` synthetic patients to ``out``; return the counts.

    Returns ``{"patients", "resources" (by type), "resources_total", "files", "bytes", "flags"}``
    where ``flags`` counts the patients with each prevalence feature (``target``,
    ``target:sle`` ...).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--patients must be a whole number of at least 1 (got {n!r})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a whole number >= 0 (got {seed!r})")
    if not isinstance(anchor, date):
        raise ValueError(f"the anchor date must be a date (got {anchor!r})")
    prev = _check_prevalence(prevalence)
    out = Path(out)
    _prepare_out(out)
    gen = _Generator(seed, anchor, prev, bundles)
    counts: dict[str, int] = {t: 0 for t in NDJSON_TYPES}
    flags: dict[str, int] = {}
    total_bytes = 0
    files = 0

    if not bundles:
        handles = {t: open(out / f"{t}.ndjson", "wb", buffering=1 << 20) for t in NDJSON_TYPES}
        files = len(handles)
        try:
            w = {t: h.write for t, h in handles.items()}
            for key in SHARED_MED_KEYS:
                line = _dumps(gen.medication(key)) + b"\n"
                w["Medication"](line)
                counts["Medication"] += 1
                total_bytes += len(line)
            for i in range(n):
                pat = _Patient(gen, i + 1)
                for rtype, res in pat.build():
                    line = _dumps(res) + b"\n"
                    w[rtype](line)
                    counts[rtype] += 1
                    total_bytes += len(line)
                for f in pat.flags:
                    flags[f] = flags.get(f, 0) + 1
        finally:
            for h in handles.values():
                h.close()
    else:
        counts["Bundle"] = 0
        for first in range(0, n, PATIENTS_PER_BUNDLE):
            files += 1
            gen.used_meds = []
            entries: list[Json] = []
            for i in range(first, min(n, first + PATIENTS_PER_BUNDLE)):
                pat = _Patient(gen, i + 1)
                for rtype, res in pat.build():
                    entries.append(_entry(gen, rtype, res))
                    counts[rtype] += 1
                for f in pat.flags:
                    flags[f] = flags.get(f, 0) + 1
            meds = [_entry(gen, "Medication", gen.medication(k)) for k in SHARED_MED_KEYS if k in gen.used_meds]
            counts["Medication"] += len(meds)
            bundle = {"resourceType": "Bundle", "id": f"s{seed}-bundle-{files:04d}", "type": "transaction", "entry": meds + entries}
            data = _dumps(bundle)
            (out / f"bundle-{files:04d}.json").write_bytes(data)
            counts["Bundle"] += 1
            total_bytes += len(data)
    resources = {t: c for t, c in counts.items() if c}
    return {
        "patients": n,
        "resources": resources,
        "resources_total": sum(c for t, c in counts.items() if t != "Bundle"),
        "files": files,
        "bytes": total_bytes,
        "flags": dict(sorted(flags.items())),
    }


def _entry(gen: _Generator, rtype: str, res: Json) -> Json:
    rid = res["id"]
    return {"fullUrl": gen.urn(rtype, rid), "resource": res, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}


# ============================================================================ CLI


def _date_arg(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def add_parser(subparsers) -> None:
    """Register ``synth`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "synth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="prevalence keys (default):\n" + "\n".join(
            f"  {k:<13} {DEFAULT_PREVALENCE[k]:<6g} {text}" for k, text in PREVALENCE_HELP.items()),
        help="write a synthetic FHIR R4 population (NDJSON or transaction Bundles) for benchmarks and tests",
        description="Write N made-up patients (deterministic for the seed and start date) as Bulk Data NDJSON "
                    "or, with --bundles, transaction Bundles of 50 patients.",
    )
    p.add_argument("--patients", type=int, required=True, metavar="N", help="number of patients")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created; an earlier synth output there is replaced)")
    p.add_argument("--bundles", action="store_true", help="write transaction Bundles (bundle-0001.json ...) instead of NDJSON")
    p.add_argument("--prevalence", default=None, metavar="KEY=P,...", help="override prevalences, e.g. target=0.1,hiv=0.005 (keys below)")
    p.add_argument("--start-date", type=_date_arg, default=DEFAULT_ANCHOR, metavar="YYYY-MM-DD",
                   help="the anchor date the histories end on (default 2026-11-24; screen with --as-of the same date)")


def run(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments; print a one-line summary."""
    prevalence = parse_prevalence(getattr(args, "prevalence", None))
    anchor = getattr(args, "start_date", None) or DEFAULT_ANCHOR
    started = time.perf_counter()
    counts = generate(args.patients, args.seed, Path(args.out), bundles=args.bundles, prevalence=prevalence, anchor=anchor)
    seconds = time.perf_counter() - started
    total = counts["resources_total"]
    rate = total / seconds if seconds > 0 else float("inf")
    print(f"synth: {counts['patients']} patients, {total} resources, {counts['files']} files, "
          f"{counts['bytes'] / 1e6:.1f} MB in {seconds:.1f} s ({rate:,.0f} resources/s) -> {args.out}")
    return 0
