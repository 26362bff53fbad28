//! The medicines list: prescriptions (MedicationRequest) and what the patient takes
//! (MedicationStatement), each with dose in plain words, dates, prescriber and last dispensing,
//! gathered into one entry per medicine ([`super::grouping`]).

use super::grouping::{group, MedicineEntry, Source};
use super::{concept_text, date_part, human_name, own_patient, search, PortalError};
use crate::access::AccessContext;
use crate::fhir::Store;
use crate::fhir::{reference, safety};
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct MedicineLine {
    /// `MedicationRequest` or `MedicationStatement`.
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub dose: String,
    pub status: String,
    pub start: String,
    pub stop: String,
    pub prescriber: Option<String>,
    pub organization: Option<String>,
    pub last_dispensed: Option<String>,
    /// Every hand-over date, oldest first (marks on the timeline).
    pub dispensed: Vec<String>,
    /// `informationSource` is the patient: they told us, no clinician recorded it.
    pub reported_by_you: bool,
    /// Tagged as not yet reviewed by a clinician ([`super::taken::UNREVIEWED`]).
    pub unreviewed: bool,
    pub current: bool,
}

impl MedicineLine {
    /// The path segment of the detail page.
    pub fn kind_slug(&self) -> &'static str {
        slug_of(self.kind)
    }

    /// The status in words ("Current", "Stopped").
    pub fn status_words(&self) -> &'static str {
        super::words::medicine_status(&self.status)
    }

    pub fn recorded_as(&self) -> &'static str {
        match (self.kind, self.reported_by_you) {
            (_, true) if self.unreviewed => "Added by you \u{2013} not yet reviewed by a clinician",
            (_, true) => "Added by you",
            ("MedicationRequest", _) => "Prescription",
            _ => "Recorded as taken",
        }
    }
}

/// `prescriptions` / `taken` in URLs, rather than FHIR type names.
pub fn slug_of(kind: &str) -> &'static str {
    if kind == "MedicationRequest" {
        "prescription"
    } else {
        "taken"
    }
}

pub fn kind_of(slug: &str) -> Option<&'static str> {
    match slug {
        "prescription" => Some("MedicationRequest"),
        "taken" => Some("MedicationStatement"),
        _ => None,
    }
}

/// A SMART-ish `periodUnit` in words.
fn unit_word(u: &str) -> &'static str {
    match u {
        "s" => "second",
        "min" => "minute",
        "h" => "hour",
        "wk" => "week",
        "mo" => "month",
        "a" => "year",
        _ => "day",
    }
}

/// An EventTiming code in words (the common ones; others are left out rather than guessed).
fn when_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "MORN" => "in the morning",
        "AFT" => "in the afternoon",
        "EVE" => "in the evening",
        "NIGHT" | "HS" => "at night",
        "C" | "CM" | "CD" | "CV" => "with food",
        "AC" => "before food",
        "PC" => "after food",
        "WAKE" => "when you wake up",
        _ => return None,
    })
}

fn how_often(repeat: &Value) -> Option<String> {
    let freq = repeat["frequency"].as_u64().unwrap_or(1);
    let period = repeat["period"].as_f64()?;
    let unit = unit_word(repeat["periodUnit"].as_str().unwrap_or("d"));
    let times = match freq {
        1 => "once".to_string(),
        2 => "twice".to_string(),
        n => format!("{n} times"),
    };
    Some(if period == 1.0 { format!("{times} a {unit}") } else { format!("{times} every {period} {unit}s") })
}

/// Dose instructions in plain words: the prescriber's text, else built from the structured
/// dosage ("1 tablet twice a day at night").
pub fn dose_words(dosage: &Value) -> String {
    if let Some(t) = dosage["text"].as_str().filter(|t| !t.trim().is_empty()) {
        return t.to_string();
    }
    let mut parts = Vec::new();
    let q = &dosage["doseAndRate"][0]["doseQuantity"];
    if let Some(v) = q["value"].as_f64() {
        let unit = q["unit"].as_str().unwrap_or_default();
        let plural = if v != 1.0 && !unit.is_empty() && !unit.ends_with('s') { "s" } else { "" };
        parts.push(format!("{v} {unit}{plural}").trim().to_string());
    }
    let repeat = &dosage["timing"]["repeat"];
    parts.extend(how_often(repeat));
    let whens = repeat["when"].as_array().cloned().unwrap_or_default();
    parts.extend(whens.iter().filter_map(Value::as_str).filter_map(when_word).map(str::to_string));
    if dosage["asNeededBoolean"] == Value::Bool(true) {
        parts.push("when needed".into());
    }
    if parts.is_empty() {
        "No dose instructions recorded".into()
    } else {
        parts.join(" ")
    }
}

