//! Storage: one pooled connection type over SQLite (embedded default) and PostgreSQL (production).
//!
//! Most statements are written once with [`Sql`], which renders its placeholders for the backend at
//! execution time (`?` on SQLite, `$n` on PostgreSQL). The few places where the SQL itself must differ
//! ask [`Conn::backend`].

pub mod backup;
pub mod jobs;
mod replica;
mod sql;

pub use sql::{Bind, Sql};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::query_dsl::RunQueryDsl;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel::QueryableByName;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Pool(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

impl DbError {
    /// A unique-constraint violation: two writers raced for the same key.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            DbError::Query(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _))
        )
    }

    /// A rule the database itself keeps refused the change: its triggers raise `refused: …`.
    pub fn is_refusal(&self) -> bool {
        matches!(self, DbError::Query(diesel::result::Error::DatabaseError(_, info)) if info.message().starts_with("refused: "))
    }

    /// Two writers raced (a key, a serialization conflict, a deadlock one of them lost): trying
    /// again, once the other has committed, can succeed.
    pub fn is_race(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            DbError::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
            | DbError::Query(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => true,
            DbError::Query(Error::DatabaseError(_, info)) => info.message().contains("deadlock detected"),
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub enum Db {
    /// SQLite has one writer at a time; writers queue on the in-process lock (woken at once)
    /// rather than on SQLite's busy handler, which sleeps in millisecond steps.
    Sqlite(Pool<ConnectionManager<SqliteConnection>>, Arc<Mutex<()>>),
    /// The primary, and the read replicas when there are any.
    Postgres(Pool<ConnectionManager<PgConnection>>, Option<Arc<replica::Replicas>>),
}

/// libpq would otherwise try GSSAPI (Kerberos) on every connect; Kerberos' own process-exit
/// teardown then aborts a thread still connecting. Set it in the URL to use it.
fn without_gss(url: &str) -> String {
    if url.contains("gssencmode=") {
        url.to_string()
    } else {
        format!("{url}{}gssencmode=disable", if url.contains('?') { '&' } else { '?' })
    }
}

pub enum Conn {
    Sqlite(PooledConnection<ConnectionManager<SqliteConnection>>),
    Postgres(PooledConnection<ConnectionManager<PgConnection>>),
}

#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // The busy timeout first, so the rest waits for other connections. NORMAL sync is durable
        // across process crashes in WAL mode and avoids an fsync per commit. Checkpoints run in
        // the background (see `start_maintenance`), so a committing request rarely pays for one.
        // Savepoint journals (a batch entry, a grouped message) stay in memory, not a temp file.
        conn.batch_execute(
            "PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16000; \
             PRAGMA wal_autocheckpoint = 50000; PRAGMA temp_store = MEMORY;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl Db {
    /// Opens a pool for `url`: `postgres://…` selects PostgreSQL, anything else is a SQLite path
    /// (an optional `sqlite://` prefix is accepted).
    pub fn open(url: &str, pool_size: u32) -> Result<Db, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let url = without_gss(url);
            // No `SELECT 1` before every checkout (a round trip per request); a connection that
            // broke fails its statement, is reported broken and dropped by the pool.
            let pool = Pool::builder()
                .max_size(pool_size)
                .connection_timeout(Duration::from_secs(10))
                .test_on_check_out(false)
                .build(ConnectionManager::<PgConnection>::new(url))
                .map_err(|e| DbError::Pool(e.to_string()))?;
            Ok(Db::Postgres(pool, None))
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            // WAL (readers beside the one writer) is a property of the file: set it once, before
            // the pool opens its connections together.
            {
                use diesel::Connection;
                let mut c = SqliteConnection::establish(path).map_err(|e| DbError::Pool(e.to_string()))?;
                c.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;")?;
            }
            let pool = Pool::builder()
                .max_size(pool_size)
                .connection_timeout(Duration::from_secs(10))
                .test_on_check_out(false)
                .connection_customizer(Box::new(SqlitePragmas))
                .build(ConnectionManager::<SqliteConnection>::new(path))
                .map_err(|e| DbError::Pool(e.to_string()))?;
            Ok(Db::Sqlite(pool, Arc::default()))
        }
    }

    /// Adds read replicas (PostgreSQL streaming standbys of this primary) that
    /// [`Db::read_conn`] prefers while they are at most `max_lag` behind. SQLite ignores them:
    /// its one file is read where it is written.
    pub fn with_replicas(self, urls: &[String], max_lag: Duration) -> Result<Db, DbError> {
        match self {
            Db::Postgres(primary, _) if !urls.is_empty() => {
                let size = primary.max_size();
                let replicas = replica::Replicas::open(&primary, urls, size, max_lag)?;
                Ok(Db::Postgres(primary, Some(replicas)))
            }
            db => Ok(db),
        }
    }

    /// A connection for reads that may be served by a replica: one current enough (within the
    /// lag bound, and past `caller`'s own last write), else the primary. Never for writes, nor
    /// for checking tokens, revocations or grants: those read the primary ([`Db::conn`]).
    pub fn read_conn(&self, caller: &str) -> Result<Conn, DbError> {
        if let Db::Postgres(_, Some(replicas)) = self {
            if let Some(c) = replicas.conn(caller) {
                return Ok(Conn::Postgres(c));
            }
        }
        self.conn()
    }

    /// Notes that `caller` committed a write: its reads go to the primary until a replica has it.
    pub fn wrote(&self, caller: &str) {
        if let Db::Postgres(_, Some(replicas)) = self {
            replicas.wrote(caller);
        }
    }

    /// Reads served by a replica and, with replicas configured, those the primary served instead.
    pub fn reads_served(&self) -> (u64, u64) {
        match self {
            Db::Postgres(_, Some(r)) => {
                (r.served_by_replica.load(Ordering::Relaxed), r.served_by_primary.load(Ordering::Relaxed))
            }
            _ => (0, 0),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(..) => Backend::Sqlite,
            Db::Postgres(..) => Backend::Postgres,
        }
    }

    pub fn conn(&self) -> Result<Conn, DbError> {
        match self {
            Db::Sqlite(p, _) => p.get().map(Conn::Sqlite),
            Db::Postgres(p, _) => p.get().map(Conn::Postgres),
        }
        .map_err(|e| DbError::Pool(e.to_string()))
    }

    /// Applies the embedded migrations of this backend; returns how many ran.
    pub fn migrate(&self) -> Result<usize, DbError> {
        let mut conn = self.conn()?;
        let done = match &mut conn {
            Conn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
            Conn::Postgres(c) => {
                // Replicas starting together (compose, a rolling deploy beside the migration Job)
                // take turns: the first migrates, the others then find nothing pending.
                c.batch_execute("SELECT pg_advisory_lock(7305451)")?;
                let done = c.run_pending_migrations(PG_MIGRATIONS).map(|v| v.len());
                c.batch_execute("SELECT pg_advisory_unlock(7305451)")?;
                done
            }
        };
        done.map_err(|e| DbError::Migration(e.to_string()))
    }

    /// True when every embedded migration has been applied.
    pub fn migrations_current(&self) -> Result<bool, DbError> {
        let mut conn = self.conn()?;
        let pending = match &mut conn {
            Conn::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
            Conn::Postgres(c) => c.has_pending_migration(PG_MIGRATIONS),
        };
        pending.map(|p| !p).map_err(|e| DbError::Migration(e.to_string()))
    }

    /// Refreshes PostgreSQL's planner statistics: after a bulk load they are far off (it would
    /// otherwise plan a one-patient search as if `status=active` matched four rows). SQLite's
    /// are fixed by a migration (`planner_statistics`) and must not be measured over.
    pub fn analyze(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(..) => Ok(()),
            Db::Postgres(..) => self.conn()?.batch("ANALYZE"),
        }
    }

    /// Copies committed WAL frames into the database file without blocking writers, so commits
    /// do not stop to checkpoint.
    fn checkpoint(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(..) => self.conn()?.batch("PRAGMA wal_checkpoint(PASSIVE);"),
            Db::Postgres(..) => Ok(()),
        }
    }

    /// SQLite upkeep until `alive` is dropped: a checkpoint every 200 ms, on its own thread, so
    /// the WAL stays short and writers rarely reach the automatic checkpoint themselves.
    pub fn start_maintenance(&self, alive: std::sync::Weak<()>) {
        if self.backend() != Backend::Sqlite {
            return;
        }
        let db = self.clone();
        let spawned = std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
            while alive.upgrade().is_some() {
                if let Err(e) = db.checkpoint() {
                    tracing::warn!("checkpoint: {e}");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        if let Err(e) = spawned {
            tracing::error!("SQLite upkeep did not start: {e}");
        }
    }

    pub fn pool_state(&self) -> (u32, u32) {
        let s = match self {
            Db::Sqlite(p, _) => p.state(),
            Db::Postgres(p, _) => p.state(),
        };
        (s.connections, s.idle_connections)
    }

    /// Runs `f` inside one database transaction on a pooled connection.
    pub fn transaction<T, E>(&self, f: impl FnOnce(&mut Conn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        let mut conn = self.conn()?;
        self.transaction_on(&mut conn, f)
    }

    /// Runs `f` inside one database transaction on `conn`, a connection its caller keeps (a writer
    /// thread's own, which never waits for the pool that the requests it serves are holding).
    pub fn transaction_on<T, E>(&self, conn: &mut Conn, f: impl FnOnce(&mut Conn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        let _writer = match self {
            Db::Sqlite(_, lock) => Some(lock.lock().unwrap_or_else(|p| p.into_inner())),
            Db::Postgres(..) => None,
        };
        conn.transaction(f)
    }
}

/// Runs the same block against whichever concrete connection is inside a [`Conn`].
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Postgres($c) => $body,
        }
    };
}

