//! Backup and restore, the same way on both backends: every durable table is read inside one
//! snapshot transaction and written as JSON lines into a tar file; restore replays them into a
//! freshly migrated, empty database (of either kind). Short-lived rows (sign-in sessions, codes,
//! seen assertion ids, login failures, jobs) are left out. Which Patient holds each NHS number
//! follows from the Patients and is rebuilt from them, so a backup made before that table existed
//! restores it too.

use super::{Backend, Bind, Conn, Db, DbError, Sql};
use serde_json::{Map, Value};
use std::io::{Read, Write};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Col {
    Int,
    OptInt,
    Text,
    OptText,
    Json,
    OptJson,
    /// Text that backups made before the column existed do not hold: this value then.
    TextOr(&'static str),
}
use Col::*;

type Table = (&'static str, &'static str, &'static [(&'static str, Col)]);

/// (table, ORDER BY, columns), in restore order.
const TABLES: &[Table] = &[
    (
        "resources",
        "rid",
        &[
            ("rid", Int),
            ("res_type", Text),
            ("id", Text),
            ("version_id", Int),
            ("last_updated", Int),
            ("deleted", Int),
            ("patient_id", OptText),
            ("source", OptText),
            ("body", Json),
        ],
    ),
    (
        "resource_versions",
        "rid, version_id",
        &[
            ("rid", Int),
            ("version_id", Int),
            ("res_type", Text),
            ("id", Text),
            ("last_updated", Int),
            ("deleted", Int),
            ("patient_id", OptText),
            ("method", Text),
            ("author", Text),
            ("body", OptJson),
        ],
    ),
    ("idx_token", "rid, param, code", &[("rid", Int), ("param", Text), ("system", OptText), ("code", Text)]),
    ("idx_string", "rid, param, value", &[("rid", Int), ("param", Text), ("value", Text), ("raw", Text)]),
    ("idx_date", "rid, param, lo", &[("rid", Int), ("param", Text), ("lo", Int), ("hi", Int)]),
    ("idx_ref", "rid, param, target_id", &[("rid", Int), ("param", Text), ("target_type", Text), ("target_id", Text)]),
    (
        "signing_keys",
        "kid",
        &[
            ("kid", Text),
            ("alg", Text),
            ("private_key", Text),
            ("public_jwk", Text),
            ("created_at", Int),
            ("retired_at", OptInt),
        ],
    ),
    (
        "audit_events",
        "aid",
        &[
            ("aid", Int),
            ("id", Text),
            ("recorded", Int),
            ("patient_id", OptText),
            ("client_id", OptText),
            ("subject", OptText),
            ("action", Text),
            ("interaction", Text),
            ("res_type", OptText),
            ("res_id", OptText),
            ("query", OptText),
            ("outcome", Int),
            ("detail", OptText),
            ("count", OptInt),
            ("organization", OptText),
        ],
    ),
    (
        "accounts",
        "id",
        &[
            ("id", Text),
            ("kind", Text),
            ("email", Text),
            ("password_hash", Text),
            ("fhir_user", Text),
            ("organization", OptText),
            ("created_at", Int),
            ("failed_logins", Int),
            ("locked_until", OptInt),
            ("last_login_at", OptInt),
            ("previous_login_at", OptInt),
        ],
    ),
    (
        "clients",
        "client_id",
        &[
            ("client_id", Text),
            ("name", Text),
            ("kind", Text),
            ("secret_hash", OptText),
            ("redirect_uris", Text),
            ("scope", Text),
            ("jwks", OptText),
            ("jwks_uri", OptText),
            ("organization", OptText),
            ("created_at", Int),
            ("removed_at", OptInt),
            ("id_token_alg", OptText),
        ],
    ),
    (
        "grants",
        "id",
        &[
            ("id", Text),
            ("patient_id", Text),
            ("client_id", OptText),
            ("organization", OptText),
            ("scope", Text),
            ("created_at", Int),
            ("created_by", Text),
            ("expires_at", OptInt),
            ("revoked_at", OptInt),
            ("last_used_at", OptInt),
        ],
    ),
    ("grant_permissions", "grant_id, resource_type", &[("grant_id", Text), ("resource_type", Text), ("perms", Text)]),
    (
        "refresh_tokens",
        "token_hash",
        &[
            ("token_hash", Text),
            ("family", Text),
            ("client_id", Text),
            ("account_id", Text),
            ("scope", Text),
            ("patient_id", OptText),
            ("created_at", Int),
            ("expires_at", Int),
            ("used_at", OptInt),
            ("revoked_at", OptInt),
        ],
    ),
    ("revocations", "token_key", &[("token_key", Text), ("expires_at", Int)]),
    ("imported_origins", "origin", &[("origin", Text), ("res_type", Text), ("res_id", Text), ("imported_at", Int)]),
    // A record that moved away stays closed after a restore.
    ("closed_records", "patient_id", &[("patient_id", Text), ("replaced_by", Text), ("closed_at", Int)]),
    // The roadmap stage: sources (credentials stay sealed with the service's secret), patient
    // links, what was fetched when, and the events already processed.
    (
        "federated_sources",
        "name",
        &[
            ("name", Text),
            ("fhir_base", Text),
            ("auth", Text),
            ("client_id", OptText),
            ("key_sealed", OptText),
            ("policy", Text),
            ("max_age_secs", Int),
            ("timeout_ms", Int),
            ("types", OptText),
            ("created_at", Int),
            ("retired_at", OptInt),
            ("events_client", OptText),
            ("sync_mode", TextOr("search")),
        ],
    ),
    (
        "source_links",
        "source, patient_id",
        &[("source", Text), ("patient_id", Text), ("remote_id", Text), ("linked_at", Int)],
    ),
    (
        "source_fetches",
        "source, patient_id, res_type",
        &[("source", Text), ("patient_id", Text), ("res_type", Text), ("fetched_at", Int)],
    ),
    ("processed_messages", "message_id", &[("message_id", Text), ("response", Text), ("processed_at", Int)]),
    ("transfer_partners", "name", &[("name", Text), ("fhir_base", Text), ("client_id", Text), ("created_at", Int)]),
    (
        "invitations",
        "code_hash",
        &[
            ("code_hash", Text),
            ("patient_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("used_at", OptInt),
            ("purpose", Text),
            ("account_id", OptText),
        ],
    ),
];

const PAGE: i64 = 5000;
pub const FORMAT: &str = "healthfolio-backup/1";

#[derive(diesel::QueryableByName)]
struct J {
    #[diesel(sql_type = diesel::sql_types::Text)]
    j: String,
}

/// `json_object` on SQLite and `json_build_object` on PostgreSQL take the same arguments.
fn row_json(backend: Backend, cols: &[(&str, Col)]) -> String {
    let args: Vec<String> = cols
        .iter()
        .map(|(c, t)| match (backend, t) {
            (Backend::Postgres, Json | OptJson) => format!("'{c}', CAST({c} AS TEXT)"),
            _ => format!("'{c}', {c}"),
        })
        .collect();
    match backend {
        Backend::Sqlite => format!("json_object({})", args.join(", ")),
        Backend::Postgres => format!("CAST(json_build_object({}) AS TEXT)", args.join(", ")),
    }
}

/// What a backup or restore can fail on: the file, or the database. A bad file is the
/// operator's to fix; it is never reported as the database being unavailable.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup file: {0}")]
    File(String),
    #[error("{0}")]
    NotEmpty(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for BackupError {
    fn from(e: diesel::result::Error) -> Self {
        BackupError::Db(e.into())
    }
}

fn io(e: std::io::Error) -> BackupError {
    BackupError::File(e.to_string())
}

/// Writes a consistent backup of `db` to `out`; returns rows per table.
pub fn backup(db: &Db, out: impl Write) -> Result<Vec<(String, usize)>, BackupError> {
    let mut conn = db.conn()?;
    let begin = match conn.backend() {
        Backend::Sqlite => "BEGIN",
        Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    };
    conn.batch(begin)?;
    let result = write_tables(&mut conn, out);
    let _ = conn.batch("ROLLBACK");
    result
}

fn write_tables(conn: &mut Conn, out: impl Write) -> Result<Vec<(String, usize)>, BackupError> {
    let mut tar = tar::Builder::new(out);
    let mut counts = Vec::new();
    for (table, order, cols) in TABLES {
        let mut data = Vec::new();
        let mut offset = 0;
        loop {
            let q = Sql::with(
                &format!(
                    "SELECT {} AS j FROM {table} ORDER BY {order} LIMIT ? OFFSET ?",
                    row_json(conn.backend(), cols)
                ),
                [Bind::Int(PAGE), Bind::Int(offset)],
            );
            let rows: Vec<J> = conn.load(&q)?;
            for r in &rows {
                data.extend_from_slice(r.j.as_bytes());
                data.push(b'\n');
            }
            offset += rows.len() as i64;
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        append(&mut tar, &format!("{table}.ndjson"), &data)?;
        counts.push((table.to_string(), offset as usize));
    }
    let manifest = serde_json::json!({"format": FORMAT, "created_at": crate::time::format_instant(crate::time::now_micros()), "tables": counts.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect::<Map<String, Value>>()});
    append(&mut tar, "manifest.json", manifest.to_string().as_bytes())?;
    tar.into_inner().map_err(io)?;
    Ok(counts)
}

fn append(tar: &mut tar::Builder<impl Write>, name: &str, data: &[u8]) -> Result<(), BackupError> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_cksum();
    tar.append_data(&mut h, name, data).map_err(io)
}

fn bind(v: &Value, t: Col) -> Result<Bind, BackupError> {
    let bad = || BackupError::File(format!("a row has a bad value: {v}"));
    Ok(match t {
        Int => Bind::Int(v.as_i64().ok_or_else(bad)?),
        OptInt => Bind::OptInt(v.as_i64()),
        Text => Bind::Text(v.as_str().ok_or_else(bad)?.to_string()),
        TextOr(default) => Bind::Text(v.as_str().unwrap_or(default).to_string()),
        OptText => Bind::OptText(v.as_str().map(str::to_string)),
        Json => Bind::Json(v.as_str().ok_or_else(bad)?.to_string()),
        OptJson => Bind::OptJson(v.as_str().map(str::to_string)),
    })
}

/// A table a backup does not carry because it follows from the ones it does (rebuilt, in the
/// restore's transaction, by the layer that owns it).
pub type Derived = (&'static str, fn(&mut Conn) -> Result<usize, DbError>);

/// Restores a backup into an empty, migrated database, in one transaction; `derived` tables are
/// rebuilt from what it restored.
pub fn restore(db: &Db, input: impl Read, derived: &[Derived]) -> Result<Vec<(String, usize)>, BackupError> {
    let mut files = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(io)? {
        let mut e = entry.map_err(io)?;
        let name = e.path().map_err(io)?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).map_err(io)?;
        files.insert(name, data);
    }
    let manifest: Value = files
        .get("manifest.json")
        .and_then(|m| serde_json::from_slice(m).ok())
        .ok_or_else(|| BackupError::File("not a Healthfolio backup: manifest.json missing".into()))?;
    if manifest["format"] != FORMAT {
        return Err(BackupError::File(format!("backup format {} is not {FORMAT}", manifest["format"])));
    }
    db.transaction(|conn| {
        let existing = conn.first::<super::Int>(&Sql::new("SELECT COUNT(*) AS n FROM resources"))?.map_or(0, |r| r.n);
        if existing > 0 {
            return Err(BackupError::NotEmpty("restore needs an empty database: this one already holds resources"));
        }
        // A fresh instance made its own first signing key; the backup's keys replace it.
        conn.execute(&Sql::new("DELETE FROM signing_keys"))?;
        let mut counts = Vec::new();
        for (table, _, cols) in TABLES {
            let data = files.get(&format!("{table}.ndjson")).cloned().unwrap_or_default();
            let n = restore_table(conn, table, cols, &data)?;
            counts.push((table.to_string(), n));
        }
        for (table, rebuild) in derived {
            counts.push((table.to_string(), rebuild(conn)?));
        }
        if conn.backend() == Backend::Postgres {
            conn.batch("SELECT setval(pg_get_serial_sequence('resources', 'rid'), COALESCE((SELECT MAX(rid) FROM resources), 0) + 1, false); \
                        SELECT setval(pg_get_serial_sequence('audit_events', 'aid'), COALESCE((SELECT MAX(aid) FROM audit_events), 0) + 1, false);")?;
        }
        Ok(counts)
    })
}

fn restore_table(conn: &mut Conn, table: &str, cols: &[(&str, Col)], data: &[u8]) -> Result<usize, BackupError> {
    let names: Vec<&str> = cols.iter().map(|(c, _)| *c).collect();
    let mut n = 0;
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let row: Map<String, Value> =
            serde_json::from_slice(line).map_err(|e| BackupError::File(format!("{table}: {e}")))?;
        let mut q = Sql::new(&format!("INSERT INTO {table} ({}) VALUES ", names.join(", ")));
        let binds =
            cols.iter().map(|(c, t)| bind(row.get(*c).unwrap_or(&Value::Null), *t)).collect::<Result<Vec<_>, _>>()?;
        q.list(binds);
        conn.execute(&q)?;
        n += 1;
    }
    Ok(n)
}
