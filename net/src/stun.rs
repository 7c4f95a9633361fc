//! STUN binding messages as ICE uses them (RFC 5389, RFC 8445 §7): parsing and authenticating
//! a connectivity check ([`BindingRequest`]), signing its success response, building a check
//! ([`Check`]) and verifying the answer to it ([`verify_success`]). Wire format
//! only: which checks a transport accepts, and what they do to its paths, is the ICE agent's
//! business (the SFU node's per-connection state machine).

use std::net::SocketAddr;

use stun::agent::TransactionId as TransactionID;
use stun::attributes::{
    ATTR_FINGERPRINT, ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USE_CANDIDATE,
    ATTR_USERNAME,
};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    BINDING_REQUEST, BINDING_SUCCESS, Message, MessageType, Setter, TRANSACTION_ID_SIZE,
};
use stun::xoraddr::XorMappedAddress;

/// Why a STUN datagram was dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not a well-formed STUN message.
    #[error("malformed STUN message")]
    Malformed,
    /// Not a binding request (ICE-lite answers nothing else).
    #[error("not a binding request")]
    NotBindingRequest,
    /// No USERNAME, or not `local:remote`.
    #[error("missing or malformed USERNAME")]
    BadUsername,
    /// FINGERPRINT missing or wrong.
    #[error("bad FINGERPRINT")]
    BadFingerprint,
    /// MESSAGE-INTEGRITY missing or wrong for the named transport.
    #[error("bad MESSAGE-INTEGRITY")]
    BadIntegrity,
    /// A response that answers none of our outstanding checks (or comes from elsewhere).
    #[error("unexpected STUN response")]
    Unexpected,
}

/// A STUN transaction id (RFC 5389 §6: 96 random bits).
pub type TransactionId = [u8; TRANSACTION_ID_SIZE];

/// A fresh random transaction id.
pub fn new_transaction_id() -> TransactionId {
    rand::random()
}

/// PRIORITY of a host candidate (RFC 8445 §5.1.2.1: type preference 126, local preference
/// 65535, component 1), as a client sends on its checks.
pub const HOST_PRIORITY: u32 = 2_130_706_431;

/// PRIORITY of a peer-reflexive candidate (type preference 110), as an agent that learnt its
/// address from the peer's checks sends (the ICE-lite node's consent checks).
pub const PEER_REFLEXIVE_PRIORITY: u32 = 1_862_270_975;

/// The sender's ICE role (RFC 8445 §7.1.3) with its tie-breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceRole {
    /// ICE-CONTROLLING: the agent that nominates (a full agent facing an ICE-lite one).
    Controlling(u64),
    /// ICE-CONTROLLED (an ICE-lite agent is always controlled).
    Controlled(u64),
}

/// A connectivity check to send (RFC 8445 §7.2.2).
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
    /// USERNAME: `<receiver's ufrag>:<sender's ufrag>`.
    pub username: &'a str,
    /// The receiver's ICE password: the key of MESSAGE-INTEGRITY.
    pub receiver_pwd: &'a str,
    /// The transaction id the answer must carry.
    pub transaction: TransactionId,
    /// PRIORITY ([`HOST_PRIORITY`], [`PEER_REFLEXIVE_PRIORITY`]).
    pub priority: u32,
    /// ICE-CONTROLLING or ICE-CONTROLLED.
    pub role: IceRole,
    /// USE-CANDIDATE: the controlling agent nominates this pair.
    pub use_candidate: bool,
}

impl Check<'_> {
    /// The binding request, signed (MESSAGE-INTEGRITY, then FINGERPRINT).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut request = Message::new();
        request.typ = BINDING_REQUEST;
        request.transaction_id = TransactionID(self.transaction);
        request.write_header();
        request.add(ATTR_USERNAME, self.username.as_bytes());
        request.add(ATTR_PRIORITY, &self.priority.to_be_bytes());
        match self.role {
            IceRole::Controlling(tie_breaker) => {
                request.add(ATTR_ICE_CONTROLLING, &tie_breaker.to_be_bytes());
            }
            IceRole::Controlled(tie_breaker) => {
                request.add(ATTR_ICE_CONTROLLED, &tie_breaker.to_be_bytes());
            }
        }
        if self.use_candidate {
            request.add(ATTR_USE_CANDIDATE, &[]);
        }
        let setters: [&dyn Setter; 2] = [
            &MessageIntegrity::new_short_term_integrity(self.receiver_pwd.to_owned()),
            &FINGERPRINT,
        ];
        for setter in setters {
            setter
                .add_to(&mut request)
                .expect("adding attributes to a fresh request cannot fail");
        }
        request.raw
    }
}

/// Whether a STUN datagram is a response (success or error) rather than a request.
pub fn is_response(datagram: &[u8]) -> bool {
    // The class bits of the message type (RFC 5389 §6): 0b10 success, 0b11 error.
    datagram.len() >= 2 && datagram[0] & 0x01 == 0x01
}

/// Whether a datagram parses as a binding success response (not yet verified: see
/// [`verify_success`]).
pub fn is_binding_success(datagram: &[u8]) -> bool {
    parse_as(datagram, BINDING_SUCCESS, StunError::Unexpected).is_ok()
}

