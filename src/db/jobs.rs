//! Background jobs (bulk exports, source sync rounds): rows in the database leased by whichever
//! replica's worker takes them, so no job depends on one process. Every statement on `jobs`.

use super::{Backend, Bind, Conn, DbError, Int, Sql};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;

#[derive(QueryableByName, Debug, Clone)]
pub struct Job {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Text)]
    pub client_id: String,
    #[diesel(sql_type = Text)]
    pub request: String,
    #[diesel(sql_type = Text)]
    pub params: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub progress: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub result: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub created_at: i64,
}

const COLUMNS: &str = "id, status, client_id, request, params, progress, result, error, created_at";

/// What a new job is: its kind, who asked, what they asked and its parameters.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub status: &'a str,
    pub client_id: &'a str,
    pub request: &'a str,
    pub params: &'a str,
}

/// Adds a job; one that exists already (a recurring job's row) is left as it is.
pub fn add(conn: &mut Conn, j: &NewJob, now: i64) -> Result<(), DbError> {
    conn.execute(&Sql::with(
        "INSERT INTO jobs (id, kind, status, client_id, request, params, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO NOTHING",
        [
            Bind::Text(j.id.into()),
            Bind::Text(j.kind.into()),
            Bind::Text(j.status.into()),
            Bind::Text(j.client_id.into()),
            Bind::Text(j.request.into()),
            Bind::Text(j.params.into()),
            Bind::Int(now),
        ],
    ))?;
    Ok(())
}

/// The job `id` of `kind`, if `client_id` started it.
pub fn get(conn: &mut Conn, id: &str, kind: &str, client_id: &str) -> Result<Option<Job>, DbError> {
    conn.first(&Sql::with(
        &format!("SELECT {COLUMNS} FROM jobs WHERE id = ? AND client_id = ? AND kind = ?"),
        [Bind::Text(id.into()), Bind::Text(client_id.into()), Bind::Text(kind.into())],
    ))
}

/// Ends a job in `status` (`cancelled`, `failed`) with an optional error.
pub fn end(conn: &mut Conn, id: &str, status: &str, error: Option<String>, now: i64) -> Result<(), DbError> {
    conn.execute(&Sql::with(
        "UPDATE jobs SET status = ?, error = ?, finished_at = ? WHERE id = ?",
        [Bind::Text(status.into()), Bind::OptText(error), Bind::Int(now), Bind::Text(id.into())],
    ))?;
    Ok(())
}

/// Leases the oldest queued job of `kind`, or one whose worker stopped renewing its lease. On
/// PostgreSQL replicas skip each other's picks; SQLite's one writer picks alone.
pub fn lease_next(conn: &mut Conn, kind: &str, worker: &str, until: i64, now: i64) -> Result<Option<Job>, DbError> {
    let pick = match conn.backend() {
        Backend::Postgres => "SELECT id FROM jobs WHERE kind = ? AND (status = 'queued' OR (status = 'running' AND lease_until < ?)) ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "SELECT id FROM jobs WHERE kind = ? AND (status = 'queued' OR (status = 'running' AND lease_until < ?)) ORDER BY created_at LIMIT 1",
    };
    conn.first(&Sql::with(
        &format!("UPDATE jobs SET status = 'running', lease_until = ?, leased_by = ? WHERE id = ({pick}) RETURNING {COLUMNS}"),
        [Bind::Int(until), Bind::Text(worker.into()), Bind::Text(kind.into()), Bind::Int(now)],
    ))
}

/// Leases the recurring job `id` unless another worker holds it or its last run ended after
/// `due`; true when `worker` now holds it.
pub fn lease_due(conn: &mut Conn, id: &str, worker: &str, until: i64, now: i64, due: i64) -> Result<bool, DbError> {
    let n = conn.execute(&Sql::with(
        "UPDATE jobs SET status = 'running', leased_by = ?, lease_until = ? WHERE id = ? \
         AND (status <> 'running' OR lease_until < ?) AND (finished_at IS NULL OR finished_at <= ?)",
        [Bind::Text(worker.into()), Bind::Int(until), Bind::Text(id.into()), Bind::Int(now), Bind::Int(due)],
    ))?;
    Ok(n == 1)
}

/// Extends `worker`'s lease and records progress; false when the job is no longer its own
/// (cancelled, or taken over after the lease lapsed).
pub fn renew(conn: &mut Conn, id: &str, worker: &str, until: i64, progress: &str) -> Result<bool, DbError> {
    let n = conn.execute(&Sql::with(
        "UPDATE jobs SET lease_until = ?, progress = ? WHERE id = ? AND leased_by = ? AND status = 'running'",
        [Bind::Int(until), Bind::Text(progress.into()), Bind::Text(id.into()), Bind::Text(worker.into())],
    ))?;
    Ok(n == 1)
}

/// How `worker`'s run of a job ended: the status it goes to (`completed`, or `idle` for a
/// recurring job), what it produced and any error. False when the job was no longer its own.
pub struct Finish<'a> {
    pub status: &'a str,
    pub progress: &'a str,
    pub result: Option<String>,
    pub error: Option<String>,
}

pub fn finish(conn: &mut Conn, id: &str, worker: &str, f: Finish, now: i64) -> Result<bool, DbError> {
    let n = conn.execute(&Sql::with(
        "UPDATE jobs SET status = ?, progress = ?, result = COALESCE(?, result), error = ?, finished_at = ? \
         WHERE id = ? AND leased_by = ? AND status = 'running'",
        [
            Bind::Text(f.status.into()),
            Bind::Text(f.progress.into()),
            Bind::OptText(f.result),
            Bind::OptText(f.error),
            Bind::Int(now),
            Bind::Text(id.into()),
            Bind::Text(worker.into()),
        ],
    ))?;
    Ok(n == 1)
}

/// How many jobs are in `status`.
pub fn count(conn: &mut Conn, status: &str) -> Result<i64, DbError> {
    Ok(conn
        .first::<Int>(&Sql::with("SELECT COUNT(*) AS n FROM jobs WHERE status = ?", [Bind::Text(status.into())]))?
        .map_or(0, |r| r.n))
}
