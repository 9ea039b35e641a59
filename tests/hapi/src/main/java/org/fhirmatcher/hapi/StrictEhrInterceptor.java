package org.fhirmatcher.hapi;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.RestOperationTypeEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.exceptions.InvalidRequestException;

import java.util.Map;
import java.util.Set;

/**
 * Makes the test server behave like the hospital EHR endpoints that only allow patient-scoped
 * access (Epic, Oracle Health/Cerner), so the matcher's patient-list and Group strategies are
 * tested against the same refusals:
 *
 * <ul>
 *   <li>a search on a clinical type must name a patient: {@code patient}, {@code subject} or
 *       {@code _id} (for Patient: {@code _id} or {@code identifier});</li>
 *   <li>at most one patient per search ({@code patient=a,b}, repeated {@code patient} parameters,
 *       or {@code Patient?_id=a,b} are refused);</li>
 *   <li>no type or system {@code _history} on clinical types, no system-level or Patient-level
 *       {@code $export}, no type-level {@code $everything};</li>
 *   <li>allowed: reads (and instance operations such as {@code Group/[id]/$export}), paging
 *       links, {@code $export-poll-status}, Binary downloads, writes and transactions, and
 *       searches on non-clinical types (ResearchStudy, ResearchSubject, Group, Medication, ...).</li>
 * </ul>
 *
 * A refusal is HTTP 400 with an OperationOutcome whose diagnostics say why, as those servers do.
 * Installed only with {@code --strict} (or {@code -Dfhirmatcher.strict=true}).
 */
@Interceptor
public final class StrictEhrInterceptor {

	/** Clinical resource types (the patient compartment's clinical data). */
	static final Set<String> CLINICAL = Set.of(
			"Patient", "Condition", "Observation", "MedicationStatement", "MedicationRequest",
			"MedicationAdministration", "MedicationDispense", "Procedure", "Consent", "Encounter",
			"AllergyIntolerance", "DiagnosticReport", "Immunization", "CarePlan", "CareTeam",
			"DocumentReference", "ServiceRequest", "Specimen", "FamilyMemberHistory", "Goal", "Coverage",
			"ClinicalImpression", "Flag", "RiskAssessment", "NutritionOrder", "EpisodeOfCare",
			"QuestionnaireResponse", "Communication", "DeviceRequest", "ImagingStudy");

	private static final Set<String> PATIENT_PARAMS = Set.of("patient", "patient:Patient", "subject", "subject:Patient");

	@Hook(Pointcut.SERVER_INCOMING_REQUEST_PRE_HANDLED)
	public void check(RequestDetails theRequest, RestOperationTypeEnum theOperation) {
		RestOperationTypeEnum op = theOperation;
		if (op == null) {
			return;
		}
		String type = theRequest.getResourceName();
		String operation = theRequest.getOperation();
		switch (op) {
			case SEARCH_TYPE -> checkSearch(type, theRequest.getParameters());
			case HISTORY_SYSTEM -> refuse("system history is not supported; read resources patient by patient");
			case HISTORY_TYPE -> {
				if (CLINICAL.contains(type)) {
					refuse(type + " history is not supported; search it patient by patient with _lastUpdated");
				}
			}
			case EXTENDED_OPERATION_SERVER -> {
				if ("$export".equals(operation)) {
					refuse("system-level $export is not supported; use Group/[id]/$export with a Group of patients");
				}
			}
			case EXTENDED_OPERATION_TYPE -> {
				if ("$export".equals(operation) || "$everything".equals(operation)) {
					refuse(type + "/" + operation + " is not supported; use Group/[id]/$export or Patient/[id]/$everything");
				}
			}
			default -> { }
		}
	}

	static void checkSearch(String theType, Map<String, String[]> theParams) {
		if (theType == null || !CLINICAL.contains(theType)) {
			return;
		}
		int patients = 0;
		boolean scoped = false;
		for (Map.Entry<String, String[]> e : theParams.entrySet()) {
			String key = e.getKey();
			boolean patientKey = PATIENT_PARAMS.contains(key) || ("Patient".equals(theType) && "_id".equals(key));
			if (patientKey) {
				scoped = true;
				for (String v : e.getValue()) {
					patients += v == null || v.isBlank() ? 0 : v.split(",", -1).length;
				}
			} else if ("_id".equals(key) || ("Patient".equals(theType) && "identifier".equals(key))) {
				scoped = true;
			}
		}
		if (!scoped) {
			refuse("Patient".equals(theType)
					? "a Patient search needs _id or identifier"
					: "a " + theType + " search needs a patient (or subject or _id) parameter");
		}
		if (patients > 1) {
			refuse("a " + theType + " search accepts only one patient");
		}
	}

	private static void refuse(String theMessage) {
		throw new InvalidRequestException(theMessage);
	}
}
