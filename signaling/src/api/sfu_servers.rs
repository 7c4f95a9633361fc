//! `/sfu-servers`: the SFU fleet registry.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, PathId};
use crate::domain::ids::SfuServerId;
use crate::domain::{SfuServerPatch, SfuServerView};
use crate::state::AppState;

/// Body of `POST /sfu-servers`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSfuServerRequest {
    /// The node's QUIC control address, `host:port` (IPv6 hosts in brackets).
    #[schema(
        pattern = r"^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._-]{1,253}):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$",
        example = "127.0.0.1:4433"
    )]
    pub address: String,
    /// SHA-256 fingerprint of the node's certificate (printed by `mooyaho sfu`).
    #[serde(default)]
    #[schema(
        pattern = r"^((sha|SHA)-256 )?([0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31})$"
    )]
    pub fingerprint: Option<String>,
}

/// Body of `PATCH /sfu-servers/{id}`; absent fields are unchanged.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PatchSfuServerRequest {
    /// New control address.
    #[serde(default)]
    #[schema(
        pattern = r"^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._-]{1,253}):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$",
        example = "127.0.0.1:4433"
    )]
    pub address: Option<String>,
    /// New certificate fingerprint.
    #[serde(default)]
    #[schema(
        pattern = r"^((sha|SHA)-256 )?([0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31})$"
    )]
    pub fingerprint: Option<String>,
    /// Exclude the node from new placements.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// Draining: no new rooms; existing ones finish.
    #[serde(default)]
    pub draining: Option<bool>,
}

/// Query of `DELETE /sfu-servers/{id}`.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteQuery {
    /// Delete even while channels are placed on the node (they are re-placed on next join).
    #[serde(default)]
    pub force: Option<bool>,
}

/// A registered SFU node with its load.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfuServerResponse {
    /// Node id.
    pub id: u64,
    /// QUIC control address.
    pub address: String,
    /// Pinned certificate fingerprint.
    pub fingerprint: Option<String>,
    /// Excluded from new placements.
    pub disabled: bool,
    /// No new rooms: placement skips it, the node refuses them, and its channels move to other
    /// nodes (`POST /sfu-servers/{id}/drain`).
    pub draining: bool,
    /// Draining and hosting no channel any more: `DELETE` succeeds without `force`.
    pub drained: bool,
    /// `healthy` (connected and reporting load), `unhealthy` (no load report for 3 s),
    /// `unreachable` (no control connection), or `unknown` (this instance has no cluster secret).
    pub health: String,
    /// Why the last control connection attempt failed, if it did.
    pub last_error: Option<String>,
    /// The node's last load report.
    pub load: Option<NodeLoad>,
    /// Channels the node serves (as their first node, or as a further node of a channel
    /// spanning several).
    pub rooms: usize,
    /// Members it serves in those channels.
    pub sessions: usize,
}

/// A node's live load, as last reported over the control connection.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeLoad {
    /// Rooms hosted.
    pub rooms: u64,
    /// Sessions with a transport.
    pub sessions: u64,
    /// Transports.
    pub transports: u64,
    /// Published tracks.
    pub tracks: u64,
    /// Subscriptions (a track forwarded to one subscriber).
    pub subscriptions: u64,
    /// Datagrams received per second.
    pub packets_in_per_sec: u64,
    /// Datagrams sent per second.
    pub packets_out_per_sec: u64,
    /// CPU use, percent of one core.
    pub cpu_percent: u64,
    /// Packets dropped by the security layer since the node started.
    pub security_drops: u64,
    /// Control connections the node refused since it started because too many were waiting to
    /// authenticate.
    pub control_over_capacity: u64,
    /// Control connections the node closed since it started for sending no hello in time.
    pub control_hello_timeouts: u64,
    /// Control connections the node refused since it started for a bad hello (malformed,
    /// oversized, another protocol version, or a wrong proof of the cluster secret).
    pub control_bad_hellos: u64,
    /// The node's cap of client transports (`mooyaho sfu --max-transports`; 0 = no cap).
    pub max_transports: u64,
    /// Client transports it holds against that cap; at the cap it takes no new member
    /// (placement serves them from other nodes).
    pub admitted_transports: u64,
    /// Relay links sending a publisher's tracks from this node to another node serving the
    /// same channel (one per publisher and receiving node).
    pub relay_links_out: u64,
    /// Relay links feeding this node another node's publisher's tracks.
    pub relay_links_in: u64,
}

