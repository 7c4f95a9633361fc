//! A channel spanning nodes (DESIGN §7.2, issue 15): members served by other nodes when the
//! channel's node is full, the store's record of who serves whom, relay planning's inputs, and
//! what failures, leaves and a full fleet do. Against [`FakeNodes`] enforcing transport caps.

use std::time::Duration;

use mooyaho_control::Request;
use serde_json::Value;

use super::Signaling;
use super::error::ErrorCode;
use super::failover::CHECK_EVERY;
use super::ids::{ChannelId, SessionId, SfuServerId};
use super::ports::ChannelStore;
use super::ports::SessionStore;
use super::relay_plan::{PublisherOnNode, RelayPlan};
use super::tests::{
    CountingStore, FakeNodes, Member, drain, entered, integrated, recorded_service,
};
use crate::domain::events::recording::Recorder;

/// An offer publishing one audio and one video track.
const TWO_TRACKS: &str = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                          a=msid:s mic\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s cam\r\n";

/// Three nodes at distinct addresses (no fingerprint: only the fake reaches them).
async fn nodes(signaling: &Signaling, count: u16) -> Vec<SfuServerId> {
    let mut ids = Vec::new();
    for n in 0..count {
        let view = signaling
            .sfu_servers()
            .register(format!("127.0.0.1:{}", 4001 + n), None)
            .await
            .unwrap();
        ids.push(view.record.id);
    }
    ids
}

/// `name` entering `channel` and publishing two tracks there.
async fn publishing(signaling: &Signaling, channel: &ChannelId, name: &str) -> Member {
    let (member, queue) = entered(signaling, channel, name).await;
    signaling
        .placement()
        .publish(&member, TWO_TRACKS.into())
        .await
        .unwrap();
    (member, queue)
}

/// Fake nodes reporting load, one per entry of `caps` (its transport cap; 0: none).
async fn capped_nodes(
    signaling: &Signaling,
    caps: &[usize],
) -> (
    std::sync::Arc<FakeNodes>,
    tokio::sync::mpsc::Sender<(SfuServerId, super::ports::NodeReport)>,
    Vec<SfuServerId>,
) {
    let (fake, events) = FakeNodes::attach(signaling);
    fake.report_load(true);
    let ids = nodes(signaling, caps.len() as u16).await;
    for (&id, &cap) in ids.iter().zip(caps) {
        if cap > 0 {
            fake.set_cap(id, cap);
        }
    }
    (fake, events, ids)
}

async fn serving_node(store: &CountingStore, session: &SessionId) -> Option<SfuServerId> {
    store
        .inner
        .session(session)
        .await
        .unwrap()
        .unwrap()
        .sfu_node
}

async fn serving_nodes(store: &CountingStore, channel: &ChannelId) -> Vec<SfuServerId> {
    let record = store.inner.channel(channel).await.unwrap().unwrap();
    record.sfu_server_ids()
}

async fn room_on(store: &CountingStore, channel: &ChannelId, node: SfuServerId) -> String {
    let record = store.inner.channel(channel).await.unwrap().unwrap();
    record
        .room_on(node)
        .expect("the node serves the channel")
        .to_owned()
}

/// Waits until the recorder saw an event of `kind`; returns everything seen.
async fn seen_until(recorder: &Recorder, kind: &str) -> Vec<crate::domain::events::Emitted> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            seen.extend(recorder.take());
            if seen.iter().any(|e| e.event.kind() == kind) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "no {kind}");
    seen
}

