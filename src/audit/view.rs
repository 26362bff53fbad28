//! The FHIR AuditEvent view of the access log (conformance §7.2).

use crate::db::{Conn, DbError, Sql};
use crate::time::format_instant;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use serde_json::{json, Value};

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
    sql.push(" ORDER BY aid DESC LIMIT ").int(q.limit);
    conn.load(&sql)
}

/// An access-log row as a FHIR AuditEvent.
pub fn audit_event_json(r: &AuditRow) -> Value {
    let mut entity = Vec::new();
    if let (Some(t), Some(id)) = (&r.res_type, &r.res_id) {
        entity.push(json!({"what": {"reference": format!("{t}/{id}")}, "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"}}));
    } else if let Some(q) = &r.query {
        entity.push(json!({"query": base64_of(q), "description": q}));
    }
    if let Some(p) = &r.patient_id {
        entity.push(json!({"what": {"reference": format!("Patient/{p}")}, "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"}}));
    }
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "id": r.id,
        "meta": {"versionId": "1", "lastUpdated": format_instant(r.recorded)},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": r.interaction}],
        "action": r.action,
        "recorded": format_instant(r.recorded),
        "outcome": r.outcome.to_string(),
        "agent": [{
            "who": {"display": r.subject.clone().unwrap_or_default()},
            "requestor": true,
            "altId": r.client_id.clone().unwrap_or_default()
        }],
        "source": {"observer": {"display": "Healthfolio"}},
    });
    if let Some(d) = &r.detail {
        ev["outcomeDesc"] = Value::String(d.clone());
    }
    if !entity.is_empty() {
        ev["entity"] = Value::Array(entity);
    }
    if let Some(n) = r.count {
        ev["extension"] =
            json!([{"url": "https://healthfolio.example/fhir/StructureDefinition/result-count", "valueInteger": n}]);
    }
    ev
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