impl From<SfuServerView> for SfuServerResponse {
    fn from(view: SfuServerView) -> Self {
        let health = match &view.status {
            None => "unknown",
            Some(s) if s.healthy => "healthy",
            Some(s) if s.connected => "unhealthy",
            Some(_) => "unreachable",
        };
        let load = view
            .status
            .as_ref()
            .and_then(|s| s.load.as_ref())
            .map(|l| NodeLoad {
                rooms: l.rooms,
                sessions: l.sessions,
                transports: l.transports,
                tracks: l.tracks,
                subscriptions: l.subscriptions,
                packets_in_per_sec: l.packets_in_per_sec,
                packets_out_per_sec: l.packets_out_per_sec,
                cpu_percent: l.cpu_percent,
                security_drops: l.security_drops,
                control_over_capacity: l.control_over_capacity,
                control_hello_timeouts: l.control_hello_timeouts,
                control_bad_hellos: l.control_bad_hellos,
                max_transports: l.max_transports,
                admitted_transports: l.admitted_transports,
                relay_links_out: l.relay_links_out,
                relay_links_in: l.relay_links_in,
            });
        Self {
            drained: view.drained(),
            last_error: view.status.as_ref().and_then(|s| s.last_error.clone()),
            load,
            id: view.record.id.0,
            address: view.record.address,
            fingerprint: view.record.fingerprint,
            disabled: view.record.disabled,
            draining: view.record.draining,
            health: health.to_owned(),
            rooms: view.rooms,
            sessions: view.sessions,
        }
    }
}

fn parse_id(id: &str) -> Result<SfuServerId, ApiError> {
    id.parse()
        .map(SfuServerId)
        .map_err(|_| ApiError::not_found("SFU server is not found"))
}

/// Register an SFU node (idempotent per address: a node registering again gets its record, which
/// pins the fingerprint it registers with; unpinning that way is a 409).
#[utoipa::path(post, path = "/sfu-servers", tag = "sfu-servers", security(("api_key" = [])),
    request_body = CreateSfuServerRequest,
    responses((status = 200, body = SfuServerResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_sfu_server(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateSfuServerRequest>,
) -> Result<Json<SfuServerResponse>, ApiError> {
    let view = state
        .signaling
        .sfu_servers()
        .register(body.address, body.fingerprint)
        .await?;
    Ok(Json(view.into()))
}

/// List SFU nodes, least loaded first.
#[utoipa::path(get, path = "/sfu-servers", tag = "sfu-servers", security(("api_key" = [])),
    responses((status = 200, body = [SfuServerResponse]), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_sfu_servers(
    State(state): State<AppState>,
) -> Result<Json<Vec<SfuServerResponse>>, ApiError> {
    let views = state.signaling.sfu_servers().list().await?;
    Ok(Json(views.into_iter().map(Into::into).collect()))
}

/// One SFU node.
#[utoipa::path(get, path = "/sfu-servers/{id}", tag = "sfu-servers", security(("api_key" = [])),
    params(("id" = String, Path, description = "Node id")),
    responses((status = 200, body = SfuServerResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_sfu_server(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<SfuServerResponse>, ApiError> {
    let view = state.signaling.sfu_servers().get(parse_id(&id)?).await?;
    Ok(Json(view.into()))
}

/// Change a node (address, fingerprint, disabled, draining).
#[utoipa::path(patch, path = "/sfu-servers/{id}", tag = "sfu-servers", security(("api_key" = [])),
    params(("id" = String, Path, description = "Node id")),
    request_body = PatchSfuServerRequest,
    responses((status = 200, body = SfuServerResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn patch_sfu_server(
    State(state): State<AppState>,
    PathId(id): PathId,
    JsonBody(body): JsonBody<PatchSfuServerRequest>,
) -> Result<Json<SfuServerResponse>, ApiError> {
    let patch = SfuServerPatch {
        address: body.address,
        fingerprint: body.fingerprint,
        disabled: body.disabled,
        draining: body.draining,
    };
    let view = state
        .signaling
        .sfu_servers()
        .update(parse_id(&id)?, patch)
        .await?;
    Ok(Json(view.into()))
}

/// Drain a node: no new rooms are placed on it (the node refuses them too), and its channels move
/// to other nodes a few at a time (members get `sfuRestart`); `drained` once it hosts none. 409
/// while it hosts channels that no other healthy, enabled, non-draining node could take.
#[utoipa::path(post, path = "/sfu-servers/{id}/drain", tag = "sfu-servers", security(("api_key" = [])),
    params(("id" = String, Path, description = "Node id")),
    responses((status = 200, body = SfuServerResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn drain_sfu_server(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<SfuServerResponse>, ApiError> {
    let view = state.signaling.sfu_servers().drain(parse_id(&id)?).await?;
    Ok(Json(view.into()))
}

/// Remove a node. 409 while channels are placed on it, unless `force=true`.
#[utoipa::path(delete, path = "/sfu-servers/{id}", tag = "sfu-servers", security(("api_key" = [])),
    params(("id" = String, Path, description = "Node id"),
        ("force" = Option<bool>, Query, description = "Delete even while channels are placed on the node")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_sfu_server(
    State(state): State<AppState>,
    PathId(id): PathId,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    state
        .signaling
        .sfu_servers()
        .delete(parse_id(&id)?, query.force.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
