//! Bearer API-key check for the service-server REST API, in constant time.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::state::AppState;

/// Middleware: lets the request through only with `Authorization: Bearer <API key>`.
pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.signaling.config().api_key.as_bytes();
    // An empty configured key never authorizes anything (the original engine let everyone in).
    let ok: bool = presented.as_bytes().ct_eq(expected).into();
    if !ok || expected.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "API key is missing or invalid",
        ));
    }
    Ok(next.run(request).await)
}