#[tokio::test]
async fn a_member_beyond_a_full_node_is_served_by_another_node_which_then_serves_the_channel() {
    let (signaling, store, _recorder) = recorded_service();
    let (fake, _events, ids) = capped_nodes(&signaling, &[2, 0]).await;
    let (a, b) = (ids[0], ids[1]);
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (alice, _alice_queue) = publishing(&signaling, &channel, "alice").await;
    assert_eq!(serving_nodes(&store, &channel).await, [a]);
    assert_eq!(
        fake.transports_on(a),
        2,
        "alice publishes and receives on a"
    );

    // a is at its cap: bob is served by b, which now serves the channel too.
    let (bob, mut bob_queue) = entered(&signaling, &channel, "bob").await;
    assert_eq!(serving_nodes(&store, &channel).await, [a, b]);
    assert_eq!(serving_node(&store, &bob.session).await, Some(b));
    let frames = drain(&mut bob_queue);
    assert!(
        frames
            .iter()
            .any(|f| f.contains(&format!("offer-for-{}", bob.session))),
        "{frames:?}"
    );
    // carol too, on the node already serving the channel (no third room anywhere).
    let (carol, _carol_queue) = entered(&signaling, &channel, "carol").await;
    assert_eq!(serving_node(&store, &carol.session).await, Some(b));
    assert_eq!(serving_nodes(&store, &channel).await, [a, b]);
    assert_eq!(fake.sessions_on(b).into_iter().collect::<Vec<_>>(), {
        let mut both = vec![bob.session.0.clone(), carol.session.0.clone()];
        both.sort();
        both
    });
    assert!(fake.transports_on(a) <= 2, "never over the cap");

    // Bob's answer goes to the node serving him.
    fake.take();
    signaling
        .placement()
        .answer(&bob, "answer".into())
        .await
        .unwrap();
    let b_room = room_on(&store, &channel, b).await;
    assert_eq!(
        fake.take(),
        [Request::SubscribeAnswer {
            room: b_room.clone(),
            session: bob.session.0.clone(),
            answer: "answer".into()
        }]
    );

    // Relay planning sees alice's tracks on a and receivers on both nodes: a feeds b.
    let inputs = signaling
        .placement()
        .relay_inputs(&channel)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        inputs.publishers,
        [PublisherOnNode {
            publisher: alice.session.clone(),
            node: a,
            tracks: vec!["mic".into(), "cam".into()],
        }]
    );
    assert_eq!(inputs.receivers.iter().copied().collect::<Vec<_>>(), [a, b]);
    let plan = signaling
        .placement()
        .relay_plan(&channel, 8, &RelayPlan::default())
        .await
        .unwrap();
    assert_eq!(plan.edges.len(), 2);
    assert!(plan.edges.iter().all(|e| e.from == a && e.to == b));

    // The fleet counts each member on the node serving it.
    let servers = signaling.sfu_servers();
    let (view_a, view_b) = (servers.get(a).await.unwrap(), servers.get(b).await.unwrap());
    assert_eq!((view_a.rooms, view_a.sessions), (1, 1));
    assert_eq!((view_b.rooms, view_b.sessions), (1, 2));

    // The last member b serves leaves: b no longer serves the channel and its room closes.
    signaling.channels().leave(&bob).await.unwrap();
    assert_eq!(serving_nodes(&store, &channel).await, [a, b]);
    fake.take();
    signaling.channels().leave(&carol).await.unwrap();
    assert_eq!(serving_nodes(&store, &channel).await, [a]);
    let requests = fake.take();
    assert!(
        requests.contains(&Request::CloseRoom { room: b_room }),
        "{requests:?}"
    );
    assert_eq!(fake.transports_on(b), 0);
}

/// Load reports lag (once a second): a node already full by the time a member reaches it
/// refuses it, and the member is served by the next node; the full node is skipped for a while.
#[tokio::test]
async fn a_node_refusing_a_member_as_full_passes_it_to_the_next_node() {
    let (signaling, store, _recorder) = recorded_service();
    let (fake, _events) = FakeNodes::attach(&signaling);
    let ids = nodes(&signaling, 2).await;
    let (a, b) = (ids[0], ids[1]);
    fake.set_cap(a, 1);
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (_alice, _alice_queue) = publishing(&signaling, &channel, "alice").await;
    assert_eq!(fake.transports_on(a), 2, "alice's own other side is let in");
    fake.take();

    let (bob, mut bob_queue) = entered(&signaling, &channel, "bob").await;
    assert_eq!(serving_node(&store, &bob.session).await, Some(b));
    let asked: Vec<_> = fake
        .take()
        .into_iter()
        .filter(|r| matches!(r, Request::SubscribeOffer { .. }))
        .collect();
    assert_eq!(asked.len(), 2, "a refused, b offered: {asked:?}");
    assert!(
        drain(&mut bob_queue)
            .iter()
            .any(|f| f.contains("offer-for-")),
        "bob got b's offer"
    );
    // A publisher joining now goes straight to b: a refused a member moments ago.
    let (dave, _dave_queue) = integrated(&signaling, "dave", false).await;
    signaling
        .channels()
        .enter(&dave, channel.clone())
        .await
        .unwrap();
    fake.take();
    signaling
        .placement()
        .publish(&dave, TWO_TRACKS.into())
        .await
        .unwrap();
    let publishes: Vec<_> = fake
        .take()
        .into_iter()
        .filter(|r| matches!(r, Request::Publish { .. }))
        .collect();
    assert_eq!(publishes.len(), 1, "{publishes:?}");
    assert_eq!(serving_node(&store, &dave.session).await, Some(b));
    assert_eq!(fake.transports_on(a), 2);
}

