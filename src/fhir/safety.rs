//! Medicine safety checks on a prescription (MedicationRequest) or a statement of what a patient
//! takes (MedicationStatement) that is being written: does it meet one of the patient's recorded
//! allergies (the substance itself, or its class), or repeat a medicine they already take (the
//! same medicine, or the same active ingredient in another strength or brand)?
//!
//! A warning never refuses a write: the prescriber or the patient may know better. The portal
//! asks the patient to confirm before it saves; an API client gets the warning as an
//! OperationOutcome `warning` issue. What a code means comes from
//! [`crate::catalogue::classes`], the data file `data/medicine_classes.json`.

use super::reference;
use super::store::{self, Row, Stored, ROW_COLUMNS};
use super::{FhirError, Interaction, Store, DMD_SYSTEM, SNOMED_SYSTEM};
use crate::access::AccessContext;
use crate::catalogue::classes::{classes, Allergen, DrugClass, Ingredient};
use crate::db::{Conn, Sql};
use serde_json::{json, Value};

/// The types a check applies to: what a patient takes or is prescribed.
pub const CHECKED_TYPES: &[&str] = &["MedicationRequest", "MedicationStatement"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The medicine holds a substance the patient is allergic to, or one of its class.
    Allergy,
    /// The same medicine is already current.
    Duplicate,
    /// A current medicine holds the same active ingredient (another strength, brand or mix).
    SameIngredient,
}

/// One finding, in words for the patient and for a clinician.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub rule: Rule,
    /// The allergy or current medicine met, as `Type/id`.
    pub about: String,
    pub to_patient: String,
    pub to_clinician: String,
}

impl Warning {
    /// As an OperationOutcome issue (severity `warning`) for `rtype`'s medicine.
    pub fn issue(&self, rtype: &str) -> Value {
        let code = if self.rule == Rule::Allergy { "business-rule" } else { "duplicate" };
        json!({"severity": "warning", "code": code, "diagnostics": self.to_clinician,
               "expression": [format!("{rtype}.medication")]})
    }
}

/// Warnings as one OperationOutcome.
pub fn outcome(rtype: &str, warnings: &[Warning]) -> Value {
    json!({"resourceType": "OperationOutcome", "issue": warnings.iter().map(|w| w.issue(rtype)).collect::<Vec<_>>()})
}

/// A medicine as the rules see it.
struct Medicine {
    name: String,
    /// dm+d / SNOMED CT codes (one code space: dm+d ids are SNOMED CT ids).
    codes: Vec<String>,
    ingredients: Vec<&'static Ingredient>,
}

impl Medicine {
    fn same_as(&self, other: &Medicine) -> bool {
        if self.codes.is_empty() && other.codes.is_empty() {
            return name_key(&self.name) == name_key(&other.name);
        }
        self.codes.iter().any(|c| other.codes.contains(c))
    }

    /// "Amoxicillin is a penicillin" or "Co-codamol 30mg/500mg tablets contains codeine, an
    /// opioid painkiller" (the sentence without its full stop).
    fn is_one_of(&self, ingredient: &Ingredient, class: &DrugClass) -> String {
        if self.ingredients.len() == 1 && self.name.to_lowercase().starts_with(&ingredient.name) {
            format!("{} is {}", capitalised(&ingredient.name), class.one)
        } else {
            format!("{} contains {}, {}", self.name, ingredient.name, class.one)
        }
    }
}

