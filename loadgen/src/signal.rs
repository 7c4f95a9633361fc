//! A simulated participant's signaling: the public WebSocket API, as a browser SDK speaks it.

use std::collections::VecDeque;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One WebSocket session in a channel.
pub(crate) struct Signal {
    ws: Ws,
    pub(crate) id: String,
    next_request: u64,
    /// `called {isSFU}` offers that arrived while waiting for something else.
    pub(crate) offers: VecDeque<String>,
}

impl Signal {
    /// Connects, gets integrated through REST and enters `channel`.
    pub(crate) async fn join(
        ws_url: &str,
        rest: &mooyaho_server_sdk::Mooyaho,
        channel: &str,
        name: &str,
    ) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .context("WebSocket connect")?;
        let mut signal = Self {
            ws,
            id: String::new(),
            next_request: 0,
            offers: VecDeque::new(),
        };
        let connected = signal.next().await?;
        signal.id = connected["id"]
            .as_str()
            .context("connected without id")?
            .to_owned();
        rest.integrate_user(&signal.id, json!({ "id": name }))
            .await
            .context("integrateUser")?;
        let entered = signal
            .request(json!({ "type": "enter", "channel": channel }))
            .await?;
        if entered["type"] != "enterSuccess" {
            bail!("enter refused: {entered}");
        }
        Ok(signal)
    }

    /// The next JSON message (answers pings by reading).
    pub(crate) async fn next(&mut self) -> anyhow::Result<Value> {
        loop {
            match self.ws.next().await.context("socket closed")?? {
                Message::Text(text) => return Ok(serde_json::from_str(&text)?),
                Message::Close(_) => bail!("socket closed by the server"),
                _ => {}
            }
        }
    }

    /// Sends a request and waits for its reply, keeping SFU offers that arrive meanwhile.
    pub(crate) async fn request(&mut self, mut message: Value) -> anyhow::Result<Value> {
        self.next_request += 1;
        let id = self.next_request;
        message["requestId"] = json!(id);
        self.send(&message).await?;
        loop {
            let reply = self.next().await?;
            if reply["requestId"] == json!(id) {
                return Ok(reply);
            }
            self.keep_offer(&reply);
        }
    }

    /// Sends a message.
    pub(crate) async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .context("send")
    }

    /// The next SFU offer.
    pub(crate) async fn next_offer(&mut self) -> anyhow::Result<String> {
        if let Some(offer) = self.offers.pop_front() {
            return Ok(offer);
        }
        loop {
            let message = self.next().await?;
            self.keep_offer(&message);
            if let Some(offer) = self.offers.pop_front() {
                return Ok(offer);
            }
        }
    }

    fn keep_offer(&mut self, message: &Value) {
        if message["type"] == "called"
            && message["isSFU"] == true
            && let Some(sdp) = message["sdp"].as_str()
        {
            self.offers.push_back(sdp.to_owned());
        }
    }

    /// Closes the socket.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
