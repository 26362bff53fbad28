//! Realistic resources for tests.

use serde_json::{json, Value};

pub fn patient(nhs: &str, family: &str, given: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1972-03-14"
    })
}

pub fn medication_request(patient: &str, code: &str, display: &str, status: &str, authored: &str) -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "status": status,
        "intent": "order",
        "subject": {"reference": format!("Patient/{patient}")},
        "medicationCodeableConcept": {"coding": [{"system": "https://dmd.nhs.uk", "code": code, "display": display}]},
        "authoredOn": authored,
        "dosageInstruction": [{"text": "1 tablet - once a day"}],
        "substitution": {"allowedBoolean": true}
    })
}

pub fn allergy(patient: &str, criticality: &str) -> Value {
    json!({
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": format!("Patient/{patient}")},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "764146007", "display": "Substance with penicillin structure"}]},
        "criticality": criticality,
        "recordedDate": "2024-05-01"
    })
}

pub const PARACETAMOL: (&str, &str) = ("322236009", "Paracetamol 500mg tablets");
pub const SIMVASTATIN: (&str, &str) = ("320000009", "Simvastatin 40mg tablets");
pub const NHS: [&str; 4] = ["9434765919", "9449307539", "4010232137", "9000000009"];
