//! The fleet's view of one node over a real QUIC control connection on loopback: a fake node
//! that speaks the hello (right proofs both ways) and sends load reports when the test says, and
//! a UDP relay between the two that can be cut, as when a node is killed (no CONNECTION_CLOSE,
//! no packet at all). What these prove: a node whose connection dies is unhealthy at once (a
//! silent one after the QUIC idle timeout), a node that is connected but slow to report is
//! failed only by the 3 s fallback, and a link that comes back counts only after a fresh report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mooyaho_control::proof::{EXPORTER_LABEL, EXPORTER_LEN};
use mooyaho_control::{
    ALPN, Event, LINK_IDLE_TIMEOUT, LINK_KEEP_ALIVE, Load, MAX_HELLO_FRAME, Proof, Request,
    Response, Role, read_frame, write_frame,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::liveness::HEALTH_WINDOW;
use super::{Fleet, FleetEvents};
use crate::domain::ids::{InstanceId, SfuServerId};
use crate::domain::model::NewSfuServer;
use crate::domain::ports::{NodeReport, NodeStatus, SfuNodes, SfuRegistry};
use crate::store::EmbeddedStore;

const SECRET: &str = "cluster-secret-0123456789abcdef";
/// Generous bound for things that happen "soon" (never a performance assertion).
const SOON: Duration = Duration::from_secs(10);

/// One welcomed control connection of the fake node; the test writes its events.
struct NodeLink {
    connection: quinn::Connection,
    events: quinn::SendStream,
}

impl NodeLink {
    /// Sends a load report; returns the instant just before (the fleet's receipt is later).
    async fn report(&mut self) -> Instant {
        let at = Instant::now();
        write_frame(&mut self.events, &Event::Load(Load::default()))
            .await
            .expect("the report is written");
        at
    }
}

/// A node as far as the control link goes: its own certificate, the hello with proofs both
/// ways, the events stream; each welcomed connection is handed to the test.
fn fake_node() -> (quinn::Endpoint, String, mpsc::UnboundedReceiver<NodeLink>) {
    let certified = rcgen::generate_simple_self_signed(vec!["mooyaho-sfu".to_owned()]).unwrap();
    let der = certified.cert.der().clone();
    let fingerprint = mooyaho_control::fingerprint(der.as_ref());
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key.into())
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(LINK_IDLE_TIMEOUT.try_into().unwrap()))
        .keep_alive_interval(Some(LINK_KEEP_ALIVE));
    config.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let (links, receiver) = mpsc::unbounded_channel();
    let accept = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            let links = links.clone();
            tokio::spawn(async move {
                let connection = incoming.await.unwrap();
                let mut exporter = [0; EXPORTER_LEN];
                connection
                    .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
                    .unwrap();
                let (mut send, mut recv) = connection.accept_bi().await.unwrap();
                match read_frame::<Request, _>(&mut recv, MAX_HELLO_FRAME).await {
                    Ok(Request::Hello { proof, .. }) => {
                        assert_eq!(
                            proof.verify(SECRET.as_bytes(), Role::Signaling, &exporter),
                            Ok(())
                        );
                    }
                    other => panic!("not a hello: {other:?}"),
                }
                let welcome = Response::Welcome {
                    workers: 1,
                    proof: Proof::new(SECRET.as_bytes(), Role::Node, &exporter),
                };
                write_frame(&mut send, &welcome).await.unwrap();
                let _ = send.finish();
                let events = connection.open_uni().await.unwrap();
                let _ = links.send(NodeLink { connection, events });
            });
        }
    });
    (endpoint, fingerprint, receiver)
}

