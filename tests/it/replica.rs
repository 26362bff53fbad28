//! Read replicas, for real: each test starts its own PostgreSQL primary (initdb in a temp dir, a
//! free port, replication allowed from 127.0.0.1) and a streaming replica of it (pg_basebackup
//! -R), both stopped and removed when the test ends, also when it fails. The system cluster is
//! left as it is: it allows no replication connections, and a test must not change that.
//!
//! Where a read was served is proved twice: by the app's counters on `/metrics`, and by what the
//! read returns while replay on the replica is paused (a replica's answer misses the newest write).

use crate::fixtures::*;
use crate::oauth_support::patient_with_login;
use crate::support::{postgres_enabled, temp_dir, TestApp};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The lag bound the tests run with: short, so the fall back to the primary comes soon.
const MAX_LAG_MS: u64 = 1500;

/// A primary and its streaming replica, each a postmaster of its own.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    primary: u16,
    replica: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// The PostgreSQL server programs: `HEALTHFOLIO_PG_BIN`, else the newest under /usr/lib/postgresql.
fn pg_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("HEALTHFOLIO_PG_BIN") {
        return PathBuf::from(bin);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()?.parse::<u32>().ok()));
    found.pop().expect("PostgreSQL server programs (initdb): set HEALTHFOLIO_PG_BIN to their directory")
}

