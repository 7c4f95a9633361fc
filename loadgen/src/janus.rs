//! A small client for Janus's HTTP API (REST requests plus the long-poll event stream) and its
//! VideoRoom plugin: what `--target janus` needs to run the same scenarios against Janus.
//!
//! Every simulated participant has its own Janus session (as a browser would), with a publisher
//! handle and/or a subscriber handle. Asynchronous plugin requests (`joinandconfigure`, `join`,
//! `start`) are acknowledged at once and answered on the session's event stream, matched by
//! transaction.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The VideoRoom plugin's package name.
const VIDEOROOM: &str = "janus.plugin.videoroom";

/// Janus's HTTP API endpoint, e.g. `http://127.0.0.1:8088/janus`.
#[derive(Clone, Debug)]
pub(crate) struct Janus {
    http: reqwest::Client,
    base: String,
}

/// One Janus session and its event stream.
pub(crate) struct Session {
    http: reqwest::Client,
    /// `<base>/<session id>`.
    url: String,
}

/// A plugin event that answered one of our asynchronous requests.
#[derive(Debug)]
pub(crate) struct PluginEvent {
    /// `plugindata.data`.
    pub(crate) data: Value,
    /// The JSEP SDP that came with it, if any.
    pub(crate) sdp: Option<String>,
}

impl Janus {
    pub(crate) fn new(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Above Janus's 30 s long-poll, so an idle event stream is not an error.
            .timeout(Duration::from_secs(45))
            .build()
            .context("HTTP client")?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    /// `GET /info`: the server answers and has the VideoRoom plugin.
    pub(crate) async fn info(&self) -> anyhow::Result<Value> {
        let info: Value = get_json(&self.http, &format!("{}/info", self.base)).await?;
        if info["plugins"].get(VIDEOROOM).is_none() {
            bail!("Janus at {} has no {VIDEOROOM} plugin", self.base);
        }
        Ok(info)
    }

    /// Creates a session.
    pub(crate) async fn session(&self) -> anyhow::Result<Session> {
        let reply = post(&self.http, &self.base, envelope("create")).await?;
        let id = success_id(&reply).context("creating a Janus session")?;
        Ok(Session {
            http: self.http.clone(),
            url: format!("{}/{id}", self.base),
        })
    }
}

impl Session {
    /// Attaches a VideoRoom handle.
    pub(crate) async fn attach(&self) -> anyhow::Result<u64> {
        let mut body = envelope("attach");
        body["plugin"] = json!(VIDEOROOM);
        let reply = post(&self.http, &self.url, body).await?;
        success_id(&reply).context("attaching the VideoRoom plugin")
    }

    /// A synchronous plugin request (`create`, `destroy`, `listparticipants`): its
    /// `plugindata.data`.
    pub(crate) async fn request(&self, handle: u64, body: Value) -> anyhow::Result<Value> {
        let what = body["request"].as_str().unwrap_or("request").to_owned();
        let mut message = envelope("message");
        message["body"] = body;
        let reply = post(&self.http, &format!("{}/{handle}", self.url), message).await?;
        if reply["janus"] != "success" {
            bail!("VideoRoom {what}: unexpected reply {reply}");
        }
        plugin_data(&reply).with_context(|| format!("VideoRoom {what}"))
    }

    /// An asynchronous plugin request, optionally with a JSEP: waits (up to 20 s) for the event
    /// that answers it on the session's event stream.
    pub(crate) async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<PluginEvent> {
        let what = body["request"].as_str().unwrap_or("request").to_owned();
        let mut message = envelope("message");
        message["body"] = body;
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let transaction = message["transaction"].clone();
        let reply = post(&self.http, &format!("{}/{handle}", self.url), message).await?;
        let event = match reply["janus"].as_str() {
            // Some requests are answered synchronously.
            Some("success") => reply,
            Some("ack") => self
                .wait_for(handle, &transaction)
                .await
                .with_context(|| format!("VideoRoom {what}"))?,
            _ => bail!("VideoRoom {what}: unexpected reply {reply}"),
        };
        let data = plugin_data(&event).with_context(|| format!("VideoRoom {what}"))?;
        Ok(PluginEvent {
            data,
            sdp: event["jsep"]["sdp"].as_str().map(str::to_owned),
        })
    }

