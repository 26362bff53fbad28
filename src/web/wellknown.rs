//! Public documents: capabilities, SMART discovery, JWKS, health.

use super::error::ApiError;
use super::{AppState, FHIR_JSON};
use crate::fhir::capability::capability_statement;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/fhir/metadata", web::get().to(metadata))
        .route("/.well-known/smart-configuration", web::get().to(smart_configuration))
        .route("/fhir/.well-known/smart-configuration", web::get().to(smart_configuration))
        .route("/.well-known/jwks.json", web::get().to(jwks))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

fn security() -> Value {
    json!({
        "cors": true,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
        "description": "Every request needs a bearer access token (ES256 JWT) whose scopes allow the interaction."
    })
}

async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    let cs = capability_statement(&state.hf.config.base_url, security());
    HttpResponse::Ok().content_type(FHIR_JSON).body(cs.to_string())
}

async fn smart_configuration(state: web::Data<AppState>) -> HttpResponse {
    let base = &state.hf.config.base_url;
    // Only what works today is advertised; the OAuth flows are added on the same keys.
    HttpResponse::Ok().json(json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/oauth/token"),
        "grant_types_supported": [],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["permission-v1", "permission-v2"],
        "scopes_supported": ["patient/*.rs", "system/*.rs", "system/*.cruds"],
    }))
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
