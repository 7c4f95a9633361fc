//! WHIP (RFC 9725) and WHEP over HTTP: `POST /whip/{channel}` and `POST /whep/{channel}` with an
//! SDP offer and `Authorization: Bearer <join token>` create a session resource
//! (`/whip/{channel}/{id}`), answered `201 Created` with `Location`, `ETag` and the SDP answer;
//! `PATCH` takes trickle-ICE fragments, `DELETE` ends it; `OPTIONS` names the methods (CORS
//! preflights are answered by the CORS layer when `--cors-origin` allows the origin).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use serde::Deserialize;

use super::error::ApiError;
use crate::domain::HttpMediaKind;
use crate::domain::ids::{ChannelId, SessionId};
use crate::state::AppState;

/// The media type of SDP offers and answers.
const SDP: &str = "application/sdp";
/// The media type of trickle-ICE fragments (RFC 8840).
const SDP_FRAGMENT: &str = "application/trickle-ice-sdpfrag";

/// `POST /whip/{channel}`.
pub async fn whip_post(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let channel = channel_id(channel)?;
    let offer = sdp_offer(&headers, &body)?;
    let token = bearer(&headers);
    let created = state
        .signaling
        .http_media()
        .publish(token, channel.clone(), offer)
        .await?;
    Ok(created_response(HttpMediaKind::Whip, &channel, created))
}

/// `?publisher=` of `POST /whep/{channel}`.
#[derive(Debug, Default, Deserialize)]
pub struct WhepQuery {
    /// View only this session's media.
    pub publisher: Option<String>,
}

/// `POST /whep/{channel}`.
pub async fn whep_post(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    query: Result<Query<WhepQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let channel = channel_id(channel)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let publisher = query
        .publisher
        .map(SessionId::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("invalid `publisher` session id: {e}")))?;
    let offer = sdp_offer(&headers, &body)?;
    let token = bearer(&headers);
    let created = state
        .signaling
        .http_media()
        .view(token, channel.clone(), publisher, offer)
        .await?;
    Ok(created_response(HttpMediaKind::Whep, &channel, created))
}

/// `DELETE /whep/{channel}/{id}`.
pub async fn whep_delete(
    state: State<AppState>,
    path: Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete(HttpMediaKind::Whep, state, path).await
}

/// `PATCH /whep/{channel}/{id}`.
pub async fn whep_patch(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    patch(HttpMediaKind::Whep, state, path, headers, body)
}

/// `OPTIONS /whip/{channel}` and `/whep/{channel}`.
pub async fn endpoint_options() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
    headers.insert("accept-post", HeaderValue::from_static(SDP));
    response
}

/// `OPTIONS` of a session resource.
pub async fn resource_options() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, PATCH, DELETE"),
    );
    headers.insert("accept-patch", HeaderValue::from_static(SDP_FRAGMENT));
    response
}

/// `DELETE /whip/{channel}/{id}`.
pub async fn whip_delete(
    state: State<AppState>,
    path: Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete(HttpMediaKind::Whip, state, path).await
}

/// `PATCH /whip/{channel}/{id}`.
pub async fn whip_patch(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    patch(HttpMediaKind::Whip, state, path, headers, body)
}

async fn delete(
    kind: HttpMediaKind,
    State(state): State<AppState>,
    Path((channel, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let channel = channel_id(channel)?;
    state
        .signaling
        .http_media()
        .delete(kind, &channel, &id)
        .await?;
    Ok(StatusCode::OK)
}

fn patch(
    kind: HttpMediaKind,
    State(state): State<AppState>,
    Path((channel, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let channel = channel_id(channel)?;
    require_content_type(&headers, SDP_FRAGMENT)?;
    let fragment = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the trickle-ICE fragment is not UTF-8 text"))?;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    state
        .signaling
        .http_media()
        .trickle(kind, &channel, &id, if_match, fragment)?;
    Ok(StatusCode::NO_CONTENT)
}

fn channel_id(channel: String) -> Result<ChannelId, ApiError> {
    ChannelId::parse(channel).map_err(|e| ApiError::bad_request(format!("invalid channel id: {e}")))
}

/// The bearer token of `Authorization`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// 415 unless the request's media type is `expected` (parameters and case aside).
fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = given.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("the body must be `Content-Type: {expected}`, not `{given}`"),
    ))
}

/// The body as an SDP offer: `application/sdp`, UTF-8, starting with `v=0`. Whether it is a
/// usable offer is the node's to say (its reason comes back as a 400).
fn sdp_offer(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    require_content_type(headers, SDP)?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the SDP offer is not UTF-8 text"))?;
    if !text.trim_start().starts_with("v=0") {
        return Err(ApiError::bad_request(
            "the body is not an SDP offer (it must start with `v=0`)",
        ));
    }
    Ok(text.to_owned())
}

fn created_response(
    kind: HttpMediaKind,
    channel: &ChannelId,
    created: crate::domain::CreatedResource,
) -> Response {
    let location = format!("/{}/{}/{}", kind.as_str(), channel.as_str(), created.id);
    let mut response = (StatusCode::CREATED, created.answer).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    let values = [
        (header::LOCATION, location),
        (header::ETAG, created.etag),
        (
            header::HeaderName::from_static("accept-patch"),
            SDP_FRAGMENT.to_owned(),
        ),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    // RFC 9725 §4.6: the TURN servers (with this session's credentials) as `Link` headers.
    for server in created.ice_servers {
        for url in server.urls {
            let link = format!(
                "<{url}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                server.username, server.credential
            );
            if let Ok(value) = HeaderValue::from_str(&link) {
                headers.append(header::LINK, value);
            }
        }
    }
    response
}