#[tokio::test]
async fn with_every_node_full_members_get_sfu_full_and_nothing_is_lost() {
    let (signaling, store, _recorder) = recorded_service();
    let (fake, _events, ids) = capped_nodes(&signaling, &[1, 1]).await;
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (_alice, _alice_queue) = publishing(&signaling, &channel, "alice").await;
    let (bob, _bob_queue) = entered(&signaling, &channel, "bob").await;
    assert_eq!(serving_node(&store, &bob.session).await, Some(ids[1]));

    // Both nodes are at their caps: carol hears why, unprompted.
    let (carol, mut carol_queue) = entered(&signaling, &channel, "carol").await;
    let frames = drain(&mut carol_queue);
    let errors: Vec<Value> = frames
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .filter(|v| v["type"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{frames:?}");
    assert_eq!(errors[0]["code"], "sfu_full");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("--max-transports"),
        "{errors:?}"
    );
    // Her publish is refused the same way; she stays a member, served by nobody.
    let refused = signaling
        .placement()
        .publish(&carol, TWO_TRACKS.into())
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::SfuFull);
    assert!(
        store
            .inner
            .members(&channel)
            .await
            .unwrap()
            .contains(&carol.session)
    );
    assert_eq!(serving_node(&store, &carol.session).await, None);
    assert_eq!(serving_nodes(&store, &channel).await, ids);
    for node in &ids {
        assert!(fake.transports_on(*node) <= 2);
    }
    // Room on a node again (bob leaves): her next publish is served.
    signaling.channels().leave(&bob).await.unwrap();
    signaling
        .placement()
        .publish(&carol, TWO_TRACKS.into())
        .await
        .unwrap();
    assert_eq!(serving_node(&store, &carol.session).await, Some(ids[1]));
}

