//! Per-stream mechanisms, one small type each (mediasoup's one-class-per-mechanism).

mod inbound;
mod keyframe_requester;
mod nack_generator;
mod rate_meter;
mod retransmit_buffer;
mod retransmit_limiter;
mod token_bucket;

pub use inbound::{InboundRtp, Received};
pub use keyframe_requester::KeyframeRequester;
pub use nack_generator::{NackGenerator, NackOutcome};
pub use rate_meter::RateMeter;
pub use retransmit_buffer::RetransmitBuffer;
pub use retransmit_limiter::{Refused, RetransmitLimiter};
pub use token_bucket::TokenBucket;
