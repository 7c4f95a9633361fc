//! [`Store`](crate::domain::ports::Store) implementations: an embedded one (memory + an on-disk
//! snapshot of channels and SFU nodes) for single-instance deployments, and Redis for many.

mod embedded;
mod keys;
mod redis;

pub use embedded::EmbeddedStore;
pub use keys::{DEFAULT_PREFIX, KeySpace};
pub use redis::RedisStore;

/// Behaviour both stores must share, run by each store's own tests.
#[cfg(test)]
mod tests {
    use crate::domain::ids::{ChannelId, SfuServerId};
    use crate::domain::model::ChannelRecord;
    use crate::domain::ports::ChannelStore;

    /// `unplace_channel` clears only the named room, once, and says whether it did.
    pub(super) async fn unplacing_clears_only_the_named_room(store: &dyn ChannelStore) {
        let id = ChannelId::from("c");
        let record = ChannelRecord {
            id: id.clone(),
            sfu_enabled: true,
            sfu_server_id: None,
            sfu_room: None,
            created_at_ms: 1,
        };
        store.create_channel(&record).await.unwrap();
        let node = SfuServerId(3);
        store.place_channel(&id, node, "r1").await.unwrap();
        assert!(
            !store.unplace_channel(&id, "r0").await.unwrap(),
            "another room"
        );
        assert!(store.unplace_channel(&id, "r1").await.unwrap());
        assert!(
            !store.unplace_channel(&id, "r1").await.unwrap(),
            "only once"
        );
        let now = store.channel(&id).await.unwrap().unwrap();
        assert_eq!((now.sfu_server_id, now.sfu_room), (None, None));
        assert!(
            !store
                .unplace_channel(&ChannelId::from("nope"), "r1")
                .await
                .unwrap()
        );
    }
}
