//! Sharing: every app and provider that can reach the patient's record, in plain words, and the
//! patient's own grants to registered provider organisations (grant, change, stop now).

use super::{day, own_patient, parse_day, PortalError};
use crate::access::AccessContext;
use crate::auth::clients::{self, Client, ClientKind};
use crate::auth::scope_words::describe;
use crate::consent::{self, Grant, Grantee, NewGrant};
use crate::db::{Conn, Db};
use crate::fhir::{now_micros, Interaction};

/// One line of the Sharing page.
#[derive(Debug, Clone)]
pub struct Share {
    pub id: String,
    pub who: String,
    /// "An app" or "A provider organisation".
    pub kind: &'static str,
    pub what: Vec<String>,
    pub since: String,
    pub until: String,
    pub last_used: String,
    pub active: bool,
    /// A provider organisation's grant can be changed on the page: the [`PERMISSIONS`] it holds.
    pub changeable: bool,
    pub permissions: Vec<&'static str>,
    /// The end date as the date field wants it (empty: until stopped).
    pub until_value: String,
}

impl Share {
    pub fn has(&self, permission: &str) -> bool {
        self.permissions.contains(&permission)
    }
}

/// A provider organisation the patient may share with (registered provider systems).
#[derive(Debug, Clone)]
pub struct Provider {
    pub organization: String,
    pub name: String,
}

/// The permissions the portal offers, as (form value, scopes, words).
pub const PERMISSIONS: &[(&str, &str, &str)] = &[
    (
        "medicines-read",
        "patient/MedicationRequest.rs patient/MedicationStatement.rs patient/MedicationDispense.rs",
        "See your medicines",
    ),
    ("problems-read", "patient/AllergyIntolerance.rs patient/Condition.rs", "See your allergies and health problems"),
    ("details-read", "patient/Patient.rs", "See your name, date of birth and NHS number"),
    ("prescriptions-write", "patient/MedicationRequest.cu", "Add and change prescriptions"),
];

fn who(g: &Grant, all: &[Client]) -> (String, &'static str) {
    match (&g.client_id, &g.organization) {
        (Some(c), _) => (all.iter().find(|x| &x.client_id == c).map_or(c.clone(), |x| x.name.clone()), "An app"),
        (None, Some(o)) => (
            all.iter().find(|x| x.organization.as_ref() == Some(o)).map_or(o.clone(), |x| x.name.clone()),
            "A provider organisation",
        ),
        _ => ("Someone unknown".into(), "Unknown"),
    }
}

/// When the grantee last reached the record (its last allowed access in the audit trail): the
/// grant itself is not written to on every request.
fn last_use(conn: &mut crate::db::Conn, g: &Grant, all: &[Client]) -> Result<Option<i64>, PortalError> {
    let clients: Vec<String> = match (&g.client_id, &g.organization) {
        (Some(c), _) => vec![c.clone()],
        (None, Some(o)) => {
            all.iter().filter(|c| c.organization.as_ref() == Some(o)).map(|c| c.client_id.clone()).collect()
        }
        _ => Vec::new(),
    };
    if clients.is_empty() {
        return Ok(None);
    }
    Ok(crate::audit::last_access_by(conn, &g.patient_id, g.created_at, &clients)?)
}

fn share_line(g: Grant, all: &[Client], now: i64, used: Option<i64>) -> Share {
    let (who, kind) = who(&g, all);
    let until = match (g.revoked_at, g.expires_at) {
        (Some(r), _) => format!("ended {}", day(r)),
        (None, Some(e)) if e <= now => format!("ended {}", day(e)),
        (None, Some(e)) => day(e),
        (None, None) => "until you stop it".into(),
    };
    let held = g.scopes();
    let permissions = PERMISSIONS
        .iter()
        .filter(|(_, scopes, _)| {
            crate::scope::Scopes::parse(scopes).resources.iter().all(|w| held.resources.iter().any(|h| h.covers(w)))
        })
        .map(|(k, _, _)| *k)
        .collect();
    Share {
        changeable: g.organization.is_some() && g.client_id.is_none() && g.is_active(now),
        permissions,
        until_value: match (g.revoked_at, g.expires_at) {
            (None, Some(e)) if e > now => super::dates::iso_day(e - 1),
            _ => String::new(),
        },
        active: g.is_active(now),
        what: g.scopes().resources.iter().map(describe).collect(),
        since: day(g.created_at),
        last_used: used.or(g.last_used_at).map(day).unwrap_or_else(|| "not yet".into()),
        id: g.id,
        who,
        kind,
        until,
    }
}

