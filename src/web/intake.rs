//! What every request must satisfy before a handler sees it: no NUL in the text it carries as
//! URL encoding (path, query, headers, form bodies), and a body that keeps arriving. Refused here
//! once, in the answer the path speaks (OperationOutcome, OAuth JSON or a page), so no handler
//! needs to think of it.

use super::pages::{page_error, sentence};
use crate::fhir::bundle::outcome;
use crate::fhir::validate::{encodes_nul, NUL_REFUSED};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpResponse};
use futures_util::StreamExt;
use std::time::Duration;

type BoxedPayloadStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<web::Bytes, PayloadError>>>>;

pub async fn intake(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    // Cookies are percent-decoded by actix, and If-None-Exist is a query: headers count as text.
    let uri = req.uri();
    if encodes_nul(uri.path().as_bytes())
        || uri.query().is_some_and(|q| encodes_nul(q.as_bytes()))
        || req.headers().iter().any(|(_, v)| encodes_nul(v.as_bytes()))
    {
        return Ok(refuse(req, StatusCode::BAD_REQUEST, "invalid", NUL_REFUSED));
    }
    let config =
        req.app_data::<web::Data<super::AppState>>().map(|s| (s.hf.config.body_limit, s.hf.config.body_timeout_secs));
    let (limit, idle_secs) = config.unwrap_or((usize::MAX, 10));
    if has_body(&req) {
        let payload = req.take_payload();
        req.set_payload(keeps_arriving(payload, Duration::from_secs(idle_secs)));
    }
    if is_form(&req) {
        match read_all(&mut req, limit).await {
            Ok(body) if encodes_nul(&body) => return Ok(refuse(req, StatusCode::BAD_REQUEST, "invalid", NUL_REFUSED)),
            Ok(body) => req.set_payload(body.into()),
            Err(Refused(status, code, why)) => return Ok(refuse(req, status, code, &why)),
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

/// actix bounds the wait for a request's head, not for its body: a body cut short (fewer bytes
/// than its Content-Length) would hold the request open for good. Every reader (JSON, forms,
/// uploads) gets a read error instead once no byte has come for `idle`, and answers 400. A pause,
/// not a total: a large upload over a slow line is not cut off while it moves.
fn keeps_arriving(payload: Payload, idle: Duration) -> Payload {
    let stream = futures_util::stream::unfold(Some(payload), move |state| async move {
        let mut payload = state?;
        match actix_web::rt::time::timeout(idle, payload.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(payload))),
            Ok(None) => None,
            Err(_) => {
                let why = format!("no part of the body arrived for {} s: it was cut short", idle.as_secs());
                Some((Err(PayloadError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, why))), None))
            }
        }
    });
    // Readers may poll again after the end (multipart does): fused, the end stays the end.
    Payload::from(Box::pin(stream.fuse()) as BoxedPayloadStream)
}

/// Whether a body may follow the head: in HTTP/1.x only with a length or a transfer coding, and
/// most requests (reads, searches) carry none, so need no watch on it; HTTP/2 says so in frames.
fn has_body(req: &ServiceRequest) -> bool {
    let h = req.headers();
    if req.version() >= actix_web::http::Version::HTTP_2 || h.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    match h.get(header::CONTENT_LENGTH) {
        Some(v) => v.to_str().map_or(true, |v| v.trim() != "0"),
        None => false,
    }
}

/// URL-encoded form bodies are small (the form extractors allow 16 KiB): read whole, checked,
/// and handed on.
fn is_form(req: &ServiceRequest) -> bool {
    req.content_type().eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

struct Refused(StatusCode, &'static str, String);

async fn read_all(req: &mut ServiceRequest, limit: usize) -> Result<web::Bytes, Refused> {
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Refused(StatusCode::BAD_REQUEST, "invalid", format!("the request body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                format!("the request body is larger than the limit of {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The refusal in the language of the path: the FHIR API, OAuth's machine endpoints, or a page.
fn refuse(req: ServiceRequest, status: StatusCode, code: &str, message: &str) -> ServiceResponse<BoxBody> {
    let path = req.path();
    let response = if path.starts_with("/fhir") {
        HttpResponse::build(status).content_type(super::FHIR_JSON).body(outcome("error", code, message).to_string())
    } else if ["/oauth/token", "/oauth/introspect", "/oauth/revoke", "/oauth/register"].contains(&path) {
        HttpResponse::build(status)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({"error": "invalid_request", "error_description": message}))
    } else {
        page_error(status, "This request could not be read", &sentence(message))
    };
    req.into_response(response)
}