    /// Reads the event stream until the event answering `transaction` on `handle`.
    async fn wait_for(&self, handle: u64, transaction: &Value) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            for event in self.poll().await? {
                if event["sender"] != json!(handle) {
                    continue;
                }
                match event["janus"].as_str() {
                    Some("event") if event["transaction"] == *transaction => return Ok(event),
                    Some("hangup") => bail!(
                        "Janus hung up the PeerConnection: {}",
                        event["reason"].as_str().unwrap_or("no reason")
                    ),
                    Some("detached") => bail!("Janus detached the handle"),
                    // webrtcup, media, slowlink, other plugin notifications: not ours to wait on.
                    _ => {}
                }
            }
        }
        bail!("no answer on the Janus event stream within 20 s")
    }

    /// One long-poll of the event stream (Janus answers after at most 30 s).
    async fn poll(&self) -> anyhow::Result<Vec<Value>> {
        let events = get_json(&self.http, &format!("{}?maxev=16", self.url)).await?;
        Ok(split_events(events))
    }

    /// Trickles our host candidate, then end-of-candidates.
    pub(crate) async fn trickle(&self, handle: u64, candidate: SocketAddr) -> anyhow::Result<()> {
        let url = format!("{}/{handle}", self.url);
        for body in [trickle_body(Some(candidate)), trickle_body(None)] {
            let reply = post(&self.http, &url, body).await?;
            if reply["janus"] != "ack" {
                bail!("trickle: unexpected reply {reply}");
            }
        }
        Ok(())
    }

    /// Keeps the session alive (Janus drops sessions idle for its `session_timeout`).
    pub(crate) async fn keepalive(&self) -> anyhow::Result<()> {
        let reply = post(&self.http, &self.url, envelope("keepalive")).await?;
        if reply["janus"] != "ack" {
            bail!("keepalive: unexpected reply {reply}");
        }
        Ok(())
    }

    /// Detaches a handle (Janus keeps per-handle state, and with `event_loops` = 0 a thread,
    /// for every attached handle: one left idle would load Janus more than the run needs).
    pub(crate) async fn detach(&self, handle: u64) -> anyhow::Result<()> {
        let reply = post(
            &self.http,
            &format!("{}/{handle}", self.url),
            envelope("detach"),
        )
        .await?;
        if reply["janus"] != "success" {
            bail!("detaching handle {handle}: unexpected reply {reply}");
        }
        Ok(())
    }

    /// Destroys the session (and with it its handles and PeerConnections).
    pub(crate) async fn destroy(self) -> anyhow::Result<()> {
        post(&self.http, &self.url, envelope("destroy")).await?;
        Ok(())
    }
}

/// A request envelope with a fresh transaction id.
fn envelope(kind: &str) -> Value {
    json!({ "janus": kind, "transaction": format!("{:016x}", rand::random::<u64>()) })
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    let kind = body["janus"].as_str().unwrap_or("request").to_owned();
    let response = http
        .post(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("Janus {kind}: POST {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("Janus {kind}: reading the reply"))?;
    let reply: Value = serde_json::from_str(&text)
        .with_context(|| format!("Janus {kind}: HTTP {status}, not JSON: {text:.200}"))?;
    check_reply(&reply).with_context(|| format!("Janus {kind}"))?;
    Ok(reply)
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("Janus: GET {url}"))?;
    let status = response.status();
    let text = response.text().await.context("Janus: reading the reply")?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("Janus: GET {url}: HTTP {status}, not JSON: {text:.200}"))?;
    if value.is_object() {
        check_reply(&value)?;
    }
    Ok(value)
}

/// A Janus API error (`{"janus":"error","error":{"code","reason"}}`) as an error.
fn check_reply(reply: &Value) -> anyhow::Result<()> {
    if reply["janus"] == "error" {
        bail!(
            "Janus error {}: {}",
            reply["error"]["code"],
            reply["error"]["reason"].as_str().unwrap_or("no reason")
        );
    }
    Ok(())
}

