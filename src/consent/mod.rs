//! Grants: the patient's consent that an app or a provider organisation may do something to
//! their record, until an expiry or a revocation. Every grant is also readable as a FHIR Consent.

mod view;

pub use view::consent_json;

use crate::db::{Bind, Conn, DbError, Sql};
use crate::scope::{Scope, Scopes};
use crate::time::now_micros;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("{0}")]
    Invalid(String),
    #[error("grant {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

#[derive(QueryableByName, Debug, Clone)]
pub struct Grant {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub patient_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub client_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub organization: Option<String>,
    #[diesel(sql_type = Text)]
    pub scope: String,
    #[diesel(sql_type = BigInt)]
    pub created_at: i64,
    #[diesel(sql_type = Text)]
    pub created_by: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub expires_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub revoked_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub last_used_at: Option<i64>,
}

impl Grant {
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    pub fn scopes(&self) -> Scopes {
        Scopes::parse(&self.scope)
    }
}

/// Who receives a grant: an app (client) or a provider organisation (all its systems).
#[derive(Debug, Clone)]
pub enum Grantee {
    Client(String),
    Organization(String),
}

#[derive(Debug, Clone)]
pub struct NewGrant {
    pub patient_id: String,
    pub grantee: Grantee,
    /// Space-separated resource scopes, e.g. `patient/MedicationRequest.rs patient/AllergyIntolerance.rs`.
    pub scope: String,
    pub expires_at: Option<i64>,
    pub created_by: String,
}

const COLUMNS: &str =
    "id, patient_id, client_id, organization, scope, created_at, created_by, expires_at, revoked_at, last_used_at";

/// Only the resource scopes of a grant matter; they are stored in patient context.
fn normalise_scope(scope: &str) -> Result<(String, Vec<Scope>), ConsentError> {
    let parsed = Scopes::parse(scope).resources;
    if parsed.is_empty() {
        return Err(ConsentError::Invalid(format!(
            "'{scope}' grants nothing: give resource scopes such as patient/MedicationRequest.rs"
        )));
    }
    let text = parsed.iter().map(scope_text).collect::<Vec<_>>().join(" ");
    Ok((text, parsed))
}

fn scope_text(s: &Scope) -> String {
    let base = format!("patient/{}.{}", s.resource.as_deref().unwrap_or("*"), perms(s));
    match serde_urlencoded::to_string(&s.filter) {
        Ok(q) if !q.is_empty() => format!("{base}?{q}"),
        _ => base,
    }
}

pub fn perms(s: &Scope) -> String {
    [(s.create, 'c'), (s.read, 'r'), (s.update, 'u'), (s.delete, 'd'), (s.search, 's')]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| *c)
        .collect()
}

/// Creates a grant, or widens/replaces the active one for the same patient and grantee.
pub fn grant(conn: &mut Conn, g: &NewGrant) -> Result<Grant, ConsentError> {
    let (scope, parsed) = normalise_scope(&g.scope)?;
    let (client, org) = match &g.grantee {
        Grantee::Client(c) => (Some(c.clone()), None),
        Grantee::Organization(o) => (None, Some(o.clone())),
    };
    let now = now_micros();
    if let Some(existing) = active_for(conn, &g.patient_id, &g.grantee)? {
        revoke_row(conn, &existing.id, now)?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    conn.execute(&Sql::with(
        "INSERT INTO grants (id, patient_id, client_id, organization, scope, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            Bind::Text(id.clone()),
            Bind::Text(g.patient_id.clone()),
            Bind::OptText(client),
            Bind::OptText(org),
            Bind::Text(scope),
            Bind::Int(now),
            Bind::Text(g.created_by.clone()),
            Bind::OptInt(g.expires_at),
        ],
    ))?;
    // Provider systems and organisations reach a record through these rows, which hold no query
    // constraint: a constrained scope (`…rs?status=active`) must then grant them nothing rather
    // than everything of its type. Apps in patient context read the full scope text instead.
    for s in parsed.iter().filter(|s| s.filter.is_empty()) {
        conn.execute(&Sql::with(
            "INSERT INTO grant_permissions (grant_id, resource_type, perms) VALUES (?, ?, ?)",
            [
                Bind::Text(id.clone()),
                Bind::Text(s.resource.clone().unwrap_or_else(|| "*".into())),
                Bind::Text(perms(s)),
            ],
        ))?;
    }
    get(conn, &id)
}

pub fn get(conn: &mut Conn, id: &str) -> Result<Grant, ConsentError> {
    let q = Sql::with(&format!("SELECT {COLUMNS} FROM grants WHERE id = ?"), [Bind::Text(id.into())]);
    conn.first(&q)?.ok_or_else(|| ConsentError::NotFound(id.to_string()))
}

