//! Fuzz body for the REST API: arbitrary bodies (and paths) through the whole router, in
//! process, against the embedded store. Every answer must be a non-5xx with a JSON body, and
//! every refusal must be the documented error shape.

use std::cell::RefCell;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, header};
use serde_json::Value;
use tower::ServiceExt;

use crate::{AppState, SignalingConfig};

const KEY: &str = "fuzz-fuzz-fuzz-fuzz-fuzz-fuzz-fuzz";

/// Requests served by one router before a fresh one replaces it, so the store (which grows
/// with every created channel and node) stays small however long the fuzzer runs.
const REQUESTS_PER_APP: u32 = 20_000;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    static APP: RefCell<Option<(Router, u32)>> = const { RefCell::new(None) };
}

/// `rest_body` target. Byte 0 picks the operation, byte 1 the credentials (right key, wrong
/// key, none); the rest is the body, or for the last operations `METHOD PATH\n` then the body.
pub fn fuzz_rest_body(data: &[u8]) {
    let [operation, credentials, rest @ ..] = data else {
        return;
    };
    let (method, path, body): (Method, String, &[u8]) = match operation % 8 {
        0 => (Method::POST, "/channels".into(), rest),
        1 => (Method::POST, "/channels/bulk-delete".into(), rest),
        2 => (
            Method::POST,
            "/sessions/9a1f5a9e-0000-4000-8000-000000000000".into(),
            rest,
        ),
        3 => (Method::POST, "/sfu-servers".into(), rest),
        4 => (Method::PATCH, "/sfu-servers/1".into(), rest),
        5 => (Method::POST, "/sfu-servers/1/drain".into(), rest),
        _ => {
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let Ok(line) = std::str::from_utf8(&rest[..split]) else {
                return;
            };
            let Some((method, path)) = line.split_once(' ') else {
                return;
            };
            let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                return;
            };
            (
                method,
                path.to_owned(),
                rest.get(split + 1..).unwrap_or(&[]),
            )
        }
    };
    let head = method == Method::HEAD;
    let mut request = Request::builder().method(method).uri(path);
    match credentials % 3 {
        0 => request = request.header(header::AUTHORIZATION, format!("Bearer {KEY}")),
        1 => request = request.header(header::AUTHORIZATION, "Bearer wrong"),
        _ => {}
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return; // not a request at all (invalid URI or header): never reaches the server
    };
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let router = APP.with(|cell| {
                let mut cell = cell.borrow_mut();
                let fresh = cell.as_ref().is_none_or(|(_, n)| *n >= REQUESTS_PER_APP);
                if fresh {
                    let state = AppState::embedded(SignalingConfig::new(KEY), None)
                        .expect("in-memory state");
                    *cell = Some((crate::app(state), 0));
                }
                let (router, served) = cell.as_mut().expect("just set");
                *served += 1;
                router.clone()
            });
            let response = router.oneshot(request).await.expect("infallible service");
            let status = response.status();
            let is_json = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            let bytes = to_bytes(response.into_body(), 1 << 24)
                .await
                .expect("a buffered body");
            assert!(!status.is_server_error(), "{status} for a client's request");
            if head {
                // HTTP: a HEAD answer has the GET answer's headers and no body.
                assert!(bytes.is_empty(), "HEAD answered with a body");
            } else if status.is_client_error() {
                let error: Value = serde_json::from_slice(&bytes).expect("errors are JSON");
                assert_eq!(error["statusCode"], status.as_u16(), "{error}");
                assert!(error["error"].is_string() && error["message"].is_string());
            } else if is_json {
                serde_json::from_slice::<Value>(&bytes).expect("JSON answers parse");
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_hold_the_contract() {
        let seeds: &[&[u8]] = &[
            b"\x00\x00",
            b"\x00\x00{\"sfuEnabled\":true}",
            b"\x00\x01{}",
            b"\x00\x02null",
            b"\x01\x00{\"ids\":[\"a\",\"b\"]}",
            b"\x01\x00{\"ids\":[]}",
            b"\x01\x00[1,2]",
            b"\x02\x00{\"id\":\"u1\",\"name\":\"x\"}",
            b"\x02\x00{\"id\":\"\"}",
            b"\x03\x00{\"address\":\"127.0.0.1:4433\"}",
            b"\x03\x00{\"address\":\"nope\",\"fingerprint\":7}",
            b"\x04\x00{\"disabled\":true}",
            b"\x05\x00",
            b"\x06\x00GET /channels\n",
            b"\x06\x00DELETE /channels/x\n",
            b"\x06\x00PUT /health\n{}",
            b"\x06\x00GET /sfu-servers/99999999999999999999999\n",
            b"\x06\x02GET /metrics\n",
            b"\x06\x00GET /openapi.json\n",
            b"\x00\x00\xff\xfe{",
            b"\x06\x2cHEAD (",
            b"\x06\x2cGET (",
            b"\x06\x00HEAD /channels\n",
            b"\x06\x00POST /whip/x\nv=0\r\n",
            b"\x06\x02POST /whip/x\n",
            b"\x06\x00OPTIONS /whip/x\n",
            b"\x06\x00PATCH /whip/x/y\na=ice-ufrag:z",
            b"\x06\x00DELETE /whip/x/y\n",
            b"\x06\x00POST /whep/x?publisher=a:b\nv=0\r\n",
            b"\x06\x01OPTIONS /whep/x/y\n",
        ];
        for seed in seeds {
            fuzz_rest_body(seed);
        }
    }
}
