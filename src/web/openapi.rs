//! OpenAPI for the non-FHIR endpoints (the FHIR API is described by its CapabilityStatement), and a
//! browsable page rendered on the server from the same document: nothing fetched from elsewhere.

use super::pages::html;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde_json::Value;

const SPEC: &str = include_str!("../../static/openapi.json");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(spec)).route("/openapi", web::get().to(page));
}

#[derive(Template)]
#[template(path = "openapi.html")]
struct ApiPage {
    title: String,
    description: String,
    rows: Vec<(String, String, String, String)>,
}

async fn spec() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").insert_header(("Access-Control-Allow-Origin", "*")).body(SPEC)
}

async fn page() -> HttpResponse {
    let doc: Value = serde_json::from_str(SPEC).unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut rows = Vec::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in ops.as_object().into_iter().flatten() {
            rows.push((method.to_uppercase(), path.clone(), text(&op["summary"]), text(&op["tags"][0])));
        }
    }
    html(
        StatusCode::OK,
        ApiPage { title: text(&doc["info"]["title"]), description: text(&doc["info"]["description"]), rows }.render(),
    )
}
