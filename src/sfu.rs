//! `mooyaho sfu`: one SFU media node (UDP workers + QUIC control server), and the same node
//! embedded in `mooyaho dev`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use std::time::Duration;

use mooyaho_control::proof::MIN_SECRET_LEN;
use mooyaho_media::sdp::PublishLimits;
use mooyaho_media::{
    ControlConfig, ControlIdentity, ControlServer, Node, NodeConfig, PublishPolicy, PublishRate,
};

/// Options of `mooyaho sfu`.
#[derive(Debug, Args)]
pub(crate) struct SfuOptions {
    /// QUIC control address signaling instances connect to.
    #[arg(long, env = "MOOYAHO_CONTROL_LISTEN", default_value = "127.0.0.1:4433")]
    control_listen: SocketAddr,
    /// Address the media (UDP) sockets bind to.
    #[arg(long, env = "MOOYAHO_RTC_BIND", default_value = "127.0.0.1")]
    rtc_bind: IpAddr,
    /// Address announced to clients in SDP candidates, most preferred first (repeat or
    /// comma-separate). Default: --rtc-bind, or when that is 0.0.0.0 / `::`, every address of
    /// this host's interfaces in that family (loopback only when there is no other).
    #[arg(long, env = "MOOYAHO_ANNOUNCE_IP", value_delimiter = ',')]
    announce_ip: Vec<IpAddr>,
    /// ICE-TCP (RFC 6544): also listen on TCP, on each worker's UDP port number when free, and
    /// announce passive TCP candidates after the UDP ones, for clients whose UDP is blocked.
    #[arg(long, env = "MOOYAHO_ICE_TCP")]
    pub(crate) ice_tcp: bool,
    /// With --ice-tcp: open TCP connections allowed in all, and from one client address.
    #[arg(long, env = "MOOYAHO_ICE_TCP_MAX_CONNECTIONS", default_value_t = mooyaho_media::IceTcpLimits::default().max_connections)]
    pub(crate) ice_tcp_max_connections: usize,
    #[arg(long, env = "MOOYAHO_ICE_TCP_MAX_PER_IP", default_value_t = mooyaho_media::IceTcpLimits::default().max_per_ip)]
    pub(crate) ice_tcp_max_per_ip: usize,
    /// UDP ports, one per worker: `40000-40001`, `40000,40001`, or `0` for any free ports.
    #[arg(long, env = "MOOYAHO_RTC_PORTS", default_value = "0")]
    rtc_ports: String,
    /// Worker threads (default: one per core).
    #[arg(long, env = "MOOYAHO_WORKERS")]
    workers: Option<usize>,
    /// Subscribers a room keeps on its home worker before spreading over the others.
    #[arg(long, env = "MOOYAHO_SPILL_AFTER", default_value_t = mooyaho_media::node::DEFAULT_SPILL_AFTER)]
    spill_after: usize,
    /// Client transports (publish and subscribe PeerConnections) this node holds at once; at it
    /// new members are refused (one already here may open its other PeerConnection) and
    /// signaling serves them from other nodes (0 = no cap).
    #[arg(long, env = "MOOYAHO_MAX_TRANSPORTS", default_value_t = 0)]
    max_transports: usize,
    #[command(flatten)]
    publish: PublishOptions,
    /// Secret shared with the signaling instances, at least 16 characters.
    #[arg(long, env = "MOOYAHO_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: String,
    /// Control connections allowed at once before they prove the cluster secret; more are
    /// refused (each has a few seconds to send its hello).
    #[arg(long, env = "MOOYAHO_CONTROL_MAX_UNAUTHENTICATED", default_value_t = mooyaho_media::control::DEFAULT_MAX_UNAUTHENTICATED)]
    control_max_unauthenticated: usize,
    /// Cap of what a publisher may send on one video track, bits/s (all simulcast layers and
    /// RTX); packets beyond it are dropped and counted.
    #[arg(long, env = "MOOYAHO_MAX_TRACK_BITRATE", default_value_t = DEFAULT_MAX_TRACK_BITRATE)]
    pub(crate) max_track_bitrate: u64,
    /// The same cap for an audio track, bits/s.
    #[arg(long, env = "MOOYAHO_MAX_AUDIO_TRACK_BITRATE", default_value_t = DEFAULT_MAX_AUDIO_TRACK_BITRATE)]
    pub(crate) max_audio_track_bitrate: u64,
    /// Directory that keeps the node's identity (control certificate and key) across restarts,
    /// so it keeps its fingerprint and its registration. Without it every start is a new node.
    #[arg(long, env = "MOOYAHO_SFU_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Register this node with a signaling server at start (`http://host:port`).
    #[arg(long, env = "MOOYAHO_REGISTER_URL")]
    register_url: Option<String>,
    /// The signaling REST API key, for --register-url.
    #[arg(long, env = "MOOYAHO_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// On SIGTERM (or Ctrl-C), how long to wait for the signaling server to move this node's
    /// rooms to other nodes (`POST /sfu-servers/{id}/drain`) before exiting; a second signal
    /// exits at once. Needs --register-url. 0 exits at once.
    #[arg(long, env = "MOOYAHO_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    drain_timeout_secs: u64,
}

