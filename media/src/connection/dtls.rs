//! The DTLS server side of one transport (the SFU is always the DTLS server: `a=setup:passive`
//! in answers, `actpass` in offers). The client's certificate must match the fingerprint from
//! its SDP; the handshake ends with SRTP keys.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc_crypto::{HashAlgorithm, RTCCryptoProvider};
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;

use super::srtp::SrtpSession;
#[cfg(test)]
use rtc_srtp::protection_profile::ProtectionProfile;

/// The node's DTLS identity, shared by every transport of every worker.
#[derive(Clone)]
pub struct DtlsIdentity {
    certificate: Certificate,
    provider: Arc<dyn RTCCryptoProvider>,
    /// SHA-256 fingerprint of the certificate, `AB:CD:…`.
    pub fingerprint: String,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// A DTLS failure (handshake, fingerprint, record).
#[derive(Debug, thiserror::Error)]
#[error("dtls: {0}")]
pub struct DtlsError(pub String);

impl DtlsIdentity {
    /// Generates a fresh self-signed certificate (ECDSA P-256, ring).
    pub fn generate() -> Result<Self, DtlsError> {
        let provider = rtc_crypto::default_provider().map_err(|e| DtlsError(e.to_string()))?;
        let certificate =
            Certificate::generate_self_signed(vec!["mooyaho".to_owned()], provider.crypto())
                .map_err(|e| DtlsError(e.to_string()))?;
        let der = certificate
            .certificate
            .first()
            .expect("a generated certificate has one DER entry");
        let fingerprint = fingerprint_of(provider.as_ref(), der.as_ref())?;
        Ok(Self {
            certificate,
            provider,
            fingerprint,
        })
    }

    /// The crypto provider (for SRTP contexts).
    pub fn provider(&self) -> &Arc<dyn RTCCryptoProvider> {
        &self.provider
    }
}

/// SHA-256 of a DER certificate as upper-case colon-separated hex.
pub fn fingerprint_of(provider: &dyn RTCCryptoProvider, der: &[u8]) -> Result<String, DtlsError> {
    let hash = provider
        .crypto()
        .hash(HashAlgorithm::Sha256, der)
        .map_err(|e| DtlsError(e.to_string()))?;
    Ok(hash
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// One transport's DTLS server.
pub struct DtlsServer {
    endpoint: Endpoint,
    provider: Arc<dyn RTCCryptoProvider>,
    remote: Option<SocketAddr>,
    connected: bool,
}

impl std::fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsServer")
            .field("remote", &self.remote)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// What a datagram did to the DTLS state.
#[derive(Debug)]
pub enum DtlsOutcome {
    /// Handshake progress (or nothing).
    Pending,
    /// The handshake completed: SRTP is ready.
    Connected(Box<SrtpSession>),
    /// The peer closed the association.
    Closed,
}

impl DtlsServer {
    /// A server that only accepts a client whose certificate hashes to `remote_fingerprint`.
    pub fn new(identity: &DtlsIdentity, remote_fingerprint: &str) -> Result<Self, DtlsError> {
        let expected = remote_fingerprint.to_ascii_uppercase();
        let provider = identity.provider.clone();
        let verify_provider = provider.clone();
        let verify = Arc::new(
            move |certs: &[Vec<u8>], _: &[rustls_pki_types::CertificateDer<'static>]| {
                let Some(leaf) = certs.first() else {
                    return Err(rtc_shared::error::Error::ErrNoCertificates);
                };
                let actual = fingerprint_of(verify_provider.as_ref(), leaf)
                    .map_err(|e| rtc_shared::error::Error::Other(e.0))?;
                if actual == expected {
                    Ok(())
                } else {
                    Err(rtc_shared::error::Error::Other(
                        "certificate does not match the SDP fingerprint".into(),
                    ))
                }
            },
        );
        let config: HandshakeConfig = ConfigBuilder::default()
            .with_crypto_provider(provider.clone())
            .with_certificates(vec![identity.certificate.clone()])
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            // Self-signed certificates: trust comes from the SDP fingerprint checked above.
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(false, None)
            .map_err(|e| DtlsError(e.to_string()))?;
        let unspecified: SocketAddr = ([0, 0, 0, 0], 0).into();
        Ok(Self {
            endpoint: Endpoint::new(unspecified, Default::default(), Some(Arc::new(config))),
            provider,
            remote: None,
            connected: false,
        })
    }

    /// Feeds a DTLS datagram from `from` (an ICE-validated address).
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<DtlsOutcome, DtlsError> {
        // One association per transport: a second address is the same peer after an ICE path
        // change only if the handshake has not started from another address.
        if let Some(remote) = self.remote
            && remote != from
            && self.connected
        {
            return Err(DtlsError("DTLS from a second address".into()));
        }
        self.remote = Some(from);
        let events = self
            .endpoint
            .read(now, from, None, BytesMut::from(datagram))
            .map_err(|e| DtlsError(e.to_string()))?;
        let mut outcome = DtlsOutcome::Pending;
        for event in events {
            match event {
                EndpointEvent::HandshakeComplete => {
                    let state = self
                        .endpoint
                        .get_connection_state(from)
                        .ok_or_else(|| DtlsError("handshake state missing".into()))?;
                    let session = SrtpSession::from_dtls(state, self.provider.as_ref())?;
                    self.connected = true;
                    outcome = DtlsOutcome::Connected(Box::new(session));
                }
                EndpointEvent::PeerClosed => outcome = DtlsOutcome::Closed,
                // No data channels on the SFU; future variants carry nothing we act on.
                _ => {}
            }
        }
        Ok(outcome)
    }

    /// The next datagram to send, with its destination.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.endpoint
            .poll_transmit()
            .map(|t| (t.transport.peer_addr, t.message))
    }

    /// When [`Self::handle_timeout`] must be called (handshake retransmission).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.remote.and_then(|r| self.endpoint.poll_timeout(&r))
    }

    /// Retransmits the current flight if its timer expired.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsError> {
        match self.remote {
            Some(remote) => self
                .endpoint
                .handle_timeout(remote, now)
                .map_err(|e| DtlsError(e.to_string())),
            None => Ok(()),
        }
    }

