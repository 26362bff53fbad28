//! The access layer: who is asking, for which patient, with which scopes (built once per request
//! from the bearer token, or by the portal for a signed-in patient) and what that lets them touch.
//! Every domain call takes an [`AccessContext`] and asks it; nothing else decides access.

use crate::db::{Conn, DbError, Sql};
use crate::scope::{Interaction, Scopes};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The scopes (or the patient's grant) do not allow the interaction.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Types whose resources never belong to one patient: shared reference data, reachable by any
/// caller whose scopes name them.
pub fn is_shared(rtype: &str) -> bool {
    matches!(rtype, "Practitioner" | "PractitionerRole" | "Organization" | "Medication")
}

/// Which patients' records a caller can reach at all (scopes then say what it may do there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The operator (command line, demo, import): every record.
    All,
    /// One patient in context: the patient's own app, through the patient's grant.
    Patient(String),
    /// A provider system: the records whose patients granted this client or its organisation.
    Granted { client_id: String, organization: Option<String> },
}

#[derive(Clone, Debug)]
pub struct AccessContext {
    /// The user or system the token was issued to (`sub`).
    pub subject: String,
    pub client_id: String,
    pub scopes: Scopes,
    pub reach: Reach,
    /// What the patient's grant currently allows an app in patient context: the token's scopes
    /// are intersected with it on every request, so narrowing a grant takes effect at once.
    pub grant_scopes: Option<Scopes>,
    /// The token id, recorded in the audit trail.
    pub token_id: Option<String>,
    /// The practitioner (`Practitioner/…`) signed in to the app, when a person acts through it.
    pub practitioner: Option<String>,
    /// The service's own bookkeeping: a source's sync and feeds writing that source's copies,
    /// the closure of a moved record, the Provenance the service writes about a write. Only it
    /// passes the promises that hold for every caller, operators included: a moved record takes
    /// no writes, and a source's copies change only through that source.
    pub service: bool,
}

impl AccessContext {
    /// The operator acting through the command line (load, demo, import): full access, audited as such.
    pub fn operator(what: &str) -> AccessContext {
        AccessContext {
            subject: format!("operator:{what}"),
            client_id: "healthfolio-cli".to_string(),
            scopes: Scopes::parse("system/*.cruds"),
            reach: Reach::All,
            grant_scopes: None,
            token_id: None,
            practitioner: None,
            service: false,
        }
    }

    /// The service itself, keeping its own records (see [`AccessContext::service`]): never a
    /// caller's context, and never built on a caller's behalf.
    pub fn service(what: &str) -> AccessContext {
        AccessContext { subject: format!("service:{what}"), service: true, ..AccessContext::operator(what) }
    }

    /// A client acting at the token endpoint (for the audit trail; it reaches no record).
    pub fn client(client_id: &str) -> AccessContext {
        AccessContext {
            subject: client_id.to_string(),
            client_id: client_id.to_string(),
            scopes: Scopes::default(),
            reach: Reach::Granted { client_id: client_id.to_string(), organization: None },
            grant_scopes: None,
            token_id: None,
            practitioner: None,
            service: false,
        }
    }

    /// A signed-in patient acting on their own record through the portal: reach is their own
    /// compartment only, so every portal read and write passes the API's checks and audit.
    pub fn patient_self(patient_id: &str, account_id: &str) -> AccessContext {
        AccessContext {
            subject: account_id.to_string(),
            client_id: "portal".to_string(),
            scopes: Scopes::parse("patient/*.cruds"),
            reach: Reach::Patient(patient_id.to_string()),
            grant_scopes: None,
            token_id: None,
            practitioner: None,
            service: false,
        }
    }

    /// Who owns what this context starts (a message id, an export job): the same client acting
    /// for the same records. One app used by two patients is two owners.
    pub fn owner_key(&self) -> String {
        let reach = match &self.reach {
            Reach::All => String::new(),
            Reach::Patient(p) => format!("Patient/{p}"),
            Reach::Granted { organization, .. } => organization.clone().unwrap_or_default(),
        };
        format!("{}|{reach}", self.client_id)
    }

    /// Who wrote a version, as stored with it.
    pub fn author(&self) -> String {
        match &self.practitioner {
            Some(p) => format!("{}|{p}", self.client_id),
            None => format!("{}|{}", self.client_id, self.subject),
        }
    }

    fn allows(&self, rtype: &str, what: Interaction) -> bool {
        self.scopes.allows(rtype, what) && self.grant_scopes.as_ref().is_none_or(|g| g.allows(rtype, what))
    }

    /// Scope check for an interaction on a type.
    pub fn require(&self, rtype: &str, what: Interaction) -> Result<(), AccessError> {
        if self.allows(rtype, what) {
            Ok(())
        } else {
            Err(AccessError::Forbidden(format!(
                "the access token's scopes (and the patient's grant) do not allow {} on {rtype}",
                interaction_name(what)
            )))
        }
    }

    /// The single patient compartment this context is limited to, if it is one.
    pub fn compartment(&self) -> Option<&str> {
        match &self.reach {
            Reach::Patient(p) => Some(p),
            _ => None,
        }
    }

    /// Whether a resource of `rtype` in compartment `patient_id` may be touched with `what`.
    pub fn may_touch(
        &self,
        conn: &mut Conn,
        rtype: &str,
        patient_id: Option<&str>,
        what: Interaction,
    ) -> Result<bool, AccessError> {
        if !self.allows(rtype, what) {
            return Ok(false);
        }
        Ok(match &self.reach {
            Reach::All => true,
            _ if is_shared(rtype) => true,
            Reach::Patient(p) => patient_id == Some(p.as_str()),
            Reach::Granted { client_id, organization } => match patient_id {
                Some(p) => crate::consent::covers(conn, p, client_id, organization.as_deref(), rtype, letter(what))?,
                None => false,
            },
        })
    }

    /// Adds to a search the condition that limits it to what this context can reach.
    pub fn limit_search(&self, q: &mut Sql, alias: &str, rtype: &str, what: Interaction) {
        if is_shared(rtype) {
            return;
        }
        let column = if rtype == "Patient" { format!("{alias}.id") } else { format!("{alias}.patient_id") };
        match &self.reach {
            Reach::All => {}
            Reach::Patient(p) => {
                q.push(&format!(" AND {column} = ")).text(p.clone());
            }
            Reach::Granted { client_id, organization } => {
                crate::consent::granted_condition(q, &column, client_id, organization.as_deref(), rtype, letter(what))
            }
        }
    }
}

/// The SMART permission letter of an interaction.
pub fn letter(what: Interaction) -> char {
    match what {
        Interaction::Create => 'c',
        Interaction::Read => 'r',
        Interaction::Update => 'u',
        Interaction::Delete => 'd',
        Interaction::Search => 's',
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
