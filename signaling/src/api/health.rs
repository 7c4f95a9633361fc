//! `/health`, `/metrics` and `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use crate::metrics::SfuNodeSample;
use crate::state::AppState;

/// Health of this instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `degraded` when the shared store does not answer.
    pub status: String,
    /// This signaling instance's id.
    pub instance: String,
    /// WebSocket connections held by this instance.
    pub connections: usize,
}

/// Liveness and store reachability (no authentication).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = HealthResponse), (status = 503, body = HealthResponse)))]
pub async fn health(State(state): State<AppState>) -> Response {
    let healthy = state.signaling.check_store().await.is_ok();
    let body = HealthResponse {
        status: if healthy { "ok" } else { "degraded" }.to_owned(),
        instance: state.signaling.instance().0.clone(),
        connections: state.signaling.connections(),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("api_key" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = 401, body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = state.signaling.metrics();
    // The per-node SFU gauges are refreshed from the fleet's live status at each scrape; when
    // the store does not answer they keep their last values.
    if let Ok(views) = state.signaling.sfu_servers().list().await {
        let samples: Vec<SfuNodeSample> = views
            .iter()
            .map(|view| SfuNodeSample {
                node: view.record.id.0,
                healthy: view.status.as_ref().is_some_and(|s| s.healthy),
                security_drops: view
                    .status
                    .as_ref()
                    .and_then(|s| s.load.as_ref())
                    .map(|load| load.security_drops),
                load: view.status.as_ref().and_then(|s| s.load.clone()),
            })
            .collect();
        metrics.set_sfu_nodes(&samples);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(("api_key" = [])),
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"), (status = 401, body = ErrorBody)))]
pub async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi_json())
}