/// Names of practitioners and organisations, looked up once per page through the API's reads.
pub(crate) struct Names<'a> {
    store: &'a Store,
    ctx: &'a AccessContext,
    cache: HashMap<String, Option<Value>>,
}

impl<'a> Names<'a> {
    pub(crate) fn new(store: &'a Store, ctx: &'a AccessContext) -> Self {
        Names { store, ctx, cache: HashMap::new() }
    }

    fn get(&mut self, reference: &str) -> Option<Value> {
        if let Some(v) = self.cache.get(reference) {
            return v.clone();
        }
        let v = reference::local(reference)
            .and_then(|(t, id)| self.store.read(self.ctx, t, id).ok())
            .and_then(|s| serde_json::from_str(&s.body).ok());
        self.cache.insert(reference.to_string(), v.clone());
        v
    }

    pub(crate) fn name(&mut self, reference: &str) -> Option<String> {
        let r = self.get(reference)?;
        match r["resourceType"].as_str()? {
            "Practitioner" | "Patient" => r["name"].get(0).map(human_name),
            "Organization" => r["name"].as_str().map(str::to_string),
            "PractitionerRole" => r["practitioner"]["reference"].as_str().and_then(|p| self.name(p)),
            _ => None,
        }
    }

    /// The dm+d / SNOMED CT codes of what a prescription or statement is for.
    pub(crate) fn codes(&mut self, r: &Value) -> Vec<String> {
        safety::named(r, &mut |m| self.get(m)).1
    }

    /// What a prescription or statement is for, in words: its coded medicine, else the Medication
    /// it references (its code, else the reference's display).
    pub(crate) fn medicine(&mut self, r: &Value) -> String {
        concept_text(&r["medicationCodeableConcept"])
            .or_else(|| {
                let m = &r["medicationReference"];
                m["reference"]
                    .as_str()
                    .and_then(|reference| self.get(reference))
                    .and_then(|med| concept_text(&med["code"]))
                    .or_else(|| m["display"].as_str().map(str::to_string))
            })
            .unwrap_or_else(|| "Unnamed medicine".into())
    }

    /// The organisation a prescriber works for: the requester's own, or the first role's.
    fn organization_of(&mut self, reference: &str) -> Option<String> {
        let r = self.get(reference)?;
        match r["resourceType"].as_str()? {
            "Organization" => self.name(reference),
            "PractitionerRole" => r["organization"]["reference"].as_str().and_then(|o| self.name(o)),
            "Practitioner" => {
                let params = [("practitioner", reference)];
                let req = crate::fhir::search::SearchRequest {
                    rtype: "PractitionerRole".into(),
                    params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    compartment: None,
                    strict: false,
                };
                let roles = self.store.search(self.ctx, &req).ok()?;
                let role: Value = serde_json::from_str(&roles.matches.first()?.body).ok()?;
                role["organization"]["reference"].as_str().and_then(|o| self.name(o))
            }
            _ => None,
        }
    }
}

/// The hand-over dates of each prescription (oldest first), from the patient's dispenses.
fn dispenses(store: &Store, ctx: &AccessContext) -> Result<HashMap<String, Vec<String>>, PortalError> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for d in search(store, ctx, "MedicationDispense", &[])? {
        let Some(when) = d["whenHandedOver"].as_str() else { continue };
        let prescriptions = d["authorizingPrescription"].as_array().cloned().unwrap_or_default();
        for p in prescriptions.iter().filter_map(|p| p["reference"].as_str()).filter_map(reference::local) {
            out.entry(p.1.to_string()).or_default().push(date_part(&Value::String(when.to_string())));
        }
    }
    out.values_mut().for_each(|dates| dates.sort());
    Ok(out)
}

