//! `$process-message`: FHIR message Bundles from provider systems (prescription issued, changed,
//! cancelled, dispensed, allergy recorded) feeding the persisted record. Idempotent on the
//! sender's message id: a replayed message gets the first answer and changes nothing.

use super::ingest::{ingest_as, AtItem, Feed};
use super::sources;
use crate::access::AccessContext;
use crate::db::{Bind, Conn, DbError, Sql};
use crate::fhir::search::matching_ids;
use crate::fhir::store::{check_refs, create_in, new_id, record_author, update_in, Refs};
use crate::fhir::Interaction;
use crate::fhir::{now_micros, resource_type, time, FhirError, Store};
use serde_json::{json, Value};
use std::sync::mpsc;

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

/// A message checked and ready to write.
pub struct Message {
    id: String,
    header: Value,
    entries: Vec<Value>,
}

/// Checks the shape of a message (outside any transaction).
pub fn parse(bundle: &Value) -> Result<Message, FhirError> {
    let (id, header) = message_id(bundle)?;
    let entries: Vec<Value> = bundle["entry"].as_array().cloned().unwrap_or_default();
    if entries.len() > MAX_ENTRIES {
        return Err(FhirError::TooLarge(format!("a message may carry at most {MAX_ENTRIES} entries")));
    }
    Ok(Message { id, header, entries })
}

/// Writes one message from `ctx` inside the caller's transaction: as the sender's own writes
/// (scope and grants apply to every resource), or into a source's copy if the operator named the
/// sender as that source's event sender.
fn process_in(conn: &mut Conn, ctx: &AccessContext, m: &Message) -> Result<Value, FhirError> {
    let Message { id, header, entries } = m;
    #[derive(diesel::QueryableByName)]
    struct Done {
        #[diesel(sql_type = diesel::sql_types::Text)]
        response: String,
    }
    let key = sender_key(ctx, id);
    let seen = conn.first::<Done>(
        &Sql::with("SELECT response FROM processed_messages WHERE message_id = ?", [Bind::Text(key.clone())]).reused(),
    )?;
    if let Some(d) = seen {
        return Ok(serde_json::from_str(&d.response).unwrap_or(Value::Null));
    }
    let written = match sources::fed_by(conn, &ctx.client_id)? {
        Some((name, fhir_base)) => to_copy(conn, ctx, &Feed { name: &name, fhir_base: &fhir_base }, entries)?,
        None => as_sender(conn, ctx, entries)?,
    };
    let answer = response(id, header, &written);
    conn.execute(
        &Sql::with(
            "INSERT INTO processed_messages (message_id, response, processed_at) VALUES (?, ?, ?)",
            [Bind::Text(key), Bind::Text(answer.to_string()), Bind::Int(now_micros())],
        )
        .reused(),
    )?;
    Ok(answer)
}

/// A message from a provider system the operator named as a source's event sender: its resources
/// land in that source's persisted copy (ids as the source gave them, owned by the source, each
/// with the copy's Provenance), exactly as a bulk extract from that source would; the operator's
/// naming is the authority, as for the source's other feeds, and the token must still allow
/// creating and updating each type. The answer names what was written by the sender's own ids:
/// where the copies live here (a person's record held here, say) is not the sender's to learn.
fn to_copy(conn: &mut Conn, ctx: &AccessContext, feed: &Feed, entries: &[Value]) -> Result<Vec<String>, FhirError> {
    let mut items = Vec::new();
    for (i, e) in entries.iter().enumerate().skip(1) {
        let r = e["resource"].clone();
        let t = r["resourceType"].as_str().and_then(resource_type).ok_or_else(|| {
            FhirError::unprocessable(format!("entry {i} holds {}, which this record does not keep", r["resourceType"]))
        })?;
        ctx.require(t, Interaction::Create)?;
        ctx.require(t, Interaction::Update)?;
        items.push((i, r));
    }
    let sent: Vec<String> = items
        .iter()
        .map(|(_, r)| {
            format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default())
        })
        .collect();
    ingest_as(conn, feed, &feed.context(Some(&ctx.client_id)), items).map_err(|AtItem(entry, e)| match e {
        FhirError::Db(_) | FhirError::Conflict(_) => e,
        e => FhirError::unprocessable(format!("entry {entry}, for the source '{}': {e}", feed.name)),
    })?;
    Ok(sent)
}

/// A message written as the sender's own: scope and the patients' grants apply to each resource.
fn as_sender(conn: &mut Conn, ctx: &AccessContext, entries: &[Value]) -> Result<Vec<String>, FhirError> {
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
        record_author(conn, ctx, &mut refs, &s)?;
        written.push(format!("{}/{}", s.rtype, s.id));
    }
    check_refs(conn, &refs)?;
    Ok(written)
}