/// A UDP relay in front of `node`; once cut, nothing crosses it either way.
struct Relay {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Relay {
    async fn start(node: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(node).await.unwrap();
        let address = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let client = Arc::new(Mutex::new(None));
        let inbound = {
            let (front, back, cut, client) =
                (front.clone(), back.clone(), cut.clone(), client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    if !cut.load(Ordering::Relaxed) {
                        let _ = back.send(&buf[..n]).await;
                    }
                }
            })
        };
        let outbound = {
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 65536];
                loop {
                    // An ICMP error from a send surfaces here once: not the end of the relay.
                    let Ok(n) = back.recv(&mut buf).await else {
                        continue;
                    };
                    let to = *client.lock().unwrap();
                    if let (false, Some(to)) = (cut.load(Ordering::Relaxed), to) {
                        let _ = front.send_to(&buf[..n], to).await;
                    }
                }
            })
        };
        Self {
            address,
            cut,
            tasks: [inbound, outbound],
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A fleet whose registry holds one node at `address`.
async fn fleet_of_one(
    address: SocketAddr,
    fingerprint: String,
) -> (Arc<Fleet>, FleetEvents, SfuServerId) {
    let store = Arc::new(EmbeddedStore::in_memory());
    let record = store
        .create_sfu_server(&NewSfuServer {
            address: address.to_string(),
            fingerprint: Some(fingerprint),
        })
        .await
        .unwrap();
    let (fleet, events) = Fleet::start(
        store,
        InstanceId::from("instance-under-test"),
        SECRET.into(),
    )
    .unwrap();
    (fleet, events, record.id)
}

async fn next_report(events: &mut FleetEvents) -> NodeReport {
    let (_, report) = tokio::time::timeout(SOON, events.recv())
        .await
        .expect("a node report in time")
        .expect("the fleet lives");
    report
}

async fn next_link(links: &mut mpsc::UnboundedReceiver<NodeLink>) -> NodeLink {
    tokio::time::timeout(SOON, links.recv())
        .await
        .expect("the fleet connects in time")
        .expect("the fake node lives")
}

/// Polls the node's status every 10 ms until `done` holds; returns that status.
async fn status_when(
    fleet: &Fleet,
    node: SfuServerId,
    done: impl Fn(&NodeStatus) -> bool,
) -> NodeStatus {
    tokio::time::timeout(SOON, async {
        loop {
            let status = fleet.status(node);
            if done(&status) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("status never changed: {:?}", fleet.status(node)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_falls_silent_is_unhealthy_when_its_connection_times_out_not_its_reports() {
    let (endpoint, fingerprint, mut links) = fake_node();
    let relay = Relay::start(endpoint.local_addr().unwrap()).await;
    let (fleet, mut events, node) = fleet_of_one(relay.address, fingerprint).await;
    assert_eq!(next_report(&mut events).await, NodeReport::LinkUp);
    let mut link = next_link(&mut links).await;
    link.report().await;
    status_when(&fleet, node, |s| s.healthy).await;

    // Killed as by SIGKILL: its last report is fresh, and no packet comes any more.
    let reported = link.report().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    relay.cut();
    let cut = Instant::now();
    // The first look that finds it unhealthy finds it disconnected: the connection's idle
    // timeout, not the staleness of its reports, is what failed it.
    let failed = status_when(&fleet, node, |s| !s.healthy).await;
    let took = cut.elapsed();
    assert!(!failed.connected, "{failed:?} {took:?} after the cut");
    assert_eq!(next_report(&mut events).await, NodeReport::LinkDown);
    eprintln!(
        "silent node: unhealthy {took:?} after the cut ({:?} after its last report; idle \
         timeout {LINK_IDLE_TIMEOUT:?}, report window {HEALTH_WINDOW:?})",
        reported.elapsed() - cut.elapsed() + took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_node_that_stops_reporting_is_failed_only_when_its_last_report_is_stale() {
    let (endpoint, fingerprint, mut links) = fake_node();
    let (fleet, mut events, node) = fleet_of_one(endpoint.local_addr().unwrap(), fingerprint).await;
    assert_eq!(next_report(&mut events).await, NodeReport::LinkUp);
    let mut link = next_link(&mut links).await;
    // Its workers are stuck, say: one last report, then nothing but QUIC keep-alives.
    let reported = link.report().await;
    status_when(&fleet, node, |s| s.healthy).await;
    let failed = status_when(&fleet, node, |s| !s.healthy).await;
    let after = reported.elapsed();
    assert!(failed.connected, "the connection stays up: {failed:?}");
    assert!(
        after >= HEALTH_WINDOW,
        "failed {after:?} after its last report, before the {HEALTH_WINDOW:?} window"
    );
    assert!(events.try_recv().is_err(), "no link change");
    drop(link);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_link_is_unhealthy_at_once_and_healthy_again_only_after_a_fresh_report() {
    let (endpoint, fingerprint, mut links) = fake_node();
    let (fleet, mut events, node) = fleet_of_one(endpoint.local_addr().unwrap(), fingerprint).await;
    assert_eq!(next_report(&mut events).await, NodeReport::LinkUp);
    let mut link = next_link(&mut links).await;
    link.report().await;
    status_when(&fleet, node, |s| s.healthy).await;

    // The node closes the link (a restart, a flap) right after a report.
    link.report().await;
    link.connection.close(0u32.into(), b"flap");
    assert_eq!(next_report(&mut events).await, NodeReport::LinkDown);
    let down = fleet.status(node);
    assert!(!down.healthy && !down.connected, "{down:?}");

    // The link comes back at once; the report from before the drop is fresh, and not enough.
    assert_eq!(next_report(&mut events).await, NodeReport::LinkUp);
    let mut link = next_link(&mut links).await;
    let up = fleet.status(node);
    assert!(up.connected && !up.healthy, "{up:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fleet.status(node).healthy,
        "healthy without a report on the new link"
    );
    link.report().await;
    status_when(&fleet, node, |s| s.healthy).await;
}
