//! Request extractors: the bearer token becomes an [`AccessContext`]; bodies are read with a limit.

use super::error::ApiError;
use super::AppState;
use crate::access::AccessContext;
use crate::fhir::validate::{holds_nul, NUL_REFUSED};
use crate::fhir::FhirError;
use actix_web::dev::Payload;
use actix_web::{http::header, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;

/// The caller, from a valid `Authorization: Bearer` token.
pub struct Caller(pub AccessContext);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("application state missing".into()))?;
            bearer(&state, auth).await.map(Caller)
        })
    }
}

/// The caller behind an `Authorization: Bearer` header: signature, audience, expiry, revocation
/// and the patient's grant, checked now.
pub async fn bearer(state: &web::Data<AppState>, auth: Option<String>) -> Result<AccessContext, ApiError> {
    let auth = auth.ok_or_else(|| {
        ApiError::Unauthorized("this API needs an access token: Authorization: Bearer <token>".into())
    })?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::Unauthorized("the Authorization header must use the Bearer scheme".into()))?
        .trim()
        .to_string();
    let hf = state.hf.clone();
    let ctx = web::block(move || {
        let claims = hf.keys.verify(&token, &hf.endpoints())?;
        let mut conn = hf.db.conn()?;
        crate::auth::live::check(&mut conn, claims)
    })
    .await??;
    Ok(ctx)
}

/// A JSON request body, refused with 400 when it is not JSON or holds a NUL anywhere (see
/// [`NUL_REFUSED`]): nothing below ever sees one.
pub fn json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let v = serde_json::from_slice(body).map_err(|e| FhirError::invalid(format!("the body is not valid JSON: {e}")))?;
    nul_free(&v)?;
    Ok(v)
}

pub fn nul_free(v: &serde_json::Value) -> Result<(), ApiError> {
    if holds_nul(v) {
        return Err(FhirError::invalid(format!("the body: {NUL_REFUSED}")).into());
    }
    Ok(())
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| FhirError::invalid(format!("the request body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(
                FhirError::TooLarge(format!("the request body is larger than the limit of {limit} bytes")).into()
            );
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
