//! The demo record set: a GP practice and a hospital trust, their practitioners, four patients
//! with current and past medicines (dm+d coded, dose text and structured dosage), dispensing,
//! what they actually take, allergies and problems. One transaction Bundle whose entries all
//! carry `ifNoneExist`, so loading it twice adds nothing.

use crate::catalogue::{Medicine, MEDICINES};
use serde_json::{json, Value};

pub struct DemoPatient {
    pub nhs_number: &'static str,
    pub given: &'static str,
    pub family: &'static str,
    pub birth_date: &'static str,
    pub email: &'static str,
    pub gender: &'static str,
    pub postcode: &'static str,
}

pub fn demo_patients() -> Vec<DemoPatient> {
    vec![
        DemoPatient {
            nhs_number: "9434765919",
            given: "Amara",
            family: "Okafor",
            birth_date: "1958-04-12",
            email: "amara.okafor@example.org",
            gender: "female",
            postcode: "LS6 2AB",
        },
        DemoPatient {
            nhs_number: "9449307539",
            given: "David",
            family: "Hughes",
            birth_date: "1971-11-03",
            email: "david.hughes@example.org",
            gender: "male",
            postcode: "LS7 4HQ",
        },
        DemoPatient {
            nhs_number: "4010232137",
            given: "Priya",
            family: "Sharma",
            birth_date: "1989-07-22",
            email: "priya.sharma@example.org",
            gender: "female",
            postcode: "LS8 1QR",
        },
        DemoPatient {
            nhs_number: "9000000009",
            given: "Tomasz",
            family: "Nowak",
            birth_date: "1945-02-17",
            email: "tomasz.nowak@example.org",
            gender: "male",
            postcode: "LS2 9JT",
        },
    ]
}

/// A fixed, valid UUID for the n-th demo entry (urn:uuid references must not change between runs).
fn uuid(n: u32) -> String {
    format!("urn:uuid:6f1e0c2a-4b3d-4e5f-8a9b-{n:012}")
}

fn entry(n: u32, resource: Value, if_none_exist: String) -> Value {
    let t = resource["resourceType"].as_str().unwrap_or_default().to_string();
    json!({"fullUrl": uuid(n), "resource": resource, "request": {"method": "POST", "url": t, "ifNoneExist": if_none_exist}})
}

pub(crate) fn dosage(m: &Medicine) -> Value {
    let (freq, period, unit, when) = m.timing;
    let mut repeat = json!({"frequency": freq, "period": period, "periodUnit": unit});
    if let Some(w) = when {
        repeat["when"] = json!([w]);
    }
    json!({
        "text": m.dose,
        "timing": {"repeat": repeat},
        "route": {"coding": [{"system": "http://snomed.info/sct", "code": m.route.0, "display": m.route.1}]},
        "doseAndRate": [{"doseQuantity": {"value": m.unit.0, "unit": m.unit.1, "system": "http://snomed.info/sct", "code": m.unit.2}}]
    })
}

pub(crate) fn medicine_concept(m: &Medicine) -> Value {
    json!({"coding": [{"system": "https://dmd.nhs.uk", "code": m.code, "display": m.display}], "text": m.display})
}

fn organizations() -> Vec<Value> {
    vec![
        entry(
            1,
            json!({"resourceType": "Organization", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "Y12345"}],
            "active": true, "name": "Riverside Medical Practice", "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}],
            "telecom": [{"system": "phone", "value": "0113 496 0000"}],
            "address": [{"line": ["12 Riverside Road"], "city": "Leeds", "postalCode": "LS6 2AB", "country": "GB"}]}),
            "identifier=https://fhir.nhs.uk/Id/ods-organization-code|Y12345".into(),
        ),
        entry(
            2,
            json!({"resourceType": "Organization", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RR8"}],
            "active": true, "name": "Leeds Teaching Hospitals NHS Trust", "address": [{"line": ["St James's University Hospital", "Beckett Street"], "city": "Leeds", "postalCode": "LS9 7TF", "country": "GB"}]}),
            "identifier=https://fhir.nhs.uk/Id/ods-organization-code|RR8".into(),
        ),
    ]
}

/// (entry number, GMC/GPhC number, given, family, role, organization entry)
const PRACTITIONERS: &[(u32, &str, &str, &str, &str, u32)] = &[
    (3, "G7654321", "Helen", "Carter", "General practitioner", 1),
    (4, "C4455667", "Rajesh", "Patel", "Consultant cardiologist", 2),
    (5, "2098765", "Sian", "Evans", "Pharmacist", 1),
];

fn practitioners() -> Vec<Value> {
    let mut out = Vec::new();
    for (n, number, given, family, role, org) in PRACTITIONERS {
        let system = if *role == "Pharmacist" {
            "https://fhir.hl7.org.uk/Id/gphc-number"
        } else {
            "https://fhir.hl7.org.uk/Id/gmc-number"
        };
        out.push(entry(*n, json!({"resourceType": "Practitioner", "identifier": [{"system": system, "value": number}], "active": true,
            "name": [{"family": family, "given": [given], "prefix": [if *role == "Pharmacist" { "Ms" } else { "Dr" }]}]}), format!("identifier={system}|{number}")));
        out.push(entry(n + 10, json!({"resourceType": "PractitionerRole", "identifier": [{"system": "https://healthfolio.example/Id/role", "value": format!("role-{number}")}], "active": true,
            "practitioner": {"reference": uuid(*n)}, "organization": {"reference": uuid(*org)}, "code": [{"text": role}]}), format!("identifier=https://healthfolio.example/Id/role|role-{number}")));
    }
    out
}

