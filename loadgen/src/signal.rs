//! A simulated participant's signaling: the public WebSocket API, as a browser SDK speaks it.

use std::collections::VecDeque;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the server tells an SFU-channel member about its media, in the order it said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SfuEvent {
    /// `called {isSFU}`: a subscribe offer (the first, or a renegotiation).
    Offer(String),
    /// `sfuRestart {channel}`: the channel's media moved to another room (its node failed or
    /// drained): offers from now on are the new room's, publishers must publish again.
    Restart,
}

/// One WebSocket session in a channel.
pub(crate) struct Signal {
    ws: Ws,
    pub(crate) id: String,
    next_request: u64,
    /// SFU offers and restarts that arrived while waiting for something else.
    events: VecDeque<SfuEvent>,
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
            events: VecDeque::new(),
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
            self.keep_event(&reply);
        }
    }

    /// Sends a message.
    pub(crate) async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .context("send")
    }

    /// The next SFU offer; a restart before it only means the offer is the new room's.
    pub(crate) async fn next_offer(&mut self) -> anyhow::Result<String> {
        loop {
            if let SfuEvent::Offer(offer) = self.next_event().await? {
                return Ok(offer);
            }
        }
    }

    /// The next SFU offer or restart.
    pub(crate) async fn next_event(&mut self) -> anyhow::Result<SfuEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            let message = self.next().await?;
            self.keep_event(&message);
        }
    }

    fn keep_event(&mut self, message: &Value) {
        if let Some(event) = sfu_event(message) {
            self.events.push_back(event);
        }
    }

    /// Closes the socket.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The SFU event a server message is, if any.
fn sfu_event(message: &Value) -> Option<SfuEvent> {
    match message["type"].as_str()? {
        "called" if message["isSFU"] == true => {
            Some(SfuEvent::Offer(message["sdp"].as_str()?.to_owned()))
        }
        "sfuRestart" => Some(SfuEvent::Restart),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_and_restarts_are_sfu_events_and_nothing_else_is() {
        let offer = json!({ "type": "called", "isSFU": true, "sdp": "v=0" });
        assert_eq!(sfu_event(&offer), Some(SfuEvent::Offer("v=0".into())));
        let restart = json!({ "type": "sfuRestart", "channel": "c" });
        assert_eq!(sfu_event(&restart), Some(SfuEvent::Restart));
        // A peer-to-peer call, an SFU offer without SDP, and other messages are not.
        assert_eq!(sfu_event(&json!({ "type": "called", "sdp": "v=0" })), None);
        assert_eq!(sfu_event(&json!({ "type": "called", "isSFU": true })), None);
        assert_eq!(sfu_event(&json!({ "type": "error", "code": "x" })), None);
        assert_eq!(sfu_event(&json!("called")), None);
    }
}
