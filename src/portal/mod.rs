//! What the patient portal shows, assembled from the record through the same access checks and
//! audit as the API (the signed-in patient's own context). No HTTP here.

use crate::audit::{search_audit_events, AuditQuery, AuditRow};
use crate::auth::oauth::describe;
use crate::auth::{AccessContext, Reach, Scopes};
use crate::consent::{self, Grant, Grantee, NewGrant};
use crate::db::Db;
use crate::fhir::search::{SearchRequest, SearchResult};
use crate::fhir::store::WriteOptions;
use crate::fhir::{now_micros, time, FhirError, Store, NHS_NUMBER_SYSTEM};
use serde_json::{json, Value};

/// The signed-in patient acting on their own record through the portal.
pub fn patient_context(patient: &str, account: &str) -> AccessContext {
    AccessContext {
        subject: account.to_string(),
        client_id: "portal".to_string(),
        scopes: Scopes::parse("patient/*.cruds"),
        reach: Reach::Patient(patient.to_string()),
        grant_scopes: None,
        token_id: None,
    }
}

/// `9434765919` as `943 476 5919`.
pub fn format_nhs(n: &str) -> String {
    if n.len() == 10 {
        format!("{} {} {}", &n[..3], &n[3..6], &n[6..])
    } else {
        n.to_string()
    }
}

#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub nhs_number: String,
    pub birth_date: String,
}

#[derive(Debug, Clone)]
pub struct MedicineLine {
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub dose: String,
    pub status: String,
    pub since: String,
    pub reported_by_you: bool,
    pub current: bool,
}

#[derive(Debug, Clone)]
pub struct AllergyLine {
    pub name: String,
    pub criticality: String,
    pub status: String,
}

fn search(
    store: &Store,
    ctx: &AccessContext,
    rtype: &str,
    patient: &str,
    params: &[(&str, &str)],
) -> Result<SearchResult, FhirError> {
    let mut p: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    p.push(("_count".into(), "500".into()));
    store.search(
        ctx,
        &SearchRequest { rtype: rtype.into(), params: p, compartment: Some(patient.into()), strict: false },
    )
}

fn bodies(r: &SearchResult) -> Vec<Value> {
    r.matches.iter().map(|m| serde_json::from_str(&m.body).unwrap_or(Value::Null)).collect()
}

fn concept_name(v: &Value) -> String {
    let c = v.get("medicationCodeableConcept").or_else(|| v.get("code")).cloned().unwrap_or(Value::Null);
    c["text"].as_str().or(c["coding"][0]["display"].as_str()).unwrap_or("Unnamed medicine").to_string()
}

pub fn person(store: &Store, ctx: &AccessContext, patient: &str) -> Result<Person, FhirError> {
    let p: Value = serde_json::from_str(&store.read(ctx, "Patient", patient)?.body).unwrap_or(Value::Null);
    let n = &p["name"][0];
    let given = n["given"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let nhs = p["identifier"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["system"] == NHS_NUMBER_SYSTEM))
        .and_then(|i| i["value"].as_str())
        .unwrap_or_default();
    Ok(Person {
        name: format!("{given} {}", n["family"].as_str().unwrap_or_default()).trim().to_string(),
        nhs_number: format_nhs(nhs),
        birth_date: p["birthDate"].as_str().unwrap_or_default().to_string(),
    })
}

/// Prescriptions and what the patient takes, current first.
pub fn medicines(store: &Store, ctx: &AccessContext, patient: &str) -> Result<Vec<MedicineLine>, FhirError> {
    let mut out = Vec::new();
    for r in bodies(&search(store, ctx, "MedicationRequest", patient, &[])?) {
        let status = r["status"].as_str().unwrap_or_default().to_string();
        out.push(MedicineLine {
            kind: "MedicationRequest",
            id: r["id"].as_str().unwrap_or_default().into(),
            name: concept_name(&r),
            dose: r["dosageInstruction"][0]["text"].as_str().unwrap_or("No dose instructions").into(),
            current: matches!(status.as_str(), "active" | "on-hold"),
            status,
            since: r["authoredOn"].as_str().unwrap_or_default().into(),
            reported_by_you: false,
        });
    }
    for s in bodies(&search(store, ctx, "MedicationStatement", patient, &[])?) {
        let status = s["status"].as_str().unwrap_or_default().to_string();
        out.push(MedicineLine {
            kind: "MedicationStatement",
            id: s["id"].as_str().unwrap_or_default().into(),
            name: concept_name(&s),
            dose: s["dosage"][0]["text"].as_str().unwrap_or("No dose instructions").into(),
            current: matches!(status.as_str(), "active" | "intended"),
            status,
            since: s["effectiveDateTime"]
                .as_str()
                .or(s["effectivePeriod"]["start"].as_str())
                .unwrap_or_default()
                .into(),
            reported_by_you: s["informationSource"]["reference"].as_str() == Some(&format!("Patient/{patient}")),
        });
    }
    out.sort_by(|a, b| b.current.cmp(&a.current).then(b.since.cmp(&a.since)));
    Ok(out)
}

pub fn allergies(store: &Store, ctx: &AccessContext, patient: &str) -> Result<Vec<AllergyLine>, FhirError> {
    Ok(bodies(&search(store, ctx, "AllergyIntolerance", patient, &[])?)
        .iter()
        .map(|a| AllergyLine {
            name: concept_name(a),
            criticality: a["criticality"].as_str().unwrap_or("not recorded").replace('-', " "),
            status: a["clinicalStatus"]["coding"][0]["code"].as_str().unwrap_or("unknown").into(),
        })
        .collect())
}

