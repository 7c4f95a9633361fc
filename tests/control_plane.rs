//! The control plane under attack, with real processes: a rogue node registered through the REST
//! API never receives anything the cluster secret can be recovered from (nor anything it can
//! replay), and hostile QUIC clients of a real `mooyaho sfu` — a flood of connections that never
//! authenticate, one that sends nothing, one that announces a 4 GiB frame, one with a wrong proof,
//! one replaying a captured proof — are refused, closed and counted while an honest signaling
//! instance keeps using the node and new honest connections authenticate during the attack and
//! after it. Spoofed Initials get a QUIC Retry and take no slot; a client that sends a wrong
//! proof and never opens its receive window loses its slot within the reply timeout; a short
//! cluster secret is refused by every command.

mod support;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mooyaho_control::proof::EXPORTER_LEN;
use mooyaho_control::{
    ALPN, ErrorCode, Event, Load, MAX_HELLO_FRAME, Proof, Request, Response, Role, read_frame,
    write_frame,
};
use mooyaho_test_support::sfu_client::SfuClient;
use serde_json::{Value, json};
use support::control::{
    connect, control_call, control_session, exporter, hello_with, hostile_endpoint,
    hostile_endpoint_from, provider,
};
use support::{API_KEY, Rest, Server, SfuNode, audio_received, eventually, media_flows_between};
use tokio::sync::mpsc;

const SECRET: &str = "cluster-secret-control-plane-0123456789";