fn patient(n: u32, p: &DemoPatient) -> Value {
    entry(
        n,
        json!({
            "resourceType": "Patient",
            "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
            "identifier": [{"system": crate::fhir::NHS_NUMBER_SYSTEM, "value": p.nhs_number}],
            "active": true,
            "name": [{"use": "official", "family": p.family, "given": [p.given]}],
            "gender": p.gender,
            "birthDate": p.birth_date,
            "telecom": [{"system": "email", "value": p.email}],
            "address": [{"use": "home", "city": "Leeds", "postalCode": p.postcode, "country": "GB"}],
            "generalPractitioner": [{"reference": uuid(1)}]
        }),
        format!("identifier={}|{}", crate::fhir::NHS_NUMBER_SYSTEM, p.nhs_number),
    )
}

/// (medicine index, status, authored, prescriber entry, dispenses)
type Prescription = (usize, &'static str, &'static str, u32, &'static [&'static str]);

const PRESCRIPTIONS: [&[Prescription]; 4] = [
    &[
        (0, "active", "2024-02-10", 3, &["2025-08-04T10:15:00Z", "2025-09-01T11:02:00Z", "2025-09-29T09:40:00Z"]),
        (1, "active", "2025-01-20", 3, &["2025-09-15T14:20:00Z"]),
        (4, "completed", "2023-11-02", 3, &["2023-11-02T16:30:00Z"]),
    ],
    &[
        (2, "active", "2023-05-15", 3, &["2025-06-10T09:00:00Z", "2025-10-02T12:45:00Z"]),
        (5, "stopped", "2024-07-01", 4, &[]),
    ],
    &[(3, "active", "2025-03-03", 3, &["2025-03-03T17:05:00Z"])],
    &[
        (0, "active", "2022-09-12", 4, &["2025-10-20T10:00:00Z"]),
        (6, "active", "2025-05-02", 3, &["2025-05-02T15:00:00Z", "2025-07-01T15:10:00Z"]),
        (1, "on-hold", "2024-12-01", 3, &[]),
    ],
];

fn medicines(pn: u32, pi: usize, next: &mut u32) -> Vec<Value> {
    let mut out = Vec::new();
    for (k, (mi, status, authored, prescriber, dispenses)) in PRESCRIPTIONS[pi].iter().enumerate() {
        let m = &MEDICINES[*mi];
        let rx = format!("RX-{}-{}", pi + 1, k + 1);
        let rn = *next;
        *next += 1;
        let mut mr = json!({"resourceType": "MedicationRequest", "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationRequest"]},
            "identifier": [{"system": "https://healthfolio.example/Id/prescription", "value": rx}],
            "status": status, "intent": "order", "medicationCodeableConcept": medicine_concept(m), "subject": {"reference": uuid(pn)},
            "authoredOn": authored, "requester": {"reference": uuid(*prescriber)}, "dosageInstruction": [dosage(m)],
            "dispenseRequest": {"quantity": {"value": m.pack, "unit": m.unit.1}, "numberOfRepeatsAllowed": 6, "expectedSupplyDuration": {"value": 28, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"}},
            "substitution": {"allowedBoolean": true}});
        if *status == "stopped" || *status == "on-hold" {
            mr["statusReason"] = json!({"text": if *status == "stopped" { "Stopped at hospital review" } else { "Paused while on antibiotics" }});
        }
        out.push(entry(rn, mr, format!("identifier=https://healthfolio.example/Id/prescription|{rx}")));
        for (d, when) in dispenses.iter().enumerate() {
            let id = format!("{rx}-D{}", d + 1);
            out.push(entry(*next, json!({"resourceType": "MedicationDispense", "identifier": [{"system": "https://healthfolio.example/Id/dispense", "value": id}],
                "status": "completed", "medicationCodeableConcept": medicine_concept(m), "subject": {"reference": uuid(pn)},
                "performer": [{"actor": {"reference": uuid(5)}}], "authorizingPrescription": [{"reference": uuid(rn)}],
                "quantity": {"value": m.pack, "unit": m.unit.1}, "whenHandedOver": when, "dosageInstruction": [{"text": m.dose}]}),
                format!("identifier=https://healthfolio.example/Id/dispense|{id}")));
            *next += 1;
        }
        if *status == "active" {
            out.push(entry(*next, json!({"resourceType": "MedicationStatement", "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationStatement"]},
                "identifier": [{"system": "https://healthfolio.example/Id/statement", "value": format!("{rx}-S")}],
                "status": "active", "medicationCodeableConcept": medicine_concept(m), "subject": {"reference": uuid(pn)},
                "basedOn": [{"reference": uuid(rn)}], "effectivePeriod": {"start": authored}, "dateAsserted": authored, "dosage": [{"text": m.dose}]}),
                format!("identifier=https://healthfolio.example/Id/statement|{rx}-S")));
            *next += 1;
        }
    }
    out
}