/// PostgreSQL refuses to run as root: as root the programs run as the `postgres` user.
fn as_server_user(program: &Path) -> Command {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Cluster {
    fn start() -> Cluster {
        let dir = temp_dir();
        let cluster = Cluster { bin: pg_bin(), dir, primary: free_port(), replica: free_port() };
        let chown = Command::new("chown").args(["-R", "postgres"]).arg(&cluster.dir).status();
        assert!(chown.map(|s| s.success()).unwrap_or(true) || !cluster.dir.exists());
        let primary = cluster.dir.join("primary");
        cluster.run("initdb", |c| {
            c.args(["--no-sync", "-A", "trust", "-U", "postgres", "-D"]).arg(&primary);
        });
        let conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\n\
             max_wal_senders = 4\nfsync = off\nshared_buffers = 16MB\nmax_connections = 40\n",
            cluster.primary,
            cluster.dir.display()
        );
        append(&primary.join("postgresql.conf"), &conf);
        append(&primary.join("pg_hba.conf"), "host replication all 127.0.0.1/32 trust\n");
        cluster.pg_ctl("primary", "start");
        let replica = cluster.dir.join("replica");
        let port = cluster.primary.to_string();
        cluster.run("pg_basebackup", |c| {
            c.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
                .arg(&replica);
        });
        append(&replica.join("postgresql.conf"), &format!("port = {}\nhot_standby = on\n", cluster.replica));
        cluster.pg_ctl("replica", "start");
        cluster
    }

    fn run(&self, program: &str, args: impl FnOnce(&mut Command)) {
        let mut c = as_server_user(&self.bin.join(program));
        args(&mut c);
        let out = c.output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, which: &str, action: &str) {
        let (data, log) = (self.dir.join(which), self.dir.join(format!("{which}.log")));
        self.run("pg_ctl", |c| {
            c.args([action, "-w", "-m", "fast", "-D"]).arg(&data).arg("-l").arg(&log);
        });
    }

    fn url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    fn on_replica(&self, sql: &str) {
        let url = format!("{}?gssencmode=disable", Cluster::url(self.replica));
        let mut c = diesel::PgConnection::establish(&url).expect("replica reachable");
        c.batch_execute(sql).expect(sql);
    }

    /// An app writing to the primary and reading from the replica.
    fn app(&self) -> TestApp {
        let read = Cluster::url(self.replica);
        TestApp::on(Cluster::url(self.primary), move |o| {
            o.read_database_url = Some(read);
            o.read_max_lag_ms = Some(MAX_LAG_MS);
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for which in ["replica", "primary"] {
            let mut c = as_server_user(&self.bin.join("pg_ctl"));
            let _ = c.args(["stop", "-w", "-m", "immediate", "-D"]).arg(self.dir.join(which)).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).expect("config file");
    f.write_all(text.as_bytes()).expect("append");
}

/// Reads served so far (by the replica, by the primary instead), from the app's `/metrics`.
fn served(app: &TestApp) -> (u64, u64) {
    let body = ureq::get(&format!("{}/metrics", app.base)).call().expect("metrics").into_string().expect("text");
    let count = |pool: &str| {
        let line = format!("healthfolio_db_reads_total{{pool=\"{pool}\"}} ");
        body.lines().find_map(|l| l.strip_prefix(&line)).and_then(|v| v.parse().ok()).expect("reads counter")
    };
    (count("replica"), count("primary"))
}

/// Runs `read` until the replica serves it (it has caught up and the watcher has seen so).
fn until_replica_serves(app: &TestApp, mut read: impl FnMut()) {
    let start = Instant::now();
    loop {
        let before = served(app).0;
        read();
        if served(app).0 > before {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the replica never served a read");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn started() -> Option<(Cluster, TestApp)> {
    if !postgres_enabled() {
        eprintln!("replica tests skipped: HEALTHFOLIO_TEST_POSTGRES=off");
        return None;
    }
    let cluster = Cluster::start();
    let app = cluster.app();
    Some((cluster, app))
}

/// Reads, searches, `$everything` and a portal page are served by the replica; a write is seen
/// by its writer at once, by others within the lag bound; revocation applies at once.
#[test]
fn reads_go_to_the_replica() {
    let Some((cluster, app)) = started() else { return };
    let p = patient_with_login(&app, NHS[0], "ada@example.org");
    let (code, display) = SIMVASTATIN;
    app.create(medication_request(&p, code, display, "active", "2025-01-10"));
    let patient = app.client_with(Some(app.patient_token("patient/*.rs", &p)));
    let search = format!("MedicationRequest?patient={p}");
    until_replica_serves(&app, || assert_eq!(patient.get(&search).status, 200));

    for path in [format!("Patient/{p}"), search.clone(), format!("Patient/{p}/$everything")] {
        let before = served(&app);
        let r = patient.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(served(&app).0, before.0 + 1, "{path} not served by the replica");
    }
    let (mut browser, home) = crate::portal::sign_in(&app, "ada@example.org");
    assert_eq!(home.status, 200);
    let before = served(&app).0;
    let page = browser.get(&format!("{}/portal/medicines", app.base));
    assert!(page.body.contains("Simvastatin"), "{}", page.body);
    assert!(served(&app).0 > before, "the portal page was not served by the replica");

    // Replay paused: a new write reaches the primary only.
    cluster.on_replica("SELECT pg_wal_replay_pause()");
    let (code, display) = PARACETAMOL;
    let written = Instant::now();
    app.create(medication_request(&p, code, display, "active", "2025-02-10"));
    // The writer (the operator) reads its own write at once; the patient, reading from the
    // replica within the bound, does not see it yet.
    assert_eq!(app.client().get(&search).entries().len(), 2, "the writer must see its write");
    let stale = patient.get(&search).entries().len();
    if written.elapsed() < Duration::from_millis(MAX_LAG_MS) {
        assert_eq!(stale, 1, "the patient's search was not served by the (paused) replica");
    }
    // Past the bound the replica is passed over: the primary answers, with the write.
    std::thread::sleep(Duration::from_millis(MAX_LAG_MS + 300).saturating_sub(written.elapsed()));
    let before = served(&app);
    assert_eq!(patient.get(&search).entries().len(), 2, "a lagging replica must be passed over");
    assert_eq!(served(&app), (before.0, before.1 + 1));

    // Revoked while the replica still holds the grant: refused on the very next request.
    let grant = {
        let mut conn = app.hf.db.conn().expect("conn");
        healthfolio::consent::list(&mut conn, Some(&p)).expect("grants")
    };
    let mut conn = app.hf.db.conn().expect("conn");
    for g in grant {
        healthfolio::consent::revoke(&mut conn, &g.id).expect("revoke");
    }
    let r = patient.get(&search);
    assert!(matches!(r.status, 401 | 403), "revocation must apply at once: {} {}", r.status, r.body);
    cluster.on_replica("SELECT pg_wal_replay_resume()");
    app.hf.store.audit.flush();
}

/// A replica that stops leaves reads to the primary; when it is back it serves again.
#[test]
fn replica_down_falls_back_to_the_primary() {
    let Some((cluster, app)) = started() else { return };
    let p = app.create(patient(NHS[1], "Okafor", "Ada"));
    let (code, display) = SIMVASTATIN;
    app.create(medication_request(&p, code, display, "active", "2025-01-10"));
    let patient = app.client_with(Some(app.patient_token("patient/*.rs", &p)));
    let search = format!("MedicationRequest?patient={p}");
    until_replica_serves(&app, || assert_eq!(patient.get(&search).entries().len(), 1));

    cluster.pg_ctl("replica", "stop");
    // The watcher notices within a sample (100 ms); give it a few.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let before = served(&app);
        let r = patient.get(&search);
        assert_eq!((r.status, r.entries().len()), (200, 1), "{}", r.body);
        assert_eq!(served(&app), (before.0, before.1 + 1), "a stopped replica cannot serve");
    }
    cluster.pg_ctl("replica", "start");
    until_replica_serves(&app, || assert_eq!(patient.get(&search).entries().len(), 1));
    app.hf.store.audit.flush();
}
