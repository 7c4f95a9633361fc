//! [`Store`](crate::domain::ports::Store) implementations: an embedded one (memory + an on-disk
//! snapshot of channels and SFU nodes) for single-instance deployments, and Redis for many.

mod embedded;
mod keys;
mod redis;

pub use embedded::EmbeddedStore;
pub use keys::{DEFAULT_PREFIX, KeySpace};
pub use redis::RedisStore;