/// Every grant on the patient's record, active first, newest first.
pub fn sharing(db: &Db, ctx: &AccessContext) -> Result<Vec<Share>, PortalError> {
    ctx.require("Consent", Interaction::Search)?;
    let patient = own_patient(ctx)?;
    let mut conn = db.conn()?;
    let all = clients::list(&mut conn)?;
    let now = now_micros();
    let mut out = Vec::new();
    for g in consent::list(&mut conn, Some(patient))? {
        let used = last_use(&mut conn, &g, &all)?;
        out.push(share_line(g, &all, now, used));
    }
    out.sort_by_key(|s| !s.active);
    Ok(out)
}

/// Registered provider systems' organisations (each once).
pub fn providers(db: &Db) -> Result<Vec<Provider>, PortalError> {
    let mut conn = db.conn()?;
    let mut out: Vec<Provider> = Vec::new();
    for c in clients::list(&mut conn)? {
        let Some(org) = c.organization.filter(|_| c.kind == ClientKind::Backend) else { continue };
        if !out.iter().any(|p| p.organization == org) {
            out.push(Provider { organization: org, name: c.name });
        }
    }
    Ok(out)
}

/// What the patient chose on the "share with a provider" form.
#[derive(Debug, Clone, Default)]
pub struct NewShare {
    pub organization: String,
    /// Keys of [`PERMISSIONS`].
    pub permissions: Vec<String>,
    /// `YYYY-MM-DD`, inclusive; empty for "until I stop it".
    pub until: String,
}

/// The grant a patient's choice on the form makes, checked.
fn new_grant(db: &Db, patient: &str, new: &NewShare) -> Result<NewGrant, PortalError> {
    if !providers(db)?.iter().any(|p| p.organization == new.organization) {
        return Err(PortalError::Invalid("Choose one of the listed providers.".into()));
    }
    let scopes: Vec<&str> =
        PERMISSIONS.iter().filter(|(k, _, _)| new.permissions.iter().any(|p| p == k)).map(|(_, s, _)| *s).collect();
    if scopes.is_empty() {
        return Err(PortalError::Invalid("Choose at least one thing they may do.".into()));
    }
    let expires_at = match new.until.trim() {
        "" => None,
        u => {
            let r = parse_day(u, "The end date")?;
            if r.hi <= now_micros() {
                return Err(PortalError::Invalid("The end date must be in the future.".into()));
            }
            Some(r.hi)
        }
    };
    Ok(NewGrant {
        patient_id: patient.into(),
        grantee: Grantee::Organization(new.organization.clone()),
        scope: scopes.join(" "),
        expires_at,
        created_by: format!("Patient/{patient}"),
    })
}

pub fn share_with(db: &Db, ctx: &AccessContext, new: &NewShare) -> Result<(), PortalError> {
    ctx.require("Consent", Interaction::Create)?;
    let patient = own_patient(ctx)?;
    let g = new_grant(db, patient, new)?;
    db.transaction(|c| {
        let created = consent::grant(c, &g)?;
        record(c, ctx, "grant", &created.id)
    })
}

/// Changes what a provider organisation may do, or until when: the old grant ends and the new
/// one starts in the same transaction, so there is no moment with both or neither.
pub fn change_sharing(db: &Db, ctx: &AccessContext, grant: &str, new: &NewShare) -> Result<(), PortalError> {
    ctx.require("Consent", Interaction::Update)?;
    let patient = own_patient(ctx)?;
    let old = consent::get(&mut db.conn()?, grant)?;
    let Some(org) = old.organization.clone().filter(|_| old.patient_id == patient && old.client_id.is_none()) else {
        return Err(PortalError::NotFound);
    };
    if !old.is_active(now_micros()) {
        return Err(PortalError::Invalid("This sharing has already ended: share again instead.".into()));
    }
    let g = new_grant(db, patient, &NewShare { organization: org, ..new.clone() })?;
    db.transaction(|c| {
        consent::revoke(c, grant)?;
        let created = consent::grant(c, &g)?;
        record(c, ctx, "grant-changed", &created.id)
    })
}

/// Ends one of the patient's own grants now (another patient's is "not found").
pub fn stop_sharing(db: &Db, ctx: &AccessContext, grant: &str) -> Result<(), PortalError> {
    let patient = own_patient(ctx)?;
    db.transaction(|c| {
        let g = consent::get(c, grant)?;
        if g.patient_id != patient {
            return Err(PortalError::NotFound);
        }
        consent::revoke(c, grant)?;
        record(c, ctx, "grant-revoked", grant)
    })
}

/// The grant change in the patient's own access log, in the same transaction.
fn record(conn: &mut Conn, ctx: &AccessContext, what: &str, grant: &str) -> Result<(), PortalError> {
    let mut entry = crate::audit::AuditEntry::event(what, &format!("Consent/{grant}"), None);
    entry.patient_id = ctx.compartment().map(str::to_string);
    crate::audit::record_in(conn, ctx, &entry)?;
    Ok(())
}