/// A medicine's name as compared when neither side is coded: case and spacing are not part of it.
pub fn name_key(name: &str) -> String {
    name.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The dm+d / SNOMED CT codes of a CodeableConcept (either system URI, conformance §8.3).
fn codes_of(concept: &Value) -> Vec<String> {
    let codings = concept["coding"].as_array().map(Vec::as_slice).unwrap_or_default();
    codings
        .iter()
        .filter(|c| {
            let system = c["system"].as_str().map(|s| s.trim_end_matches('/'));
            matches!(system, Some(DMD_SYSTEM | SNOMED_SYSTEM))
        })
        .filter_map(|c| c["code"].as_str().map(str::to_string))
        .collect()
}

fn text_of(concept: &Value) -> Option<String> {
    concept["text"].as_str().or(concept["coding"][0]["display"].as_str()).map(str::to_string)
}

/// The medicine of a MedicationRequest or MedicationStatement: its CodeableConcept, or the
/// Medication it refers to (contained, or held here: `resolve`), as (name, codes).
pub fn named(r: &Value, resolve: &mut dyn FnMut(&str) -> Option<Value>) -> (String, Vec<String>) {
    let concept = match &r["medicationReference"]["reference"] {
        Value::String(m) if r.get("medicationCodeableConcept").is_none() => {
            let contained = m
                .strip_prefix('#')
                .and_then(|id| r["contained"].as_array()?.iter().find(|c| c["id"].as_str() == Some(id)).cloned());
            let found = if m.starts_with('#') { contained } else { resolve(m) };
            let mut concept = found.map(|med| med["code"].clone()).unwrap_or(Value::Null);
            if concept.is_null() {
                concept = json!({"text": r["medicationReference"]["display"]});
            }
            concept
        }
        _ => r["medicationCodeableConcept"].clone(),
    };
    (text_of(&concept).unwrap_or_else(|| "this medicine".into()), codes_of(&concept))
}

impl Medicine {
    /// What the data knows of a medicine so named and coded: its ingredients.
    fn new(name: String, codes: Vec<String>) -> Medicine {
        let data = classes();
        let mut ingredients: Vec<&'static Ingredient> =
            codes.iter().filter_map(|c| data.ingredients_of(c)).flatten().collect();
        ingredients.extend(data.ingredients_named_in(&name));
        ingredients.sort_by(|a, b| a.id.cmp(&b.id));
        ingredients.dedup_by(|a, b| a.id == b.id);
        Medicine { name, codes, ingredients }
    }
}

fn medicine_of(r: &Value, resolve: &mut dyn FnMut(&str) -> Option<Value>) -> Medicine {
    let (name, codes) = named(r, resolve);
    Medicine::new(name, codes)
}

/// A medicine the patient takes or is prescribed now (as the portal counts it).
fn is_current(r: &Value) -> bool {
    let status = r["status"].as_str().unwrap_or_default();
    match r["resourceType"].as_str() {
        Some("MedicationRequest") => matches!(status, "active" | "on-hold" | "draft"),
        Some("MedicationStatement") => matches!(status, "active" | "intended"),
        _ => false,
    }
}

/// An allergy to heed: not resolved, refuted or entered in error.
fn is_live_allergy(a: &Value) -> bool {
    let clinical = a["clinicalStatus"]["coding"][0]["code"].as_str();
    let verified = a["verificationStatus"]["coding"][0]["code"].as_str();
    !matches!(clinical, Some("inactive" | "resolved")) && !matches!(verified, Some("refuted" | "entered-in-error"))
}

/// What an allergy names, from its code (or a reaction's substance), else its words.
fn allergens_of(a: &Value) -> Vec<Allergen<'static>> {
    let data = classes();
    let reactions = a["reaction"].as_array().map(Vec::as_slice).unwrap_or_default();
    let concepts = std::iter::once(&a["code"]).chain(reactions.iter().map(|r| &r["substance"]));
    let mut found: Vec<Allergen> = concepts.clone().flat_map(codes_of).filter_map(|c| data.allergen(&c)).collect();
    if found.is_empty() {
        found.extend(concepts.filter_map(text_of).filter_map(|t| data.allergen_named(&t)));
    }
    found
}

fn risk(a: &Value) -> &'static str {
    match a["criticality"].as_str() {
        Some("high") => "high risk",
        Some("low") => "low risk",
        Some("unable-to-assess") => "risk not assessed",
        _ => "risk not recorded",
    }
}

/// Why `m` meets an allergy to `allergen`, with the allergy's name in words.
fn allergy_match(m: &Medicine, allergen: &Allergen) -> Option<(String, String)> {
    let data = classes();
    match allergen {
        Allergen::Class(class) => {
            let i = m.ingredients.iter().find(|i| i.classes.contains(&class.id))?;
            Some((class.allergy.clone(), format!("{}.", m.is_one_of(i, class))))
        }
        Allergen::Ingredients(list) => {
            if let Some(i) = m.ingredients.iter().find(|i| list.iter().any(|a| a.id == i.id)) {
                return Some((i.name.clone(), format!("{} contains {}.", m.name, i.name)));
            }
            // One penicillin (NSAID, opioid…) allergic, all suspect: the class follows the substance.
            list.iter().find_map(|a| {
                data.classes_of(a).find_map(|class| {
                    let i = m.ingredients.iter().find(|i| i.classes.contains(&class.id))?;
                    Some((a.name.clone(), format!("{}, like {}.", m.is_one_of(i, class), a.name)))
                })
            })
        }
    }
}

