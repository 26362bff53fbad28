//! Bringing a record from another provider's Healthfolio (or any SMART server with `$phr-export`):
//! the patient, signed in here, is sent to the partner to sign in and approve (SMART App Launch with
//! PKCE, the `oauth2` crate as the client); on return, the record is pulled and imported like an
//! archive: one transaction, origin Provenance, and a retry adds nothing twice.

use super::archive::{self, ImportOptions, ImportReport};
use crate::access::AccessContext;
use crate::db::{Bind, Db, Sql};
use crate::federation::client::same_origin;
use crate::fhir::store::{collect_refs, Refs};
use crate::fhir::{now_micros, FhirError, Store};
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, EndpointNotSet, EndpointSet, ExtraTokenFields, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);
const PENDING_MICROS: i64 = 15 * 60 * 1_000_000;

#[derive(QueryableByName, Debug, Clone)]
pub struct Partner {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub fhir_base: String,
    #[diesel(sql_type = Text)]
    pub client_id: String,
}

#[derive(QueryableByName)]
struct Pending {
    #[diesel(sql_type = Text)]
    mode: String,
    #[diesel(sql_type = Text)]
    patient_id: String,
    #[diesel(sql_type = Text)]
    partner: String,
    #[diesel(sql_type = Text)]
    verifier: String,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SmartFields {
    patient: Option<String>,
}
impl ExtraTokenFields for SmartFields {}

fn err(m: impl std::fmt::Display) -> FhirError {
    FhirError::invalid(m.to_string())
}

pub fn add_partner(db: &Db, name: &str, fhir_base: &str, client_id: &str) -> Result<(), FhirError> {
    db.transaction(|c| {
        c.execute(&Sql::with(
            "INSERT INTO transfer_partners (name, fhir_base, client_id, created_at) VALUES (?, ?, ?, ?)",
            [
                Bind::Text(name.into()),
                Bind::Text(fhir_base.trim_end_matches('/').into()),
                Bind::Text(client_id.into()),
                Bind::Int(now_micros()),
            ],
        ))
    })?;
    Ok(())
}

pub fn partners(db: &Db) -> Result<Vec<Partner>, FhirError> {
    Ok(db.conn()?.load(&Sql::new("SELECT name, fhir_base, client_id FROM transfer_partners ORDER BY name"))?)
}

fn partner(db: &Db, name: &str) -> Result<Partner, FhirError> {
    let q =
        Sql::with("SELECT name, fhir_base, client_id FROM transfer_partners WHERE name = ?", [Bind::Text(name.into())]);
    db.conn()?.first(&q)?.ok_or_else(|| err(format!("{name} is not a provider you can bring a record from")))
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(TIMEOUT).redirects(0).build()
}

fn smart_configuration(fhir_base: &str, name: &str) -> Result<Value, FhirError> {
    agent()
        .get(&format!("{fhir_base}/.well-known/smart-configuration"))
        .call()
        .map_err(|e| err(format!("{name} could not be reached ({e})")))?
        .into_json()
        .map_err(|_| err(format!("{name} has no SMART configuration")))
}

fn discover(p: &Partner) -> Result<(String, String), FhirError> {
    let v = smart_configuration(&p.fhir_base, &p.name)?;
    let get =
        |k: &str| v[k].as_str().map(str::to_string).ok_or_else(|| err(format!("{} does not publish {k}", p.name)));
    Ok((get("authorization_endpoint")?, get("token_endpoint")?))
}

/// A provider the patient names by its FHIR address: an existing partner with that address, or
/// one this service registers itself with (RFC 7591, as a public app using PKCE) when that
/// provider allows it. Plain http is accepted only when `allow_http` (this service is not on
/// https itself: development and tests). Returns the partner's name.
/// The provider address a patient typed, checked before anything is asked of it: an error here is
/// the patient's to correct, not the other side's.
pub fn parse_address(address: &str, allow_http: bool) -> Result<(url::Url, String), FhirError> {
    let address = address.trim();
    if address.is_empty() {
        return Err(err(
            "Enter the address of your other provider's record service, such as https://records.example.nhs.uk/fhir",
        ));
    }
    let url = url::Url::parse(address)
        .map_err(|_| err("That address is not a web address: it should look like https://provider.example/fhir"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err(err("The address must start with https://")),
    }
    let host =
        url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| err("That address has no host name"))?.to_string();
    Ok((url, host))
}

pub fn connect_partner(db: &Db, address: &str, redirect: &str, allow_http: bool) -> Result<String, FhirError> {
    let (url, host) = parse_address(address, allow_http)?;
    let fhir_base = url.as_str().trim_end_matches('/').to_string();
    if let Some(p) = partners(db)?.into_iter().find(|p| p.fhir_base == fhir_base) {
        return Ok(p.name);
    }
    let v = smart_configuration(&fhir_base, &host)?;
    let Some(register) = v["registration_endpoint"].as_str() else {
        return Err(err(format!(
            "{host} does not let other services register with it: ask the service that runs it, or this one, to connect the two"
        )));
    };
    if !same_origin(register, &fhir_base) {
        return Err(err(format!("{host} sends registrations elsewhere; it cannot be connected from here")));
    }
    let answer: Value = agent()
        .post(register)
        .send_json(serde_json::json!({
            "client_name": format!("Healthfolio (bringing records to {})", redirect.split("/portal").next().unwrap_or(redirect)),
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "scope": "launch/patient patient/*.rs patient/Patient.u",
        }))
        .map_err(|e| err(format!("{host} did not accept the registration ({e})")))?
        .into_json()
        .map_err(|_| err(format!("{host} answered the registration with something unreadable")))?;
    let client_id = answer["client_id"].as_str().ok_or_else(|| err(format!("{host} gave no client id")))?;
    let name = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    add_partner(db, &name, &fhir_base, client_id)?;
    Ok(name)
}

/// An OAuth client whose token response carries SMART's `patient`.
type TransferClient = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<SmartFields, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

fn client(p: &Partner, redirect: &str, auth: String, token: String) -> Result<TransferClient, FhirError> {
    Ok(oauth2::Client::new(ClientId::new(p.client_id.clone()))
        .set_auth_uri(AuthUrl::new(auth).map_err(err)?)
        .set_token_uri(TokenUrl::new(token).map_err(err)?)
        .set_redirect_uri(RedirectUrl::new(redirect.to_string()).map_err(err)?))
}

/// Starts a transfer for `patient`: returns the partner's authorization URL to send them to.
/// A `move` also asks for the right to close the record there once it has arrived here.
pub fn begin(db: &Db, patient: &str, partner_name: &str, redirect: &str, moving: bool) -> Result<String, FhirError> {
    let p = partner(db, partner_name)?;
    let (auth, token) = discover(&p)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let c = client(&p, redirect, auth, token)?;
    let mut req = c
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("launch/patient".into()))
        .add_scope(Scope::new("patient/*.rs".into()));
    if moving {
        req = req.add_scope(Scope::new("patient/Patient.u".into()));
    }
    let (url, state) = req.add_extra_param("aud", p.fhir_base.clone()).set_pkce_challenge(challenge).url();
    db.transaction(|c| {
        c.execute(&Sql::with(
            "INSERT INTO transfers (state, patient_id, partner, verifier, mode, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                Bind::Text(state.secret().clone()),
                Bind::Text(patient.into()),
                Bind::Text(p.name.clone()),
                Bind::Text(verifier.secret().clone()),
                Bind::Text(if moving { "move" } else { "copy" }.into()),
                Bind::Int(now_micros()),
            ],
        ))
    })?;
    Ok(url.to_string())
}

