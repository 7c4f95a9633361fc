//! RTP: the parsed view of a received packet, header extensions, the outgoing header writer,
//! the per-subscription [`Rewriter`] and codec keyframe detection.

mod ext;
mod header;
mod keyframe;
mod packet;
mod rewrite;

pub use ext::{ExtensionKind, ExtensionMap, Extensions, OutExtensions};
pub use header::{BufferTooSmall, RtpHeader};
pub use keyframe::{Codec, is_keyframe};
pub use packet::{ParseError, RtpPacket};
pub use rewrite::{Rewriter, Rewritten};

#[cfg(test)]
pub(crate) use packet::tests as tests_support;