    /// The handshake completed.
    pub fn is_connected(&self) -> bool {
        self.connected
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A DTLS client as a browser would run it, against our server, over an in-memory link.
    struct Client {
        endpoint: Endpoint,
        identity: DtlsIdentity,
    }

    const CLIENT: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);
    const SERVER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6000);

    impl Client {
        fn new(now: Instant) -> Self {
            let identity = DtlsIdentity::generate().unwrap();
            let config = ConfigBuilder::default()
                .with_crypto_provider(identity.provider.clone())
                .with_certificates(vec![identity.certificate.clone()])
                .with_srtp_protection_profiles(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm])
                .with_insecure_skip_verify(true)
                .with_extended_master_secret(ExtendedMasterSecretType::Require)
                .build(true, None)
                .unwrap();
            let mut endpoint = Endpoint::new(CLIENT, Default::default(), None);
            endpoint
                .connect(now, SERVER, Arc::new(config), None)
                .unwrap();
            Self { endpoint, identity }
        }
    }

    /// Runs the handshake; returns the server outcome and the client's SRTP session.
    fn handshake(
        server: &mut DtlsServer,
        client: &mut Client,
    ) -> (Result<bool, DtlsError>, Option<SrtpSession>) {
        let mut now = Instant::now();
        let mut client_srtp = None;
        for _ in 0..50 {
            let mut progressed = false;
            while let Some(t) = client.endpoint.poll_transmit() {
                progressed = true;
                match server.handle(now, CLIENT, &t.message) {
                    Ok(DtlsOutcome::Connected(_)) => {}
                    Ok(_) => {}
                    Err(e) => return (Err(e), None),
                }
            }
            while let Some((to, datagram)) = server.poll_transmit() {
                assert_eq!(to, CLIENT);
                progressed = true;
                for event in client
                    .endpoint
                    .read(now, SERVER, None, datagram)
                    .unwrap_or_default()
                {
                    if let EndpointEvent::HandshakeComplete = event {
                        let state = client.endpoint.get_connection_state(SERVER).unwrap();
                        client_srtp = Some(
                            SrtpSession::from_dtls(state, client.identity.provider.as_ref())
                                .unwrap(),
                        );
                    }
                }
            }
            if server.is_connected() && client_srtp.is_some() {
                return (Ok(true), client_srtp);
            }
            if !progressed {
                now += Duration::from_secs(1);
                let _ = server.handle_timeout(now);
                let _ = client.endpoint.handle_timeout(SERVER, now);
            }
        }
        (Ok(server.is_connected()), client_srtp)
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut packet = vec![0x80, 96];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&1234u32.to_be_bytes());
        packet.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        packet.extend_from_slice(&[7u8; 100]);
        packet
    }

    #[test]
    fn handshake_with_matching_fingerprint_yields_working_srtp() {
        let identity = DtlsIdentity::generate().unwrap();
        let mut client = Client::new(Instant::now());
        let mut server = DtlsServer::new(&identity, &client.identity.fingerprint).unwrap();
        let (connected, client_srtp) = handshake(&mut server, &mut client);
        assert!(connected.unwrap());
        let mut client_srtp = client_srtp.expect("client completed");
        assert!(matches!(
            client_srtp.profile,
            ProtectionProfile::AeadAes128Gcm
        ));

        // Re-run to get the server's session: the outcome was consumed in `handshake`, so derive
        // it again from the connection state.
        let state = server.endpoint.get_connection_state(CLIENT).unwrap();
        let mut server_srtp = SrtpSession::from_dtls(state, identity.provider.as_ref()).unwrap();
        let protected = client_srtp.protect_rtp(&rtp(1)).unwrap();
        assert_ne!(&protected[12..], &rtp(1)[12..]);
        assert_eq!(
            &server_srtp.unprotect_rtp(&protected).unwrap()[..],
            &rtp(1)[..]
        );
        // A replay is refused and recognisable as one.
        let replay = server_srtp.unprotect_rtp(&protected).unwrap_err();
        assert!(replay.is_replay(), "{replay}");
        // Tampering fails authentication.
        let mut tampered = client_srtp.protect_rtp(&rtp(2)).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x55;
        assert!(server_srtp.unprotect_rtp(&tampered).is_err());
        // And the other direction.
        let back = server_srtp.protect_rtp(&rtp(3)).unwrap();
        assert_eq!(&client_srtp.unprotect_rtp(&back).unwrap()[..], &rtp(3)[..]);
    }

    #[test]
    fn mismatched_fingerprint_fails_the_handshake() {
        let identity = DtlsIdentity::generate().unwrap();
        let mut client = Client::new(Instant::now());
        let wrong = DtlsIdentity::generate().unwrap().fingerprint;
        let mut server = DtlsServer::new(&identity, &wrong).unwrap();
        let (outcome, _) = handshake(&mut server, &mut client);
        assert!(!matches!(outcome, Ok(true)), "handshake must not complete");
        assert!(!server.is_connected());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let identity = DtlsIdentity::generate().unwrap();
        let mut server = DtlsServer::new(&identity, &identity.fingerprint).unwrap();
        let now = Instant::now();
        for datagram in [
            &[22u8][..],
            &[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2],
            &[63; 40],
        ] {
            let _ = server.handle(now, CLIENT, datagram);
        }
        assert!(!server.is_connected());
    }
}
