"""Noise: the common conditions, their medications and procedures, and the decoys.

None of these may match a target or exclusion value set: they are what a real chart holds
besides the diseases a trial asks about (hypertension, diabetes, statins ...), and decoys close
to them (discoid lupus, polymyositis, optic neuritis, MS ...). ``Noise`` writes them; it uses
``condition()``, ``drug()`` and ``shared_med()`` of the other parts of a patient.
"""

from __future__ import annotations

from .patient import PatientBase, weighted
from .styles import ICD10, ICDCM, ICDCN, SCT, Json, _atc, _c, _cc, _cnd, _rx, _t

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
NOISE_SHARED = {"htn": "lis10"}  # noise medications that US records also name by reference (medications.SHARED_MEDS)
NOISE_PROCEDURES = (
    _cc(_c(SCT, "73761001", "Colonoscopy"), text="Colonoscopy"),
    _cc(_c(SCT, "80146002", "Appendectomy"), text="Appendectomy"),
    _cc(_c(SCT, "38102005", "Cholecystectomy"), text="Cholecystectomy"),
    _cc(_c(SCT, "40701008", "Echocardiography"), text="Echocardiography"),
)

NOISE_TABLE = weighted(NOISE_WEIGHTS)


class Noise(PatientBase):
    """The noise diagnoses, medications and procedures of one patient."""

    def noise_conditions(self) -> list[str]:
        """0-12 common conditions and decoys (more with age), some resolved; their keys, for noise_medications."""
        r, rng = self.r, self.rng
        keys: list[str] = []
        n_noise = min(12, int(rng.expovariate(1 / (0.8 + self.age_y / 22))))
        for _ in range(n_noise):
            key = self.draw(NOISE_TABLE)
            if key not in keys:
                keys.append(key)
        for key in keys:
            onset = rng.randint(0, self.span)
            resolved = key in ("uti", "lbp", "convulsion", "anemia") and r() < 0.7 or r() < 0.1
            self.condition(NOISE, key, onset, "resolved" if resolved else "active", abate=rng.randint(0, onset) if resolved else None)
        return keys

    def noise_medications(self, keys: list[str]) -> None:
        """The usual drugs of those conditions, and inhaled budesonide (not systemic) for asthma."""
        r, rng = self.r, self.rng
        for key in keys:
            if key in NOISE_MEDS and r() < 0.6:
                self.noise_med(key)
        if "asthma" in keys and r() < 0.4:
            start = rng.randint(0, self.span)
            if r() < 0.6:
                self.drug("budesonide-inh", start, None, 0)
            else:
                self.drug("budesonide-inh", start, rng.randint(0, start), 1)

    def noise_med(self, key: str) -> None:
        r, rng = self.r, self.rng
        concept = NOISE_MEDS[key][self.style]
        start = rng.randint(0, self.span)
        active = r() < 0.7
        end = None if active else rng.randint(0, start)
        med: Json = {"medicationCodeableConcept": concept}
        if self.style == "us" and key in NOISE_SHARED and r() < 0.3:
            shared = NOISE_SHARED[key]
            med = {"medicationReference": {**self.shared_med(shared), "display": concept["text"]}}
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

    def noise_procedure(self) -> None:
        """A routine procedure, in one patient of twelve or so."""
        rng = self.rng
        if self.r() < 0.08:
            self.emit("Procedure", {
                "resourceType": "Procedure", "id": self.next_id("proc"), "status": "completed",
                "code": self.pick(NOISE_PROCEDURES), "subject": self.subject,
                "performedDateTime": self.dt(rng.randint(0, self.span), rng.randint(8, 16)),
            })