#[tokio::test]
async fn a_failed_helper_node_moves_only_its_members_and_a_failed_first_node_the_channel() {
    let (signaling, store, recorder) = recorded_service();
    let (fake, _events) = FakeNodes::attach(&signaling);
    fake.report_load(true);
    let ids = nodes(&signaling, 3).await;
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    fake.set_cap(a, 2);
    fake.set_cap(b, 1);
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (_alice, mut alice_queue) = publishing(&signaling, &channel, "alice").await;
    let (bob, mut bob_queue) = entered(&signaling, &channel, "bob").await;
    assert_eq!(serving_node(&store, &bob.session).await, Some(b));
    let (carol, mut carol_queue) = entered(&signaling, &channel, "carol").await;
    assert_eq!(serving_node(&store, &carol.session).await, Some(c));
    assert_eq!(serving_nodes(&store, &channel).await, [a, b, c]);
    tokio::time::sleep(CHECK_EVERY * 2).await;
    for queue in [&mut alice_queue, &mut bob_queue, &mut carol_queue] {
        drain(queue);
    }
    recorder.take();

    // b only helped: bob alone restarts, and is served by c (a is full).
    fake.set_healthy(b, false);
    seen_until(&recorder, "sfu_restarted").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let restart = format!(r#"{{"type":"sfuRestart","channel":"{channel}"}}"#);
    assert!(drain(&mut bob_queue).contains(&restart));
    assert!(!drain(&mut alice_queue).contains(&restart));
    assert!(!drain(&mut carol_queue).contains(&restart));
    assert_eq!(serving_nodes(&store, &channel).await, [a, c]);
    assert_eq!(serving_node(&store, &bob.session).await, Some(c));

    // a was the first node: the whole channel is placed again, every member restarts, and
    // the old helper's room goes.
    let c_room = room_on(&store, &channel, c).await;
    fake.take();
    recorder.take();
    fake.set_healthy(a, false);
    seen_until(&recorder, "channel_placed").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for queue in [&mut alice_queue, &mut bob_queue, &mut carol_queue] {
        assert!(drain(queue).contains(&restart));
    }
    assert!(fake.take().contains(&Request::CloseRoom { room: c_room }));
    let now = serving_nodes(&store, &channel).await;
    assert_eq!(now, [c], "only c is healthy");
    for member in [&bob, &carol] {
        assert_eq!(serving_node(&store, &member.session).await, Some(c));
    }
}

/// Without spans (`--span-nodes` off) another node could not carry the channel's media, so
/// disabling the channel's node (which refuses new rooms only) must not split the channel: a
/// new member is served by the node already serving it, where the other members are.
#[tokio::test]
async fn a_disabled_node_keeps_taking_members_of_the_channels_it_serves() {
    let (signaling, store, _recorder) = super::tests::recorded_service_with(|config| {
        config.span_nodes = false;
    });
    let (fake, _events, ids) = capped_nodes(&signaling, &[0, 0]).await;
    let (a, b) = (ids[0], ids[1]);
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (alice, _alice_queue) = publishing(&signaling, &channel, "alice").await;
    let placed_on = serving_node(&store, &alice.session).await.unwrap();
    let other = if placed_on == a { b } else { a };
    let patch = crate::domain::SfuServerPatch {
        disabled: Some(true),
        ..Default::default()
    };
    signaling
        .sfu_servers()
        .update(placed_on, patch)
        .await
        .unwrap();
    let (bob, _bob_queue) = entered(&signaling, &channel, "bob").await;
    assert_eq!(serving_node(&store, &bob.session).await, Some(placed_on));
    assert_eq!(serving_nodes(&store, &channel).await, [placed_on]);
    assert_eq!(fake.transports_on(other), 0);
    // A new channel goes to the enabled node.
    let second = signaling.channels().create(true).await.unwrap().id;
    let (carol, _carol_queue) = entered(&signaling, &second, "carol").await;
    signaling
        .placement()
        .publish(&carol, TWO_TRACKS.into())
        .await
        .unwrap();
    assert_eq!(serving_nodes(&store, &second).await, [other]);
}

/// Spans are off by default (`--span-nodes`): a member beyond a full channel node gets
/// `sfu_full` and stays a member, and the channel stays on its one node.
#[tokio::test]
async fn without_span_nodes_a_member_beyond_a_full_node_gets_sfu_full() {
    let (signaling, store, _recorder) = super::tests::recorded_service_with(|config| {
        config.span_nodes = false;
    });
    let (fake, _events, ids) = capped_nodes(&signaling, &[2, 2]).await;
    let (a, b) = (ids[0], ids[1]);
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (alice, _alice_queue) = publishing(&signaling, &channel, "alice").await;
    let first = serving_node(&store, &alice.session).await.unwrap();
    let (bob, mut bob_queue) = entered(&signaling, &channel, "bob").await;
    let frames = drain(&mut bob_queue);
    assert!(frames.iter().any(|f| f.contains("sfu_full")), "{frames:?}");
    assert_eq!(serving_nodes(&store, &channel).await, [first]);
    assert_eq!(fake.transports_on(if first == a { b } else { a }), 0);
    let record = store.inner.channel(&channel).await.unwrap().unwrap();
    assert!(record.sfu_server_id == Some(first));
    assert!(
        store.inner.session(&bob.session).await.unwrap().is_some(),
        "bob stays a member"
    );
}

/// DESIGN §7.2 with spans: a channel whose node is disabled is served to new members by another
/// healthy node (relay links carry its media); the members already there stay. (A draining node
/// is left out of `open_nodes` the same way; a drain also moves its channels whole.)
#[tokio::test]
async fn with_spans_new_members_of_a_disabled_node_s_channel_go_to_another_node() {
    let (signaling, store, _recorder) = recorded_service();
    let (_fake, _events, ids) = capped_nodes(&signaling, &[0, 0]).await;
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (alice, _alice_queue) = publishing(&signaling, &channel, "alice").await;
    let first = serving_node(&store, &alice.session).await.unwrap();
    let other = if first == ids[0] { ids[1] } else { ids[0] };
    let patch = crate::domain::SfuServerPatch {
        disabled: Some(true),
        ..Default::default()
    };
    signaling.sfu_servers().update(first, patch).await.unwrap();
    let (bob, _bob_queue) = entered(&signaling, &channel, "bob").await;
    assert_eq!(serving_node(&store, &bob.session).await, Some(other));
    assert_eq!(serving_nodes(&store, &channel).await, [first, other]);
    assert_eq!(serving_node(&store, &alice.session).await, Some(first));
}

/// Outside review G1: a channel whose relay sync hangs on a slow node holds up neither another
/// channel's relay links nor a failover (one instance-wide lock held across node calls did).
#[tokio::test]
async fn a_relay_sync_stuck_on_a_slow_node_holds_up_no_other_channel_and_no_failover() {
    let (signaling, store, recorder) = recorded_service();
    let (fake, _events, ids) = capped_nodes(&signaling, &[0, 0]).await;
    let disable = |node: SfuServerId, disabled: bool| {
        let signaling = signaling.clone();
        async move {
            let patch = crate::domain::SfuServerPatch {
                disabled: Some(disabled),
                ..Default::default()
            };
            signaling.sfu_servers().update(node, patch).await.unwrap();
        }
    };
    // c1: alice publishes on x; x's relay requests for c1 hang from now on.
    let c1 = signaling.channels().create(true).await.unwrap().id;
    let (alice, _alice_queue) = publishing(&signaling, &c1, "alice").await;
    let x = serving_node(&store, &alice.session).await.unwrap();
    let y = if x == ids[0] { ids[1] } else { ids[0] };
    fake.stall_relays_in(&room_on(&store, &c1, x).await);
    // bob is served by y (x disabled): c1's sync waits on x for good.
    disable(x, true).await;
    let bob_enters = {
        let signaling = signaling.clone();
        let c1 = c1.clone();
        tokio::spawn(async move { entered(&signaling, &c1, "bob").await })
    };
    let waiting = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if fake
                .take()
                .iter()
                .any(|r| matches!(r, Request::AcceptRelay { .. }))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waiting.is_ok(), "c1's sync reached the nodes");
    assert!(!bob_enters.is_finished(), "c1's sync waits on x");

    // c2: carol publishes on y, dave is served by x (y disabled): c2's link y → x opens.
    let c2 = signaling.channels().create(true).await.unwrap().id;
    let (carol, _carol_queue) = publishing(&signaling, &c2, "carol").await;
    assert_eq!(serving_node(&store, &carol.session).await, Some(y));
    disable(x, false).await;
    disable(y, true).await;
    let dave = tokio::time::timeout(Duration::from_secs(2), entered(&signaling, &c2, "dave"))
        .await
        .expect("c2's relay sync does not wait on c1's");
    assert_eq!(serving_node(&store, &dave.0.session).await, Some(x));
    let y_room = room_on(&store, &c2, y).await;
    assert!(
        fake.take()
            .iter()
            .any(|r| matches!(r, Request::OpenRelay { room, .. } if *room == y_room)),
        "c2's link opened"
    );

    // y fails: c1's span there is dropped and c2 is placed again, while c1's sync still hangs.
    recorder.take();
    fake.set_healthy(y, false);
    let seen = seen_until(&recorder, "channel_placed").await;
    assert!(seen.iter().any(|e| e.event.kind() == "sfu_restarted"));
    assert_eq!(serving_nodes(&store, &c2).await, [x]);
    bob_enters.abort();
}

