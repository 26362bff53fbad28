//! Public documents: capabilities, SMART discovery, JWKS, health.

use super::error::ApiError;
use super::{AppState, FHIR_JSON};
use crate::auth::client_auth;
use crate::auth::keys::SigningAlg;
use crate::auth::oauth::ID_TOKEN_ALGS;
use crate::fhir::capability::capability_statement;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/fhir/metadata", web::get().to(metadata))
        .route("/.well-known/smart-configuration", web::get().to(smart_configuration))
        .route("/fhir/.well-known/smart-configuration", web::get().to(smart_configuration))
        .route("/.well-known/openid-configuration", web::get().to(openid_configuration))
        .route("/.well-known/oauth-authorization-server", web::get().to(oauth_authorization_server))
        .route("/.well-known/jwks.json", web::get().to(jwks))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

fn security(base: &str) -> Value {
    json!({
        "cors": true,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
        "description": "Every request needs a bearer access token (ES256 JWT) whose scopes, and the patient's grant, allow the interaction.",
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris", "extension": [
            {"url": "authorize", "valueUri": format!("{base}/oauth/authorize")},
            {"url": "token", "valueUri": format!("{base}/oauth/token")},
            {"url": "introspect", "valueUri": format!("{base}/oauth/introspect")},
            {"url": "revoke", "valueUri": format!("{base}/oauth/revoke")},
            {"url": "manage", "valueUri": format!("{base}/portal/sharing")}
        ]}]
    })
}

/// The statement never changes while the server runs: built once at start.
pub fn capabilities(base: &str) -> String {
    capability_statement(base, security(base)).to_string()
}

async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .body(state.capabilities.clone())
}

/// What every discovery document says alike (RFC 8414 names), so that an OAuth, OpenID or SMART
/// library finds the same endpoints and picks a client authentication method that works.
fn authorization_server(state: &AppState) -> Value {
    let base = &state.hf.config.base_url;
    let mut doc = json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "userinfo_endpoint": format!("{base}/oauth/userinfo"),
        "token_endpoint_auth_methods_supported": client_auth::TOKEN_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": client_auth::ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": client_auth::INTROSPECTION_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": client_auth::ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": client_auth::REVOCATION_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": client_auth::ASSERTION_ALGS,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        // OpenID Connect Discovery 1.0 §3 requires RS256 (the default for a client that registered
        // no id_token_signed_response_alg); ES256 for a client that registered it.
        "id_token_signing_alg_values_supported": ID_TOKEN_ALGS.map(SigningAlg::as_str),
        "scopes_supported": ["openid", "fhirUser", "launch/patient", "offline_access", "patient/*.rs", "patient/*.cruds",
            "patient/MedicationRequest.rs", "patient/MedicationStatement.cruds", "patient/AllergyIntolerance.rs", "system/*.rs", "system/*.cruds"],
    });
    if state.hf.config.open_registration {
        doc["registration_endpoint"] = json!(format!("{base}/oauth/register"));
    }
    doc
}

fn discovery(doc: Value) -> HttpResponse {
    HttpResponse::Ok().insert_header(("Access-Control-Allow-Origin", "*")).json(doc)
}

/// SMART App Launch 2.2 discovery: only capabilities that work are listed.
async fn smart_configuration(state: web::Data<AppState>) -> HttpResponse {
    let mut doc = authorization_server(&state);
    doc["management_endpoint"] = json!(format!("{}/portal/sharing", state.hf.config.base_url));
    doc["capabilities"] = json!([
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-standalone-patient",
        "permission-patient",
        "permission-user",
        "permission-offline",
        "permission-v1",
        "permission-v2",
        "sso-openid-connect",
        "authorize-post"
    ]);
    discovery(doc)
}

/// OpenID Connect Discovery 1.0 §3.
async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    let mut doc = authorization_server(&state);
    doc["subject_types_supported"] = json!(["public"]);
    doc["claims_supported"] = json!(["iss", "sub", "aud", "exp", "iat", "fhirUser", "nonce"]);
    discovery(doc)
}

/// RFC 8414 authorization server metadata (the issuer has no path, so no path suffix).
async fn oauth_authorization_server(state: web::Data<AppState>) -> HttpResponse {
    discovery(authorization_server(&state))
}

async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let hf = state.hf.clone();
    let keys = web::block(move || hf.keys.jwks()).await??;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "max-age=300")).json(keys))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let db = state.hf.db.clone();
    match web::block(move || db.migrations_current()).await {
        Ok(Ok(true)) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Ok(Ok(false)) => HttpResponse::ServiceUnavailable().json(json!({"status": "migrations pending"})),
        _ => HttpResponse::ServiceUnavailable().json(json!({"status": "database unreachable"})),
    }
}