impl Conn {
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    pub fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        with_conn!(self, c => c.batch_execute(sql)).map_err(DbError::from)
    }

    /// Runs `f` in a transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so two
    /// writers queue on the busy timeout instead of failing when a read lock cannot be upgraded.
    /// Private: [`Db::transaction`] is the one way in, so no writer skips SQLite's writer queue.
    fn transaction<T, E>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        let begin = match self.backend() {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        self.batch(begin)?;
        match f(self) {
            Ok(v) => {
                if let Err(e) = self.batch("COMMIT") {
                    let _ = self.batch("ROLLBACK");
                    return Err(e.into());
                }
                Ok(v)
            }
            Err(e) => {
                // The rollback error, if any, is less useful than the one that caused it.
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Runs `f` inside a savepoint of the current transaction: its writes vanish if it fails,
    /// the surrounding transaction goes on (batch entries are independent).
    pub fn savepoint<T, E>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        self.batch("SAVEPOINT entry")?;
        match f(self) {
            Ok(v) => {
                self.batch("RELEASE SAVEPOINT entry")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK TO SAVEPOINT entry");
                let _ = self.batch("RELEASE SAVEPOINT entry");
                Err(e)
            }
        }
    }

    /// Makes the transactions that name one of the same `keys` take turns, each until it commits
    /// or rolls back: a search and the write it decides then see each other's results. SQLite's
    /// writers take turns already (`BEGIN IMMEDIATE`, and the in-process lock before it).
    /// PostgreSQL: a transaction-scoped advisory lock per key, which every replica on the database
    /// shares, taken in one order so that two transactions never wait for each other.
    pub fn take_turns<'k>(&mut self, keys: impl IntoIterator<Item = &'k str>) -> Result<(), DbError> {
        use sha2::{Digest, Sha256};
        if self.backend() == Backend::Sqlite {
            return Ok(());
        }
        // A digest rather than std's hasher: every replica, of any build, must agree on the lock.
        let lock_id = |key: &str| {
            let d = Sha256::digest(key.as_bytes());
            i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        };
        let ids: std::collections::BTreeSet<i64> = keys.into_iter().map(lock_id).collect();
        for id in ids {
            self.execute(&Sql::with("SELECT pg_advisory_xact_lock(?)", [Bind::Int(id)]).reused())?;
        }
        Ok(())
    }

    pub fn execute(&mut self, q: &Sql) -> Result<usize, DbError> {
        let backend = self.backend();
        if q.is_reused() {
            let p = sql::Prepared { sql: q, backend };
            return with_conn!(self, c => p.execute(c)).map_err(DbError::from);
        }
        let text = q.render(backend);
        with_conn!(self, c => {
            let mut query = diesel::sql_query(text).into_boxed();
            for b in q.binds() {
                query = b.apply(query);
            }
            query.execute(c)
        })
        .map_err(DbError::from)
    }

    pub fn load<T>(&mut self, q: &Sql) -> Result<Vec<T>, DbError>
    where
        T: QueryableByName<diesel::sqlite::Sqlite> + QueryableByName<diesel::pg::Pg> + 'static,
    {
        let backend = self.backend();
        if q.is_reused() {
            let p = sql::Prepared { sql: q, backend };
            return with_conn!(self, c => p.load::<T>(c)).map_err(DbError::from);
        }
        let text = q.render(backend);
        with_conn!(self, c => {
            let mut query = diesel::sql_query(text).into_boxed();
            for b in q.binds() {
                query = b.apply(query);
            }
            query.load::<T>(c)
        })
        .map_err(DbError::from)
    }

    /// Inserts `rows` under `head` (`INSERT INTO t (a, b) VALUES`) in as few multi-row statements
    /// as the backends' parameter limits allow (SQLite's is 32,766). Each row is one `(?, …)`.
    /// Statements of a few rows (one resource's index rows) are kept prepared: their shapes are
    /// few, so the per-connection cache stays small.
    pub fn insert_rows(&mut self, head: &str, rows: &[Vec<Bind>]) -> Result<(), DbError> {
        const KEPT_PREPARED: usize = 16;
        const MAX_BINDS: usize = 30_000;
        let per_row = rows.first().map_or(1, Vec::len).max(1);
        for chunk in rows.chunks((MAX_BINDS / per_row).max(1)) {
            let mut q = Sql::new(head);
            for (i, row) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(",");
                }
                q.push(" ").list(row.iter().cloned());
            }
            self.execute(&if chunk.len() <= KEPT_PREPARED { q.reused() } else { q })?;
        }
        Ok(())
    }

    pub fn first<T>(&mut self, q: &Sql) -> Result<Option<T>, DbError>
    where
        T: QueryableByName<diesel::sqlite::Sqlite> + QueryableByName<diesel::pg::Pg> + 'static,
    {
        Ok(self.load(q)?.into_iter().next())
    }
}

/// A single `BIGINT` column, for counts and returned ids.
#[derive(QueryableByName, Debug)]
pub struct Int {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}