/// `datagram` as a STUN message of type `typ`; `other_type` is the error for any other type.
fn parse_as(
    datagram: &[u8],
    typ: MessageType,
    other_type: StunError,
) -> Result<Message, StunError> {
    let mut message = Message::new();
    message
        .unmarshal_binary(datagram)
        .map_err(|_| StunError::Malformed)?;
    if message.typ != typ {
        return Err(other_type);
    }
    Ok(message)
}

/// A binding success response's transaction id, once its FINGERPRINT (when present) and its
/// MESSAGE-INTEGRITY (the checked agent's password, `remote_pwd`: the key the check was signed
/// with) verify.
pub fn verify_success(datagram: &[u8], remote_pwd: &str) -> Result<TransactionId, StunError> {
    let mut message = parse_as(datagram, BINDING_SUCCESS, StunError::Unexpected)?;
    if message.contains(ATTR_FINGERPRINT) {
        FINGERPRINT
            .check(&message)
            .map_err(|_| StunError::BadFingerprint)?;
    }
    MessageIntegrity::new_short_term_integrity(remote_pwd.to_owned())
        .check(&mut message)
        .map_err(|_| StunError::BadIntegrity)?;
    Ok(message.transaction_id.0)
}

/// A parsed binding request, not yet authenticated.
#[derive(Debug)]
pub struct BindingRequest {
    message: Message,
    /// The local ufrag the request is addressed to (first half of USERNAME).
    pub local_ufrag: String,
    /// The remote ufrag (second half of USERNAME).
    pub remote_ufrag: String,
    /// USE-CANDIDATE is present: the controlling agent nominates this pair.
    pub use_candidate: bool,
}

impl BindingRequest {
    /// Parses a datagram classified as STUN.
    pub fn parse(datagram: &[u8]) -> Result<Self, StunError> {
        let message = parse_as(datagram, BINDING_REQUEST, StunError::NotBindingRequest)?;
        let username = message
            .get(ATTR_USERNAME)
            .map_err(|_| StunError::BadUsername)?;
        let username = String::from_utf8(username).map_err(|_| StunError::BadUsername)?;
        let (local, remote) = username.split_once(':').ok_or(StunError::BadUsername)?;
        if local.is_empty() || remote.is_empty() {
            return Err(StunError::BadUsername);
        }
        Ok(Self {
            local_ufrag: local.to_owned(),
            remote_ufrag: remote.to_owned(),
            use_candidate: message.contains(ATTR_USE_CANDIDATE),
            message,
        })
    }

    /// Verifies FINGERPRINT and MESSAGE-INTEGRITY (short-term credential: the local password).
    pub fn authenticate(&mut self, local_pwd: &str) -> Result<(), StunError> {
        FINGERPRINT
            .check(&self.message)
            .map_err(|_| StunError::BadFingerprint)?;
        MessageIntegrity::new_short_term_integrity(local_pwd.to_owned())
            .check(&mut self.message)
            .map_err(|_| StunError::BadIntegrity)
    }

    /// The binding success response to send back to `from`, signed with `local_pwd`.
    pub fn success(&self, from: SocketAddr, local_pwd: &str) -> Vec<u8> {
        let mut response = Message::new();
        response.typ = BINDING_SUCCESS;
        response.transaction_id = self.message.transaction_id;
        response.write_header();
        let setters: [&dyn Setter; 3] = [
            &XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            },
            &MessageIntegrity::new_short_term_integrity(local_pwd.to_owned()),
            &FINGERPRINT,
        ];
        for setter in setters {
            setter
                .add_to(&mut response)
                .expect("adding attributes to a fresh response cannot fail");
        }
        response.raw
    }
}

/// Fuzz body: any datagram through STUN parsing and authentication never panics, and whatever
/// authenticates with the fixed password yields a response that parses as a binding success.
pub fn fuzz_stun(data: &[u8]) {
    let Ok(mut request) = BindingRequest::parse(data) else {
        return;
    };
    if request.authenticate("fuzz-password-0123456789").is_ok() {
        let from = SocketAddr::from(([127, 0, 0, 1], 9));
        let response = request.success(from, "fuzz-password-0123456789");
        let mut parsed = Message::new();
        parsed
            .unmarshal_binary(&response)
            .expect("our own response parses");
        assert_eq!(parsed.typ, BINDING_SUCCESS);
    }
}

#[cfg(test)]
mod tests {
    use stun::message::Getter;

    use super::*;

    fn request(username: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
        Check {
            username,
            receiver_pwd: pwd,
            transaction: new_transaction_id(),
            priority: HOST_PRIORITY,
            role: IceRole::Controlling(7),
            use_candidate,
        }
        .to_bytes()
    }

