//! `/channels` and `/sessions/{id}`: what the customer's service server calls.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, OptionalJsonBody, PathId};
use crate::domain::ids::{ChannelId, IdError, MAX_USER_ID_LEN, SessionId, check_user_id};
use crate::domain::model::ChannelRecord;
use crate::state::AppState;

/// Body of `POST /channels` (may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateChannelRequest {
    /// Route media through an SFU node instead of a mesh.
    #[serde(default)]
    pub sfu_enabled: Option<bool>,
}

/// A channel.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelResponse {
    /// Channel id (UUID).
    pub id: String,
    /// The SFU node hosting it, once placed.
    pub sfu_server_id: Option<u64>,
    /// Media goes through an SFU.
    pub sfu_enabled: bool,
}

/// A channel in a listing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelListItem {
    /// Channel id (UUID).
    pub id: String,
    /// The SFU node hosting it, once placed.
    pub sfu_server_id: Option<u64>,
    /// Media goes through an SFU.
    pub sfu_enabled: bool,
    /// Sessions in the channel.
    pub session_count: usize,
}

/// A member of a channel.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSession {
    /// The member's session id.
    pub session_id: String,
    /// The user integrated with it.
    pub user: Value,
}

/// A channel with its members.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDetailResponse {
    /// Channel id (UUID).
    pub id: String,
    /// The SFU node hosting it, once placed (its first node when it spans several).
    pub sfu_server_id: Option<u64>,
    /// Every SFU node serving its members, the first node first (empty while unplaced): a
    /// channel whose node is full, draining or disabled is served by further nodes too.
    pub sfu_server_ids: Vec<u64>,
    /// Media goes through an SFU.
    pub sfu_enabled: bool,
    /// Live members.
    pub channel_sessions: Vec<ChannelSession>,
}

/// Body of `POST /channels/bulk-delete`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BulkDeleteRequest {
    /// Channel ids to delete (1 to 1000), each matching the channel id pattern (the OpenAPI
    /// document's `items.pattern`, added in `api::openapi_json`).
    #[schema(min_items = 1, max_items = 1000)]
    pub ids: Vec<String>,
}

/// Body of `POST /sessions/{id}`: the user, any JSON object with a non-empty string `id` of at
/// most 256 characters; every other property is kept as given.
#[derive(Debug, ToSchema)]
pub struct UserObject {
    /// The user's id in the customer's service.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^:\u0000-\u001F\u007F-\u009F]{1,256}$"
    )]
    pub id: String,
}

/// Result of `POST /channels/bulk-delete`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkDeleteResponse {
    /// Deleted channels.
    pub deleted: Vec<String>,
    /// Ids that matched no channel.
    pub not_found: Vec<String>,
}

/// Result of `POST /sessions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrateResponse {
    /// The session.
    pub session_id: String,
    /// The user now bound to it.
    pub user: Value,
}

impl From<&ChannelRecord> for ChannelResponse {
    fn from(c: &ChannelRecord) -> Self {
        Self {
            id: c.id.0.clone(),
            sfu_server_id: c.sfu_server_id.map(|id| id.0),
            sfu_enabled: c.sfu_enabled,
        }
    }
}

const MAX_BULK_IDS: usize = 1000;

/// The 400 for an id supplied in a path or body.
fn bad_id(what: &str, e: IdError) -> ApiError {
    ApiError::bad_request(format!("invalid {what}: {e}"))
}