/// `--max-track-bitrate` default: 10 Mbit/s per video track.
pub(crate) const DEFAULT_MAX_TRACK_BITRATE: u64 = 10_000_000;
/// `--max-audio-track-bitrate` default: 256 kbit/s per audio track.
pub(crate) const DEFAULT_MAX_AUDIO_TRACK_BITRATE: u64 = 256_000;

/// sfu-core's configuration with the per-track publisher caps from the command line.
pub(crate) fn core_config(video: u64, audio: u64) -> sfu_core::Config {
    sfu_core::Config {
        max_video_track_bitrate: sfu_core::Bitrate(video),
        max_audio_track_bitrate: sfu_core::Bitrate(audio),
        ..sfu_core::Config::default()
    }
}

/// What one publisher may ask of the node (`mooyaho sfu`, and `mooyaho dev`'s embedded node).
#[derive(Debug, Args)]
pub(crate) struct PublishOptions {
    /// m-lines one publish offer may have (any kind, accepted or not); more is `limit_exceeded`.
    #[arg(long, env = "MOOYAHO_MAX_PUBLISH_M_LINES", default_value_t = PublishLimits::default().max_media_sections)]
    max_publish_m_lines: usize,
    /// Audio tracks one publisher may send.
    #[arg(long, env = "MOOYAHO_MAX_PUBLISH_AUDIO", default_value_t = PublishLimits::default().max_audio_tracks)]
    max_publish_audio: usize,
    /// Video tracks one publisher may send.
    #[arg(long, env = "MOOYAHO_MAX_PUBLISH_VIDEO", default_value_t = PublishLimits::default().max_video_tracks)]
    max_publish_video: usize,
    /// Publishes a session may make at once in a room before `rate_limited`.
    #[arg(long, env = "MOOYAHO_PUBLISH_BURST", default_value_t = PublishRate::default().burst)]
    publish_burst: u32,
    /// Milliseconds that earn one more publish (0 = no publish rate limit).
    #[arg(long, env = "MOOYAHO_PUBLISH_INTERVAL_MS", default_value_t = PublishRate::default().interval.as_millis() as u64)]
    publish_interval_ms: u64,
}

impl PublishOptions {
    pub(crate) fn policy(&self) -> PublishPolicy {
        PublishPolicy {
            limits: PublishLimits {
                max_media_sections: self.max_publish_m_lines,
                max_audio_tracks: self.max_publish_audio,
                max_video_tracks: self.max_publish_video,
            },
            rate: PublishRate {
                burst: self.publish_burst,
                interval: Duration::from_millis(self.publish_interval_ms),
            },
        }
    }
}

/// A running node with its control server.
pub(crate) struct RunningNode {
    pub(crate) control: ControlServer,
    pub(crate) node: Arc<Node>,
}

