//! The one place where failures become HTTP responses: `{"statusCode","error","message"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::error::ErrorCode;
use crate::domain::ports::StoreError;
use crate::domain::{DomainError, HttpMediaError};

/// A failed REST request.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

/// The JSON body of every REST error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The HTTP status code.
    pub status_code: u16,
    /// The status's reason phrase.
    pub error: String,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(message) => Self::not_found(message),
            DomainError::Invalid(message) => Self::bad_request(message),
            DomainError::Conflict(message) => Self::new(StatusCode::CONFLICT, message),
            DomainError::Store(e) => e.into(),
        }
    }
}

impl From<HttpMediaError> for ApiError {
    fn from(e: HttpMediaError) -> Self {
        let e = match e {
            HttpMediaError::Store(store) => return store.into(),
            other => other,
        };
        let status = match &e {
            HttpMediaError::MissingToken | HttpMediaError::Token(_) => StatusCode::UNAUTHORIZED,
            HttpMediaError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpMediaError::ChannelNotFound | HttpMediaError::UnknownResource(_) => {
                StatusCode::NOT_FOUND
            }
            HttpMediaError::NotSfu => StatusCode::CONFLICT,
            HttpMediaError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            HttpMediaError::EtagMismatch => StatusCode::PRECONDITION_FAILED,
            HttpMediaError::IceRestart => StatusCode::UNPROCESSABLE_ENTITY,
            HttpMediaError::TooManyPending(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpMediaError::EndedWhileOpening(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpMediaError::Refused(refusal) => match refusal.code {
                ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                ErrorCode::ChannelNotFound | ErrorCode::SessionNotFound => StatusCode::NOT_FOUND,
                ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::SfuUnavailable | ErrorCode::SfuFull | ErrorCode::Unavailable => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::BAD_REQUEST,
            },
            HttpMediaError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // Internals are logged, never returned.
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shared state is unavailable; retry later",
                )
            }
            other => {
                tracing::error!(error = %other, "store failure");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            status_code: self.status.as_u16(),
            error: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}