/// A medicine the patient says they take (patient-reported: `informationSource` is the patient).
pub fn add_taken(
    store: &Store,
    ctx: &AccessContext,
    patient: &str,
    code: &str,
    name: &str,
    dose: &str,
    start: &str,
) -> Result<String, FhirError> {
    if time::parse_range(start).is_none() {
        return Err(FhirError::invalid("the start date must be a date such as 2025-03-14"));
    }
    if dose.trim().is_empty() || dose.len() > 500 {
        return Err(FhirError::invalid("say how you take it (up to 500 characters)"));
    }
    let body = json!({
        "resourceType": "MedicationStatement", "status": "active",
        "medicationCodeableConcept": {"coding": [{"system": crate::fhir::DMD_SYSTEM, "code": code, "display": name}], "text": name},
        "subject": {"reference": format!("Patient/{patient}")}, "informationSource": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": start, "dateAsserted": time::today(), "dosage": [{"text": dose.trim()}]
    });
    Ok(store.create(ctx, "MedicationStatement", body, &WriteOptions::default())?.stored.id)
}

/// One line of the Sharing page.
#[derive(Debug, Clone)]
pub struct Share {
    pub id: String,
    pub who: String,
    pub what: Vec<String>,
    pub since: String,
    pub until: String,
    pub last_used: String,
    pub active: bool,
}

fn day(micros: i64) -> String {
    time::format_instant(micros).get(..10).unwrap_or_default().to_string()
}

pub fn sharing(db: &Db, patient: &str) -> Result<Vec<Share>, FhirError> {
    let mut conn = db.conn()?;
    let now = now_micros();
    let grants: Vec<Grant> = consent::list(&mut conn, Some(patient)).map_err(|e| FhirError::invalid(e.to_string()))?;
    let clients = crate::auth::clients::list(&mut conn).unwrap_or_default();
    Ok(grants
        .into_iter()
        .map(|g| {
            let who = match (&g.client_id, &g.organization) {
                (Some(c), _) => clients.iter().find(|x| &x.client_id == c).map_or(c.clone(), |x| x.name.clone()),
                (None, Some(o)) => {
                    clients.iter().find(|x| x.organization.as_ref() == Some(o)).map_or(o.clone(), |x| x.name.clone())
                }
                _ => "unknown".into(),
            };
            Share {
                id: g.id.clone(),
                who,
                what: g.scopes().resources.iter().map(describe).collect(),
                since: day(g.created_at),
                until: g.revoked_at.or(g.expires_at).map(day).unwrap_or_else(|| "until you stop it".into()),
                last_used: g.last_used_at.map(day).unwrap_or_else(|| "not yet".into()),
                active: g.is_active(now),
            }
        })
        .collect())
}

/// Provider organisations a patient can choose to share with (registered provider systems).
pub fn providers(db: &Db) -> Result<Vec<(String, String)>, FhirError> {
    let mut conn = db.conn()?;
    let clients = crate::auth::clients::list(&mut conn).map_err(|e| FhirError::invalid(e.to_string()))?;
    Ok(clients.into_iter().filter_map(|c| c.organization.map(|o| (o, c.name))).collect())
}

pub fn share_with(
    db: &Db,
    patient: &str,
    organization: &str,
    scope: &str,
    until: Option<&str>,
) -> Result<(), FhirError> {
    if !providers(db)?.iter().any(|(o, _)| o == organization) {
        return Err(FhirError::invalid("choose one of the listed providers"));
    }
    let expires_at = match until.filter(|u| !u.is_empty()) {
        Some(u) => Some(
            time::parse_range(u)
                .ok_or_else(|| FhirError::invalid("the end date must be a date such as 2026-06-30"))?
                .hi,
        ),
        None => None,
    };
    let g = NewGrant {
        patient_id: patient.into(),
        grantee: Grantee::Organization(organization.into()),
        scope: scope.into(),
        expires_at,
        created_by: format!("Patient/{patient}"),
    };
    db.transaction(|c| consent::grant(c, &g)).map(|_| ()).map_err(|e| FhirError::invalid(e.to_string()))
}

/// Ends one of the patient's own grants (never another patient's).
pub fn stop_sharing(db: &Db, patient: &str, grant: &str) -> Result<(), FhirError> {
    let mut conn = db.conn()?;
    let g = consent::get(&mut conn, grant).map_err(|_| FhirError::not_found("Consent", grant))?;
    if g.patient_id != patient {
        return Err(FhirError::not_found("Consent", grant));
    }
    consent::revoke(&mut conn, grant).map(|_| ()).map_err(|e| FhirError::invalid(e.to_string()))
}

pub fn access_log(db: &Db, patient: &str, from: Option<&str>, to: Option<&str>) -> Result<Vec<AuditRow>, FhirError> {
    let mut q = AuditQuery { patient: Some(patient.into()), limit: 1000, ..AuditQuery::default() };
    q.from = from.filter(|f| !f.is_empty()).and_then(time::parse_range).map(|r| r.lo);
    q.to = to.filter(|t| !t.is_empty()).and_then(time::parse_range).map(|r| r.hi);
    let mut conn = db.conn()?;
    Ok(search_audit_events(&mut conn, &q)?)
}