/// Starts a node and its control server (inside a tokio runtime).
pub(crate) fn start_node(
    config: &NodeConfig,
    control_listen: SocketAddr,
    secret: String,
    max_unauthenticated: usize,
    identity: ControlIdentity,
) -> anyhow::Result<RunningNode> {
    let (node, events) = Node::start(config).context("starting media workers")?;
    let node = Arc::new(node);
    let control = ControlServer::start(
        node.clone(),
        events,
        ControlConfig {
            listen: control_listen,
            secret,
            max_unauthenticated,
            identity,
        },
    )
    .context("starting the QUIC control server")?;
    Ok(RunningNode { control, node })
}

pub(crate) async fn run(options: SfuOptions) -> anyhow::Result<()> {
    if options.cluster_secret.len() < MIN_SECRET_LEN {
        bail!("the cluster secret must be at least {MIN_SECRET_LEN} characters");
    }
    let workers = options
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let ports = parse_ports(&options.rtc_ports, workers)?;
    let config = NodeConfig {
        bind_ip: options.rtc_bind,
        ports,
        announced_ips: announced_ips(options.rtc_bind, &options.announce_ip)?,
        spill_after: options.spill_after,
        core: core_config(options.max_track_bitrate, options.max_audio_track_bitrate),
        publish: options.publish.policy(),
        ice_tcp: options.ice_tcp.then_some(mooyaho_media::IceTcpLimits {
            max_connections: options.ice_tcp_max_connections,
            max_per_ip: options.ice_tcp_max_per_ip,
        }),
        max_transports: options.max_transports,
    };
    let (identity, identity_note) = match &options.data_dir {
        Some(dir) => {
            let (identity, created) = ControlIdentity::load_or_create(dir)
                .with_context(|| format!("the node identity in {}", dir.display()))?;
            let verb = if created { "created" } else { "loaded" };
            (identity, format!("{verb} in {}", dir.display()))
        }
        None => (
            ControlIdentity::generate().context("generating the control certificate")?,
            "new (no --data-dir: a restart is a new node)".to_owned(),
        ),
    };
    let running = start_node(
        &config,
        options.control_listen,
        options.cluster_secret,
        options.control_max_unauthenticated,
        identity,
    )?;
    let control = running.control.local_addr()?;
    let fingerprint = running.control.fingerprint().to_owned();
    // Scripts and tests read these lines.
    println!("mooyaho sfu control on {control}");
    println!("  fingerprint: {fingerprint}");
    println!("  identity:    {identity_note}");
    for addr in running.node.addresses() {
        println!("  media:       udp {addr}");
    }
    for addr in running.node.tcp_addresses() {
        println!("  media:       tcp {addr} (ICE-TCP)");
    }
    let mut registry = None;
    if let Some(url) = &options.register_url {
        let key = options
            .api_key
            .as_deref()
            .context("--register-url needs --api-key")?;
        let announced = SocketAddr::new(
            options
                .announce_ip
                .first()
                .copied()
                .unwrap_or_else(|| control.ip()),
            control.port(),
        );
        let client = mooyaho_server_sdk::Mooyaho::new(url.as_str(), key)?;
        let registered = client
            .create_sfu_server(&announced.to_string(), Some(&fingerprint))
            .await
            .context("registering with the signaling server")?;
        println!("  registered:  id {}", registered.id);
        registry = Some((client, registered.id));
    }
    let failure = tokio::select! {
        () = crate::shutdown_signal() => None,
        failure = running.node.worker_failed() => Some(failure),
    };
    if failure.is_none()
        && let Some((client, id)) = &registry
    {
        let timeout = Duration::from_secs(options.drain_timeout_secs);
        tokio::select! {
            () = drain_before_exit(client, *id, timeout) => {}
            () = crate::shutdown_signal() => tracing::warn!("second signal: exiting without waiting for the drain"),
        }
    }
    drop(running);
    match failure {
        None => Ok(()),
        Some(failure) => Err(worker_died(&failure)),
    }
}