/// `data.id` of a `success` reply (session or handle id).
fn success_id(reply: &Value) -> anyhow::Result<u64> {
    if reply["janus"] != "success" {
        bail!("unexpected reply {reply}");
    }
    reply["data"]["id"]
        .as_u64()
        .with_context(|| format!("reply without data.id: {reply}"))
}

/// `plugindata.data` of a reply or event, a VideoRoom error (`error_code`, `error`) as an error.
fn plugin_data(reply: &Value) -> anyhow::Result<Value> {
    let data = &reply["plugindata"]["data"];
    if !data.is_object() {
        bail!("no plugindata.data in {reply}");
    }
    if let Some(code) = data.get("error_code") {
        bail!(
            "VideoRoom error {code}: {}",
            data["error"].as_str().unwrap_or("no reason")
        );
    }
    Ok(data.clone())
}

/// The long-poll answer as events: an array with `maxev`, one object otherwise; the `keepalive`
/// Janus sends when nothing happened in 30 s is not an event.
fn split_events(value: Value) -> Vec<Value> {
    let events = match value {
        Value::Array(events) => events,
        other => vec![other],
    };
    events
        .into_iter()
        .filter(|e| e["janus"] != "keepalive")
        .collect()
}

/// A room for a load run: VP8 and Opus, no bitrate cap, room for every publisher, nothing
/// recorded or kept, no join/leave notifications (they would only add event traffic).
pub(crate) fn create_room_body(publishers: usize) -> Value {
    json!({
        "request": "create",
        "description": "mooyaho loadgen",
        "publishers": publishers.max(1) + 4,
        "bitrate": 0,
        "fir_freq": 0,
        "videocodec": "vp8",
        "audiocodec": "opus",
        "record": false,
        "permanent": false,
        "notify_joining": false,
    })
}

/// The room id a `create` answered with.
pub(crate) fn created_room(data: &Value) -> anyhow::Result<u64> {
    if data["videoroom"] != "created" {
        bail!("room not created: {data}");
    }
    data["room"]
        .as_u64()
        .with_context(|| format!("created without a numeric room id: {data}"))
}

pub(crate) fn destroy_room_body(room: u64) -> Value {
    json!({ "request": "destroy", "room": room })
}

/// Joins as a publisher and configures our offer in one request.
pub(crate) fn publish_body(room: u64, display: &str) -> Value {
    json!({
        "request": "joinandconfigure",
        "room": room,
        "ptype": "publisher",
        "display": display,
    })
}

/// Our publisher id from the `joined` event.
pub(crate) fn joined_id(data: &Value) -> anyhow::Result<u64> {
    if data["videoroom"] != "joined" {
        bail!("publisher not joined: {data}");
    }
    data["id"]
        .as_u64()
        .with_context(|| format!("joined without a numeric id: {data}"))
}

pub(crate) fn list_participants_body(room: u64) -> Value {
    json!({ "request": "listparticipants", "room": room })
}

