//! Verifying Mooyaho's webhooks: each `POST` carries
//! `Mooyaho-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, where the
//! secret is the server's `--webhook-secret` (default: hex HMAC-SHA256(API key,
//! "mooyaho-webhook-v1"), see `docs/webhooks.md`).
//!
//! ```
//! use std::time::Duration;
//! use mooyaho_server_sdk::{verify_webhook, WebhookError};
//!
//! # let (body, header) = (b"{}".as_slice(), "t=1,v1=00");
//! match verify_webhook(body, header, "my-webhook-secret", Duration::from_secs(300)) {
//!     Ok(event) => println!("{} {:?}", event.event, event.channel),
//!     Err(WebhookError::Expired { .. }) => { /* an old (replayed?) delivery */ }
//!     Err(e) => eprintln!("refused webhook: {e}"),
//! }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Mooyaho-Signature";

/// One webhook event, as verified.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// Unique per event; a retried delivery repeats it (deduplicate on it).
    pub id: String,
    /// 1, 2, 3, … per signaling instance in emission order (a retry repeats it): a number never
    /// received was dropped or given up. 0 from servers that predate it.
    #[serde(default)]
    pub seq: u64,
    /// `channel.created`, `channel.deleted`, `participant.joined`, `participant.left`,
    /// `track.published`, `track.unpublished`, `sfu.up` or `sfu.down`.
    pub event: String,
    /// When it happened, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// The channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// The session.
    #[serde(default)]
    pub session: Option<String>,
    /// The session's user, when known.
    #[serde(default)]
    pub user: Option<Value>,
    /// The track.
    #[serde(default)]
    pub track: Option<WebhookTrack>,
    /// The SFU node's id.
    #[serde(default)]
    pub sfu_server: Option<u64>,
}

/// A published track, as a webhook names it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WebhookTrack {
    /// The publisher's `MediaStreamTrack.id` (its `a=msid`), or the mid when it sent none.
    pub id: String,
    /// The m-line's mid in the publisher's session.
    pub mid: String,
    /// `audio` or `video`.
    pub kind: String,
}

/// The shortest secret accepted, bytes (the server refuses shorter ones too): a shorter key is
/// open to brute force from one captured delivery.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest `Mooyaho-Signature` header read, bytes.
pub const MAX_SIGNATURE_HEADER_LEN: usize = 1024;
/// The most `v1` entries read from one header (a server rotating its secret sends two).
pub const MAX_SIGNATURES: usize = 8;

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The secret given to the verifier is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("webhook secret is {len} bytes; at least 16 are required")]
    SecretTooShort {
        /// Its length, bytes.
        len: usize,
    },
    /// The header is not `t=<unix seconds>,v1=<64 hex digits>` (with at most
    /// [`MAX_SIGNATURES`] `v1` entries and [`MAX_SIGNATURE_HEADER_LEN`] bytes in all).
    #[error("malformed Mooyaho-Signature header")]
    MalformedHeader,
    /// The signed timestamp is further from now than the tolerance (a replay, or a clock off).
    #[error("webhook timestamp {timestamp} is more than {tolerance_secs} s from now")]
    Expired {
        /// The header's `t`.
        timestamp: u64,
        /// The tolerance, seconds.
        tolerance_secs: u64,
    },
    /// No `v1` matches the body under this secret (tampered, or another secret).
    #[error("webhook signature does not match")]
    BadSignature,
    /// Signed correctly, but not a webhook event body.
    #[error("webhook body is not an event: {0}")]
    InvalidBody(#[from] serde_json::Error),
}

/// Verifies a webhook against `secret`, accepting a timestamp at most `tolerance` from now, and
/// parses it. Pass the body exactly as received (bytes, before any JSON parsing).
pub fn verify_webhook(
    body: &[u8],
    signature_header: &str,
    secret: &str,
    tolerance: Duration,
) -> Result<WebhookEvent, WebhookError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    verify_webhook_at(body, signature_header, secret, tolerance, now)
}

/// [`verify_webhook`] at a given time (Unix seconds).
pub fn verify_webhook_at(
    body: &[u8],
    signature_header: &str,
    secret: &str,
    tolerance: Duration,
    now: u64,
) -> Result<WebhookEvent, WebhookError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(WebhookError::SecretTooShort { len: secret.len() });
    }
    if signature_header.len() > MAX_SIGNATURE_HEADER_LEN {
        return Err(WebhookError::MalformedHeader);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in signature_header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                timestamp = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| WebhookError::MalformedHeader)?,
                );
            }
            Some(("v1", _)) if signatures.len() == MAX_SIGNATURES => {
                return Err(WebhookError::MalformedHeader);
            }
            Some(("v1", value)) => {
                signatures.push(hex(value).ok_or(WebhookError::MalformedHeader)?)
            }
            // Other schemes a later server may add are ignored, as long as v1 is there.
            Some(_) => {}
            None => return Err(WebhookError::MalformedHeader),
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::MalformedHeader)?;
    if signatures.is_empty() {
        return Err(WebhookError::MalformedHeader);
    }
    let tolerance_secs = tolerance.as_secs();
    if now.abs_diff(timestamp) > tolerance_secs {
        return Err(WebhookError::Expired {
            timestamp,
            tolerance_secs,
        });
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // `verify_slice` compares in constant time.
    if !signatures
        .iter()
        .any(|signature| mac.clone().verify_slice(signature).is_ok())
    {
        return Err(WebhookError::BadSignature);
    }
    Ok(serde_json::from_slice(body)?)
}

