//! Who is asking, for which patient, with which scopes: built once per request from the bearer
//! token and passed to every domain call.

use super::scope::{Context, Scopes};
use crate::fhir::{params, FhirError, Interaction};

#[derive(Clone, Debug)]
pub struct AccessContext {
    /// The user or system the token was issued to (`sub`).
    pub subject: String,
    pub client_id: String,
    pub scopes: Scopes,
    /// The patient in context (`patient` claim): every access is limited to this compartment.
    pub patient: Option<String>,
    /// The token id, recorded in the audit trail.
    pub token_id: Option<String>,
}

impl AccessContext {
    /// The operator acting through the command line (load, demo, import): full access, audited as such.
    pub fn operator(what: &str) -> AccessContext {
        AccessContext {
            subject: format!("operator:{what}"),
            client_id: "healthfolio-cli".to_string(),
            scopes: Scopes::parse("system/*.cruds"),
            patient: None,
            token_id: None,
        }
    }

    /// Who wrote a version, as stored with it.
    pub fn author(&self) -> String {
        format!("{}|{}", self.client_id, self.subject)
    }

    /// Scope check for an interaction on a type.
    pub fn require(&self, rtype: &str, what: Interaction) -> Result<(), FhirError> {
        if self.scopes.allows(rtype, what) {
            Ok(())
        } else {
            Err(FhirError::forbidden(format!(
                "the access token's scopes do not allow {} on {rtype}",
                interaction_name(what)
            )))
        }
    }

    /// The compartment every access of this context is limited to, if any.
    pub fn compartment(&self) -> Option<&str> {
        self.patient.as_deref()
    }

    /// Whether a resource of `rtype` in compartment `patient_id` may be touched at all.
    pub fn may_touch(&self, rtype: &str, patient_id: Option<&str>) -> bool {
        match self.compartment() {
            None => true,
            Some(_) if params::is_shared(rtype) => true,
            Some(p) => patient_id == Some(p),
        }
    }

    /// Only patient-context scopes name a compartment; a token with them but no patient is refused.
    pub fn is_patient_scoped(&self) -> bool {
        self.scopes.has_context(Context::Patient)
    }
}

pub fn interaction_name(what: Interaction) -> &'static str {
    match what {
        Interaction::Create => "create",
        Interaction::Read => "read",
        Interaction::Update => "update",
        Interaction::Delete => "delete",
        Interaction::Search => "search",
    }
}