pub(crate) fn prescription_line(
    r: &Value,
    names: &mut Names,
    dispensed: &HashMap<String, Vec<String>>,
) -> MedicineLine {
    let status = r["status"].as_str().unwrap_or("unknown").to_string();
    let id = r["id"].as_str().unwrap_or_default().to_string();
    let requester = r["requester"]["reference"].as_str();
    MedicineLine {
        kind: "MedicationRequest",
        name: names.medicine(r),
        dose: dose_words(&r["dosageInstruction"][0]),
        current: matches!(status.as_str(), "active" | "on-hold" | "draft"),
        start: date_part(r.get("authoredOn").unwrap_or(&r["dispenseRequest"]["validityPeriod"]["start"])),
        stop: date_part(&r["dispenseRequest"]["validityPeriod"]["end"]),
        prescriber: requester.and_then(|p| names.name(p)),
        organization: requester.and_then(|p| names.organization_of(p)),
        last_dispensed: dispensed.get(&id).and_then(|d| d.last().cloned()),
        dispensed: dispensed.get(&id).cloned().unwrap_or_default(),
        reported_by_you: false,
        unreviewed: false,
        status,
        id,
    }
}

pub(crate) fn statement_line(s: &Value, patient: &str, names: &mut Names) -> MedicineLine {
    let status = s["status"].as_str().unwrap_or("unknown").to_string();
    let source = s["informationSource"]["reference"].as_str();
    let reported_by_you = source == Some(format!("Patient/{patient}").as_str());
    MedicineLine {
        kind: "MedicationStatement",
        id: s["id"].as_str().unwrap_or_default().to_string(),
        name: names.medicine(s),
        dose: dose_words(&s["dosage"][0]),
        current: matches!(status.as_str(), "active" | "intended"),
        start: date_part(s.get("effectiveDateTime").unwrap_or(&s["effectivePeriod"]["start"])),
        stop: date_part(&s["effectivePeriod"]["end"]),
        prescriber: None,
        organization: source.filter(|_| !reported_by_you).and_then(|r| names.name(r)),
        last_dispensed: None,
        dispensed: Vec::new(),
        reported_by_you,
        unreviewed: unreviewed(s),
        status,
    }
}

fn unreviewed(r: &Value) -> bool {
    let tags = r["meta"]["tag"].as_array().map(Vec::as_slice).unwrap_or_default();
    tags.iter().any(|t| t["system"] == super::taken::REVIEW_SYSTEM && t["code"] == super::taken::UNREVIEWED)
}

/// The patient's medicines, one entry each with every prescription and statement of it, current
/// first, newest first within each.
pub fn medicines(store: &Store, ctx: &AccessContext) -> Result<Vec<MedicineEntry>, PortalError> {
    let patient = own_patient(ctx)?.to_string();
    let dispensed = dispenses(store, ctx)?;
    let mut names = Names::new(store, ctx);
    let mut sources = Vec::new();
    for r in search(store, ctx, "MedicationRequest", &[])? {
        let line = prescription_line(&r, &mut names, &dispensed);
        sources.push(Source { line, codes: names.codes(&r), links: safety::links_of(&r) });
    }
    for s in search(store, ctx, "MedicationStatement", &[])? {
        let line = statement_line(&s, &patient, &mut names);
        sources.push(Source { line, codes: names.codes(&s), links: safety::links_of(&s) });
    }
    Ok(group(sources))
}

#[cfg(test)]
mod tests {
    use super::dose_words;
    use serde_json::json;

    #[test]
    fn dose_text_wins() {
        assert_eq!(dose_words(&json!({"text": "1 tablet at night"})), "1 tablet at night");
    }

    #[test]
    fn dose_built_from_structure() {
        let d = json!({"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d", "when": ["C"]}},
            "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]});
        assert_eq!(dose_words(&d), "1 tablet twice a day with food");
        let d = json!({"timing": {"repeat": {"frequency": 1, "period": 2, "periodUnit": "wk"}},
            "doseAndRate": [{"doseQuantity": {"value": 2, "unit": "puff"}}], "asNeededBoolean": true});
        assert_eq!(dose_words(&d), "2 puffs once every 2 weeks when needed");
        assert_eq!(dose_words(&json!({})), "No dose instructions recorded");
    }
}
