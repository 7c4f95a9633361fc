//! One transport's network side inside a worker: its ICE credentials and validated addresses, its
//! DTLS server and, once connected, its SRTP contexts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu_core::RoomId;

use crate::connection::dtls::DtlsTransport;
use crate::connection::srtp::SrtpSession;
use crate::sdp::IceCredentials;

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
    /// DTLS server, once the client's fingerprint is known.
    pub(super) dtls: Option<DtlsTransport>,
    /// SRTP, once DTLS completed.
    pub(super) srtp: Option<SrtpSession>,
    /// The address media is sent to: the nominated (or latest validated) pair.
    pub(super) selected: Option<SocketAddr>,
    /// Every address that passed a connectivity check (media is accepted only from these).
    pub(super) validated: Vec<SocketAddr>,
    /// Last authenticated connectivity check (consent freshness, RFC 7675).
    pub(super) last_consent: Instant,
    /// Connection state.
    pub(super) state: PeerState,
}

/// Without a check for this long, consent has expired (RFC 7675 §5.1: 30 s).
pub(super) const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A transport that never connects is given up after this long.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many validated addresses per transport (candidates of one client).
const MAX_VALIDATED: usize = 8;

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
            selected: None,
            validated: Vec::new(),
            last_consent: now,
            state: PeerState::Connecting,
        }
    }

    /// Records an authenticated check from `from`; returns true if the address is new.
    pub(super) fn validate(&mut self, now: Instant, from: SocketAddr, nominated: bool) -> bool {
        self.last_consent = now;
        let new = !self.validated.contains(&from);
        if new {
            if self.validated.len() == MAX_VALIDATED {
                self.validated.remove(0);
            }
            self.validated.push(from);
        }
        if nominated || self.selected.is_none() {
            self.selected = Some(from);
        }
        new
    }

    /// Consent expired or the transport never connected in time.
    pub(super) fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_consent)
            > match self.state {
                PeerState::Connecting => CONNECT_TIMEOUT,
                PeerState::Connected => CONSENT_TIMEOUT,
            }
    }
}
