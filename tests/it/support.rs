//! The test application: the real server on a random port, on a fresh SQLite file or a fresh
//! PostgreSQL database, and a small client that speaks real HTTP.

use healthfolio::config::{Config, Overrides};
use healthfolio::Healthfolio;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::mpsc;

pub struct TestApp {
    pub base: String,
    pub fhir: String,
    pub hf: Healthfolio,
    handle: actix_web::dev::ServerHandle,
    dir: PathBuf,
    database_url: String,
    pg_database: Option<(String, String)>,
}

/// Runs the same test body on SQLite and on PostgreSQL; `both!(name, config = f)` starts both
/// apps with `f` applied to their configuration (see [`with_config`]).
#[macro_export]
macro_rules! both {
    ($name:ident, config = $configure:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                let app = $crate::support::with_config(super::$configure, $crate::support::TestApp::sqlite);
                super::$name(&app);
            }
            #[test]
            fn postgres() {
                if let Some(app) = $crate::support::with_config(super::$configure, $crate::support::TestApp::postgres) {
                    super::$name(&app);
                }
            }
        }
    };
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    let app = $crate::support::TestApp::sqlite();
                    super::$name(&app);
                }
                #[test]
                fn postgres() {
                    if let Some(app) = $crate::support::TestApp::postgres() {
                        super::$name(&app);
                    }
                }
            }
        )*
    };
}

thread_local! {
    /// Settings the next app started on this thread gets on top of the test defaults.
    static CONFIGURE: std::cell::RefCell<Option<fn(&mut Overrides)>> = const { std::cell::RefCell::new(None) };
}

type Configure = Box<dyn FnOnce(&mut Overrides)>;

thread_local! {
    /// Settings, captured at run time, the next app started on this thread gets (see [`TestApp::on`]).
    static EXTRA: std::cell::RefCell<Option<Configure>> = std::cell::RefCell::new(None);
}

thread_local! {
    /// Changes to the resolved configuration of the next app started on this thread.
    static CONFIG: std::cell::RefCell<Option<fn(&mut Config)>> = const { std::cell::RefCell::new(None) };
}

/// Runs `start` with `configure` applied to the configuration of the app it starts: for values
/// no operator may set but a test needs, such as a token lifetime under the minimum, so that a
/// client library's refresh after expiry takes seconds.
pub fn with_config<T>(configure: fn(&mut Config), start: impl FnOnce() -> T) -> T {
    CONFIG.with(|c| *c.borrow_mut() = Some(configure));
    let started = start();
    CONFIG.with(|c| *c.borrow_mut() = None);
    started
}

