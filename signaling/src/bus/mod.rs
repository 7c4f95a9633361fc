//! [`Bus`](crate::domain::ports::Bus) implementations: in-process for a single instance, Redis
//! pub/sub for many. Each instance listens on one inbox topic, so subscriptions never accumulate
//! per session or channel (the original engine leaked one Redis subscription per session).

mod in_process;
mod redis;

pub use in_process::InProcessBus;
pub use redis::RedisBus;
