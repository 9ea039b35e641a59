"""Coding styles: the three kinds of site a patient comes from, and the code systems they use.

US: SNOMED CT + ICD-10-CM, RxNorm clinical drugs, US units; EU: ICD-10 WHO, ATC, SI units; CN:
national ICD-10 clinical edition codes, local lab and drug codes with Chinese names, text-only
units. Here are the systems, the small constructors every content table is written with, the
status and category codes, routes, units, and each style's identifiers, names, cities and time
zones. Which codes mean what is in conditions.py, medications.py, observations.py and noise.py.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

# ---------------------------------------------------------------------------- sites

STYLE_SPLIT = (("us", 0.40), ("eu", 0.25), ("cn", 0.35))
MRN = {
    "us": "http://hospital.example.org/fhir/sid/mrn",
    "eu": "http://klinikum.example.eu/fhir/sid/patient-id",
    "cn": "http://hospital.example.cn/fhir/sid/mrn",
}
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

# ---------------------------------------------------------------------------- constructors


def _c(system: str, code: str, display: str) -> Json:
    return {"system": system, "code": code, "display": display}


def _cc(*codings: Json, text: str | None = None) -> Json:
    out: Json = {"coding": list(codings)}
    if text:
        out["text"] = text
    return out


def _t(text: str) -> Json:
    return {"text": text}



def _u(code: str, text: str | None = None) -> Json:
    return {"unit": text or code, "system": UCUM, "code": code}



def _l(code: str, display: str) -> Json:
    return _c(LOINC, code, display)


def _cn(code: str, name: str, loinc: Json | None) -> list[Json]:
    """A Chinese local lab code, with and without a LOINC mapping."""
    local = _c(CN_LAB, code, name)
    out = [_cc(local, text=name)]
    if loinc:
        out.append(_cc(local, loinc, text=name))
    return out


def _rx(code: str, display: str) -> Json:
    return _cc(_c(RXN, code, display), text=display)


def _atc(code: str, display: str, text: str) -> Json:
    return _cc(_c(ATC, code, display), text=text)


def _cnd(code: str, name: str) -> Json:
    return _cc(_c(CN_DRUG, code, name), text=name)


# ---------------------------------------------------------------------------- status codes, routes, units

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
U = {
    "10*3/uL": _u("10*3/uL"), "/uL": _u("/uL", "cells/uL"), "10*9/L": _u("10*9/L"), "g/dL": _u("g/dL"), "g/L": _u("g/L"),
    "mmol/L": _u("mmol/L"), "mg/dL": _u("mg/dL"), "umol/L": _u("umol/L"), "U/L": _u("U/L"), "IU/L": _u("[IU]/L", "IU/L"),
    "ukat/L": _u("ukat/L"), "ms": _u("ms"), "s": _u("s"), "mm[Hg]": _u("mm[Hg]"), "/min": _u("/min", "beats/minute"),
    "kg": _u("kg"), "kg/m2": _u("kg/m2"), "cm": _u("cm"), "[IU]/mL": _u("[IU]/mL", "IU/mL"),
    "x10^9/L": {"unit": "x10^9/L"}, "×10⁹/L": {"unit": "×10⁹/L"}, "10^9/L": {"unit": "10^9/L"}, "μmol/L": {"unit": "μmol/L"},
    "mg": _u("mg"), "g": _u("g"), "ug": _u("ug", "mcg"), "tbl": _u("{tbl}", "tablet"), "片": {"unit": "片"}, "粒": {"unit": "粒"},
}