async fn sfu_server(rest: &Rest, id: u64) -> Value {
    let (status, body) = rest.call("GET", &format!("/sfu-servers/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// One connection as the rogue node saw it.
struct Captured {
    /// Every byte the signaling instance sent on the hello stream.
    bytes: Vec<u8>,
    /// This connection's exporter (both ends derive the same).
    exporter: [u8; EXPORTER_LEN],
    hello: Request,
}

/// A rogue node as the tests run it: its endpoint, its certificate's fingerprint, each
/// connection's hello, and the requests signaling sent it after a welcome.
struct RogueNode {
    endpoint: quinn::Endpoint,
    fingerprint: String,
    captured: mpsc::UnboundedReceiver<Captured>,
    requests: Arc<Mutex<Vec<Request>>>,
}

/// A QUIC server with its own self-signed certificate, as an attacker would run: it records what
/// each connection sends on its first stream and answers the `n`th connection's hello with
/// `reply(n, exporter)` followed, every 200 ms, by a load report (trying to look healthy) and
/// the events `flood(tick)` returns, or, for `None`, says nothing at all. Requests signaling
/// sends it afterwards are counted and never answered.
fn rogue_node(
    reply: impl Fn(usize, &[u8; EXPORTER_LEN]) -> Option<Response> + Send + Sync + 'static,
    flood: impl Fn(u64) -> Vec<Event> + Send + Sync + 'static,
) -> RogueNode {
    let certified = rcgen::generate_simple_self_signed(vec!["rogue".to_owned()]).unwrap();
    let der = certified.cert.der().clone();
    let fingerprint = mooyaho_control::fingerprint(der.as_ref());
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key.into())
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let (captured, receiver) = mpsc::unbounded_channel();
    let accept = endpoint.clone();
    let (reply, flood) = (Arc::new(reply), Arc::new(flood));
    let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
    let counted = requests.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(incoming) = accept.accept().await {
            n += 1;
            let (captured, reply, flood, counted) = (
                captured.clone(),
                reply.clone(),
                flood.clone(),
                counted.clone(),
            );
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                let Ok((mut send, mut recv)) = connection.accept_bi().await else {
                    return;
                };
                let exporter = exporter(&connection);
                // Everything the client sends on the stream (it finishes it after the hello).
                let Ok(bytes) = recv.read_to_end(64 * 1024).await else {
                    return;
                };
                let hello = mooyaho_control::decode_frame::<Request>(&bytes).expect("a hello");
                let _ = captured.send(Captured {
                    bytes,
                    exporter,
                    hello,
                });
                match reply(n, &exporter) {
                    Some(response) => {
                        let _ = write_frame(&mut send, &response).await;
                        let _ = send.finish();
                        let Ok(mut events) = connection.open_uni().await else {
                            return;
                        };
                        let requests = connection.clone();
                        tokio::spawn(async move {
                            // Recorded, never answered: signaling's request times out.
                            while let Ok((send, mut recv)) = requests.accept_bi().await {
                                let counted = counted.clone();
                                tokio::spawn(async move {
                                    let request =
                                        read_frame::<Request, _>(&mut recv, 1 << 20).await;
                                    if let Ok(request) = request {
                                        counted.lock().unwrap().push(request);
                                    }
                                    tokio::time::sleep(Duration::from_secs(30)).await;
                                    drop(send);
                                });
                            }
                        });
                        let load = Event::Load(Load::default());
                        for tick in 0.. {
                            let mut batch = vec![load.clone()];
                            batch.extend(flood(tick));
                            for event in &batch {
                                if write_frame(&mut events, event).await.is_err() {
                                    return;
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    // Say nothing: the client must give up on its own.
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    RogueNode {
        endpoint,
        fingerprint,
        captured: receiver,
        requests,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rogue_node_registered_through_rest_never_learns_the_cluster_secret() {
    let server = Server::start(&["--cluster-secret", SECRET]);
    let rest = server.rest();
    // The first two connections get no answer at all, the later ones a welcome with a made-up
    // proof followed by load reports.
    let RogueNode {
        endpoint,
        fingerprint,
        mut captured,
        ..
    } = rogue_node(
        |n, exporter| {
            (n > 2).then(|| Response::Welcome {
                workers: 1,
                proof: Proof::new(b"a-guess-at-the-secret-000", Role::Node, exporter),
            })
        },
        |_| Vec::new(),
    );
    let address = endpoint.local_addr().unwrap().to_string();
    let (status, body) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({ "address": address, "fingerprint": fingerprint })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_u64().unwrap();

    // The instance never trusts the rogue node: silence is a timeout, not a hang; a welcome
    // without the right proof is refused however many load reports follow it.
    let says = |what: &'static str| {
        let rest = rest.clone();
        async move {
            eventually(Duration::from_secs(30), || async {
                let view = sfu_server(&rest, id).await;
                assert_ne!(view["health"], "healthy", "{view}");
                view["lastError"].as_str().is_some_and(|e| e.contains(what))
            })
            .await
        }
    };
    // The link retries with backoff: collect its first three hellos.
    let mut hellos = Vec::new();
    while hellos.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(30), captured.recv()).await;
        hellos.push(next.expect("the signaling instance reconnects").unwrap());
        if hellos.len() == 1 {
            assert!(
                says("did not answer in time").await,
                "{}",
                sfu_server(&rest, id).await
            );
        }
    }
    assert!(
        says("did not prove it knows the cluster secret").await,
        "{}",
        sfu_server(&rest, id).await
    );
    let secret = SECRET.as_bytes();
    let hex_secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut proofs = Vec::new();
    for hello in &hellos {
        assert!(
            !hello.bytes.windows(secret.len()).any(|w| w == secret),
            "the secret crossed the wire"
        );
        let text = String::from_utf8_lossy(&hello.bytes).to_lowercase();
        assert!(
            !text.contains(&hex_secret),
            "the secret crossed the wire in hex"
        );
        let Request::Hello { proof, .. } = &hello.hello else {
            panic!("not a hello: {:?}", hello.hello)
        };
        // What was received is the HMAC bound to this very connection, and to nothing else.
        assert_eq!(*proof, Proof::new(secret, Role::Signaling, &hello.exporter));
        for other in &hellos {
            if other.exporter != hello.exporter {
                assert!(
                    proof
                        .verify(secret, Role::Signaling, &other.exporter)
                        .is_err()
                );
            }
        }
        proofs.push(proof.clone());
    }
    assert_ne!(proofs[0], proofs[1]);
    assert_ne!(proofs[1], proofs[2]);
    assert_ne!(proofs[0], proofs[2]);

    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let view = sfu_server(&rest, id).await;
        assert_ne!(view["health"], "healthy", "{view}");
        assert!(
            view["load"].is_null(),
            "the rogue's load was believed: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A channel cannot be placed on it: there is no trusted node.
    let channel = rest.create_channel(true).await;
    let mut client = SfuClient::join(&server.ws_url(), &rest, &channel, "someone").await;
    let reply = client
        .request(json!({ "type": "call", "isSFU": true, "sdp": "v=0\r\n" }))
        .await;
    assert_eq!(reply["code"], "sfu_unavailable", "{reply}");
}

/// A new honest connection from 127.0.0.1, as a signaling instance makes: it must be welcomed
/// (with the node's own proof) within 10 s.
async fn honest_connection_authenticates(node: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let endpoint = hostile_endpoint();
        let connection = connect(&endpoint, node)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let keys = exporter(&connection);
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        let hello = hello_with(Proof::new(SECRET.as_bytes(), Role::Signaling, &keys));
        send.write_all(&hello).await.map_err(|e| e.to_string())?;
        let reply = read_frame::<Response, _>(&mut recv, MAX_HELLO_FRAME).await;
        connection.close(0u32.into(), b"done");
        match reply {
            Ok(Response::Welcome { proof, .. })
                if proof.verify(SECRET.as_bytes(), Role::Node, &keys).is_ok() =>
            {
                Ok(())
            }
            other => Err(format!("not welcomed: {other:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "no welcome within 10 s".to_owned())?
}

/// Sends `bytes` as the first stream's content; returns the node's reply frame (if any) and the
/// reason the node closed the connection.
async fn send_raw_hello(
    connection: &quinn::Connection,
    bytes: &[u8],
) -> (Option<Response>, quinn::ConnectionError) {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        read_frame::<Response, _>(&mut recv, MAX_HELLO_FRAME),
    )
    .await
    .expect("the node answers or closes")
    .ok();
    let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the node closes a refused connection");
    (reply, closed)
}

async fn node_load(rest: &Rest, id: u64) -> Value {
    sfu_server(rest, id).await["load"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_control_clients_are_refused_counted_and_closed_while_an_honest_instance_keeps_working()
 {
    let server = Server::start(&["--cluster-secret", SECRET]);
    let rest = server.rest();
    let node = SfuNode::start(SECRET, Some(&server));
    let healthy = eventually(Duration::from_secs(10), || async {
        sfu_server(&rest, node.id()).await["health"] == "healthy"
    })
    .await;
    assert!(healthy, "{}", sfu_server(&rest, node.id()).await);
    let endpoint = hostile_endpoint();

    // 1. A flood of connections that never authenticate, from one source address: the node
    //    holds MAX_UNAUTHENTICATED_PER_SOURCE = 2 of them and refuses the rest before any TLS
    //    work, so the flood cannot take the slots other sources need.
    const FLOOD: usize = 48;
    const PER_SOURCE: usize = 2;
    let flooder = hostile_endpoint_from(Ipv4Addr::new(127, 0, 0, 2), Default::default());
    let attempts =
        futures_util::future::join_all((0..FLOOD).map(|_| connect(&flooder, node.control))).await;
    let refused = attempts
        .iter()
        .filter(|a| matches!(a, Err(quinn::ConnectionError::ConnectionClosed(_))))
        .count();
    let held: Vec<_> = attempts.into_iter().filter_map(Result::ok).collect();
    assert!(
        held.len() == PER_SOURCE && refused == FLOOD - PER_SOURCE,
        "{} held, {refused} refused",
        held.len()
    );
    // The node speaks no datagrams: none of its memory for a stranger to fill.
    assert_eq!(held[0].max_datagram_size(), None);
    // While the flood holds its slots, a new honest connection from another source gets in.
    assert_eq!(honest_connection_authenticates(node.control).await, Ok(()));
    for connection in &held {
        assert!(
            connection.close_reason().is_none(),
            "the flood's connections were still held while the honest one authenticated"
        );
    }
    // Each held one is closed by the node within a few seconds of saying nothing.
    let started = Instant::now();
    for connection in &held {
        let closed = tokio::time::timeout(Duration::from_secs(15), connection.closed())
            .await
            .expect("a silent connection is closed");
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if &c.reason[..] == b"no hello in time"),
            "{closed:?}"
        );
    }
    println!("silent connections closed after {:?}", started.elapsed());
    // After the flood too.
    assert_eq!(honest_connection_authenticates(node.control).await, Ok(()));

    // 2. One that opens its stream and sends a 4 GiB length prefix (and nothing else).
    let connection = connect(&endpoint, node.control).await.unwrap();
    let (reply, _) = send_raw_hello(&connection, &[0xff, 0xff, 0xff, 0xff]).await;
    match reply {
        Some(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("exceeds the limit"), "{message}");
        }
        other => panic!("no refusal: {other:?}"),
    }

    // 3. One with a proof made from a wrong secret.
    let connection = connect(&endpoint, node.control).await.unwrap();
    let wrong = Proof::new(
        b"not-the-cluster-secret-00000",
        Role::Signaling,
        &exporter(&connection),
    );
    let (reply, closed) = send_raw_hello(&connection, &hello_with(wrong)).await;
    assert!(
        matches!(&reply, Some(Response::Error { code: ErrorCode::Unauthorized, message }) if message.contains("proof")),
        "{reply:?}"
    );
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );

    // 4. One replaying a proof that was right — for another connection.
    let captured = {
        let first = connect(&endpoint, node.control).await.unwrap();
        Proof::new(SECRET.as_bytes(), Role::Signaling, &exporter(&first))
    };
    let connection = connect(&endpoint, node.control).await.unwrap();
    let (reply, _) = send_raw_hello(&connection, &hello_with(captured)).await;
    assert!(
        matches!(
            &reply,
            Some(Response::Error {
                code: ErrorCode::Unauthorized,
                ..
            })
        ),
        "{reply:?}"
    );

    // 5. One speaking another protocol version gets told so.
    let connection = connect(&endpoint, node.control).await.unwrap();
    let mut old = hello_with(Proof::new(
        SECRET.as_bytes(),
        Role::Signaling,
        &exporter(&connection),
    ));
    old[4] = 1;
    let (reply, _) = send_raw_hello(&connection, &old).await;
    assert!(
        matches!(&reply, Some(Response::Error { code: ErrorCode::Unauthorized, message }) if message.contains("version")),
        "{reply:?}"
    );

    // Control: the right proof on this connection is welcomed, with the node's own proof.
    let connection = connect(&endpoint, node.control).await.unwrap();
    let keys = exporter(&connection);
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&hello_with(Proof::new(
        SECRET.as_bytes(),
        Role::Signaling,
        &keys,
    )))
    .await
    .unwrap();
    match read_frame::<Response, _>(&mut recv, MAX_HELLO_FRAME).await {
        Ok(Response::Welcome { proof, .. }) => {
            assert_eq!(proof.verify(SECRET.as_bytes(), Role::Node, &keys), Ok(()));
        }
        other => panic!("not welcomed: {other:?}"),
    }
    connection.close(0u32.into(), b"done");

    // The node counted every refusal, and its honest instance never lost it.
    let counted = eventually(Duration::from_secs(10), || async {
        let load = node_load(&rest, node.id()).await;
        load["controlOverCapacity"].as_u64() >= Some(refused as u64)
            && load["controlHelloTimeouts"].as_u64() >= Some(held.len() as u64)
            // huge prefix, wrong proof, replay, old version, and the connection only used
            // to capture a proof (closed without a hello)
            && load["controlBadHellos"].as_u64() >= Some(4)
    })
    .await;
    assert!(counted, "{}", node_load(&rest, node.id()).await);
    assert_eq!(sfu_server(&rest, node.id()).await["health"], "healthy");

    // The honest instance still places rooms on the node and a participant publishes.
    let channel = rest.create_channel(true).await;
    let mut client = SfuClient::join(&server.ws_url(), &rest, &channel, "honest").await;
    client.publish().await;
    client.publish_connected().await;
    let (status, body) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sfuServerId"].as_u64(), Some(node.id()), "{body}");
}

/// The Initial datagrams of `count` distinct connection attempts (distinct destination
/// connection ids), as a client would send them: a quinn client connects to a UDP socket of ours
/// that records them and never answers.
async fn captured_initials(count: usize) -> Vec<Vec<u8>> {
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = sink.local_addr().unwrap();
    let endpoint = hostile_endpoint();
    let connecting: Vec<_> = (0..count)
        .map(|_| endpoint.connect(target, "mooyaho-sfu").unwrap())
        .collect();
    let (mut seen, mut initials) = (HashSet::new(), Vec::new());
    let mut buf = vec![0; 2048];
    while initials.len() < count {
        let (len, _) = tokio::time::timeout(Duration::from_secs(10), sink.recv_from(&mut buf))
            .await
            .expect("the client sends its Initials")
            .unwrap();
        let datagram = &buf[..len];
        // Long header: flags, version (4), destination connection id length, the id.
        let id_len = usize::from(datagram[5]);
        if seen.insert(datagram[6..6 + id_len].to_vec()) {
            initials.push(datagram.to_vec());
        }
    }
    drop(connecting);
    endpoint.close(0u32.into(), b"");
    initials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spoofed_initials_get_a_retry_and_take_no_slot_from_honest_instances() {
    let server = Server::start(&["--cluster-secret", SECRET]);
    let node = SfuNode::start(SECRET, Some(&server));
    // More sources than the node has unauthenticated slots (16), one Initial each: without
    // address validation each would hold a slot for its whole handshake timeout.
    const SOURCES: u8 = 24;
    let initials = captured_initials(usize::from(SOURCES)).await;
    let mut spoofed = Vec::new();
    for (i, initial) in (0..SOURCES).zip(&initials) {
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 1, 10 + i), 0))
            .await
            .unwrap();
        socket.send_to(initial, node.control).await.unwrap();
        spoofed.push(socket);
    }
    // While those "handshakes" would be pending, an honest connection gets in.
    assert_eq!(honest_connection_authenticates(node.control).await, Ok(()));
    // Each spoofed source got one stateless Retry (long header, type 3) and nothing else: no
    // Initial/Handshake flight a real handshake would have started.
    let mut buf = vec![0; 2048];
    for socket in &spoofed {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("the node answers a fresh Initial with a Retry")
            .unwrap();
        assert!(len > 0 && buf[0] & 0x80 != 0, "not a long header");
        assert_eq!((buf[0] >> 4) & 0x03, 3, "not a Retry packet");
        let more = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await;
        assert!(
            more.is_err(),
            "the node sent more than a Retry to an unvalidated source"
        );
    }
    assert_eq!(honest_connection_authenticates(node.control).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_proof_that_never_reads_its_refusal_loses_its_slot_within_the_reply_timeout() {
    let server = Server::start(&["--cluster-secret", SECRET]);
    let rest = server.rest();
    let node = SfuNode::start(SECRET, Some(&server));
    // As many such clients as the node has unauthenticated slots (16), each from its own
    // source, each advertising a 0-byte receive window: the node cannot send them a byte of
    // stream data, and its keep-alives keep the connections open.
    const CLIENTS: u8 = 16;
    let mut hostile = Vec::new();
    for i in 0..CLIENTS {
        let mut transport = quinn::TransportConfig::default();
        transport
            .stream_receive_window(0u32.into())
            .receive_window(0u32.into());
        let endpoint = hostile_endpoint_from(Ipv4Addr::new(127, 0, 2, 10 + i), transport);
        let connection = connect(&endpoint, node.control).await.unwrap();
        let wrong = Proof::new(
            b"not-the-cluster-secret-00000",
            Role::Signaling,
            &exporter(&connection),
        );
        let (mut send, recv) = connection.open_bi().await.unwrap();
        send.write_all(&hello_with(wrong)).await.unwrap();
        // Never read: the refusal cannot be delivered.
        hostile.push((endpoint, connection, send, recv));
    }
    let started = Instant::now();
    for (_, connection, _, _) in &hostile {
        let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed())
            .await
            .expect("the node lets a connection that never reads its refusal go");
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if &c.reason[..] == b"unauthorized"),
            "{closed:?}"
        );
    }
    println!(
        "non-reading refused connections closed after {:?}",
        started.elapsed()
    );
    assert_eq!(honest_connection_authenticates(node.control).await, Ok(()));
    let counted = eventually(Duration::from_secs(10), || async {
        node_load(&rest, node.id()).await["controlBadHellos"].as_u64() >= Some(u64::from(CLIENTS))
    })
    .await;
    assert!(counted, "{}", node_load(&rest, node.id()).await);
    // A new signaling instance registers the node and finds it healthy.
    let second = Server::start(&["--cluster-secret", SECRET]);
    let rest = second.rest();
    let (status, body) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({ "address": node.control.to_string(), "fingerprint": node.fingerprint })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_u64().unwrap();
    let healthy = eventually(Duration::from_secs(10), || async {
        sfu_server(&rest, id).await["health"] == "healthy"
    })
    .await;
    assert!(healthy, "{}", sfu_server(&rest, id).await);
}

/// A join wave keeps many requests in flight on one signaling instance's link at once (subscribe
/// offer, answer and speakers per join, each waiting for a busy worker). The node admits a
/// wave's worth of them together: the next request gets its stream at once instead of queueing
/// behind the ones in flight (64 streams made a 1,000-viewer wave's requests wait on the
/// client until signaling's 10 s timeout: `sfu_unavailable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_wave_s_requests_in_flight_do_not_hold_up_the_next_request() {
    const IN_FLIGHT: usize = 1_000;
    let node = SfuNode::start(SECRET, None);
    let connection = control_session(node.control, SECRET).await;
    // Requests the node is still waiting on (all but the last byte of their frame sent): each
    // holds its stream as a request parked at a busy worker does.
    let request = mooyaho_control::encode(&Request::Rooms);
    let mut in_flight = Vec::with_capacity(IN_FLIGHT);
    for i in 0..IN_FLIGHT {
        let (mut send, recv) = tokio::time::timeout(Duration::from_secs(5), connection.open_bi())
            .await
            .unwrap_or_else(|_| panic!("request {i} waited for a stream behind {i} in flight"))
            .unwrap();
        send.write_all(&request[..request.len() - 1]).await.unwrap();
        in_flight.push((send, recv));
    }
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        control_call(&connection, &Request::Rooms),
    )
    .await
    .expect("the next request is answered while 1,000 are in flight");
    assert!(matches!(next, Response::Rooms { .. }), "{next:?}");
    // The parked ones are still served once complete.
    let (mut send, mut recv) = in_flight.pop().unwrap();
    send.write_all(&request[request.len() - 1..]).await.unwrap();
    let _ = send.finish();
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        read_frame::<Response, _>(&mut recv, mooyaho_control::MAX_FRAME),
    )
    .await
    .expect("a parked request is answered once its frame is complete")
    .unwrap();
    assert!(matches!(reply, Response::Rooms { .. }), "{reply:?}");
}

#[test]
fn every_command_refuses_a_cluster_secret_under_16_characters() {
    let short = "fifteen-chars-x";
    assert_eq!(short.len(), 15);
    let runs: [&[&str]; 3] = [
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            API_KEY,
            "--cluster-secret",
            short,
        ],
        &["dev", "--listen", "127.0.0.1:0", "--cluster-secret", short],
        &[
            "sfu",
            "--control-listen",
            "127.0.0.1:0",
            "--cluster-secret",
            short,
        ],
    ];
    let dir = tempfile::tempdir().unwrap();
    for args in runs {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mooyaho"))
            .args(args)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let exited = child.try_wait().unwrap();
        if exited.is_none() {
            let _ = child.kill();
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            exited.is_some_and(|status| !status.success()),
            "{args:?} started"
        );
        assert!(
            stderr.contains("the cluster secret must be at least 16 characters"),
            "{args:?}: {stderr}"
        );
    }
}

