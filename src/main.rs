//! The `mooyaho` command: `dev` (everything in one process) and `server` (one signaling instance).

#![deny(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use mooyaho_control::proof::MIN_SECRET_LEN;
use mooyaho_signaling::{AppState, RedisOptions, SignalingConfig};
use rand::RngCore;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

mod loadgen;
mod sfu;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Mooyaho: WebRTC video rooms on your own servers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process with embedded defaults (prints its URLs and API key).
    Dev(Options),
    /// One signaling instance; many can share state through `--redis-url`.
    Server(Options),
    /// One SFU media node: UDP media workers and a QUIC control endpoint.
    Sfu(sfu::SfuOptions),
    /// Load generator: simulated participants with real ICE/DTLS/SRTP against a deployment.
    Loadgen(loadgen::LoadgenOptions),
}

/// Options of `dev` and `server`. Precedence: flag, then `MOOYAHO_*` environment, then the TOML
/// file given by `--config`, then the default.
#[derive(Debug, Args)]
struct Options {
    /// TOML file with any of the options below (snake_case keys).
    #[arg(long, env = "MOOYAHO_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP/WebSocket listen address.
    #[arg(long, env = "MOOYAHO_LISTEN")]
    listen: Option<SocketAddr>,
    /// REST bearer key (`dev` generates and keeps one in its data dir when unset).
    #[arg(long, env = "MOOYAHO_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Embedded store location.
    #[arg(long, env = "MOOYAHO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Redis URL for shared state and fan-out across instances (`server`):
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS.
    #[arg(long, env = "MOOYAHO_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Prefix of every Redis key and pub/sub channel, so deployments can share one Redis
    /// (default `mooyaho`; letters, digits, `-`, `_`, `.`).
    #[arg(long, env = "MOOYAHO_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// PEM file of the root certificates that verify a `rediss://` server (default: the
    /// platform's trust store).
    #[arg(long, env = "MOOYAHO_REDIS_CA_FILE")]
    redis_ca_file: Option<PathBuf>,
    /// Reverse proxies (CIDR or address; repeat or comma-separate) whose `X-Forwarded-For` gives
    /// the client address for per-IP limits. Without any, the header is ignored.
    #[arg(long, env = "MOOYAHO_TRUSTED_PROXY", value_delimiter = ',')]
    trusted_proxy: Vec<String>,
    /// How long a resume token is accepted, milliseconds (default 600000, at most 86400000);
    /// connected sessions get a new one every half lifetime. Raised to
    /// `2 × (grace + 2 × ping interval)`.
    #[arg(long, env = "MOOYAHO_RESUME_TOKEN_LIFETIME_MS")]
    resume_token_lifetime_ms: Option<u64>,
    /// Serve the members of a channel whose SFU node is full (`mooyaho sfu --max-transports`)
    /// from another node; signaling relays the publishers' tracks between the channel's nodes.
    /// Off by default, and refused with --redis-url: several signaling instances do not share
    /// the relay links they opened yet. Without it those members get `sfu_full`.
    #[arg(long, env = "MOOYAHO_SPAN_NODES")]
    span_nodes: bool,
    /// With --span-nodes: addresses an SFU node may name as its relay (media) address besides
    /// the host it registered its control address with (repeat or comma-separate), for nodes
    /// whose media is on another network than their control connection.
    #[arg(long, env = "MOOYAHO_RELAY_IP", value_delimiter = ',')]
    relay_ip: Vec<IpAddr>,
    /// Let clients integrate themselves (`integrateUser` over the WebSocket). Insecure.
    #[arg(long, env = "MOOYAHO_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// Origins allowed by CORS (repeat or comma-separate); CORS is off without any.
    #[arg(long, env = "MOOYAHO_CORS_ORIGINS", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// Server ping interval, milliseconds (a socket silent for two intervals is closed).
    #[arg(long, env = "MOOYAHO_PING_INTERVAL_MS")]
    ping_interval_ms: Option<u64>,
    /// How long a dropped session stays resumable, milliseconds (at most half the presence TTL).
    #[arg(long, env = "MOOYAHO_RESUME_GRACE_MS")]
    resume_grace_ms: Option<u64>,
    /// With Redis: how long a session's presence outlives its instance, milliseconds (refreshed
    /// every third of it). Sessions of a dead instance leave their channels after this.
    #[arg(long, env = "MOOYAHO_PRESENCE_TTL_MS")]
    presence_ttl_ms: Option<u64>,
    /// Secret shared with the SFU nodes, at least 16 characters (`server`; `dev` generates one
    /// for its own node).
    #[arg(long, env = "MOOYAHO_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// HS256 secret of join tokens (`GET /websocket?token=`, `POST /tokens`), at least 16
    /// characters (default: the API key).
    #[arg(long, env = "MOOYAHO_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// Receiver of signed webhooks (repeat for several): an absolute http:// or https:// URL
    /// that gets `POST` JSON for channel, participant, track and SFU node events.
    #[arg(long, env = "MOOYAHO_WEBHOOK_URL")]
    webhook_url: Vec<String>,
    /// HMAC-SHA256 secret of the `Mooyaho-Signature` webhook header, at least 16 characters
    /// (default: hex HMAC-SHA256(API key, "mooyaho-webhook-v1"), which `dev` prints).
    #[arg(long, env = "MOOYAHO_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Webhook events waiting or in flight per URL before new ones are dropped and counted
    /// (default 10000).
    #[arg(long, env = "MOOYAHO_WEBHOOK_QUEUE_SIZE")]
    webhook_queue_size: Option<usize>,
    /// TURN server for clients (repeat for several; comma-separated in the env variable):
    /// `turn:HOST[:PORT][?transport=udp|tcp]` or `turns:…`. Every session gets short-lived
    /// credentials for them in `connected {iceServers}` (needs --turn-secret).
    #[arg(long, env = "MOOYAHO_TURN_URL", value_delimiter = ',')]
    turn_url: Vec<String>,
    /// The TURN servers' shared secret (coturn `use-auth-secret` / `static-auth-secret`), at
    /// least 16 characters.
    #[arg(long, env = "MOOYAHO_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// Lifetime of the TURN credentials handed to a session, seconds (default 21600 = 6 h;
    /// sessions get fresh ones on every connect and resume).
    #[arg(long, env = "MOOYAHO_TURN_TTL_SECS")]
    turn_ttl_secs: Option<u64>,
    /// Also serve `GET /metrics` on this address, without the API key (for Prometheus; bind it
    /// to an address only scrapers reach).
    #[arg(long, env = "MOOYAHO_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Open WebSocket connections allowed from one IP address (0 = no limit; default 64 for
    /// `server`, no limit for `dev`).
    #[arg(long, env = "MOOYAHO_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Worker threads of `dev`'s embedded SFU node (default: one per core).
    #[arg(long, env = "MOOYAHO_WORKERS")]
    workers: Option<usize>,
    /// `dev`'s embedded node: subscribers a room keeps on its home worker before spreading
    /// over the others (tests use 1 to make a room span workers).
    #[arg(long, env = "MOOYAHO_SPILL_AFTER", default_value_t = mooyaho_media::node::DEFAULT_SPILL_AFTER)]
    spill_after: usize,
    /// `dev`'s embedded node: cap of what a publisher may send on one video track, bits/s
    /// (packets beyond it are dropped and counted).
    #[arg(long, env = "MOOYAHO_MAX_TRACK_BITRATE", default_value_t = sfu::DEFAULT_MAX_TRACK_BITRATE)]
    max_track_bitrate: u64,
    /// `dev`'s embedded node: the same cap for an audio track, bits/s.
    #[arg(long, env = "MOOYAHO_MAX_AUDIO_TRACK_BITRATE", default_value_t = sfu::DEFAULT_MAX_AUDIO_TRACK_BITRATE)]
    max_audio_track_bitrate: u64,
    /// `dev`'s embedded node: client transports it holds at once; past it members get
    /// `sfu_full` (0 = no cap).
    #[arg(long, env = "MOOYAHO_MAX_TRANSPORTS", default_value_t = 0)]
    max_transports: usize,
    /// Publish limits of `dev`'s embedded SFU node.
    #[command(flatten)]
    publish: sfu::PublishOptions,
    /// Address `dev`'s embedded node binds its media (UDP) sockets to. Default: 127.0.0.1 when
    /// --listen is loopback, else the --listen address (so `--listen 0.0.0.0:8080` serves
    /// browsers on other machines).
    #[arg(long, env = "MOOYAHO_RTC_BIND")]
    rtc_bind: Option<IpAddr>,
    /// Addresses `dev`'s embedded node announces in SDP candidates, most preferred first (repeat
    /// or comma-separate). Default: --rtc-bind, or when that is 0.0.0.0 / `::`, this host's
    /// interface addresses.
    #[arg(long, env = "MOOYAHO_ANNOUNCE_IP", value_delimiter = ',')]
    announce_ip: Vec<IpAddr>,
    /// `dev`'s embedded node also accepts ICE over TCP (RFC 6544 passive candidates), for
    /// browsers whose UDP is blocked.
    #[arg(long, env = "MOOYAHO_ICE_TCP")]
    ice_tcp: bool,
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOptions {
    listen: Option<SocketAddr>,
    api_key: Option<String>,
    data_dir: Option<PathBuf>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    redis_ca_file: Option<PathBuf>,
    trusted_proxies: Option<Vec<String>>,
    resume_token_lifetime_ms: Option<u64>,
    allow_anonymous: Option<bool>,
    span_nodes: Option<bool>,
    relay_ips: Option<Vec<IpAddr>>,
    cors_origins: Option<Vec<String>>,
    ping_interval_ms: Option<u64>,
    resume_grace_ms: Option<u64>,
    presence_ttl_ms: Option<u64>,
    cluster_secret: Option<String>,
    metrics_listen: Option<SocketAddr>,
    token_secret: Option<String>,
    webhook_urls: Option<Vec<String>>,
    webhook_secret: Option<String>,
    webhook_queue_size: Option<usize>,
    turn_urls: Option<Vec<String>>,
    turn_secret: Option<String>,
    turn_ttl_secs: Option<u64>,
    max_connections_per_ip: Option<usize>,
}

/// Shortest API key, and so shortest join-token secret.
const MIN_API_KEY_LEN: usize = 16;

/// Shortest presence TTL (its refresh runs every third of it).
const MIN_PRESENCE_TTL: Duration = Duration::from_millis(300);
/// Longest resume token lifetime.
const MAX_RESUME_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    raise_open_file_limit();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Dev(options) => runtime.block_on(run(options, true)),
        Command::Server(options) => runtime.block_on(run(options, false)),
        Command::Sfu(options) => runtime.block_on(sfu::run(options)),
        Command::Loadgen(options) => runtime.block_on(loadgen::run(options)),
    }
}