/// A message id is its sender's: a replay is recognised (and given the first answer, which names
/// what was written) only when the same client sends it acting for the same records. From anyone
/// else it is a new message, checked against their own scope and grants.
fn sender_key(ctx: &AccessContext, id: &str) -> String {
    format!("{}|{id}", ctx.owner_key())
}

type Reply = tokio::sync::oneshot::Sender<Result<Value, FhirError>>;

/// Writes messages: each writer thread writes the messages waiting for it together, one
/// transaction, a savepoint each (a failing message changes nothing and the others go on), one
/// commit for all (group commit). SQLite has one writer (it writes one transaction at a time
/// anyway); PostgreSQL several, since there a message spends most of its time waiting on round trips.
#[derive(Clone)]
pub struct MessageWriter {
    store: Store,
    queues: Vec<mpsc::Sender<(AccessContext, Message, Reply)>>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

const POSTGRES_WRITERS: usize = 4;

const GROUP: usize = 64;

impl MessageWriter {
    pub fn start(store: Store) -> MessageWriter {
        let writers = match store.db.backend() {
            crate::db::Backend::Sqlite => 1,
            crate::db::Backend::Postgres => POSTGRES_WRITERS,
        };
        let queues = (0..writers)
            .filter_map(|_| {
                let (tx, rx) = mpsc::channel();
                let writer = store.clone();
                let spawned =
                    std::thread::Builder::new().name("message-writer".into()).spawn(move || write_groups(&writer, &rx));
                spawned.map_err(|e| tracing::error!("a message writer did not start: {e}")).ok().map(|_| tx)
            })
            .collect();
        MessageWriter { store, queues, next: Default::default() }
    }

    /// Processes one message as `ctx`; resolves once it is committed. The request waits for the
    /// writer thread without holding one of its own (one thread hand-off per message, not two).
    pub async fn process(&self, ctx: AccessContext, bundle: Value) -> Result<Value, FhirError> {
        let m = parse(&bundle)?;
        drop(bundle);
        // Messages about one patient go to one writer: they never wait on each other's locks, and
        // a later one sees what an earlier one created (a change finds its prescription).
        let turn = route(&m).unwrap_or_else(|| self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let Some(queue) = self.queues.get(turn % self.queues.len().max(1)) else {
            let store = self.store.clone();
            return tokio::task::spawn_blocking(move || process_alone(&store, &ctx, &m))
                .await
                .map_err(|_| stopped())?;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        queue.send((ctx, m, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// A writer for a message, from the patient its first resource is about.
fn route(m: &Message) -> Option<usize> {
    use std::hash::{Hash, Hasher};
    let r = &m.entries.get(1)?["resource"];
    let about = r["subject"]["reference"].as_str().or(r["patient"]["reference"].as_str())?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    about.hash(&mut h);
    Some(h.finish() as usize)
}

/// One message in its own transaction (when the writer thread could not start).
fn process_alone(store: &Store, ctx: &AccessContext, m: &Message) -> Result<Value, FhirError> {
    store.db.transaction(|conn| process_once(conn, ctx, m))
}

/// One message in a savepoint of the caller's transaction. Two writers racing (the same message
/// on another writer thread or replica, or a deadlock on PostgreSQL): the loser's savepoint rolls
/// back and it tries once more, after the winner committed (a replay then gets its answer).
fn process_once(conn: &mut Conn, ctx: &AccessContext, m: &Message) -> Result<Value, FhirError> {
    match conn.savepoint(|c| process_in(c, ctx, m)) {
        Err(FhirError::Db(e)) if e.is_race() => conn.savepoint(|c| process_in(c, ctx, m)),
        other => other,
    }
}

fn stopped() -> FhirError {
    FhirError::Db(DbError::Pool("the message writer has stopped".into()))
}

fn write_groups(store: &Store, rx: &mpsc::Receiver<(AccessContext, Message, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let results = store.db.transaction(|conn| -> Result<Vec<Result<Value, FhirError>>, FhirError> {
            Ok(group.iter().map(|(ctx, m, _)| process_once(conn, ctx, m)).collect())
        });
        match results {
            Ok(results) => {
                for ((_, _, reply), r) in group.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!("a group of {} messages was not committed: {e}", group.len());
                for (_, _, reply) in group {
                    let _ =
                        reply.send(Err(FhirError::Db(DbError::Pool(format!("the messages were not committed: {e}")))));
                }
            }
        }
    }
}
