"""Observations: labs, ECGs, serology and vital signs, per coding style, and how a patient gets them.

``LABS[analyte][style]`` holds the codes a site of that style uses and the units it reports in
(with the factor from the canonical unit); ``TAIL`` the values that cross the protocol
thresholds. ``Observations`` writes lab histories whose most recent set is 0-120 days old,
with comparators, missing units, preliminary and entered-in-error results, and the vitals taken
at encounters.
"""

from __future__ import annotations

import math

from .patient import PatientBase, num, weighted
from .styles import CAT_LAB, CAT_PROC, CAT_VITAL, CN_LAB, SCT, U, Json, _c, _cc, _cn, _l

ANALYTES = ("lym", "neu", "hb", "plt", "cre", "alt", "ast", "tbil")
# analyte -> style -> list of (weight, code CodeableConcept, unit variants [(weight, factor, decimals, unit)])
# factor converts the canonical value (10^9/L, g/L, umol/L, U/L, ms) to the reported unit.
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

_UNIT_TABLES = {a: {st: weighted([((f, d, u), w) for w, f, d, u in variants[1]]) for st, variants in per_style.items()}
                for a, per_style in LABS.items()}


class Observations(PatientBase):
    """The Observation resources of one patient: vitals at encounters, labs, ECGs, serology."""

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
            units[a] = self.draw(_UNIT_TABLES[a][style])
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
        unit = self.draw(_UNIT_TABLES["qtc"][style])
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
            q = {"value": num(round(0.5 * factor, decimals)), "comparator": "<", **u}
        elif r() < 0.006:
            q = {"value": num(value)}  # no unit at all
        else:
            q = {"value": num(value), **u}
        res: Json = {"resourceType": "Observation", "id": self.next_id("obs"), "status": status, "category": category,
                     "code": code, "subject": self.subject, "effectiveDateTime": eff, "issued": iss, "valueQuantity": q}
        if uln is not None:
            res["referenceRange"] = [{"high": {"value": num(round(uln * factor, decimals) if decimals else uln), **u}}]
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
