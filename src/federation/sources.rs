//! Federated sources: external FHIR servers holding part of a patient's record. Only operators add
//! them, and their URLs are the only addresses the federation layer calls.

use crate::auth::{AuthError, Keys};
use crate::db::{Bind, Conn, DbError, Sql};
use crate::time::now_micros;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Federated: asked at query time, nothing stored.
    Never,
    /// Hybrid: what a query fetched is kept as a persisted copy until `max_age` passes.
    OnRead,
    /// Persisted copy: kept in step in the background.
    Always,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "never" => Some(Policy::Never),
            "on-read" => Some(Policy::OnRead),
            "always" => Some(Policy::Always),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Never => "never",
            Policy::OnRead => "on-read",
            Policy::Always => "always",
        }
    }
}

#[derive(QueryableByName, Debug, Clone)]
pub struct SourceRow {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub fhir_base: String,
    #[diesel(sql_type = Text)]
    pub auth: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub client_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub key_sealed: Option<String>,
    #[diesel(sql_type = Text)]
    pub policy: String,
    #[diesel(sql_type = BigInt)]
    pub max_age_secs: i64,
    #[diesel(sql_type = BigInt)]
    pub timeout_ms: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub types: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub events_client: Option<String>,
    #[diesel(sql_type = Text)]
    pub sync_mode: String,
}

/// A source ready to be called: its private key opened, if it authenticates.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub fhir_base: String,
    pub policy: Policy,
    pub max_age_secs: i64,
    pub timeout_ms: i64,
    pub types: Option<Vec<String>>,
    /// (client id, key id, PKCS#8 DER of an EC P-384 key) for SMART Backend Services.
    pub credentials: Option<(String, String, Vec<u8>)>,
    /// The local client whose event messages feed this source's persisted copy.
    pub events_client: Option<String>,
    /// An `always` source is kept in step by Bulk Data `$export` rather than by searches.
    pub bulk_sync: bool,
}

#[derive(Debug, Clone)]
pub struct NewSource {
    pub name: String,
    pub fhir_base: String,
    pub policy: Policy,
    pub max_age_secs: i64,
    pub timeout_ms: i64,
    pub types: Option<Vec<String>>,
    /// (client id, key id, PKCS#8 DER)
    pub credentials: Option<(String, String, Vec<u8>)>,
    /// The local client (a provider system) whose event messages feed this source's copy.
    pub events_client: Option<String>,
    /// Keep an `always` copy in step by Bulk Data `$export` rather than by searches.
    pub bulk_sync: bool,
}

const COLUMNS: &str =
    "name, fhir_base, auth, client_id, key_sealed, policy, max_age_secs, timeout_ms, types, events_client, sync_mode";

pub fn add(conn: &mut Conn, keys: &Keys, s: &NewSource) -> Result<(), AuthError> {
    if !crate::fhir::valid_id(&s.name) {
        return Err(AuthError::Invalid("a source name is letters, digits, '-' and '.'".into()));
    }
    if !(s.fhir_base.starts_with("https://") || s.fhir_base.starts_with("http://")) {
        return Err(AuthError::Invalid("--fhir-base must be an http(s) URL".into()));
    }
    if let Some(client) = &s.events_client {
        check_events_client(conn, client, &s.name)?;
    }
    // The key id travels with the key, sealed with the instance secret like signing keys.
    let (auth, client, sealed) = match &s.credentials {
        Some((client, kid, der)) => {
            let mut blob = kid.as_bytes().to_vec();
            blob.push(0);
            blob.extend_from_slice(der);
            ("client-credentials", Some(client.clone()), Some(keys.seal(&blob)?))
        }
        None => ("none", None, None),
    };
    let r = conn.execute(&Sql::with(
        &format!("INSERT INTO federated_sources ({COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        [
            Bind::Text(s.name.clone()),
            Bind::Text(s.fhir_base.trim_end_matches('/').to_string()),
            Bind::Text(auth.into()),
            Bind::OptText(client),
            Bind::OptText(sealed),
            Bind::Text(s.policy.as_str().into()),
            Bind::Int(s.max_age_secs),
            Bind::Int(s.timeout_ms),
            Bind::OptText(s.types.as_ref().map(|t| t.join(","))),
            Bind::OptText(s.events_client.clone()),
            Bind::Text(sync_mode(s.bulk_sync).into()),
            Bind::Int(now_micros()),
        ],
    ));
    match r {
        Err(e) if e.is_unique_violation() => {
            Err(AuthError::Invalid(format!("a source named {} already exists", s.name)))
        }
        other => other.map(|_| ()).map_err(AuthError::from),
    }
}

