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
pub(crate) const MAX_VALIDATED: usize = 8;

/// How a check changed a transport's validated addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct AddressChange {
    /// A new address media is now accepted from.
    pub(super) added: Option<SocketAddr>,
    /// The oldest address, dropped to make room.
    pub(super) evicted: Option<SocketAddr>,
}

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

    /// Records an authenticated check from `from`. The caller mirrors the returned change in
    /// the worker's address table ([`super::shard::Shard`] does it in one place).
    pub(super) fn validate(
        &mut self,
        now: Instant,
        from: SocketAddr,
        nominated: bool,
    ) -> AddressChange {
        self.last_consent = now;
        let mut change = AddressChange::default();
        if !self.validated.contains(&from) {
            if self.validated.len() == MAX_VALIDATED {
                let evicted = self.validated.remove(0);
                if self.selected == Some(evicted) {
                    self.selected = None;
                }
                change.evicted = Some(evicted);
            }
            self.validated.push(from);
            change.added = Some(from);
        }
        if nominated || self.selected.is_none() {
            self.selected = Some(from);
        }
        change
    }

    /// Forgets `addr` (another transport validated it since); returns whether it was ours.
    pub(super) fn forget(&mut self, addr: SocketAddr) -> bool {
        let before = self.validated.len();
        self.validated.retain(|a| *a != addr);
        if self.selected == Some(addr) {
            self.selected = None;
        }
        self.validated.len() != before
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(now: Instant) -> Peer {
        let ice = IceCredentials {
            ufrag: "local".into(),
            pwd: "local-password-0123456789".into(),
        };
        Peer::new(now, RoomId::from_u64(1), "s".into(), Side::Publish, ice)
    }

    #[test]
    fn the_ninth_address_evicts_the_oldest_and_says_so() {
        let now = Instant::now();
        let mut peer = peer(now);
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        for port in 1..=8 {
            let change = peer.validate(now, addr(port), false);
            assert_eq!(change.added, Some(addr(port)));
            assert_eq!(change.evicted, None);
        }
        assert_eq!(peer.validate(now, addr(3), true), AddressChange::default());
        let change = peer.validate(now, addr(9), false);
        assert_eq!(change.added, Some(addr(9)));
        assert_eq!(change.evicted, Some(addr(1)));
        assert_eq!(peer.validated.len(), MAX_VALIDATED);
        assert!(peer.forget(addr(3)));
        assert_eq!(peer.selected, None, "the forgotten address was selected");
        assert!(!peer.forget(addr(3)));
    }
}
