//! PostgreSQL read replicas: where reads that may be a moment behind are served from.
//!
//! A watcher thread samples the primary's flushed WAL position every [`SAMPLE`] and each
//! replica's replayed position. A replica is "current as of" the latest sample whose position it
//! has replayed: everything committed before that sample is visible there. Measuring in WAL
//! positions rather than `pg_last_xact_replay_timestamp()` keeps an idle primary's replica
//! current (its replay timestamp grows old although nothing is missing). A replica further behind
//! than the bound, or unreachable, is passed over; with none left, reads go to the primary.
//!
//! Read-your-writes: a caller that wrote reads from a replica only once that replica is current
//! as of a moment after the write; until then its reads go to the primary.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{Connection, QueryableByName, RunQueryDsl};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

type PgPool = Pool<ConnectionManager<PgConnection>>;

/// How often positions are sampled: the staleness a healthy replica adds to the bound.
const SAMPLE: Duration = Duration::from_millis(100);

pub struct Replicas {
    replicas: Vec<Replica>,
    max_lag: Duration,
    next: AtomicUsize,
    /// When each caller last wrote, forgotten once every healthy replica has caught up.
    writers: Mutex<HashMap<String, Instant>>,
    pub(super) served_by_replica: AtomicU64,
    pub(super) served_by_primary: AtomicU64,
}

struct Replica {
    url: String,
    /// Remade when the replica comes back, so no connection broken by its going down is reused.
    pool: RwLock<PgPool>,
    /// The moment this replica is current as of (`None`: down, or not within the samples kept).
    current_as_of: Mutex<Option<Instant>>,
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    lsn: Option<i64>,
}

impl Replicas {
    /// Pools for the replicas at `urls`, watched while `primary` (the primary's pool) lives.
    pub(super) fn open(
        primary: &PgPool,
        urls: &[String],
        pool_size: u32,
        max_lag: Duration,
    ) -> Result<Arc<Replicas>, super::DbError> {
        let replicas = urls
            .iter()
            .map(|url| {
                let url = super::without_gss(url);
                let url = format!("{url}&connect_timeout=2");
                Replica { pool: RwLock::new(pool(&url, pool_size)), url, current_as_of: Mutex::new(None) }
            })
            .collect();
        let set = Arc::new(Replicas {
            replicas,
            max_lag,
            next: AtomicUsize::new(0),
            writers: Mutex::default(),
            served_by_replica: AtomicU64::new(0),
            served_by_primary: AtomicU64::new(0),
        });
        let (weak, primary) = (Arc::downgrade(&set), primary.clone());
        std::thread::Builder::new()
            .name("replica-watch".into())
            .spawn(move || watch(weak, primary))
            .map_err(|e| super::DbError::Pool(format!("replica watcher: {e}")))?;
        Ok(set)
    }

    /// A connection to a replica current enough for `caller`, or `None` (then the primary serves).
    pub(super) fn conn(&self, caller: &str) -> Option<diesel::r2d2::PooledConnection<ConnectionManager<PgConnection>>> {
        let now = Instant::now();
        let wrote = self.writers.lock().unwrap_or_else(|p| p.into_inner()).get(caller).copied();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.replicas.len() {
            let r = &self.replicas[(start + i) % self.replicas.len()];
            let Some(as_of) = *r.current_as_of.lock().unwrap_or_else(|p| p.into_inner()) else { continue };
            if now.saturating_duration_since(as_of) > self.max_lag || wrote.is_some_and(|w| as_of <= w) {
                continue;
            }
            let pool = r.pool.read().unwrap_or_else(|p| p.into_inner()).clone();
            match pool.get() {
                Ok(c) => {
                    self.served_by_replica.fetch_add(1, Ordering::Relaxed);
                    return Some(c);
                }
                Err(e) => tracing::warn!("read replica unavailable, reading from the primary: {e}"),
            }
        }
        self.served_by_primary.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Notes that `caller` has just committed a write.
    pub(super) fn wrote(&self, caller: &str) {
        let now = Instant::now();
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        // Past the bound every replica in use has the write (or is passed over anyway).
        writers.retain(|_, w| now.duration_since(*w) <= self.max_lag + SAMPLE);
        writers.insert(caller.to_string(), now);
    }
}

/// Built lazily (min_idle 0): a replica that is down at start is only passed over.
fn pool(url: &str, size: u32) -> PgPool {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(1))
        .test_on_check_out(false)
        .build_unchecked(ConnectionManager::<PgConnection>::new(url))
}

fn position(conn: &mut PgConnection, sql: &str) -> Option<i64> {
    diesel::sql_query(sql).get_result::<Position>(conn).ok().and_then(|p| p.lsn)
}

const PRIMARY_LSN: &str = "SELECT CAST(pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0') AS BIGINT) AS lsn";
const REPLAYED_LSN: &str = "SELECT CAST(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0') AS BIGINT) AS lsn";

/// Samples positions until the replica set is dropped.
fn watch(set: Weak<Replicas>, primary: PgPool) {
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut conns: Vec<Option<PgConnection>> = Vec::new();
    while let Some(set) = set.upgrade() {
        let keep = set.max_lag + SAMPLE * 2;
        let sampled = primary.get().ok().and_then(|mut c| position(&mut c, PRIMARY_LSN));
        if let Some(lsn) = sampled {
            samples.push_back((Instant::now(), lsn));
        }
        while samples.front().is_some_and(|(t, _)| t.elapsed() > keep) {
            samples.pop_front();
        }
        conns.resize_with(set.replicas.len(), || None);
        for (r, slot) in set.replicas.iter().zip(conns.iter_mut()) {
            let was_up = slot.is_some();
            let replayed = replayed(r, slot);
            if was_up && replayed.is_none() {
                let size = r.pool.read().unwrap_or_else(|p| p.into_inner()).max_size();
                *r.pool.write().unwrap_or_else(|p| p.into_inner()) = pool(&r.url, size);
            }
            // The newest sample this replica has replayed up to.
            let as_of = replayed.and_then(|at| samples.iter().rev().find(|(_, lsn)| *lsn <= at).map(|(t, _)| *t));
            *r.current_as_of.lock().unwrap_or_else(|p| p.into_inner()) = as_of;
        }
        drop(set);
        std::thread::sleep(SAMPLE);
    }
}

/// The replica's replayed position, on a connection of the watcher's own (so a full pool does
/// not make a healthy replica look down); a failed connection is dropped and made again.
fn replayed(r: &Replica, slot: &mut Option<PgConnection>) -> Option<i64> {
    if slot.is_none() {
        *slot = PgConnection::establish(&r.url).ok();
        if let Some(c) = slot.as_mut() {
            let _ = c.batch_execute("SET statement_timeout = 1000");
        }
    }
    let at = slot.as_mut().and_then(|c| position(c, REPLAYED_LSN));
    if at.is_none() {
        *slot = None;
    }
    at
}