fn open(keys: &Keys, r: SourceRow) -> Result<Source, AuthError> {
    let credentials = match (&r.client_id, &r.key_sealed) {
        (Some(c), Some(sealed)) => {
            let blob = keys.open(sealed)?;
            let split =
                blob.iter().position(|b| *b == 0).ok_or_else(|| AuthError::Key("source key unreadable".into()))?;
            Some((c.clone(), String::from_utf8_lossy(&blob[..split]).into_owned(), blob[split + 1..].to_vec()))
        }
        _ => None,
    };
    Ok(Source {
        policy: Policy::parse(&r.policy).unwrap_or(Policy::Never),
        types: r.types.as_ref().map(|t| t.split(',').map(str::to_string).collect()),
        name: r.name,
        fhir_base: r.fhir_base,
        max_age_secs: r.max_age_secs,
        timeout_ms: r.timeout_ms,
        events_client: r.events_client,
        bulk_sync: r.sync_mode == "bulk",
        credentials,
    })
}

/// Active (not retired) sources.
pub fn active(conn: &mut Conn, keys: &Keys) -> Result<Vec<Source>, AuthError> {
    let rows: Vec<SourceRow> = conn
        .load(&Sql::new(&format!("SELECT {COLUMNS} FROM federated_sources WHERE retired_at IS NULL ORDER BY name")))?;
    rows.into_iter().map(|r| open(keys, r)).collect()
}

pub fn get(conn: &mut Conn, keys: &Keys, name: &str) -> Result<Option<Source>, AuthError> {
    let q = Sql::with(
        &format!("SELECT {COLUMNS} FROM federated_sources WHERE name = ? AND retired_at IS NULL"),
        [Bind::Text(name.into())],
    );
    conn.first::<SourceRow>(&q)?.map(|r| open(keys, r)).transpose()
}

/// What `source update` changes; `None` keeps the current value.
#[derive(Debug, Default)]
pub struct Change {
    pub policy: Option<Policy>,
    pub max_age_secs: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub events_client: Option<String>,
    pub bulk_sync: Option<bool>,
}

fn sync_mode(bulk: bool) -> &'static str {
    if bulk {
        "bulk"
    } else {
        "search"
    }
}

/// Moves a source between roadmap stages by configuration: the name (and so the ids of its
/// persisted copies and its patient links) stays, so nothing is duplicated or orphaned.
/// `events_client` "" stops the source taking events.
pub fn update(conn: &mut Conn, name: &str, c: &Change) -> Result<bool, AuthError> {
    let events = c.events_client.as_deref().map(|e| (!e.is_empty()).then_some(e));
    if let Some(Some(client)) = events {
        check_events_client(conn, client, name)?;
    }
    let n = conn.execute(&Sql::with(
        "UPDATE federated_sources SET policy = COALESCE(?, policy), max_age_secs = COALESCE(?, max_age_secs), \
         timeout_ms = COALESCE(?, timeout_ms), sync_mode = COALESCE(?, sync_mode) \
         WHERE name = ? AND retired_at IS NULL",
        [
            Bind::OptText(c.policy.map(|p| p.as_str().to_string())),
            Bind::OptInt(c.max_age_secs),
            Bind::OptInt(c.timeout_ms),
            Bind::OptText(c.bulk_sync.map(|b| sync_mode(b).to_string())),
            Bind::Text(name.into()),
        ],
    ))?;
    if let Some(client) = events {
        conn.execute(&Sql::with(
            "UPDATE federated_sources SET events_client = ? WHERE name = ?",
            [Bind::OptText(client.map(str::to_string)), Bind::Text(name.into())],
        ))?;
    }
    Ok(n == 1)
}

/// A source's event sender is a registered provider system, and sends for that source only (its
/// messages must land in one copy).
fn check_events_client(conn: &mut Conn, client: &str, source: &str) -> Result<(), AuthError> {
    let backend =
        crate::auth::clients::get(conn, client)?.is_some_and(|c| c.kind == crate::auth::clients::ClientKind::Backend);
    if !backend {
        return Err(AuthError::Invalid(format!("{client} is not a registered backend client (a provider system)")));
    }
    match fed_by(conn, client)? {
        Some((other, _)) if other != source => {
            Err(AuthError::Invalid(format!("{client} already sends the events of the source {other}")))
        }
        _ => Ok(()),
    }
}

pub fn remove(conn: &mut Conn, name: &str) -> Result<bool, DbError> {
    Ok(conn.execute(&Sql::with(
        "UPDATE federated_sources SET retired_at = ? WHERE name = ? AND retired_at IS NULL",
        [Bind::Int(now_micros()), Bind::Text(name.into())],
    ))? == 1)
}