fn self_reported(pn: u32, next: &mut u32) -> Value {
    let m = &MEDICINES[5];
    *next += 1;
    entry(
        *next - 1,
        json!({"resourceType": "MedicationStatement", "identifier": [{"system": "https://healthfolio.example/Id/statement", "value": "OTC-1"}],
        "meta": {"tag": [{"system": crate::portal::taken::REVIEW_SYSTEM, "code": crate::portal::taken::UNREVIEWED, "display": "Added by the patient: not yet reviewed by a clinician"}]},
        "status": "active", "medicationCodeableConcept": medicine_concept(m), "subject": {"reference": uuid(pn)}, "informationSource": {"reference": uuid(pn)},
        "effectiveDateTime": "2025-10-05", "dateAsserted": "2025-10-06", "dosage": [{"text": "1 tablet when needed for back pain, bought over the counter"}],
        "note": [{"text": "Reported by the patient"}]}),
        "identifier=https://healthfolio.example/Id/statement|OTC-1".into(),
    )
}

fn allergy(n: u32, pn: u32, key: &str, code: (&str, &str), criticality: Option<&str>, reaction: bool) -> Value {
    let mut a = json!({"resourceType": "AllergyIntolerance", "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-AllergyIntolerance"]},
        "identifier": [{"system": "https://healthfolio.example/Id/allergy", "value": key}],
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
        "category": ["medication"], "code": {"coding": [{"system": "http://snomed.info/sct", "code": code.0, "display": code.1}]},
        "patient": {"reference": uuid(pn)}, "recordedDate": "2019-03-22", "recorder": {"reference": uuid(3)}});
    if let Some(c) = criticality {
        a["criticality"] = json!(c);
        a["type"] = json!("allergy");
    }
    if reaction {
        a["reaction"] = json!([{"manifestation": [{"coding": [{"system": "http://snomed.info/sct", "code": "247472004", "display": "Urticarial rash"}]}], "severity": "moderate"}]);
    }
    entry(n, a, format!("identifier=https://healthfolio.example/Id/allergy|{key}"))
}

fn condition(n: u32, pn: u32, key: &str, code: (&str, &str), onset: &str) -> Value {
    entry(
        n,
        json!({"resourceType": "Condition", "identifier": [{"system": "https://healthfolio.example/Id/problem", "value": key}],
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code.0, "display": code.1}]},
        "subject": {"reference": uuid(pn)}, "onsetDateTime": onset}),
        format!("identifier=https://healthfolio.example/Id/problem|{key}"),
    )
}

pub fn demo_bundle() -> Value {
    let mut entries = organizations();
    entries.extend(practitioners());
    let mut next = 100;
    for (i, p) in demo_patients().iter().enumerate() {
        let pn = 20 + i as u32;
        entries.push(patient(pn, p));
        entries.extend(medicines(pn, i, &mut next));
    }
    entries.push(self_reported(21, &mut next));
    entries.push(allergy(50, 20, "AL-1", ("764146007", "Substance with penicillin structure"), Some("high"), true));
    entries.push(allergy(51, 21, "AL-2", ("409137002", "No known drug allergy"), None, false));
    entries.push(allergy(52, 23, "AL-3", ("372687004", "Amoxicillin"), Some("low"), true));
    entries.push(condition(60, 20, "PR-1", ("38341003", "Hypertensive disorder"), "2012-05-01"));
    entries.push(condition(61, 20, "PR-2", ("55822004", "Hyperlipidemia"), "2014-09-10"));
    entries.push(condition(62, 21, "PR-3", ("195967001", "Asthma"), "1995-01-01"));
    entries.push(condition(63, 23, "PR-4", ("44054006", "Diabetes mellitus type 2"), "2016-03-15"));
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn bundle_is_self_contained_and_idempotent_by_design() {
        let b = demo_bundle();
        let entries = b["entry"].as_array().unwrap();
        let urls: HashSet<&str> = entries.iter().map(|e| e["fullUrl"].as_str().unwrap()).collect();
        assert_eq!(urls.len(), entries.len(), "fullUrls are unique");
        for e in entries {
            assert_eq!(e["request"]["method"], "POST");
            assert!(e["request"]["ifNoneExist"].as_str().is_some_and(|s| s.starts_with("identifier=")));
            let t = e["resource"]["resourceType"].as_str().unwrap();
            assert_eq!(crate::fhir::validate::validate(t, &e["resource"]), Ok(()), "{}", e["resource"]);
        }
        let text = b.to_string();
        for r in text.split("\"reference\":\"").skip(1) {
            let r = &r[..r.find('"').unwrap()];
            assert!(urls.contains(r), "{r} resolves inside the bundle");
        }
        assert!(demo_patients().iter().all(|p| crate::fhir::validate::nhs_number_valid(p.nhs_number)));
    }
}