fn admin_url() -> String {
    std::env::var("HEALTHFOLIO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn postgres_enabled() -> bool {
    std::env::var("HEALTHFOLIO_TEST_POSTGRES").as_deref() != Ok("off")
}

fn pg_admin(sql: &str) {
    use diesel::{Connection, RunQueryDsl};
    // No GSSAPI: Kerberos' exit-time teardown must not meet a connection (see db::Db::open).
    let url = admin_url();
    let url = if url.contains('?') { url } else { format!("{url}?gssencmode=disable") };
    let mut c = diesel::PgConnection::establish(&url)
        .expect("PostgreSQL reachable (set HEALTHFOLIO_TEST_POSTGRES=off to skip)");
    diesel::sql_query(sql).execute(&mut c).expect(sql);
}

impl TestApp {
    pub fn sqlite() -> TestApp {
        let dir = temp_dir();
        let url = dir.join("test.db").to_string_lossy().into_owned();
        TestApp::start(dir, url, None)
    }

    pub fn postgres() -> Option<TestApp> {
        let db = PgDatabase::create()?;
        let (url, admin, name) = (db.url.clone(), admin_url(), db.name.clone());
        // The app drops the database itself, after stopping its pool.
        std::mem::forget(db);
        Some(TestApp::start(temp_dir(), url, Some((admin, name))))
    }

    /// A second server on the same database, with the same secret and public URL: another replica.
    pub fn replica(&self) -> TestApp {
        self.replica_of_service(self)
    }

    /// A server on this app's database that presents itself as `service` (its secret and public
    /// URL), as an operator would start it after restoring `service`'s backup here.
    pub fn replica_of_service(&self, service: &TestApp) -> TestApp {
        let dir = temp_dir();
        std::fs::copy(service.dir.join("secret.key"), dir.join("secret.key")).expect("copy secret");
        TestApp::start_as(dir, self.database_url.clone(), None, Some(service.base.clone()))
    }

    fn start(dir: PathBuf, database_url: String, pg_database: Option<(String, String)>) -> TestApp {
        TestApp::start_as(dir, database_url, pg_database, None)
    }

    /// An app on a database the test runs itself (left there at the end), with `configure`
    /// applied to its settings.
    pub fn on(database_url: String, configure: impl FnOnce(&mut Overrides) + 'static) -> TestApp {
        EXTRA.with(|c| *c.borrow_mut() = Some(Box::new(configure)));
        TestApp::start(temp_dir(), database_url, None)
    }

    /// A SQLite instance with some settings changed, as an operator would start it.
    pub fn sqlite_configured(configure: fn(&mut Overrides)) -> TestApp {
        let dir = temp_dir();
        let url = dir.join("test.db").to_string_lossy().into_owned();
        CONFIGURE.with(|c| *c.borrow_mut() = Some(configure));
        let app = TestApp::start(dir, url, None);
        CONFIGURE.with(|c| *c.borrow_mut() = None);
        app
    }

    fn start_as(
        dir: PathBuf,
        database_url: String,
        pg_database: Option<(String, String)>,
        public: Option<String>,
    ) -> TestApp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let overrides = Overrides {
            addr: Some(addr.clone()),
            data_dir: Some(dir.clone()),
            database_url: Some(database_url.clone()),
            pool_size: Some(4),
            base_url: public.clone(),
            body_limit: Some(1024 * 1024),
            sync_interval: Some(1),
            ..Overrides::default()
        };
        let mut overrides = overrides;
        if let Some(configure) = CONFIGURE.with(|c| *c.borrow()) {
            configure(&mut overrides);
        }
        if let Some(configure) = EXTRA.with(|c| c.borrow_mut().take()) {
            configure(&mut overrides);
        }
        let mut config = Config::resolve(&overrides).expect("config");
        if let Some(configure) = CONFIG.with(|c| *c.borrow()) {
            configure(&mut config);
        }
        let hf = Healthfolio::open(config).expect("open");
        let (tx, rx) = mpsc::channel();
        let server_hf = hf.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = healthfolio::web::server(server_hf, listener).expect("server");
                let _ = tx.send(server.handle());
                let _ = server.await;
            })
        });
        let handle = rx.recv().expect("server handle");
        let base = format!("http://{addr}");
        let fhir = format!("{}/fhir", public.unwrap_or_else(|| base.clone()));
        TestApp { fhir, base, hf, handle, dir, database_url, pg_database }
    }

    /// A token with `scope`, signed by this instance (the library path the OAuth flows also use).
    pub fn token(&self, scope: &str) -> String {
        self.hf.issue_token("test-user", "test-client", scope, None, 600).expect("token")
    }

    /// A patient-app token for `patient`, after the patient granted `scope` to the test client.
    pub fn patient_token(&self, scope: &str, patient: &str) -> String {
        self.grant(patient, healthfolio::consent::Grantee::Client("test-client".into()), scope);
        self.hf.issue_token("test-user", "test-client", scope, Some(patient.to_string()), 600).expect("token")
    }

    /// Records the patient's grant to a client or organisation.
    pub fn grant(&self, patient: &str, grantee: healthfolio::consent::Grantee, scope: &str) -> String {
        let g = healthfolio::consent::NewGrant {
            patient_id: patient.to_string(),
            grantee,
            scope: scope.to_string(),
            expires_at: None,
            created_by: "test".into(),
        };
        let mut conn = self.hf.db.conn().expect("conn");
        healthfolio::consent::grant(&mut conn, &g).expect("grant").id
    }

    /// An operator token (every record) for setting up fixtures.
    pub fn admin(&self) -> String {
        self.hf.issue_operator_token("system/*.cruds", 600).expect("token")
    }

    pub fn client(&self) -> Client {
        Client { base: format!("{}/fhir", self.base), token: Some(self.admin()), headers: Vec::new() }
    }

    pub fn client_with(&self, token: Option<String>) -> Client {
        Client { base: format!("{}/fhir", self.base), token, headers: Vec::new() }
    }

    /// Creates a resource with the admin token and returns its id.
    pub fn create(&self, body: Value) -> String {
        let t = body["resourceType"].as_str().expect("resourceType").to_string();
        let r = self.client().post(&t, &body);
        assert_eq!(r.status, 201, "create {t}: {}", r.body);
        r.body["id"].as_str().expect("id").to_string()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::System::new().block_on(handle.stop(false));
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((_, name)) = &self.pg_database {
            self.hf.store.audit.flush();
            // The pool still holds connections; FORCE ends them.
            pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// A fresh, empty PostgreSQL database, dropped (with any connections still open) at the end.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub fn create() -> Option<PgDatabase> {
        if !postgres_enabled() {
            eprintln!("PostgreSQL tests skipped: HEALTHFOLIO_TEST_POSTGRES=off");
            return None;
        }
        let name = format!("hf_t_{}", uuid::Uuid::new_v4().simple());
        pg_admin(&format!("CREATE DATABASE {name}"));
        let url = match admin_url().rsplit_once('/') {
            Some((head, _)) => format!("{head}/{name}"),
            None => panic!("HEALTHFOLIO_TEST_DATABASE_URL has no database part"),
        };
        Some(PgDatabase { url, name })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        pg_admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

pub fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("hf-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub body: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The OperationOutcome diagnostics, for assertions on error text.
    pub fn diagnostics(&self) -> String {
        self.body["issue"][0]["diagnostics"].as_str().unwrap_or_default().to_string()
    }

    pub fn entries(&self) -> Vec<Value> {
        self.body["entry"].as_array().cloned().unwrap_or_default()
    }

    /// Ids of the `match` entries of a searchset.
    pub fn ids(&self) -> Vec<String> {
        self.entries()
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn link(&self, rel: &str) -> Option<String> {
        self.body["link"].as_array()?.iter().find(|l| l["relation"] == rel)?["url"].as_str().map(str::to_string)
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Client {
    pub fn with_header(mut self, k: &str, v: &str) -> Client {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, path)
        }
    }

    pub fn request(&self, method: &str, path: &str, content_type: Option<&str>, body: Option<&[u8]>) -> Response {
        let mut req = ureq::request(method, &self.url(path));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        if let Some(ct) = content_type {
            req = req.set("Content-Type", ct);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: transport error {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let text = resp.into_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response { status, headers, text, body }
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, Some("application/fhir+json"), Some(body.to_string().as_bytes()))
    }

    pub fn put(&self, path: &str, body: &Value) -> Response {
        self.request("PUT", path, Some("application/fhir+json"), Some(body.to_string().as_bytes()))
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, None, None)
    }

    pub fn patch(&self, path: &str, body: &Value) -> Response {
        self.request("PATCH", path, Some("application/json-patch+json"), Some(body.to_string().as_bytes()))
    }
}