/// 64 hex digits as 32 bytes.
fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "webhook-secret-0123456789";
    const BODY: &[u8] =
        br#"{"id":"e1","event":"channel.created","createdAt":1700000000000,"channel":"c1"}"#;
    const NOW: u64 = 1_700_000_000;
    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn sign(secret: &str, t: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let v1: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("t={t},v1={v1}")
    }

    #[test]
    fn a_good_signature_within_tolerance_gives_the_event() {
        let header = sign(SECRET, NOW - 10, BODY);
        let event = verify_webhook_at(BODY, &header, SECRET, FIVE_MINUTES, NOW).unwrap();
        assert_eq!(event.event, "channel.created");
        assert_eq!(event.channel.as_deref(), Some("c1"));
        assert_eq!(event.created_at, 1_700_000_000_000);
        // Several v1 values (a secret being rotated): any match will do.
        let rotated = format!("{},v1={}", header, "0".repeat(64));
        assert!(verify_webhook_at(BODY, &rotated, SECRET, FIVE_MINUTES, NOW).is_ok());
    }

    #[test]
    fn tampered_bodies_other_secrets_and_moved_timestamps_are_bad_signatures() {
        let header = sign(SECRET, NOW, BODY);
        let tampered = String::from_utf8(BODY.to_vec())
            .unwrap()
            .replace("c1", "c2");
        for (body, header, secret) in [
            (tampered.as_bytes(), header.clone(), SECRET),
            (BODY, header.clone(), "another-secret-0123456789"),
            (
                BODY,
                header.replace(&format!("t={NOW}"), &format!("t={}", NOW - 1)),
                SECRET,
            ),
        ] {
            let refused = verify_webhook_at(body, &header, secret, FIVE_MINUTES, NOW).unwrap_err();
            assert!(matches!(refused, WebhookError::BadSignature), "{refused:?}");
        }
    }

    #[test]
    fn old_and_future_timestamps_are_expired() {
        for t in [NOW - 301, NOW + 301] {
            let header = sign(SECRET, t, BODY);
            let refused = verify_webhook_at(BODY, &header, SECRET, FIVE_MINUTES, NOW).unwrap_err();
            assert!(
                matches!(refused, WebhookError::Expired { .. }),
                "{refused:?}"
            );
        }
        let edge = sign(SECRET, NOW - 300, BODY);
        assert!(verify_webhook_at(BODY, &edge, SECRET, FIVE_MINUTES, NOW).is_ok());
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = sign(SECRET, NOW, BODY);
        let v1 = good.split_once("v1=").unwrap().1.to_owned();
        for header in [
            String::new(),
            "garbage".to_owned(),
            format!("v1={v1}"),
            format!("t={NOW}"),
            format!("t=abc,v1={v1}"),
            format!("t={NOW},v1={}", &v1[..63]),
            format!("t={NOW},v1={}zz", &v1[..62]),
        ] {
            let refused = verify_webhook_at(BODY, &header, SECRET, FIVE_MINUTES, NOW).unwrap_err();
            assert!(
                matches!(refused, WebhookError::MalformedHeader),
                "{header}: {refused:?}"
            );
        }
    }

    /// The reviewer's L4: a short secret is refused up front, and a header is read only up to
    /// 8 `v1` entries and 1 KiB.
    #[test]
    fn short_secrets_and_oversized_headers_are_refused() {
        let header = sign("short-secret", NOW, BODY);
        let refused = verify_webhook_at(BODY, &header, "short-secret", FIVE_MINUTES, NOW);
        assert!(
            matches!(refused, Err(WebhookError::SecretTooShort { len: 12 })),
            "{refused:?}"
        );
        let good = sign(SECRET, NOW, BODY);
        let eight = format!("{good}{}", format!(",v1={}", "0".repeat(64)).repeat(7));
        assert!(eight.len() <= MAX_SIGNATURE_HEADER_LEN);
        assert!(verify_webhook_at(BODY, &eight, SECRET, FIVE_MINUTES, NOW).is_ok());
        // A ninth v1, even a matching one, and a header over 1 KiB are malformed.
        let zeros = format!(",v1={}", "0".repeat(64)).repeat(8);
        let nine = format!("t={NOW}{zeros},v1={}", good.split_once("v1=").unwrap().1);
        assert!(nine.len() <= MAX_SIGNATURE_HEADER_LEN);
        let long = format!("{good},x={}", "a".repeat(MAX_SIGNATURE_HEADER_LEN));
        for header in [nine, long] {
            let refused = verify_webhook_at(BODY, &header, SECRET, FIVE_MINUTES, NOW);
            assert!(
                matches!(refused, Err(WebhookError::MalformedHeader)),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_signed_body_that_is_not_an_event_is_invalid() {
        let body = b"[1,2]";
        let header = sign(SECRET, NOW, body);
        let refused = verify_webhook_at(body, &header, SECRET, FIVE_MINUTES, NOW).unwrap_err();
        assert!(
            matches!(refused, WebhookError::InvalidBody(_)),
            "{refused:?}"
        );
    }
}
