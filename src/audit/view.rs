//! The FHIR AuditEvent view of the access log (conformance §7.2).

use crate::db::{Bind, Conn, DbError, Int, Sql};
use crate::time::format_instant;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use serde::Serialize;
use serde_json::Value;

#[derive(QueryableByName, Debug, Clone)]
pub struct AuditRow {
    #[diesel(sql_type = BigInt)]
    pub aid: i64,
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = BigInt)]
    pub recorded: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub patient_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub client_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub subject: Option<String>,
    #[diesel(sql_type = Text)]
    pub action: String,
    #[diesel(sql_type = Text)]
    pub interaction: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub res_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub res_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub query: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub outcome: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub detail: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub count: Option<i64>,
}

const COLUMNS: &str = "aid, id, recorded, patient_id, client_id, subject, action, interaction, res_type, res_id, query, outcome, detail, count";

/// The interactions that only look at a record.
const VIEWS: &[&str] =
    &["read", "vread", "search-type", "search-system", "history-instance", "history-type", "history-system"];

/// Filters for `AuditEvent?…`; `after` is the keyset position (newest first).
#[derive(Default, Debug)]
pub struct AuditQuery {
    pub id: Option<String>,
    pub patient: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub before_aid: Option<i64>,
    /// Only what this client did (`None` inside: the operator, who has no client).
    pub client: Option<Option<String>>,
    /// Leave out this client's reads and searches (the patient's own views in the portal).
    pub hide_views_of: Option<String>,
    pub limit: i64,
}

pub fn search_audit_events(conn: &mut Conn, q: &AuditQuery) -> Result<Vec<AuditRow>, DbError> {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM audit_events WHERE 1 = 1"));
    if let Some(id) = &q.id {
        sql.push(" AND id = ").text(id.clone());
    }
    if let Some(p) = &q.patient {
        sql.push(" AND patient_id = ").text(p.clone());
    }
    if let Some(t) = q.from {
        sql.push(" AND recorded >= ").int(t);
    }
    if let Some(t) = q.to {
        sql.push(" AND recorded <= ").int(t);
    }
    if let Some(a) = q.before_aid {
        sql.push(" AND aid < ").int(a);
    }
    match &q.client {
        Some(Some(c)) => {
            sql.push(" AND client_id = ").text(c.clone());
        }
        Some(None) => {
            sql.push(" AND (client_id IS NULL OR client_id = 'healthfolio-cli')");
        }
        None => {}
    }
    if let Some(c) = &q.hide_views_of {
        sql.push(" AND (client_id IS NULL OR client_id <> ").text(c.clone());
        sql.push(" OR interaction NOT IN ");
        sql.list(VIEWS.iter().map(|v| Bind::Text(v.to_string())));
        sql.push(")");
    }
    sql.push(" ORDER BY aid DESC LIMIT ").int(q.limit);
    conn.load(&sql)
}

/// An access-log row as a FHIR AuditEvent.
pub fn audit_event_json(r: &AuditRow) -> Value {
    serde_json::to_value(AuditEvent::of(r)).unwrap_or(Value::Null)
}

/// Appends an access-log row as one line of FHIR AuditEvent JSON (no newline). An export writes
/// tens of thousands of these: serialized as they are read, without a `Value` tree for each (that
/// tree was most of the time of exporting a long access log).
pub fn write_audit_event(r: &AuditRow, out: &mut Vec<u8>) {
    // Writing plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &AuditEvent::of(r));
}

const ENTITY_TYPES: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";

/// The AuditEvent of a row, fields in the order the view has always had.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent<'a> {
    resource_type: &'static str,
    id: &'a str,
    meta: Meta,
    #[serde(rename = "type")]
    kind: Coding<'a>,
    subtype: [Coding<'a>; 1],
    action: &'a str,
    recorded: String,
    outcome: String,
    agent: [Agent<'a>; 1],
    source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome_desc: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entity: Vec<Entity<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extension: Option<[Count; 1]>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    version_id: &'static str,
    last_updated: String,
}

#[derive(Serialize)]
struct Coding<'a> {
    system: &'static str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Agent<'a> {
    who: Display<'a>,
    requestor: bool,
    alt_id: &'a str,
}

#[derive(Serialize)]
struct Display<'a> {
    display: &'a str,
}