fn revoke_row(conn: &mut Conn, id: &str, now: i64) -> Result<bool, ConsentError> {
    let n = conn.execute(&Sql::with(
        "UPDATE grants SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        [Bind::Int(now), Bind::Text(id.into())],
    ))?;
    Ok(n == 1)
}

/// Revokes a grant now. Returns false when it was already revoked.
pub fn revoke(conn: &mut Conn, id: &str) -> Result<bool, ConsentError> {
    get(conn, id)?;
    revoke_row(conn, id, now_micros())
}

/// The active grant of `patient` to `grantee`, if any.
/// The condition that a grant (`alias`) stands at `now`: one definition for every query that asks.
pub fn active_condition(q: &mut Sql, alias: &str, now: i64) {
    q.push(&format!(" AND {alias}.revoked_at IS NULL AND ({alias}.expires_at IS NULL OR {alias}.expires_at > "))
        .int(now)
        .push(")");
}

/// Joins (LEFT) to a query the grant of `patient` to `client` that stands at `now`, newest first,
/// as `alias` (its `scope` column): one row, whether or not there is one. The token check asks
/// for it in the same round trip as the revocations; no `patient`, no grant.
pub fn join_standing_grant(q: &mut Sql, alias: &str, patient: Option<&str>, client: &str, now: i64) {
    q.push(&format!(" LEFT JOIN grants {alias} ON "));
    match patient {
        Some(p) => {
            q.push(&format!("{alias}.patient_id = ")).text(p).push(&format!(" AND {alias}.client_id = ")).text(client);
            active_condition(q, alias, now);
            q.push(&format!(" ORDER BY {alias}.created_at DESC"));
        }
        None => {
            q.push("1 = 0");
        }
    }
    q.push(" LIMIT 1");
}

pub fn active_for(conn: &mut Conn, patient: &str, grantee: &Grantee) -> Result<Option<Grant>, ConsentError> {
    let (col, val) = match grantee {
        Grantee::Client(c) => ("client_id", c),
        Grantee::Organization(o) => ("organization", o),
    };
    let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM grants g WHERE g.patient_id = "));
    q.text(patient).push(&format!(" AND g.{col} = ")).text(val.clone());
    active_condition(&mut q, "g", now_micros());
    q.push(" ORDER BY g.created_at DESC LIMIT 1");
    Ok(conn.first(&q)?)
}

/// Every grant, optionally of one patient, newest first.
pub fn list(conn: &mut Conn, patient: Option<&str>) -> Result<Vec<Grant>, ConsentError> {
    let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM grants"));
    if let Some(p) = patient {
        q.push(" WHERE patient_id = ").text(p);
    }
    q.push(" ORDER BY created_at DESC");
    Ok(conn.load(&q)?)
}

pub fn touch(conn: &mut Conn, id: &str) -> Result<(), ConsentError> {
    conn.execute(&Sql::with(
        "UPDATE grants SET last_used_at = ? WHERE id = ?",
        [Bind::Int(now_micros()), Bind::Text(id.into())],
    ))?;
    Ok(())
}

/// SQL that is true when an active grant to this client or organisation lets `letter` be done to
/// `rtype` in the compartment given by `patient_column`.
pub fn granted_condition(
    q: &mut Sql,
    patient_column: &str,
    client: &str,
    organization: Option<&str>,
    rtype: &str,
    letter: char,
) {
    q.push(&format!(
        " AND {patient_column} IN (SELECT g.patient_id FROM grants g JOIN grant_permissions gp ON gp.grant_id = g.id \
         WHERE g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > "
    ));
    q.int(now_micros()).push(") AND (g.client_id = ").text(client);
    if let Some(o) = organization {
        q.push(" OR g.organization = ").text(o);
    }
    q.push(") AND (gp.resource_type = ").text(rtype).push(" OR gp.resource_type = '*') AND gp.perms LIKE ");
    q.text(format!("%{letter}%")).push(")");
}

/// Whether an active grant to the client or organisation covers `letter` on `rtype` for `patient`.
pub fn covers(
    conn: &mut Conn,
    patient: &str,
    client: &str,
    organization: Option<&str>,
    rtype: &str,
    letter: char,
) -> Result<bool, DbError> {
    let mut q = Sql::new("SELECT COUNT(*) AS n FROM (SELECT ");
    q.text(patient).push(" AS pid) x WHERE 1 = 1");
    granted_condition(&mut q, "x.pid", client, organization, rtype, letter);
    Ok(conn.first::<crate::db::Int>(&q)?.is_some_and(|r| r.n > 0))
}
