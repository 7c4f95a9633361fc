//! The browser-facing static files: the client SDK bundle at `/sdk/mooyaho.js` and the demo page
//! at `/` (assets under `/demo/`). They are compiled into the binary so `mooyaho dev` needs no
//! node toolchain or file layout at run time; the bundle is built by `sdk/js` and committed.
//! No API key: these are public files, and the demo holds no secret.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

const SDK_BUNDLE: &str = include_str!("../../../sdk/js/dist/mooyaho.js");
const DEMO_HTML: &str = include_str!("../../../sdk/js/demo/index.html");
const DEMO_JS: &str = include_str!("../../../sdk/js/demo/demo.js");
const DEMO_CSS: &str = include_str!("../../../sdk/js/demo/demo.css");
const TEST_HTML: &str = include_str!("../../../sdk/js/demo/test.html");

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Routes for the embedded files.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { file(HTML, DEMO_HTML) }))
        .route("/sdk/mooyaho.js", get(|| async { file(JS, SDK_BUNDLE) }))
        .route("/demo/demo.js", get(|| async { file(JS, DEMO_JS) }))
        .route("/demo/demo.css", get(|| async { file(CSS, DEMO_CSS) }))
        .route("/demo/test.html", get(|| async { file(HTML, TEST_HTML) }))
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Always revalidate: a rebuilt binary must not be shadowed by a cached old SDK.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::SignalingConfig;

    async fn get(path: &str) -> (StatusCode, String, String) {
        let state = AppState::embedded(SignalingConfig::new("k".repeat(32)), None).unwrap();
        let response = crate::app(state)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn serves_the_sdk_and_the_demo_without_a_key() {
        let (status, content_type, body) = get("/sdk/mooyaho.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/javascript"));
        assert!(body.contains("Mooyaho"));
        let (status, content_type, body) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"));
        assert!(body.contains("/demo/demo.js"));
        for path in ["/demo/demo.js", "/demo/demo.css", "/demo/test.html"] {
            assert_eq!(get(path).await.0, StatusCode::OK, "{path}");
        }
        assert_eq!(get("/demo/missing.js").await.0, StatusCode::NOT_FOUND);
    }
}
