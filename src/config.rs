//! Configuration: defaults < `healthfolio.toml` < `HEALTHFOLIO_*` environment < command line,
//! resolved once at start into one typed [`Config`].

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// PostgreSQL streaming replicas that serve reads which may be a moment behind (empty: none).
    pub read_database_urls: Vec<String>,
    /// How far behind the primary a replica may be and still serve reads.
    pub read_max_lag_ms: u64,
    /// The public URL of the service, without a trailing slash; the FHIR base is `{base_url}/fhir`.
    pub base_url: String,
    pub body_limit: usize,
    /// Seconds a request body may go without a byte arriving before it is refused (400): a body
    /// cut short would otherwise hold its request open for good.
    pub body_timeout_secs: u64,
    pub pool_size: u32,
    pub secret_key: Option<String>,
    /// Access token lifetime in seconds.
    pub token_lifetime: i64,
    /// Whether apps may register themselves (RFC 7591) at `/oauth/register`.
    pub open_registration: bool,
    /// Whether people may create their own record and login at `/portal/signup`.
    pub open_signup: bool,
    /// Where bulk export files go: storage every replica can read (a shared volume), because the
    /// replica that writes a file is not always the one asked for it.
    pub bulk_dir: PathBuf,
    pub bulk: BulkSettings,
    /// How often `always` sources are pulled from.
    pub sync_interval_secs: u64,
    /// Serve HTTPS directly from these PEM files (a single box without a proxy).
    pub tls: Option<TlsFiles>,
    /// Behind a reverse proxy that appends the client's address to `X-Forwarded-For`: rate
    /// limits then count that address, not the proxy's (which every user shares).
    pub behind_proxy: bool,
}