/// One entry of the record, by the medicine it names.
struct Listed {
    /// `Type/id`.
    about: String,
    links: Vec<String>,
}

/// A medicine current in the record, with every entry that lists it (a prescription, the
/// statement based on it, repeats): the rules compare each medicine once, not each entry.
struct Current {
    medicine: Medicine,
    entries: Vec<Listed>,
}

/// What the rules read of a patient's record, worked out once however many entries are checked
/// against it (a Bundle may write hundreds).
struct Record {
    allergies: Vec<Value>,
    current: Vec<Current>,
}

impl Record {
    /// From the patient's resources (any types: the rules pick what they need); `resolve` finds a
    /// referenced Medication.
    fn of(resources: Vec<Value>, resolve: &mut dyn FnMut(&str) -> Option<Value>) -> Record {
        let mut record = Record { allergies: Vec::new(), current: Vec::new() };
        let mut by_medicine: std::collections::HashMap<(String, Vec<String>), usize> = Default::default();
        for r in resources {
            if r["resourceType"] == "AllergyIntolerance" {
                if is_live_allergy(&r) {
                    record.allergies.push(r);
                }
                continue;
            }
            if !is_current(&r) {
                continue;
            }
            let listed = Listed { about: about(&r), links: links_of(&r) };
            let key = named(&r, resolve);
            match by_medicine.get(&key) {
                Some(&i) => record.current[i].entries.push(listed),
                None => {
                    let medicine = Medicine::new(key.0.clone(), key.1.clone());
                    by_medicine.insert(key, record.current.len());
                    record.current.push(Current { medicine, entries: vec![listed] });
                }
            }
        }
        record
    }

    /// The patient's record as it stands in this transaction.
    fn load(conn: &mut Conn, patient: &str) -> Result<Record, FhirError> {
        let mut q = Sql::new(&format!("SELECT {ROW_COLUMNS} FROM resources r WHERE r.patient_id = "));
        // Allergies, and the medicine entries whose status may make them current (`is_current`
        // decides): a long record is mostly finished courses, never read here.
        q.text(patient).push(
            " AND r.deleted = 0 AND (r.res_type = 'AllergyIntolerance' OR (r.res_type IN ('MedicationRequest', \
             'MedicationStatement') AND EXISTS (SELECT 1 FROM idx_token t WHERE t.rid = r.rid AND t.param = 'status' \
             AND t.code IN ('active', 'on-hold', 'draft', 'intended'))))",
        );
        let rows: Vec<Row> = conn.load(&q)?;
        let resources = rows.into_iter().filter_map(|r| r.body.and_then(|b| serde_json::from_str(&b).ok())).collect();
        Ok(Record::of(resources, &mut resolver(conn)))
    }
}

/// Finds a Medication held here by its reference.
fn resolver(conn: &mut Conn) -> impl FnMut(&str) -> Option<Value> + '_ {
    |reference: &str| {
        let (t, id) = reference::local(reference)?;
        let row = store::current(conn, t, id).ok()??;
        row.body.and_then(|b| serde_json::from_str(&b).ok())
    }
}

fn about(r: &Value) -> String {
    format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default())
}

