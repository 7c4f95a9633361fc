//! The HTTP edge: REST for service servers, the WebSocket for browsers. Handlers parse, call the
//! domain and shape the response; they decide no rule.

pub mod auth;
pub mod channels;
pub mod error;
pub mod extract;
pub mod fuzzing;
pub mod health;
pub mod sfu_servers;
pub mod tokens;
pub mod web;
pub mod whip_whep;
pub mod ws;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post};
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
        tokens::create_token, health::health, health::metrics, health::openapi,
    ),
    modifiers(&BearerAuth, &Links)
)]
pub struct ApiDoc;

/// OpenAPI links from the operations that create (or list) a resource to the ones that take its
/// id, so stateful clients (schemathesis) reach `/channels/{id}` and `/sfu-servers/{id}`.
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        const CHANNEL: &[&str] = &["get_channel", "delete_channel"];
        const SFU: &[&str] = &[
            "get_sfu_server",
            "patch_sfu_server",
            "drain_sfu_server",
            "delete_sfu_server",
        ];
        let paths = &mut openapi.paths.paths;
        if let Some(item) = paths.get_mut("/channels") {
            add_links(item.post.as_mut(), CHANNEL, "$response.body#/id");
            add_links(item.get.as_mut(), CHANNEL, "$response.body#/0/id");
        }
        if let Some(item) = paths.get_mut("/sfu-servers") {
            add_links(item.post.as_mut(), SFU, "$response.body#/id");
            add_links(item.get.as_mut(), SFU, "$response.body#/0/id");
        }
    }
}

/// The OpenAPI document as served: [`ApiDoc`] with its link objects' keys in the camelCase of the
/// specification (utoipa 5 serializes them as `operation_id`/`operation_ref`/`request_body`).
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    // utoipa has no attribute for the pattern of a `Vec<String>`'s items.
    if let Some(items) = doc
        .pointer_mut("/components/schemas/BulkDeleteRequest/properties/ids/items")
        .and_then(serde_json::Value::as_object_mut)
    {
        items.insert(
            "pattern".to_owned(),
            crate::domain::ids::KEY_ID_PATTERN.into(),
        );
    }
    let paths = doc
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut);
    for item in paths.into_iter().flat_map(|p| p.values_mut()) {
        let operations = item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut());
        for operation in operations {
            let responses = operation
                .get_mut("responses")
                .and_then(serde_json::Value::as_object_mut);
            for response in responses.into_iter().flat_map(|r| r.values_mut()) {
                let links = response
                    .get_mut("links")
                    .and_then(serde_json::Value::as_object_mut);
                for link in links.into_iter().flat_map(|l| l.values_mut()) {
                    let Some(link) = link.as_object_mut() else {
                        continue;
                    };
                    for (snake, camel) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(value) = link.remove(snake) {
                            link.insert(camel.to_owned(), value);
                        }
                    }
                }
            }
        }
    }
    doc
}

/// Adds to `operation`'s 200 response a link to each of `targets` with `id` taken from `id`.
fn add_links(operation: Option<&mut utoipa::openapi::path::Operation>, targets: &[&str], id: &str) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;
    let Some(operation) = operation else { return };
    let Some(RefOr::T(response)) = operation.responses.responses.get_mut("200") else {
        return;
    };
    for target in targets {
        let link = LinkBuilder::new()
            .operation_id(*target)
            .parameter("id", id)
            .build();
        response.links.insert((*target).to_owned(), RefOr::T(link));
    }
}

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
/// `GET /metrics` without authentication, for a listener only scrapers reach; anything else is
/// 404.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

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
        .route("/tokens", post(tokens::create_token))
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
        .route(
            "/whip/{channel}",
            post(whip_whep::whip_post).options(whip_whep::endpoint_options),
        )
        .route(
            "/whip/{channel}/{id}",
            patch(whip_whep::whip_patch)
                .delete(whip_whep::whip_delete)
                .options(whip_whep::resource_options),
        )
        .route(
            "/whep/{channel}",
            post(whip_whep::whep_post).options(whip_whep::endpoint_options),
        )
        .route(
            "/whep/{channel}/{id}",
            patch(whip_whep::whep_patch)
                .delete(whip_whep::whep_delete)
                .options(whip_whep::resource_options),
        )
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
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
            ])
            // What a browser WHIP/WHEP client reads from a 201 (RFC 9725 §4.2).
            .expose_headers([
                header::LOCATION,
                header::ETAG,
                header::LINK,
                header::HeaderName::from_static("accept-patch"),
            ]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_patterns_are_the_validators_patterns() {
        let doc = openapi_json();
        for schema in ["CreateSfuServerRequest", "PatchSfuServerRequest"] {
            let properties = &doc["components"]["schemas"][schema]["properties"];
            assert_eq!(
                properties["address"]["pattern"],
                crate::domain::ADDRESS_PATTERN,
                "{schema}"
            );
            assert_eq!(
                properties["fingerprint"]["pattern"],
                crate::domain::FINGERPRINT_PATTERN,
                "{schema}"
            );
        }
    }

    #[test]
    fn published_id_patterns_are_the_validators_patterns() {
        use crate::domain::ids::{KEY_ID_PATTERN, USER_ID_PATTERN};
        let doc = openapi_json();
        for (path, method) in [
            ("/channels/{id}", "get"),
            ("/channels/{id}", "delete"),
            ("/sessions/{id}", "post"),
        ] {
            let schema = &doc["paths"][path][method]["parameters"][0]["schema"];
            assert_eq!(schema["pattern"], KEY_ID_PATTERN, "{method} {path}");
        }
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["BulkDeleteRequest"]["properties"]["ids"]["items"]["pattern"],
            KEY_ID_PATTERN
        );
        assert_eq!(
            schemas["UserObject"]["properties"]["id"]["pattern"],
            USER_ID_PATTERN
        );
    }

    #[test]
    fn links_use_the_specifications_keys() {
        let doc = openapi_json();
        let links = &doc["paths"]["/sfu-servers"]["post"]["responses"]["200"]["links"];
        let link = &links["get_sfu_server"];
        assert_eq!(link["operationId"], "get_sfu_server");
        assert_eq!(link["parameters"]["id"], "$response.body#/id");
        assert!(link.get("operation_id").is_none());
        let channel = &doc["paths"]["/channels"]["post"]["responses"]["200"]["links"];
        assert_eq!(channel["get_channel"]["operationId"], "get_channel");
    }
}
