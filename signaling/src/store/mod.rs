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
    use crate::domain::ids::{ChannelId, InstanceId, SessionId, SfuServerId};
    use crate::domain::model::{
        ChannelRecord, SessionRecord, SessionRoute, SessionUpdate, SfuSpan, TokenHash,
    };
    use crate::domain::ports::{ChannelStore, SessionStore};

    /// `routes` names each live session's instance and channel, in order, and `None` for a
    /// session that is gone.
    pub(super) async fn routes_name_the_instance_and_channel_of_live_sessions_only(
        store: &dyn SessionStore,
    ) {
        let token = || TokenHash {
            hash: "hash".into(),
            expires_ms: u64::MAX,
        };
        let mut in_channel = SessionRecord::dropped_for_test("in", token());
        in_channel.instance = InstanceId::from("i1");
        let mut outside = SessionRecord::dropped_for_test("out", token());
        outside.instance = InstanceId::from("i2");
        store.create_session(&in_channel).await.unwrap();
        store.create_session(&outside).await.unwrap();
        let update = SessionUpdate {
            channel: Some(Some(ChannelId::from("c"))),
            ..SessionUpdate::default()
        };
        store.update_session(&in_channel.id, &update).await.unwrap();
        let ids = [
            SessionId::from("out"),
            SessionId::from("gone"),
            SessionId::from("in"),
        ];
        let routes = store.routes(&ids).await.unwrap();
        assert_eq!(
            routes,
            [
                Some(SessionRoute {
                    instance: InstanceId::from("i2"),
                    channel: None,
                }),
                None,
                Some(SessionRoute {
                    instance: InstanceId::from("i1"),
                    channel: Some(ChannelId::from("c")),
                }),
            ]
        );
        assert!(store.routes(&[]).await.unwrap().is_empty());
    }

    /// `unplace_channel` clears only the named room, once, and says whether it did.
    pub(super) async fn unplacing_clears_only_the_named_room(store: &dyn ChannelStore) {
        let id = ChannelId::from("c");
        let record = ChannelRecord {
            id: id.clone(),
            sfu_enabled: true,
            sfu_server_id: None,
            sfu_room: None,
            sfu_spans: Vec::new(),
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

    /// Spans are added once per node, only to the placement they were made for, removed once,
    /// and cleared with the placement; the record round-trips with and without them.
    pub(super) async fn spans_are_added_once_per_node_and_go_with_the_placement(
        store: &dyn ChannelStore,
    ) {
        let id = ChannelId::from("spanned");
        let record = ChannelRecord {
            id: id.clone(),
            sfu_enabled: true,
            sfu_server_id: None,
            sfu_room: None,
            sfu_spans: Vec::new(),
            created_at_ms: 1,
        };
        store.create_channel(&record).await.unwrap();
        let span = |node, room: &str| SfuSpan {
            node: SfuServerId(node),
            room: room.to_owned(),
        };
        // Not placed: no span.
        let now = store.add_channel_span(&id, "r1", &span(2, "b1")).await;
        assert!(now.unwrap().unwrap().sfu_spans.is_empty());
        store
            .place_channel(&id, SfuServerId(1), "r1")
            .await
            .unwrap();
        // Made for another placement, or on the first node: nothing added.
        for (first, span) in [("r0", span(2, "b1")), ("r1", span(1, "a2"))] {
            let now = store.add_channel_span(&id, first, &span).await.unwrap();
            assert!(now.unwrap().sfu_spans.is_empty());
        }
        let now = store.add_channel_span(&id, "r1", &span(2, "b1")).await;
        assert_eq!(now.unwrap().unwrap().sfu_spans, [span(2, "b1")]);
        // A concurrent one on the same node loses to the first.
        let now = store.add_channel_span(&id, "r1", &span(2, "b2")).await;
        assert_eq!(now.unwrap().unwrap().sfu_spans, [span(2, "b1")]);
        let now = store.add_channel_span(&id, "r1", &span(3, "c1")).await;
        let now = now.unwrap().unwrap();
        assert_eq!(now.sfu_server_ids(), [1, 2, 3].map(SfuServerId));
        assert_eq!(now.room_on(SfuServerId(3)), Some("c1"));
        assert_eq!(store.channel(&id).await.unwrap().unwrap(), now);
        assert!(
            !store
                .remove_channel_span(&id, &span(2, "b2"))
                .await
                .unwrap()
        );
        assert!(
            store
                .remove_channel_span(&id, &span(2, "b1"))
                .await
                .unwrap()
        );
        assert!(
            !store
                .remove_channel_span(&id, &span(2, "b1"))
                .await
                .unwrap()
        );
        assert!(
            store
                .remove_channel_span(&id, &span(3, "c1"))
                .await
                .unwrap()
        );
        // Emptied, the record still reads (and places) as before.
        let now = store.channel(&id).await.unwrap().unwrap();
        assert!(now.sfu_spans.is_empty());
        store
            .add_channel_span(&id, "r1", &span(4, "d1"))
            .await
            .unwrap();
        assert!(store.unplace_channel(&id, "r1").await.unwrap());
        let now = store.channel(&id).await.unwrap().unwrap();
        assert_eq!((now.sfu_server_id, now.sfu_spans.len()), (None, 0));
        store
            .place_channel(&id, SfuServerId(5), "e1")
            .await
            .unwrap();
        assert_eq!(
            store.channel(&id).await.unwrap().unwrap().sfu_server_ids(),
            [SfuServerId(5)]
        );
        let missing = ChannelId::from("nope");
        assert!(
            store
                .add_channel_span(&missing, "r1", &span(2, "b1"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            !store
                .remove_channel_span(&missing, &span(2, "b1"))
                .await
                .unwrap()
        );
    }
}
