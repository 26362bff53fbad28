//! `healthfolio source …`: the federated sources of the shared-record roadmap.

use crate::federation::client::SourceClient;
use crate::federation::sources::{self, NewSource, Policy};
use crate::Healthfolio;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum SourceCmd {
    /// Register an external FHIR server holding part of patients' records.
    Add(Box<AddSource>),
    /// Move a source to another stage of the roadmap (or change its timing): its copies and links stay.
    Update {
        name: String,
        /// never (federated) | on-read (hybrid) | always (persisted copy)
        #[arg(long, value_parser = ["never", "on-read", "always"])]
        policy: Option<String>,
        #[arg(long)]
        max_age: Option<String>,
        #[arg(long)]
        timeout: Option<String>,
        /// The client id of the provider system whose event messages feed this source's copy
        /// ('' stops the source taking events).
        #[arg(long)]
        events_client: Option<String>,
        /// How an `always` source is kept in step: search (per patient) | bulk (Patient/$export)
        #[arg(long, value_parser = ["search", "bulk"])]
        sync: Option<String>,
    },
    /// List sources.
    List,
    /// Check a source: reachable, SMART discovery, capabilities.
    Test { name: String },
    /// The local patients linked to their record at a source (found there by NHS number).
    Links { name: String },
    /// Retire a source (its persisted copies stay, still owned by it).
    Remove { name: String },
    /// Single-and-only: the source's copies become locally owned and the source is retired.
    Adopt { name: String },
}

#[derive(clap::Args)]
pub struct AddSource {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub fhir_base: String,
    /// none | client-credentials (SMART Backend Services with an ES384 key)
    #[arg(long, default_value = "none", value_parser = ["none", "client-credentials"])]
    pub auth: String,
    #[arg(long)]
    pub client_id: Option<String>,
    /// PKCS#8 DER file of the EC P-384 key registered with the source (stored encrypted).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The kid of that key in the JWKS the source knows.
    #[arg(long, default_value = "1")]
    pub key_id: String,
    /// never (federated) | on-read (hybrid) | always (persisted copy)
    #[arg(long, value_parser = ["never", "on-read", "always"])]
    pub policy: String,
    /// How long an on-read copy is served before asking again, e.g. 10m, 30s, 1h.
    #[arg(long, default_value = "10m")]
    pub max_age: String,
    /// Per-request timeout, e.g. 2s or 500ms.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
    /// Only these types are asked of this source (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub types: Option<Vec<String>>,
    /// The client id of the provider system (registered here) whose `$process-message` events
    /// feed this source's persisted copy.
    #[arg(long)]
    pub events_client: Option<String>,
    /// How an `always` source is kept in step: search (what changed, per linked patient) | bulk
    /// (one Bulk Data Patient/$export of what it shares with us)
    #[arg(long, default_value = "search", value_parser = ["search", "bulk"])]
    pub sync: String,
}

/// `10m`, `30s`, `1h`, `500ms` as a duration.
pub fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = n.parse().map_err(|_| format!("'{s}' is not a duration like 10m, 30s or 500ms"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("'{s}': use ms, s, m or h")),
    })
}

