//! The browser-like WebSocket client of the signaling API ([`Ws`]) and the REST client with the
//! API key ([`Rest`]). Every wait is bounded ([`WAIT`]); a missing or unexpected message panics
//! with what arrived instead.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long [`Ws`] waits for a message.
pub const WAIT: Duration = Duration::from_secs(5);

/// A REST client with the API key.
#[derive(Clone)]
pub struct Rest {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Rest {
    /// Sends a request with the key; returns status and parsed JSON body (Null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_raw(method, path, body.map(|b| b.to_string()), Some(&self.key))
            .await
    }

    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn create_channel(&self, sfu: bool) -> String {
        let (status, body) = self
            .call("POST", "/channels", Some(json!({ "sfuEnabled": sfu })))
            .await;
        assert_eq!(status, 200, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn integrate(&self, session: &str, user: Value) {
        let (status, body) = self
            .call("POST", &format!("/sessions/{session}"), Some(user))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// A browser-like WebSocket client.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub id: String,
    pub token: String,
}

impl Ws {
    /// Connects and reads `connected`.
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        Self::from_stream(stream).await
    }

    /// Wraps an already upgraded stream and reads `connected`.
    pub async fn from_stream(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        let mut ws = Self {
            stream,
            id: String::new(),
            token: String::new(),
        };
        let connected = ws.expect("connected").await;
        ws.id = connected["id"].as_str().unwrap().to_owned();
        ws.token = connected["token"].as_str().unwrap().to_owned();
        ws
    }

    /// Connects, gets integrated through REST as `name`, and enters `channel`: returns the socket
    /// and the `enterSuccess` reply.
    pub async fn enter(url: &str, rest: &Rest, channel: &str, name: &str) -> (Self, Value) {
        let mut ws = Self::connect(url).await;
        rest.integrate(&ws.id, json!({ "id": name, "name": name }))
            .await;
        ws.expect("integrated").await;
        ws.send(json!({ "type": "enter", "channel": channel }))
            .await;
        let success = ws.expect("enterSuccess").await;
        assert_eq!(success["channel"], channel, "{success}");
        (ws, success)
    }

    /// [`Self::enter`], then waits for the channel's `entered` announcing this session.
    pub async fn join(url: &str, rest: &Rest, channel: &str, name: &str) -> Self {
        let (mut ws, _) = Self::enter(url, rest, channel, name).await;
        let me = Value::String(ws.id.clone());
        ws.expect_where("entered", |m| m["sessionId"] == me).await;
        ws
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.expect("send");
    }

    /// The next JSON message (panics after 5 s or on close).
    pub async fn next(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for a message")
                .expect("socket closed")
                .expect("socket error");
            match frame {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Skips messages until one of `kind` arrives.
    pub async fn expect(&mut self, kind: &str) -> Value {
        self.expect_where(kind, |_| true).await
    }

    /// Skips messages until one of `kind` that satisfies `pred` arrives.
    pub async fn expect_where(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Vec::new();
        loop {
            let message = tokio::time::timeout(WAIT, self.next())
                .await
                .unwrap_or_else(|_| panic!("no `{kind}`; saw {seen:?}"));
            if message["type"] == kind && pred(&message) {
                return message;
            }
            seen.push(message);
        }
    }

    /// Sends a request with a `requestId` and returns the reply carrying that id.
    pub async fn request(&mut self, mut message: Value) -> Value {
        let id = format!("r{}", next_request_id());
        message["requestId"] = json!(id);
        self.send(message).await;
        let mut seen = Vec::new();
        loop {
            let reply = self.next().await;
            if reply["requestId"] == json!(id) {
                return reply;
            }
            seen.push(reply);
            assert!(seen.len() < 50, "no reply to {id}: {seen:?}");
        }
    }

    /// Asserts that the request is refused with `code`.
    pub async fn expect_error(&mut self, message: Value, code: &str) -> Value {
        let reply = self.request(message).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
        reply
    }

    /// Every JSON message that arrives within `duration` (pings skipped), in order.
    pub async fn collect_for(&mut self, duration: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + duration;
        let mut messages = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return messages,
                Ok(Some(Ok(Message::Text(text)))) => {
                    messages.push(serde_json::from_str(&text).expect("JSON frame"));
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Asserts that nothing but pings arrives for `duration`.
    pub async fn expect_silence(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// True once the server has closed the socket (within 5 s).
    pub async fn closed_by_server(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The underlying stream (for clients that run their own reader).
    pub fn into_stream(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.stream
    }

    /// Drops the TCP connection without a close handshake (a network failure).
    pub fn abort(self) {
        drop(self.stream);
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

fn next_request_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
