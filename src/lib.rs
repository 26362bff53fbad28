//! Healthfolio: a patient-owned medicines record. The layers, top to bottom; a module uses only
//! those below it (`tests/it/layers.rs` reads the sources and holds every module to this order):
//!
//! - `cli`, `web`: the edges (command line; HTTP: FHIR, OAuth and portal routes)
//! - `portal`: the patient's pages, as domain calls
//! - `portability`: `$everything`, `$summary`, archives, Bulk Data, transfer between providers
//! - `federation`: other providers' FHIR servers: search, copies, events, bulk extracts
//! - `auth`: the authorization server (accounts, clients, keys, tokens, the OAuth flows)
//! - `fhir`: the record store (resources, versions, search, bundles, their audit entries)
//! - `audit`: the access log
//! - `access`: who is asking and what they may touch ([`access::AccessContext`])
//! - `consent`: grants, the patient's decisions
//! - `scope`: SMART scopes
//! - `catalogue`, `config`, `db`, `time`: data, settings, storage and time

pub mod access;
pub mod audit;
pub mod auth;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod consent;
pub mod db;
pub mod federation;
pub mod fhir;
pub mod portability;
pub mod portal;
pub mod scope;
pub mod time;
pub mod web;

use auth::Keys;
use config::Config;
use db::Db;
use fhir::Store;

/// The running service's parts, built once from a [`Config`].
#[derive(Clone)]
pub struct Healthfolio {
    pub config: Config,
    pub db: Db,
    pub store: Store,
    pub keys: Keys,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
}

impl Healthfolio {
    /// Opens the database, applies migrations and makes sure a signing key exists.
    pub fn open(config: Config) -> Result<Healthfolio, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
        // One connection more than the requests' pool size: the access-log writer keeps its own.
        let db = Db::open(&config.database_url, config.pool_size + 1)?;
        db.migrate()?;
        let db =
            db.with_replicas(&config.read_database_urls, std::time::Duration::from_millis(config.read_max_lag_ms))?;
        let secret = auth::keys::load_secret(config.secret_key.as_deref(), &config.data_dir)?;
        let keys = Keys::new(db.clone(), secret);
        keys.ensure()?;
        let audit = audit::Auditor::start(db.clone());
        let store = Store::new(db.clone(), config.fhir_base(), audit);
        Ok(Healthfolio { config, db, store, keys })
    }

    /// Restores a backup (`db::backup`) into this service's empty database, with what follows
    /// from the restored resources rebuilt.
    pub fn restore(&self, input: impl std::io::Read) -> Result<Vec<(String, usize)>, db::backup::BackupError> {
        db::backup::restore(&self.db, input, &[("patient_nhs_numbers", fhir::patient::reclaim_nhs_numbers)])
    }

    /// Where bulk export files are written.
    pub fn bulk_dir(&self) -> std::path::PathBuf {
        self.config.bulk_dir.clone()
    }

    pub fn endpoints(&self) -> auth::oauth::Endpoints {
        auth::oauth::Endpoints {
            issuer: self.config.base_url.clone(),
            fhir_base: self.config.fhir_base(),
            token_endpoint: format!("{}/oauth/token", self.config.base_url),
            access_lifetime: self.config.token_lifetime,
        }
    }

    /// Signs an operator token (every record, within `scope`) for scripts, tests and benchmarks,
    /// living at most the configured token lifetime (a longer one would be refused).
    pub fn issue_operator_token(&self, scope: &str, lifetime: i64) -> Result<String, auth::AuthError> {
        let mut claims = auth::Claims::new(
            &self.config.base_url,
            &self.config.fhir_base(),
            "operator",
            "healthfolio-cli",
            scope,
            None,
            lifetime.min(self.config.token_lifetime),
        );
        claims.reach = Some("all".into());
        self.keys.sign(&claims)
    }

    /// Signs an access token for this server (its issuer and audience), living at most the
    /// configured token lifetime.
    pub fn issue_token(
        &self,
        sub: &str,
        client_id: &str,
        scope: &str,
        patient: Option<String>,
        lifetime: i64,
    ) -> Result<String, auth::AuthError> {
        let claims = auth::Claims::new(
            &self.config.base_url,
            &self.config.fhir_base(),
            sub,
            client_id,
            scope,
            patient,
            lifetime.min(self.config.token_lifetime),
        );
        self.keys.sign(&claims)
    }
}
