"""The population: who the patients are.

``DEFAULT_PREVALENCE`` says how many patients have each feature (overridable with
``--prevalence``); ``Patient`` builds one patient, part by part, from its own random stream:
demographics and encounters here, then the parts in conditions.py, medications.py,
observations.py and noise.py.
"""

from __future__ import annotations

from datetime import date

from .conditions import CONDITIONS, Conditions
from .medications import Medications
from .noise import Noise
from .observations import Observations
from .patient import weighted
from .styles import CITIES, ENC_CLASS, ENC_TYPE, ENC_TYPE_CN, MRN, NAMES, Json

DEFAULT_ANCHOR = date(2026, 11, 24)  # the day the histories end on (--start-date)

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
TARGET_TABLE = weighted(TARGET_SPLIT)

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


def check_prevalence(prevalence: dict[str, float] | None) -> dict[str, float]:
    merged = dict(DEFAULT_PREVALENCE)
    for key, value in (prevalence or {}).items():
        k = str(key).lower().replace("_", "-")
        if k not in DEFAULT_PREVALENCE:
            raise ValueError(f"unknown prevalence key {key!r} (known: {', '.join(DEFAULT_PREVALENCE)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0 or value != value:
            raise ValueError(f"prevalence {k}={value!r} must be a number between 0 and 1")
        merged[k] = float(value)
    return merged


class Patient(Conditions, Medications, Observations, Noise):
    """Builds one patient's resources, in order, from its own random stream."""

    def build(self) -> list[tuple[str, Json]]:
        g, r, rng = self.g, self.r, self.rng
        p = g.prevalence
        # demographics
        target = None
        if r() < p["target"]:
            target = self.draw(TARGET_TABLE)
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
        noise_keys = self.noise_conditions()
        if target:
            self.target_conditions(target)
        elif r() < 0.003:  # hygiene decoy: an SLE diagnosis that was entered in error or refuted
            self.condition(CONDITIONS, "sle", rng.randint(30, self.span), "active", verification=rng.choice(("entered-in-error", "refuted")))
        self.exclusions()

        # medications
        if target:
            self.treatment(target)
        self.noise_medications(noise_keys)
        # labs, ECGs, serology
        latest = None
        if target or r() < p["labs"]:
            latest = self.labs(cohort=bool(target))
        if target and r() < 0.88 or not target and r() < 0.04 or self.qtc_high:
            self.ecg(latest)
        self.serology()
        # procedures
        self.noise_procedure()
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