/// The active source whose persisted copy `client_id`'s event messages feed, as (name, FHIR base).
pub fn fed_by(conn: &mut Conn, client_id: &str) -> Result<Option<(String, String)>, DbError> {
    #[derive(QueryableByName)]
    struct Fed {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        fhir_base: String,
    }
    let q = Sql::with(
        "SELECT name, fhir_base FROM federated_sources WHERE events_client = ? AND retired_at IS NULL",
        [Bind::Text(client_id.into())],
    );
    Ok(conn.first::<Fed>(&q.reused())?.map(|f| (f.name, f.fhir_base)))
}

/// Single-and-only: the source's persisted copies become locally owned and the source retires.
pub fn adopt(conn: &mut Conn, name: &str) -> Result<usize, DbError> {
    let n = crate::fhir::copies::adopt(conn, name)?;
    remove(conn, name)?;
    Ok(n)
}

pub fn cached_link(conn: &mut Conn, source: &str, patient: &str) -> Result<Option<String>, DbError> {
    #[derive(QueryableByName)]
    struct L {
        #[diesel(sql_type = Text)]
        remote_id: String,
    }
    let q = Sql::with(
        "SELECT remote_id FROM source_links WHERE source = ? AND patient_id = ?",
        [Bind::Text(source.into()), Bind::Text(patient.into())],
    );
    Ok(conn.first::<L>(&q)?.map(|l| l.remote_id))
}

/// The local patient linked to `remote` (the patient's id at the source), if any.
pub fn linked_patient(conn: &mut Conn, source: &str, remote: &str) -> Result<Option<String>, DbError> {
    #[derive(QueryableByName)]
    struct L {
        #[diesel(sql_type = Text)]
        patient_id: String,
    }
    let q = Sql::with(
        "SELECT patient_id FROM source_links WHERE source = ? AND remote_id = ?",
        [Bind::Text(source.into()), Bind::Text(remote.into())],
    );
    Ok(conn.first::<L>(&q)?.map(|l| l.patient_id))
}

/// (local patient, id at the source) of every patient the source is known to hold.
pub fn linked(conn: &mut Conn, source: &str) -> Result<Vec<(String, String)>, DbError> {
    #[derive(diesel::QueryableByName)]
    struct L {
        #[diesel(sql_type = diesel::sql_types::Text)]
        patient_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        remote_id: String,
    }
    let q = Sql::with(
        "SELECT patient_id, remote_id FROM source_links WHERE source = ? AND remote_id <> ? ORDER BY patient_id",
        [Bind::Text(source.into()), Bind::Text(super::sync::NOT_THERE.into())],
    );
    Ok(conn.load::<L>(&q)?.into_iter().map(|l| (l.patient_id, l.remote_id)).collect())
}

pub fn save_link(conn: &mut Conn, source: &str, patient: &str, remote: &str) -> Result<(), DbError> {
    // An upsert: concurrent searches for one patient may both link it.
    conn.execute(&Sql::with(
        "INSERT INTO source_links (source, patient_id, remote_id, linked_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (source, patient_id) DO UPDATE SET remote_id = excluded.remote_id, linked_at = excluded.linked_at",
        [Bind::Text(source.into()), Bind::Text(patient.into()), Bind::Text(remote.into()), Bind::Int(now_micros())],
    ))?;
    Ok(())
}

/// When this source was last asked for `rtype` of `patient`, if ever.
pub fn last_fetch(conn: &mut Conn, source: &str, patient: &str, rtype: &str) -> Result<Option<i64>, DbError> {
    let q = Sql::with(
        "SELECT fetched_at AS n FROM source_fetches WHERE source = ? AND patient_id = ? AND res_type = ?",
        [Bind::Text(source.into()), Bind::Text(patient.into()), Bind::Text(rtype.into())],
    );
    Ok(conn.first::<crate::db::Int>(&q)?.map(|r| r.n))
}

pub fn record_fetch(conn: &mut Conn, source: &str, patient: &str, rtype: &str) -> Result<(), DbError> {
    record_fetch_at(conn, source, patient, rtype, now_micros())
}

/// Records a fetch that started at `at` (what changed after it is pulled next time).
pub fn record_fetch_at(conn: &mut Conn, source: &str, patient: &str, rtype: &str, at: i64) -> Result<(), DbError> {
    conn.execute(&Sql::with(
        "INSERT INTO source_fetches (source, patient_id, res_type, fetched_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (source, patient_id, res_type) DO UPDATE SET fetched_at = excluded.fetched_at",
        [Bind::Text(source.into()), Bind::Text(patient.into()), Bind::Text(rtype.into()), Bind::Int(at)],
    ))?;
    Ok(())
}

/// The condition, on a query of Patients (`r`), that `source` has not been asked about them yet.
pub fn unlinked_condition(q: &mut Sql, source: &str) {
    q.push(" AND NOT EXISTS (SELECT 1 FROM source_links l WHERE l.source = ")
        .text(source)
        .push(" AND l.patient_id = r.id)");
}