/// How export workers share the work and the database.
#[derive(Debug, Clone, Copy)]
pub struct BulkSettings {
    /// How long a worker holds a job without renewing; a job whose worker died is taken over after this.
    pub lease_secs: u64,
    /// Pause between export pages, so a large export leaves the database to interactive traffic.
    pub pause_ms: u64,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Values given on the command line or in the environment (clap merges those two).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address to listen on [env: HEALTHFOLIO_ADDR] [default: 127.0.0.1:8080]
    #[arg(long, env = "HEALTHFOLIO_ADDR", hide_env = true)]
    pub addr: Option<String>,
    /// Directory for the SQLite database and the generated secret [env: HEALTHFOLIO_DATA_DIR] [default: ./healthfolio-data]
    #[arg(long, env = "HEALTHFOLIO_DATA_DIR", hide_env = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL: postgres://… selects PostgreSQL; default is a SQLite file in the data dir [env: HEALTHFOLIO_DATABASE_URL]
    #[arg(long, env = "HEALTHFOLIO_DATABASE_URL", hide_env = true)]
    pub database_url: Option<String>,
    /// Read replicas of a PostgreSQL primary, comma-separated postgres:// URLs [env: HEALTHFOLIO_READ_DATABASE_URL]
    #[arg(long, env = "HEALTHFOLIO_READ_DATABASE_URL", hide_env = true)]
    pub read_database_url: Option<String>,
    /// Milliseconds a read replica may lag before reads go to the primary [env: HEALTHFOLIO_READ_MAX_LAG_MS] [default: 2000]
    #[arg(long, env = "HEALTHFOLIO_READ_MAX_LAG_MS", hide_env = true)]
    pub read_max_lag_ms: Option<u64>,
    /// Public URL of the service [env: HEALTHFOLIO_BASE_URL] [default: http://<addr>]
    #[arg(long, env = "HEALTHFOLIO_BASE_URL", hide_env = true)]
    pub base_url: Option<String>,
    /// Largest request body in bytes [env: HEALTHFOLIO_BODY_LIMIT] [default: 10485760]
    #[arg(long, env = "HEALTHFOLIO_BODY_LIMIT", hide_env = true)]
    pub body_limit: Option<usize>,
    /// Seconds a request body may pause before it is refused [env: HEALTHFOLIO_BODY_TIMEOUT] [default: 10]
    #[arg(long, env = "HEALTHFOLIO_BODY_TIMEOUT", hide_env = true)]
    pub body_timeout: Option<u64>,
    /// Database connections per process [env: HEALTHFOLIO_POOL_SIZE] [default: 16]
    #[arg(long, env = "HEALTHFOLIO_POOL_SIZE", hide_env = true)]
    pub pool_size: Option<u32>,
    /// Access token lifetime in seconds [env: HEALTHFOLIO_TOKEN_LIFETIME] [default: 900]
    #[arg(long, env = "HEALTHFOLIO_TOKEN_LIFETIME", hide_env = true)]
    pub token_lifetime: Option<i64>,
    /// Let apps register themselves at /oauth/register (RFC 7591) [env: HEALTHFOLIO_OPEN_REGISTRATION]
    #[arg(long, env = "HEALTHFOLIO_OPEN_REGISTRATION", hide_env = true)]
    pub open_registration: bool,
    /// Let people create their own record and login at /portal/signup [env: HEALTHFOLIO_OPEN_SIGNUP]
    #[arg(long, env = "HEALTHFOLIO_OPEN_SIGNUP", hide_env = true)]
    pub open_signup: bool,
    /// Allow a plain-http base URL on a non-local address (behind a TLS-terminating proxy).
    #[arg(long, env = "HEALTHFOLIO_INSECURE_HTTP", hide_env = true)]
    pub insecure_http: bool,
    /// Directory for bulk export files, shared by every replica [env: HEALTHFOLIO_BULK_DIR] [default: <data-dir>/bulk]
    #[arg(long, env = "HEALTHFOLIO_BULK_DIR", hide_env = true)]
    pub bulk_dir: Option<PathBuf>,
    /// Seconds an export worker holds a job between renewals [env: HEALTHFOLIO_JOB_LEASE] [default: 30]
    #[arg(long, env = "HEALTHFOLIO_JOB_LEASE", hide_env = true)]
    pub job_lease: Option<u64>,
    /// Milliseconds an export pauses between pages [env: HEALTHFOLIO_EXPORT_PAUSE_MS] [default: 0]
    #[arg(long, env = "HEALTHFOLIO_EXPORT_PAUSE_MS", hide_env = true)]
    pub export_pause_ms: Option<u64>,
    /// Seconds between background pulls from `always` sources [env: HEALTHFOLIO_SYNC_INTERVAL] [default: 60]
    #[arg(long, env = "HEALTHFOLIO_SYNC_INTERVAL", hide_env = true)]
    pub sync_interval: Option<u64>,
    /// PEM certificate chain: serve HTTPS directly, without a proxy [env: HEALTHFOLIO_TLS_CERT]
    #[arg(long, env = "HEALTHFOLIO_TLS_CERT", hide_env = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert [env: HEALTHFOLIO_TLS_KEY]
    #[arg(long, env = "HEALTHFOLIO_TLS_KEY", hide_env = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Behind a reverse proxy that appends the client address to X-Forwarded-For (rate limits count that) [env: HEALTHFOLIO_BEHIND_PROXY]
    #[arg(long, env = "HEALTHFOLIO_BEHIND_PROXY", hide_env = true)]
    pub behind_proxy: bool,
    /// Configuration file [env: HEALTHFOLIO_CONFIG] [default: ./healthfolio.toml if present]
    #[arg(long, env = "HEALTHFOLIO_CONFIG", hide_env = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    read_database_url: Option<String>,
    read_max_lag_ms: Option<u64>,
    base_url: Option<String>,
    body_limit: Option<usize>,
    body_timeout: Option<u64>,
    pool_size: Option<u32>,
    token_lifetime: Option<i64>,
    open_registration: Option<bool>,
    open_signup: Option<bool>,
    behind_proxy: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    bulk_dir: Option<PathBuf>,
    job_lease: Option<u64>,
    export_pause_ms: Option<u64>,
    sync_interval: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn resolve(o: &Overrides) -> Result<Config, ConfigError> {
        let file = read_file(o.config.as_deref())?;
        let addr = o.addr.clone().or(file.addr).unwrap_or_else(|| "127.0.0.1:8080".into());
        let data_dir = o.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("./healthfolio-data"));
        let database_url = o
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| data_dir.join("healthfolio.db").to_string_lossy().into_owned());
        let read_database_urls: Vec<String> = o
            .read_database_url
            .clone()
            .or(file.read_database_url)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect();
        if let Some(u) = read_database_urls.iter().find(|u| !u.starts_with("postgres")) {
            return Err(ConfigError::Invalid(format!("read replica '{u}' is not a postgres:// URL")));
        }
        let tls = match (o.tls_cert.clone().or(file.tls_cert), o.tls_key.clone().or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "TLS needs both a certificate and a key (--tls-cert and --tls-key)".into(),
                ))
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = o
            .base_url
            .clone()
            .or(file.base_url)
            .unwrap_or_else(|| format!("{scheme}://{addr}"))
            .trim_end_matches('/')
            .to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!("base URL '{base_url}' must start with http:// or https://")));
        }
        Ok(Config {
            addr,
            database_url,
            read_database_urls,
            read_max_lag_ms: o.read_max_lag_ms.or(file.read_max_lag_ms).unwrap_or(2000),
            base_url,
            body_limit: o.body_limit.or(file.body_limit).unwrap_or(10 * 1024 * 1024),
            body_timeout_secs: o.body_timeout.or(file.body_timeout).unwrap_or(10).max(1),
            pool_size: o.pool_size.or(file.pool_size).unwrap_or(16).max(1),
            token_lifetime: o.token_lifetime.or(file.token_lifetime).unwrap_or(900).clamp(60, 3600),
            open_registration: o.open_registration || file.open_registration.unwrap_or(false),
            open_signup: o.open_signup || file.open_signup.unwrap_or(false),
            secret_key: std::env::var("HEALTHFOLIO_SECRET_KEY").ok().filter(|s| !s.is_empty()),
            bulk_dir: o.bulk_dir.clone().or(file.bulk_dir).unwrap_or_else(|| data_dir.join("bulk")),
            bulk: BulkSettings {
                lease_secs: o.job_lease.or(file.job_lease).unwrap_or(30).max(1),
                pause_ms: o.export_pause_ms.or(file.export_pause_ms).unwrap_or(0),
            },
            sync_interval_secs: o.sync_interval.or(file.sync_interval).unwrap_or(60).max(1),
            behind_proxy: o.behind_proxy || file.behind_proxy.unwrap_or(false),
            data_dir,
            tls,
        })
    }

    /// `config show`: every effective setting, with secrets and database passwords hidden.
    pub fn redacted(&self) -> String {
        let url = hide_password(&self.database_url);
        let read_urls = self.read_database_urls.iter().map(|u| hide_password(u)).collect::<Vec<_>>().join(",");
        let secret = if self.secret_key.is_some() {
            "set (HEALTHFOLIO_SECRET_KEY, hidden)"
        } else {
            "not set: generated into the data dir"
        };
        let tls = match &self.tls {
            Some(t) => format!("cert {}, key {}", t.cert.display(), t.key.display()),
            None => "off".into(),
        };
        format!(
            "addr = {}\ndata_dir = {}\ndatabase_url = {url}\nread_database_url = {read_urls}\nread_max_lag_ms = {}\nbase_url = {}\nfhir_base = {}\nbody_limit = {}\nbody_timeout = {}\npool_size = {}\ntoken_lifetime = {}\nsecret_key = {secret}\ntls = {tls}\nbulk_dir = {}\njob_lease = {}\nexport_pause_ms = {}\nsync_interval = {}\nopen_signup = {}\nbehind_proxy = {}",
            self.addr, self.data_dir.display(), self.read_max_lag_ms, self.base_url, self.fhir_base(), self.body_limit, self.body_timeout_secs, self.pool_size, self.token_lifetime,
            self.bulk_dir.display(), self.bulk.lease_secs, self.bulk.pause_ms, self.sync_interval_secs, self.open_signup,
            self.behind_proxy
        )
    }
}