/// Raises the soft open-file limit to the hard one: every WebSocket session and SFU socket holds
/// a descriptor (and every simulated session of `loadgen`), and the usual soft default (1024)
/// would cap a server near a thousand sessions.
/// Says so when the hard limit itself is what caps it.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current, limit.maximum);
    if soft != hard {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                ..limit
            },
        ) {
            Ok(()) => tracing::info!(from = ?soft, to = ?hard, "open-file limit raised"),
            Err(e) => tracing::warn!(?soft, ?hard, "open-file limit not raised: {e}"),
        }
    }
    if let Some(hard) = hard.filter(|&hard| hard < 65_536) {
        tracing::info!(
            "open-file hard limit {hard}: about that many WebSocket sessions and media sockets \
             in total (raise it with `ulimit -Hn` or systemd's LimitNOFILE)"
        );
    }
}

async fn run(options: Options, dev: bool) -> anyhow::Result<()> {
    let file = match &options.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileOptions::default(),
    };
    let listen = options
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let redis_url = options.redis_url.or(file.redis_url);
    let data_dir = options.data_dir.or(file.data_dir).or_else(|| {
        // `dev` always persists; `server` persists only when asked (or uses Redis).
        (dev && redis_url.is_none()).then(|| PathBuf::from("mooyaho-data"))
    });
    let api_key = match long_enough(options.api_key.or(file.api_key), "API key")? {
        Some(key) => key,
        None if dev => dev_api_key(data_dir.as_deref())?,
        None => bail!("`mooyaho server` needs --api-key (or MOOYAHO_API_KEY)"),
    };
    let mut config = SignalingConfig::new(api_key);
    config.token_secret = long_enough(options.token_secret.or(file.token_secret), "token secret")?;
    config.webhooks.urls = flags_or_file(options.webhook_url, file.webhook_urls)
        .iter()
        .map(|url| mooyaho_signaling::webhooks::parse_url(url.trim()))
        .collect::<Result<_, _>>()
        .context("--webhook-url")?;
    config.webhooks.secret = long_enough(
        options.webhook_secret.or(file.webhook_secret),
        "webhook secret",
    )?;
    let turn_urls = flags_or_file(options.turn_url, file.turn_urls);
    let turn_secret = options.turn_secret.or(file.turn_secret);
    let turn_ttl = options
        .turn_ttl_secs
        .or(file.turn_ttl_secs)
        .map_or(mooyaho_signaling::turn::DEFAULT_TTL, Duration::from_secs);
    config.turn = match (turn_urls.is_empty(), turn_secret) {
        (true, None) => None,
        (true, Some(_)) => bail!("--turn-secret without --turn-url: which TURN servers?"),
        (false, secret) => Some(
            mooyaho_signaling::turn::TurnConfig::new(
                &turn_urls,
                secret.as_deref().unwrap_or_default(),
                turn_ttl,
            )
            .context("--turn-url")?,
        ),
    };
    match options.webhook_queue_size.or(file.webhook_queue_size) {
        Some(0) => bail!("--webhook-queue-size must be at least 1"),
        Some(size) => config.webhooks.queue_size = size,
        None => {}
    }
    config.allow_anonymous = options.allow_anonymous || file.allow_anonymous.unwrap_or(false);
    config.span_nodes = options.span_nodes || file.span_nodes.unwrap_or(false);
    if config.span_nodes && redis_url.is_some() {
        // Each instance keeps the relay links it opened to itself: instances sharing a Redis
        // would open and close the links of one channel against each other (outside review G4).
        bail!(
            "--span-nodes cannot be combined with --redis-url yet: the relay links between a \
             channel's nodes are kept by the signaling instance that opened them, not in the \
             store, so several instances would open and close each other's links. Run one \
             signaling instance with --span-nodes, or several without it"
        );
    }
    config.relay_ips = flags_or_file(options.relay_ip, file.relay_ips);
    config.cors_origins = flags_or_file(options.cors_origin, file.cors_origins);
    if let Some(ms) = options.ping_interval_ms.or(file.ping_interval_ms) {
        config.ping_interval = Duration::from_millis(ms.max(100));
    }
    if let Some(ms) = options.presence_ttl_ms.or(file.presence_ttl_ms) {
        config.presence_ttl = Duration::from_millis(ms).max(MIN_PRESENCE_TTL);
    }
    if let Some(ms) = options.resume_grace_ms.or(file.resume_grace_ms) {
        config.resume_grace = Duration::from_millis(ms);
    }
    // A dropped session's presence is no longer refreshed: it must outlive the resume grace.
    config.resume_grace = config.resume_grace.min(config.presence_ttl / 2);
    if let Some(ms) = options
        .resume_token_lifetime_ms
        .or(file.resume_token_lifetime_ms)
    {
        config.resume_token_lifetime = Duration::from_millis(ms);
    }
    config.resume_token_lifetime = config
        .resume_token_lifetime
        .max(config.min_resume_token_lifetime());
    // Timers add half the lifetime to a clock reading; bounding it keeps that sum representable
    // on every platform (and a leaked token is not meant to live for days anyway).
    if config.resume_token_lifetime > MAX_RESUME_TOKEN_LIFETIME {
        bail!(
            "the resume token lifetime is at most {} ms (1 day); {} ms was asked for or \
             follows from --resume-grace-ms and --ping-interval-ms",
            MAX_RESUME_TOKEN_LIFETIME.as_millis(),
            config.resume_token_lifetime.as_millis()
        );
    }
    config.trusted_proxies = flags_or_file(options.trusted_proxy, file.trusted_proxies)
        .iter()
        .map(|cidr| parse_cidr(cidr))
        .collect::<anyhow::Result<_>>()?;

    config.cluster_secret = options.cluster_secret.or(file.cluster_secret);
    // Every proof a node sends allows offline guesses of the secret: refuse a short one here as
    // the node does (a rogue node registered with this server would otherwise brute-force it).
    if let Some(secret) = &config.cluster_secret
        && secret.len() < MIN_SECRET_LEN
    {
        bail!("the cluster secret must be at least {MIN_SECRET_LEN} characters");
    }
    // `dev` on loopback is a local tool that load generators drive with many sockets from one
    // address; listening beyond loopback, it faces other hosts and keeps `server`'s limit.
    config.max_connections_per_ip = options
        .max_connections_per_ip
        .or(file.max_connections_per_ip)
        .unwrap_or_else(|| {
            if dev && listen.ip().is_loopback() {
                0
            } else {
                config.max_connections_per_ip
            }
        });
    // `dev` runs its own SFU node, reached over loopback QUIC like any other node.
    let embedded_node = if dev {
        let secret = config.cluster_secret.get_or_insert_with(random_hex).clone();
        let workers = options
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        // A non-loopback --listen means browsers elsewhere: media must be reachable there too.
        let rtc_bind = options.rtc_bind.unwrap_or_else(|| {
            if listen.ip().is_loopback() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                listen.ip()
            }
        });
        let node_config = mooyaho_media::NodeConfig {
            bind_ip: rtc_bind,
            announced_ips: sfu::announced_ips(rtc_bind, &options.announce_ip)?,
            core: sfu::core_config(options.max_track_bitrate, options.max_audio_track_bitrate),
            publish: options.publish.policy(),
            ice_tcp: options.ice_tcp.then(mooyaho_media::IceTcpLimits::default),
            max_transports: options.max_transports,
            spill_after: options.spill_after.max(1),
            ..mooyaho_media::NodeConfig::loopback(workers)
        };
        tracing::info!(bind = %rtc_bind, announced = ?node_config.announced_ips, "embedded SFU media addresses");
        Some(sfu::start_node(
            &node_config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            secret,
            mooyaho_media::control::DEFAULT_MAX_UNAUTHENTICATED,
            mooyaho_media::ControlIdentity::generate()
                .context("generating the control certificate")?,
        )?)
    } else {
        if options.rtc_bind.is_some() || !options.announce_ip.is_empty() || options.ice_tcp {
            bail!(
                "--rtc-bind, --announce-ip and --ice-tcp are for `mooyaho dev`'s embedded node (run `mooyaho sfu` with them)"
            );
        }
        None
    };

    let redis = match &redis_url {
        Some(url) => Some(RedisOptions {
            url: url.clone(),
            prefix: options
                .redis_prefix
                .or(file.redis_prefix)
                .unwrap_or_else(|| mooyaho_signaling::store::DEFAULT_PREFIX.to_owned()),
            ca_pem: match options.redis_ca_file.or(file.redis_ca_file) {
                Some(path) => Some(
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            },
        }),
        None => None,
    };
    let state = match &redis {
        // The error names no part of the URL (it may hold a password).
        Some(redis) => AppState::redis(config.clone(), redis)
            .await
            .context("connecting to Redis")?,
        None => AppState::embedded(config.clone(), data_dir.as_deref())?,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    if dev && !local.ip().is_loopback() {
        tracing::warn!(
            %local,
            "`mooyaho dev` is listening beyond loopback: its REST API, WebSocket, demo and \
             media ports are reachable from the network over plain HTTP (API calls and join \
             tokens readable on a shared network; WebSockets limited to {} per address); use \
             `mooyaho server` behind TLS for anything but local development",
            config.max_connections_per_ip
        );
        if config.allow_anonymous {
            tracing::warn!(
                "--allow-anonymous beyond loopback: anyone who reaches this address can join \
                 any channel under any name"
            );
        }
    }
    let store = match (&redis_url, &data_dir) {
        (Some(_), _) => "redis".to_owned(),
        (None, Some(dir)) => format!("embedded ({})", dir.display()),
        (None, None) => "in memory".to_owned(),
    };
    tracing::info!(%local, %store, instance = %state.signaling.instance(), "signaling listening");
    // `dev` announces itself once its own SFU node is registered and connected, so the SFU
    // scenario works from the first request.
    let dev_node = match embedded_node {
        Some(running) => {
            let id = register_dev_node(&state, &running, data_dir.as_deref()).await?;
            wait_until_healthy(&state, id).await;
            Some((running, id))
        }
        None => None,
    };
    if let Some(address) = options.metrics_listen.or(file.metrics_listen) {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the metrics address {address}"))?;
        let local = listener.local_addr()?;
        // Before the listening line: scripts read up to it (and the key or WebSocket line).
        println!("mooyaho metrics on http://{local}/metrics   (no key)");
        let metrics = mooyaho_signaling::metrics_app(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, metrics).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    // Scripts and tests read this line to learn the bound port.
    println!("mooyaho listening on http://{local}");
    println!("  REST API:  http://{local}/channels   (Authorization: Bearer <API key>)");
    println!("  WebSocket: ws://{local}/websocket");
    if dev {
        println!("  API key:   {}", config.api_key);
        if !config.webhooks.urls.is_empty() && config.webhooks.secret.is_none() {
            println!("  Webhook secret: {}", config.webhook_secret());
        }
        let anonymous = if config.allow_anonymous {
            ""
        } else {
            "   (browsers join it when started with --allow-anonymous)"
        };
        println!("  Demo:      http://{local}/?channel=<id>{anonymous}");
    }
    if let Some((running, id)) = &dev_node {
        println!(
            "  SFU node:  {} (id {id}, media {:?})",
            running.control.local_addr()?,
            running.node.addresses()
        );
        let tcp = running.node.tcp_addresses();
        if !tcp.is_empty() {
            println!("  ICE-TCP:   {tcp:?}");
        }
    }
    // Peer addresses reach the handlers (the WebSocket per-IP connection limit).
    let app = mooyaho_signaling::app(state).into_make_service_with_connect_info::<SocketAddr>();
    // `dev`'s node exits the process when one of its workers dies, like `mooyaho sfu`.
    let worker_failed = async {
        match &dev_node {
            Some((running, _)) => running.node.worker_failed().await,
            None => std::future::pending().await,
        }
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    tokio::select! {
        served = serve.into_future() => Ok(served?),
        failure = worker_failed => Err(sfu::worker_died(&failure)),
    }
}

/// `dev`'s node registers itself; its record (kept across restarts by id in the data dir) gets
/// the new address and fingerprint each start.
async fn register_dev_node(
    state: &AppState,
    running: &sfu::RunningNode,
    data_dir: Option<&Path>,
) -> anyhow::Result<u64> {
    let address = running.control.local_addr()?.to_string();
    let fingerprint = running.control.fingerprint().to_owned();
    let id_file = data_dir.map(|d| d.join("dev-sfu-node"));
    let previous = id_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|id| id.trim().parse().ok())
        .map(mooyaho_signaling::domain::ids::SfuServerId);
    let patch = mooyaho_signaling::domain::SfuServerPatch {
        address: Some(address.clone()),
        fingerprint: Some(fingerprint.clone()),
        ..Default::default()
    };
    let servers = state.signaling.sfu_servers();
    let view = match previous {
        Some(id) => match servers.update(id, patch).await {
            Ok(view) => view,
            Err(_) => servers.register(address, Some(fingerprint)).await?,
        },
        None => servers.register(address, Some(fingerprint)).await?,
    };
    if let Some(file) = id_file {
        std::fs::write(&file, view.record.id.0.to_string())
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(view.record.id.0)
}

/// Waits (up to 10 s) until this instance sees the node healthy; logs if it never does.
async fn wait_until_healthy(state: &AppState, id: u64) {
    let node = mooyaho_signaling::domain::ids::SfuServerId(id);
    for _ in 0..100 {
        let healthy = state
            .signaling
            .sfu_servers()
            .get(node)
            .await
            .ok()
            .and_then(|v| v.status)
            .is_some_and(|s| s.healthy);
        if healthy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("the embedded SFU node did not report healthy within 10 s");
}

/// A secret or key from a flag or the config file, refused when shorter than
/// [`MIN_API_KEY_LEN`] (each one signs or authenticates something a guess must not reach).
fn long_enough(secret: Option<String>, what: &str) -> anyhow::Result<Option<String>> {
    match secret {
        Some(secret) if secret.len() < MIN_API_KEY_LEN => {
            bail!("the {what} must be at least {MIN_API_KEY_LEN} characters")
        }
        secret => Ok(secret),
    }
}

/// A repeatable flag's values, or the config file's list when the flag was not given: flags
/// replace the file's list rather than add to it.
fn flags_or_file<T>(flags: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flags.is_empty() {
        file.unwrap_or_default()
    } else {
        flags
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `--trusted-proxy` entry: a CIDR, or a single address.
fn parse_cidr(text: &str) -> anyhow::Result<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
        .with_context(|| format!("--trusted-proxy {text:?} is not a CIDR or an IP address"))
}

/// `dev`'s key: generated once and kept in the data dir (readable by its owner only), so
/// restarts keep working with it.
fn dev_api_key(data_dir: Option<&Path>) -> anyhow::Result<String> {
    let generate = random_hex;
    let Some(dir) = data_dir else {
        return Ok(generate());
    };
    let path = dir.join("api-key");
    match std::fs::read_to_string(&path) {
        Ok(key) if key.trim().len() >= 16 => {
            // A key file written by an older version, or by hand, may be readable by others.
            restrict_to_owner(&path)?;
            Ok(key.trim().to_owned())
        }
        _ => {
            std::fs::create_dir_all(dir)?;
            let key = generate();
            write_private(&path, key.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
    }
}

/// Writes a file that only its owner can read (mode 0600 from its creation on Unix).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    drop(file);
    // `mode` applies only when the file is created; an existing one keeps its mode otherwise.
    restrict_to_owner(path).map_err(std::io::Error::other)
}

/// Sets mode 0600 on Unix (nothing elsewhere).
fn restrict_to_owner(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {} to 0600", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_secret_is_refused_by_name_and_a_long_or_missing_one_passes() {
        let short = long_enough(Some("x".repeat(MIN_API_KEY_LEN - 1)), "webhook secret");
        let message = short.expect_err("short").to_string();
        assert_eq!(message, "the webhook secret must be at least 16 characters");
        let long = "x".repeat(MIN_API_KEY_LEN);
        assert_eq!(
            long_enough(Some(long.clone()), "token secret").ok(),
            Some(Some(long))
        );
        assert_eq!(long_enough(None, "token secret").ok(), Some(None));
    }

    #[test]
    fn list_flags_replace_the_config_files_list() {
        let file = Some(vec!["from-file".to_owned()]);
        assert_eq!(flags_or_file(Vec::new(), file.clone()), ["from-file"]);
        assert_eq!(flags_or_file(vec!["flag".to_owned()], file), ["flag"]);
        assert!(flags_or_file(Vec::<String>::new(), None).is_empty());
    }
}
