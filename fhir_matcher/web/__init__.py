"""The coordinators' review web app (issue 14): ``fhir-matcher serve``."""
