"""Medications: drugs per coding style, dose regimens, treatment plans, and how a patient is treated.

``DRUGS[key][style]`` lists the products (concept, strength per tablet, shared Medication key);
``REGIMENS`` the usual doses; ``PLANS[target]`` which drug classes a patient with that disease
gets. ``SHARED_MEDS`` are the Medication resources that records name by reference.
``Medications`` writes MedicationRequest / MedicationStatement histories: steroid courses with
tapers, ended and active drugs, doses, entered-in-error records.
"""

from __future__ import annotations

from .patient import PatientBase, num, weighted
from .styles import DOSE_ORDERED, RXN, ROUTES, SCT, U, Json, _atc, _c, _cc, _cnd, _rx, _t

# Per style a list of products: (concept, strength mg per tablet or None, shared Medication key or None).
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
SHARED_MED_KEYS = tuple(SHARED_MEDS)



def shared_med_id(seed: int, key: str) -> str:
    return f"s{seed}-med-{SHARED_MED_KEYS.index(key) + 1}"


def shared_medication(seed: int, key: str) -> Json:
    """The Medication resource ``key`` of SHARED_MEDS."""
    concept, form = SHARED_MEDS[key]
    return {"resourceType": "Medication", "id": shared_med_id(seed, key), "code": concept, "form": form}


_PLAN_TABLES = {t: [(prob, weighted([(d, w) for w, d in choices])) for prob, choices in plan] for t, plan in PLANS.items()}
_REGIMEN_TABLES = {d: weighted([(tuple(reg), w) for w, *reg in regs]) for d, regs in REGIMENS.items()}


class Medications(PatientBase):
    """The medication history of one patient: the treatment of a target disease; ``drug()`` writes one record."""

    def treatment(self, target: str) -> None:
        r, rng = self.r, self.rng
        if r() < 0.04:
            return  # no medication data at all
        onset = self.onset
        one_class = r() < 0.05
        drugs: list[str] = []
        for prob, table in _PLAN_TABLES[target]:
            if r() < prob:
                drugs.append(self.draw(table))
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
        r, style = self.r, self.style
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
            med = {"medicationReference": self.shared_med(shared)}
            if concept.get("text"):
                med["medicationReference"]["display"] = concept["text"]
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

    def shared_med(self, key: str) -> Json:
        """A reference to the shared Medication ``key``, noted for the Bundle being written."""
        self.g.used_meds.append(key)
        return {"reference": self.g.ref("Medication", shared_med_id(self.g.seed, key))}

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
                q: Json = {"value": num(dose / strength), **unit}
            else:
                q = {"value": num(round(dose, 2)), **U["mg"]}
            repeat: Json = {"frequency": freq, "period": 1, "periodUnit": "d"}
        else:
            table = _REGIMEN_TABLES.get(drug)
            if not table:
                return None
            value, unit_key, freq, period, period_unit = self.draw(table)
            if unit_key == "mg" and style == "cn" and value >= 250 and r() < 0.5:
                q = {"value": num(value / 1000), **U["g"]}
            else:
                q = {"value": num(value), **U[unit_key]}
            repeat = {"frequency": freq, "period": num(period), "periodUnit": period_unit}
        return {"timing": {"repeat": repeat}, "route": route, "doseAndRate": [{"type": DOSE_ORDERED, "doseQuantity": q}]}
