//! `POST /tokens`: the service server has this server sign a join token (the server SDKs can
//! also sign offline with the same secret).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use crate::domain::join_token::{JoinClaims, JoinTokenError, MAX_TTL_SECS, now_secs};
use crate::state::AppState;

/// Lifetime of a token when the request names none, seconds.
pub const DEFAULT_TTL_SECS: u64 = 3600;

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The user's id (the token's `sub`): 1 to 256 characters, no `:` or control characters.
    #[serde(alias = "sub")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^:\u0000-\u001F\u007F-\u009F]{1,256}$"
    )]
    pub user_id: String,
    /// The user's display name (at most 256 characters, no control characters).
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]{0,256}$")]
    pub name: Option<String>,
    /// The one channel the token admits to (a channel id).
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub channel: String,
    /// May publish media (default true).
    #[serde(default)]
    pub publish: Option<bool>,
    /// May receive media (default true).
    #[serde(default)]
    pub subscribe: Option<bool>,
    /// Lifetime, seconds: 1 to 86400 (default 3600).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 86400)]
    pub ttl_seconds: Option<u64>,
}

/// A JSON Schema `integer`: `148` and `148.0` alike (a number with no fractional part), never
/// `1.5` or a negative.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not a whole number of seconds"
        ))),
    }
}

/// A signed join token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateTokenResponse {
    /// The JWT (HS256), for `GET /websocket?token=`.
    pub token: String,
    /// When it expires, seconds since the Unix epoch (its `exp`).
    pub expires_at: u64,
}

/// Sign a join token that admits one user to one channel with the given grants.
#[utoipa::path(post, path = "/tokens", tag = "tokens", security(("api_key" = [])),
    request_body = CreateTokenRequest,
    responses((status = 200, body = CreateTokenResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateTokenRequest>,
) -> Result<Json<CreateTokenResponse>, ApiError> {
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "`ttlSeconds` must be 1 to {MAX_TTL_SECS}"
        )));
    }
    let now = now_secs();
    let claims = JoinClaims {
        sub: body.user_id,
        name: body.name,
        channel: body.channel,
        publish: body.publish.unwrap_or(true),
        subscribe: body.subscribe.unwrap_or(true),
        exp: now + ttl,
        nbf: None,
        iat: Some(now),
    };
    let token = state
        .signaling
        .sessions()
        .sign_join_token(&claims)
        .map_err(|e| match e {
            JoinTokenError::Claim(message) => ApiError::bad_request(message),
            other => ApiError::bad_request(other.to_string()),
        })?;
    Ok(Json(CreateTokenResponse {
        token,
        expires_at: claims.exp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(body: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<CreateTokenRequest>(body)
            .map(|r| r.ttl_seconds)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ttl_seconds_is_any_json_integer_and_nothing_else() {
        let body = |ttl: &str| format!(r#"{{"userId":"u","channel":"c","ttlSeconds":{ttl}}}"#);
        assert_eq!(ttl(&body("148")), Ok(Some(148)));
        assert_eq!(ttl(&body("148.0")), Ok(Some(148)), "JSON Schema's integer");
        assert_eq!(ttl(&body("null")), Ok(None));
        assert_eq!(ttl(r#"{"userId":"u","channel":"c"}"#), Ok(None));
        for bad in ["1.5", "-3", "\"60\"", "1e400"] {
            assert!(ttl(&body(bad)).is_err(), "{bad}");
        }
    }
}
