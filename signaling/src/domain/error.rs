//! Why a client request was refused: a machine-readable [`ErrorCode`] and an explanation. The
//! edge sends it as an `error` frame; the codes that only the edge produces (bad JSON, frame
//! limits) live here too so that every refusal has one vocabulary.

use super::ports::StoreError;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not JSON.
    InvalidJson,
    /// The JSON does not match the message's schema.
    InvalidMessage,
    /// No such message type.
    UnknownType,
    /// Binary frames are not part of the protocol.
    UnsupportedFrame,
    /// Larger than the frame size limit.
    FrameTooLarge,
    /// More messages than the per-connection rate allows.
    RateLimited,
    /// The session has no user (integrate it first).
    NotIntegrated,
    /// No such channel.
    ChannelNotFound,
    /// The request needs a channel and the session is in none.
    NotInChannel,
    /// No such (live) session.
    SessionNotFound,
    /// The session may not do this (e.g. signal a session outside its channel).
    Forbidden,
    /// There is no pending call from that session.
    NoPendingCall,
    /// Unknown, expired or already-used resume token.
    InvalidToken,
    /// SFU media is not available for this request.
    SfuUnavailable,
    /// Every healthy SFU node that could serve the member is at its transport cap
    /// (`mooyaho sfu --max-transports`).
    SfuFull,
    /// The request asks for more than a participant may hold (e.g. tracks in a publish offer).
    LimitExceeded,
    /// Shared state is unreachable; retry later.
    Unavailable,
}

impl ErrorCode {
    /// The wire name (`snake_case`), also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidMessage => "invalid_message",
            Self::UnknownType => "unknown_type",
            Self::UnsupportedFrame => "unsupported_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::RateLimited => "rate_limited",
            Self::NotIntegrated => "not_integrated",
            Self::ChannelNotFound => "channel_not_found",
            Self::NotInChannel => "not_in_channel",
            Self::SessionNotFound => "session_not_found",
            Self::Forbidden => "forbidden",
            Self::NoPendingCall => "no_pending_call",
            Self::InvalidToken => "invalid_token",
            Self::SfuUnavailable => "sfu_unavailable",
            Self::SfuFull => "sfu_full",
            Self::LimitExceeded => "limit_exceeded",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A refused request: its code and explanation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct SignalError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl SignalError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for SignalError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store failure during a WebSocket request");
        Self::new(
            ErrorCode::Unavailable,
            "shared state is unavailable; retry later",
        )
    }
}
