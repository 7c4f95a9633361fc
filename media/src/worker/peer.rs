//! One transport's network side inside a worker: its ICE credentials and paths (validated
//! addresses, the consented media destination), its DTLS endpoint and, once connected, its SRTP
//! contexts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu_core::RoomId;

use crate::connection::dtls::DtlsTransport;
use crate::connection::paths::{AddressChange, CheckCredentials, Paths};
use crate::sdp::IceCredentials;
use mooyaho_net::srtp::SrtpSession;

/// Which PeerConnection of a client this transport is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client's publish PeerConnection (media flows to the SFU).
    Publish,
    /// The client's subscribe PeerConnection (media flows to the client).
    Subscribe,
}

/// Connection state of a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PeerState {
    /// Waiting for ICE and DTLS.
    Connecting,
    /// DTLS done; SRTP flowing.
    Connected,
}

/// A transport's network state.
#[derive(Debug)]
pub(super) struct Peer {
    /// Room it belongs to.
    pub(super) room: RoomId,
    /// The signaling session it belongs to.
    pub(super) session: String,
    /// Publish or subscribe.
    pub(super) side: Side,
    /// Our credentials (the USERNAME of valid checks starts with our ufrag).
    pub(super) local_ice: IceCredentials,
    /// The client's credentials, once its SDP is known.
    pub(super) remote_ice: Option<IceCredentials>,
    /// DTLS endpoint, once the client's fingerprint is known.
    pub(super) dtls: Option<DtlsTransport>,
    /// SRTP, once DTLS completed.
    pub(super) srtp: Option<SrtpSession>,
    /// Validated addresses (media accepted from) and the consented one media goes to.
    pub(super) paths: Paths,
    /// Last authenticated check from the client (a transport never connected is given up).
    pub(super) last_check: Instant,
    /// Connection state.
    pub(super) state: PeerState,
}

/// A transport that never connects is given up after this long without a check.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Peer {
    /// A new transport waiting for the client.
    pub(super) fn new(
        now: Instant,
        room: RoomId,
        session: String,
        side: Side,
        local_ice: IceCredentials,
    ) -> Self {
        Self {
            room,
            session,
            side,
            local_ice,
            remote_ice: None,
            dtls: None,
            srtp: None,
            paths: Paths::new(now),
            last_check: now,
            state: PeerState::Connecting,
        }
    }

    /// The client's credentials from its SDP: our own checks (consent) can start.
    pub(super) fn set_remote_ice(&mut self, now: Instant, remote: IceCredentials) {
        self.paths.set_credentials(
            now,
            CheckCredentials {
                username: format!("{}:{}", remote.ufrag, self.local_ice.ufrag),
                remote_pwd: remote.pwd.clone(),
            },
        );
        self.remote_ice = Some(remote);
    }

    /// Records an authenticated check from `from`. The caller mirrors the returned change in
    /// the worker's address table (`Shard::apply_address_change` does it in one place).
    pub(super) fn validate(
        &mut self,
        now: Instant,
        from: SocketAddr,
        nominated: bool,
    ) -> AddressChange {
        self.last_check = now;
        self.paths.handle_check(now, from, nominated)
    }

    /// Consent on the media path expired (RFC 7675), or the transport never connected in time.
    pub(super) fn expired(&self, now: Instant) -> bool {
        match self.state {
            PeerState::Connecting => {
                now.saturating_duration_since(self.last_check) > CONNECT_TIMEOUT
            }
            PeerState::Connected => self.paths.consent_expired(now),
        }
    }
}
