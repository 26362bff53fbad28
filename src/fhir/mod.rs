//! The FHIR R4 record store: resources, versions, search index, validation, bundles, capabilities.
//! Knows nothing of HTTP: callers pass an [`AccessContext`](crate::access::AccessContext) and get
//! typed results or a [`FhirError`].

mod audit_read;
mod audited;
mod authors;
pub mod bundle;
pub mod capability;
pub mod compartment;
mod consent_read;
pub mod copies;
pub mod history;
pub mod index;
pub mod params;
pub mod patient;
pub mod reference;
pub mod safety;
pub mod search;
pub mod store;
pub mod validate;

pub use store::{Store, Stored, WriteOutcome};

use crate::db::DbError;

/// The resource types this server stores, in the order the CapabilityStatement lists them.
pub const RESOURCE_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Medication",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationDispense",
    "MedicationAdministration",
    "AllergyIntolerance",
    "Condition",
    "Provenance",
    "Group",
    "Consent",
    "AuditEvent",
];

/// Types served read-only here: they are written by the authorization and audit layers.
pub const READ_ONLY_TYPES: &[&str] = &["Consent", "AuditEvent"];

pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const DMD_SYSTEM: &str = "https://dmd.nhs.uk";
pub const SNOMED_SYSTEM: &str = "http://snomed.info/sct";

/// Returns the canonical `&'static str` for a supported type name.
pub fn resource_type(name: &str) -> Option<&'static str> {
    RESOURCE_TYPES.iter().copied().find(|t| *t == name)
}

/// FHIR id syntax: `[A-Za-z0-9\-\.]{1,64}`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

pub use crate::scope::Interaction;
pub use audit_read::read_events;
pub use consent_read::read_consents;

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} has been deleted")]
    Gone(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    MultipleMatches(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    TooLarge(String),
    /// The service's own fault (its keys, its configuration): logged, never shown to the caller.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl FhirError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        FhirError::Invalid(msg.into())
    }
    pub fn unprocessable(msg: impl Into<String>) -> Self {
        FhirError::Unprocessable(msg.into())
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        FhirError::Forbidden(msg.into())
    }
    pub fn not_found(rtype: &str, id: &str) -> Self {
        FhirError::NotFound(format!("{rtype}/{id}"))
    }
}

impl From<crate::access::AccessError> for FhirError {
    fn from(e: crate::access::AccessError) -> Self {
        match e {
            crate::access::AccessError::Forbidden(m) => FhirError::Forbidden(m),
            crate::access::AccessError::Db(d) => FhirError::Db(d),
        }
    }
}

impl From<crate::consent::ConsentError> for FhirError {
    fn from(e: crate::consent::ConsentError) -> Self {
        use crate::consent::ConsentError;
        match e {
            ConsentError::Invalid(m) => FhirError::Invalid(m),
            ConsentError::NotFound(id) => FhirError::NotFound(format!("Consent/{id}")),
            ConsentError::Db(d) => FhirError::Db(d),
        }
    }
}

impl From<diesel::result::Error> for FhirError {
    fn from(e: diesel::result::Error) -> Self {
        FhirError::Db(DbError::Query(e))
    }
}

// Time is below every layer (the store, tokens, the access log and backups all stamp it).
pub use crate::time::{self, now_micros};

/// The HTTP status and OperationOutcome issue code of an error. Batch responses carry these per
/// entry, so the mapping belongs to FHIR, not to the web layer alone.
pub fn status_of(e: &FhirError) -> (u16, &'static str) {
    match e {
        FhirError::Invalid(_) => (400, "invalid"),
        FhirError::Unprocessable(_) => (422, "business-rule"),
        FhirError::NotFound(_) => (404, "not-found"),
        FhirError::Gone(_) => (410, "deleted"),
        FhirError::Conflict(_) => (409, "conflict"),
        FhirError::PreconditionFailed(_) => (412, "conflict"),
        FhirError::MultipleMatches(_) => (412, "multiple-matches"),
        FhirError::Forbidden(_) => (403, "forbidden"),
        FhirError::NotSupported(_) => (405, "not-supported"),
        FhirError::TooLarge(_) => (413, "too-costly"),
        FhirError::Db(_) | FhirError::Internal(_) => (500, "exception"),
    }
}
