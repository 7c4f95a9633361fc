//! SDP syntax rules that signaling and the SFU node must apply alike: the node decides which
//! `a=msid` names a published track, and signaling names the same track in its webhooks, so
//! both read it with these functions.

/// The longest msid `id` (RFC 8830 §2).
pub const MAX_MSID_ID: usize = 64;

/// RFC 4566 §9 `token` (also the msid `id` syntax of RFC 8830 §2, length 1–64 there).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`{|}~".contains(&b))
}

/// The `<stream> <track>` of an `a=msid` value (RFC 8830 §2). Only a complete, well-formed
/// pair counts: the ids are copied into subscribe offers and webhooks, so they must be tokens
/// of at most [`MAX_MSID_ID`] bytes.
pub fn msid(value: &str) -> Option<(&str, &str)> {
    let mut fields = value.split_whitespace();
    let (stream, track) = (fields.next()?, fields.next()?);
    let valid = |id: &str| id.len() <= MAX_MSID_ID && is_token(id);
    (valid(stream) && valid(track)).then_some((stream, track))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_rfc_4566_token_chars_only() {
        for good in ["a", "mic-1", "{6f1c}", "x.y_z~!#$%&'*+^`|"] {
            assert!(is_token(good), "{good}");
        }
        for bad in [
            "",
            "a b",
            "<img/src=x>",
            "a\"b",
            "é",
            "a/b",
            "a:b",
            "a;b",
            "a\0",
        ] {
            assert!(!is_token(bad), "{bad}");
        }
    }

    #[test]
    fn an_msid_needs_two_valid_ids_of_at_most_64_bytes() {
        assert_eq!(msid("s real-track"), Some(("s", "real-track")));
        assert_eq!(msid("s  t  extra"), Some(("s", "t")));
        assert_eq!(msid("s <img/src=x/onerror=alert(1)>"), None);
        assert_eq!(msid("s"), None);
        assert_eq!(
            msid(&format!("s {}", "t".repeat(64))).map(|m| m.1.len()),
            Some(64)
        );
        assert_eq!(msid(&format!("s {}", "t".repeat(65))), None);
        assert_eq!(msid(&format!("{} t", "s".repeat(65))), None);
    }
}