pub fn run(hf: &Healthfolio, cmd: SourceCmd) -> CliResult {
    let mut conn = hf.db.conn()?;
    match cmd {
        SourceCmd::Add(a) => {
            let AddSource {
                name,
                fhir_base,
                auth,
                client_id,
                key_file,
                key_id,
                policy,
                max_age,
                timeout,
                types,
                events_client,
                sync,
            } = *a;
            let credentials = match (auth.as_str(), client_id, key_file) {
                ("client-credentials", Some(c), Some(f)) => {
                    Some((c, key_id, std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?))
                }
                ("client-credentials", _, _) => {
                    return Err("client-credentials needs --client-id and --key-file".into())
                }
                _ => None,
            };
            let s = NewSource {
                name: name.clone(),
                fhir_base,
                policy: Policy::parse(&policy).ok_or("unknown policy")?,
                max_age_secs: duration(&max_age)?.as_secs() as i64,
                timeout_ms: duration(&timeout)?.as_millis() as i64,
                types,
                credentials,
                events_client,
                bulk_sync: sync == "bulk",
            };
            sources::add(&mut conn, &hf.keys, &s)?;
            println!("source {name} added ({policy})");
        }
        SourceCmd::Update { name, policy, max_age, timeout, events_client, sync } => {
            let change = sources::Change {
                policy: policy.as_deref().map(|p| Policy::parse(p).ok_or("unknown policy")).transpose()?,
                max_age_secs: max_age.as_deref().map(duration).transpose()?.map(|d| d.as_secs() as i64),
                timeout_ms: timeout.as_deref().map(duration).transpose()?.map(|d| d.as_millis() as i64),
                events_client,
                bulk_sync: sync.map(|s| s == "bulk"),
            };
            if !sources::update(&mut conn, &name, &change)? {
                return Err(format!("no active source named {name}").into());
            }
            println!("source {name} updated");
        }
        SourceCmd::List => {
            for s in sources::active(&mut conn, &hf.keys)? {
                println!(
                    "{}\t{}\t{}{}\tmax-age {}s\ttimeout {}ms{}",
                    s.name,
                    s.fhir_base,
                    s.policy.as_str(),
                    if s.bulk_sync { " (bulk)" } else { "" },
                    s.max_age_secs,
                    s.timeout_ms,
                    s.events_client.map(|c| format!("\tevents from client {c}")).unwrap_or_default()
                );
            }
        }
        SourceCmd::Links { name } => {
            let s = sources::get(&mut conn, &hf.keys, &name)?.ok_or_else(|| format!("no source {name}"))?;
            let links = sources::linked(&mut conn, &name)?;
            if links.is_empty() {
                println!("{name}: no patients linked yet");
            }
            for (patient, remote) in links {
                println!("Patient/{patient}\t{}/Patient/{remote}", s.fhir_base);
            }
        }
        SourceCmd::Test { name } => {
            let s = sources::get(&mut conn, &hf.keys, &name)?.ok_or_else(|| format!("no source {name}"))?;
            let client = SourceClient::default();
            let timeout = Duration::from_millis(s.timeout_ms as u64);
            let cs = client.fetch(&s, "metadata", timeout)?;
            let cs = cs.first().cloned().unwrap_or_default();
            let version = cs["fhirVersion"].as_str().unwrap_or("?").to_string();
            println!("{name}: reachable, FHIR {version}");
            // What federation asks of it: a search by patient of each type, and finding a patient
            // by NHS number.
            let searchable: Vec<&str> = cs["rest"][0]["resource"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["interaction"].as_array().is_some_and(|i| i.iter().any(|x| x["code"] == "search-type")))
                .filter_map(|r| r["type"].as_str())
                .collect();
            let wanted = s
                .types
                .clone()
                .unwrap_or_else(|| crate::federation::sync::DEFAULT_TYPES.iter().map(|t| t.to_string()).collect());
            let missing: Vec<&String> = wanted.iter().filter(|t| !searchable.contains(&t.as_str())).collect();
            if missing.is_empty() {
                println!("{name}: its CapabilityStatement offers search on every type asked of it");
            } else {
                println!(
                    "{name}: its CapabilityStatement does not offer search on {}",
                    missing.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            match client.fetch(&s, ".well-known/smart-configuration", timeout) {
                Ok(c) => {
                    let token = c.first().and_then(|c| c["token_endpoint"].as_str()).unwrap_or("none published");
                    println!("{name}: SMART discovery works (token endpoint {token})");
                }
                Err(e) if s.credentials.is_some() => println!("{name}: SMART discovery {e}"),
                Err(_) => println!("{name}: no SMART discovery (not needed: this source is read without credentials)"),
            }
            let probe = client.fetch(&s, "MedicationRequest?_count=1", Duration::from_millis(s.timeout_ms as u64));
            match probe {
                Ok(_) => println!("{name}: authorised search works"),
                Err(e) => println!("{name}: search {e}"),
            }
        }
        SourceCmd::Remove { name } => {
            if !sources::remove(&mut conn, &name)? {
                return Err(format!("no active source {name}").into());
            }
            println!("source {name} retired");
        }
        SourceCmd::Adopt { name } => {
            let n = hf.db.transaction(|c| sources::adopt(c, &name))?;
            println!("source {name} adopted: {n} persisted copies are now owned here");
        }
    }
    Ok(())
}