/// Create a channel.
#[utoipa::path(post, path = "/channels", tag = "channels", security(("api_key" = [])),
    request_body(content = Option<CreateChannelRequest>, description = "May be empty or `null`"),
    responses((status = 200, body = ChannelResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_channel(
    State(state): State<AppState>,
    OptionalJsonBody(body): OptionalJsonBody<CreateChannelRequest>,
) -> Result<Json<ChannelResponse>, ApiError> {
    let channel = state
        .signaling
        .channels()
        .create(body.sfu_enabled.unwrap_or(false))
        .await?;
    Ok(Json((&channel).into()))
}

/// List every channel with its session count.
#[utoipa::path(get, path = "/channels", tag = "channels", security(("api_key" = [])),
    responses((status = 200, body = [ChannelListItem]), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_channels(
    State(state): State<AppState>,
) -> Result<Json<Vec<ChannelListItem>>, ApiError> {
    let list = state.signaling.channels().list().await?;
    Ok(Json(
        list.into_iter()
            .map(|s| ChannelListItem {
                id: s.channel.id.0,
                sfu_server_id: s.channel.sfu_server_id.map(|id| id.0),
                sfu_enabled: s.channel.sfu_enabled,
                session_count: s.session_count,
            })
            .collect(),
    ))
}

/// A channel with its sessions.
#[utoipa::path(get, path = "/channels/{id}", tag = "channels", security(("api_key" = [])),
    params(("id" = String, Path, description = "Channel id", pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 200, body = ChannelDetailResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_channel(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ChannelDetailResponse>, ApiError> {
    let id = ChannelId::parse(id).map_err(|e| bad_id("channel id", e))?;
    let detail = state.signaling.channels().detail(&id).await?;
    let channel = ChannelResponse::from(&detail.channel);
    Ok(Json(ChannelDetailResponse {
        id: channel.id,
        sfu_server_id: channel.sfu_server_id,
        sfu_server_ids: detail
            .channel
            .sfu_server_ids()
            .iter()
            .map(|id| id.0)
            .collect(),
        sfu_enabled: channel.sfu_enabled,
        channel_sessions: detail
            .sessions
            .into_iter()
            .map(|(session, user)| ChannelSession {
                session_id: session.0,
                user,
            })
            .collect(),
    }))
}

/// Delete a channel; its members receive `channelClosed`.
#[utoipa::path(delete, path = "/channels/{id}", tag = "channels", security(("api_key" = [])),
    params(("id" = String, Path, description = "Channel id", pattern = "^[A-Za-z0-9._-]{1,128}$")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_channel(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let id = ChannelId::parse(id).map_err(|e| bad_id("channel id", e))?;
    state.signaling.channels().delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete several channels.
#[utoipa::path(post, path = "/channels/bulk-delete", tag = "channels", security(("api_key" = [])),
    request_body = BulkDeleteRequest,
    responses((status = 200, body = BulkDeleteResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn bulk_delete_channels(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BulkDeleteRequest>,
) -> Result<Json<BulkDeleteResponse>, ApiError> {
    if body.ids.is_empty() || body.ids.len() > MAX_BULK_IDS {
        return Err(ApiError::bad_request(format!(
            "`ids` must hold 1 to {MAX_BULK_IDS} channel ids"
        )));
    }
    let ids = body
        .ids
        .into_iter()
        .map(ChannelId::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| bad_id("channel id in `ids`", e))?;
    let outcome = state.signaling.channels().bulk_delete(ids).await?;
    Ok(Json(BulkDeleteResponse {
        deleted: outcome.deleted.into_iter().map(|c| c.0).collect(),
        not_found: outcome.not_found.into_iter().map(|c| c.0).collect(),
    }))
}

/// Bind a user to a live session (integrateUser). Re-integrating replaces the user.
#[utoipa::path(post, path = "/sessions/{id}", tag = "sessions", security(("api_key" = [])),
    params(("id" = String, Path, description = "Session id (from the client's `connected` message)",
        pattern = "^[A-Za-z0-9._-]{1,128}$")),
    request_body(content = UserObject, description = "The user object; must have a non-empty string `id`"),
    responses((status = 200, body = IntegrateResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn integrate_user(
    State(state): State<AppState>,
    PathId(id): PathId,
    JsonBody(user): JsonBody<Value>,
) -> Result<Json<IntegrateResponse>, ApiError> {
    let session = SessionId::parse(id).map_err(|e| bad_id("session id", e))?;
    let user_id = user.get("id").and_then(Value::as_str);
    let (true, Some(user_id)) = (user.is_object(), user_id) else {
        return Err(ApiError::bad_request(format!(
            "the body must be a user object with a non-empty string `id` of at most {MAX_USER_ID_LEN} characters"
        )));
    };
    check_user_id(user_id).map_err(|e| bad_id("user `id`", e))?;
    let user = state.signaling.sessions().bind_user(&session, user).await?;
    Ok(Json(IntegrateResponse {
        session_id: session.0,
        user,
    }))
}