/// One `$everything` page at the partner: its resources and the next page's URL.
fn everything_page(p: &Partner, page_url: &str, token: &str) -> Result<(Vec<Value>, Option<String>), FhirError> {
    if !same_origin(page_url, &p.fhir_base) {
        return Err(err(format!("{} sent the next page elsewhere", p.name)));
    }
    let page: Value = agent()
        .get(page_url)
        .set("Authorization", &format!("Bearer {token}"))
        .set("Accept", "application/fhir+json")
        .call()
        .map_err(|e| err(format!("{} did not hand over the record ({e})", p.name)))?
        .into_json()
        .map_err(|_| err(format!("{} sent something that is not a record", p.name)))?;
    let entries = page["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    let items = entries
        .iter()
        .filter(|e| e["search"]["mode"] != "outcome")
        .filter_map(|e| e.get("resource").cloned())
        .collect();
    let next = page["link"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
        .and_then(|l| l["url"].as_str())
        .map(str::to_string);
    Ok((items, next))
}

fn too_many(lines: &[Value]) -> Result<(), FhirError> {
    if lines.len() > archive::MAX_RESOURCES {
        return Err(FhirError::TooLarge(format!("the record holds more than {} resources", archive::MAX_RESOURCES)));
    }
    Ok(())
}

/// The record at the partner, up to [`archive::MAX_RESOURCES`]. A record that fits one
/// `$everything` page (1,000) comes from that page; a larger one from the partner's Bulk Data
/// export (the patient's own token exports only their record), completed with what it refers to,
/// or, where the partner offers no export, from the rest of the `$everything` pages. Every
/// address called stays on the partner's own origin.
fn pull_record(p: &Partner, remote: &str, token: &str) -> Result<Vec<Value>, FhirError> {
    let (mut lines, mut next) =
        everything_page(p, &format!("{}/Patient/{remote}/$everything?_count=1000", p.fhir_base), token)?;
    if next.is_some() {
        match pull_bulk(p, token) {
            Ok(bulk) => {
                lines = bulk;
                next = None;
            }
            Err(e) => tracing::info!(partner = %p.name, "no bulk export ({e}); reading $everything page by page"),
        }
    }
    while let Some(page_url) = next.take() {
        let (items, n) = everything_page(p, &page_url, token)?;
        lines.extend(items);
        too_many(&lines)?;
        next = n;
    }
    // A resource can appear on two pages (a shared Medication): once is enough.
    let mut seen = std::collections::HashSet::new();
    lines.retain(|r| seen.insert(archive::key(r)));
    Ok(lines)
}

/// A large record by the partner's Bulk Data `Patient/$export`; the export holds the patient's
/// compartment, so what it refers to outside it (a Medication, a prescriber) is read after.
fn pull_bulk(p: &Partner, token: &str) -> Result<Vec<Value>, FhirError> {
    let mut lines = Vec::new();
    let exported = crate::federation::client::bulk_export(
        &p.fhir_base,
        Some(token),
        "_outputFormat=application%2Ffhir%2Bndjson",
        TIMEOUT,
        BULK_DEADLINE,
        |t, text| {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                lines.push(serde_json::from_str(line).map_err(|e| format!("a {t} line is not JSON ({e})"))?);
            }
            too_many(&lines).map_err(|e| e.to_string())
        },
    );
    exported.map_err(|e| err(format!("{} {e}", p.name)))?;
    // What the export refers to outside the compartment, and what that refers to in turn (a
    // prescriber's organisation), a few levels deep. Another Patient (a link) is not followed:
    // the record is one person's.
    let mut held: HashSet<String> = lines.iter().map(archive::key).collect();
    let mut frontier = 0;
    for _ in 0..REFERENCE_LEVELS {
        let mut refs = Refs::default();
        lines[frontier..].iter().for_each(|r| collect_refs(r, &mut refs));
        let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (t, id) in refs.relative().filter(|(t, id)| *t != "Patient" && !held.contains(&format!("{t}/{id}"))) {
            wanted.entry(t).or_default().push(id);
        }
        let mut added = Vec::new();
        for (t, ids) in wanted {
            for chunk in ids.chunks(100) {
                let mut next = Some(format!("{}/{t}?_id={}&_count=100", p.fhir_base, chunk.join(",")));
                while let Some(url) = next.take() {
                    let (items, n) = everything_page(p, &url, token)?;
                    added.extend(items);
                    next = n;
                }
            }
        }
        if added.is_empty() {
            break; // complete, or what is missing is not there (the import will say so)
        }
        frontier = lines.len();
        held.extend(added.iter().map(archive::key));
        lines.extend(added);
        too_many(&lines)?;
    }
    Ok(lines)
}

/// How many levels of references outside the compartment a bulk transfer follows.
const REFERENCE_LEVELS: usize = 4;

/// How long a partner may take to prepare a bulk export of one record.
const BULK_DEADLINE: Duration = Duration::from_secs(300);

/// Finishes a transfer when the patient returns with `code` for `state`: pulls the record the
/// partner exports for them and imports it into `patient`'s record here.
pub fn finish(
    store: &Store,
    ctx: &AccessContext,
    state: &str,
    code: &str,
    redirect: &str,
) -> Result<ImportReport, FhirError> {
    let patient = ctx.compartment().ok_or_else(|| err("a record is brought in by its patient, signed in here"))?;
    let q = Sql::with(
        "SELECT mode, patient_id, partner, verifier, created_at FROM transfers WHERE state = ? AND finished_at IS NULL",
        [Bind::Text(state.into())],
    );
    let pending: Pending =
        store.db.conn()?.first(&q)?.ok_or_else(|| err("this transfer is unknown or already finished: start again"))?;
    if pending.patient_id != patient || now_micros() - pending.created_at > PENDING_MICROS {
        return Err(err("this transfer was started by someone else or has expired: start again"));
    }
    let p = partner(&store.db, &pending.partner)?;
    let (auth, token_url) = discover(&p)?;
    let token = client(&p, redirect, auth, token_url)?
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
        .request(&agent())
        .map_err(|e| err(format!("{} refused the sign-in ({e})", p.name)))?;
    let remote = token
        .extra_fields()
        .patient
        .clone()
        .ok_or_else(|| err(format!("{} did not say whose record it is", p.name)))?;
    let lines = pull_record(&p, &remote, token.access_token().secret())?;
    let report = archive::import(
        store,
        ctx,
        &p.fhir_base,
        lines,
        &ImportOptions { into: Some(patient.to_string()), append: false },
    )?;
    if pending.mode == "move" {
        // Only now that the record is safely here is the old one closed, pointing to this one.
        let here = format!("{}/Patient/{patient}", store.base);
        let params =
            serde_json::json!({"resourceType": "Parameters", "parameter": [{"name": "replacedBy", "valueUrl": here}]});
        agent()
            .post(&format!("{}/Patient/{remote}/$close", p.fhir_base))
            .set("Authorization", &format!("Bearer {}", token.access_token().secret()))
            .set("Content-Type", "application/fhir+json")
            .send_string(&params.to_string())
            .map_err(|e| {
                let why = match e {
                    ureq::Error::Status(code, r) => format!("{code}: {}", r.into_string().unwrap_or_default()),
                    other => other.to_string(),
                };
                err(format!(
                    "your record arrived here, but {} did not close the old one ({why}); try the move again",
                    p.name
                ))
            })?;
    }
    store.db.transaction(|c| {
        c.execute(&Sql::with(
            "UPDATE transfers SET finished_at = ?, result = ? WHERE state = ?",
            [
                Bind::Int(now_micros()),
                Bind::Text(serde_json::to_string(&report).unwrap_or_default()),
                Bind::Text(state.into()),
            ],
        ))
    })?;
    Ok(report)
}
