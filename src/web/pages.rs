//! HTML responses: rendered templates with the security headers every page carries.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use askama::Template;

/// No inline script or style anywhere, so the policy needs no `unsafe-inline`.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; \
                   form-action 'self' https: http://127.0.0.1:* http://localhost:*; frame-ancestors 'none'; base-uri 'none'";

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

pub fn html(status: StatusCode, body: Result<String, askama::Error>) -> HttpResponse {
    match body {
        Ok(text) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("Content-Security-Policy", CSP))
            .insert_header(("X-Frame-Options", "DENY"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(text),
        Err(e) => {
            tracing::error!("template failed: {e}");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The page could not be shown.")
        }
    }
}

pub fn page_error(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    html(status, ErrorPage { title, message }.render())
}

/// Anything no route serves: an OperationOutcome under `/fhir`, a page elsewhere.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    if req.path().starts_with("/fhir") {
        let missing = crate::fhir::FhirError::NotFound(format!("the endpoint {}", req.path()));
        return actix_web::ResponseError::error_response(&super::error::ApiError::Fhir(missing));
    }
    page_error(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is nothing at this address. Check the link, or go back to your record.",
    )
}

/// A form that could not be read (a field missing or malformed): a page, not actix's plain text.
pub fn bad_form(err: actix_web::error::UrlencodedError, _: &actix_web::HttpRequest) -> actix_web::Error {
    let page = page_error(
        StatusCode::BAD_REQUEST,
        "This form could not be read",
        "Go back, fill it in again and send it once more.",
    );
    actix_web::error::InternalError::from_response(err, page).into()
}

/// A domain message (lower case, as errors are written) as a sentence for a page.
pub fn sentence(message: &str) -> String {
    let mut c = message.chars();
    let mut s: String = c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

pub fn see_other(url: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(include_str!("../../static/app.css"))
}

/// The record-file page's upload progress (progressive enhancement: the form works without it).
pub async fn upload_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(include_str!("../../static/upload.js"))
}

/// The tab icon, at the address browsers ask for and the one the pages name.
pub async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(include_str!("../../static/favicon.svg"))
}