#[derive(Serialize)]
struct Source {
    observer: Display<'static>,
}

#[derive(Serialize)]
struct Reference {
    reference: String,
}

/// A resource or person the event was about (`what`, `type`), or the query it ran.
#[derive(Serialize)]
struct Entity<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    what: Option<Reference>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<Coding<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Count {
    url: &'static str,
    value_integer: i64,
}

impl<'a> AuditEvent<'a> {
    fn of(r: &'a AuditRow) -> AuditEvent<'a> {
        let about = |reference: String, code, display| Entity {
            what: Some(Reference { reference }),
            kind: Some(Coding { system: ENTITY_TYPES, code, display: Some(display) }),
            query: None,
            description: None,
        };
        let mut entity = Vec::new();
        if let (Some(t), Some(id)) = (&r.res_type, &r.res_id) {
            entity.push(about(format!("{t}/{id}"), "2", "System Object"));
        } else if let Some(q) = r.query.as_deref().filter(|q| !q.is_empty()) {
            // A search without parameters ran no query worth naming, and FHIR strings and
            // base64Binary values may not be empty.
            entity.push(Entity { what: None, kind: None, query: Some(base64_of(q)), description: Some(q) });
        }
        if let Some(p) = &r.patient_id {
            entity.push(about(format!("Patient/{p}"), "1", "Person"));
        }
        let recorded = format_instant(r.recorded);
        AuditEvent {
            resource_type: "AuditEvent",
            id: &r.id,
            meta: Meta { version_id: "1", last_updated: recorded.clone() },
            kind: Coding {
                system: "http://terminology.hl7.org/CodeSystem/audit-event-type",
                code: "rest",
                display: Some("RESTful Operation"),
            },
            subtype: [Coding {
                system: "http://hl7.org/fhir/restful-interaction",
                code: &r.interaction,
                display: None,
            }],
            action: &r.action,
            recorded,
            outcome: r.outcome.to_string(),
            agent: [Agent {
                who: Display { display: r.subject.as_deref().unwrap_or_default() },
                requestor: true,
                alt_id: r.client_id.as_deref().unwrap_or_default(),
            }],
            source: Source { observer: Display { display: "Healthfolio" } },
            outcome_desc: r.detail.as_deref(),
            entity,
            extension: r.count.map(|n| {
                [Count { url: "https://healthfolio.example/fhir/StructureDefinition/result-count", value_integer: n }]
            }),
        }
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// How many successful accesses to `patient`'s record were logged after `since` by anyone but
/// `except_client` (the portal: the patient's own views).
pub fn accesses_since(conn: &mut Conn, patient: &str, since: i64, except_client: &str) -> Result<i64, DbError> {
    let q = Sql::with(
        "SELECT COUNT(*) AS n FROM audit_events WHERE patient_id = ? AND recorded > ? AND outcome = 0 \
         AND (client_id IS NULL OR client_id <> ?)",
        [Bind::Text(patient.into()), Bind::Int(since), Bind::Text(except_client.into())],
    );
    Ok(conn.first::<Int>(&q)?.map_or(0, |r| r.n))
}

/// Whether `client` appears in `patient`'s access log at all.
pub fn appears(conn: &mut Conn, patient: &str, client: &str) -> Result<bool, DbError> {
    let q = Sql::with(
        "SELECT aid AS n FROM audit_events WHERE patient_id = ? AND client_id = ? LIMIT 1",
        [Bind::Text(patient.into()), Bind::Text(client.into())],
    );
    Ok(conn.first::<Int>(&q)?.is_some())
}

/// When one of `clients` last reached `patient`'s record successfully, from `since` on.
pub fn last_access_by(conn: &mut Conn, patient: &str, since: i64, clients: &[String]) -> Result<Option<i64>, DbError> {
    let mut q = Sql::new("SELECT COALESCE(MAX(recorded), 0) AS n FROM audit_events WHERE patient_id = ");
    q.text(patient).push(" AND outcome = 0 AND recorded >= ").int(since).push(" AND client_id IN ");
    q.list(clients.iter().cloned().map(Bind::Text));
    Ok(conn.first::<Int>(&q)?.map(|r| r.n).filter(|n| *n > 0))
}
