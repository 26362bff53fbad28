//! The CapabilityStatement: generated from the same tables the server runs on, so it says exactly
//! what is served.

use super::params::params_for;
use super::{READ_ONLY_TYPES, RESOURCE_TYPES};
use serde_json::{json, Value};

const UK_CORE: &[(&str, &str)] = &[
    ("Patient", "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"),
    ("MedicationRequest", "https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationRequest"),
    ("MedicationStatement", "https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationStatement"),
    ("AllergyIntolerance", "https://fhir.hl7.org.uk/StructureDefinition/UKCore-AllergyIntolerance"),
    ("Medication", "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Medication"),
];

fn resource(rtype: &str) -> Value {
    let read_only = READ_ONLY_TYPES.contains(&rtype);
    let interactions: Vec<Value> = if read_only {
        vec!["read", "search-type"]
    } else {
        vec!["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"]
    }
    .into_iter()
    .map(|c| json!({"code": c}))
    .collect();
    let mut search_params: Vec<Value> =
        vec![json!({"name": "_id", "type": "token"}), json!({"name": "_lastUpdated", "type": "date"})];
    search_params.extend(params_for(rtype).iter().map(|p| {
        json!({"name": p.name, "type": p.kind.as_str(),
               "definition": format!("http://hl7.org/fhir/SearchParameter/{rtype}-{}", p.name)})
    }));
    let includes: Vec<String> = params_for(rtype)
        .iter()
        .filter(|p| p.kind == super::params::Kind::Reference)
        .map(|p| format!("{rtype}:{}", p.name))
        .collect();
    let mut r = json!({
        "type": rtype,
        "interaction": interactions,
        "versioning": "versioned-update",
        "readHistory": true,
        "updateCreate": !read_only,
        "conditionalCreate": !read_only,
        "conditionalUpdate": !read_only,
        "conditionalDelete": "not-supported",
        "searchInclude": includes,
        "searchRevInclude": ["Provenance:target"],
        "searchParam": search_params,
    });
    if let Some((_, url)) = UK_CORE.iter().find(|(t, _)| *t == rtype) {
        r["supportedProfile"] = json!([url]);
    }
    r
}

/// The CapabilityStatement for a server whose public URL is `base_url` (FHIR base is `{base_url}/fhir`).
pub fn capability_statement(base_url: &str, security: Value) -> Value {
    json!({
        "resourceType": "CapabilityStatement",
        "id": "healthfolio",
        "status": "active",
        "date": "2026-11-25",
        "publisher": "Healthfolio",
        "kind": "instance",
        "software": {"name": "Healthfolio", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Healthfolio patient-owned medicines record", "url": format!("{base_url}/fhir")},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": security,
            "resource": RESOURCE_TYPES.iter().map(|t| resource(t)).collect::<Vec<_>>(),
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
        }]
    })
}