/// The relay requests and client-offered subscriptions among `requests`, by room.
fn relay_and_whep(requests: &[Request]) -> Vec<(&'static str, String)> {
    requests
        .iter()
        .filter_map(|r| match r {
            Request::AcceptRelay { room, .. } => Some(("acceptRelay", room.clone())),
            Request::OpenRelay { room, .. } => Some(("openRelay", room.clone())),
            Request::SubscribeClientOffer { room, .. } => {
                Some(("subscribeClientOffer", room.clone()))
            }
            Request::SetSubscription { room, .. } => Some(("setSubscription", room.clone())),
            _ => None,
        })
        .collect()
}

/// Outside review G3: a WHEP viewer served by a node that does not receive the channel's
/// tracks gets a relay link into that node before the node answers its offer (its own grant
/// never lets the node offer to it, which relay planning took for "receives nothing").
#[tokio::test]
async fn a_whep_viewer_on_another_node_gets_a_link_into_it_before_its_answer() {
    let (signaling, store, _recorder) = recorded_service();
    let (fake, _events, ids) = capped_nodes(&signaling, &[2, 0]).await;
    let (a, b) = (ids[0], ids[1]);
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (alice, _alice_queue) = publishing(&signaling, &channel, "alice").await;
    assert_eq!(serving_node(&store, &alice.session).await, Some(a));
    fake.take();

    let claims = super::join_token::JoinClaims {
        sub: "viewer".into(),
        name: None,
        channel: channel.to_string(),
        publish: false,
        subscribe: true,
        exp: super::join_token::now_secs() + 600,
        nbf: None,
        iat: None,
    };
    let token = super::join_token::JoinTokenKey::new("key")
        .sign(&claims, super::join_token::now_secs())
        .unwrap();
    let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:abcd\r\n";
    let created = signaling
        .http_media()
        .view(Some(&token), channel.clone(), None, offer.into())
        .await
        .unwrap();
    assert_eq!(serving_nodes(&store, &channel).await, [a, b]);
    let (a_room, b_room) = (
        room_on(&store, &channel, a).await,
        room_on(&store, &channel, b).await,
    );
    assert_eq!(
        relay_and_whep(&fake.take()),
        [
            ("acceptRelay", b_room.clone()),
            ("openRelay", a_room),
            ("subscribeClientOffer", b_room),
        ]
    );
    assert!(
        format!("{created:?}").contains("answer-for-"),
        "{created:?}"
    );
}

