//! `Patient/{id}/$summary`: an International Patient Summary document (IPS 2.0.1) with the
//! medication, allergy and problem sections (conformance §6.2).

use crate::access::AccessContext;
use crate::audit::AuditEntry;
use crate::fhir::search::{self, SearchRequest};
use crate::fhir::store::{new_id, Stored};
use crate::fhir::{time, FhirError, Interaction, Store};
use serde_json::{json, Value};

struct Section {
    title: &'static str,
    loinc: &'static str,
    types: &'static [(&'static str, &'static [(&'static str, &'static str)])],
    /// What an empty section holds instead: a resource of this type saying that no information is
    /// available (not "none": nothing here proves the patient takes or has nothing).
    absent: &'static str,
}

/// SNOMED CT 1287211007 "No information available" (IPS, for an empty required section).
const NO_INFORMATION: (&str, &str) = ("1287211007", "No information available");

const SECTIONS: &[Section] = &[
    Section {
        title: "Medication Summary",
        loinc: "10160-0",
        types: &[
            ("MedicationStatement", &[("status", "active,intended,on-hold")]),
            ("MedicationRequest", &[("status", "active,on-hold")]),
        ],
        absent: "MedicationStatement",
    },
    Section {
        title: "Allergies and Intolerances",
        loinc: "48765-2",
        types: &[("AllergyIntolerance", &[("clinical-status", "active")])],
        absent: "AllergyIntolerance",
    },
    Section {
        title: "Problem List",
        loinc: "11450-4",
        types: &[("Condition", &[("clinical-status", "active,recurrence,relapse")])],
        absent: "Condition",
    },
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A one-line human description of a resource for the section narrative.
pub fn label(v: &Value) -> String {
    let concept = v
        .get("medicationCodeableConcept")
        .or_else(|| v.get("code"))
        .map(|c| {
            c.get("text")
                .or_else(|| c["coding"].get(0).and_then(|x| x.get("display")))
                .and_then(Value::as_str)
                .unwrap_or("(unnamed)")
        })
        .unwrap_or("(unnamed)");
    let dose = v
        .get("dosage")
        .or_else(|| v.get("dosageInstruction"))
        .and_then(|d| d.get(0))
        .and_then(|d| d.get("text"))
        .and_then(Value::as_str);
    match (dose, v.get("criticality").and_then(Value::as_str)) {
        (Some(d), _) => format!("{concept}: {d}"),
        (None, Some(c)) => format!("{concept} (criticality: {c})"),
        _ => concept.to_string(),
    }
}

/// The document-only resource of an empty section: "No information available" about `patient`.
fn no_information(s: &Section, patient: &str) -> Value {
    let concept = json!({"coding": [{"system": "http://snomed.info/sct", "code": NO_INFORMATION.0, "display": NO_INFORMATION.1}]});
    let subject = json!({"reference": format!("Patient/{patient}")});
    let active = |system: &str| json!({"coding": [{"system": system, "code": "active"}]});
    let mut r = json!({"resourceType": s.absent, "id": new_id()});
    match s.absent {
        "MedicationStatement" => {
            r["status"] = json!("unknown");
            r["medicationCodeableConcept"] = concept;
            r["subject"] = subject;
            r["_effectiveDateTime"] = json!({"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]});
        }
        "AllergyIntolerance" => {
            r["clinicalStatus"] = active("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical");
            r["code"] = concept;
            r["patient"] = subject;
        }
        _ => {
            r["clinicalStatus"] = active("http://terminology.hl7.org/CodeSystem/condition-clinical");
            r["code"] = concept;
            r["subject"] = subject;
        }
    }
    r
}

fn section(s: &Section, found: &[Stored], absent: Option<&Value>, withheld: bool) -> Value {
    let bodies: Vec<Value> = found.iter().map(|f| serde_json::from_str(&f.body).unwrap_or(Value::Null)).collect();
    let mut v = json!({"title": s.title, "code": {"coding": [{"system": "http://loinc.org", "code": s.loinc}]}});
    if found.is_empty() && withheld {
        // Not "no information": what is held here is not shared with this caller.
        v["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Not shared with you</div>"});
        v["emptyReason"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "withheld", "display": "Information Withheld"}]});
    } else if let Some(a) = absent {
        v["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">No information available</div>"});
        v["entry"] = json!([{"reference": format!("urn:uuid:{}", a["id"].as_str().unwrap_or_default())}]);
    } else {
        let items: String = bodies.iter().map(|b| format!("<li>{}</li>", escape(&label(b)))).collect();
        v["text"] = json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><ul>{items}</ul></div>")});
        v["entry"] =
            Value::Array(found.iter().map(|f| json!({"reference": format!("{}/{}", f.rtype, f.id)})).collect());
    }
    v
}

/// Builds the IPS document for `patient` from what the caller may read.
pub fn summary(store: &Store, ctx: &AccessContext, patient: &str) -> Result<Value, FhirError> {
    let p = store.read(ctx, "Patient", patient)?;
    let mut conn = store.db.conn()?;
    let mut sections = Vec::new();
    let mut entries = vec![entry(&store.base, &p)];
    for s in SECTIONS {
        let mut found = Vec::new();
        let mut withheld = false;
        for (t, filters) in s.types {
            if !ctx.may_touch(&mut conn, t, Some(patient), Interaction::Search)? {
                withheld = true;
                continue;
            }
            let mut params: Vec<(String, String)> =
                filters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            params.push(("_count".into(), "1000".into()));
            let req =
                SearchRequest { rtype: t.to_string(), params, compartment: Some(patient.to_string()), strict: false };
            match search::run(&mut conn, ctx, &req) {
                Ok(r) => found.extend(r.matches),
                // A type the caller may not read is left out of the summary, not an error.
                Err(FhirError::Forbidden(_)) => withheld = true,
                Err(e) => return Err(e),
            }
        }
        entries.extend(found.iter().map(|f| entry(&store.base, f)));
        let absent = (found.is_empty() && !withheld).then(|| no_information(s, patient));
        if let Some(a) = &absent {
            entries
                .push(json!({"fullUrl": format!("urn:uuid:{}", a["id"].as_str().unwrap_or_default()), "resource": a}));
        }
        sections.push(section(s, &found, absent.as_ref(), withheld));
    }
    let now = time::format_instant(crate::time::now_micros());
    let composition = json!({
        "resourceType": "Composition",
        "id": new_id(),
        "meta": {"profile": ["http://hl7.org/fhir/uv/ips/StructureDefinition/Composition-uv-ips"]},
        "status": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5", "display": "Patient summary Document"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "date": now,
        "author": [{"display": "Healthfolio"}],
        "title": "Patient Summary",
        "section": sections,
    });
    let composition_url = format!("{}/Composition/{}", store.base, composition["id"].as_str().unwrap_or_default());
    entries.insert(0, json!({"fullUrl": composition_url, "resource": composition}));
    store.audit.record(ctx, AuditEntry::operation("$summary", "Patient", patient, Ok(entries.len())));
    Ok(json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"profile": ["http://hl7.org/fhir/uv/ips/StructureDefinition/Bundle-uv-ips"]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", new_id())},
        "type": "document",
        "timestamp": now,
        "entry": entries,
    }))
}

fn entry(base: &str, s: &Stored) -> Value {
    json!({"fullUrl": format!("{base}/{}/{}", s.rtype, s.id), "resource": serde_json::from_str::<Value>(&s.body).unwrap_or(Value::Null)})
}
