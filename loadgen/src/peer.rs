//! One simulated PeerConnection: a UDP socket, ICE, DTLS and SRTP — built from the same pieces as
//! the SFU, so the load is real crypto and real syscalls, without a full WebRTC stack per
//! participant.
//!
//! Toward Mooyaho's ICE-lite node we are the controlling agent and the DTLS client, and answer
//! its consent checks (RFC 7675) as a browser does. Toward Janus (a full ICE agent, libnice) we
//! also answer its connectivity checks, take the ICE role our side
//! of the offer/answer gives us, and take the DTLS server role: Janus answers our publish offer
//! with `a=setup:active`, and we answer its subscribe offers (`actpass`) with `passive`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mooyaho_net::PacketClass;
use mooyaho_net::dtls::{DtlsIdentity, DtlsOutcome, DtlsRole, DtlsTransport};
use mooyaho_net::srtp::SrtpSession;
use mooyaho_net::stun::{
    BindingRequest, Check, HOST_PRIORITY, IceRole, is_binding_success, new_transaction_id,
};
use tokio::net::UdpSocket;

use crate::sdp::Remote;

/// A connected transport.
pub(crate) struct Connected {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) remote: SocketAddr,
    pub(crate) srtp: SrtpSession,
    pub(crate) check: Vec<u8>,
    /// Our ICE credentials, to keep answering the remote's checks: a full ICE agent sends them
    /// for consent and keepalive, and Mooyaho's node checks consent (RFC 7675) on a candidate
    /// address before it sends media there.
    pub(crate) answer_checks: Option<LocalIce>,
}

/// ICE credentials of a simulated client.
#[derive(Clone, Debug)]
pub(crate) struct LocalIce {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
}

impl LocalIce {
    pub(crate) fn random() -> Self {
        let creds = mooyaho_media::sdp::random_ice_credentials();
        Self {
            ufrag: creds.ufrag,
            pwd: creds.pwd,
        }
    }

    /// Our side of the SDP with these credentials and `fingerprint`, without a candidate (the
    /// ICE-lite node learns our address from our checks; a full agent's caller adds one).
    pub(crate) fn local<'a>(&'a self, fingerprint: &'a str) -> crate::sdp::Local<'a> {
        crate::sdp::Local {
            ufrag: &self.ufrag,
            pwd: &self.pwd,
            fingerprint,
            candidate: None,
        }
    }
}

/// How a transport connects: what differs between an ICE-lite SFU and a full ICE agent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectOptions {
    /// We are the controlling ICE agent (we offered) and nominate with USE-CANDIDATE.
    pub(crate) controlling: bool,
    /// Answer the remote's authenticated binding requests (a full ICE agent's checks, the
    /// node's consent checks), and start DTLS only once our own check succeeded.
    pub(crate) answer_checks: bool,
    /// The `a=setup` our answer gave to the remote's `actpass` offer.
    pub(crate) answer_setup: Setup,
}

/// Our side of the DTLS role negotiation when we answer an `actpass` offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Setup {
    /// `a=setup:active`: we send the ClientHello (toward Mooyaho, which must have our answer's
    /// fingerprint before it).
    Active,
    /// `a=setup:passive`: the remote sends it once its own ICE is connected (toward Janus: a
    /// ClientHello we send first can reach libnice before it selected the pair, and DTLS would
    /// only retry after its 1 s timer — a join-time artefact of the client, not of the server).
    Passive,
}

impl Setup {
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
        }
    }
}

impl ConnectOptions {
    /// Toward Mooyaho's ICE-lite node: controlling; its consent checks are answered.
    pub(crate) const ICE_LITE_SFU: Self = Self {
        controlling: true,
        answer_checks: true,
        answer_setup: Setup::Active,
    };

    /// Toward a full ICE agent; `offerer` is whether we wrote the offer.
    pub(crate) fn full_agent(offerer: bool) -> Self {
        Self {
            controlling: offerer,
            answer_checks: true,
            answer_setup: Setup::Passive,
        }
    }
}

/// Our DTLS role from the remote's `a=setup` (RFC 5763 §5), and from our answer's when the
/// remote offered `actpass`.
pub(crate) fn dtls_role(remote: &Remote, answer_setup: Setup) -> DtlsRole {
    match (remote.setup.as_deref(), answer_setup) {
        (Some("active"), _) | (Some("actpass"), Setup::Passive) => DtlsRole::Server,
        _ => DtlsRole::Client,
    }
}

