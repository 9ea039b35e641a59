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

Where things are:
    population.py    prevalences, the run's shared state (Generator), one Patient: demographics,
                     encounters, and the order its parts are built in
    patient.py       PatientBase: the random stream, ids, dates and weighted draws every part uses
    styles.py        coding styles (US, EU, CN): code systems, constructors, status codes,
                     routes, units, identifiers, names
    conditions.py    clinical content: target diseases and exclusions (Conditions, CAR-T)
    medications.py   clinical content: drugs, regimens, treatment plans, shared Medications
    observations.py  clinical content: labs, ECGs, serology, vital signs
    noise.py         common conditions, their drugs and procedures, and decoys
    writers.py       generate(): the output folder, NDJSON files or transaction Bundles
    command.py       the ``synth`` command line (add_parser, run)
"""

from .command import add_parser, run
from .conditions import CART, CONDITIONS, TEXT
from .medications import DRUGS, SHARED_MEDS
from .noise import NOISE, NOISE_MEDS, NOISE_PROCEDURES, NOISE_SHARED
from .observations import HB_MMOL, HBV_DNA, HCV_RNA, LABS, NEGATIVE, POSITIVE, PREG_STATUS, SEROLOGY, VITALS
from .population import DEFAULT_ANCHOR, DEFAULT_PREVALENCE, PREVALENCE_HELP, parse_prevalence
from .styles import ICD10, ICDCM, ICDCN, ROUTES, SCT
from .writers import NDJSON_TYPES, PATIENTS_PER_BUNDLE, generate

__all__ = [
    "add_parser", "run", "generate", "parse_prevalence", "DEFAULT_ANCHOR", "DEFAULT_PREVALENCE", "PREVALENCE_HELP",
    "NDJSON_TYPES", "PATIENTS_PER_BUNDLE",
    "CONDITIONS", "TEXT", "CART", "DRUGS", "SHARED_MEDS", "NOISE", "NOISE_MEDS", "NOISE_PROCEDURES", "NOISE_SHARED",
    "LABS", "HB_MMOL", "SEROLOGY", "HBV_DNA", "HCV_RNA", "PREG_STATUS", "POSITIVE", "NEGATIVE", "VITALS",
    "ROUTES", "SCT", "ICD10", "ICDCM", "ICDCN",
]
