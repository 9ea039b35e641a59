"""fhir-matcher: screen FHIR R4 patients for clinical-trial eligibility, with evidence."""

__version__ = "0.1.0"