/// The warnings `new` raises against the patient's other current medicines and live allergies.
fn findings(new: &Value, record: &Record, resolve: &mut dyn FnMut(&str) -> Option<Value>) -> Vec<Warning> {
    if !is_current(new) {
        return Vec::new();
    }
    let m = medicine_of(new, resolve);
    let own = about(new);
    let mut out: Vec<Warning> = Vec::new();
    for a in &record.allergies {
        let about = about(a);
        for allergen in allergens_of(a) {
            if let Some((allergy, why)) = allergy_match(&m, &allergen) {
                let risk = risk(a);
                out.push(Warning {
                    rule: Rule::Allergy,
                    to_patient: format!("You have a recorded allergy to {allergy} ({risk}). {why}"),
                    to_clinician: format!("The patient has a recorded allergy to {allergy} ({risk}, {about}). {why}"),
                    about: about.clone(),
                });
            }
        }
    }
    let links = links_of(new);
    for c in &record.current {
        // An entry other than itself and the records of its own course (a statement based on
        // this prescription) lists the medicine.
        let Some(other) =
            c.entries.iter().find(|e| e.about != own && !links.contains(&e.about) && !e.links.contains(&own))
        else {
            continue;
        };
        let (theirs, about) = (&c.medicine, other.about.clone());
        if m.same_as(theirs) {
            out.push(Warning {
                rule: Rule::Duplicate,
                to_patient: format!(
                    "{} is already on your list of current medicines. Adding it again would list it twice.",
                    theirs.name
                ),
                to_clinician: format!("{} is already among the patient's current medicines ({about}).", theirs.name),
                about,
            });
        } else if let Some(i) = theirs.ingredients.iter().find(|i| m.ingredients.iter().any(|n| n.id == i.id)) {
            out.push(Warning {
                rule: Rule::SameIngredient,
                to_patient: format!(
                    "You already take {}, which also contains {}. Taking both could mean taking too much {}.",
                    theirs.name, i.name, i.name
                ),
                to_clinician: format!(
                    "The patient's current medicines include {} ({about}), which also contains {}.",
                    theirs.name, i.name
                ),
                about,
            });
        }
    }
    // The same allergy recorded twice says so once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|w| seen.insert(w.to_patient.clone()));
    out
}

/// References to the records of the same course of treatment.
pub fn links_of(r: &Value) -> Vec<String> {
    ["basedOn", "partOf", "derivedFrom"]
        .iter()
        .filter_map(|k| r[*k].as_array())
        .flatten()
        .filter_map(|x| x["reference"].as_str())
        .filter_map(reference::local)
        .map(|(t, id)| format!("{t}/{id}"))
        .collect()
}

/// Whether `body` is something the rules look at, and whose record it is in.
fn checked<'a>(body: &Value, patient: Option<&'a str>) -> Option<&'a str> {
    let rtype = body["resourceType"].as_str()?;
    (CHECKED_TYPES.contains(&rtype) && is_current(body)).then_some(patient).flatten()
}

/// The warnings `body` (of `patient`'s record) raises, read inside the caller's transaction so
/// that entries written earlier in it count. Reads as the service: a check that only saw what
/// the writer may read would pass silently for a writer without an allergy scope.
pub(crate) fn check_in(conn: &mut Conn, body: &Value, patient: Option<&str>) -> Result<Vec<Warning>, FhirError> {
    let Some(patient) = checked(body, patient) else { return Ok(Vec::new()) };
    let record = Record::load(conn, patient)?;
    Ok(findings(body, &record, &mut resolver(conn)))
}

fn parsed(s: &Stored) -> Option<Value> {
    (!s.deleted).then(|| serde_json::from_str(&s.body).ok()).flatten()
}

/// The warnings of a version just written.
pub(crate) fn check_written(conn: &mut Conn, s: &Stored) -> Result<Vec<Warning>, FhirError> {
    match parsed(s) {
        Some(body) => check_in(conn, &body, s.patient_id.as_deref()),
        None => Ok(Vec::new()),
    }
}

/// The warnings of many versions just written (a Bundle's), each against its patient's record
/// as the whole Bundle left it, reading each record once.
pub(crate) fn check_all(conn: &mut Conn, written: &[&Stored]) -> Result<Vec<Vec<Warning>>, FhirError> {
    let mut records: std::collections::HashMap<String, Record> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(written.len());
    for s in written {
        let body = parsed(s);
        let Some((body, patient)) = body.as_ref().and_then(|b| Some((b, checked(b, s.patient_id.as_deref())?))) else {
            out.push(Vec::new());
            continue;
        };
        if !records.contains_key(patient) {
            let record = Record::load(conn, patient)?;
            records.insert(patient.to_string(), record);
        }
        let record = &records[patient];
        out.push(findings(body, record, &mut resolver(conn)));
    }
    Ok(out)
}