/// A database URL with its password, if any, replaced by `***`.
fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let user_end = url[s + 3..at].find(':').map_or(at, |i| s + 3 + i);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl Config {
    /// Refuses a configuration that would be unsafe in production: plain http on a non-local
    /// address (unless explicitly allowed), or https without a configured secret key.
    pub fn check_production(&self, insecure_http: bool) -> Result<(), ConfigError> {
        let local =
            ["http://127.0.0.1", "http://localhost", "http://[::1]"].iter().any(|p| self.base_url.starts_with(p));
        if self.base_url.starts_with("http://") && !local && !insecure_http {
            return Err(ConfigError::Invalid(format!(
                "base URL {} is plain http on a non-local address: serve https (or put a TLS proxy in front and pass --insecure-http)",
                self.base_url
            )));
        }
        if self.base_url.starts_with("https://") && self.secret_key.is_none() {
            return Err(ConfigError::Invalid("HEALTHFOLIO_SECRET_KEY must be set in production (base64 of 32 random bytes, the same on every replica)".into()));
        }
        Ok(())
    }

    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.base_url)
    }

    pub fn is_sqlite(&self) -> bool {
        !self.database_url.starts_with("postgres")
    }
}

fn read_file(explicit: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new("healthfolio.toml").exists() => PathBuf::from("healthfolio.toml"),
        None => return Ok(FileConfig::default()),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.to_string() })?;
    toml::from_str(&text).map_err(|e| ConfigError::File { path: path.display().to_string(), reason: e.to_string() })
}
