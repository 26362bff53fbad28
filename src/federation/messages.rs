//! `$process-message`: FHIR message Bundles from provider systems (prescription issued, changed,
//! cancelled, dispensed, allergy recorded) feeding the persisted record. Idempotent on the
//! message id: a replayed message gets the first answer and changes nothing.

use crate::auth::AccessContext;
use crate::db::{Bind, Sql};
use crate::fhir::search::matching_ids;
use crate::fhir::store::{check_refs, create_in, new_id, update_in, Refs};
use crate::fhir::{now_micros, resource_type, time, FhirError, Store};
use serde_json::{json, Value};

const MAX_ENTRIES: usize = 1000;

fn message_id(bundle: &Value) -> Result<(String, Value), FhirError> {
    if bundle["resourceType"] != "Bundle" || bundle["type"] != "message" {
        return Err(FhirError::invalid("$process-message takes a Bundle of type message"));
    }
    let header = bundle["entry"][0]["resource"].clone();
    if header["resourceType"] != "MessageHeader" {
        return Err(FhirError::invalid("the first entry of a message must be its MessageHeader"));
    }
    let id = bundle["id"]
        .as_str()
        .or(header["id"].as_str())
        .ok_or_else(|| FhirError::invalid("the message has no id (Bundle.id)"))?;
    Ok((id.to_string(), header))
}

fn response(id: &str, header: &Value, written: &[String]) -> Value {
    json!({
        "resourceType": "Bundle", "id": new_id(), "type": "message",
        "timestamp": time::format_instant(now_micros()),
        "entry": [{"fullUrl": format!("urn:uuid:{}", new_id()), "resource": {
            "resourceType": "MessageHeader", "id": new_id(),
            "eventCoding": header["eventCoding"].clone(),
            "source": {"name": "Healthfolio", "endpoint": "urn:healthfolio"},
            "response": {"identifier": id, "code": "ok"},
            "focus": written.iter().map(|r| json!({"reference": r})).collect::<Vec<_>>()
        }}]
    })
}

/// Processes one message as `ctx` (scope and grants apply to every resource it carries).
pub fn process(store: &Store, ctx: &AccessContext, bundle: &Value) -> Result<Value, FhirError> {
    let (id, header) = message_id(bundle)?;
    let entries: Vec<Value> = bundle["entry"].as_array().cloned().unwrap_or_default();
    if entries.len() > MAX_ENTRIES {
        return Err(FhirError::TooLarge(format!("a message may carry at most {MAX_ENTRIES} entries")));
    }
    store.db.transaction(|conn| {
        #[derive(diesel::QueryableByName)]
        struct Done {
            #[diesel(sql_type = diesel::sql_types::Text)]
            response: String,
        }
        let seen = conn.first::<Done>(
            &Sql::with("SELECT response FROM processed_messages WHERE message_id = ?", [Bind::Text(id.clone())])
                .reused(),
        )?;
        if let Some(d) = seen {
            return Ok(serde_json::from_str(&d.response).unwrap_or(Value::Null));
        }
        let mut refs = Refs::default();
        let mut written = Vec::new();
        for e in entries.iter().skip(1) {
            let r = e["resource"].clone();
            let Some(t) = r["resourceType"].as_str().and_then(resource_type) else {
                return Err(FhirError::unprocessable(format!(
                    "a message entry holds {}, which this record does not keep",
                    r["resourceType"]
                )));
            };
            // The business identifier makes a change or cancellation land on the same resource.
            let ident = r["identifier"][0].clone();
            let existing = match (ident["system"].as_str(), ident["value"].as_str()) {
                (Some(sys), Some(val)) => matching_ids(
                    conn,
                    ctx,
                    t,
                    &serde_urlencoded::to_string([("identifier", format!("{sys}|{val}"))]).unwrap_or_default(),
                )?,
                _ => Vec::new(),
            };
            let s = match existing.as_slice() {
                [one] => {
                    let mut body = r;
                    body["id"] = Value::String(one.clone());
                    update_in(conn, ctx, &mut refs, t, one, body, None)?.stored
                }
                [] => create_in(conn, ctx, &mut refs, t, r, new_id(), "POST")?,
                _ => return Err(FhirError::MultipleMatches(format!("identifier {ident} matches more than one {t}"))),
            };
            written.push(format!("{}/{}", s.rtype, s.id));
        }
        check_refs(conn, &refs)?;
        let answer = response(&id, &header, &written);
        conn.execute(
            &Sql::with(
                "INSERT INTO processed_messages (message_id, response, processed_at) VALUES (?, ?, ?)",
                [Bind::Text(id.clone()), Bind::Text(answer.to_string()), Bind::Int(now_micros())],
            )
            .reused(),
        )?;
        Ok(answer)
    })
}