/// `warnings` as `ctx` may hear them. The checks read the whole record (a writer without an
/// allergy scope must still be warned), but what a warning names is told only to a caller who may
/// read it: anyone else hears that something in the record meets the entry, not what.
pub(crate) fn as_seen_by(
    conn: &mut Conn,
    ctx: &AccessContext,
    patient: Option<&str>,
    warnings: Vec<Warning>,
) -> Result<Vec<Warning>, FhirError> {
    let mut out = Vec::with_capacity(warnings.len());
    for mut w in warnings {
        let rtype = w.about.split('/').next().unwrap_or_default().to_string();
        if !ctx.may_touch(conn, &rtype, patient, Interaction::Read)? {
            w.about = String::new();
            w.to_clinician = match w.rule {
                Rule::Allergy => {
                    "This medicine may meet an allergy recorded in the patient's record, which your access \
                                  does not let you read: check with the patient or their GP before it is given."
                        .into()
                }
                Rule::Duplicate => "The patient's record already holds this medicine as current, which your access \
                                    does not let you read."
                    .into(),
                Rule::SameIngredient => "The patient's record already holds a current medicine with the same active \
                                         ingredient, which your access does not let you read."
                    .into(),
            };
            w.to_patient = w.to_clinician.clone();
        }
        out.push(w);
    }
    Ok(out)
}

impl Store {
    /// The warnings a new medicine entry would raise, without writing it: for a form that asks
    /// before it saves. Checked as a create by `ctx` (scope, reach, validity), so it tells no
    /// more than the write itself would.
    pub fn medicine_warnings(&self, ctx: &AccessContext, rtype: &str, body: &Value) -> Result<Vec<Warning>, FhirError> {
        let mut body = body.clone();
        reference::relativise(&mut body, &self.base);
        let mut conn = self.db.conn()?;
        let patient = store::admit(&mut conn, ctx, rtype, "", &body, Interaction::Create, None)?;
        check_in(&mut conn, &body, patient.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn med(rtype: &str, id: &str, code: &str, name: &str) -> Value {
        json!({"resourceType": rtype, "id": id, "status": "active",
               "medicationCodeableConcept": {"coding": [{"system": DMD_SYSTEM, "code": code, "display": name}], "text": name}})
    }

    fn allergy(id: &str, code: &str, display: &str, criticality: &str) -> Value {
        json!({"resourceType": "AllergyIntolerance", "id": id, "criticality": criticality,
               "clinicalStatus": {"coding": [{"code": "active"}]},
               "code": {"coding": [{"system": SNOMED_SYSTEM, "code": code, "display": display}]}})
    }

    fn check(new: &Value, others: &[Value]) -> Vec<Warning> {
        findings(new, &Record::of(others.to_vec(), &mut |_| None), &mut |_| None)
    }

    const AMOXICILLIN_250: &str = "39732311000001104";
    const AMOXICILLIN_500: &str = "39732411000001106";

    #[test]
    fn an_allergy_to_the_class_warns() {
        let w = check(
            &med("MedicationStatement", "new", AMOXICILLIN_250, "Amoxicillin 250mg capsules"),
            &[allergy("a1", "764146007", "Substance with penicillin structure", "high")],
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].rule, Rule::Allergy);
        assert_eq!(
            w[0].to_patient,
            "You have a recorded allergy to penicillin (high risk). Amoxicillin is a penicillin."
        );
        assert!(w[0].to_clinician.contains("AllergyIntolerance/a1"), "{}", w[0].to_clinician);
    }

    #[test]
    fn an_allergy_to_the_substance_warns() {
        let w = check(
            &med("MedicationRequest", "new", AMOXICILLIN_500, "Amoxicillin 500mg capsules"),
            &[allergy("a1", "372687004", "Amoxicillin", "low")],
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            w[0].to_patient,
            "You have a recorded allergy to amoxicillin (low risk). Amoxicillin 500mg capsules contains amoxicillin."
        );
        // Another penicillin, by its class; a medicine of a combination names what it contains.
        let w = check(
            &med("MedicationRequest", "new", "323465006", "Flucloxacillin 500mg capsules"),
            &[allergy("a1", "372687004", "Amoxicillin", "low")],
        );
        assert_eq!(
            w[0].to_patient,
            "You have a recorded allergy to amoxicillin (low risk). Flucloxacillin is a penicillin, like amoxicillin."
        );
        let w = check(
            &med("MedicationRequest", "new", "322341003", "Co-codamol 30mg/500mg tablets"),
            &[json!({"resourceType": "AllergyIntolerance", "id": "a2", "code": {"text": "Opioids"}})],
        );
        assert_eq!(
            w[0].to_patient,
            "You have a recorded allergy to opioid painkillers (risk not recorded). Co-codamol 30mg/500mg tablets contains codeine, an opioid painkiller."
        );
    }

    #[test]
    fn the_same_medicine_again_warns() {
        let current = med("MedicationRequest", "rx1", "320000009", "Simvastatin 40mg tablets");
        let w = check(
            &med("MedicationStatement", "new", "320000009", "Simvastatin 40mg tablets"),
            std::slice::from_ref(&current),
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].rule, Rule::Duplicate);
        assert_eq!(w[0].about, "MedicationRequest/rx1");
        // Not a duplicate of itself, nor of the prescription it records.
        assert!(check(&med("MedicationRequest", "rx1", "320000009", "x"), std::slice::from_ref(&current)).is_empty());
        let mut based = med("MedicationStatement", "new", "320000009", "Simvastatin 40mg tablets");
        based["basedOn"] = json!([{"reference": "MedicationRequest/rx1"}]);
        assert!(check(&based, std::slice::from_ref(&current)).is_empty());
        // Nor of a medicine stopped.
        let mut stopped = current;
        stopped["status"] = json!("stopped");
        assert!(check(&med("MedicationStatement", "new", "320000009", "Simvastatin"), &[stopped]).is_empty());
    }

