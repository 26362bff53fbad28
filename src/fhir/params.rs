//! The search parameters served for each type (conformance §2.1), and where in a resource each
//! one finds its values.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Token,
    String,
    Date,
    Reference,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Token => "token",
            Kind::String => "string",
            Kind::Date => "date",
            Kind::Reference => "reference",
        }
    }
}

#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    /// Dotted element paths; arrays along the way are walked.
    pub paths: &'static [&'static str],
    /// For references: the only target type this parameter indexes.
    pub target: Option<&'static str>,
}

const fn p(name: &'static str, kind: Kind, paths: &'static [&'static str]) -> Param {
    Param { name, kind, paths, target: None }
}

const fn r(name: &'static str, paths: &'static [&'static str], target: &'static str) -> Param {
    Param { name, kind: Kind::Reference, paths, target: Some(target) }
}

use Kind::{Date, Reference, String as Str, Token};

const MED_CODE: &[&str] = &["medicationCodeableConcept"];
const MED_REF: &[&str] = &["medicationReference"];
const SUBJECT: &[&str] = &["subject"];
const IDENTIFIER: &[&str] = &["identifier"];

static PATIENT: &[Param] = &[
    p("identifier", Token, IDENTIFIER),
    p("name", Str, &["name"]),
    p("family", Str, &["name.family"]),
    p("given", Str, &["name.given"]),
    p("birthdate", Date, &["birthDate"]),
    p("gender", Token, &["gender"]),
    p("active", Token, &["active"]),
    p("email", Token, &["telecom"]),
    p("address-postalcode", Str, &["address.postalCode"]),
    r("general-practitioner", &["generalPractitioner"], "Organization"),
];

static PRACTITIONER: &[Param] = &[
    p("identifier", Token, IDENTIFIER),
    p("name", Str, &["name"]),
    p("family", Str, &["name.family"]),
    p("given", Str, &["name.given"]),
    p("active", Token, &["active"]),
];

static PRACTITIONER_ROLE: &[Param] = &[
    p("identifier", Token, IDENTIFIER),
    r("practitioner", &["practitioner"], "Practitioner"),
    r("organization", &["organization"], "Organization"),
    p("role", Token, &["code"]),
    p("active", Token, &["active"]),
];

static ORGANIZATION: &[Param] = &[
    p("identifier", Token, IDENTIFIER),
    p("name", Str, &["name", "alias"]),
    p("active", Token, &["active"]),
    p("type", Token, &["type"]),
];

static MEDICATION: &[Param] = &[
    p("identifier", Token, IDENTIFIER),
    p("code", Token, &["code"]),
    p("form", Token, &["form"]),
    p("status", Token, &["status"]),
];

static MEDICATION_REQUEST: &[Param] = &[
    r("patient", SUBJECT, "Patient"),
    p("subject", Reference, SUBJECT),
    p("status", Token, &["status"]),
    p("intent", Token, &["intent"]),
    p("authoredon", Date, &["authoredOn"]),
    p("code", Token, MED_CODE),
    r("medication", MED_REF, "Medication"),
    p("category", Token, &["category"]),
    p("identifier", Token, IDENTIFIER),
    p("requester", Reference, &["requester"]),
    p("encounter", Reference, &["encounter"]),
    p("date", Date, &["dosageInstruction.timing.event"]),
];

static MEDICATION_STATEMENT: &[Param] = &[
    r("patient", SUBJECT, "Patient"),
    p("subject", Reference, SUBJECT),
    p("status", Token, &["status"]),
    p("effective", Date, &["effectiveDateTime", "effectivePeriod"]),
    p("code", Token, MED_CODE),
    r("medication", MED_REF, "Medication"),
    p("category", Token, &["category"]),
    p("identifier", Token, IDENTIFIER),
    p("source", Reference, &["informationSource"]),
    p("part-of", Reference, &["partOf"]),
];

static MEDICATION_DISPENSE: &[Param] = &[
    r("patient", SUBJECT, "Patient"),
    p("subject", Reference, SUBJECT),
    p("status", Token, &["status"]),
    p("code", Token, MED_CODE),
    r("medication", MED_REF, "Medication"),
    p("identifier", Token, IDENTIFIER),
    p("whenhandedover", Date, &["whenHandedOver"]),
    p("whenprepared", Date, &["whenPrepared"]),
    p("performer", Reference, &["performer.actor"]),
    r("prescription", &["authorizingPrescription"], "MedicationRequest"),
    p("type", Token, &["type"]),
];

static MEDICATION_ADMINISTRATION: &[Param] = &[
    r("patient", SUBJECT, "Patient"),
    p("subject", Reference, SUBJECT),
    p("status", Token, &["status"]),
    p("code", Token, MED_CODE),
    r("medication", MED_REF, "Medication"),
    p("identifier", Token, IDENTIFIER),
    p("effective-time", Date, &["effectiveDateTime", "effectivePeriod"]),
    p("performer", Reference, &["performer.actor"]),
    r("request", &["request"], "MedicationRequest"),
];

static ALLERGY_INTOLERANCE: &[Param] = &[
    r("patient", &["patient"], "Patient"),
    p("clinical-status", Token, &["clinicalStatus"]),
    p("verification-status", Token, &["verificationStatus"]),
    p("code", Token, &["code", "reaction.substance"]),
    p("category", Token, &["category"]),
    p("criticality", Token, &["criticality"]),
    p("type", Token, &["type"]),
    p("date", Date, &["recordedDate"]),
    p("identifier", Token, IDENTIFIER),
    p("recorder", Reference, &["recorder"]),
    p("asserter", Reference, &["asserter"]),
];

static CONDITION: &[Param] = &[
    r("patient", SUBJECT, "Patient"),
    p("subject", Reference, SUBJECT),
    p("clinical-status", Token, &["clinicalStatus"]),
    p("verification-status", Token, &["verificationStatus"]),
    p("code", Token, &["code"]),
    p("category", Token, &["category"]),
    p("onset-date", Date, &["onsetDateTime", "onsetPeriod"]),
    p("recorded-date", Date, &["recordedDate"]),
    p("identifier", Token, IDENTIFIER),
    p("asserter", Reference, &["asserter"]),
];

static PROVENANCE: &[Param] = &[
    p("target", Reference, &["target"]),
    r("patient", &["target"], "Patient"),
    p("recorded", Date, &["recorded"]),
    p("agent", Reference, &["agent.who"]),
    p("entity", Reference, &["entity.what"]),
];

static CONSENT: &[Param] = &[
    r("patient", &["patient"], "Patient"),
    p("status", Token, &["status"]),
    p("actor", Reference, &["provision.actor.reference"]),
    p("period", Date, &["provision.period"]),
    p("category", Token, &["category"]),
    p("scope", Token, &["scope"]),
    p("date", Date, &["dateTime"]),
];

/// Cohorts for Bulk Data `Group/{id}/$export` (a practice's registered list, a clinic's caseload).
static GROUP: &[Param] = &[
    p("identifier", Token, IDENTIFIER),
    p("name", Str, &["name"]),
    p("type", Token, &["type"]),
    p("actual", Token, &["actual"]),
    r("member", &["member.entity"], "Patient"),
    r("managing-entity", &["managingEntity"], "Organization"),
];

static AUDIT_EVENT: &[Param] = &[
    r("patient", &["agent.who", "entity.what"], "Patient"),
    p("date", Date, &["recorded"]),
    p("entity", Reference, &["entity.what"]),
    p("agent", Reference, &["agent.who"]),
    p("action", Token, &["action"]),
    p("outcome", Token, &["outcome"]),
    p("type", Token, &["type"]),
    p("subtype", Token, &["subtype"]),
];

/// The parameters of `rtype` (without the common `_id` and `_lastUpdated`).
pub fn params_for(rtype: &str) -> &'static [Param] {
    match rtype {
        "Patient" => PATIENT,
        "Practitioner" => PRACTITIONER,
        "PractitionerRole" => PRACTITIONER_ROLE,
        "Organization" => ORGANIZATION,
        "Medication" => MEDICATION,
        "MedicationRequest" => MEDICATION_REQUEST,
        "MedicationStatement" => MEDICATION_STATEMENT,
        "MedicationDispense" => MEDICATION_DISPENSE,
        "MedicationAdministration" => MEDICATION_ADMINISTRATION,
        "AllergyIntolerance" => ALLERGY_INTOLERANCE,
        "Condition" => CONDITION,
        "Provenance" => PROVENANCE,
        "Consent" => CONSENT,
        "AuditEvent" => AUDIT_EVENT,
        "Group" => GROUP,
        _ => &[],
    }
}

pub fn find(rtype: &str, name: &str) -> Option<&'static Param> {
    params_for(rtype).iter().find(|p| p.name == name)
}

/// The element that places a resource of `rtype` in a patient's compartment, when it has one.
pub fn compartment_path(rtype: &str) -> Option<&'static str> {
    match rtype {
        "MedicationRequest"
        | "MedicationStatement"
        | "MedicationDispense"
        | "MedicationAdministration"
        | "Condition" => Some("subject"),
        "AllergyIntolerance" | "Consent" => Some("patient"),
        _ => None,
    }
}

pub use crate::access::is_shared;