/// Issue 13 item 1: a node restarted with its identity (`--data-dir`, same address) lost its
/// rooms, and says so: requests naming a room of its previous run get `unknown_room` — never
/// a room it created since for another channel — and `rooms` lists only what it hosts now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_answers_unknown_room_for_the_rooms_of_its_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let args = ["--control-listen", listen.as_str(), "--data-dir", &data_dir];

    let mut first = SfuNode::start_with(SECRET, None, &args);
    let connection = control_session(first.control, SECRET).await;
    let Response::Room { room: old } = control_call(&connection, &Request::CreateRoom).await else {
        panic!("no room");
    };
    let listed = control_call(&connection, &Request::Rooms).await;
    assert_eq!(
        listed,
        Response::Rooms {
            rooms: vec![old.clone()]
        }
    );
    first.kill();

    let second = SfuNode::start_with(SECRET, None, &args);
    assert_eq!(second.fingerprint, first.fingerprint);
    let connection = control_session(second.control, SECRET).await;
    let Response::Room { room: new } = control_call(&connection, &Request::CreateRoom).await else {
        panic!("no room");
    };
    assert_ne!(new, old, "a restarted node reused a room name");
    let listed = control_call(&connection, &Request::Rooms).await;
    assert_eq!(
        listed,
        Response::Rooms {
            rooms: vec![new.clone()]
        }
    );
    for request in [
        Request::SubscribeOffer {
            room: old.clone(),
            session: "s".into(),
        },
        Request::Publish {
            room: old.clone(),
            session: "s".into(),
            offer: "v=0".into(),
        },
        Request::CloseRoom { room: old.clone() },
        Request::CloseRoom {
            room: "not-a-room".into(),
        },
    ] {
        let reply = control_call(&connection, &request).await;
        assert!(
            matches!(
                reply,
                Response::Error {
                    code: ErrorCode::UnknownRoom,
                    ..
                }
            ),
            "{request:?} → {reply:?}"
        );
    }
    // The room of this run is untouched by all that.
    let offer = Request::SubscribeOffer {
        room: new.clone(),
        session: "s".into(),
    };
    assert_eq!(
        control_call(&connection, &offer).await,
        Response::Sdp { sdp: None }
    );
}