/// Ids of the participants that publish, from a `listparticipants` answer.
pub(crate) fn publishing(data: &Value) -> anyhow::Result<Vec<u64>> {
    let participants = data["participants"]
        .as_array()
        .with_context(|| format!("no participants list: {data}"))?;
    Ok(participants
        .iter()
        .filter(|p| p["publisher"] == true)
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

/// Subscribes to every stream of `feeds` on one PeerConnection (Janus offers).
pub(crate) fn subscribe_body(room: u64, feeds: &[u64]) -> Value {
    let streams: Vec<Value> = feeds.iter().map(|feed| json!({ "feed": feed })).collect();
    json!({
        "request": "join",
        "room": room,
        "ptype": "subscriber",
        "streams": streams,
    })
}

/// Starts a subscription with our answer.
pub(crate) fn start_body() -> Value {
    json!({ "request": "start" })
}

pub(crate) fn jsep(kind: &str, sdp: &str) -> Value {
    json!({ "type": kind, "sdp": sdp })
}

/// A trickle request with our host candidate, or `completed` (end-of-candidates).
fn trickle_body(candidate: Option<SocketAddr>) -> Value {
    let mut body = envelope("trickle");
    body["candidate"] = match candidate {
        Some(addr) => json!({
            "candidate": crate::sdp::candidate_attribute(addr)
                .trim_start_matches("a=")
                .to_owned(),
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        }),
        None => json!({ "completed": true }),
    };
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn janus_errors_carry_code_and_reason() {
        let error =
            json!({"janus": "error", "error": {"code": 458, "reason": "No such session 1"}});
        let message = format!("{:#}", check_reply(&error).unwrap_err());
        assert!(message.contains("458") && message.contains("No such session"));
        assert!(check_reply(&json!({"janus": "ack"})).is_ok());
        let plugin_error = json!({"janus": "success", "plugindata": {"plugin": VIDEOROOM,
            "data": {"videoroom": "event", "error_code": 426, "error": "No such room (1)"}}});
        let message = format!("{:#}", plugin_data(&plugin_error).unwrap_err());
        assert!(message.contains("426") && message.contains("No such room"));
        assert!(plugin_data(&json!({"janus": "success"})).is_err());
        assert!(success_id(&json!({"janus": "success", "data": {}})).is_err());
        assert_eq!(
            success_id(&json!({"janus": "success", "data": {"id": 7}})).unwrap(),
            7
        );
    }

    #[test]
    fn videoroom_requests_have_the_fields_janus_reads() {
        let create = create_room_body(3);
        assert_eq!(create["request"], "create");
        assert_eq!(create["videocodec"], "vp8");
        assert_eq!(create["audiocodec"], "opus");
        assert_eq!(create["record"], false);
        assert!(create["publishers"].as_u64().unwrap() >= 3);
        let publish = publish_body(42, "load-0");
        assert_eq!(
            (
                &publish["request"],
                &publish["ptype"],
                &publish["room"].as_u64()
            ),
            (&json!("joinandconfigure"), &json!("publisher"), &Some(42))
        );
        let subscribe = subscribe_body(42, &[5, 6]);
        assert_eq!(subscribe["ptype"], "subscriber");
        assert_eq!(subscribe["streams"], json!([{ "feed": 5 }, { "feed": 6 }]));
        assert_eq!(jsep("answer", "v=0")["type"], "answer");
        let trickle = trickle_body(Some("192.0.2.2:5000".parse().unwrap()));
        assert_eq!(trickle["janus"], "trickle");
        assert_eq!(
            trickle["candidate"]["candidate"],
            "candidate:1 1 udp 2130706431 192.0.2.2 5000 typ host"
        );
        assert_eq!(trickle_body(None)["candidate"]["completed"], true);
        assert_ne!(envelope("x")["transaction"], envelope("x")["transaction"]);
    }

    #[test]
    fn videoroom_answers_parse() {
        let created = json!({"videoroom": "created", "room": 1234, "permanent": false});
        assert_eq!(created_room(&created).unwrap(), 1234);
        assert!(created_room(&json!({"videoroom": "event"})).is_err());
        let joined = json!({"videoroom": "joined", "room": 1, "id": 99, "publishers": []});
        assert_eq!(joined_id(&joined).unwrap(), 99);
        assert!(joined_id(&json!({"videoroom": "joined", "id": "x"})).is_err());
        let list = json!({"videoroom": "participants", "participants": [
            {"id": 1, "publisher": true}, {"id": 2, "publisher": false}, {"id": 3, "publisher": true}
        ]});
        assert_eq!(publishing(&list).unwrap(), vec![1, 3]);
        assert!(publishing(&json!({})).is_err());
    }

    #[test]
    fn long_poll_answers_split_into_events() {
        let events = split_events(json!([
            {"janus": "event", "transaction": "a"},
            {"janus": "keepalive"},
            {"janus": "webrtcup"}
        ]));
        assert_eq!(events.len(), 2);
        assert_eq!(split_events(json!({"janus": "keepalive"})).len(), 0);
        assert_eq!(split_events(json!({"janus": "hangup"})).len(), 1);
    }
}