    #[test]
    fn checks_carry_the_role_priority_and_nomination_they_were_built_with() {
        for (role, use_candidate) in [
            (IceRole::Controlling(7), true),
            (IceRole::Controlling(8), false),
            (IceRole::Controlled(9), false),
        ] {
            let transaction = new_transaction_id();
            let raw = Check {
                username: "node:client",
                receiver_pwd: "node-password-0123456789",
                transaction,
                priority: PEER_REFLEXIVE_PRIORITY,
                role,
                use_candidate,
            }
            .to_bytes();
            let mut parsed = Message::new();
            parsed.unmarshal_binary(&raw).unwrap();
            assert_eq!(parsed.typ, BINDING_REQUEST);
            assert_eq!(parsed.transaction_id.0, transaction);
            assert_eq!(
                parsed.get(ATTR_PRIORITY).unwrap(),
                PEER_REFLEXIVE_PRIORITY.to_be_bytes()
            );
            let (present, absent, tie_breaker) = match role {
                IceRole::Controlling(t) => (ATTR_ICE_CONTROLLING, ATTR_ICE_CONTROLLED, t),
                IceRole::Controlled(t) => (ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, t),
            };
            assert_eq!(parsed.get(present).unwrap(), tie_breaker.to_be_bytes());
            assert!(!parsed.contains(absent));
            let mut request = BindingRequest::parse(&raw).unwrap();
            assert_eq!(request.local_ufrag, "node");
            assert_eq!(request.remote_ufrag, "client");
            assert_eq!(request.use_candidate, use_candidate);
            request.authenticate("node-password-0123456789").unwrap();
        }
    }

    #[test]
    fn a_success_verifies_with_the_checked_agents_password_only() {
        let transaction = new_transaction_id();
        let raw = Check {
            username: "client:node",
            receiver_pwd: "client-password-0123456789",
            transaction,
            priority: PEER_REFLEXIVE_PRIORITY,
            role: IceRole::Controlled(1),
            use_candidate: false,
        }
        .to_bytes();
        assert!(!is_response(&raw) && !is_binding_success(&raw));
        let mut request = BindingRequest::parse(&raw).unwrap();
        request.authenticate("client-password-0123456789").unwrap();
        let from: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let answer = request.success(from, "client-password-0123456789");
        assert!(is_response(&answer) && is_binding_success(&answer));
        assert_eq!(
            verify_success(&answer, "client-password-0123456789"),
            Ok(transaction)
        );
        assert_eq!(
            verify_success(&answer, "another-password-012345678"),
            Err(StunError::BadIntegrity)
        );
        let mut tampered = answer.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            verify_success(&tampered, "client-password-0123456789"),
            Err(StunError::BadFingerprint)
        );
        assert_eq!(
            verify_success(&raw, "client-password-0123456789"),
            Err(StunError::Unexpected),
            "a request is not an answer"
        );
        assert_eq!(verify_success(&[1, 1], "x"), Err(StunError::Malformed));
    }

    #[test]
    fn authenticated_request_gets_a_signed_success() {
        let raw = request("local:remote", "secret-password", true);
        let mut req = BindingRequest::parse(&raw).unwrap();
        assert_eq!(
            (req.local_ufrag.as_str(), req.remote_ufrag.as_str()),
            ("local", "remote")
        );
        assert!(req.use_candidate);
        req.authenticate("secret-password").unwrap();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let response = req.success(from, "secret-password");
        let mut parsed = Message::new();
        parsed.unmarshal_binary(&response).unwrap();
        assert_eq!(parsed.typ, BINDING_SUCCESS);
        FINGERPRINT.check(&parsed).unwrap();
        MessageIntegrity::new_short_term_integrity("secret-password".into())
            .check(&mut parsed)
            .unwrap();
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&parsed).unwrap();
        assert_eq!(SocketAddr::new(mapped.ip, mapped.port), from);
    }

    #[test]
    fn wrong_password_and_tampering_are_refused() {
        let raw = request("local:remote", "secret-password", false);
        let mut req = BindingRequest::parse(&raw).unwrap();
        assert_eq!(
            req.authenticate("other-password"),
            Err(StunError::BadIntegrity)
        );
        let mut tampered = raw.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut req = BindingRequest::parse(&tampered).unwrap();
        assert_eq!(
            req.authenticate("secret-password"),
            Err(StunError::BadFingerprint)
        );
    }

    #[test]
    fn fuzz_body_accepts_valid_and_garbage_input() {
        fuzz_stun(&request("local:remote", "fuzz-password-0123456789", true));
        fuzz_stun(&request("local:remote", "other", false));
        fuzz_stun(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]);
        fuzz_stun(&[]);
    }

    #[test]
    fn malformed_requests_are_typed_errors() {
        assert_eq!(
            BindingRequest::parse(&[0, 1, 0]).unwrap_err(),
            StunError::Malformed
        );
        let raw = request("nocolon", "pwd", false);
        assert_eq!(
            BindingRequest::parse(&raw).unwrap_err(),
            StunError::BadUsername
        );
        let raw = request(":remote", "pwd", false);
        assert_eq!(
            BindingRequest::parse(&raw).unwrap_err(),
            StunError::BadUsername
        );
        // Truncations of a valid request never panic.
        let raw = request("local:remote", "pwd", true);
        for n in 0..raw.len() {
            let _ = BindingRequest::parse(&raw[..n]);
        }
    }
}
