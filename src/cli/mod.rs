//! The command line: `serve`, `demo`, `migrate`, `load`, `generate`, `keys`, `token`.

mod admin;
mod demo;
pub mod demo_data;
pub mod generate;
pub mod load;
mod portability;
mod sources;

use crate::config::{Config, Overrides};
use crate::Healthfolio;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "healthfolio",
    version,
    about = "A patient-owned medicines record: FHIR R4 server with SMART on FHIR authorization.",
    long_about = "Healthfolio keeps a patient's medicines record (prescriptions, what they take, dispensing, allergies) \
                  and serves it as a FHIR R4 API. Storage is an embedded SQLite file by default, or PostgreSQL when \
                  --database-url is a postgres:// URL.\n\nSettings come from defaults < healthfolio.toml < HEALTHFOLIO_* \
                  environment < command line."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (migrations are applied at start; SIGTERM/SIGINT let in-flight requests finish).
    Serve(Overrides),
    /// Load the demo data set (idempotent), print how to reach it, then run the server.
    Demo(Overrides),
    /// Apply database migrations and exit.
    Migrate(Overrides),
    /// Load FHIR Bundles, single resources or NDJSON files/folders; each file is one transaction.
    Load {
        /// Files or folders (.json Bundles or resources, .ndjson one resource per line).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Load as a bulk extract from this federated source: persisted copies it owns, linked to
        /// patients here by NHS number; loading the same extract again changes nothing.
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        o: Overrides,
    },
    /// Write synthetic, valid NDJSON for benchmarks and load tests (seeded, reproducible).
    Generate {
        /// Number of patients.
        #[arg(long)]
        patients: usize,
        /// Resources per patient besides the Patient itself.
        #[arg(long)]
        per_patient: usize,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Random seed: the same seed gives the same files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write one patient's whole record (with Provenance, Consent, AuditEvent, a manifest and a summary page) to an archive file.
    Export {
        #[arg(long, conflicts_with = "nhs_number", required_unless_present = "nhs_number")]
        patient: Option<String>,
        #[arg(long)]
        nhs_number: Option<String>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        o: Overrides,
    },
    /// Import a record archive: validated first, written in one transaction, new ids, a Provenance per resource; importing twice adds nothing.
    Import {
        file: PathBuf,
        /// Merge into this existing patient (e.g. when the NHS number already has a record here).
        #[arg(long)]
        into: Option<String>,
        /// Write new copies even of resources imported before.
        #[arg(long)]
        append: bool,
        #[command(flatten)]
        o: Overrides,
    },
    /// Write a consistent backup of the whole database (either backend) to a file.
    Backup {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        o: Overrides,
    },
    /// Restore a backup into an empty database (of either kind).
    Restore {
        file: PathBuf,
        #[command(flatten)]
        o: Overrides,
    },
    /// Show configuration.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
        #[command(flatten)]
        o: Overrides,
    },
    /// Register another provider's Healthfolio patients can bring their record from (the client id
    /// this instance holds there, registered with redirect URI <base-url>/portal/transfer/callback).
    Partner {
        #[arg(long)]
        name: String,
        #[arg(long)]
        fhir_base: String,
        #[arg(long)]
        client_id: String,
        #[command(flatten)]
        o: Overrides,
    },
    /// Federated sources (the shared-record roadmap stages).
    Source {
        #[command(subcommand)]
        cmd: sources::SourceCmd,
        #[command(flatten)]
        o: Overrides,
    },
    /// Patients and their logins.
    Patient {
        #[command(subcommand)]
        cmd: admin::PatientCmd,
        #[command(flatten)]
        o: Overrides,
    },
    /// Practitioners and their logins.
    Practitioner {
        #[command(subcommand)]
        cmd: admin::PractitionerCmd,
        #[command(flatten)]
        o: Overrides,
    },
    /// OAuth clients: patient apps and provider systems.
    Client {
        #[command(subcommand)]
        cmd: admin::ClientCmd,
        #[command(flatten)]
        o: Overrides,
    },
    /// Patients' grants (consent) to apps and provider organisations.
    Grant {
        #[command(subcommand)]
        cmd: admin::GrantCmd,
        #[command(flatten)]
        o: Overrides,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        o: Overrides,
    },
    /// Print an access token signed by this instance (for operators, scripts and benchmarks).
    Token {
        /// Space-separated SMART scopes, e.g. "system/*.rs".
        #[arg(long, default_value = "system/*.cruds")]
        scope: String,
        /// Limit the token to this patient's compartment.
        #[arg(long)]
        patient: Option<String>,
        /// Lifetime in seconds [default and most: the configured token lifetime, 900 unless set]
        #[arg(long)]
        lifetime: Option<i64>,
        #[command(flatten)]
        o: Overrides,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration, secrets redacted.
    Show,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create new signing keys (ES256 for access tokens, RS256 for ID tokens); older keys keep
    /// verifying until their tokens expire.
    Rotate,
    /// List the published public keys.
    List,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEALTHFOLIO_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("HEALTHFOLIO_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn open(o: &Overrides) -> Result<Healthfolio, Box<dyn std::error::Error>> {
    Ok(Healthfolio::open(Config::resolve(o)?)?)
}

fn run(command: Command) -> CliResult {
    match command {
        Command::Serve(o) => {
            Config::resolve(&o)?.check_production(o.insecure_http)?;
            serve(open(&o)?)
        }
        Command::Demo(o) => {
            let hf = open(&o)?;
            demo::run(&hf)?;
            serve(hf)
        }
        Command::Migrate(o) => {
            let config = Config::resolve(&o)?;
            let db = crate::db::Db::open(&config.database_url, 1)?;
            let n = db.migrate()?;
            println!("{n} migration(s) applied; the database is current");
            Ok(())
        }
        Command::Load { paths, source, o } => {
            let hf = open(&o)?;
            let source = match source {
                Some(name) => {
                    Some(crate::federation::sources::get(&mut hf.db.conn()?, &hf.keys, &name)?.ok_or_else(|| {
                        format!("no active source named {name}: add it with 'healthfolio source add'")
                    })?)
                }
                None => None,
            };
            let feed =
                source.as_ref().map(|s| crate::federation::ingest::Feed { name: &s.name, fhir_base: &s.fhir_base });
            let summary = load::load_paths(&hf, &paths, feed.as_ref())?;
            hf.store.audit.flush();
            hf.db.analyze()?;
            println!("{summary}");
            Ok(())
        }
        Command::Generate { patients, per_patient, out, seed } => generate_cmd(patients, per_patient, seed, &out),
        Command::Export { patient, nhs_number, out, o } => portability::export(&open(&o)?, patient, nhs_number, &out),
        Command::Import { file, into, append, o } => portability::import(&open(&o)?, &file, into, append),
        Command::Backup { out, o } => {
            let config = Config::resolve(&o)?;
            let db = crate::db::Db::open(&config.database_url, 2)?;
            let tmp = out.with_extension("partial");
            let counts = crate::db::backup::backup(&db, std::io::BufWriter::new(std::fs::File::create(&tmp)?))?;
            std::fs::rename(&tmp, &out)?;
            let total: usize = counts.iter().map(|(_, n)| n).sum();
            println!("backup of {total} rows in {} tables written to {}", counts.len(), out.display());
            Ok(())
        }
        Command::Restore { file, o } => {
            let hf = open(&o)?;
            let counts = hf.restore(std::io::BufReader::new(std::fs::File::open(&file)?))?;
            let total: usize = counts.iter().map(|(_, n)| n).sum();
            println!("restored {total} rows from {}", file.display());
            Ok(())
        }
        Command::Config { cmd: ConfigCmd::Show, o } => {
            println!("{}", Config::resolve(&o)?.redacted());
            Ok(())
        }
        Command::Partner { name, fhir_base, client_id, o } => {
            crate::portability::transfer::add_partner(&open(&o)?.db, &name, &fhir_base, &client_id)?;
            println!("partner {name} added: patients can bring their record from {fhir_base}");
            Ok(())
        }
        Command::Source { cmd, o } => sources::run(&open(&o)?, cmd),
        Command::Patient { cmd, o } => admin::patient(&open(&o)?, cmd),
        Command::Practitioner { cmd, o } => admin::practitioner(&open(&o)?, cmd),
        Command::Client { cmd, o } => admin::client(&open(&o)?, cmd),
        Command::Grant { cmd, o } => admin::grant(&open(&o)?, cmd),
        Command::Keys { action, o } => {
            let hf = open(&o)?;
            match action {
                KeysAction::Rotate => {
                    for (alg, kid) in hf.keys.rotate()? {
                        println!("new {} signing key {kid}", alg.as_str());
                    }
                }
                KeysAction::List => println!("{}", serde_json::to_string_pretty(&hf.keys.jwks()?)?),
            }
            Ok(())
        }
        Command::Token { scope, patient, lifetime, o } => {
            let hf = open(&o)?;
            let lifetime = lifetime.unwrap_or(hf.config.token_lifetime);
            let token = match patient {
                Some(p) => hf.issue_token("operator", "healthfolio-cli", &scope, Some(p), lifetime)?,
                None => hf.issue_operator_token(&scope, lifetime)?,
            };
            println!("{token}");
            Ok(())
        }
    }
}

fn serve(hf: Healthfolio) -> CliResult {
    let listener = std::net::TcpListener::bind(&hf.config.addr)
        .map_err(|e| format!("cannot listen on {}: {e}", hf.config.addr))?;
    tracing::info!(addr = %hf.config.addr, base = %hf.config.base_url, "Healthfolio listening");
    let audit = hf.store.audit.clone();
    actix_web::rt::System::new().block_on(async move { crate::web::server(hf, listener)?.await })?;
    audit.flush();
    Ok(())
}

fn generate_cmd(patients: usize, per_patient: usize, seed: u64, out: &std::path::Path) -> CliResult {
    let mut bar = load::Progress::new("generating", patients as u64);
    let summary = generate::generate(patients, per_patient, seed, out, &mut |done, _| bar.set(done as u64))?;
    bar.finish();
    println!(
        "wrote {} resources for {} patients into {} file(s) in {}",
        summary.resources,
        summary.patients,
        summary.files.len(),
        out.display()
    );
    Ok(())
}
