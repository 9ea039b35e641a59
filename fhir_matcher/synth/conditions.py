"""Diagnoses: the target diseases and the exclusions, per coding style, and how a patient gets them.

``CONDITIONS[key][style]`` lists the CodeableConcepts a site of that style records; ``TEXT[key]``
is the (English, Chinese) name for diagnoses recorded as free text only. ``Conditions`` writes
the Condition resources: the target disease with its course, and the exclusions (neuro, cardiac,
pregnancy, HIV, hepatitis B/C, prior CAR-T) at their prevalences.
"""

from __future__ import annotations

from .patient import PatientBase
from .styles import (
    CLINICAL, CN_DX, CN_PROC, COND_CATEGORY, CPT, ICD10, ICDCM, ICDCN, SCT, VERIFICATION, Json, _c, _cc, _cnd, _t,
)

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

# prior CAR-T therapy (an exclusion): per style, the resource type that records it and its concept
CART = {
    "us": ("Procedure", _cc(_c(CPT, "0540T", "Chimeric antigen receptor T-cell (CAR-T) therapy; CAR-T cell administration, autologous"))),
    "eu": ("Procedure", _t("CAR-T cell infusion (tisagenlecleucel)")),
    "cn": ("Procedure", _cc(_c(CN_PROC, "P9301", "CD19 CAR-T 细胞回输"), text="CD19 CAR-T 细胞回输")),
    "cn-product": ("MedicationStatement", _cnd("YP0990", "瑞基奥仑赛注射液")),
}


class Conditions(PatientBase):
    """The Condition resources of one patient (and the CAR-T therapy among the exclusions)."""

    def concept(self, table: dict[str, dict[str, list[Json]]], key: str, text_only: bool | None = None) -> Json:
        if text_only is None:
            text_only = self.r() < self.g.p_text
        if text_only and key in TEXT:
            return _t(TEXT[key][1 if self.style == "cn" else 0])
        return self.pick(table[key][self.style])

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
            self.car_t(span)

    def car_t(self, span: int) -> None:
        """A prior CAR-T therapy, half of them within 3 months: a Procedure, or in CN often the product."""
        r, rng = self.r, self.rng
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

