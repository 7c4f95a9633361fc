//! A hostile publisher that stops before ICE: it speaks the WebSocket API like anyone and writes
//! its own offer, then sends authenticated connectivity checks from whatever sockets it holds
//! (`mooyaho_loadgen::raw` connects ICE and DTLS first; the address-churn attack needs only the
//! credentials). The ICE credentials and DTLS fingerprint are real: the node answers it as any
//! client.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use mooyaho_net::dtls::DtlsIdentity;
use mooyaho_net::stun::{
    BindingRequest, Check, HOST_PRIORITY, IceRole, is_binding_success, new_transaction_id,
};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::support::Ws;

/// ICE credentials of one side.
#[derive(Clone, Debug, Default)]
pub struct Ice {
    pub ufrag: String,
    pub pwd: String,
}

impl Ice {
    pub fn random() -> Self {
        let creds = mooyaho_media::sdp::random_ice_credentials();
        Self {
            ufrag: creds.ufrag,
            pwd: creds.pwd,
        }
    }
}

/// What a client learns from the node's SDP.
#[derive(Clone, Debug)]
pub struct NodeSdp {
    pub ice: Ice,
    pub fingerprint: String,
    pub candidate: SocketAddr,
    /// The first passive TCP candidate (ICE-TCP), when the node announces one.
    pub tcp_candidate: Option<SocketAddr>,
    pub setup: String,
}

pub fn parse_node_sdp(sdp: &str) -> NodeSdp {
    let (mut ice, mut fingerprint, mut candidate, mut tcp_candidate, mut setup) =
        (Ice::default(), String::new(), None, None, String::new());
    for line in sdp.lines().map(str::trim_end) {
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            v.clone_into(&mut ice.ufrag);
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            v.clone_into(&mut ice.pwd);
        } else if let Some(v) = line.strip_prefix("a=fingerprint:sha-256 ") {
            v.clone_into(&mut fingerprint);
        } else if let Some(v) = line.strip_prefix("a=setup:") {
            v.clone_into(&mut setup);
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            let f: Vec<&str> = c.split_whitespace().collect();
            let slot = match f.get(2) {
                Some(&"udp") => &mut candidate,
                Some(&"tcp") => &mut tcp_candidate,
                _ => continue,
            };
            if slot.is_none() && f.len() > 5 {
                *slot = format!("{}:{}", f[4], f[5]).parse().ok();
            }
        }
    }
    NodeSdp {
        ice,
        fingerprint,
        candidate: candidate.unwrap_or_else(|| panic!("no candidate in {sdp}")),
        tcp_candidate,
        setup,
    }
}

fn header(ice: &Ice, fingerprint: &str, mids: &[String]) -> String {
    format!(
        "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n\
         a=msid-semantic: WMS\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\n",
        rand::random::<u32>(),
        mids.join(" "),
        ice.ufrag,
        ice.pwd,
        fingerprint
    )
}

/// A publish offer with one Opus track.
pub fn publish_offer(ice: &Ice, fingerprint: &str, ssrc: u32) -> String {
    header(ice, fingerprint, &["0".to_owned()])
        + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
           a=rtpmap:111 opus/48000/2\r\na=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n"
        + &format!("a=msid:raw track\r\na=ssrc:{ssrc} cname:raw\r\n")
}

/// A connectivity check to the node (we are the controlling agent), signed with its password.
pub fn check(local: &Ice, node: &Ice, use_candidate: bool) -> Vec<u8> {
    Check {
        username: &format!("{}:{}", node.ufrag, local.ufrag),
        receiver_pwd: &node.pwd,
        transaction: new_transaction_id(),
        priority: HOST_PRIORITY,
        role: IceRole::Controlling(rand::random()),
        use_candidate,
    }
    .to_bytes()
}

/// Our signed answer to the node's check, or `None` if it is not one addressed to us.
pub fn answer_check(datagram: &[u8], from: SocketAddr, local: &Ice) -> Option<Vec<u8>> {
    let mut request = BindingRequest::parse(datagram).ok()?;
    if request.local_ufrag != local.ufrag {
        return None;
    }
    request.authenticate(&local.pwd).ok()?;
    Some(request.success(from, &local.pwd))
}

/// Sends `check` from `socket` until a success response comes back (answering the node's own
/// checks meanwhile); false if none within `within`.
pub async fn check_until_answered(
    socket: &UdpSocket,
    local: &Ice,
    node: &NodeSdp,
    use_candidate: bool,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 2048];
    while tokio::time::Instant::now() < deadline {
        let request = check(local, &node.ice, use_candidate);
        socket.send_to(&request, node.candidate).await.unwrap();
        let wait = tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf));
        let Ok(Ok((n, from))) = wait.await else {
            continue;
        };
        if is_binding_success(&buf[..n]) {
            return true;
        }
        if let Some(answer) = answer_check(&buf[..n], from, local) {
            socket.send_to(&answer, from).await.unwrap();
        }
    }
    false
}

/// A WebSocket participant that published one raw Opus track: what it needs to talk to the node.
pub struct RawPublisher {
    pub ws: Ws,
    pub local: Ice,
    pub node: NodeSdp,
}

impl RawPublisher {
    /// Joins `channel` and publishes (a real certificate's fingerprint: the node accepts it).
    pub async fn join(
        ws_url: &str,
        rest: &crate::support::Rest,
        channel: &str,
        name: &str,
    ) -> Self {
        let mut ws = Ws::join(ws_url, rest, channel, name).await;
        let local = Ice::random();
        let identity = DtlsIdentity::generate().unwrap();
        let offer = publish_offer(&local, &identity.fingerprint, rand::random());
        let reply: Value = ws
            .request(json!({ "type": "call", "isSFU": true, "sdp": offer }))
            .await;
        assert_eq!(reply["type"], "answered", "{reply}");
        let node = parse_node_sdp(reply["sdp"].as_str().unwrap());
        Self { ws, local, node }
    }
}