    #[test]
    fn the_same_ingredient_in_another_strength_or_mix_warns() {
        let w = check(
            &med("MedicationStatement", "new", AMOXICILLIN_500, "Amoxicillin 500mg capsules"),
            &[med("MedicationRequest", "rx1", AMOXICILLIN_250, "Amoxicillin 250mg capsules")],
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].rule, Rule::SameIngredient);
        let w = check(
            &med("MedicationStatement", "new", "322236009", "Paracetamol 500mg tablets"),
            &[med("MedicationRequest", "rx1", "322341003", "Co-codamol 30mg/500mg tablets")],
        );
        assert_eq!(
            w[0].to_patient,
            "You already take Co-codamol 30mg/500mg tablets, which also contains paracetamol. Taking both could mean taking too much paracetamol."
        );
        // A medicine written in words is matched by the ingredient it names.
        let words = json!({"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": {"text": "Paracetamol 1g sachets"}});
        assert_eq!(
            check(&words, &[med("MedicationRequest", "rx1", "322236009", "Paracetamol 500mg tablets")])[0].rule,
            Rule::SameIngredient
        );
    }

    #[test]
    fn an_unrelated_medicine_or_a_resolved_allergy_is_quiet() {
        let record = [
            allergy("a1", "764146007", "Substance with penicillin structure", "high"),
            med("MedicationRequest", "rx1", "320000009", "Simvastatin 40mg tablets"),
        ];
        assert!(check(
            &med("MedicationStatement", "new", "317297007", "Omeprazole 10mg gastro-resistant capsules"),
            &record
        )
        .is_empty());
        let mut resolved = record[0].clone();
        resolved["clinicalStatus"] = json!({"coding": [{"code": "resolved"}]});
        assert!(check(&med("MedicationStatement", "new", AMOXICILLIN_250, "Amoxicillin 250mg capsules"), &[resolved])
            .is_empty());
        let nkda = allergy("a2", "409137002", "No known drug allergy", "low");
        assert!(check(&med("MedicationStatement", "new", AMOXICILLIN_250, "Amoxicillin 250mg capsules"), &[nkda])
            .is_empty());
    }

    #[test]
    fn a_referenced_medication_is_resolved() {
        let new = json!({"resourceType": "MedicationRequest", "status": "active", "medicationReference": {"reference": "Medication/m1"}});
        let record = Record::of(vec![allergy("a1", "764146007", "Penicillin", "high")], &mut |_| None);
        let w = findings(&new, &record, &mut |r| {
            (r == "Medication/m1").then(|| json!({"resourceType": "Medication", "code": {"coding": [{"system": SNOMED_SYSTEM, "code": AMOXICILLIN_250, "display": "Amoxicillin 250mg capsules"}]}}))
        });
        assert_eq!(w.len(), 1, "{w:?}");
    }
}
