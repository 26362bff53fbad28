//! The FHIR Consent view of a grant (conformance §7.1).

use super::Grant;
use crate::time::format_instant;
use serde_json::{json, Value};

pub fn consent_json(g: &Grant, now: i64) -> Value {
    let status = if g.is_active(now) { "active" } else { "inactive" };
    let actor = match (&g.client_id, &g.organization) {
        (_, Some(org)) => json!({"reference": org}),
        (Some(c), None) => json!({"identifier": {"system": "https://healthfolio.example/Id/client", "value": c}}),
        (None, None) => json!({"display": "unknown"}),
    };
    let classes: Vec<Value> = g
        .scopes()
        .resources
        .iter()
        .map(|s| json!({"system": "http://hl7.org/fhir/resource-types", "code": s.resource.clone().unwrap_or_else(|| "*".into())}))
        .collect();
    let actions: Vec<Value> = {
        let scopes = g.scopes();
        let read = scopes.resources.iter().any(|s| s.read || s.search);
        let write = scopes.resources.iter().any(|s| s.create || s.update || s.delete);
        [(read, "access"), (write, "correct")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, code)| json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": code}]}))
            .collect()
    };
    let mut period = json!({"start": format_instant(g.created_at)});
    if let Some(end) = g.revoked_at.or(g.expires_at) {
        period["end"] = json!(format_instant(end));
    }
    json!({
        "resourceType": "Consent",
        "id": g.id,
        "meta": {"versionId": "1", "lastUpdated": format_instant(g.revoked_at.unwrap_or(g.created_at))},
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"reference": format!("Patient/{}", g.patient_id)},
        "dateTime": format_instant(g.created_at),
        "performer": [{"reference": format!("Patient/{}", g.patient_id)}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": period,
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}, "reference": actor}],
            "action": actions,
            "class": classes,
            "extension": [{"url": "https://healthfolio.example/fhir/StructureDefinition/granted-scope", "valueString": g.scope}]
        }
    })
}