/// SIGTERM on a registered node: asks the signaling server to drain it (its rooms move to other
/// nodes, their members reconnect there) and waits until it hosts nothing, at most `timeout`. A
/// rolling upgrade is: SIGTERM, wait for the exit, start the new binary (with `--data-dir` it
/// keeps its record). If the server refuses (no other node could take the rooms) or cannot be
/// reached, the node exits anyway and the fleet's failover handles whatever it hosted.
async fn drain_before_exit(client: &mooyaho_server_sdk::Mooyaho, id: u64, timeout: Duration) {
    if timeout.is_zero() {
        return;
    }
    tracing::warn!(id, ?timeout, "stopping: draining this node first");
    if let Err(e) = client.drain_sfu_server(id).await {
        return tracing::warn!(id, error = %e, "drain refused or failed: exiting now");
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        match client.get_sfu_server(id).await {
            Ok(node) if node.drained => return tracing::warn!(id, "drained: exiting"),
            Ok(_) => {}
            Err(e) => tracing::warn!(id, error = %e, "drain: cannot read this node's state"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::warn!(id, ?timeout, "drain did not finish in time: exiting");
}

/// A dead worker lost its rooms and the node cannot serve them: the process exits non-zero so
/// its supervisor restarts it and the signaling servers, seeing the node gone, re-place rooms on
/// healthy nodes. Restarting the worker in place would leave clients of its rooms on transports
/// that no longer exist, with a node that still looks healthy.
pub(crate) fn worker_died(failure: &mooyaho_media::WorkerFailure) -> anyhow::Error {
    tracing::error!(
        worker = failure.worker,
        reason = %failure.reason,
        "media worker died or is stuck: exiting so the fleet re-places its rooms"
    );
    anyhow::anyhow!(
        "media worker {} failed ({}): exiting so the fleet re-places its rooms",
        failure.worker,
        failure.reason
    )
}

/// `a-b`, `a,b,…` or `0`: one port per worker.
fn parse_ports(text: &str, workers: usize) -> anyhow::Result<Vec<u16>> {
    let text = text.trim();
    if text == "0" {
        return Ok(vec![0; workers]);
    }
    let ports: Vec<u16> = if let Some((start, end)) = text.split_once('-') {
        let (start, end): (u16, u16) = (start.trim().parse()?, end.trim().parse()?);
        (start..=end).collect()
    } else {
        text.split(',')
            .map(|p| p.trim().parse())
            .collect::<Result<_, _>>()?
    };
    if ports.len() < workers || ports.contains(&0) {
        bail!("--rtc-ports must give one non-zero port per worker ({workers}), or be 0");
    }
    Ok(ports[..workers].to_vec())
}

/// The addresses a node puts in its SDP candidates: `announce` when given; otherwise the bind
/// address, or when that is unspecified (`0.0.0.0` / `::`), the host's interface addresses of
/// that family. Link-local addresses are left out (a candidate cannot carry their scope), and
/// loopback is used only when the host has nothing else, so a browser on another machine (or a
/// Firefox, which never pairs with a remote loopback candidate) gets addresses it can reach.
pub(crate) fn announced_ips(bind: IpAddr, announce: &[IpAddr]) -> anyhow::Result<Vec<IpAddr>> {
    if let Some(bad) = announce
        .iter()
        .find(|ip| ip.is_unspecified() || ip.is_multicast())
    {
        bail!("--announce-ip {bad} is not an address clients can send to");
    }
    if !announce.is_empty() {
        return Ok(announce.to_vec());
    }
    if !bind.is_unspecified() {
        return Ok(vec![bind]);
    }
    let interfaces = if_addrs::get_if_addrs().context("listing this host's addresses")?;
    Ok(host_candidates(
        bind,
        interfaces
            .iter()
            .filter(|i| !is_local_bridge(&i.name))
            .map(|i| i.ip()),
    ))
}

/// Container and VM bridges (docker0, br-…, veth…, virbr0, …): reachable from this host's guests
/// only, so announcing them would show every participant the host's internal layout and send
/// their checks nowhere useful.
fn is_local_bridge(interface: &str) -> bool {
    const PREFIXES: [&str; 11] = [
        "docker", "br-", "veth", "virbr", "vboxnet", "vmnet", "cni", "flannel", "cali", "lxc",
        "lxd",
    ];
    PREFIXES.iter().any(|p| interface.starts_with(p))
}

/// [`announced_ips`]'s choice among the host's addresses, for an unspecified `bind`.
fn host_candidates(bind: IpAddr, addresses: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let link_local = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    let mut usable: Vec<IpAddr> = addresses
        .filter(|ip| ip.is_ipv4() == bind.is_ipv4() && !link_local(ip) && !ip.is_multicast())
        .collect();
    usable.dedup();
    let (mut outward, loopback): (Vec<IpAddr>, Vec<IpAddr>) =
        usable.into_iter().partition(|ip| !ip.is_loopback());
    if outward.is_empty() {
        outward = loopback;
    }
    if outward.is_empty() {
        // No interface of that family at all: loopback still serves this machine's browsers.
        outward.push(if bind.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        });
    }
    outward
}

#[cfg(test)]
mod tests {
    use super::{announced_ips, host_candidates, is_local_bridge, parse_ports};
    use std::net::IpAddr;

    #[test]
    fn ports_parse() {
        assert_eq!(parse_ports("0", 2).unwrap(), vec![0, 0]);
        assert_eq!(parse_ports("40000-40003", 2).unwrap(), vec![40000, 40001]);
        assert_eq!(parse_ports("5,6", 2).unwrap(), vec![5, 6]);
        assert!(parse_ports("5", 2).is_err());
        assert!(parse_ports("x", 1).is_err());
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn announced_addresses_follow_the_flags_then_the_bind_address() {
        let announce = [ip("203.0.113.7"), ip("198.51.100.2")];
        assert_eq!(
            announced_ips(ip("0.0.0.0"), &announce).unwrap(),
            announce.to_vec()
        );
        assert_eq!(
            announced_ips(ip("10.0.0.5"), &[]).unwrap(),
            vec![ip("10.0.0.5")]
        );
        assert!(announced_ips(ip("0.0.0.0"), &[ip("0.0.0.0")]).is_err());
        assert!(announced_ips(ip("0.0.0.0"), &[ip("224.0.0.1")]).is_err());
        // This host has at least loopback: an unspecified bind always announces something.
        assert!(!announced_ips(ip("0.0.0.0"), &[]).unwrap().is_empty());
    }

    #[test]
    fn container_and_vm_bridges_are_not_announced() {
        for bridge in [
            "docker0",
            "br-1a2b3c",
            "veth12ab",
            "virbr0",
            "cni0",
            "lxdbr0",
        ] {
            assert!(is_local_bridge(bridge), "{bridge}");
        }
        for real in ["eth0", "enp3s0", "wlan0", "wg0", "tailscale0", "myff12n"] {
            assert!(!is_local_bridge(real), "{real}");
        }
    }

    #[test]
    fn an_unspecified_bind_announces_the_reachable_host_addresses() {
        let host = [
            ip("127.0.0.1"),
            ip("192.168.1.20"),
            ip("169.254.3.4"),
            ip("::1"),
            ip("fe80::1"),
            ip("2001:db8::5"),
            ip("10.8.0.1"),
        ];
        assert_eq!(
            host_candidates(ip("0.0.0.0"), host.into_iter()),
            vec![ip("192.168.1.20"), ip("10.8.0.1")]
        );
        assert_eq!(
            host_candidates(ip("::"), host.into_iter()),
            vec![ip("2001:db8::5")]
        );
        // Only loopback (a sandbox): loopback is better than nothing.
        assert_eq!(
            host_candidates(ip("0.0.0.0"), [ip("127.0.0.1"), ip("::1")].into_iter()),
            vec![ip("127.0.0.1")]
        );
        assert_eq!(
            host_candidates(ip("0.0.0.0"), [ip("::1")].into_iter()),
            vec![ip("127.0.0.1")]
        );
    }
}
