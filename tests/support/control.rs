//! A control-plane client of a real `mooyaho sfu`, as a signaling instance (or an attacker) holds
//! one: a QUIC endpoint that accepts any node certificate, the hello with a proof of the cluster
//! secret, and one request per stream.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use mooyaho_control::proof::{EXPORTER_LABEL, EXPORTER_LEN};
use mooyaho_control::{
    ALPN, MAX_HELLO_FRAME, Proof, Request, Response, Role, read_frame, write_frame,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn exporter(connection: &quinn::Connection) -> [u8; EXPORTER_LEN] {
    let mut out = [0; EXPORTER_LEN];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .expect("TLS exporter");
    out
}

/// Accepts any server certificate: the hostile clients below do not care who the node is.
#[derive(Debug)]
pub struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A hostile client endpoint on 127.0.0.1.
pub fn hostile_endpoint() -> quinn::Endpoint {
    hostile_endpoint_from(Ipv4Addr::LOCALHOST, quinn::TransportConfig::default())
}

/// A hostile client endpoint bound to `source` (any 127.0.0.0/8 address is a distinct source on
/// loopback), with `transport`.
pub fn hostile_endpoint_from(
    source: Ipv4Addr,
    transport: quinn::TransportConfig,
) -> quinn::Endpoint {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    endpoint
}

pub async fn connect(
    endpoint: &quinn::Endpoint,
    node: SocketAddr,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    endpoint.connect(node, "mooyaho-sfu").unwrap().await
}

pub fn hello_with(proof: Proof) -> Vec<u8> {
    mooyaho_control::encode(&Request::Hello {
        instance: "hostile".into(),
        proof,
    })
}

/// An authenticated control connection, as a signaling instance holds one.
pub async fn control_session(node: SocketAddr, secret: &str) -> quinn::Connection {
    let endpoint = hostile_endpoint();
    let connection = connect(&endpoint, node).await.expect("connect");
    let keys = exporter(&connection);
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let hello = hello_with(Proof::new(secret.as_bytes(), Role::Signaling, &keys));
    send.write_all(&hello).await.unwrap();
    let reply = read_frame::<Response, _>(&mut recv, MAX_HELLO_FRAME).await;
    assert!(matches!(reply, Ok(Response::Welcome { .. })), "{reply:?}");
    connection
}

/// One request on a fresh stream.
pub async fn control_call(connection: &quinn::Connection, request: &Request) -> Response {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    write_frame(&mut send, request).await.unwrap();
    let _ = send.finish();
    read_frame::<Response, _>(&mut recv, mooyaho_control::MAX_FRAME)
        .await
        .unwrap()
}
