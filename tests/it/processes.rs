//! The real binary as operators run it: separate server processes, killed with SIGKILL, and HTTPS
//! served straight from PEM files.

use crate::fixtures::{medication_request, patient, NHS, PARACETAMOL};
use crate::support::{temp_dir, PgDatabase};
use diesel::{Connection, QueryableByName, RunQueryDsl};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Base64 of 32 bytes, the same for every process, as replicas share it in production.
const SECRET: &str = "aGVhbHRoZm9saW8tcHJvY2Vzcy10ZXN0cy1rZXktMzI=";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The public URL every replica presents, as behind one proxy.
const PUBLIC: &str = "http://127.0.0.1:8443";

/// A `healthfolio serve` process, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(database_url: &str, data_dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let tls = extra.contains(&"--tls-cert");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_healthfolio"));
        cmd.arg("serve")
            .args(["--addr", &format!("127.0.0.1:{port}"), "--database-url", database_url])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("HEALTHFOLIO_SECRET_KEY", SECRET)
            .env("HEALTHFOLIO_LOG", "warn")
            .stdout(Stdio::null());
        let child = cmd.spawn().expect("spawn healthfolio");
        let scheme = if tls { "https" } else { "http" };
        Server { child, base: format!("{scheme}://127.0.0.1:{port}") }
    }

    fn wait_ready(&mut self, agent: &ureq::Agent) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited before it was ready: {status}", self.base);
            }
            if agent.get(&format!("{}/readyz", self.base)).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} never became ready", self.base);
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown hook runs, as when a node dies.
    fn kill(&mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn operator_token(database_url: &str, data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_healthfolio"))
        .args(["token", "--scope", "system/*.cruds", "--database-url", database_url, "--base-url", PUBLIC])
        .arg("--data-dir")
        .arg(data_dir)
        .env("HEALTHFOLIO_SECRET_KEY", SECRET)
        .output()
        .expect("healthfolio token");
    assert!(out.status.success(), "token: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim().to_string()
}

fn call(agent: &ureq::Agent, method: &str, url: &str, token: &str, body: Option<&Value>) -> (u16, String) {
    let req = agent.request(method, url).set("Authorization", &format!("Bearer {token}"));
    let r = match body {
        Some(b) => req.set("Content-Type", "application/fhir+json").send_string(&b.to_string()),
        None => req.set("Prefer", "respond-async").call(),
    };
    match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let location = r.header("content-location").map(str::to_string);
            let text = r.into_string().unwrap_or_default();
            (status, location.unwrap_or(text))
        }
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

#[derive(QueryableByName)]
struct JobRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    leased_by: Option<String>,
}

fn job_row(url: &str, id: &str) -> JobRow {
    let mut c = diesel::PgConnection::establish(&format!("{url}?gssencmode=disable")).expect("connect");
    diesel::sql_query("SELECT status, leased_by FROM jobs WHERE id = $1")
        .bind::<diesel::sql_types::Text, _>(id)
        .get_result(&mut c)
        .expect("job row")
}

/// Two server processes on one PostgreSQL: one leases a bulk export and is killed with SIGKILL in
/// the middle of it; the other takes the job over when the lease lapses and finishes it, and its
/// files are served by the survivor from the shared export directory.
#[test]
fn killed_replica_export_finished_by_the_other() {
    let Some(db) = PgDatabase::create() else { return };
    let root = temp_dir();
    let (dir_a, dir_b, bulk) = (root.join("a"), root.join("b"), root.join("bulk"));
    let bulk_arg = bulk.to_string_lossy().into_owned();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    // A holds short leases and exports slowly, so the kill lands mid-export.
    let mut a = Server::start(
        &db.url,
        &dir_a,
        &["--base-url", PUBLIC, "--bulk-dir", &bulk_arg, "--job-lease", "2", "--export-pause-ms", "400"],
    );
    a.wait_ready(&agent);
    let token = operator_token(&db.url, &dir_a);
    let fhir_a = format!("{}/fhir", a.base);
    let (s, p) = call(&agent, "POST", &format!("{fhir_a}/Patient"), &token, Some(&patient(NHS[0], "Okafor", "Ada")));
    assert_eq!(s, 201, "{p}");
    let pid: Value = serde_json::from_str(&p).expect("json");
    let pid = pid["id"].as_str().expect("id").to_string();
    for day in 1..=5 {
        let (code, display) = PARACETAMOL;
        let mr = medication_request(&pid, code, display, "active", &format!("2025-01-0{day}"));
        assert_eq!(call(&agent, "POST", &format!("{fhir_a}/MedicationRequest"), &token, Some(&mr)).0, 201);
    }

    let (s, status_url) =
        call(&agent, "GET", &format!("{fhir_a}/$export?_type=Patient,MedicationRequest"), &token, None);
    assert_eq!(s, 202, "{status_url}");
    let job = status_url.rsplit('/').next().expect("job id").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = job_row(&db.url, &job);
        if row.status == "running" && row.leased_by.as_deref().is_some_and(|w| w.starts_with(&format!("{}-", a.pid())))
        {
            break;
        }
        assert!(Instant::now() < deadline, "A never leased the job: {}", row.status);
        std::thread::sleep(Duration::from_millis(10));
    }
    a.kill();
    let row = job_row(&db.url, &job);
    assert_eq!(row.status, "running", "the job must still be unfinished when A dies");

    let mut b = Server::start(&db.url, &dir_b, &["--base-url", PUBLIC, "--bulk-dir", &bulk_arg]);
    b.wait_ready(&agent);
    let status_b = status_url.replace(PUBLIC, &b.base);
    let deadline = Instant::now() + Duration::from_secs(30);
    let manifest = loop {
        let (s, body) = call(&agent, "GET", &status_b, &token, None);
        if s == 200 {
            break serde_json::from_str::<Value>(&body).expect("manifest");
        }
        assert_eq!(s, 202, "{body}");
        assert!(Instant::now() < deadline, "B never finished the job");
        std::thread::sleep(Duration::from_millis(100));
    };
    let row = job_row(&db.url, &job);
    assert_eq!(row.status, "completed");
    assert!(row.leased_by.as_deref().is_some_and(|w| w.starts_with(&format!("{}-", b.pid()))), "{:?}", row.leased_by);
    let counts: Vec<(String, i64)> = manifest["output"]
        .as_array()
        .expect("output")
        .iter()
        .map(|o| (o["type"].as_str().unwrap_or_default().to_string(), o["count"].as_i64().unwrap_or_default()))
        .collect();
    assert_eq!(counts, vec![("Patient".to_string(), 1), ("MedicationRequest".to_string(), 5)]);
    let url = manifest["output"][1]["url"].as_str().expect("url").replace(PUBLIC, &b.base);
    let (s, ndjson) = call(&agent, "GET", &url, &token, None);
    assert_eq!(s, 200);
    assert_eq!(ndjson.lines().count(), 5);
    let _ = std::fs::remove_dir_all(&root);
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write");
    path.to_path_buf()
}