/// A connectivity check toward the SFU; as the controlling agent we nominate at once.
pub(crate) fn binding_request(local: &LocalIce, remote: &Remote, controlling: bool) -> Vec<u8> {
    binding_request_with(
        &local.ufrag,
        &remote.ufrag,
        &remote.pwd,
        controlling,
        controlling,
    )
}

/// A binding request from `local_ufrag` to the agent `remote_ufrag`, signed with its
/// `remote_pwd`, with a fresh transaction id; USE-CANDIDATE only from the controlling side.
pub(crate) fn binding_request_with(
    local_ufrag: &str,
    remote_ufrag: &str,
    remote_pwd: &str,
    controlling: bool,
    use_candidate: bool,
) -> Vec<u8> {
    let tie_breaker = rand::random::<u64>();
    Check {
        username: &format!("{remote_ufrag}:{local_ufrag}"),
        receiver_pwd: remote_pwd,
        transaction: new_transaction_id(),
        priority: HOST_PRIORITY,
        role: if controlling {
            IceRole::Controlling(tie_breaker)
        } else {
            IceRole::Controlled(tie_breaker)
        },
        use_candidate: controlling && use_candidate,
    }
    .to_bytes()
}

/// The signed success response to a remote agent's binding request addressed to us, or `None`
/// when it is not a binding request, names another ufrag, or fails MESSAGE-INTEGRITY (our
/// password) or FINGERPRINT: an unauthenticated check must not validate a path.
pub(crate) fn answer_check(datagram: &[u8], from: SocketAddr, local: &LocalIce) -> Option<Vec<u8>> {
    let mut request = BindingRequest::parse(datagram).ok()?;
    if request.local_ufrag != local.ufrag {
        return None;
    }
    request.authenticate(&local.pwd).ok()?;
    Some(request.success(from, &local.pwd))
}

/// Runs ICE and the DTLS handshake toward Mooyaho's ICE-lite node (we are the DTLS client: it
/// answered or offered so that it serves) until SRTP is ready.
pub(crate) async fn connect(
    identity: &DtlsIdentity,
    local: &LocalIce,
    remote: &Remote,
) -> anyhow::Result<Connected> {
    let target = remote.candidate.context("SFU SDP has no candidate")?;
    let socket = Arc::new(UdpSocket::bind(SocketAddr::new(target.ip(), 0)).await?);
    connect_on(
        identity,
        local,
        remote,
        socket,
        ConnectOptions::ICE_LITE_SFU,
    )
    .await
}

/// Runs ICE and DTLS on an already bound socket (its address may be in our SDP already).
pub(crate) async fn connect_on(
    identity: &DtlsIdentity,
    local: &LocalIce,
    remote: &Remote,
    socket: Arc<UdpSocket>,
    options: ConnectOptions,
) -> anyhow::Result<Connected> {
    let target = remote.candidate.context("SFU SDP has no candidate")?;
    let role = dtls_role(remote, options.answer_setup);
    let mut dtls = DtlsTransport::new(identity, &remote.fingerprint, role)
        .map_err(|e| anyhow::anyhow!(e.0))?;
    let check = binding_request(local, remote, options.controlling);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut started = false;
    let mut buf = vec![0u8; 2048];
    let mut next_check = Instant::now();
    while Instant::now() < deadline {
        let now = Instant::now();
        if now >= next_check && !dtls.is_connected() {
            socket.send_to(&check, target).await?;
            next_check = now + Duration::from_millis(100);
        }
        if dtls.poll_timeout().is_some_and(|t| t <= now) {
            let _ = dtls.handle_timeout(now);
        }
        while let Some((to, datagram)) = dtls.poll_transmit() {
            socket.send_to(&datagram, to).await?;
        }
        let wait = tokio::time::timeout(Duration::from_millis(20), socket.recv_from(&mut buf));
        let Ok(Ok((n, from))) = wait.await else {
            continue;
        };
        if from != target {
            continue;
        }
        match PacketClass::of(&buf[..n]) {
            PacketClass::Stun => {
                if options.answer_checks
                    && let Some(response) = answer_check(&buf[..n], from, local)
                {
                    socket.send_to(&response, from).await?;
                    continue;
                }
                // The SFU answered our check: the path is valid, start DTLS (a no-op when we
                // are the DTLS server and wait for its ClientHello).
                if !started && (!options.answer_checks || is_binding_success(&buf[..n])) {
                    dtls.start(Instant::now(), target)
                        .map_err(|e| anyhow::anyhow!(e.0))?;
                    started = true;
                }
            }
            PacketClass::Dtls => {
                if let Ok(DtlsOutcome::Connected(srtp)) =
                    dtls.handle(Instant::now(), from, &buf[..n])
                {
                    while let Some((to, datagram)) = dtls.poll_transmit() {
                        socket.send_to(&datagram, to).await?;
                    }
                    return Ok(Connected {
                        socket,
                        remote: target,
                        srtp: *srtp,
                        check,
                        answer_checks: options.answer_checks.then(|| local.clone()),
                    });
                }
            }
            _ => {}
        }
    }
    bail!(
        "ICE/DTLS toward {target} did not complete within 15 s (DTLS {role:?}, ICE {})",
        if options.controlling {
            "controlling"
        } else {
            "controlled"
        }
    )
}

