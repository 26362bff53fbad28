//! Errors at the HTTP edge, rendered as FHIR OperationOutcome. Internal details go to the log.

use crate::auth::AuthError;
use crate::fhir::{bundle::outcome, status_of, FhirError};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Fhir(#[from] FhirError),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("{0}")]
    Internal(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidToken(m) => ApiError::Unauthorized(m.to_string()),
            AuthError::Invalid(m) => ApiError::Fhir(FhirError::Invalid(m)),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        ApiError::Internal("the worker pool is shutting down".into())
    }
}

impl ApiError {
    fn parts(&self) -> (u16, &'static str, String) {
        match self {
            ApiError::Fhir(e @ (FhirError::Db(_) | FhirError::Internal(_))) => {
                tracing::error!("internal error: {e}");
                (500, "exception", "the server could not complete the request; it has been logged".into())
            }
            ApiError::Fhir(e) => {
                let (s, c) = status_of(e);
                (s, c, e.to_string())
            }
            ApiError::Unauthorized(m) => (401, "login", m.clone()),
            ApiError::NotAcceptable(m) => (406, "not-supported", m.clone()),
            ApiError::UnsupportedMedia(m) => (415, "not-supported", m.clone()),
            ApiError::Internal(m) => {
                tracing::error!("internal error: {m}");
                (500, "exception", "the server could not complete the request; it has been logged".into())
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.parts().0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, msg) = self.parts();
        let mut r = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        r.insert_header((header::CONTENT_TYPE, super::FHIR_JSON));
        if status == 401 {
            r.insert_header((
                header::WWW_AUTHENTICATE,
                format!(
                    "Bearer realm=\"healthfolio\", error=\"invalid_token\", error_description=\"{}\"",
                    msg.replace('"', "'")
                ),
            ));
        }
        r.body(outcome("error", code, &msg).to_string())
    }
}
