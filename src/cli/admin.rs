//! Operator commands for people, clients and grants.

use crate::access::AccessContext;
use crate::auth::accounts;
use crate::auth::clients::{self, ClientKind, NewClient};
use crate::consent::{self, Grantee, NewGrant};
use crate::fhir::store::{create_in, new_id, Refs};
use crate::fhir::FhirError;
use crate::Healthfolio;
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Read;

type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum PatientCmd {
    /// Print a one-time link (valid 7 days) with which the patient sets up their own login.
    Invite {
        /// The Patient id (or Patient/ID).
        #[arg(long)]
        patient: String,
    },
    /// Print a one-time link (valid 1 day) with which a person who forgot their password sets a
    /// new one (any login: patient or practitioner). Pass it on by a channel you trust.
    ResetPassword {
        #[arg(long)]
        email: String,
    },
    /// Close a login (patient or practitioner): its sessions end and the apps it authorised lose
    /// access at once. A Patient someone signs in as cannot be deleted until its login is closed.
    CloseAccount {
        #[arg(long)]
        email: String,
    },
    /// Create a Patient and the login linked to it (the password is read from standard input).
    Add {
        #[arg(long)]
        nhs_number: String,
        #[arg(long)]
        given: String,
        #[arg(long)]
        family: String,
        /// YYYY-MM-DD
        #[arg(long)]
        birth_date: String,
        #[arg(long)]
        email: String,
        /// Read the password from standard input (required: passwords never go on a command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub enum PractitionerCmd {
    /// Create a Practitioner, their role at an Organization, and their login (password from stdin).
    Add {
        #[arg(long)]
        given: String,
        #[arg(long)]
        family: String,
        #[arg(long)]
        email: String,
        /// The Organization they work for, e.g. Organization/123.
        #[arg(long)]
        organization: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub enum ClientCmd {
    /// Register an app or provider system; prints its client id (and, once, a confidential client's secret).
    Add(ClientAdd),
    /// List registered clients.
    List,
    /// Remove a client; its tokens stop working at once.
    Remove { client_id: String },
}

#[derive(Args)]
pub struct ClientAdd {
    #[arg(long)]
    name: String,
    /// public | confidential | backend
    #[arg(long = "type", value_parser = ["public", "confidential", "backend"])]
    kind: String,
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// The most this client may be granted (repeatable), e.g. patient/MedicationRequest.rs or system/*.rs.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// A JWKS file with the public keys of a backend client.
    #[arg(long)]
    jwks_file: Option<std::path::PathBuf>,
    #[arg(long)]
    jwks_uri: Option<String>,
    /// The provider organisation a backend client acts for, e.g. Organization/123.
    #[arg(long)]
    organization: Option<String>,
}

#[derive(Subcommand)]
pub enum GrantCmd {
    /// Record a patient's consent for a client or an organisation.
    Add {
        #[arg(long)]
        patient: String,
        #[arg(long, conflicts_with = "organization", required_unless_present = "organization")]
        client: Option<String>,
        #[arg(long)]
        organization: Option<String>,
        /// e.g. patient/MedicationRequest.rs (repeatable)
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Last day of the grant, YYYY-MM-DD.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List grants, optionally of one patient.
    List {
        #[arg(long)]
        patient: Option<String>,
    },
    /// Revoke a grant now.
    Revoke { id: String },
}

fn read_password() -> Result<String, Box<dyn std::error::Error>> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

fn fhir_err(e: FhirError) -> Box<dyn std::error::Error> {
    e.to_string().into()
}

pub fn patient(hf: &Healthfolio, cmd: PatientCmd) -> CliResult {
    let (nhs_number, given, family, birth_date, email) = match cmd {
        PatientCmd::Invite { patient } => return invite(hf, patient.trim_start_matches("Patient/")),
        PatientCmd::ResetPassword { email } => {
            let code = crate::auth::invitations::reset_link(&mut hf.db.conn()?, &email)?;
            println!(
                "{}/portal/reset/{code}\n(valid for 1 day, once; every session of {email} ends when it is used)",
                hf.config.base_url
            );
            return Ok(());
        }
        PatientCmd::CloseAccount { email } => {
            let ctx = AccessContext::operator("patient close-account");
            return match hf.db.transaction(|c| crate::auth::accounts::close(c, &ctx, &email))? {
                Some(a) => {
                    hf.store.audit.flush();
                    println!(
                        "the login {} of {} is closed: its sessions and app access have ended",
                        a.email, a.fhir_user
                    );
                    Ok(())
                }
                None => Err(format!("no login with the email {email}").into()),
            };
        }
        PatientCmd::Add { nhs_number, given, family, birth_date, email, .. } => {
            (nhs_number, given, family, birth_date, email)
        }
    };
    let password = read_password()?;
    let new = crate::portal::registration::NewPatient { nhs_number, given, family, birth_date, email, password };
    let account = crate::portal::registration::create_patient_with_login(
        &hf.store,
        &AccessContext::operator("patient add"),
        &new,
    )?;
    println!("{} created with a login for {}", account.fhir_user, account.email);
    Ok(())
}

fn invite(hf: &Healthfolio, patient: &str) -> CliResult {
    let op = crate::access::AccessContext::operator("cli");
    let code = hf.db.transaction(|c| crate::auth::invitations::invite_by(c, &op, patient)).map_err(fhir_err)?;
    println!(
        "{}/portal/invite/{code}
(valid for 7 days, once)",
        hf.config.base_url
    );
    Ok(())
}

pub fn practitioner(hf: &Healthfolio, cmd: PractitionerCmd) -> CliResult {
    let PractitionerCmd::Add { given, family, email, organization, .. } = cmd;
    let password = read_password()?;
    let ctx = AccessContext::operator("practitioner add");
    let id = hf.db.transaction(|conn| {
        let mut refs = Refs::default();
        let p = json!({"resourceType": "Practitioner", "name": [{"family": family, "given": [given]}], "telecom": [{"system": "email", "value": email}]});
        let p = create_in(conn, &ctx, &mut refs, "Practitioner", p, new_id(), "POST").map_err(fhir_err)?;
        let role = json!({"resourceType": "PractitionerRole", "active": true,
            "practitioner": {"reference": format!("Practitioner/{}", p.id)}, "organization": {"reference": organization}});
        create_in(conn, &ctx, &mut refs, "PractitionerRole", role, new_id(), "POST").map_err(fhir_err)?;
        crate::fhir::store::check_refs(conn, &refs).map_err(fhir_err)?;
        accounts::create(conn, "practitioner", &email, &password, &format!("Practitioner/{}", p.id), Some(&organization))?;
        Ok::<_, Box<dyn std::error::Error>>(p.id)
    })?;
    println!("Practitioner/{id} created at {organization} with a login for {email}");
    Ok(())
}

pub fn client(hf: &Healthfolio, cmd: ClientCmd) -> CliResult {
    let mut conn = hf.db.conn()?;
    match cmd {
        ClientCmd::Add(a) => {
            let jwks = match &a.jwks_file {
                Some(f) => Some(
                    serde_json::from_str(&std::fs::read_to_string(f)?)
                        .map_err(|e| format!("{}: not a JWKS: {e}", f.display()))?,
                ),
                None => None,
            };
            let new = NewClient {
                name: a.name,
                kind: ClientKind::parse(&a.kind),
                redirect_uris: a.redirect_uris,
                scope: a.scopes.join(" "),
                jwks,
                jwks_uri: a.jwks_uri,
                organization: a.organization,
                id_token_alg: None,
            };
            let (c, secret) = clients::register(&mut conn, &new)?;
            println!("client_id: {}", c.client_id);
            if let Some(s) = secret {
                println!("client_secret: {s}\n(shown once: it is stored hashed)");
            }
        }
        ClientCmd::List => {
            for c in clients::list(&mut conn)? {
                println!("{}\t{}\t{}\t{}", c.client_id, c.kind.as_str(), c.name, c.organization.unwrap_or_default());
            }
        }
        ClientCmd::Remove { client_id } => {
            if !clients::remove(&mut conn, &client_id)? {
                return Err(format!("no client {client_id}").into());
            }
            println!("client {client_id} removed; its tokens no longer work");
        }
    }
    Ok(())
}

pub fn grant(hf: &Healthfolio, cmd: GrantCmd) -> CliResult {
    let mut conn = hf.db.conn()?;
    match cmd {
        GrantCmd::Add { patient, client, organization, scopes, expires } => {
            let grantee = match (client, organization) {
                (Some(c), _) => Grantee::Client(c),
                (None, Some(o)) => Grantee::Organization(o),
                _ => return Err("give --client or --organization".into()),
            };
            let expires_at = match expires {
                Some(d) => {
                    Some(crate::time::parse_range(&d).ok_or_else(|| format!("'{d}' is not a date (YYYY-MM-DD)"))?.hi)
                }
                None => None,
            };
            let patient = patient.trim_start_matches("Patient/").to_string();
            let g = hf.db.transaction(|c| {
                consent::grant(
                    c,
                    &NewGrant {
                        patient_id: patient,
                        grantee,
                        scope: scopes.join(" "),
                        expires_at,
                        created_by: "operator".into(),
                    },
                )
            })?;
            println!("grant {} recorded: {}", g.id, g.scope);
        }
        GrantCmd::List { patient } => {
            let now = crate::time::now_micros();
            for g in consent::list(&mut conn, patient.as_deref().map(|p| p.trim_start_matches("Patient/")))? {
                let who = g.client_id.clone().or(g.organization.clone()).unwrap_or_default();
                let state = if g.is_active(now) { "active" } else { "inactive" };
                println!("{}\tPatient/{}\t{who}\t{state}\t{}", g.id, g.patient_id, g.scope);
            }
        }
        GrantCmd::Revoke { id } => {
            if consent::revoke(&mut conn, &id)? {
                println!("grant {id} revoked");
            } else {
                println!("grant {id} was already revoked");
            }
        }
    }
    Ok(())
}
