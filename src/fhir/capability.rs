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

/// Where the operations this server defines itself are named.
const OWN: &str = "https://healthfolio.example/fhir/OperationDefinition";

/// The operations served: (resource type, or `None` at the base; name; definition; documentation).
const OPERATIONS: &[(Option<&str>, &str, &str, &str)] = &[
    (
        None,
        "export",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
        "Bulk Data export of every record the token reaches (`Prefer: respond-async`).",
    ),
    (
        None,
        "phr-import",
        "phr-import",
        "Imports one patient's record (a collection Bundle from `$phr-export`, or NDJSON) in one transaction, with \
      new ids, rewritten references and a Provenance naming each resource's origin; `strategy=merge` (default: \
      what an earlier import brought is not added again) or `append`. Only the patient or an operator may import: \
      the record is the patient's to bring, so a provider system or practitioner is refused (403) whatever its \
      scopes or grant (`patient/*.cruds` too). A patient's token imports into their own record (same NHS number). \
      An operator names the record with `?patient=ID` (same NHS number), or names none and the file's Patient \
      becomes a record here.",
    ),
    (
        None,
        "import",
        "import",
        "Bulk extract from a federated source: a Parameters naming NDJSON files at the source, or one uploaded \
      NDJSON file with `?source=NAME`.",
    ),
    (
        None,
        "process-message",
        "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
        "A provider's event message, idempotent on the message id.",
    ),
    (
        Some("Patient"),
        "everything",
        "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        "The record, paged, with what it refers to (`start`, `end`, `_since`, `_type`, `_count`).",
    ),
    (
        Some("Patient"),
        "summary",
        "http://hl7.org/fhir/uv/ips/OperationDefinition/summary",
        "An International Patient Summary document Bundle.",
    ),
    (
        Some("Patient"),
        "phr-export",
        "phr-export",
        "The record as one collection Bundle or NDJSON (`outputFormat`), with its grants as Consent and its access \
      log as AuditEvent.",
    ),
    (
        Some("Patient"),
        "export",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
        "Bulk Data export of the patients the token reaches.",
    ),
    (
        Some("Patient"),
        "close",
        "close",
        "Closes a record that moved (`replacedBy`): it points to its new home and takes no new writes.",
    ),
    (Some("Patient"), "invite", "invite", "A one-time link with which the patient sets up their own login."),
    (
        Some("Group"),
        "export",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
        "Bulk Data export of a cohort's members whose grants cover the caller.",
    ),
];

fn operations(at: Option<&str>) -> Vec<Value> {
    OPERATIONS
        .iter()
        .filter(|(on, ..)| *on == at)
        .map(|(_, name, definition, documentation)| {
            let definition =
                if definition.starts_with("http") { definition.to_string() } else { format!("{OWN}/{definition}") };
            json!({"name": name, "definition": definition, "documentation": documentation})
        })
        .collect()
}

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
    let ops = operations(Some(rtype));
    if !ops.is_empty() {
        r["operation"] = json!(ops);
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
            "operation": operations(None),
        }]
    })
}