/// Outside review G3: a member first served by `setSubscription` (every node was full when it
/// entered) gets the relay link its node needs.
#[tokio::test]
async fn a_member_first_served_by_set_subscription_gets_a_link_into_its_node() {
    let (signaling, store, _recorder) = recorded_service();
    let (fake, _events, ids) = capped_nodes(&signaling, &[2, 1]).await;
    let (a, b) = (ids[0], ids[1]);
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (alice, _alice_queue) = publishing(&signaling, &channel, "alice").await;
    let (carol, _carol_queue) = entered(&signaling, &channel, "carol").await;
    assert_eq!(serving_node(&store, &carol.session).await, Some(b));
    // Both nodes full: bob is served by none.
    let (bob, _bob_queue) = entered(&signaling, &channel, "bob").await;
    assert_eq!(serving_node(&store, &bob.session).await, None);
    // carol leaves: b no longer serves the channel, its link is closed.
    signaling.channels().leave(&carol).await.unwrap();
    assert_eq!(serving_nodes(&store, &channel).await, [a]);
    fake.take();

    signaling
        .placement()
        .set_subscription(
            &bob,
            alice.session.clone(),
            mooyaho_control::VideoQuality::Low,
            None,
        )
        .await
        .unwrap();
    assert_eq!(serving_node(&store, &bob.session).await, Some(b));
    let (a_room, b_room) = (
        room_on(&store, &channel, a).await,
        room_on(&store, &channel, b).await,
    );
    assert_eq!(
        relay_and_whep(&fake.take()),
        [
            ("acceptRelay", b_room.clone()),
            ("openRelay", a_room),
            ("setSubscription", b_room),
        ]
    );
}

/// Outside review G5: a node that closed a link's sending end by itself (its receiver went
/// unanswered) makes signaling forget the link, close its other end and plan again (here the
/// plan still wants it: a new link opens). A report naming a link this instance does not hold
/// at that node and room changes nothing.
#[tokio::test]
async fn a_link_a_node_closed_by_itself_is_forgotten_closed_at_the_other_end_and_replanned() {
    let (signaling, store, _recorder) = recorded_service();
    let (fake, events, ids) = capped_nodes(&signaling, &[2, 0]).await;
    let (a, b) = (ids[0], ids[1]);
    let channel = signaling.channels().create(true).await.unwrap().id;
    let (_alice, _alice_queue) = publishing(&signaling, &channel, "alice").await;
    let (_bob, _bob_queue) = entered(&signaling, &channel, "bob").await;
    let (a_room, b_room) = (
        room_on(&store, &channel, a).await,
        room_on(&store, &channel, b).await,
    );
    let opened = |requests: &[Request]| {
        requests.iter().find_map(|r| match r {
            Request::OpenRelay { link, .. } => Some(*link),
            _ => None,
        })
    };
    let link = opened(&fake.take()).expect("a link a → b");
    let closed = |node: SfuServerId, room: &str, link: u64| {
        let event = mooyaho_control::Event::RelayClosed {
            room: room.to_owned(),
            link,
            reason: "the receiving node answered nothing".into(),
        };
        (node, super::ports::NodeReport::Event(event))
    };
    // Forged or foreign: the wrong node for that room, or a link nobody opened.
    events.send(closed(b, &a_room, link)).await.unwrap();
    events.send(closed(a, &a_room, link ^ 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.take().is_empty());

    events.send(closed(a, &a_room, link)).await.unwrap();
    let requests = tokio::time::timeout(Duration::from_secs(5), async {
        let mut seen = Vec::new();
        loop {
            seen.extend(fake.take());
            if opened(&seen).is_some() {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the link is opened again");
    assert_eq!(
        requests.first(),
        Some(&Request::CloseRelay { room: b_room, link })
    );
    assert_ne!(opened(&requests), Some(link), "a new link id");
}
