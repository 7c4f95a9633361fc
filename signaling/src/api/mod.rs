//! The HTTP edge: REST for service servers, the WebSocket for browsers. Handlers parse, call the
//! domain and shape the response; they decide no rule.

pub mod auth;
pub mod channels;
pub mod error;
pub mod extract;
pub mod health;
pub mod sfu_servers;
pub mod web;
pub mod ws;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::cors::CorsLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;
use error::ApiError;

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Mooyaho REST API", description = "Service-server API of the Mooyaho signaling server. Every route but /health needs `Authorization: Bearer <API key>`."),
    paths(
        channels::create_channel, channels::list_channels, channels::get_channel,
        channels::delete_channel, channels::bulk_delete_channels, channels::integrate_user,
        sfu_servers::create_sfu_server, sfu_servers::list_sfu_servers, sfu_servers::get_sfu_server,
        sfu_servers::patch_sfu_server, sfu_servers::drain_sfu_server, sfu_servers::delete_sfu_server,
        health::health, health::metrics, health::openapi,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route of the signaling server.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route(
            "/channels",
            get(channels::list_channels).post(channels::create_channel),
        )
        .route(
            "/channels/bulk-delete",
            post(channels::bulk_delete_channels),
        )
        .route(
            "/channels/{id}",
            get(channels::get_channel).delete(channels::delete_channel),
        )
        .route("/sessions/{id}", post(channels::integrate_user))
        .route(
            "/sfu-servers",
            get(sfu_servers::list_sfu_servers).post(sfu_servers::create_sfu_server),
        )
        .route(
            "/sfu-servers/{id}",
            get(sfu_servers::get_sfu_server)
                .patch(sfu_servers::patch_sfu_server)
                .delete(sfu_servers::delete_sfu_server),
        )
        .route(
            "/sfu-servers/{id}/drain",
            post(sfu_servers::drain_sfu_server),
        )
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let cors = cors_layer(&state.signaling.config().cors_origins);
    let body_limit = state.signaling.config().max_body_bytes;
    let router = Router::new()
        .merge(protected)
        .route("/health", get(health::health))
        .route("/websocket", get(ws::upgrade))
        .merge(web::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

async fn count_responses(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state
        .signaling
        .metrics()
        .http_response(response.status().as_u16());
    response
}

/// CORS only for explicitly configured origins (the original allowed `*`).
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
            ]),
    )
}