async fn metrics_text(server: &Server) -> String {
    reqwest::Client::new()
        .get(server.url("/metrics"))
        .bearer_auth(&server.api_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A per-node counter in `server`'s `/metrics`: `name{node="id"}`.
async fn node_counter(server: &Server, name: &str, node: u64) -> u64 {
    let text = metrics_text(server).await;
    let prefix = format!("{name}{{node=\"{node}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Issue 13 review (the per-node queues and the placement check of 8f454ad/410726a had
/// domain-level tests only): a node that really authenticates (it knows the cluster secret — a
/// compromised or broken node) and is registered floods its events stream, over real QUIC, with
/// reports about channels it does not hold: renegotiations, speaker rankings and transport
/// closures naming an honest channel's members, 700 every 200 ms for 5 s. A real
/// `mooyaho server` ignores every one (counted per node in `/metrics`, the excess dropped and
/// counted), never asks the rogue for an offer, stays responsive (REST and a new WebSocket member
/// during the flood), and the honest channel on a real `mooyaho sfu` is unharmed: no forged
/// speaker ranking reaches its members, no restart, media keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registered_node_flooding_events_for_channels_it_does_not_hold_is_ignored_and_counted() {
    const TICKS: u64 = 25;
    let server = Server::start(&["--cluster-secret", SECRET]);
    let rest = server.rest();
    let honest = SfuNode::start(SECRET, Some(&server));
    let healthy = eventually(Duration::from_secs(10), || async {
        sfu_server(&rest, honest.id()).await["health"] == "healthy"
    })
    .await;
    assert!(healthy, "{}", sfu_server(&rest, honest.id()).await);

    // The honest channel: two webrtc-crate members streaming, and one that only listens and
    // records every message it gets.
    let channel = rest.create_channel(true).await;
    let mut clients = Vec::new();
    for name in ["honest-a", "honest-b"] {
        let mut client = SfuClient::join(&server.ws_url(), &rest, &channel, name).await;
        client.publish().await;
        clients.push(client);
    }
    let streams: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.stream_media(0xC0 + i as u8, Duration::from_millis(20)))
        .collect();
    let flowing = media_flows_between(&clients, 0, Instant::now(), Duration::from_secs(15)).await;
    assert!(flowing.is_some(), "media never flowed");
    let (listener, _) = support::Ws::enter(&server.ws_url(), &rest, &channel, "listener").await;
    let heard: Arc<Mutex<Vec<Value>>> = Arc::default();
    let mut listening = listener.into_stream();
    let recorder = heard.clone();
    let listen = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(frame)) = listening.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame
                && let Ok(message) = serde_json::from_str::<Value>(&text)
            {
                recorder.lock().unwrap().push(message);
            }
        }
    });

    // The rogue: a valid welcome, load reports, and the flood naming the honest members.
    let (a, b) = (clients[0].id.clone(), clients[1].id.clone());
    let flood = move |tick: u64| -> Vec<Event> {
        if tick >= TICKS {
            return Vec::new();
        }
        let mut events = Vec::new();
        for i in 0..100 {
            // Room names as nodes make them ("<incarnation>-<worker>.<room>") and plain guesses.
            let room = format!("{tick}-0.{i}");
            for n in 0..5 {
                events.push(Event::RenegotiationNeeded {
                    room: format!("{room}/{n}"),
                    session: a.clone(),
                });
            }
            events.push(Event::ActiveSpeakers {
                room: room.clone(),
                member: a.clone(),
                speakers: vec![mooyaho_control::Speaker {
                    session: b.clone(),
                    level: 99,
                }],
            });
            events.push(Event::TransportClosed {
                room,
                session: b.clone(),
                side: "publish".into(),
                reason: "forged".into(),
            });
        }
        events
    };
    let rogue = rogue_node(
        |_, exporter| {
            Some(Response::Welcome {
                workers: 1,
                proof: Proof::new(SECRET.as_bytes(), Role::Node, exporter),
            })
        },
        flood,
    );
    let address = rogue.endpoint.local_addr().unwrap().to_string();
    let (status, body) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({ "address": address, "fingerprint": rogue.fingerprint })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rogue_id = body["id"].as_u64().unwrap();

    // During the flood: REST answers, a new member gets in, the rogue looks like a node.
    let flooding = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut joined = None;
    while flooding.elapsed() < Duration::from_millis(TICKS * 200) {
        let asked = Instant::now();
        let view = sfu_server(&rest, rogue_id).await;
        slowest = slowest.max(asked.elapsed());
        assert!(view["lastError"].is_null(), "{view}");
        if joined.is_none() {
            let asked = Instant::now();
            let newcomer = support::Ws::join(&server.ws_url(), &rest, &channel, "newcomer").await;
            joined = Some((asked.elapsed(), newcomer));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let joined = joined.map(|(took, _)| took);
    let ignored_total = "mooyaho_sfu_node_reports_ignored_total";
    let dropped_total = "mooyaho_sfu_node_reports_dropped_total";
    // Everything queued is handled (ignored) soon after the flood ends.
    let settled = eventually(Duration::from_secs(30), || async {
        let ignored = node_counter(&server, ignored_total, rogue_id).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        ignored > 0 && node_counter(&server, ignored_total, rogue_id).await == ignored
    })
    .await;
    let ignored = node_counter(&server, ignored_total, rogue_id).await;
    let dropped = node_counter(&server, dropped_total, rogue_id).await;
    eprintln!(
        "rogue flood of {} reports: {ignored} ignored, {dropped} dropped (rest coalesced); slowest \
         REST answer during it {slowest:?}; a new member joined in {joined:?}",
        TICKS * 700
    );
    assert!(settled, "the ignored count never settled: {ignored}");
    assert!(ignored > 0);
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    assert!(joined.is_some(), "no newcomer joined during the flood");

    // Signaling never asked the rogue for an offer or a ranking on the members' behalf.
    let asked: Vec<Request> = rogue.requests.lock().unwrap().clone();
    assert!(
        asked.iter().all(|r| matches!(r, Request::Rooms)),
        "signaling acted on the rogue's reports: {asked:?}"
    );
    // No forged ranking reached the channel; the honest members restart nothing and their
    // media still advances.
    let forged: Vec<Value> = heard
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "activeSpeakers")
        .cloned()
        .collect();
    assert!(forged.is_empty(), "{forged:?}");
    // Nor did its forged transport closures become events (logs, webhooks, metrics).
    let metrics = metrics_text(&server).await;
    assert!(
        !metrics.contains(r#"kind="sfu_transport_closed""#),
        "forged closures were recorded"
    );
    let before = audio_received(&clients).await;
    let advanced = eventually(Duration::from_secs(10), || async {
        let now = audio_received(&clients).await;
        now.iter().zip(&before).all(|(now, then)| now > then)
    })
    .await;
    assert!(advanced, "the honest members' media stopped: {before:?}");
    for client in &clients {
        assert_eq!(client.sub_state.borrow().restarts, 0, "{}", client.name);
    }
    assert_eq!(
        sfu_server(&rest, honest.id()).await["health"],
        "healthy",
        "the honest node"
    );
    listen.abort();
    for stream in streams {
        stream.abort();
    }
}