/// `--tls-cert/--tls-key`: the process serves HTTPS with HSTS, and nothing in plain http.
#[test]
fn serves_https_from_pem_files() {
    let dir = temp_dir();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).expect("cert");
    let cert_file = write(&dir.join("cert.pem"), &cert.cert.pem());
    let key_file = write(&dir.join("key.pem"), &cert.key_pair.serialize_pem());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let agent = ureq::AgentBuilder::new().tls_config(std::sync::Arc::new(tls)).timeout(Duration::from_secs(10)).build();
    let db = dir.join("hf.db").to_string_lossy().into_owned();
    let args = ["--tls-cert", cert_file.to_str().expect("path"), "--tls-key", key_file.to_str().expect("path")];
    let mut server = Server::start(&db, &dir.join("data"), &args);
    server.wait_ready(&agent);

    let r = agent.get(&format!("{}/fhir/metadata", server.base)).call().expect("https");
    assert_eq!(r.status(), 200);
    assert!(r.header("strict-transport-security").is_some_and(|h| h.contains("max-age=")));
    let smart: Value = agent
        .get(&format!("{}/.well-known/smart-configuration", server.base))
        .call()
        .expect("smart")
        .into_json()
        .expect("json");
    assert!(smart["token_endpoint"].as_str().is_some_and(|u| u.starts_with("https://")), "{smart}");
    let plain = server.base.replace("https://", "http://");
    assert!(ureq::get(&format!("{plain}/healthz")).timeout(Duration::from_secs(5)).call().is_err());

    // A key that does not parse stops the process with a message naming the file.
    let bad_key = write(&dir.join("bad.pem"), "not a key");
    let out = Command::new(env!("CARGO_BIN_EXE_healthfolio"))
        .args(["serve", "--addr", &format!("127.0.0.1:{}", free_port()), "--database-url", &db])
        .args(["--tls-cert", cert_file.to_str().expect("path"), "--tls-key", bad_key.to_str().expect("path")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("HEALTHFOLIO_SECRET_KEY", SECRET)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.pem"), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
