//! The Mooyaho signaling server: the REST API for service servers, the WebSocket API for
//! browsers, sessions and channels, a store (embedded or Redis) and a bus (in-process or Redis).
//!
//! ```text
//! api (axum: REST, WebSocket) → domain (Signaling: rules) → ports: Store, Bus
//!                                   │                        ├─ store: embedded | redis
//!                                   │                        └─ bus:   in-process | redis
//!                                   └─ domain events → delivery (render → socket / bus), metrics,
//!                                                     webhooks (signed POSTs to the backend)
//! ```
//! [`app`] builds the router; `state.rs` is the only place that picks implementations.

#![deny(unsafe_code)]

pub mod api;
pub mod bus;
pub mod delivery;
pub mod domain;
pub mod media_metrics;
pub mod metrics;
pub mod protocol;
pub mod sfu;
pub mod state;
pub mod store;
pub mod turn;
pub mod webhooks;

pub use domain::SignalingConfig;
pub use state::{AppState, RedisOptions};

/// The HTTP application (tests call it with `oneshot` or serve it on a loopback port).
pub fn app(state: AppState) -> axum::Router {
    api::router(state)
}

/// `GET /metrics` alone, without the API key: served on a separate (internal) address for
/// scrapers (`--metrics-listen`).
pub fn metrics_app(state: AppState) -> axum::Router {
    api::metrics_router(state)
}