#[cfg(test)]
mod tests {
    use stun::attributes::{ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, ATTR_USE_CANDIDATE};
    use stun::fingerprint::FINGERPRINT;
    use stun::integrity::MessageIntegrity;
    use stun::message::Message;

    use super::*;

    fn local() -> LocalIce {
        LocalIce {
            ufrag: "ours".into(),
            pwd: "our-password-0123456789".into(),
        }
    }

    /// A check as the remote agent sends it to us: `USERNAME = ours:theirs`, signed with `pwd`.
    fn check_from_remote(username_for: &str, pwd: &str) -> Vec<u8> {
        let remote = Remote {
            ufrag: username_for.into(),
            pwd: pwd.into(),
            ..Remote::default()
        };
        let theirs = LocalIce {
            ufrag: "theirs".into(),
            pwd: "unused".into(),
        };
        binding_request(&theirs, &remote, true)
    }

    #[test]
    fn authenticated_checks_get_a_signed_success() {
        let from: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let response = answer_check(
            &check_from_remote("ours", "our-password-0123456789"),
            from,
            &local(),
        )
        .expect("answered");
        assert!(is_binding_success(&response));
        let mut parsed = Message::new();
        parsed.unmarshal_binary(&response).unwrap();
        FINGERPRINT.check(&parsed).unwrap();
        MessageIntegrity::new_short_term_integrity("our-password-0123456789".into())
            .check(&mut parsed)
            .unwrap();
        let mut mapped = stun::xoraddr::XorMappedAddress::default();
        stun::message::Getter::get_from(&mut mapped, &parsed).unwrap();
        assert_eq!(SocketAddr::new(mapped.ip, mapped.port), from);
    }

    #[test]
    fn wrong_username_integrity_or_garbage_get_no_response() {
        let from: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let other_ufrag = check_from_remote("someone-else", "our-password-0123456789");
        assert!(answer_check(&other_ufrag, from, &local()).is_none());
        let wrong_pwd = check_from_remote("ours", "not-our-password");
        assert!(answer_check(&wrong_pwd, from, &local()).is_none());
        let mut tampered = check_from_remote("ours", "our-password-0123456789");
        tampered[43] ^= 1; // inside PRIORITY: integrity and fingerprint break
        assert!(answer_check(&tampered, from, &local()).is_none());
        assert!(answer_check(&[0, 1, 0, 0], from, &local()).is_none());
        // A success response is not a request: nothing to answer.
        let response = answer_check(
            &check_from_remote("ours", "our-password-0123456789"),
            from,
            &local(),
        )
        .unwrap();
        assert!(answer_check(&response, from, &local()).is_none());
    }

    #[test]
    fn ice_role_attributes_follow_the_offer() {
        let remote = Remote {
            ufrag: "r".into(),
            pwd: "remote-password".into(),
            ..Remote::default()
        };
        let mut m = Message::new();
        m.unmarshal_binary(&binding_request(&local(), &remote, false))
            .unwrap();
        assert!(m.contains(ATTR_ICE_CONTROLLED));
        assert!(!m.contains(ATTR_USE_CANDIDATE));
        m.unmarshal_binary(&binding_request(&local(), &remote, true))
            .unwrap();
        assert!(m.contains(ATTR_ICE_CONTROLLING) && m.contains(ATTR_USE_CANDIDATE));
    }

    #[test]
    fn dtls_role_follows_the_remote_setup() {
        let with = |setup: Option<&str>| Remote {
            setup: setup.map(str::to_owned),
            ..Remote::default()
        };
        use Setup::{Active, Passive};
        assert_eq!(dtls_role(&with(Some("active")), Active), DtlsRole::Server);
        assert_eq!(dtls_role(&with(Some("passive")), Passive), DtlsRole::Client);
        assert_eq!(dtls_role(&with(Some("actpass")), Active), DtlsRole::Client);
        assert_eq!(dtls_role(&with(Some("actpass")), Passive), DtlsRole::Server);
        assert_eq!(dtls_role(&with(None), Active), DtlsRole::Client);
    }
}
